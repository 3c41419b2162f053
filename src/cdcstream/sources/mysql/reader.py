"""The binlog reader: python-mysql-replication on a dedicated thread, events turned into ChangeEvent/Marker lists.

Two parts:

* :class:`EventConverter` — the transaction state machine, one instance per source (it survives reconnects).
  It turns binlog events into items: row events into :class:`~cdcstream.changes.ChangeEvent` (rows of tables no
  rule selects are never decoded: ``ev.rows`` is lazy), TRUNCATE/DROP/ALTER/RENAME TABLE QueryEvents into control
  events (:mod:`.ddl`; an ALTER event carries the table's last table-map shape as "before"), and
  transaction ends (XidEvent, a ``COMMIT`` query of a non-transactional engine, a standalone DDL statement) into
  :class:`~cdcstream.changes.Marker` — never a position inside a transaction, because a resume there would lose
  the table map the following row events need.
* :class:`ReaderThread` — runs ``BinLogStreamReader(blocking=True, resume_stream=True, ...)`` and hands batches
  to the asyncio loop through a **bounded** ``asyncio.Queue`` (``run_coroutine_threadsafe(queue.put(...))`` blocks
  the thread while the queue is full), so a slow Kinesis stalls the binlog reader instead of growing memory.
  Any failure ends the thread and is queued *after* the items read before it; the source decides whether to
  reconnect (from the last marker it yielded) or stop.

MariaDB / library traps handled here (reference notes, env.md §4): MariaDB writes no ``BEGIN`` (its GTID event
opens a transaction; flag ``FL_STANDALONE`` marks DDL); RotateEvents arrive twice after ``FLUSH BINARY LOGS``
plus a fake one at connect (handled idempotently: a rotate only sets the current file and position); the
library's own silent reconnect (which would restart mid-transaction, or from the *initial* GTID) is disabled
by :class:`_StreamConnection`, so every reconnect goes through the source's backoff and resume logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pymysql
import structlog
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.gtid import Gtid, GtidSet
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdcstream.changes import ALTER_OPS, ChangeEvent, Column, Item, Marker, Op, SchemaChange, TableInfo
from cdcstream.errors import DecodeError, SourceConnectionError, SourceError
from cdcstream.sources.mysql import fastrows, rows
from cdcstream.sources.mysql.ddl import TableDdl, UnparsedStatement, parse_ddl
from cdcstream.sources.mysql.tls import tls_failure

log = structlog.get_logger(__name__)

ONLY_EVENTS = [
    RotateEvent,
    MariadbGtidEvent,
    GtidEvent,
    QueryEvent,
    XidEvent,
    WriteRowsEvent,
    UpdateRowsEvent,
    DeleteRowsEvent,
    HeartbeatLogEvent,
]
MARIADB_FL_STANDALONE = 0x01  # MariaDB GTID event flag: a statement outside any transaction (DDL)
MARIADB_FL_PREPARED_XA = 0x40  # MariaDB GTID event flag: the XA START ... XA PREPARE part of an XA transaction
BATCH_MAX = 500  # items per hand-over: large enough to amortise the thread hop, small enough for low latency
OPS = (Op.INSERT, Op.UPDATE, Op.DELETE, Op.TRUNCATE, Op.DROP_TABLE)


class StreamLost(Exception):
    """The replication connection dropped (raised instead of letting the library reconnect by itself)."""


class _StreamConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL connection whose lost-connection errors escape python-mysql-replication's silent reconnect.

    The library catches OperationalError 2006/2013 in ``fetchone`` and reconnects from *its* idea of the
    position: the last event read (mid-transaction) or, with a GTID start, the initial GTID. Either breaks the
    transaction state; raising a non-pymysql error instead hands the decision to the source.
    """

    def _read_packet(self, packet_type: Any = pymysql.connections.MysqlPacket) -> Any:
        try:
            return super()._read_packet(packet_type)
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in (2006, 2013):
                raise StreamLost(str(exc.args[1] if len(exc.args) > 1 else exc)) from None
            raise


