"""The DMS record envelope and partition keys, compiled once per table into a :class:`TablePlan`.

Data record: ``{"data": {...}, "metadata": {...}}``; control record: ``{"control": {}, "metadata": {...}}``
(README, "Record format"). Per-row work is one dict build and one ``orjson.dumps``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from cdcstream.changes import ChangeEvent, Op, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.errors import MappingError
from cdcstream.mapping.rules import MappingRules, ObjectMapping
from cdcstream.records import Record

CONTROL_OPERATIONS = {Op.TRUNCATE: "TruncateTable", Op.DROP_TABLE: "DropTable"}


def now_iso() -> str:
    """Current UTC time as DMS writes ``timestamp``: ISO 8601 with microseconds and ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TablePlan:
    """Everything needed to turn one table's events into records, decided once per table version."""

    __slots__ = ("excluded", "key_of", "key_type", "label", "schema", "table", "table_name")

    def __init__(self, info: TableInfo, mapping: ObjectMapping | None) -> None:
        self.schema, self.table = info.schema, info.table
        self.table_name = (mapping.target_table_name if mapping else None) or info.table
        self.label = f"{info.schema}.{info.table}"
        self.key_type = mapping.partition_key_type if mapping else "schema-table"
        excluded = {c.name for c in info.columns if mapping and c.name.lower() in mapping.exclude_columns}
        self.excluded = frozenset(excluded)
        self.key_of: Callable[[ChangeEvent, dict[str, Any]], str]
        if self.key_type == "schema-table":
            static = f"{info.schema}.{self.table_name}"
            self.key_of = lambda ev, row: static
        elif self.key_type == "constant":
            assert mapping is not None and mapping.partition_key_value is not None
            constant = mapping.partition_key_value
            self.key_of = lambda ev, row: constant
        elif self.key_type == "transaction-id":
            self.key_of = lambda ev, row: str(ev.transaction_id)
        elif self.key_type == "primary-key":
            keys = info.key_columns
            if not keys:
                raise MappingError(
                    f"{self.label}: partition-key-type primary-key (rule-id {mapping.rule_id if mapping else '?'}) "
                    "but the table has no primary key / replica identity columns"
                )
            self.key_of = lambda ev, row: ".".join(str(row.get(k)) for k in keys)
        else:  # attribute-name
            assert mapping is not None and mapping.partition_key_name is not None
            name = mapping.partition_key_name
            if name not in {c.name for c in info.columns}:
                raise MappingError(
                    f"{self.label}: partition-key-name {name!r} (rule-id {mapping.rule_id}) is not a column of "
                    f"the table (columns: {', '.join(c.name for c in info.columns)})"
                )
            self.key_of = lambda ev, row: str(row.get(name))


class Mapper:
    """Turns change events into serialised records according to the mapping rules and target settings."""

    def __init__(self, rules: MappingRules, target: TargetConfig, task_id: str) -> None:
        self.rules = rules
        self.task_id = task_id
        self.include_nulls = target.include_null_and_empty
        self.pretty = target.message_format == "json"
        self._plans: dict[tuple[str, str], tuple[TableInfo, TablePlan | None]] = {}

    def selects(self, schema: str, table: str) -> bool:
        return self.rules.selects(schema, table)

    def plan(self, info: TableInfo) -> TablePlan | None:
        """The plan for this table version (None when no rule selects the table)."""
        key = (info.schema, info.table)
        cached = self._plans.get(key)
        if cached is not None and cached[0] is info:
            return cached[1]
        plan = TablePlan(info, self.rules.object_mapping(*key)) if self.rules.selects(*key) else None
        self._plans[key] = (info, plan)
        return plan

    def _dumps(self, doc: dict[str, Any]) -> bytes:
        if self.pretty:
            return orjson.dumps(doc, option=orjson.OPT_INDENT_2)
        return orjson.dumps(doc, option=orjson.OPT_APPEND_NEWLINE)

    def map(self, events: Iterable[ChangeEvent]) -> list[Record]:
        """Records for a batch of events, in order (events of unselected tables produce none)."""
        out: list[Record] = []
        stamp = now_iso()  # one construction time per batch: a batch is built within microseconds
        for ev in events:
            plan = self.plan(ev.table)
            if plan is None:
                continue
            if ev.op in CONTROL_OPERATIONS:
                out.append(self._control(ev, plan, stamp))
                continue
            row = ev.before if ev.op is Op.DELETE else ev.after
            if row is None:
                row = {}
            if plan.excluded:
                row = {k: v for k, v in row.items() if k not in plan.excluded}
            if not self.include_nulls and None in row.values():
                row = {k: v for k, v in row.items() if v is not None}
            metadata: dict[str, Any] = {
                "timestamp": stamp,
                "record-type": "data",
                "operation": ev.op.value,
                "partition-key-type": plan.key_type,
                "schema-name": plan.schema,
                "table-name": plan.table_name,
                "transaction-id": ev.transaction_id,
                "commit-timestamp": ev.commit_time,
                "stream-position": ev.stream_position,
            }
            if ev.unchanged_columns:
                metadata["unchanged-columns"] = list(ev.unchanged_columns)
            key_row = ev.after if ev.after is not None else (ev.before or {})
            out.append(
                Record(
                    partition_key=plan.key_of(ev, key_row),
                    data=self._dumps({"data": row, "metadata": metadata}),
                    commit_epoch=ev.commit_epoch,
                    label=plan.label,
                )
            )
        return out

    def _control(self, ev: ChangeEvent, plan: TablePlan, stamp: str) -> Record:
        doc = {
            "control": {},
            "metadata": {
                "timestamp": stamp,
                "record-type": "control",
                "operation": CONTROL_OPERATIONS[ev.op],
                "partition-key-type": "task-id",
                "schema-name": plan.schema,
                "table-name": plan.table_name,
                "transaction-id": ev.transaction_id,
                "commit-timestamp": ev.commit_time,
                "stream-position": ev.stream_position,
            },
        }
        # A barrier: its partition key differs from the table's rows, so only draining around it keeps it
        # between the rows before and after it.
        return Record(
            partition_key=f"{self.task_id}.{plan.schema}.{plan.table_name}",
            data=self._dumps(doc),
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
        doc = {
            "control": {},
            "metadata": {
                "timestamp": now_iso(),
                "record-type": "control",
                "operation": "RestartTask",
                "partition-key-type": "task-id",
                "schema-name": "",
                "table-name": "",
            },
        }
        return Record(partition_key=self.task_id, data=self._dumps(doc), label="task")
