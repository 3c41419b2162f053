"""The binlog's events turned into changes: :class:`EventConverter`, the transaction state machine.

One instance per source (it survives reconnects). It takes each raw event (:mod:`.binlog.events` checks its size
and checksum first), dispatches on its type code through the table cdcstream owns
(:data:`.binlog.events.EVENT_TYPES`: decoded, ignored with a reason, or refused with a fix; an unknown type stops
the reader) and turns row events into :class:`~cdcstream.changes.ChangeEvent` (through the table versions of
:mod:`.tableplans`: rows of tables no rule selects are never decoded), TRUNCATE/DROP/ALTER/RENAME TABLE
statements into control events (:mod:`.ddl`; an ALTER event carries the table's last table-map shape as
"before"), and transaction ends (XID, XA_PREPARE, a ``COMMIT`` query of a non-transactional engine, a standalone
DDL statement) into :class:`~cdcstream.changes.Marker` — never a position inside a transaction, because a resume
there would lose the table map the following row events need. Anything it cannot decode raises before the
transaction's marker, so no checkpoint passes it. The reader thread (:mod:`.reader`) feeds it.

What the binlog may carry besides complete FULL row images, and what happens
(docs/mysql.md, "What the binlog may carry"): compressed events (MariaDB ``log_bin_compress``, MySQL
``binlog_transaction_compression``) are decompressed; partial row images (a session's ``binlog_row_image =
MINIMAL``/``NOBLOB``) become records whose missing columns are filled from the before image where it has them and
otherwise listed in ``metadata.unchanged-columns``; partial JSON updates are applied to the before image; a data
change logged as a *statement* (a session's ``binlog_format = STATEMENT``/``MIXED``) on a captured table cannot be
captured and stops the reader; so do the rows of an XA transaction (logged at XA PREPARE, before it is known whether
they commit).

MariaDB traps handled here: MariaDB writes no ``BEGIN`` (its GTID event opens a
transaction; flag ``FL_STANDALONE`` marks DDL); ROTATE events arrive twice after ``FLUSH BINARY LOGS`` plus a
fake one at connect (handled idempotently: a rotate only sets the current file and position).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from cdcstream.changes import ALTER_OPS, ChangeEvent, Item, Marker, Op, SchemaChange, TableInfo
from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.errors import DecodeError, SourceError
from cdcstream.sources.mysql.binlog import compression, tablemap
from cdcstream.sources.mysql.binlog import events as ev
from cdcstream.sources.mysql.binlog.charsets import Charsets
from cdcstream.sources.mysql.binlog.gtid import GtidState
from cdcstream.sources.mysql.binlog.rowevents import partial_after_image, rows_header
from cdcstream.sources.mysql.ddl import TableDdl, UnparsedStatement, altered, captured_dml, parse_ddl
from cdcstream.sources.mysql.tableplans import FixedBinaryLookup, FuseHook, TablePlan, TablePlans

log = structlog.get_logger(__name__)

SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
# What to do about a change in the binlog that cannot be streamed: cdcstream cannot get past it on its own.
RESYNC = (
    "This change cannot be streamed, and a restart reaches it again: exclude the table from the mapping, or "
    "re-sync the target with a full load (move the checkpoint file away deliberately; migration_type = "
    '"full-load-and-cdc" starts after the binlog position of the new snapshot).'
)


def format_epoch(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_ROW_OPS = {code: Op.INSERT for code in ev.WRITE_ROWS}
_ROW_OPS.update({code: Op.UPDATE for code in ev.UPDATE_ROWS})
_ROW_OPS.update({code: Op.DELETE for code in ev.DELETE_ROWS})
_OP_INDEX = {Op.INSERT: 0, Op.UPDATE: 1, Op.DELETE: 2}
_GTID_EVENTS = frozenset({ev.MARIADB_GTID_EVENT, ev.GTID_LOG_EVENT, ev.ANONYMOUS_GTID_LOG_EVENT})
_QUERY_EVENTS = frozenset({ev.QUERY_EVENT, ev.QUERY_COMPRESSED_EVENT, ev.EXECUTE_LOAD_QUERY_EVENT})


class EventConverter:
    """Raw binlog events -> items, with the transaction state (position, GTID, record numbers)."""

    def __init__(
        self,
        *,
        selector: Callable[[str, str], bool],
        no_hex_prefix: bool,
        mariadb: bool,
        file: str,
        pos: int,
        gtid: str | None,
        invalid_dates: str = "text",
        schema_captured: Callable[[str], bool] | None = None,
        fuse: FuseHook | None = None,
    ) -> None:
        self._schema_captured = schema_captured or (lambda s: s not in SYSTEM_SCHEMAS)
        self.mariadb = mariadb
        self.file = file
        self.pos = pos
        self.fmt = ev.Format(checksum=False)
        # fuse: the mapping's half of the compiled fused row path (fused.py); without it every row is pure.
        self._tables = TablePlans(
            selector, no_hex_prefix=no_hex_prefix, invalid_dates=invalid_dates, mariadb=mariadb, fuse=fuse
        )
        # table id -> plan (None: not selected), valid within one connection's stream.
        self._by_table_id: dict[int, TablePlan | None] = {}
        self._warned: set[int] = set()  # event types skipped as ignorable, said once each
        self._gtids = GtidState(mariadb=mariadb, text=gtid)  # after the last complete transaction
        self.in_tx = False
        self._standalone = False
        # Where the current transaction's XA START was: rows of captured tables inside it are refused (below).
        self._xa_start: str | None = None
        self._tx_gtid: str | None = None
        self.tx_id: str | None = None
        self._prefix = ""
        self._commit_time = ""
        self._commit_epoch = 0.0
        self._record = 0
        self.transactions = 0
        self.ddl_skipped = 0  # statements not understood since the reader last handed over a batch
        self.last_commit_epoch: float | None = None
        self.last_commit_time: str | None = None
        self.touched: set[TablePlan] = set()
        self.heard: tuple[str, int] | None = None  # set by a heartbeat event, read (and reset) by the reader
        self.at = f"{file}:{pos}"  # the event being handled, for errors
        # Fields every checkpoint carries besides the position: which server it belongs to
        # (MySQLSource._verify_resume) and, after a full load, {"load": {"done": true, ...}}.
        self.checkpoint_extra: MySQLCheckpoint = {}

    # -- connection -----------------------------------------------------------------------------------------
    def connected(self, checksum: bool, charsets: Charsets, fixed_binary: FixedBinaryLookup | None) -> None:
        """A new dump connection: events start with what it negotiated, until the first FORMAT_DESCRIPTION."""
        self.fmt = ev.Format(checksum)
        self._tables.connected(charsets, fixed_binary)
        self._by_table_id.clear()

    def checkpoint(self) -> MySQLCheckpoint:
        """The position after the last complete transaction, with the fields every checkpoint carries."""
        return {"file": self.file, "pos": self.pos, "gtid": self._gtids.text(), **self.checkpoint_extra}

    def reset_transaction(self) -> None:
        """Forget a transaction cut off by a dropped connection; it is re-read from its start after reconnect."""
        self.in_tx = False
        self._standalone = False
        self._xa_start = None
        self._tx_gtid = None
        self._record = 0
        self._by_table_id.clear()  # table ids are only valid within one connection's stream

    # -- table plans ----------------------------------------------------------------------------------------
    def selected(self, schema: str, table: str) -> bool:
        return self._tables.selected(schema, table)

    def _table_map(self, raw: bytes, end: int) -> None:
        post = self.fmt.post_header_len(ev.TABLE_MAP_EVENT, 8)
        self._by_table_id[tablemap.table_id(raw, post)] = self._tables.plan(raw, end, post, self.at)

    def _forget_tables(self) -> None:
        """After DDL: table versions (and what the catalogue said about them) are read afresh."""
        self._tables.forget()
        self._by_table_id.clear()

    # -- transactions ---------------------------------------------------------------------------------------
    def _begin(self, start: int, timestamp: int, gtid: str | None) -> None:
        self.in_tx = True
        self._xa_start = None
        self._tx_gtid = gtid
        self.tx_id = gtid or f"{self.file}:{start}"
        self._prefix = f"{self.file}:{start:012d}."
        epoch = float(timestamp)
        self._commit_epoch = epoch
        self._commit_time = format_epoch(epoch)
        self._record = 0

    def _commit(self, end_pos: int, out: list[Item]) -> None:
        self.pos = end_pos
        if self._tx_gtid:
            self._gtids.add(self._tx_gtid)
        self.in_tx = False
        self._standalone = False
        self._tx_gtid = None
        self.transactions += 1
        self.last_commit_epoch = self._commit_epoch
        self.last_commit_time = self._commit_time
        out.append(Marker(self.checkpoint(), self._commit_epoch, True))

    # -- events ---------------------------------------------------------------------------------------------
    def handle(self, raw: bytes, out: list[Item], outer: tuple[int, int] | None = None) -> None:
        """Append the items of one event to ``out``. ``outer``: (start, end) of the TRANSACTION_PAYLOAD_EVENT an
        embedded event came in (embedded events have no position and no checksum of their own)."""
        timestamp, code, server_id, size, log_pos, flags = ev.header(raw)
        if outer is None:
            start, end = (log_pos - size if log_pos else self.pos), log_pos
            self.at = f"{self.file}:{start}"
        else:
            start, end = outer
        try:
            if outer is not None:
                if size != len(raw):
                    raise DecodeError("an event embedded in the TRANSACTION_PAYLOAD_EVENT is cut short")
                body_end = size
            elif code == ev.FORMAT_DESCRIPTION_EVENT:
                self.fmt = ev.format_description(raw).format
                self._by_table_id.clear()  # a new file (or a restarted server): table ids start over
                return
            else:
                body_end = ev.frame(raw, self.fmt, self.at)
            known = ev.EVENT_TYPES.get(code)
            if known is None or known.handling is not ev.Handling.DECODE:
                self._not_decoded(code, flags, known)
                return
            self._dispatch(raw, code, body_end, start, end, timestamp, server_id, out)
        except (IndexError, ValueError, UnicodeDecodeError, struct.error, DecodeError) as exc:
            if isinstance(exc, DecodeError) and self.at in str(exc):
                raise
            reason = str(exc) if isinstance(exc, DecodeError) else repr(exc)
            raise DecodeError(
                f"cannot decode binlog event {ev.type_name(code)} at {self.at}: {reason}. cdcstream stops rather "
                "than skip it; nothing after the last checkpoint is acknowledged"
            ) from None

    def _not_decoded(self, code: int, flags: int, known: ev.EventType | None) -> None:
        if known is not None and known.handling is ev.Handling.IGNORE:
            return
        if known is not None:  # REFUSE
            raise DecodeError(
                f"binlog event {ev.type_name(code)} at {self.at}: {known.why}. cdcstream stops here; nothing after "
                "the last checkpoint is acknowledged."
            )
        if flags & ev.LOG_EVENT_IGNORABLE_F:
            if code not in self._warned:
                self._warned.add(code)
                log.warning(
                    "skipping binlog events of a type cdcstream does not know, which the server marks as ignorable "
                    "(LOG_EVENT_IGNORABLE_F: a replica that does not know them may skip them)",
                    event_type=code,
                    position=self.at,
                )
            return
        raise DecodeError(
            f"binlog event of unknown type {code} at {self.at} (flags {flags:#06x}): cdcstream does not know what it "
            "carries, so it stops rather than skip a change that may be in it; nothing after the last checkpoint is "
            "acknowledged. The server is newer than this cdcstream: upgrade cdcstream, or report the server version "
            "and the output of mysqlbinlog --hexdump for this position."
        )

    def _dispatch(
        self, raw: bytes, code: int, body_end: int, start: int, end: int, ts: int, server_id: int, out: list[Item]
    ) -> None:
        if code in _ROW_OPS or code in ev.COMPRESSED_ROWS_EVENTS:
            self._rows(raw, code, body_end, start, ts, out)
        elif code == ev.TABLE_MAP_EVENT:
            self._table_map(raw, body_end)
        elif code == ev.XID_EVENT:
            if not self.in_tx:  # a transaction whose start we did not see: impossible at marker positions
                self._begin(start, ts, None)
            self._commit(end, out)
        elif code in _GTID_EVENTS:
            self._gtid_event(raw, code, body_end, start, ts, server_id)
        elif code in _QUERY_EVENTS:
            if code == ev.QUERY_COMPRESSED_EVENT:
                raw = compression.mariadb_uncompress(raw, body_end, self.fmt)
                body_end, code = len(raw), ev.QUERY_EVENT
            self._query(ev.query(raw, body_end, self.fmt, code), start, end, ts, out)
        elif code == ev.ROTATE_EVENT:
            # Idempotent: the fake rotate at connect and the duplicate after FLUSH BINARY LOGS set the same values.
            r = ev.rotate(raw, body_end)
            self.file, self.pos = r.file, r.position
        elif code in (ev.HEARTBEAT_LOG_EVENT, ev.HEARTBEAT_LOG_EVENT_V2):
            hb = ev.heartbeat(raw, body_end, end) if code == ev.HEARTBEAT_LOG_EVENT else ev.heartbeat_v2(raw, body_end)
            self.heard = (hb.file.rstrip("\x00"), hb.position)
        elif code == ev.XA_PREPARE_LOG_EVENT:
            ev.xa_prepare(raw, body_end)
            if not self.in_tx:
                self._begin(start, ts, None)
            self._commit(end, out)  # ends the XA START ... XA PREPARE group (its rows were refused, see _rows)
        elif code == ev.TRANSACTION_PAYLOAD_EVENT:
            for inner in compression.mysql_payload_events(raw, body_end):
                self.handle(inner, out, (start, end))
        else:  # a type the table says is decoded but nothing here decodes: a bug, never a skip
            raise DecodeError(f"binlog event {ev.type_name(code)} at {self.at} has no decoder")

    def _gtid_event(self, raw: bytes, code: int, body_end: int, start: int, ts: int, server_id: int) -> None:
        """A GTID event opens a transaction (MariaDB writes no BEGIN)."""
        if code == ev.MARIADB_GTID_EVENT:
            g = ev.mariadb_gtid(raw, body_end, server_id)
            self._begin(start, ts, g.gtid)
            self._standalone = bool(g.flags & ev.FL_STANDALONE)
            if g.flags & ev.FL_PREPARED_XA:  # MariaDB's XA START ... XA PREPARE group (see _rows)
                self._xa_start = self.at
        else:
            g = ev.mysql_gtid(raw, body_end)
            self._begin(start, ts, g.gtid)
            self._standalone = True  # until a BEGIN query says it is a transaction

    def _query(self, q: ev.Query, start: int, end: int, ts: int, out: list[Item]) -> None:
        query = q.query
        word = query.lstrip()[:9].upper()
        if word.startswith("BEGIN"):
            if not self.in_tx:
                self._begin(start, ts, None)
            self._standalone = False
            return
        if word.startswith("COMMIT") or (word.startswith("ROLLBACK") and "TO" not in query.upper().split()[:3]):
            # non-transactional engines end a statement group with a COMMIT query instead of an Xid
            if not self.in_tx:
                self._begin(start, ts, None)
            self._commit(end, out)
            return
        if word.startswith(("XA START", "XA BEGIN")):  # MySQL: opens a transaction like BEGIN, but see _rows
            if not self.in_tx:
                self._begin(start, ts, None)
            self._standalone = False
            self._xa_start = self.at
            return
        if query.lstrip()[:11].upper().startswith(("XA COMMIT", "XA ROLLBACK")):
            # the outcome of a prepared XA transaction (its own event group; MariaDB flags it FL_COMPLETED_XA)
            if not self.in_tx:
                self._begin(start, ts, None)
            self._commit(end, out)
            return
        self._refuse_statement_dml(q)
        if self.in_tx and not self._standalone:
            return  # SAVEPOINT and friends inside a transaction
        if not self.in_tx:
            self._begin(start, ts, None)
        try:
            targets = parse_ddl(query, q.schema)
        except UnparsedStatement as exc:
            log.warning(
                "DDL statement not understood, skipped (no control record for it)",
                statement=query[:2000],
                reason=str(exc),
                position=f"{self.file}:{end}",
            )
            self.ddl_skipped += 1
            targets = []
        if not word.startswith("XA "):
            self._forget_tables()  # DDL may have changed a table without changing its table map (UUID<->BINARY)
        self._ddl_events(targets, out)
        self._commit(end, out)

    def _refuse_statement_dml(self, q: ev.Query) -> None:
        """A data change logged as a statement (a session with binlog_format STATEMENT/MIXED): its rows are not
        in the binlog. On a captured table that is a change cdcstream cannot stream, so it stops."""
        what = captured_dml(q.query, q.schema, self.selected, self._schema_captured)
        if what is not None:
            self._statement_error(q, what)

    def _statement_error(self, q: ev.Query, what: str) -> None:
        raise SourceError(
            f"the binlog at {self.at} has {what} logged as an SQL statement, not as rows (a session with "
            f"binlog_format = STATEMENT or MIXED, or the global setting changed while cdcstream ran): "
            f"{q.query[:300]!r}. Its rows cannot be captured, so cdcstream stops rather than skip the change; "
            "nothing after the last checkpoint is acknowledged. Fix: SET GLOBAL binlog_format = ROW (and in the "
            "server config) and keep sessions from setting another format (it needs BINLOG ADMIN / SUPER / "
            f"SESSION_VARIABLES_ADMIN). {RESYNC}"
        )

    def _ddl_events(self, targets: list[TableDdl], out: list[Item]) -> None:
        infos = self._tables.infos
        for t in targets:
            key = (t.schema, t.table)
            old = infos.get(key) or TableInfo(t.schema, t.table, ())
            info, change = old, None
            if t.op in ALTER_OPS:
                info = altered(old, t)
                change = SchemaChange(old, t.column, t.old_column)
                # What the next control event of this table knows; rows bring their own table map anyway.
                infos.pop(key, None)
                infos[(info.schema, info.table)] = info
            if not (self.selected(t.schema, t.table) or self.selected(info.schema, info.table)):
                continue
            self._record += 1
            rid = self._record
            out.append(
                ChangeEvent(
                    t.op,
                    info,
                    None,
                    None,
                    self.tx_id,
                    self._commit_time,
                    self._commit_epoch,
                    f"{self._prefix}{rid:010d}",
                    rid,
                    (),
                    change,
                )
            )

    def _rows(self, raw: bytes, code: int, body_end: int, start: int, ts: int, out: list[Item]) -> None:
        compressed = code in ev.COMPRESSED_ROWS_EVENTS
        v1 = code in (ev.WRITE_ROWS_EVENT_V1, ev.UPDATE_ROWS_EVENT_V1, ev.DELETE_ROWS_EVENT_V1) or (
            compressed and code <= ev.DELETE_ROWS_COMPRESSED_EVENT_V1
        )
        tid = tablemap.table_id(raw, self.fmt.post_header_len(code, 8 if v1 else 10))
        if tid not in self._by_table_id:
            raise DecodeError(f"row event for table id {tid} without its table map at {self.at}")
        plan = self._by_table_id[tid]
        if plan is None:
            return  # not selected: never decompressed, never decoded
        if self._xa_start is not None:
            # An XA transaction's rows are logged at XA PREPARE, before the outcome is known (XA ROLLBACK may
            # follow, much later). Streaming them would publish changes that may never commit; buffering them
            # is not implemented yet. So stop, instead of streaming silently wrong data.
            raise SourceError(
                f"{plan.label} was changed inside an XA (two-phase commit) transaction, XA START at "
                f"{self._xa_start}: cdcstream does not support XA transactions yet (their rows are logged at XA "
                "PREPARE, before it is known whether they commit). It stops rather than stream changes that may be "
                f"rolled back. Options: commit {plan.label}'s changes without XA, or exclude it from the mapping."
            )
        if compressed:
            raw = compression.mariadb_uncompress(raw, body_end, self.fmt)
            code, body_end = raw[4], len(raw)
        if not self.in_tx:
            self._begin(start, ts, None)
        op = _ROW_OPS[code]
        first = len(out)
        try:
            n = self._row_images(plan, raw, code, body_end, op, out)
        except (IndexError, ValueError, UnicodeDecodeError, struct.error, DecodeError) as exc:
            # The rows read before the error came from an event that is not what its table map says: none of
            # them may reach the stream (the reader hands over what is in ``out`` before the failure).
            del out[first:]
            reason = str(exc) if isinstance(exc, DecodeError) else repr(exc)
            raise DecodeError(
                f"cannot decode the {op.value} row event of {plan.label} at {self.at}: {reason}. cdcstream stops "
                "rather than skip it; nothing after the last checkpoint is acknowledged"
            ) from None
        plan.counts[_OP_INDEX[op]] += n
        self._record += n
        self.touched.add(plan)

    def _row_images(self, plan: TablePlan, raw: bytes, code: int, end: int, op: Op, out: list[Item]) -> int:
        hdr = rows_header(raw, end, self.fmt, code)
        rp = plan.rows
        if hdr.width != rp.ncols:
            raise DecodeError(f"the event has {hdr.width} columns, its table map {rp.ncols}")
        img = rp.image(hdr.present)
        img2 = rp.image(hdr.present2) if hdr.present2 is not None else img
        if not (img.columns and img2.columns) and hdr.start < end:
            raise DecodeError("the event has rows but no columns")
        partial_json = code == ev.PARTIAL_UPDATE_ROWS_EVENT
        tx_id, ctime, cepoch, prefix, info = self.tx_id, self._commit_time, self._commit_epoch, self._prefix, plan.info
        first = len(out)
        rid = self._record
        append = out.append
        pos = hdr.start
        if not (img.missing or img2.missing or partial_json) and plan.fused is not None:
            pos = self._fused_rows(plan, img.read, raw, pos, end, op, out)
        elif not (img.missing or img2.missing or partial_json):  # FULL images: the hot path
            read = img.read
            while pos < end:
                rid += 1
                if op is Op.UPDATE:
                    before, pos = read(raw, pos)
                    after, pos = read(raw, pos)
                    append(ChangeEvent(op, info, after, before, tx_id, ctime, cepoch, f"{prefix}{rid:010d}", rid))
                elif op is Op.INSERT:
                    after, pos = read(raw, pos)
                    append(ChangeEvent(op, info, after, None, tx_id, ctime, cepoch, f"{prefix}{rid:010d}", rid))
                else:
                    before, pos = read(raw, pos)
                    append(ChangeEvent(op, info, None, before, tx_id, ctime, cepoch, f"{prefix}{rid:010d}", rid))
        else:
            while pos < end:
                rid += 1
                old: dict[str, Any] | None = None
                new: dict[str, Any] | None = None
                if op is Op.UPDATE:
                    old, pos = img.read(raw, pos)
                    if partial_json:
                        new, pos = partial_after_image(rp, img2, raw, pos, old)
                    else:
                        new, pos = img2.read(raw, pos)
                elif op is Op.INSERT:
                    new, pos = img.read(raw, pos)
                else:
                    old, pos = img.read(raw, pos)
                new, unchanged = self._complete(plan, op, new, old, img2 if op is Op.UPDATE else img)
                append(ChangeEvent(op, info, new, old, tx_id, ctime, cepoch, f"{prefix}{rid:010d}", rid, unchanged))
        if pos != end:  # the loop stops at or after the end: after means a column read past the event
            raise ValueError(f"the row images run {pos - end} bytes past the end of the row event")
        return len(out) - first

    def _fused_rows(self, plan: TablePlan, read: Any, raw: bytes, pos: int, end: int, op: Op, out: list[Item]) -> int:
        """FULL row images through the compiled renderer (fused.py); a row it does not render is read by the
        reference reader ``read`` (which renders it or raises), and the compiled renderer goes on after it.
        Returns where the rows end, as the reference loop does."""
        tx_id, ctime, cepoch, prefix, info = self.tx_id, self._commit_time, self._commit_epoch, self._prefix, plan.info
        render = plan.fused.render
        update = op is Op.UPDATE
        rid = self._record
        append = out.append
        while pos < end:
            rows, pos = render(raw, pos, end, update)
            for data, key in rows:
                rid += 1
                append(
                    ChangeEvent(
                        op, info, None, None, tx_id, ctime, cepoch, f"{prefix}{rid:010d}", rid, (), None, data, key
                    )
                )
            if pos >= end:
                break
            rid += 1
            before: dict[str, Any] | None = None
            after: dict[str, Any] | None = None
            if op is Op.DELETE:
                before, pos = read(raw, pos)
            else:
                if update:
                    before, pos = read(raw, pos)
                after, pos = read(raw, pos)
            append(ChangeEvent(op, info, after, before, tx_id, ctime, cepoch, f"{prefix}{rid:010d}", rid))
        return pos

    def _complete(
        self, plan: TablePlan, op: Op, after: dict[str, Any] | None, before: dict[str, Any] | None, img: Any
    ) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
        """A partial row image (binlog_row_image MINIMAL/NOBLOB): an UPDATE's columns missing from the after
        image kept their value, so they are taken from the before image where it has them; what is still
        missing is listed as unchanged (docs/mysql.md, "What the binlog may carry"). The key must be there."""
        if not img.missing:
            return after, ()
        names = plan.rows.names
        if op is Op.UPDATE and after is not None and before is not None:
            merged = {n: (after[n] if n in after else before[n]) for n in names if n in after or n in before}
            after = merged
        row = before if op is Op.DELETE else after
        assert row is not None
        unchanged = tuple(n for n in names if n not in row)
        lacking = [k for k in plan.keys if k not in row]
        if lacking:
            raise SourceError(
                f"a {op.value} of {plan.label} at {self.at} arrived without its key column(s) {', '.join(lacking)}: "
                "the writing session logged a partial row image (binlog_row_image = MINIMAL or NOBLOB) that does "
                "not include them, so the change cannot be keyed. Fix: SET GLOBAL binlog_row_image = FULL (and in "
                f"the server config) and keep sessions from setting another value. {RESYNC}"
            )
        return after, unchanged
