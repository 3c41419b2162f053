"""Async driver of the PostgreSQL streaming replication protocol over libpq (``psycopg.pq.PGconn``).

psycopg 3 has no replication API, so this module speaks to libpq's public, stable interface directly: a
non-blocking connect with ``replication=database``, simple-protocol commands
(the extended protocol is rejected on replication connections, so commands are literal strings with
identifiers quoted here), ``START_REPLICATION ... LOGICAL`` into CopyBoth mode, ``get_copy_data(1)`` in a
loop with ``loop.add_reader`` + ``consume_input()`` when it would block, and standby status updates sent with
``put_copy_data`` + ``flush``. Frames are returned in batches so the decoder runs over many messages per
await.

Errors: anything that looks like a lost connection raises :class:`~cdcstream.errors.SourceConnectionError`
(retriable); server errors that reconnecting cannot fix (authentication, missing slot or publication,
privileges) raise :class:`~cdcstream.errors.SourceError`.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

import psycopg
from psycopg import pq

from cdcstream.errors import SourceConnectionError, SourceError

PG_EPOCH_UNIX = 946_684_800

#: pgoutput protocol version, the same on every server (14-18). What the later ones add is of no use here:
#: 2 (14+) streams large transactions before they commit, but no record may leave before its commit (it can
#: still abort), so the daemon would hold them in memory instead of the server spilling them to disk, with no
#: gain in lag; 3 (15+) decodes two-phase transactions at PREPARE, the same trade; 4 (16+) serves parallel
#: apply workers. The ``binary`` option (14+) would replace the server's text output, the oracle of values.
PROTO_VERSION = 1
_STATUS = struct.Struct("!QQQqB")

# SQLSTATE classes/codes where retrying cannot help: authentication, privileges, undefined objects (slot or
# publication dropped), feature/configuration errors (wal_level), invalid parameter values.
_FATAL_SQLSTATES = frozenset(
    {"28000", "28P01", "42501", "42704", "55000", "0A000", "22023", "42602", "42P01", "3D000", "53400"}
)


#: libpq reports these connect failures only as text; none of them heals by retrying. (pattern, fix)
_FATAL_CONNECT = (
    # TLS first: "root certificate file ... does not exist" must not read as a missing database.
    (
        "does not match host name",
        "connect with the host name the server certificate was issued for, or use sslmode = verify-ca",
    ),
    ("certificate verify failed", "check sslrootcert: it must hold the CA that signed the server certificate"),
    # OpenSSL 3 (libpq 18) reports a CA of the right name but another key as "provider signature failure".
    ("signature failure", "check sslrootcert: it must hold the CA that signed the server certificate"),
    ("root certificate file", "set sslrootcert to the CA file (verify-ca / verify-full need one)"),
    ("server does not support ssl", "enable ssl on the server or lower sslmode"),
    ("certificate", "check sslrootcert, sslcert and sslkey"),
    ("password authentication failed", "check user and password (password_file, CDCSTREAM_SOURCE_PASSWORD)"),
    ("no password supplied", "set password or password_file"),
    (
        "no pg_hba.conf entry",
        "add a pg_hba.conf line for this user and database (the database column, not "
        "'replication', matches logical replication connections)",
    ),
    ("does not exist", "check user and database"),
    ("must be superuser or replication role", "ALTER ROLE <user> WITH REPLICATION;"),
    ("permission denied", "grant the privilege named above"),
)


def classify_connect_failure(message: str, what: str) -> SourceError:
    """A connect failure as a typed error: configuration/credential/TLS problems are fatal with a fix, the
    rest (server down, network) retriable."""
    lowered = message.lower()
    for pattern, fix in _FATAL_CONNECT:
        if pattern in lowered:
            return SourceError(f"{what}: {message}. Fix: {fix}")
    return SourceConnectionError(f"{what}: {message}")


def quote_ident(name: str) -> str:
    """Quote an identifier for a replication command (no server-side quoting is available there)."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


