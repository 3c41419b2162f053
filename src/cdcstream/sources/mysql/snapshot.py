"""MySQL/MariaDB's :class:`~cdcstream.sources.loadengine.LoadEngine`: consistent snapshot sessions, keyset reads.

Consistency (docs/full-load.md, "Consistency (MySQL / MariaDB)"), the mydumper approach: every session connects
first; then a control connection takes ``FLUSH TABLES WITH READ LOCK`` (needs RELOAD), every session runs ``START
TRANSACTION WITH CONSISTENT SNAPSHOT`` (REPEATABLE READ), the control connection reads the binlog position (``SHOW
BINLOG STATUS`` / ``SHOW BINARY LOG STATUS``, see ``positions.binlog_status``, and ``@@gtid_binlog_pos`` on MariaDB
/ ``@@gtid_executed`` on MySQL) and ``UNLOCK TABLES``. All sessions then see exactly the transactions committed
before that position, and CDC streams from it. Writes are blocked only while the snapshots open (measured and
logged as ``lock_seconds``).

Without RELOAD (managed servers) the lock fails with a privilege error and the engine falls back, logging which
path it took: on MariaDB each session's snapshot reports its exact binlog position (``SHOW STATUS LIKE
'binlog_snapshot_%'``) and the earliest becomes the CDC start; on MySQL the position is read *before* the
snapshots open. Both are lossless: CDC replays every change after the start with full row images after the load
rows, so a consumer applying in order converges (rows changed in between appear twice). A resumed load (after a
crash) reopens fresh snapshots the same way without reading a position (the stored start is kept).

Rows are read with ``SELECT <columns> FROM t WHERE <segment> AND <key> > <after> ORDER BY <key> LIMIT n`` on an
unbuffered cursor (rows stream in ``parallel_load_buffer_size`` pieces, never a whole page in memory), in the session
time zone UTC with an empty sql_mode, FLOAT columns as their exact value; a table without a primary key (or unique NOT
NULL key) is one unordered pass. Each value is rendered by ``textrows.load_converter`` as
docs/types.md, "MySQL / MariaDB types" says, from the server's own text where that is the rendering (dates, times,
decimals, MariaDB UUID/INET): the server's value, which is what CDC records carry too
(tests/integration/test_mysql_oracle.py checks both against the server). Each session runs its blocking PyMySQL calls in
a thread of its own, so the event loop never waits on the server.

Rows are read as the result's row packets (``packets.read_row_packets``) and rendered from the text protocol
(``textrows.MyRowPackets``) exactly as PyMySQL and ``textrows.load_converter`` would render them, without
PyMySQL's row objects. With mapping worker processes (``full_load.processes``) the session's thread only frames the
packets and parses the last one for the checkpoint key, and a worker renders the rest, so that per-row work does
not hold the GIL the event loop needs; without them the session's thread renders them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pymysql.cursors
import structlog

from cdcstream.changes import RawRows
from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.sources.loadengine import Chunk, Key, Segment, TableSpec, new_spec_key
from cdcstream.sources.mysql import rows
from cdcstream.sources.mysql.packets import RAW_READS, read_row_packets
from cdcstream.sources.mysql.positions import binlog_status, position_of
from cdcstream.sources.mysql.textrows import (
    SESSION_CONVERSIONS,
    MyRowPackets,
    PacketSpec,
    column_stand_in,
    key_json,
    load_converters,
    parse_row_packets,
    render_rows,
    with_text_types,
)
from cdcstream.sources.mysql.tls import rsa_failure

log = structlog.get_logger(__name__)

# Privilege errors of FLUSH TABLES WITH READ LOCK (no RELOAD; 1227 = "you need the RELOAD privilege") and a lock
# that could not be had within lock_wait_timeout (1205): both take the lossless fallback.
_NO_LOCK_CODES = frozenset({1044, 1045, 1142, 1227, 1205})
# Seconds FLUSH TABLES WITH READ LOCK may wait for running statements before the fallback is used instead:
# while it waits, it already blocks new writes.
LOCK_WAIT_TIMEOUT = 10
# Rounds of reopening snapshots to bring several sessions to one binlog position without the lock (_align).
ALIGN_ROUNDS = 20


class SnapshotsDiffer(SourceError):
    """Several load sessions could not be brought to one snapshot without the lock (a busy server): an exact
    reload then reads with one session."""


_COLUMNS_SQL = """
SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, LOWER(c.DATA_TYPE), LOWER(c.COLUMN_TYPE), c.CHARACTER_SET_NAME,
       c.DATETIME_PRECISION, c.NUMERIC_PRECISION, c.NUMERIC_SCALE, c.COLUMN_KEY, t.TABLE_ROWS
  FROM information_schema.COLUMNS c
  JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME
 WHERE t.TABLE_TYPE = 'BASE TABLE'
   AND t.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
 ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"""

# Unique indexes usable as a keyset key (every column NOT NULL, no prefix index), the primary key first.
_KEYS_SQL = """
SELECT s.TABLE_SCHEMA, s.TABLE_NAME, s.INDEX_NAME, s.COLUMN_NAME
  FROM information_schema.STATISTICS s
 WHERE s.NON_UNIQUE = 0 AND s.TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
   AND NOT EXISTS (SELECT 1 FROM information_schema.STATISTICS s2
                    WHERE s2.TABLE_SCHEMA = s.TABLE_SCHEMA AND s2.TABLE_NAME = s.TABLE_NAME
                      AND s2.INDEX_NAME = s.INDEX_NAME AND (s2.NULLABLE = 'YES' OR s2.SUB_PART IS NOT NULL))
 ORDER BY s.TABLE_SCHEMA, s.TABLE_NAME, s.INDEX_NAME <> 'PRIMARY', s.INDEX_NAME, s.SEQ_IN_INDEX"""


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def select_column(column: Any) -> str:
    """A column in the load's SELECT list. FLOAT is read as its exact value (times 1e0 is a DOUBLE, exact, -0
    kept): its own text has 6 significant digits (16777216 reads as ``16777200``), which would neither be the
    value CDC renders nor page a FLOAT key exactly."""
    return f"{quote(column.name)} * 1e0" if column.type == rows.FLOAT else quote(column.name)


class MyLoadEngine:
    """:class:`~cdcstream.sources.loadengine.LoadEngine` for one MySQL/MariaDB server."""

    def __init__(
        self,
        settings: Callable[[], dict[str, Any]],
        *,
        mariadb: bool,
        want_position: bool,
        selector: Callable[[str, str], bool],
        chunk_rows: int,
        buffer_size: int,
        no_hex_prefix: bool,
        where: str,
        exact: bool = False,
        invalid_dates: str = "text",
    ) -> None:
        self._settings = settings  # connection_settings(cfg): TLS and the rest apply to every session
        # reload --table: every session must see exactly the returned position (one snapshot), not merely
        # a position no later than each of them (see _align).
        self._exact = exact
        self._mariadb = mariadb
        self._want_position = want_position
        self._selector = selector
        self._chunk_rows = chunk_rows
        self._buffer_size = buffer_size
        self._no_hex_prefix = no_hex_prefix
        self._invalid_dates = invalid_dates
        self._where = where
        self._sessions: list[pymysql.Connection[Any]] = []
        self._pools: list[ThreadPoolExecutor] = []
        self._columns: dict[str, list[Any]] = {}  # table -> column stand-ins
        self.path = ""  # "lock" or the fallback taken (logged; tests read it)
        self.lock_seconds: float | None = None
        self._lock_wait = 0.0  # seconds FLUSH TABLES WITH READ LOCK waited (writes are blocked meanwhile too)

    # -- sessions ----------------------------------------------------------------------------------------
    def _connect(self) -> pymysql.Connection[Any]:
        try:
            conn = pymysql.connect(**self._settings(), autocommit=True, conv=SESSION_CONVERSIONS)
        except (pymysql.err.MySQLError, RuntimeError) as exc:  # RuntimeError: PyMySQL without cryptography
            raise _error(f"full load: cannot connect to {self._where}", exc) from None
        with conn.cursor() as cur:
            # UTC like the binlog's TIMESTAMP values; long writes: a session may wait on a full load queue. No
            # sql_mode: PAD_CHAR_TO_FULL_LENGTH in the server's default would pad CHAR values the binlog has
            # without padding (no other mode changes what a SELECT returns).
            cur.execute("SET SESSION time_zone = '+00:00', SESSION net_write_timeout = 86400, SESSION sql_mode = ''")
            cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        return conn

    async def _call(self, session: int, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pools[session], fn, *args)

    async def open(self, sessions: int, *, fresh: bool) -> MySQLCheckpoint:
        self._pools = [ThreadPoolExecutor(1, thread_name_prefix=f"mysql-load-{i}") for i in range(sessions)]
        try:
            return await asyncio.to_thread(self._open, sessions, fresh)
        except BaseException:
            await self.close()
            raise

    def _open(self, sessions: int, fresh: bool) -> MySQLCheckpoint:
        self._sessions = [self._connect() for _ in range(sessions)]
        control = self._connect()
        try:
            locked = self._lock(control)
            before: MySQLCheckpoint = {}
            if not locked and fresh and self._want_position and not self._mariadb:
                before = self._position(control)  # MySQL fallback: a position no later than any snapshot
            gtid_before = (
                self._gtid(control) if not locked and fresh and self._want_position and self._mariadb else None
            )
            started = time.monotonic()
            for conn in self._sessions:
                with conn.cursor() as cur:
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            position: MySQLCheckpoint = {}
            if locked:
                if fresh and self._want_position:
                    position = self._position(control)
                with control.cursor() as cur:
                    cur.execute("UNLOCK TABLES")
                self.lock_seconds = time.monotonic() - started + self._lock_wait
                self.path = "lock"
                log.info(
                    "full load snapshot taken under FLUSH TABLES WITH READ LOCK",
                    lock_seconds=round(self.lock_seconds, 4),
                    sessions=sessions,
                    position=position or None,
                )
            elif self._mariadb and fresh and self._want_position and self._exact:
                self.path = "binlog_snapshot"
                position = self._align()
            elif self._mariadb:
                self.path = "binlog_snapshot"
                if fresh and self._want_position:
                    position = min((self._snapshot_position(c) for c in self._sessions), key=position_of)
                    position["gtid"] = gtid_before
            else:
                self.path = "position-before"
                position = before
            if not locked and not (self._exact and self._mariadb):
                log.warning(
                    "full load snapshot without a global read lock (RELOAD not granted or the lock timed out): "
                    "the sessions' snapshots may differ slightly; CDC starts at or before the earliest, so rows "
                    "changed meanwhile appear twice (load row, then the change) — lossless",
                    fallback=self.path,
                    position=position or None,
                )
            return position if fresh and self._want_position else {}
        except pymysql.err.MySQLError as exc:
            raise _error("full load: cannot open the snapshot sessions", exc) from None
        finally:
            control.close()

    def _align(self) -> MySQLCheckpoint:
        """MariaDB without the lock, for an exact reload: the sessions' snapshots opened one after the other,
        so a commit in between puts them at different binlog positions. Reopen the ones behind until all
        report the same position, which is then exact for every session; give up after a few rounds (a
        write-heavy server) with :class:`SnapshotsDiffer`, and the caller uses one session."""
        sessions = self._sessions
        for round_ in range(ALIGN_ROUNDS + 1):
            positions = [self._snapshot_position(c) for c in sessions]
            newest = max(positions, key=position_of)
            behind = [c for c, p in zip(sessions, positions, strict=True) if position_of(p) != position_of(newest)]
            if not behind:
                log.info("reload snapshot taken without a lock (MariaDB binlog_snapshot)", position=newest)
                return newest
            if round_ == ALIGN_ROUNDS:
                break
            for conn in behind:
                with conn.cursor() as cur:
                    cur.execute("ROLLBACK")
                    cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        raise SnapshotsDiffer(f"the {len(sessions)} load sessions' snapshots kept landing at different positions")

    def _lock(self, control: pymysql.Connection[Any]) -> bool:
        started = time.monotonic()
        try:
            with control.cursor() as cur:
                cur.execute(f"SET SESSION lock_wait_timeout = {LOCK_WAIT_TIMEOUT}")
                cur.execute("FLUSH TABLES WITH READ LOCK")
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else 0
            if code not in _NO_LOCK_CODES:
                raise
            log.info("FLUSH TABLES WITH READ LOCK not possible; using the fallback", reason=str(exc.args[-1]))
            return False
        self._lock_wait = time.monotonic() - started
        return True

    def _gtid(self, control: pymysql.Connection[Any]) -> str | None:
        with control.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.gtid_binlog_pos" if self._mariadb else "SELECT @@GLOBAL.gtid_executed")
            row = cur.fetchone()
        return (str(row[0] or "").replace("\n", "") or None) if row else None

    def _position(self, control: pymysql.Connection[Any]) -> MySQLCheckpoint:
        gtid = self._gtid(control)
        with control.cursor() as cur:
            row = binlog_status(cur, mariadb=self._mariadb)
        if row is None:
            raise SourceError(f"full load: binary logging is off on {self._where} (the binlog status is empty)")
        return {"file": str(row[0]), "pos": int(row[1]), "gtid": gtid}

    def _snapshot_position(self, conn: pymysql.Connection[Any]) -> MySQLCheckpoint:
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")
            status = {str(k).lower(): str(v) for k, v in cur.fetchall()}
        return {"file": status["binlog_snapshot_file"], "pos": int(status["binlog_snapshot_position"])}

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, []
        pools, self._pools = self._pools, []
        for conn in sessions:
            # A session a cancelled read left mid-result (or already closed) cannot be closed politely.
            with contextlib.suppress(Exception):
                conn.close()
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)

    # -- catalog -----------------------------------------------------------------------------------------
    async def tables(self) -> list[TableSpec]:
        return await self._call(0, self._tables)  # type: ignore[no-any-return]

    def _tables(self) -> list[TableSpec]:
        with self._sessions[0].cursor() as cur:
            cur.execute(_COLUMNS_SQL)
            columns = cur.fetchall()
            cur.execute(_KEYS_SQL)
            keys = cur.fetchall()
        keysets: dict[str, tuple[str, ...]] = {}
        chosen: dict[str, str] = {}
        for schema, table, index, column in keys:
            name = f"{schema}.{table}"
            if chosen.setdefault(name, index) == index:
                keysets[name] = (*keysets.get(name, ()), column)
        by_table: dict[str, list[Any]] = {}
        meta: dict[str, tuple[str, str, Any, set[str]]] = {}
        for schema, table, col, dtype, ctype, charset, fsp, prec, scale, key, est in columns:
            if not self._selector(schema, table):
                continue
            name = f"{schema}.{table}"
            by_table.setdefault(name, []).append(column_stand_in(col, dtype, ctype, charset, fsp, prec, scale))
            m = meta.setdefault(name, (schema, table, est, set()))
            if key == "PRI":  # the binlog's primary key (MySQL promotes a unique NOT NULL key when there is none)
                m[3].add(col)
        specs = []
        for name, cols in by_table.items():
            schema, table, est, pk = meta[name]
            info = with_text_types(rows.table_info(schema, table, cols, pk), cols)
            self._columns[name] = cols
            specs.append(TableSpec(info, keysets.get(name, ()), None if est is None else int(est)))
        return specs

    async def split_points(self, spec: TableSpec, parts: int) -> list[tuple[str, ...]]:
        """Even steps between MIN and MAX of an integer first key column (index-only reads); other key types
        load as one segment (docs/full-load.md, "Parallelism")."""
        first = spec.key_columns[0]
        col = next(c for c in self._columns[spec.name] if c.name == first)
        if col.type not in rows.INTEGER_TYPES:
            return []
        table = f"{quote(spec.info.schema)}.{quote(spec.info.table)}"

        def bounds() -> tuple[Any, Any]:
            with self._sessions[0].cursor() as cur:
                cur.execute(f"SELECT MIN({quote(first)}), MAX({quote(first)}) FROM {table}")
                row = cur.fetchone()
            return (row[0], row[1]) if row else (None, None)

        lo, hi = await self._call(0, bounds)
        if lo is None or hi is None or hi <= lo:
            return []
        step = (hi - lo) / parts
        return [(str(int(lo + step * i)),) for i in range(1, parts)]

    # -- reading -----------------------------------------------------------------------------------------
    def _param(self, spec: TableSpec, column: str, value: Any) -> tuple[str, Any]:
        """A placeholder and its parameter for a key/boundary value compared with ``column``."""
        col = next(c for c in self._columns[spec.name] if c.name == column)
        if value is None:
            return "NULL", None
        if isinstance(value, dict) and "hex" in value:
            return "%s", bytes.fromhex(str(value["hex"]))
        if col.type in rows.INTEGER_TYPES and isinstance(value, str) and value.lstrip("-").isdigit():
            return "%s", int(value)
        if col.type == rows.NEWDECIMAL:
            return "CAST(%s AS DECIMAL(65,30))", str(value)  # a string would compare as a double
        return "%s", value

    def _row_cmp(self, spec: TableSpec, cols: Sequence[str], values: Sequence[Any], op: str) -> tuple[str, list[Any]]:
        marks, params = [], []
        for c, v in zip(cols, values, strict=True):
            mark, p = self._param(spec, c, v)
            marks.append(mark)
            if mark != "NULL":
                params.append(p)
        return f"({', '.join(quote(c) for c in cols)}) {op} ({', '.join(marks)})", params

    def _query(self, spec: TableSpec, seg: Segment, after: Key | None) -> tuple[str, list[Any]]:
        keys = spec.key_columns
        where: list[str] = []
        params: list[Any] = []
        # Segment columns that lead the key are NOT NULL: the bounds are then also plain (index range) predicates.
        on_key = bool(seg.columns) and tuple(keys[: len(seg.columns)]) == tuple(seg.columns)
        for bound, op, wrap in ((seg.lo, ">=", "IS NOT TRUE"), (seg.hi, "<=", "IS TRUE")):
            if bound is None:
                continue
            cmp, p = self._row_cmp(spec, seg.columns, bound, "<=")
            where.append(f"({cmp}) {wrap}")
            params += p
            if on_key:
                mark, first = self._param(spec, seg.columns[0], bound[0])
                where.append(f"{quote(seg.columns[0])} {op} {mark}")
                params.append(first)
        if keys and after is not None:
            # k0 >= a0 AND (k0, k1, ...) > (a0, a1, ...): the first term lets the optimizer range-scan the index.
            mark, first = self._param(spec, keys[0], after[0])
            where.append(f"{quote(keys[0])} >= {mark}")
            params.append(first)
            cmp, p = self._row_cmp(spec, keys, after, ">")
            where.append(cmp)
            params += p
        cols = ", ".join(select_column(c) for c in self._columns[spec.name])
        query = f"SELECT {cols} FROM {quote(spec.info.schema)}.{quote(spec.info.table)}"
        if where:
            query += " WHERE " + " AND ".join(where)
        if keys:
            query += f" ORDER BY {', '.join(quote(k) for k in keys)} LIMIT {self._chunk_rows}"
        return query, params

    async def decode(self, spec: TableSpec, raw: RawRows) -> list[dict[str, Any]]:
        assert isinstance(raw, MyRowPackets)
        return raw.rows()  # the spec carries everything: it never goes stale

    async def read(
        self, session: int, spec: TableSpec, segment: Segment, after: Key | None, *, raw: bool = False
    ) -> AsyncIterator[Chunk]:
        conn = self._sessions[session]
        # Without a worker the rows are still read as packets where possible and decoded here, in the session's
        # thread: rendering from the text costs less than PyMySQL's row objects and the converters after them.
        packets_here = RAW_READS and not raw
        raw = raw and RAW_READS
        keys = spec.key_columns
        names = [c.name for c in spec.info.columns]
        key_idx = [names.index(k) for k in keys]
        convs = load_converters(self._columns[spec.name], self._mariadb, self._no_hex_prefix, self._invalid_dates)
        size = self._buffer_size
        packet_spec: PacketSpec | None = None

        def fetch(cur: pymysql.cursors.SSCursor) -> tuple[list[dict[str, Any]], Key | None]:
            if packets_here:
                packets, last_key = fetch_raw(cur)
                return (packets.rows() if packets is not None else []), last_key
            got = cur.fetchmany(size)
            last = [key_json(got[-1][i]) for i in key_idx] if got and keys else None
            return render_rows(names, convs, [list(r) for r in got]), last

        def fetch_raw(cur: pymysql.cursors.SSCursor) -> tuple[MyRowPackets | None, Key | None]:
            # Only the last row is parsed here, for its key; the rest by MyRowPackets.rows (a worker's, mostly).
            nonlocal packet_spec
            payloads = read_row_packets(cur, size)
            if not payloads:
                return None, None
            result = cur._result
            assert result is not None
            # Once per read; again only if a page's result describes its columns differently (never in practice).
            if packet_spec is None or packet_spec.fields != tuple(result.converters):
                packet_spec = PacketSpec(
                    new_spec_key(),
                    tuple(names),
                    tuple(result.converters),
                    tuple(self._columns[spec.name]),
                    self._mariadb,
                    self._no_hex_prefix,
                    self._invalid_dates,
                )
            last = None
            if keys:
                values = parse_row_packets(payloads[-1], 1, packet_spec.fields)[0]
                last = [key_json(values[i]) for i in key_idx]
            return MyRowPackets(b"".join(payloads), len(payloads), packet_spec), last

        def execute() -> pymysql.cursors.SSCursor:
            query, params = self._query(spec, segment, after)
            cur = pymysql.cursors.SSCursor(conn)
            cur.execute(query, params)
            return cur

        while True:
            n = 0
            try:
                cur = await self._call(session, execute)
                while True:
                    if raw:
                        packets, last = await self._call(session, fetch_raw, cur)
                        if packets is None:
                            break
                        chunk = Chunk([], last, packets)
                    else:
                        batch, last = await self._call(session, fetch, cur)
                        if not batch:
                            break
                        chunk = Chunk(batch, last)
                    n += len(chunk)
                    after = last
                    yield chunk
                await self._call(session, cur.close)
            except pymysql.err.MySQLError as exc:
                raise _error(f"full load of {spec.name}", exc) from None
            if not keys or n < self._chunk_rows:
                return


def _error(what: str, exc: pymysql.err.MySQLError | RuntimeError) -> SourceError:
    rsa = rsa_failure(exc)
    if rsa is not None:
        return SourceError(f"{what}: {rsa}")
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    msg = exc.args[1] if len(exc.args) > 1 else str(exc)
    if isinstance(exc, pymysql.err.OperationalError) and code >= 2000:  # client-side: lost / cannot connect
        return SourceConnectionError(f"{what}: [{code}] {msg}")
    return SourceError(f"{what}: [{code}] {msg}")
