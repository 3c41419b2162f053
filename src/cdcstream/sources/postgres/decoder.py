"""The pgoutput decoder the PostgreSQL source runs: raw CopyData frames in, ``ChangeEvent`` / ``Marker`` out.

Sans-IO, like the parser in :mod:`.pgoutput` whose layouts it reads: :class:`Decoder` keeps one
:class:`RelationPlan` per relation id (built when a Relation message arrives: column names, converters, key flags,
the shared ``TableInfo``), and turns batches of raw frames directly into ``ChangeEvent`` / ``Marker`` lists.

* Rows of unselected relations are skipped after reading the relation id, without decoding their tuples.
* With ``runs`` (the daemon maps in process), consecutive rows of a relation with a compiled renderer
  (:mod:`.fused`) within a transaction come out as one :class:`~cdcstream.changes.FusedRows`, rendered in one
  compiled call, instead of a ``ChangeEvent`` each: the same rows, positions and counts.
* Converters come from a :class:`~cdcstream.sources.postgres.values.TypeRegistry`. Types the registry does not
  know (user-defined, extension, uncommon built-ins) are listed by :meth:`Decoder.pending_type_oids` so the
  source can describe them from the catalog *before* it feeds the batch: the decoder never does I/O and never
  guesses a rendering it could have known.
* Logical messages with the prefix ``cdcstream.ddl`` (written by the DDL capture event triggers,
  :mod:`.ddl`) become DropTable and alter control events at their place in the transaction; heartbeats and
  other prefixes produce nothing. A DDL message whose *content* this version cannot read is logged and counted
  instead of raising: it costs one control record, never a row.

Anything malformed raises :class:`~cdcstream.errors.DecodeError` carrying the LSN of the frame.

Near 500 lines as one class: the per-message handlers share the transaction state and the relation plans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cdcstream.changes import ChangeEvent, Column, FusedRows, Item, Marker, Op, TableInfo
from cdcstream.checkpoints.model import PgCheckpoint
from cdcstream.errors import DecodeError
from cdcstream.sources.postgres import ddl, fused, values
from cdcstream.sources.postgres.pgoutput import (
    BEGIN,
    COMMIT,
    I16,
    I32,
    KEEPALIVE,
    MALFORMED,
    U32,
    XLOG,
    LogicalMessage,
    Message,
    Relation,
    Truncate,
    TypeMessage,
    format_lsn,
    parse_body,
    pg_time_to_epoch,
    pg_time_to_iso,
)


@dataclass(slots=True, eq=False)  # identity hash: plans are kept in a set of touched plans
class RelationPlan:
    """Everything needed to turn one relation's tuples into rows, built once per Relation message."""

    relation_id: int
    table: TableInfo
    selected: bool
    names: tuple[str, ...]
    columns: tuple[tuple[str, values.Converter | None], ...]  # (name, converter or None for text as-is)
    key_names: frozenset[str]
    type_oids: tuple[int, ...] = ()  # per column, to rebuild converters when type descriptions change
    # Events counted since the source last flushed them into Prometheus (one .inc() per batch, not per row),
    # indexed like OPS (a list index is much cheaper per row than hashing an enum).
    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    metric_children: dict[Op, Any] = field(default_factory=dict)
    key_flags: tuple[bool, ...] = ()  # per column: in the replica identity ('K' tuples carry only these)
    #: The compiled renderer of this relation's rows (fused.py), None where the reference path renders them.
    fused: Any = None


Selector = Callable[[str, str], bool]
FuseHook = Callable[[TableInfo], "fused.FusedColumns | None"]
"""The mapping's half of the fused path's eligibility (Mapper.fused_columns), asked once per relation."""

_ROW_TAGS = frozenset(b"IUD")
"""pgoutput's row messages: INSERT, UPDATE, DELETE."""

OPS = (Op.INSERT, Op.UPDATE, Op.DELETE, Op.TRUNCATE)
"""The operations a RelationPlan counts, in the order of ``RelationPlan.counts``."""