#: The first server version with failover slots (``FAILOVER`` of CREATE/ALTER_REPLICATION_SLOT).
FAILOVER_VERSION = 170000


def create_slot_command(
    slot: str, *, server_version: int, temporary: bool = False, export: bool = False, failover: bool = False
) -> str:
    """``CREATE_REPLICATION_SLOT`` for a pgoutput slot, in the syntax ``server_version`` (``server_version_num``)
    reads: PostgreSQL 15 introduced the parenthesised options (and 14 rejects them as a syntax error); the older
    keyword form is still accepted by newer servers but takes no new options. ``export``: export the slot's
    snapshot for a full load, else none (nothing to release). ``failover``: a failover slot, on 17+ (a
    temporary slot cannot be one)."""
    kind = "TEMPORARY LOGICAL" if temporary else "LOGICAL"
    head = f"CREATE_REPLICATION_SLOT {quote_ident(slot)} {kind} pgoutput"
    if server_version >= 150000:
        also = ", FAILOVER true" if failover and not temporary and server_version >= FAILOVER_VERSION else ""
        return f"{head} (SNAPSHOT {quote_literal('export' if export else 'nothing')}{also})"
    return f"{head} {'EXPORT_SNAPSHOT' if export else 'NOEXPORT_SNAPSHOT'}"


def now_pg_us() -> int:
    """Now as microseconds since 2000-01-01 UTC (the protocol's clock)."""
    return int((time.time() - PG_EPOCH_UNIX) * 1_000_000)


def status_update(write: int, flush: int, apply: int, reply: bool = False) -> bytes:
    """A standby status update ('r') message."""
    return b"r" + _STATUS.pack(write, flush, apply, now_pg_us(), 1 if reply else 0)


def _error_from_result(res: pq.abc.PGresult | None, pg: pq.abc.PGconn, what: str) -> SourceError:
    sqlstate = ""
    msg = ""
    if res is not None:
        raw_state = res.error_field(pq.DiagnosticField.SQLSTATE)
        sqlstate = raw_state.decode() if raw_state else ""
        raw = res.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
        msg = raw.decode(errors="replace") if raw else res.error_message.decode(errors="replace").strip()
    if not msg:
        msg = pg.error_message.decode(errors="replace").strip() or "connection lost"
    text = f"{what}: {msg}" + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
    err = SourceError(text) if sqlstate in _FATAL_SQLSTATES else SourceConnectionError(text)
    err.sqlstate = sqlstate  # type: ignore[attr-defined]
    return err


