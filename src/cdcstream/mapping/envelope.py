"""The DMS record envelope: change events in, serialised Kinesis records out.

Data record: ``{"data": {...}, "<before-image field>": {...}, "metadata": {...}}``; control record:
``{"control": {...}, "metadata": {...}}`` (docs/record-format.md). The rules are compiled once per table
version into a :class:`~cdcstream.mapping.plan.TablePlan`; per row the work is the plan's closures (none for the
default mapping), one dict build and one ``orjson.dumps``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from cdcstream.changes import ALTER_OPS, RUN_OPS, ChangeEvent, FusedRows, LoadLayout, Op, SchemaChange, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.errors import CdcstreamError, ConfigError, MappingError
from cdcstream.mapping.plan import TablePlan
from cdcstream.mapping.rules import MappingRules
from cdcstream.records import Record

try:  # a run of pre-rendered rows' records (changes.FusedRows, which only the compiled fused path makes)
    from cdcstream.mapping._splice import clone_records as _clone
    from cdcstream.mapping._splice import splice_records as _splice
except ImportError:  # built without a compiler: no runs are made
    _splice = _clone = None  # type: ignore[assignment]


def _clone_agrees() -> bool:
    """Whether the compiled code builds a run's Record objects as calling the class does (checked once: a Record
    that came to do more in its __init__ would be built per row by the class again)."""
    if _clone is None:
        return False
    try:
        got = _clone(Record("k", b"d", 0, 1.5, "l"), ["a", "b"], [b"x", b""])
        same = _clone(Record("k", b"d", 0, None, "l"), "s", [b"y"])
    except (TypeError, ValueError):
        return False
    want = [Record("a", b"x", 0, 1.5, "l"), Record("b", b"", 0, 1.5, "l"), Record("s", b"y", 0, None, "l")]
    return [*got, *same] == want and all(type(r) is Record for r in [*got, *same])


_CLONE = _clone_agrees()

# control_operation_names: "seed" is the seed document's vocabulary (DMS before 2022), "dms" today's.
CONTROL_NAMES = {
    "seed": {Op.TRUNCATE: "TruncateTable", Op.DROP_TABLE: "DropTable", "restart": "RestartTask"},
    "dms": {Op.TRUNCATE: "truncate-table", Op.DROP_TABLE: "drop-table", "restart": "restart-task"},
}
EMPTY_KEY = "<empty>"
CONTROL_OPERATIONS = {Op.TRUNCATE: "TruncateTable", Op.DROP_TABLE: "DropTable"}


def now_iso() -> str:
    """Current UTC time as DMS writes ``timestamp``: ISO 8601 with microseconds and ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _finite(v: Any) -> Any:
    """NaN and infinities as null, as orjson writes them (the standard library would write invalid JSON)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def check_compatible(rules: MappingRules, target: TargetConfig) -> None:
    """Combinations DMS forbids across the mapping file and the endpoint settings."""
    if target.before_image.enabled:
        for t in rules.transformations:
            if t.action == "add-before-image-columns":
                raise ConfigError(
                    f"{t.origin.at('.rule-action')}: add-before-image-columns cannot be combined with "
                    "[target.before_image] enabled = true (DMS: use one or the other)"
                )


class Mapper:
    """Turns change events into serialised records according to the mapping rules and target settings."""

    def __init__(self, rules: MappingRules, target: TargetConfig, task_id: str) -> None:
        check_compatible(rules, target)
        self.rules = rules
        self.target = target
        self.task_id = task_id
        self.include_nulls = target.include_null_and_empty
        self.pretty = target.message_format == "json"
        self.txn_details = target.include_transaction_details
        self.partition_value = target.include_partition_value
        self.before_field = target.before_image.field_name
        self.control_names = CONTROL_NAMES[target.control_operation_names]
        self.alter_operations = target.include_table_alter_operations
        #: Whether plan() refuses two source tables written as one target. A CDC mapping worker process
        #: (workers/cdc.py) turns it off: it sees only some of the changes, the daemon's own mapper plans every
        #: table in source order first and forgets renamed and dropped names, so the check is made there.
        self.check_targets = True
        self._plans: dict[tuple[str, str], tuple[TableInfo, TablePlan | None]] = {}
        # (schema, table) written -> the source table writing it: two tables must never share one target.
        self._targets: dict[tuple[str, str], tuple[str, str]] = {}
        # Transaction chaining for include_transaction_details (per task, across batches; reset by a restart,
        # so the first transaction after a start has no prev-* fields, as with DMS).
        self._txn: Any = None
        self._txn_last_record = 0
        self._prev_txn: Any = None
        self._prev_last_record = 0

    def selects(self, schema: str, table: str) -> bool:
        return self.rules.selects(schema, table)

    def plan(self, info: TableInfo) -> TablePlan | None:
        """The plan for this table version (None when no rule selects the table)."""
        key = (info.schema, info.table)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is info:
            return cached[1]
        plan = TablePlan(info, self.rules, self.target) if self.rules.selects(*key) else None
        if plan is not None and self.check_targets:
            out = (plan.schema_out, plan.table_name)
            other = self._targets.setdefault(out, key)
            if other != key:
                why = "; ".join(str(o) for o in plan.name_origins) or "their own names"
                raise MappingError(
                    f"{info.schema}.{info.table} and {other[0]}.{other[1]} would both be written as "
                    f"{out[0]}.{out[1]} ({why}): two source tables cannot share one target"
                )
        self._plans[key] = (info, plan)
        return plan

    def fused_columns(
        self, info: TableInfo
    ) -> tuple[tuple[str | None, ...], bool, tuple[tuple[int, ...], str] | None] | None:
        """Whether a source may render this table's data sections itself (sources/postgres/fused.py and
        sources/mysql/fused.py): each source column's name in the records (None: left out), whether NULLs are
        written and, for a ``primary-key`` partition key, its columns' indexes and prefix (the source renders the
        key too); None if the rules do more than rename or leave out columns, or records are indented.

        Asked by the source once per table version, before its rows are mapped. The plan is built apart from
        the cache, so that asking registers no target name (map() still does that at the table's first row) and
        a mapping error still surfaces there, at the row, as it would without the fused path."""
        if self.pretty or not self.rules.selects(info.schema, info.table):
            return None
        try:
            plan = TablePlan(info, self.rules, self.target)
        except CdcstreamError:
            return None
        if plan.fused_names is None:
            return None
        return plan.fused_names, self.include_nulls, plan.fused_key

    def load_layout(self, info: TableInfo) -> LoadLayout | None:
        """How a raw chunk of this table may write its load records itself (:class:`LoadLayout`), as :meth:`map`
        writes them; None when :meth:`map` must (no rule selects the table, the rules reshape rows, records are
        indented, or each carries its ``partition-key-value``). Asked per chunk: the metadata (its timestamp)
        is serialised anew each time, as :meth:`map` does per batch. Builds the plan as :meth:`map` would, so a
        mapping error surfaces here, at the table's first chunk."""
        if self.pretty or self.partition_value:
            return None
        plan = self.plan(info)
        if plan is None or plan.fused_names is None:
            return None
        static = None
        if plan.fused_load_key is None:
            if plan.load_key_type != "schema-table":
                return None
            static = f"{plan.schema_out}.{plan.table_name}"
        tail = self._load_tail(plan, now_iso())
        return LoadLayout(
            plan.fused_names, self.include_nulls, plan.fused_load_key, static, EMPTY_KEY, tail, plan.label
        )

    def _forget(self, info: TableInfo) -> None:
        """A table name that no longer exists (renamed or dropped) gives up its target, so the table's new name
        (or a new table) may be written there: a rule for the new name that keeps the old target name works."""
        key = (info.schema, info.table)
        self._plans.pop(key, None)
        for out, src in list(self._targets.items()):
            if src == key:
                del self._targets[out]

    def _dumps(self, doc: dict[str, Any]) -> bytes:
        # Copied to a right-sized object: orjson (>= 3.12) returns its whole work buffer (4 KiB at least) with
        # only the length shortened, and a record lives in the sink's buffer until Kinesis acknowledges it, so
        # ~500-byte records held 4 KiB each (bench/README.md, "Memory per buffered record"). The copy costs
        # less than keeping the big blocks. A two-item join copies; a one-item join would return the same object.
        try:
            if self.pretty:
                return b"".join((orjson.dumps(doc, option=orjson.OPT_INDENT_2), b""))
            return b"".join((orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE), b""))
        except TypeError:
            # orjson stops at 64-bit integers; an expression over a wide numeric can exceed that. The standard
            # library writes the exact integer in the same layout (rare path, so its speed does not matter).
            safe = _finite(doc)
            if self.pretty:
                return json.dumps(safe, indent=2, ensure_ascii=False, allow_nan=False).encode()
            return json.dumps(safe, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"

    # Complexity over the gate on purpose: this loop runs per row (mapping_bench.py: ~2.9 µs/record with the
    # default mapping, where one more Python call per row costs a few per cent), so its branches stay inline.
    def map(self, events: Iterable[ChangeEvent | FusedRows], stamp: str | None = None) -> list[Record]:  # noqa: C901
        """Records for a batch of events, in order (unselected tables and filtered rows produce none), built at
        ``stamp`` (the records' ``timestamp``; now if None). A :class:`FusedRows` run is mapped as the events it
        stands for."""
        out: list[Record] = []
        if stamp is None:
            stamp = now_iso()  # one construction time per batch: a batch is built within microseconds
        include_nulls = self.include_nulls
        # Load rows of one table share their whole metadata within a batch (no position, no transaction, and
        # no per-row partition-key-value unless asked for): serialised once per table and batch, and spliced
        # after each row's data as orjson would write the whole document (json-unformatted only).
        load_tails: dict[int, bytes] | None = None if self.pretty or self.partition_value else {}
        # Pre-rendered rows' metadata, serialised once per table, operation and batch (_fused_data): only the
        # transaction id, the stream position and the key value differ from row to row.
        fused_heads: dict[tuple[int, Op], tuple[TablePlan, bytes, bytes]] | None = None if self.txn_details else {}
        for ev in events:
            if type(ev) is FusedRows:
                out.extend(self._fused_run(ev, stamp, fused_heads))
                continue
            assert isinstance(ev, ChangeEvent)
            op = ev.op
            if op in ALTER_OPS:
                if op is Op.RENAME_TABLE and ev.change is not None:
                    self._forget(ev.change.old_table)
                if self.alter_operations:
                    out.extend(self._alter(ev, stamp))
                continue
            plan = self._control_plan(ev.table) if op in CONTROL_OPERATIONS else self.plan(ev.table)
            if plan is None:
                continue
            if op in CONTROL_OPERATIONS:
                out.append(self._control(ev, plan, stamp))
                if op is Op.DROP_TABLE:
                    self._forget(ev.table)
                continue
            fused = ev.fused
            fused_key = ev.fused_key
            if fused is not None:
                # The source rendered the data section with this table's fused_names (same rules, same table
                # version): nothing of the row is needed here. A plan that disagrees is a bug, never a guess.
                if plan.fused_names is None or (fused_key is None) != (plan.fused_key is None):
                    raise MappingError(f"{plan.label}: a pre-rendered row for a table whose mapping reshapes rows")
                src: dict[str, Any] = {}
                row = src
            else:
                src = (ev.before if op is Op.DELETE else ev.after) or {}
                if plan.filter is not None and not plan.filter(src):
                    continue
                row = plan.shape(ev, src) if plan.shape is not None else src
                if not include_nulls and None in row.values():
                    row = {k: v for k, v in row.items() if v is not None}
            # Kinesis refuses an empty partition key (an empty-string key column or attribute). Any fixed
            # substitute is safe: sharing a key only changes shard placement, never per-key order.
            if op is Op.LOAD:
                key_type = plan.load_key_type
                key = plan.load_key_of(ev, src, row) or EMPTY_KEY
                if load_tails is not None and not ev.unchanged_columns:
                    data = self._load_data(row, plan, stamp, load_tails)
                    if data is not None:
                        out.append(Record(partition_key=key, data=data, label=plan.label))
                        continue
            else:
                key_type = plan.key_type
                if fused is None or fused_key is None:
                    key = plan.key_of(ev, src, row) or EMPTY_KEY
                else:
                    key = fused_key or EMPTY_KEY
                if fused is not None and fused_heads is not None and not ev.unchanged_columns:
                    data = self._fused_data(ev, fused, plan, key, stamp, fused_heads)
                    out.append(Record(partition_key=key, data=data, commit_epoch=ev.commit_epoch, label=plan.label))
                    continue
            metadata: dict[str, Any] = {
                "timestamp": stamp,
                "record-type": "data",
                "operation": op.value,
                "partition-key-type": key_type,
            }
            if self.partition_value and key_type != "schema-table":
                metadata["partition-key-value"] = key
            metadata["schema-name"] = plan.schema_out
            metadata["table-name"] = plan.table_name
            if op is not Op.LOAD:
                metadata["transaction-id"] = ev.transaction_id
                if self.txn_details:
                    self._transaction_details(ev, metadata)
                metadata["stream-position"] = ev.stream_position
            if ev.unchanged_columns:
                renamed = plan.renamed
                metadata["unchanged-columns"] = [renamed.get(c, c) for c in ev.unchanged_columns]
            if fused is not None:
                # Byte for byte what _dumps writes for {"data": row, "metadata": metadata} (json-unformatted).
                data = b"".join((b'{"data":', fused, b',"metadata":', orjson.dumps(metadata), b"}\n"))
                out.append(Record(partition_key=key, data=data, commit_epoch=ev.commit_epoch, label=plan.label))
                continue
            doc: dict[str, Any] = {"data": row}
            if plan.before_image is not None and op is Op.UPDATE:
                doc[self.before_field] = plan.before_image(ev)
            doc["metadata"] = metadata
            # Load rows have no commit time: they must not feed the end-to-end lag histogram.
            epoch = None if op is Op.LOAD else ev.commit_epoch
            out.append(Record(partition_key=key, data=self._dumps(doc), commit_epoch=epoch, label=plan.label))
        return out

    def _fused_run(
        self, run: FusedRows, stamp: str, heads: dict[tuple[int, Op], tuple[TablePlan, bytes, bytes]] | None
    ) -> list[Record]:
        """A run's records, byte for byte what :meth:`map` writes for :meth:`FusedRows.events`: spliced in one
        compiled call (the metadata up to the record id serialised once per operation and run) where
        :meth:`_fused_data` would write them, else through the general path."""
        plan = self.plan(run.table)
        if (
            heads is None
            or plan is None
            or self.partition_value
            or plan.fused_names is None
            or (run.keys is None) != (plan.fused_key is None)
            or _splice is None
        ):
            return self.map(run.events(), stamp)
        position = orjson.dumps(run.position_prefix)[:-1]  # the opening quote, no closing one
        xid = orjson.dumps(run.transaction_id)
        mids = []
        for op in RUN_OPS:
            head = _fused_head(plan, op, stamp, heads)
            mids.append(b"".join((head[1], head[2], xid, b',"stream-position":', position)))
        datas = _splice(run.data, run.ops, (mids[0], mids[1], mids[2]), run.first_record_id)
        epoch, label = run.commit_epoch, plan.label
        keys: list[str] | str
        if run.keys is None:
            keys = plan.key_of(run.event(0), {}, {}) or EMPTY_KEY
        else:
            keys = run.keys if "" not in run.keys else [key or EMPTY_KEY for key in run.keys]
        if _CLONE:
            return _clone(Record(EMPTY_KEY, b"", 0, epoch, label), keys, datas)
        if isinstance(keys, str):
            return [Record(keys, data, 0, epoch, label) for data in datas]
        return [Record(key, data, 0, epoch, label) for key, data in zip(keys, datas, strict=True)]

    def _fused_data(
        self,
        ev: ChangeEvent,
        fused: bytes,
        plan: TablePlan,
        key: str,
        stamp: str,
        heads: dict[tuple[int, Op], tuple[TablePlan, bytes, bytes]],
    ) -> bytes:
        """A pre-rendered row's record body, byte for byte what the general branch of :meth:`map` writes for it
        (``{"data": ..., "metadata": {...}}`` compact with a newline; no transaction details, no unchanged
        columns), from the metadata serialised once per table, operation and batch: a dict and its
        ``orjson.dumps`` per row were a fifth of the fused path's mapping time."""
        head = _fused_head(plan, ev.op, stamp, heads)
        value = b""
        if self.partition_value and plan.key_type != "schema-table":
            value = b',"partition-key-value":' + orjson.dumps(key)
        return b"".join(
            (
                b'{"data":',
                fused,
                head[1],
                value,
                head[2],
                orjson.dumps(ev.transaction_id),
                b',"stream-position":',
                orjson.dumps(ev.stream_position),
                b"}}\n",
            )
        )

    def _load_data(self, row: dict[str, Any], plan: TablePlan, stamp: str, tails: dict[int, bytes]) -> bytes | None:
        """A load row's record body, byte for byte what the general path serialises (``{"data": row,
        "metadata": {...}}`` compact with a newline); None where only the general path can write the row."""
        tail = tails.get(id(plan))
        if tail is None:
            tail = tails[id(plan)] = self._load_tail(plan, stamp)
        try:
            return b'{"data":' + orjson.dumps(row) + tail
        except TypeError:
            return None  # an integer beyond 64 bits: _dumps' fallback writes it exactly

    @staticmethod
    def _load_tail(plan: TablePlan, stamp: str) -> bytes:
        """What follows a load record's data section: its metadata (the same for the table's rows of a batch)."""
        metadata = {
            "timestamp": stamp,
            "record-type": "data",
            "operation": Op.LOAD.value,
            "partition-key-type": plan.load_key_type,
            "schema-name": plan.schema_out,
            "table-name": plan.table_name,
        }
        return b',"metadata":' + orjson.dumps(metadata) + b"}\n"

    def _transaction_details(self, ev: ChangeEvent, metadata: dict[str, Any]) -> None:
        txn = ev.transaction_id
        if txn != self._txn:
            if self._txn is not None:
                self._prev_txn, self._prev_last_record = self._txn, self._txn_last_record
            self._txn = txn
        self._txn_last_record = ev.transaction_record_id
        metadata["transaction-record-id"] = ev.transaction_record_id
        if self._prev_txn is not None:
            metadata["prev-transaction-id"] = self._prev_txn
            metadata["prev-transaction-record-id"] = self._prev_last_record
        metadata["commit-timestamp"] = ev.commit_time

    def _control_plan(self, info: TableInfo) -> TablePlan | None:
        """The plan a control record is written with. A control event may carry only part of a table's shape
        (MySQL knows a table's columns from its row events), so rules about columns (a primary-key partition key,
        an expression) may not apply to it; it is still written, under the names the rules give the table. A
        real mapping problem still stops the pipeline at the table's next row."""
        try:
            return self.plan(info)
        except MappingError:
            if not self.rules.selects(info.schema, info.table):
                return None
            return TablePlan.names_only(info, self.rules)

    def _version_plan(self, info: TableInfo) -> TablePlan | None:
        """The plan of a table version other than the current one (the table before an ALTER), uncached; None
        when no rule selects it or its rules cannot apply to it (names are then written as the source has them)."""
        if not self.rules.selects(info.schema, info.table):
            return None
        try:
            return TablePlan(info, self.rules, self.target)
        except CdcstreamError:
            return None

    def _alter(self, ev: ChangeEvent, stamp: str) -> list[Record]:
        """The control record of one schema change, with column and table names as the mapping writes them.

        Selected by the table's new name (a rename-table out of the selection is still written, under the old
        name's rules, so consumers learn where the table went). A column the mapping leaves out is not
        mentioned: a rename into or out of the records becomes add-column / drop-column.
        """
        change = ev.change
        if change is None:
            raise MappingError(f"{ev.op.value} control event for {ev.table.schema}.{ev.table.table} without its change")
        new_plan = self._control_plan(ev.table)
        same_name = (change.old_table.schema, change.old_table.table) == (ev.table.schema, ev.table.table)
        old_plan = new_plan if same_name and not change.old_column else self._version_plan(change.old_table)
        plan = new_plan or old_plan
        if plan is None:
            return []
        op: Op = ev.op
        if op is Op.RENAME_TABLE:
            control = _renamed_table(ev, change, old_plan, new_plan)
        else:
            column = self._column_control(ev, change, old_plan, new_plan)
            if column is None:
                return []  # the column is not in the records
            op, control = column
        if plan.table_def is not None:
            control["table-def"] = plan.table_def
        return [self._control(ev, plan, stamp, op.value, control)]

    def _column_control(
        self, ev: ChangeEvent, change: SchemaChange, old_plan: TablePlan | None, new_plan: TablePlan | None
    ) -> tuple[Op, dict[str, Any]] | None:
        """The operation and control fields of a column change, as the records name the column (None: the column
        is not in the records before or after). A rename into or out of the records is an add or a drop."""
        op = ev.op
        new_out = _column_out(new_plan, ev.table, change.column)
        old_out = _column_out(old_plan, change.old_table, change.old_column)
        if op in (Op.RENAME_COLUMN, Op.CHANGE_COLUMNS) and change.column and change.old_column:
            if new_out is None and old_out is None:
                return None
            if old_out is None:
                op = Op.ADD_COLUMN
            elif new_out is None:
                op = Op.DROP_COLUMN
        elif (change.column or change.old_column) and (old_out if op is Op.DROP_COLUMN else new_out) is None:
            return None
        control: dict[str, Any] = {}
        if new_out is not None:
            control["column-name"] = new_out
        if old_out is not None and old_out != new_out:
            control["old-column-name"] = old_out
        if self.target.include_control_details:
            if new_out is not None and new_plan is not None and new_plan.table_def is not None:
                control["column-def"] = new_plan.table_def["columns"].get(new_out)
            if op is Op.COLUMN_TYPE_CHANGE and old_out and old_plan is not None and old_plan.table_def is not None:
                control["old-column-def"] = old_plan.table_def["columns"].get(old_out)
        return op, control

    def _control(
        self, ev: ChangeEvent, plan: TablePlan, stamp: str, operation: str = "", control: dict[str, Any] | None = None
    ) -> Record:
        metadata: dict[str, Any] = {
            "timestamp": stamp,
            "record-type": "control",
            "operation": operation or self.control_names[ev.op],
            "partition-key-type": "task-id",
        }
        if self.partition_value:
            metadata["partition-key-value"] = self.task_id
        metadata.update(
            {
                "schema-name": plan.schema_out,
                "table-name": plan.table_name,
                "transaction-id": ev.transaction_id,
            }
        )
        if self.txn_details:
            metadata["commit-timestamp"] = ev.commit_time
        metadata["stream-position"] = ev.stream_position
        if control is None:
            control = {} if plan.table_def is None else {"table-def": plan.table_def}
        # A barrier: its partition key differs from the table's rows, so only draining around it keeps it
        # between the rows before and after it.
        return Record(
            partition_key=f"{self.task_id}.{plan.schema_out}.{plan.table_name}",
            data=self._dumps({"control": control, "metadata": metadata}),
            commit_epoch=ev.commit_epoch,
            label=plan.label,
            barrier=True,
        )

    def diverted_record(self, original: Record, size: int, limit: int, dead_letter_file: str) -> Record:
        """The small control record sent in place of an oversize record (``oversize_policy = dead-letter``).

        Same partition key as the original, so it keeps the original's place in its key's order; its metadata
        is the original's (table, transaction, stream-position) so a consumer knows exactly which change to
        fetch from the dead-letter file.
        """
        try:
            metadata = dict(orjson.loads(original.data).get("metadata", {}))
        except (orjson.JSONDecodeError, AttributeError):
            metadata = {}
        metadata.update(timestamp=now_iso(), **{"record-type": "control", "operation": "OversizeRecordDiverted"})
        doc = {
            "control": {"reason": "oversize", "size": size, "limit": limit, "dead-letter-file": dead_letter_file},
            "metadata": metadata,
        }
        return Record(
            partition_key=original.partition_key,
            data=self._dumps(doc),
            seq=original.seq,
            commit_epoch=original.commit_epoch,
            label=original.label,
        )

    def restart_record(self) -> Record:
        """The ``RestartTask`` control record emitted once at every start (partition key = task id)."""
        metadata: dict[str, Any] = {
            "timestamp": now_iso(),
            "record-type": "control",
            "operation": self.control_names["restart"],
            "partition-key-type": "task-id",
        }
        if self.partition_value:
            metadata["partition-key-value"] = self.task_id
        metadata["schema-name"] = ""
        metadata["table-name"] = ""
        return Record(partition_key=self.task_id, data=self._dumps({"control": {}, "metadata": metadata}), label="task")


def _fused_head(
    plan: TablePlan, op: Op, stamp: str, heads: dict[tuple[int, Op], tuple[TablePlan, bytes, bytes]]
) -> tuple[TablePlan, bytes, bytes]:
    """A pre-rendered row's metadata around its transaction id, serialised once per table, operation and batch:
    (the plan, what comes before the table's names, the names and the transaction id's key)."""
    head = heads.get((id(plan), op))
    if head is None:
        first = {"timestamp": stamp, "record-type": "data", "operation": op.value, "partition-key-type": plan.key_type}
        table = orjson.dumps({"schema-name": plan.schema_out, "table-name": plan.table_name})
        # The plan is held with its entry: its id cannot be reused by another table's plan in this batch.
        head = heads[(id(plan), op)] = (
            plan,
            b',"metadata":' + orjson.dumps(first)[:-1],
            b"," + table[1:-1] + b',"transaction-id":',
        )
    return head


def _column_out(plan: TablePlan | None, info: TableInfo, column: str | None) -> str | None:
    """A source column's name in the records of ``plan`` (None: not written). A column the source could not
    describe (``info`` lacks it: MySQL before the table's first row event) keeps its source name."""
    if column is None or plan is None:
        return None
    if any(c.name == column for c in info.columns):
        return plan.outputs.get(column)
    return column


def _renamed_table(
    ev: ChangeEvent, change: SchemaChange, old_plan: TablePlan | None, new_plan: TablePlan | None
) -> dict[str, Any]:
    """The control fields of a table rename: the old names as records had them, the new ones when the mapping
    no longer selects the table (else the record's metadata carries them)."""
    control: dict[str, Any] = {}
    if old_plan is not None:
        control["old-schema-name"], control["old-table-name"] = old_plan.schema_out, old_plan.table_name
    else:
        control["old-schema-name"], control["old-table-name"] = change.old_table.schema, change.old_table.table
    if new_plan is None:
        control["new-schema-name"], control["new-table-name"] = ev.table.schema, ev.table.table
    return control