class Decoder:
    """Stateful, I/O-free pgoutput decoder producing the neutral change model.

    ``feed(frames)`` consumes raw CopyData payloads (``w``/``k`` frames) and returns the items they complete:
    row :class:`ChangeEvent`\\ s as they arrive, a commit :class:`Marker` after each Commit, and an idle
    :class:`Marker` for a keepalive received outside a transaction whose position is past the last one.
    """

    def __init__(
        self,
        *,
        selector: Selector | None = None,
        no_hex_prefix: bool = False,
        start_lsn: int = 0,
        types: values.TypeRegistry | None = None,
        fuse: FuseHook | None = None,
        runs: bool = False,
    ) -> None:
        self._selector = selector
        # Decided once per decoder, so that a test (or an operator) can switch the path by environment.
        self._fuse = fuse if fuse is not None and fused.available() else None
        # Whether consecutive compiled rows come out as one FusedRows (a consumer that maps them in process)
        # rather than a ChangeEvent each (CDC mapping workers take ChangeEvents).
        self._runs = runs and self._fuse is not None
        self.types = types if types is not None else values.TypeRegistry(no_hex_prefix=no_hex_prefix)
        self.plans: dict[int, RelationPlan] = {}
        # Names from Type messages: a fallback display name when the catalog could not describe a type.
        self.type_names: dict[int, str] = {}
        # (schema, table) -> primary key columns, supplied by the source for REPLICA IDENTITY FULL tables.
        self.primary_keys: dict[tuple[str, str], tuple[str, ...]] = {}
        # Transaction state.
        self.in_transaction = False
        self.xid = 0
        self._final_lsn = 0
        self._commit_time = ""
        self._commit_epoch = 0.0
        self._pos_prefix = ""
        self._record_id = 0
        # Positions and counters the source reads after each batch.
        # Added to every checkpoint (the server's system identifier and timeline): the source checks them at start.
        self.checkpoint_extra: PgCheckpoint = {}
        self.last_position = start_lsn  # end LSN of the last commit (or idle keepalive) yielded
        self.received_lsn = start_lsn  # highest walEnd seen
        self.reply_requested = False
        self.transactions = 0  # commits decoded since the counter was last reset by the source
        # DDL capture messages not understood since the source last took them: the source logs and counts them
        # (a decoder does no I/O).
        self.ddl_skipped: list[dict[str, str]] = []
        self.last_commit_epoch: float | None = None
        self.last_commit_time: str | None = None
        self.touched: set[RelationPlan] = set()
        # Set by feed() when it stopped for type descriptions: (OIDs to describe, frames still to feed).
        self.stalled: tuple[set[int], list[bytes]] | None = None
        self._index = 0
        self._handlers: dict[int, Callable[[bytes, list[Item]], None]] = {
            0x49: self._insert,  # 'I'
            0x55: self._update,  # 'U'
            0x44: self._delete,  # 'D'
            0x42: self._begin,  # 'B'
            0x43: self._commit,  # 'C'
            0x52: self._relation,  # 'R'
            0x54: self._truncate,  # 'T'
            0x59: self._type,  # 'Y'
            0x4D: self._logical_message,  # 'M'
            0x4F: self._origin,  # 'O'
        }

    # -- connection lifecycle ------------------------------------------------------------------------------
    def reset_transaction(self) -> None:
        """Forget a transaction cut off by a dropped connection; the server re-sends it from its Begin."""
        self.in_transaction = False
        self._record_id = 0

    # -- relation plans ------------------------------------------------------------------------------------
    def _is_selected(self, schema: str, table: str) -> bool:
        if schema == ddl.SCHEMA:
            return False  # DDL capture's own bookkeeping (a FOR ALL TABLES publication includes it)
        if self._selector is None:
            return schema not in ("pg_catalog", "information_schema")
        return self._selector(schema, table)

    def pending_type_oids(self, frames: Iterable[bytes]) -> set[int]:
        """Type OIDs the source should (re)describe from the catalog before ``feed(frames)``.

        Every user-defined type a Relation message in the batch references is returned even when known: a
        Relation is re-sent after ALTERs, and ``ALTER TYPE`` can change a composite's attributes without
        changing its OID. Built-in types outside the static table are returned only once. Relation messages
        are rare (once per table per connection and after invalidations), so this is a cheap scan.
        """
        oids: set[int] = set()
        for frame in frames:
            if len(frame) > 25 and frame[0] == 0x77 and frame[25] == 0x52:  # 'w' carrying 'R'
                try:
                    rel, _ = parse_body(bytes(frame[25:]))
                except (DecodeError, *MALFORMED):
                    continue  # feed() reports the malformed message with its LSN
                if isinstance(rel, Relation):
                    oids.update(c.type_oid for c in rel.columns)
        if not oids:
            return oids
        # User-defined types and, transitively, the user-defined types their description references.
        refresh: set[int] = set()
        todo = [oid for oid in oids if oid >= values.FIRST_NORMAL_OID]
        while todo:
            oid = todo.pop()
            if oid in refresh:
                continue
            refresh.add(oid)
            t = self.types.types.get(oid)
            if t is not None:
                todo.extend(r for r in t.references() if r >= values.FIRST_NORMAL_OID)
        return refresh | self.types.missing(oids)

    def add_relation(self, rel: Relation) -> RelationPlan:
        """Build (or replace: pgoutput re-sends Relation after invalidations and ALTERs) a relation's plan."""
        # With REPLICA IDENTITY FULL pgoutput flags *every* column as part of the key; the real primary key
        # (looked up by the source from the catalog) is what TableInfo must report.
        pk = self.primary_keys.get((rel.namespace, rel.name)) if rel.replica_identity == "f" else None
        columns = tuple(
            Column(
                name=c.name,
                type_name=self.types.name(c.type_oid) or self.type_names.get(c.type_oid, str(c.type_oid)),
                type_id=c.type_oid,
                nullable=True,
                is_key=c.is_key if pk is None else c.name in pk,
            )
            for c in rel.columns
        )
        table = TableInfo(rel.namespace, rel.name, columns)
        old = self.plans.get(rel.relation_id)
        if old is not None and old.table == table:
            # An unchanged re-send (pgoutput sends Relation again after any invalidation of the table's cache
            # entry, e.g. an ANALYZE): the same TableInfo, so what is planned per table downstream stays planned.
            table = old.table
        plan = RelationPlan(
            relation_id=rel.relation_id,
            table=table,
            selected=self._is_selected(rel.namespace, rel.name),
            names=tuple(c.name for c in rel.columns),
            columns=tuple((c.name, self.types.converter(c.type_oid)) for c in rel.columns),
            key_names=frozenset(c.name for c in rel.columns if c.is_key),
            type_oids=tuple(c.type_oid for c in rel.columns),
            key_flags=tuple(c.is_key for c in rel.columns),
        )
        plan.fused = self._fused_plan(plan)
        if old is not None and old.table.schema == table.schema and old.table.table == table.table:
            # Same table (re-send after an invalidation): keep the cached metric children and pending counts.
            plan.metric_children = old.metric_children
            plan.counts = old.counts
            if old in self.touched:
                self.touched.discard(old)
                self.touched.add(plan)
        self.plans[rel.relation_id] = plan
        return plan

    def refresh_plans(self) -> None:
        """Rebuild every plan's converters from the registry (after the source added type descriptions)."""
        for plan in self.plans.values():
            plan.columns = tuple(
                (name, self.types.converter(oid)) for name, oid in zip(plan.names, plan.type_oids, strict=True)
            )
            plan.fused = self._fused_plan(plan)

    def _fused_plan(self, plan: RelationPlan) -> Any:
        """The relation's compiled renderer when both the mapping and the column types allow it (fused.py)."""
        if self._fuse is None or not plan.selected:
            return None
        columns = self._fuse(plan.table)
        if columns is None:
            return None
        return fused.row_plan([c for _, c in plan.columns], plan.key_flags, columns, self.types)

    # -- frames --------------------------------------------------------------------------------------------
    def feed(self, frames: Iterable[bytes]) -> list[Item]:
        """Decode a batch. If a converter finds a stale type description (:class:`values.NeedTypes`), decoding
        stops before that message and ``self.stalled`` holds the OIDs to describe and the frames still to feed.
        """
        out: list[Item] = []
        seq = frames if isinstance(frames, list) else list(frames)
        try:
            self._feed(seq, out)
        except values.NeedTypes as need:
            self.stalled = (need.oids, seq[self._index :])
        return out

    def _feed(self, frames: list[bytes], out: list[Item]) -> None:
        self._index = 0
        runs = self._runs
        count = len(frames)
        while self._index < count:
            frame = frames[self._index]
            tag = frame[0] if frame else -1
            if tag == 0x77:  # 'w'
                if len(frame) < 26:
                    raise DecodeError(f"truncated XLogData frame near LSN {format_lsn(self.received_lsn)}")
                # A row message of a relation with a compiled renderer, inside a transaction: the rows from here
                # up to the first frame the compiled code leaves to this method, in one call (_run).
                if runs and self.in_transaction and frame[25] in _ROW_TAGS and self._run(frames, out):
                    continue
                start, end, _clock = XLOG.unpack_from(frame, 1)
                if end > self.received_lsn:
                    self.received_lsn = end
                self._message(frame, start, out)
            elif tag == 0x6B:  # 'k'
                if len(frame) != 18:
                    raise DecodeError(f"malformed keepalive near LSN {format_lsn(self.received_lsn)}")
                end, _clock, reply = KEEPALIVE.unpack_from(frame, 1)
                if end > self.received_lsn:
                    self.received_lsn = end
                if reply:
                    self.reply_requested = True
                if not self.in_transaction and end > self.last_position:
                    self.last_position = end
                    out.append(Marker({"lsn": format_lsn(end), **self.checkpoint_extra}, None, False))
            else:
                raise DecodeError(
                    f"unknown replication frame type {frame[:1]!r} near LSN {format_lsn(self.received_lsn)}"
                )
            self._index += 1

    def _run(self, frames: list[bytes], out: list[Item]) -> bool:
        """Rows of one relation from ``frames[self._index]`` through its compiled renderer's ``render_run``, as
        one :class:`FusedRows`: what ``_message`` would have emitted for them, a ``ChangeEvent`` each. False (and
        nothing consumed) where the first frame is not one the compiled code renders."""
        index = self._index
        frame = frames[index]
        if len(frame) < 31:
            return False
        relid = U32.unpack_from(frame, 26)[0]
        plan = self.plans.get(relid)
        if plan is None or plan.fused is None:
            return False
        end, ops, data, keys, wal_end = plan.fused.render_run(frames, index, relid)
        if end == index:
            return False
        if wal_end > self.received_lsn:
            self.received_lsn = wal_end
        first = self._record_id + 1
        self._record_id += len(ops)
        out.append(
            FusedRows(
                plan.table,
                ops,
                data,
                keys,
                self.xid,
                self._commit_time,
                self._commit_epoch,
                self._pos_prefix,
                first,
            )
        )
        counts = plan.counts
        for op_index in range(3):
            counts[op_index] += ops.count(op_index)
        self.touched.add(plan)
        self._index = end
        return True

    def _message(self, buf: bytes, lsn: int, out: list[Item]) -> None:
        try:
            self._dispatch(buf, out)
        except DecodeError:
            raise
        except MALFORMED as exc:
            kind = bytes(buf[25:26])
            raise DecodeError(
                f"malformed pgoutput message {kind!r} at LSN {format_lsn(lsn or self.received_lsn)} "
                f"(transaction {self.xid if self.in_transaction else '-'}): {exc!r}"
            ) from None

    # One handler per pgoutput message type. Offsets in the handlers are relative to the start of the 'w' frame:
    # the pgoutput message starts at byte 25, its relation id (row messages) at 26.
    def _dispatch(self, buf: bytes, out: list[Item]) -> None:
        handler = self._handlers.get(buf[25])
        if handler is None:
            raise DecodeError(
                f"unknown pgoutput message type {bytes(buf[25:26])!r} at LSN {format_lsn(self.received_lsn)}"
            )
        handler(buf, out)

    def _insert(self, buf: bytes, out: list[Item]) -> None:
        plan = self.plans[U32.unpack_from(buf, 26)[0]]
        if not plan.selected:
            return
        if buf[30] != 0x4E:
            raise ValueError("INSERT without a new tuple")
        if plan.fused is not None:
            got = plan.fused.render(buf, 31, False)
            if got is not None:
                self._check_end(buf, got[1])
                self._emit(out, plan, Op.INSERT, 0, None, None, _names(plan, got[2]), got[0], got[3])
                return
        row, unchanged, pos = self._row(plan, buf, 31)
        self._check_end(buf, pos)
        self._emit(out, plan, Op.INSERT, 0, row, None, unchanged)

    def _update(self, buf: bytes, out: list[Item]) -> None:
        plan = self.plans[U32.unpack_from(buf, 26)[0]]
        if not plan.selected or (plan.fused is not None and self._fused_update(plan, buf, out)):
            return
        pos = 30
        before = None
        kind = buf[pos]
        if kind == 0x4B or kind == 0x4F:  # 'K' key / 'O' old tuple
            before, _, pos = self._row(plan, buf, pos + 1, key_only=kind == 0x4B)
        if buf[pos] != 0x4E:
            raise ValueError("UPDATE without a new tuple")
        row, unchanged, pos = self._row(plan, buf, pos + 1)
        self._check_end(buf, pos)
        if unchanged and kind == 0x4F and before is not None:
            row, unchanged = _fill_unchanged(plan.names, row, unchanged, before)
        self._emit(out, plan, Op.UPDATE, 1, row, before, unchanged)

    def _delete(self, buf: bytes, out: list[Item]) -> None:
        plan = self.plans[U32.unpack_from(buf, 26)[0]]
        if not plan.selected:
            return
        kind = buf[30]
        if kind != 0x4B and kind != 0x4F:
            raise ValueError("DELETE without a key or old tuple")
        if plan.fused is not None:
            got = plan.fused.render(buf, 31, kind == 0x4B)
            if got is not None:
                self._check_end(buf, got[1])
                self._emit(out, plan, Op.DELETE, 2, None, None, (), got[0], got[3])
                return
        before, _, pos = self._row(plan, buf, 31, key_only=kind == 0x4B)
        self._check_end(buf, pos)
        self._emit(out, plan, Op.DELETE, 2, None, before, ())

    def _fused_update(self, plan: RelationPlan, buf: bytes, out: list[Item]) -> bool:
        """An UPDATE through the compiled renderer; False where the reference path must decode it. The old tuple
        is checked as the reference path checks it, then dropped: an eligible mapping writes no before image."""
        render = plan.fused.render
        pos = 30
        kind = buf[pos]
        if kind == 0x4B or kind == 0x4F:  # 'K' key / 'O' old tuple
            old = render(buf, pos + 1, kind == 0x4B)
            if old is None:
                return False
            pos = old[1]
        if pos >= len(buf) or buf[pos] != 0x4E:
            return False
        new = render(buf, pos + 1, False)
        # With an old tuple ('O') the unchanged values are taken from it (_fill_unchanged): the reference path.
        if new is None or (new[2] and kind == 0x4F):
            return False
        self._check_end(buf, new[1])
        self._emit(out, plan, Op.UPDATE, 1, None, None, _names(plan, new[2]), new[0], new[3])
        return True

    def _begin(self, buf: bytes, out: list[Item]) -> None:
        final_lsn, ts, xid = BEGIN.unpack_from(buf, 26)
        self._check_end(buf, 26 + BEGIN.size)
        self.in_transaction = True
        self.xid = xid
        self._final_lsn = final_lsn
        self._commit_time = pg_time_to_iso(ts)
        self._commit_epoch = pg_time_to_epoch(ts)
        self._pos_prefix = f"{final_lsn >> 32:08X}/{final_lsn & 0xFFFFFFFF:08X}."
        self._record_id = 0

    def _commit(self, buf: bytes, out: list[Item]) -> None:
        _flags, _commit_lsn, end_lsn, ts = COMMIT.unpack_from(buf, 26)
        self._check_end(buf, 26 + COMMIT.size)
        if not self.in_transaction:
            raise ValueError("COMMIT without BEGIN")
        self.in_transaction = False
        self.transactions += 1
        epoch = pg_time_to_epoch(ts)
        self.last_commit_epoch = epoch
        self.last_commit_time = self._commit_time
        if end_lsn > self.last_position:
            self.last_position = end_lsn
        out.append(Marker({"lsn": format_lsn(end_lsn), **self.checkpoint_extra}, epoch, True))

    @staticmethod
    def _parsed(buf: bytes) -> Message:
        """A rare message through the reference parser, whole (no byte left over)."""
        msg, pos = parse_body(bytes(buf[25:]))
        Decoder._check_end(buf, 25 + pos)
        return msg

    def _relation(self, buf: bytes, out: list[Item]) -> None:
        rel = self._parsed(buf)
        assert isinstance(rel, Relation)
        self.add_relation(rel)

    def _truncate(self, buf: bytes, out: list[Item]) -> None:
        msg = self._parsed(buf)
        assert isinstance(msg, Truncate)
        for relid in msg.relation_ids:
            plan = self.plans[relid]
            if plan.selected:
                self._emit(out, plan, Op.TRUNCATE, 3, None, None, ())

    def _type(self, buf: bytes, out: list[Item]) -> None:
        """Remembers the name of a user-defined type for later Relation messages."""
        msg = self._parsed(buf)
        assert isinstance(msg, TypeMessage)
        self.type_names[msg.type_oid] = msg.name if msg.namespace == "pg_catalog" else f"{msg.namespace}.{msg.name}"

    def _logical_message(self, buf: bytes, out: list[Item]) -> None:
        """Heartbeats (no event) and DDL capture (control events)."""
        msg = self._parsed(buf)
        assert isinstance(msg, LogicalMessage)
        if msg.prefix == ddl.PREFIX and msg.transactional and self.in_transaction:
            self._schema_change(msg, out)

    def _origin(self, buf: bytes, out: list[Item]) -> None:
        self._parsed(buf)  # validated, no event

    def _schema_change(self, msg: LogicalMessage, out: list[Item]) -> None:
        """Control events from a DDL capture message (sources/postgres/ddl.py), at its place in the transaction.
        A message this version cannot read is noted for the source to log and count, not fatal: the rows around
        it still decode (Relation messages carry the columns), only the control record is missing."""
        try:
            events = ddl.schema_changes(msg.content, self._ddl_type_name)
        except ddl.BadMessage as exc:
            content = msg.content[:2000].decode("utf-8", "replace")
            self.ddl_skipped.append({"reason": str(exc), "lsn": format_lsn(msg.lsn), "content": content})
            return
        for ev in events:
            old = ev.change.old_table
            if not (self._is_selected(ev.table.schema, ev.table.table) or self._is_selected(old.schema, old.table)):
                continue
            self._record_id += 1
            rid = self._record_id
            out.append(
                ChangeEvent(
                    ev.op,
                    ev.table,
                    None,
                    None,
                    self.xid,
                    self._commit_time,
                    self._commit_epoch,
                    f"{self._pos_prefix}{rid:010d}",
                    rid,
                    (),
                    ev.change,
                )
            )

    def _ddl_type_name(self, oid: int, text: str) -> str:
        return self.types.name(oid) or self.type_names.get(oid) or text

    @staticmethod
    def _check_end(buf: bytes, pos: int) -> None:
        if pos != len(buf):
            raise ValueError(f"{len(buf) - pos} bytes left over (or missing) at the end of the message")

    def _row(
        self, plan: RelationPlan, buf: bytes, pos: int, key_only: bool = False
    ) -> tuple[dict[str, Any], tuple[str, ...], int]:
        (ncols,) = I16.unpack_from(buf, pos)
        pos += 2
        names = plan.names
        if ncols != len(names):
            raise ValueError(
                f"tuple has {ncols} columns, relation {plan.table.schema}.{plan.table.table} has {len(names)}"
            )
        row: dict[str, Any] = {}
        unchanged: list[str] | None = None
        unpack_i32 = I32.unpack_from
        blen = len(buf)
        for name, conv in plan.columns:
            kind = buf[pos]
            if kind == 0x74:  # 't'
                n = unpack_i32(buf, pos + 1)[0]
                pos += 5
                end = pos + n
                # Slicing never raises: check the bound once per value (a short slice would corrupt silently).
                if end > blen or n < 0:
                    raise ValueError("column value runs past the end of the message")
                # conv is None for text-like types: skipping the identity call is measurable per column.
                row[name] = buf[pos:end].decode() if conv is None else conv(buf[pos:end].decode())
                pos = end
            elif kind == 0x6E:  # 'n'
                row[name] = None
                pos += 1
            elif kind == 0x75:  # 'u': unchanged TOAST, the server did not send the value
                if unchanged is None:
                    unchanged = []
                unchanged.append(name)
                pos += 1
            else:
                raise ValueError(f"unknown tuple column kind {kind!r}")
        if key_only:
            # A 'K' tuple carries the replica identity columns; the others are placeholder nulls.
            row = {k: v for k, v in row.items() if k in plan.key_names}
        return row, (tuple(unchanged) if unchanged else ()), pos

    def _emit(
        self,
        out: list[Item],
        plan: RelationPlan,
        op: Op,
        op_index: int,
        after: dict[str, Any] | None,
        before: dict[str, Any] | None,
        unchanged: tuple[str, ...],
        data: bytes | None = None,
        key: str | None = None,
    ) -> None:
        if not self.in_transaction:
            raise ValueError(f"{op.value} outside a transaction")
        self._record_id += 1
        rid = self._record_id
        out.append(
            ChangeEvent(
                op,
                plan.table,
                after,
                before,
                self.xid,
                self._commit_time,
                self._commit_epoch,
                f"{self._pos_prefix}{rid:010d}",
                rid,
                unchanged,
                None,
                data,
                key,
            )
        )
        plan.counts[op_index] += 1
        self.touched.add(plan)


def _names(plan: RelationPlan, indexes: tuple[int, ...]) -> tuple[str, ...]:
    """Column names of the compiled renderer's unchanged-TOAST indexes."""
    return tuple(plan.names[i] for i in indexes) if indexes else ()


def _fill_unchanged(
    names: tuple[str, ...], row: dict[str, Any], unchanged: tuple[str, ...], before: dict[str, Any]
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Unchanged TOASTed values of an UPDATE, taken from the old tuple ('O', REPLICA IDENTITY FULL).

    With REPLICA IDENTITY FULL the server logs the old row detoasted, so the value the new tuple leaves out
    ('u') is the old one: the row is complete. A column the old tuple lacks too stays listed as unchanged.
    Column order is kept (consumers diffing records by eye expect it).
    """
    still = tuple(n for n in unchanged if n not in before)
    filled = {n: row[n] if n in row else before[n] for n in names if n in row or n in before}
    return filled, still
