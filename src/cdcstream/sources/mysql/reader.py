"""The binlog reader: raw binlog events on a dedicated thread, turned into ChangeEvent/Marker lists.

Two parts:

* :class:`EventConverter` — the transaction state machine, one instance per source (it survives reconnects).
  It takes each raw event (:mod:`.binlog.events` checks its size and checksum first), dispatches on its type
  code through the table cdcstream owns (:data:`.binlog.events.EVENT_TYPES`: decoded, ignored with a reason,
  or refused with a fix; an unknown type stops the reader) and turns row events into
  :class:`~cdcstream.changes.ChangeEvent` (rows of tables no rule selects are never decoded), TRUNCATE/DROP/
  ALTER/RENAME TABLE statements into control events (:mod:`.ddl`; an ALTER event carries the table's last
  table-map shape as "before"), and transaction ends (XID, XA_PREPARE, a ``COMMIT`` query of a non-transactional
  engine, a standalone DDL statement) into :class:`~cdcstream.changes.Marker` — never a position inside a
  transaction, because a resume there would lose the table map the following row events need. Anything it
  cannot decode raises before the transaction's marker, so no checkpoint passes it.
* :class:`ReaderThread` — runs the dump connection (:mod:`.binlog.client`) and hands batches to the asyncio loop
  through a **bounded** ``asyncio.Queue`` (``run_coroutine_threadsafe(queue.put(...))`` blocks the thread while
  the queue is full), so a slow Kinesis stalls the binlog reader instead of growing memory. Any failure ends the
  thread and is queued *after* the items read before it; the source decides whether to reconnect (from the last
  marker it yielded) or stop.

What the binlog may carry besides complete FULL row images, and what happens (README, "MySQL / MariaDB"):
compressed events (MariaDB ``log_bin_compress``, MySQL ``binlog_transaction_compression``) are decompressed;
partial row images (a session's ``binlog_row_image = MINIMAL``/``NOBLOB``) become records whose missing columns
are filled from the before image where it has them and otherwise listed in ``metadata.unchanged-columns``;
partial JSON updates are applied to the before image; a data change logged as a *statement* (a session's
``binlog_format = STATEMENT``/``MIXED``) on a captured table cannot be captured and stops the reader; so do the
rows of an XA transaction (logged at XA PREPARE, before it is known whether they commit).

MariaDB traps handled here (reference notes, env.md §4): MariaDB writes no ``BEGIN`` (its GTID event opens a
transaction; flag ``FL_STANDALONE`` marks DDL); ROTATE events arrive twice after ``FLUSH BINARY LOGS`` plus a
fake one at connect (handled idempotently: a rotate only sets the current file and position).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymysql
import structlog

from cdcstream.changes import ALTER_OPS, ChangeEvent, Column, Item, Marker, Op, SchemaChange, TableInfo
from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.errors import DecodeError, SourceConnectionError, SourceError
from cdcstream.sources.mysql import rows
from cdcstream.sources.mysql.binlog import compression, tablemap
from cdcstream.sources.mysql.binlog import events as ev
from cdcstream.sources.mysql.binlog.charsets import Charsets
from cdcstream.sources.mysql.binlog.client import BinlogClient, DumpStart, StreamLost
from cdcstream.sources.mysql.binlog.gtid import GtidSet
from cdcstream.sources.mysql.binlog.rowevents import RowPlan, json_column_indexes, partial_after_image, rows_header
from cdcstream.sources.mysql.binlog.values import FIXED_BINARY_LENGTH, ValueOptions, column_decoder
from cdcstream.sources.mysql.ddl import TableDdl, UnparsedStatement, dml_targets, parse_ddl
from cdcstream.sources.mysql.tls import tls_failure

log = structlog.get_logger(__name__)

BATCH_MAX = 500  # items per hand-over: large enough to amortise the thread hop, small enough for low latency
OPS = (Op.INSERT, Op.UPDATE, Op.DELETE, Op.TRUNCATE, Op.DROP_TABLE)
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
# What to do about a change in the binlog that cannot be streamed: cdcstream cannot get past it on its own.
RESYNC = (
    "This change cannot be streamed, and a restart reaches it again: exclude the table from the mapping, or "
    "re-sync the target with a full load (move the checkpoint file away deliberately; migration_type = "
    '"full-load-and-cdc" starts after the binlog position of the new snapshot).'
)

# Which table ids a fixed-binary lookup needs: (schema, table, column names) -> {column: uuid|inet4|inet6} or None.
FixedBinaryLookup = Callable[[str, str, list[str]], "dict[str, str] | None"]


def format_epoch(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True, eq=False)  # hashed by identity (kept in a set of touched plans)
class TablePlan:
    """One version of a table (as its table map describes it): the shared TableInfo and its row decoder."""

    info: TableInfo
    rows: RowPlan
    label: str
    keys: tuple[str, ...]
    counts: list[int] = field(default_factory=lambda: [0] * len(OPS))


@dataclass(slots=True)
class Batch:
    """What the thread hands over: items plus the counters the source turns into metrics."""

    items: list[Item]
    transactions: int = 0
    last_commit_epoch: float | None = None
    touched: list[TablePlan] = field(default_factory=list)
    heartbeat: bool = False
    ddl_skipped: int = 0
    # With a heartbeat: the binlog position (file, pos) the server had sent everything up to. The server sends
    # one only when nothing is left to send, and the binlog holds whole transactions, so everything before it
    # is in this batch or earlier ones (reload --table splits the stream there on an idle server).
    heard: tuple[str, int] | None = None


@dataclass(slots=True)
class Failure:
    """The thread ended: the error, queued after everything read before it, and the binlog position of the
    event it failed on (``file:pos`` of the event's start)."""

    error: BaseException
    position: str | None = None


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
    ) -> None:
        self._selector = selector
        self._schema_captured = schema_captured or (lambda s: s not in SYSTEM_SCHEMAS)
        self._no_hex_prefix = no_hex_prefix
        self._invalid_dates = invalid_dates
        self.mariadb = mariadb
        self.file = file
        self.pos = pos
        self.fmt = ev.Format(checksum=False)
        self.charsets = Charsets()
        self.fixed_binary: FixedBinaryLookup | None = None
        self._selected: dict[tuple[str, str], bool] = {}
        # table id -> plan (None: not selected); table map body (without the id) -> plan, per table version.
        self._by_table_id: dict[int, TablePlan | None] = {}
        self._plans: dict[bytes, TablePlan | None] = {}
        self._by_label: dict[str, TablePlan] = {}
        self._infos: dict[tuple[str, str], TableInfo] = {}
        self._interned: dict[TableInfo, TableInfo] = {}
        self._warned: set[Any] = set()
        # GTID state after the last complete transaction: MariaDB domain -> "domain-server-seq"; MySQL GtidSet.
        self._maria_gtids: dict[str, str] = {}
        self._mysql_gtids: GtidSet | None = None
        self.set_gtid_state(gtid)
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
        self.charsets = charsets
        self.fixed_binary = fixed_binary
        self._by_table_id.clear()
        self._plans.clear()

    # -- GTID state -----------------------------------------------------------------------------------------
    def set_gtid_state(self, gtid: str | None) -> None:
        if not gtid:
            return
        if self.mariadb:
            self._maria_gtids = {}
            for part in gtid.split(","):
                part = part.strip()
                if part:
                    self._maria_gtids[part.split("-", 1)[0]] = part
        else:
            self._mysql_gtids = GtidSet(gtid)

    @property
    def gtid_state(self) -> str | None:
        if self.mariadb:
            return ",".join(self._maria_gtids[d] for d in sorted(self._maria_gtids, key=int)) or None
        return str(self._mysql_gtids) if self._mysql_gtids is not None else None

    def checkpoint(self) -> MySQLCheckpoint:
        return {"file": self.file, "pos": self.pos, "gtid": self.gtid_state, **self.checkpoint_extra}

    def reset_transaction(self) -> None:
        """Forget a transaction cut off by a dropped connection; it is re-read from its start after reconnect."""
        self.in_tx = False
        self._standalone = False
        self._xa_start = None
        self._tx_gtid = None
        self._record = 0
        self._by_table_id.clear()  # table ids are only valid within one connection's stream

    # -- selection and table plans --------------------------------------------------------------------------
    def selected(self, schema: str, table: str) -> bool:
        key = (schema, table)
        hit = self._selected.get(key)
        if hit is None:
            hit = self._selected[key] = self._selector(schema, table)
        return hit

    def _table_map(self, raw: bytes, end: int) -> None:
        post = self.fmt.post_header_len(ev.TABLE_MAP_EVENT, 8)
        tid = tablemap.table_id(raw, post)
        key = raw[ev.HEADER_LEN + post - 2 : end]  # flags and body: the same for every map of a table version
        if key in self._plans:
            self._by_table_id[tid] = self._plans[key]
            return
        tm = tablemap.decode(raw, end, post, mariadb=self.mariadb)
        plan = self._build_plan(tm) if self.selected(tm.schema, tm.table) else None
        self._plans[key] = self._by_table_id[tid] = plan

    def _build_plan(self, tm: tablemap.TableMap) -> TablePlan:
        schema, name = tm.schema, tm.table
        if not tm.has_names:
            raise SourceError(
                f"the binlog has no column names for {schema}.{name}: the server's binlog_row_metadata is not FULL "
                "(the table map then carries only types). Fix: SET GLOBAL binlog_row_metadata = FULL; (and in "
                "the server config, so it survives a restart), then restart cdcstream."
            )
        names = [c.name for c in tm.columns]
        fixed = self._fixed_binary_types(tm, names)
        opts = ValueOptions(self.charsets, self._no_hex_prefix, self._invalid_dates)
        try:
            decoders = [column_decoder(c, opts, fixed.get(c.name)) for c in tm.columns]
        except DecodeError as exc:
            raise DecodeError(f"{schema}.{name} at {self.at}: {exc}") from None
        keys = tuple(names[i] for i in tm.primary_key)
        info = rows.table_info(schema, name, tm.columns, set(keys))
        if fixed:
            info = TableInfo(
                schema,
                name,
                tuple(
                    Column(c.name, fixed[c.name], c.type_id, c.nullable, c.is_key) if c.name in fixed else c
                    for c in info.columns
                ),
            )
        info = self._interned.setdefault(info, info)  # one TableInfo per table version, across DDL and reconnects
        label = f"{schema}.{name}"
        plan = TablePlan(info, RowPlan(names, decoders, json_column_indexes([c.type for c in tm.columns])), label, keys)
        old = self._by_label.get(label)
        if old is not None:
            plan.counts = old.counts  # a new version of the same table: keep the metric counters together
        self._by_label[label] = plan
        self._infos[(schema, name)] = info
        return plan

    def _fixed_binary_types(self, tm: tablemap.TableMap, names: list[str]) -> dict[str, str]:
        """MariaDB's UUID/INET4/INET6 columns of the table (the table map shows them as BINARY(16)/BINARY(4))."""
        candidates = [
            c
            for c in tm.columns
            if c.type == rows.STRING
            and c.max_length in (4, 16)
            and c.collation is not None
            and self.charsets.name(c.collation) == "binary"
        ]
        if not self.mariadb or not candidates or self.fixed_binary is None:
            return {}
        found = self.fixed_binary(tm.schema, tm.table, names)
        if found is None:
            if (tm.schema, tm.table, tuple(names)) not in self._warned:
                self._warned.add((tm.schema, tm.table, tuple(names)))
                log.warning(
                    "the catalogue does not describe this version of the table (dropped, renamed or altered "
                    "since, or not visible to the user): its BINARY(16)/BINARY(4) columns are sent as binary, "
                    "even if they were UUID/INET6/INET4 when written",
                    table=f"{tm.schema}.{tm.table}",
                    columns=[c.name for c in candidates],
                    position=self.at,
                )
            return {}
        return {
            c.name: found[c.name]
            for c in candidates
            if c.name in found and FIXED_BINARY_LENGTH[found[c.name]] == c.max_length
        }

    def _forget_tables(self) -> None:
        """After DDL: table versions (and what the catalogue said about them) are read afresh."""
        self._plans.clear()
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
        gtid = self._tx_gtid
        if gtid:
            if self.mariadb:
                self._maria_gtids[gtid.split("-", 1)[0]] = gtid
            elif self._mysql_gtids is None:
                self._mysql_gtids = GtidSet(gtid)
            else:
                self._mysql_gtids.add(gtid)
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
        try:
            targets = dml_targets(q.query, q.schema)
        except UnparsedStatement as exc:
            if q.schema is not None and not self._schema_captured(q.schema):
                return
            self._statement_error(q, f"a data change whose tables cannot be read ({exc})")
            return
        hit = [f"{s}.{t}" for s, t in targets if self.selected(s, t)]
        if hit:
            self._statement_error(q, f"a change of {', '.join(sorted(set(hit)))}")

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
        for t in targets:
            key = (t.schema, t.table)
            old = self._infos.get(key) or TableInfo(t.schema, t.table, ())
            info, change = old, None
            if t.op in ALTER_OPS:
                info = _altered(old, t)
                change = SchemaChange(old, t.column, t.old_column)
                # What the next control event of this table knows; rows bring their own table map anyway.
                self._infos.pop(key, None)
                self._infos[(info.schema, info.table)] = info
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
        try:
            n = self._row_images(plan, raw, code, body_end, op, out)
        except (IndexError, ValueError, UnicodeDecodeError, struct.error, DecodeError) as exc:
            reason = str(exc) if isinstance(exc, DecodeError) else repr(exc)
            raise DecodeError(
                f"cannot decode a {op.value} row event of {plan.label} at {self.at}: {reason}. cdcstream stops "
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
        if not (img.missing or img2.missing or partial_json):  # FULL images: the hot path
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

    def _complete(
        self, plan: TablePlan, op: Op, after: dict[str, Any] | None, before: dict[str, Any] | None, img: Any
    ) -> tuple[dict[str, Any] | None, tuple[str, ...]]:
        """A partial row image (binlog_row_image MINIMAL/NOBLOB): an UPDATE's columns missing from the after
        image kept their value, so they are taken from the before image where it has them; what is still
        missing is listed as unchanged (README, "What the binlog may carry"). The key must be there."""
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


def _altered(info: TableInfo, ddl: TableDdl) -> TableInfo:
    """``info`` after one ALTER/RENAME: the best the statement tells until the next table map says exactly."""
    if ddl.op is Op.RENAME_TABLE:
        return TableInfo(ddl.new_schema or info.schema, ddl.new_table or info.table, info.columns)
    cols = list(info.columns)
    names = [c.name for c in cols]
    typed = ddl.type_name or "unknown"
    if ddl.op is Op.ADD_COLUMN and ddl.column and ddl.column not in names:
        cols.append(Column(ddl.column, typed))
    elif ddl.op is Op.DROP_COLUMN:
        cols = [c for c in cols if c.name != ddl.old_column]
    elif ddl.old_column in names and ddl.column:
        i = names.index(ddl.old_column)
        c = cols[i]
        cols[i] = Column(ddl.column, ddl.type_name or c.type_name, c.type_id, c.nullable, c.is_key)
    return TableInfo(info.schema, info.table, tuple(cols))


class ReaderThread:
    """One replication connection: a thread feeding ``queue`` until it fails or is stopped."""

    def __init__(
        self,
        *,
        settings: dict[str, Any],
        server_id: int,
        heartbeat: float,
        mariadb: bool,
        start: DumpStart,
        converter: EventConverter,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Batch | Failure],
    ) -> None:
        self._settings = settings
        self._server_id = server_id
        self._heartbeat = heartbeat
        self._mariadb = mariadb
        self._start = start
        self._conv = converter
        self._loop = loop
        self._queue = queue
        self._stop = threading.Event()
        self._client: BinlogClient | None = None
        self.connected = False
        self.thread = threading.Thread(target=self._run, name="mysql-binlog", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        from cdcstream.sources.mysql.catalog import FixedBinaryTypes

        conv = self._conv
        out: list[Item] = []
        catalog = FixedBinaryTypes(lambda: pymysql.connect(**self._settings))
        try:
            client = self._client = BinlogClient(
                self._settings, server_id=self._server_id, heartbeat=self._heartbeat, mariadb=self._mariadb
            )
            client.connect(self._start)
            charsets = Charsets(client.collations, lambda name: client.single_byte.get(name, ""))
            conv.connected(client.checksum, charsets, catalog.lookup)
            while True:
                raw = client.read()
                if self._stop.is_set():
                    return
                self.connected = True
                conv.handle(raw, out)
                if conv.heard is not None:
                    heard, conv.heard = conv.heard, None
                    self._flush(out, heartbeat=True, heard=heard)
                    out = []
                elif out and (isinstance(out[-1], Marker) or len(out) >= BATCH_MAX):
                    self._flush(out)
                    out = []
        except BaseException as exc:
            if self._stop.is_set():
                return
            # _put raises StreamLost once the event loop is gone (a shutdown without stop()): nobody is left
            # to tell, and an exception escaping the thread would only be noise.
            with contextlib.suppress(StreamLost):
                if out:
                    self._flush(out)
                self._put(Failure(exc, conv.at))
        finally:
            self.connected = False
            catalog.close()
            if self._client is not None:
                self._client.close()

    def _flush(self, items: list[Item], heartbeat: bool = False, heard: tuple[str, int] | None = None) -> None:
        conv = self._conv
        batch = Batch(
            items, conv.transactions, conv.last_commit_epoch, list(conv.touched), heartbeat, conv.ddl_skipped, heard
        )
        conv.transactions = 0
        conv.ddl_skipped = 0
        conv.touched.clear()
        self._put(batch)

    def _put(self, msg: Batch | Failure) -> None:
        """Block until the loop's bounded queue takes ``msg`` (backpressure) or the reader is stopped."""
        coro = self._queue.put(msg)
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: the process is shutting down without close()
            coro.close()
            raise StreamLost("event loop closed") from None
        while True:
            try:
                fut.result(timeout=0.5)
                return
            except TimeoutError:
                if self._stop.is_set():
                    fut.cancel()
                    raise StreamLost("stopped") from None

    def stop(self) -> None:
        """Ask the thread to end and unblock its socket read; the caller joins."""
        self._stop.set()
        client = self._client
        if client is not None:
            client.shutdown()


def classify(exc: BaseException, where: str, position: str | None = None) -> SourceError:
    """A reader failure as a typed error: retriable (reconnect) or not (stop with the fix). ``position`` is the
    binlog position of the event the reader failed on, for errors about the binlog's content."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):  # an OSError, but no retry makes the certificate valid
        fix = tls_failure(str(exc)) or "the server certificate could not be verified. Fix: check ssl_ca and ssl_mode"
        return SourceError(f"binlog connection to {where}: {fix}. ({exc})")
    if isinstance(exc, StreamLost | ConnectionError | OSError | TimeoutError):
        return SourceConnectionError(f"binlog connection to {where} lost: {exc}")
    if isinstance(exc, pymysql.err.MySQLError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        msg = exc.args[1] if len(exc.args) > 1 else str(exc)
        tls = tls_failure(str(msg))
        if tls is not None:
            return SourceError(f"binlog connection to {where}: {tls}. ({msg})")
        if code == 1236:
            return SourceError(
                f"the server cannot send the binlog from the checkpointed position ({where}): {msg}. The binlog "
                "file (or GTID) cdcstream needs was purged, so changes since the checkpoint are lost. Recovery: "
                "raise binlog retention (expire_logs_days / binlog_expire_logs_seconds), delete the checkpoint "
                "file and re-sync the target with a full load."
            )
        if code in (1045, 1044, 1227, 1142, 1698):
            return SourceError(
                f"MySQL/MariaDB refused {where}: {msg}. Fix: GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* "
                "(MySQL 8: REPLICATION SLAVE, REPLICATION CLIENT, SELECT) to the configured user, and check the "
                "password."
            )
        return SourceConnectionError(f"binlog connection to {where} failed: [{code}] {msg}")
    # Anything else is the binlog's content defeating the decoder. Skipping the event would lose a change
    # silently, so stop, with what is needed for a bug report.
    at = f" at binlog position {position}" if position else ""
    start = f" --start-position={position.rpartition(':')[2]}" if position else ""
    return DecodeError(
        f"cannot decode the binlog event{at} from {where}: {exc!r}. cdcstream stops rather than skip it; nothing "
        "after the last checkpoint is acknowledged. Please report it with the server version and the output of "
        f"mysqlbinlog --base64-output=decode-rows -vv{start} on that binlog file."
    )