def format_epoch(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True, eq=False)  # hashed by identity (kept in a set of touched plans)
class TablePlan:
    """One version of a table (as its table map describes it): the shared TableInfo and per-column converters."""

    info: TableInfo
    convs: tuple[tuple[str, rows.Converter], ...]
    set_columns: tuple[str, ...]
    label: str
    fast: fastrows.FastPlan | None = None  # the compiled decoder, when every column type has one
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
    """The thread ended: the error, queued after everything read before it, and the binlog position it was
    reading at (``file:pos`` of the end of the last event read, so the failing event starts there)."""

    error: BaseException
    position: str | None = None


class EventConverter:
    """Binlog events -> items, with the transaction state (position, GTID, record numbers)."""

    def __init__(
        self,
        *,
        selector: Callable[[str, str], bool],
        no_hex_prefix: bool,
        mariadb: bool,
        file: str,
        pos: int,
        gtid: str | None,
    ) -> None:
        self._selector = selector
        self._no_hex_prefix = no_hex_prefix
        self.mariadb = mariadb
        self.file = file
        self.pos = pos
        self._selected: dict[tuple[str, str], bool] = {}
        self._by_table_id: dict[int, tuple[Any, TablePlan | None]] = {}
        self._by_signature: dict[tuple[Any, ...], TablePlan] = {}
        self._infos: dict[tuple[str, str], TableInfo] = {}
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
        # Fields every checkpoint carries besides the position: which server it belongs to
        # (MySQLSource._verify_resume) and, after a full load, {"load": {"done": true, ...}}.
        self.checkpoint_extra: dict[str, Any] = {}
        self.fast_rows = True  # off only to compare with the library's decoding (tests, bench)

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

    def checkpoint(self) -> dict[str, Any]:
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

    def _plan(self, ev: Any, table_map: dict[int, Any]) -> TablePlan | None:
        table = table_map.get(ev.table_id)
        cached = self._by_table_id.get(ev.table_id)
        if cached is not None and cached[0] is table:
            return cached[1]
        if table is None:
            raise DecodeError(f"row event for table id {ev.table_id} without its table map at {self.file}:{self.pos}")
        schema, name = str(table.schema), str(table.table)
        plan: TablePlan | None = None
        if self.selected(schema, name):
            plan = self._build_plan(schema, name, table)
        self._by_table_id[ev.table_id] = (table, plan)
        return plan

    def _build_plan(self, schema: str, name: str, table: Any) -> TablePlan:
        columns = table.columns
        if any(not c.name for c in columns):
            raise SourceError(
                f"the binlog has no column names for {schema}.{name}: the server's binlog_row_metadata is not FULL "
                "(the table map then carries only types). Fix: SET GLOBAL binlog_row_metadata = FULL; (and in "
                "the server config, so it survives a restart), then restart cdcstream."
            )
        pk = table.primary_key
        keys = {pk} if isinstance(pk, str) and pk else set(pk or ())
        signature = (
            schema,
            name,
            tuple(
                (
                    c.name,
                    c.type,
                    c.unsigned,
                    c.character_set_name,
                    getattr(c, "fsp", None),
                    tuple(c.set_values or ()),
                    tuple(c.enum_values or ()),
                )
                for c in columns
            ),
            tuple(sorted(keys)),
        )
        plan = self._by_signature.get(signature)
        if plan is not None:
            self._infos[(schema, name)] = plan.info
            return plan
        info = rows.table_info(schema, name, columns, keys)
        convs = []
        for c in columns:
            conv = rows.converter_for(c, self._no_hex_prefix)
            if conv is not None:
                convs.append((c.name, conv))
        sets = tuple(c.name for c in columns if c.type == rows.SET)
        fast = fastrows.compile_plan(columns, self._no_hex_prefix) if self.fast_rows else None
        plan = TablePlan(info, tuple(convs), sets, f"{schema}.{name}", fast)
        old = next((p for p in self._by_signature.values() if p.label == plan.label), None)
        if old is not None:
            plan.counts = old.counts  # a new version of the same table: keep the metric counters together
        self._by_signature[signature] = plan
        self._infos[(schema, name)] = info
        return plan

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
            elif not gtid.startswith("00000000-0000-0000-0000-000000000000"):  # anonymous (gtid_mode OFF)
                if self._mysql_gtids is None:
                    self._mysql_gtids = GtidSet(gtid)
                else:
                    self._mysql_gtids.merge_gtid(Gtid(gtid))
        self.in_tx = False
        self._standalone = False
        self._tx_gtid = None
        self.transactions += 1
        self.last_commit_epoch = self._commit_epoch
        self.last_commit_time = self._commit_time
        out.append(Marker(self.checkpoint(), self._commit_epoch, True))

    # -- events ---------------------------------------------------------------------------------------------
    def handle(self, ev: Any, table_map: dict[int, Any], out: list[Item]) -> None:
        """Append the items of one event to ``out``."""
        if isinstance(ev, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
            self._rows(ev, table_map, out)
            return
        end = ev.packet.log_pos
        if isinstance(ev, XidEvent):
            if not self.in_tx:  # a transaction whose start we did not see: impossible at marker positions
                self._begin(end - ev.event_size, ev.timestamp, None)
            self._commit(end, out)
        elif isinstance(ev, MariadbGtidEvent):
            self._begin(end - ev.event_size, ev.timestamp, str(ev.gtid))
            self._standalone = bool(ev.flags & MARIADB_FL_STANDALONE)
            if ev.flags & MARIADB_FL_PREPARED_XA:  # MariaDB's XA START ... XA PREPARE group (see _rows)
                self._xa_start = f"{self.file}:{end - ev.event_size}"
        elif isinstance(ev, GtidEvent):
            self._begin(end - ev.event_size, ev.timestamp, str(ev.gtid))
            self._standalone = True  # until a BEGIN query says it is a transaction
        elif isinstance(ev, QueryEvent):
            self._query(ev, end, out)
        elif isinstance(ev, RotateEvent):
            # Idempotent: the fake rotate at connect and the duplicate after FLUSH BINARY LOGS set the same values.
            self.file = str(ev.next_binlog)
            self.pos = int(ev.position)
        # HeartbeatLogEvent: nothing to emit; the reader flushes and reports liveness.

    def _query(self, ev: Any, end: int, out: list[Item]) -> None:
        query = ev.query if isinstance(ev.query, str) else bytes(ev.query).decode("utf-8", "replace")
        word = query.lstrip()[:9].upper()
        if word.startswith("BEGIN"):
            if not self.in_tx:
                self._begin(end - ev.event_size, ev.timestamp, None)
            self._standalone = False
            return
        if word.startswith("COMMIT") or (word.startswith("ROLLBACK") and "TO" not in query.upper().split()[:3]):
            # non-transactional engines end a statement group with a COMMIT query instead of an Xid
            if not self.in_tx:
                self._begin(end - ev.event_size, ev.timestamp, None)
            self._commit(end, out)
            return
        if word.startswith(("XA START", "XA BEGIN")):  # MySQL: opens a transaction like BEGIN, but see _rows
            if not self.in_tx:
                self._begin(end - ev.event_size, ev.timestamp, None)
            self._standalone = False
            self._xa_start = f"{self.file}:{end - ev.event_size}"
            return
        if self.in_tx and not self._standalone:
            return  # SAVEPOINT and friends inside a transaction
        if not self.in_tx:
            self._begin(end - ev.event_size, ev.timestamp, None)
        schema = ev.schema.decode("utf-8", "replace") if isinstance(ev.schema, bytes) else (ev.schema or None)
        try:
            targets = parse_ddl(query, schema or None)
        except UnparsedStatement as exc:
            log.warning(
                "DDL statement not understood, skipped (no control record for it)",
                statement=query[:2000],
                reason=str(exc),
                position=f"{self.file}:{end}",
            )
            self.ddl_skipped += 1
            targets = []
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
        self._commit(end, out)

    def _rows(self, ev: Any, table_map: dict[int, Any], out: list[Item]) -> None:
        plan = self._plan(ev, table_map)
        if plan is None:
            return  # not selected: ev.rows is never touched, so the rows are never decoded
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
        if not self.in_tx:
            self._begin(ev.packet.log_pos - ev.event_size, ev.timestamp, None)
        convs = plan.convs
        sets = plan.set_columns
        info = plan.info
        tx_id, ctime, cepoch, prefix = self.tx_id, self._commit_time, self._commit_epoch, self._prefix
        rid = self._record
        if isinstance(ev, WriteRowsEvent):
            op, index = Op.INSERT, 0
        elif isinstance(ev, UpdateRowsEvent):
            op, index = Op.UPDATE, 1
        else:
            op, index = Op.DELETE, 2
        fast = plan.fast
        body = fastrows.raw_body(ev, fast) if fast is not None else None
        if fast is not None and body is not None:
            try:
                self._fast_rows(fast, body, op, info, out)
            except (IndexError, ValueError, struct.error, UnicodeDecodeError) as exc:
                raise DecodeError(
                    f"cannot decode a {op.value} row event of {plan.label} at {self.file}:{ev.packet.log_pos}: {exc!r}"
                ) from None
            n = len(out) - self._pending
            plan.counts[index] += n
            self._record += n
            self.touched.add(plan)
            return
        try:
            decoded = ev.rows
        except SourceError:
            raise
        except Exception as exc:
            raise DecodeError(
                f"cannot decode a {op.value} row event of {plan.label} at {self.file}:{ev.packet.log_pos}: {exc!r}"
            ) from None
        for row in decoded:
            before: dict[str, Any] | None
            after: dict[str, Any] | None
            if op is Op.UPDATE:
                before = _convert(row["before_values"], convs, sets, row["before_none_sources"])
                after = _convert(row["after_values"], convs, sets, row["after_none_sources"])
            elif op is Op.INSERT:
                after, before = _convert(row["values"], convs, sets, row["none_sources"]), None
            else:
                after, before = None, _convert(row["values"], convs, sets, row["none_sources"])
            rid += 1
            out.append(ChangeEvent(op, info, after, before, tx_id, ctime, cepoch, f"{prefix}{rid:010d}", rid))
        plan.counts[index] += rid - self._record
        self._record = rid
        self.touched.add(plan)

    _pending = 0

    def _fast_rows(self, fast: fastrows.FastPlan, body: bytes, op: Op, info: TableInfo, out: list[Item]) -> None:
        tx_id, ctime, cepoch, prefix = self.tx_id, self._commit_time, self._commit_epoch, self._prefix
        rid = self._record
        self._pending = len(out)
        image = fast.image
        pos, end = 0, len(body)
        append = out.append
        while pos < end:
            before: dict[str, Any] | None = None
            after: dict[str, Any] | None = None
            if op is Op.UPDATE:
                before, pos = image(body, pos)
                after, pos = image(body, pos)
            elif op is Op.INSERT:
                after, pos = image(body, pos)
            else:
                before, pos = image(body, pos)
            rid += 1
            append(ChangeEvent(op, info, after, before, tx_id, ctime, cepoch, f"{prefix}{rid:010d}", rid))
        if pos != end:  # the loop stops at or after the end: after means a column read past the event
            raise ValueError(f"the row images run {pos - end} bytes past the end of the row event")


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


def _convert(
    values: dict[str, Any],
    convs: tuple[tuple[str, rows.Converter], ...],
    sets: tuple[str, ...],
    none_sources: dict[str, str],
) -> dict[str, Any]:
    for name, conv in convs:
        v = values[name]
        if v is not None:
            values[name] = conv(v)
    for name in sets:
        if values[name] is None and none_sources.get(name) == "empty set":
            values[name] = ""  # the library reports the empty set as None; it is not NULL
    return values


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where a connection starts: file/pos (``is_mariadb=False``: with True the library ignores them), or GTID."""

    file: str
    pos: int
    gtid: str | None
    use_gtid: bool


class ReaderThread:
    """One replication connection: a thread feeding ``queue`` until it fails or is stopped."""

    def __init__(
        self,
        *,
        settings: dict[str, Any],
        server_id: int,
        heartbeat: float,
        mariadb: bool,
        start: StartAt,
        converter: EventConverter,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Batch | Failure],
        schemas: list[str] | None,
        verify_checksum: bool = False,
    ) -> None:
        self._settings = settings
        self._verify_checksum = verify_checksum
        self._server_id = server_id
        self._heartbeat = heartbeat
        self._mariadb = mariadb
        self._start = start
        self._conv = converter
        self._loop = loop
        self._queue = queue
        self._schemas = schemas
        self._stop = threading.Event()
        self._stream: BinLogStreamReader | None = None
        self.connected = False
        self.thread = threading.Thread(target=self._run, name="mysql-binlog", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _open(self) -> BinLogStreamReader:
        s = self._start
        kwargs: dict[str, Any] = {}
        if s.use_gtid:
            # MariaDB: auto_position + is_mariadb=True sets @slave_connect_state; MySQL: COM_BINLOG_DUMP_GTID.
            kwargs = {"auto_position": s.gtid, "is_mariadb": self._mariadb}
        else:
            kwargs = {"log_file": s.file, "log_pos": s.pos, "is_mariadb": False}
        return BinLogStreamReader(
            connection_settings=self._settings,
            server_id=self._server_id,
            blocking=True,
            resume_stream=True,
            only_events=ONLY_EVENTS,
            only_schemas=self._schemas,
            slave_heartbeat=self._heartbeat,
            enable_logging=False,
            # With binlog_checksum = CRC32 every event carries a checksum; the library only logs a mismatch, so
            # _run turns it into a DecodeError rather than streaming a corrupted change.
            verify_checksum=self._verify_checksum,
            pymysql_wrapper=_StreamConnection,
            **kwargs,
        )

    def _run(self) -> None:
        conv = self._conv
        out: list[Item] = []
        try:
            stream = self._stream = self._open()
            for ev in stream:
                if self._stop.is_set():
                    return
                self.connected = True
                if getattr(ev, "_is_event_valid", True) is False:
                    raise DecodeError(
                        f"binlog event {type(ev).__name__} ending at {stream.log_file}:{stream.log_pos} fails its "
                        "CRC32 checksum: the binlog is corrupt (disk, copy or network). cdcstream stops rather than "
                        "stream a damaged change; check the server's binlog with mysqlbinlog --verify-binlog-checksum"
                    )
                conv.handle(ev, stream.table_map, out)
                if isinstance(ev, HeartbeatLogEvent):
                    self._flush(out, heartbeat=True, heard=(str(ev.ident).rstrip("\x00"), int(ev.packet.log_pos)))
                    out = []
                elif out and (isinstance(out[-1], Marker) or len(out) >= BATCH_MAX):
                    self._flush(out)
                    out = []
            raise StreamLost("the server ended the binlog stream")
        except BaseException as exc:
            if self._stop.is_set():
                return
            # _put raises StreamLost once the event loop is gone (a shutdown without stop()): nobody is left
            # to tell, and an exception escaping the thread would only be noise.
            with contextlib.suppress(StreamLost):
                if out:
                    self._flush(out)
                self._put(Failure(exc, self._position()))
        finally:
            self.connected = False
            if self._stream is not None:
                with contextlib.suppress(Exception):
                    self._stream.close()

    def _position(self) -> str | None:
        stream = self._stream
        file = getattr(stream, "log_file", None) or self._conv.file
        pos = getattr(stream, "log_pos", None) or self._conv.pos
        return f"{file}:{pos}" if file else None

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
        stream = self._stream
        conn = getattr(stream, "_stream_connection", None) if stream is not None else None
        sock = getattr(conn, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def classify(exc: BaseException, where: str, position: str | None = None) -> SourceError:
    """A reader failure as a typed error: retriable (reconnect) or not (stop with the fix). ``position`` is the
    binlog position the reader was at, for errors about the binlog's content."""
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
    # Anything else is the binlog's content defeating the decoder (python-mysql-replication or ours). Skipping
    # the event would lose a change silently, so stop, with what is needed for a bug report.
    at = f" at binlog position {position}" if position else ""
    start = f" --start-position={position.rpartition(':')[2]}" if position else ""
    return DecodeError(
        f"cannot decode the binlog event{at} from {where}: {exc!r}. cdcstream stops rather than skip it; nothing "
        "after the last checkpoint is acknowledged. Please report it with the server version and the output of "
        f"mysqlbinlog --base64-output=decode-rows -vv{start} on that binlog file."
    )