class ReplicationConnection:
    """One ``replication=database`` connection. Not thread-safe; use from one event loop."""

    def __init__(self, conninfo: str, *, connect_timeout: float = 10.0) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._pg: pq.abc.PGconn | None = None
        self._send_lock = asyncio.Lock()
        self._reader_waiter: asyncio.Future[None] | None = None
        self.streaming = False

    @property
    def pgconn(self) -> pq.abc.PGconn:
        if self._pg is None or self._pg.status != pq.ConnStatus.OK:
            raise SourceConnectionError("replication connection is closed")
        return self._pg

    @property
    def server_version(self) -> int:
        """The server's ``server_version_num`` (e.g. 170010), as libpq read it at connect."""
        return int(self.pgconn.server_version)

    @property
    def where(self) -> str:
        """host:port of the server libpq connected to (of several in a multi-host conninfo, the one it chose)."""
        pg = self.pgconn
        return f"{pg.host.decode(errors='replace')}:{pg.port.decode(errors='replace')}"

    @property
    def closed(self) -> bool:
        return self._pg is None or self._pg.status != pq.ConnStatus.OK

    # -- connect -------------------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Non-blocking libpq connect (``connect_start``/``connect_poll`` driven by the event loop)."""
        try:
            # asyncio.timeout, never wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # coincides with the inner result, and a stop signal would then be ignored.
            async with asyncio.timeout(self._connect_timeout):
                await self._connect()
        except TimeoutError:
            self._finish()
            raise SourceConnectionError(f"replication connection timed out after {self._connect_timeout:g} s") from None

    async def _connect(self) -> None:
        pg = pq.PGconn.connect_start(self._conninfo.encode())
        self._pg = pg
        if pg.status == pq.ConnStatus.BAD:
            raise self._connect_error(pg)
        while True:
            state = pg.connect_poll()
            if state == pq.PollingStatus.OK:
                break
            if state == pq.PollingStatus.FAILED:
                raise self._connect_error(pg)
            await self._wait_fd(pg.socket, writable=state == pq.PollingStatus.WRITING)
        pg.nonblocking = 1

    def _connect_error(self, pg: pq.abc.PGconn) -> SourceError:
        msg = pg.error_message.decode(errors="replace").strip()
        self._finish()
        return classify_connect_failure(msg, "cannot connect to PostgreSQL for replication")

    async def _wait_fd(self, fd: int, *, writable: bool = False, max_wait: float | None = None) -> bool:
        """Wait until ``fd`` is readable/writable; False on timeout (at once for ``max_wait`` <= 0)."""
        if max_wait is not None and max_wait <= 0:
            return False
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add: Callable[..., None] = loop.add_writer if writable else loop.add_reader
        remove: Callable[[int], bool] = loop.remove_writer if writable else loop.remove_reader
        add(fd, ready)
        if not writable:
            self._reader_waiter = fut
        try:
            try:
                async with asyncio.timeout(max_wait):  # None: no limit
                    await fut
            except TimeoutError:
                return False
            return True
        finally:
            remove(fd)
            if not writable:
                self._reader_waiter = None

    # -- simple commands -----------------------------------------------------------------------------------
    async def command(self, sql: str) -> list[tuple[str | None, ...]]:
        """Run one replication (or simple SQL) command; return its rows as text."""
        pg = self.pgconn
        try:
            pg.send_query(sql.encode())
            await self._flush()
            rows: list[tuple[str | None, ...]] = []
            error: SourceError | None = None
            while True:
                while pg.is_busy():
                    await self._wait_fd(pg.socket)
                    pg.consume_input()
                res = pg.get_result()
                if res is None:
                    break
                if res.status == pq.ExecStatus.TUPLES_OK:
                    for r in range(res.ntuples):
                        rows.append(
                            tuple(
                                None if (v := res.get_value(r, c)) is None else bytes(v).decode()
                                for c in range(res.nfields)
                            )
                        )
                elif res.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY):
                    error = error or _error_from_result(res, pg, sql.split(" (")[0])
            if error is not None:
                raise error
            return rows
        except psycopg.OperationalError as exc:
            raise SourceConnectionError(f"replication connection lost during {sql.split()[0]}: {exc}") from None

    async def identify_system(self) -> tuple[str, int, str, str | None]:
        """(systemid, timeline, xlogpos, dbname)."""
        rows = await self.command("IDENTIFY_SYSTEM")
        r = rows[0]
        return str(r[0]), int(r[1] or 0), str(r[2]), r[3]

    async def create_slot(self, slot: str, *, failover: bool = False) -> str:
        """A pgoutput slot exporting no snapshot (:func:`create_slot_command`); returns the consistent point."""
        rows = await self.command(create_slot_command(slot, server_version=self.server_version, failover=failover))
        return str(rows[0][1])

    async def start_replication(self, slot: str, lsn: str, publication: str) -> None:
        """Enter CopyBoth mode streaming pgoutput :data:`PROTO_VERSION` (with logical messages: heartbeats, DDL
        capture)."""
        pg = self.pgconn
        pubs = quote_literal(quote_ident(publication))
        cmd = (
            f"START_REPLICATION SLOT {quote_ident(slot)} LOGICAL {lsn} "
            f"(proto_version '{PROTO_VERSION}', publication_names {pubs}, messages 'true')"
        )
        try:
            pg.send_query(cmd.encode())
            await self._flush()
            while pg.is_busy():
                await self._wait_fd(pg.socket)
                pg.consume_input()
            res = pg.get_result()
        except psycopg.OperationalError as exc:
            raise SourceConnectionError(f"replication connection lost during START_REPLICATION: {exc}") from None
        if res is None or res.status != pq.ExecStatus.COPY_BOTH:
            raise _error_from_result(res, pg, "START_REPLICATION failed")
        self.streaming = True

    # -- streaming -----------------------------------------------------------------------------------------
    async def read_batch(self, max_wait: float, max_frames: int = 2000) -> list[bytes]:
        """Up to ``max_frames`` CopyData payloads; waits at most ``max_wait`` seconds for the first one.

        Returns an empty list on timeout. Raises SourceConnectionError when the stream ends or the
        connection drops, SourceError for a fatal server error (e.g. the publication was dropped).
        """
        pg = self.pgconn
        out: list[bytes] = []
        # Frames held when the socket was last read: libpq reads at most its buffer (~16 KB, ~70 row frames)
        # per consume_input, so under a backlog the batch is refilled from what the kernel already holds (a
        # recv that does not wait) until a read brings nothing new. Every batch costs the decoder, the mapper,
        # the pipeline and the sink a fixed overhead; 70 rows per batch made that a few µs per row. At most
        # ``max_frames`` (2,000: ~20 ms of work) so the sink's requests still get a turn often under a backlog.
        mark = 0
        waited = False
        try:
            while len(out) < max_frames:
                n, data = pg.get_copy_data(1)
                if n > 0:
                    out.append(bytes(data))
                    continue
                if n == 0:
                    if out:
                        if len(out) == mark:
                            break
                        mark = len(out)
                        pg.consume_input()
                        continue
                    waited = True
                    if not await self._wait_fd(pg.socket, max_wait=max_wait):
                        return out
                    pg.consume_input()
                    max_wait = 0.0  # data (or EOF) arrived; never wait twice in one call
                    continue
                # -1: the server ended the copy; -2: error. Either way the result explains why.
                self.streaming = False
                res = pg.get_result()
                while res is not None and res.status == pq.ExecStatus.COMMAND_OK:
                    res = pg.get_result()
                if res is None and pg.status == pq.ConnStatus.OK:
                    raise SourceConnectionError("the server ended the replication stream")
                raise _error_from_result(res, pg, "replication stream ended")
        except psycopg.OperationalError as exc:
            self.streaming = False
            raise SourceConnectionError(f"replication connection lost: {exc}") from None
        if not waited:
            # Under a backlog the socket never runs dry, so no wait above gave the event loop a turn: yield one
            # per batch, or the sink would send nothing until the reader fills its buffer (and timers, the
            # checkpoint and the health endpoints would wait as long).
            await asyncio.sleep(0)
        return out

    async def send_status(self, write: int, flush: int, apply: int, *, reply: bool = False) -> None:
        """Send a standby status update; serialised so concurrent senders do not interleave writes."""
        async with self._send_lock:
            pg = self.pgconn
            try:
                if pg.put_copy_data(status_update(write, flush, apply, reply)) != 1:
                    raise SourceConnectionError("could not queue a standby status update")
                await self._flush()
            except psycopg.OperationalError as exc:
                raise SourceConnectionError(f"replication connection lost while sending status: {exc}") from None

    async def _flush(self) -> None:
        pg = self.pgconn
        while pg.flush() == 1:
            await self._wait_fd(pg.socket, writable=True)

    # -- close ---------------------------------------------------------------------------------------------
    def wake_reader(self) -> None:
        """Make a pending :meth:`read_batch` return (used by close())."""
        if self._reader_waiter is not None and not self._reader_waiter.done():
            self._reader_waiter.set_result(None)

    def _finish(self) -> None:
        if self._pg is not None:
            self.wake_reader()
            self._pg.finish()
            self._pg = None
        self.streaming = False

    def close(self) -> None:
        """Drop the connection (the walsender notices the closed socket and releases the slot)."""
        self._finish()
