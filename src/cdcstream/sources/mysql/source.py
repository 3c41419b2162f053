"""``MySQLSource``: committed row changes from a MySQL 8 / MariaDB binary log, with reconnects.

:meth:`MySQLSource.start` connects once with PyMySQL to verify what the source depends on (``log_bin``,
``binlog_format=ROW``, ``binlog_row_image=FULL``, ``binlog_row_metadata=FULL``, the binlog privileges, the
checkpointed binlog file still being on the server) and fails with the fix for each; then a
:class:`~cdcstream.sources.mysql.reader.ReaderThread` streams the binlog. :meth:`changes` yields the thread's
batches; when the thread fails with a retriable error it reconnects with backoff, forever, from the last marker
it yielded (a transaction end), so a dropped connection or a server restart yields duplicates at worst, never a
gap. MySQL has no upstream acknowledgement (the binlog is retained by time, not by consumers), so :meth:`ack`
only records the position for ``/status``.

Positions (README, "MySQL positions"): checkpoint ``{"file", "pos", "gtid"}`` — the binlog file and the offset
after the transaction's last event, plus the server's GTID state after it (MariaDB ``domain-server-seq`` list,
MySQL GTID set). ``stream-position`` is ``<file>:<start offset, 12 digits>.<record, 10 digits>``, which sorts in
commit order as a string as long as the binlog base name stays the same (the numeric suffix is fixed width).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, cast

import pymysql
import structlog

from cdcstream.changes import ChangeEvent, Item, Marker
from cdcstream.checkpoints.model import (
    Checkpoint,
    MySQLCheckpoint,
    completed_load,
    is_loading,
    load_completed,
    load_started,
)
from cdcstream.config import FullLoadConfig, MySQLSourceConfig
from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.sources.base import SourceBase
from cdcstream.sources.fullload import FullLoad, KeyRangesOf, Offload, PendingReloads, validate_reload
from cdcstream.sources.mysql.binlog.client import DumpStart
from cdcstream.sources.mysql.positions import BinlogPos, binlog_pos, binlog_status, position_of
from cdcstream.sources.mysql.reader import (
    OPS,
    SYSTEM_SCHEMAS,
    Batch,
    EventConverter,
    Failure,
    ReaderThread,
    classify,
)
from cdcstream.sources.mysql.resume import (
    ServerInfo,
    describe_server,
    inspect_resume,
    other_server,
    resume_refusals,
    resumes_by_gtid,
    stored_position,
)
from cdcstream.sources.mysql.tls import rsa_failure, ssl_settings, tls_failure
from cdcstream.telemetry import metrics

log = structlog.get_logger(__name__)

# Snapshots a reload may take before its binlog position is at or after what was already streamed.
REOPEN_ATTEMPTS = 50
QUEUE_BATCHES = 4  # bound on batches waiting for the pipeline (each at most reader.BATCH_MAX items)

REQUIRED_SETTINGS = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}


def monitor_privilege(mariadb: bool) -> str:
    """The privilege of SHOW BINARY LOGS and the binlog status statement, as the server names it: MariaDB 10.5
    renamed REPLICATION CLIENT to BINLOG MONITOR (the old name is an alias there); MySQL 8.0 to 9.x keep
    REPLICATION CLIENT."""
    return "BINLOG MONITOR" if mariadb else "REPLICATION CLIENT"


def connection_settings(cfg: MySQLSourceConfig) -> dict[str, Any]:
    """PyMySQL keyword arguments for every connection (queries, ``check`` and the binlog stream), so TLS and
    timeouts are the same everywhere. Contains the password: never log them."""
    settings: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "user": cfg.user,
        "connect_timeout": max(1, int(cfg.connect_timeout)),
        # A heartbeat arrives every heartbeat_interval while idle; silence far beyond it means a dead link.
        "read_timeout": max(10, int(cfg.heartbeat_interval * 4)),
        "charset": "utf8mb4",
        **ssl_settings(cfg),
    }
    if cfg.password is not None:
        settings["password"] = cfg.password.get_secret_value()
    return settings


def open_connection(cfg: MySQLSourceConfig) -> pymysql.Connection[Any]:
    """A PyMySQL connection with :func:`connection_settings`; any failure to connect as :func:`connect_error`."""
    try:
        return pymysql.connect(**connection_settings(cfg))
    except (pymysql.err.MySQLError, RuntimeError) as exc:  # RuntimeError: PyMySQL without cryptography
        raise connect_error(cfg, exc) from None


def connect_error(cfg: MySQLSourceConfig, exc: pymysql.err.MySQLError | RuntimeError) -> SourceError:
    """Bad credentials / missing grants / TLS or RSA key exchange failures are fatal; an unreachable or
    restarting server is worth retrying."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    msg = exc.args[1] if len(exc.args) > 1 else str(exc)
    where = f"{cfg.user}@{cfg.host}:{cfg.port}"
    tls = tls_failure(str(msg))
    if tls is not None:
        return SourceError(f"cannot connect to MySQL/MariaDB {where} (ssl_mode = {cfg.ssl_mode!r}): {tls}. ({msg})")
    rsa = rsa_failure(exc)
    if rsa is not None:
        return SourceError(f"cannot connect to MySQL/MariaDB {where} (ssl_mode = {cfg.ssl_mode!r}): {rsa}")
    if code in (1045, 1044, 1698, 1130):
        hint = ""
        if code == 1045 and cfg.ssl_mode == "disabled":
            hint = " (a server with require_secure_transport = ON also refuses plaintext like this: set ssl_mode)"
        return SourceError(f"cannot connect to MySQL/MariaDB {where}: [{code}] {msg}{hint}")
    return SourceConnectionError(f"cannot connect to MySQL/MariaDB {where}: [{code}] {msg}")


def fetch_server_info(
    cfg: MySQLSourceConfig,
    resume: tuple[str, int, str | None] | None = None,
    *,
    at_position: bool = False,
    binlog: bool = True,
) -> tuple[ServerInfo, tuple[str, int, str | None]]:
    """Blocking: version, settings, binlog list and the current position (file, pos, GTID state); with
    ``resume`` (file, pos, GTID), also what the server has of it (``resume.inspect_resume``). ``binlog=False``
    (a full load only) tolerates binary logging off and a user without binlog privileges: the position is then
    empty."""
    conn = open_connection(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = str(cur.fetchone()[0])
            cur.execute(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', "
                "'binlog_row_metadata', 'gtid_mode', 'gtid_binlog_pos', 'gtid_binlog_state', 'gtid_executed', "
                "'expire_logs_days', 'binlog_expire_logs_seconds', 'server_id', 'binlog_transaction_compression', "
                "'binlog_row_value_options', 'server_uuid', 'binlog_checksum')"
            )
            variables = {str(k).lower(): str(v) for k, v in cur.fetchall()}
            mariadb = "mariadb" in version.lower()
            try:
                cur.execute("SHOW BINARY LOGS")
                binlogs = [(str(r[0]), int(r[1])) for r in cur.fetchall()]
                row = binlog_status(cur, mariadb=mariadb)
            except pymysql.err.MySQLError as exc:
                code = exc.args[0] if exc.args else 0
                if not binlog and code in (1227, 1044, 1142, 1381):
                    binlogs, row = [], None
                elif code in (1227, 1044, 1142):
                    raise SourceError(
                        f"user {cfg.user!r} may not list the binary logs: {exc.args[1]}. Fix: GRANT "
                        f"{monitor_privilege(mariadb)} ON *.* TO '{cfg.user}'@'…';"
                    ) from None
                elif code == 1381:  # "You are not using binary logging"
                    binlogs, row = [], None
                else:
                    raise
        info = ServerInfo(version, variables, binlogs)
        if row is None and not binlog:
            return info, ("", 0, None)
        if row is None:
            raise SourceError(
                f"binary logging is off on {cfg.host}:{cfg.port} (log_bin = {variables.get('log_bin', '?')}). Fix: "
                "set log_bin (and server_id) in the server config and restart the server."
            )
        if resume is not None:
            with conn.cursor() as cur:
                inspect_resume(cur, info, *resume, at_position=at_position)
        gtid = variables.get("gtid_binlog_pos") if info.mariadb else variables.get("gtid_executed")
        return info, (str(row[0]), int(row[1]), (gtid or "").replace("\n", "") or None)
    except pymysql.err.MySQLError as exc:
        raise connect_error(cfg, exc) from None
    finally:
        conn.close()


def binlog_bytes_after(binlogs: Sequence[tuple[str, int]], file: str, pos: int) -> int | None:
    """Bytes of binlog after position (file, pos): the rest of that file plus every later file. None when the
    file is no longer listed (purged; ``check`` and start-up report that)."""
    names = [name for name, _size in binlogs]
    if file not in names:
        return None
    i = names.index(file)
    return max(0, binlogs[i][1] - pos) + sum(size for _name, size in binlogs[i + 1 :])


def fetch_binlog_sizes(cfg: MySQLSourceConfig) -> list[tuple[str, int]]:
    """Blocking: ``SHOW BINARY LOGS`` as (file, size) in order (needs BINLOG MONITOR / REPLICATION CLIENT)."""
    conn = open_connection(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            return [(str(r[0]), int(r[1])) for r in cur.fetchall()]
    finally:
        conn.close()


def settings_problems(variables: dict[str, str]) -> list[str]:
    """The required binlog settings that are not set, each with its fix."""
    problems = []
    for key, want in REQUIRED_SETTINGS.items():
        have = variables.get(key, "(not supported by this server version)")
        if have.upper() != want:
            problems.append(
                f"{key} is {have}, cdcstream needs {want} (fix: SET GLOBAL {key} = {want}; and {key} = {want} in "
                "the server config so it survives a restart; sessions already open keep the old value)"
            )
    # binlog_transaction_compression (MySQL's zstd payloads) and binlog_row_value_options = PARTIAL_JSON are
    # decoded (reader.py), so they are no problem; sessions may set them (and binlog_row_image, binlog_format)
    # whatever the global value is, which is why the reader handles what they produce rather than this check.
    return problems


# Server errors of a denied or impossible read (ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR,
# ER_DBACCESS_DENIED_ERROR; ER_NO_SUCH_TABLE, ER_BAD_DB_ERROR).
_DENIED = (1142, 1143, 1044)
_MISSING = (1146, 1049)


def quote_table(schema: str, table: str) -> str:
    return f"`{schema.replace('`', '``')}`.`{table.replace('`', '``')}`"


def load_denied(cur: Any, schema: str, table: str) -> bool | None:
    """Whether the connected user may not read every column of ``schema.table`` as a load does (True), may
    (False), or the table does not exist (None). Tried with ``SELECT * … LIMIT 0``, so the server's own rules
    decide (global, schema, table and column grants, roles); a user sees in information_schema only what it
    may use, so a catalog lookup would mistake "denied" for "missing"."""
    try:
        cur.execute(f"SELECT * FROM {quote_table(schema, table)} LIMIT 0")
        cur.fetchall()
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        if code in _DENIED:
            return True
        if code in _MISSING:
            return None
        raise
    return False


def copy_problem(cur: Any, schema: str, table: str, where: str) -> str | None:
    """Why a copy (``reload --table``) cannot read ``schema.table``, with the GRANT that fixes it, or None."""
    name = f"{schema}.{table}"
    try:
        denied = load_denied(cur, schema, table)
        if denied is None:
            return f"table {name} does not exist in {where}"
        if denied:
            cur.execute("SELECT CURRENT_USER()")
            user, _, host = str(cur.fetchone()[0]).rpartition("@")
            return (
                f"user {user}@{host} may not SELECT {name} (or it does not exist: the server does not tell a user "
                "without privileges on it), which the copy reads (streaming it needs no SELECT, copying it does). "
                f"As an administrator: GRANT SELECT ON {quote_table(schema, table)} TO '{user}'@'{host}';"
            )
        cur.execute(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
            "AND TABLE_TYPE = 'BASE TABLE'",
            (schema, table),
        )
        if cur.fetchone() is None:
            return f"{name} is not a table in {where} (a view?)"
    except pymysql.err.MySQLError as exc:
        raise SourceError(f"cannot check whether {name} can be copied: {exc.args[-1]}") from None
    return None


def ours(marker: Marker) -> MySQLCheckpoint:
    """The checkpoint of a marker this source made (markers carry any engine's checkpoint type)."""
    return cast(MySQLCheckpoint, marker.checkpoint)


class MySQLSource(SourceBase[MySQLCheckpoint]):
    """A :class:`cdcstream.sources.Source` reading a MySQL/MariaDB server's binary log."""

    def __init__(
        self,
        cfg: MySQLSourceConfig,
        *,
        selector: Callable[[str, str], bool] | None = None,
        no_hex_prefix: bool = False,
        migration_type: str = "cdc",
        full_load: FullLoadConfig | None = None,
        key_ranges: KeyRangesOf | None = None,
        offload: Offload | None = None,
    ) -> None:
        super().__init__(
            f"mysql:{cfg.host}:{cfg.port}",
            reconnect_max_delay=cfg.reconnect_max_delay,
            migration_type=migration_type,
            full_load=full_load,
            key_ranges=key_ranges,
            offload=offload,
        )
        self.cfg = cfg
        # reload --table: pending requests are stamped on every marker yielded while any is pending, never put
        # into the reader's markers (which may be queued before a request or after its end). The running
        # reload's binlog point P; the last finished reload, for /status.
        self._reload_point: BinlogPos | None = None
        self._last_reload: dict[str, Any] | None = None
        self._at_boundary = True  # the last item yielded ended a transaction (or nothing was yielded yet)
        self._user_selector = selector
        self._no_hex_prefix = no_hex_prefix
        self._where = f"{cfg.user}@{cfg.host}:{cfg.port}"
        self._conv: EventConverter | None = None
        self._reader: ReaderThread | None = None
        self._queue: asyncio.Queue[Batch | Failure] = asyncio.Queue(maxsize=QUEUE_BATCHES)
        self._info: ServerInfo | None = None
        self._resume: MySQLCheckpoint = {}
        self._identity: MySQLCheckpoint = {}
        self._acked: MySQLCheckpoint | None = None
        self._use_gtid = False
        self._m_events: dict[tuple[str, int], Any] = {}
        self._log = log.bind(source=self._label)

    def _schema_captured(self, schema: str) -> bool:
        """Whether tables of ``schema`` may be captured (the mapping selects by table, so: may be)."""
        if self.cfg.databases is not None:
            return schema in self.cfg.databases
        return schema not in SYSTEM_SCHEMAS

    def _selects(self, schema: str, table: str) -> bool:
        if self.cfg.databases is not None:
            if schema not in self.cfg.databases:
                return False
        elif schema in SYSTEM_SCHEMAS:
            return False
        return self._user_selector is None or self._user_selector(schema, table)

    # ------------------------------------------------------------------------------------------------------
    async def start(self, given: Checkpoint | None, *, owned: bool = True) -> None:
        checkpoint = cast(MySQLCheckpoint | None, given)  # another engine's position fails stored_position
        stored = stored_position(checkpoint) if checkpoint is not None and "file" in checkpoint else None
        info, current = await asyncio.to_thread(
            fetch_server_info, self.cfg, stored, at_position=True, binlog=self.migration_type != "full-load"
        )
        self._info = info
        problems = settings_problems(info.variables)
        if problems and self.migration_type != "full-load":
            raise SourceError(f"{info.version} at {self.cfg.host}:{self.cfg.port}: " + "; ".join(problems))
        if load_completed(checkpoint):
            assert checkpoint is not None
            self._load_extra = {"load": checkpoint["load"]}
        # A reload requested and not finished before the last stop is done again from the start.
        self._reloads = PendingReloads(checkpoint, label=self._label)
        if is_loading(checkpoint) and not load_started(checkpoint):
            checkpoint = None  # a load intent without a snapshot yet: nothing was acknowledged, load afresh
        known = checkpoint  # what a stored position must be verified against (None: the server's own, just now)
        if self.migration_type == "full-load" or (
            self.migration_type == "full-load-and-cdc" and (checkpoint is None or is_loading(checkpoint))
        ):
            await self._prepare_load(checkpoint, info)
            if self.migration_type == "full-load":
                self._started = True
                return
            assert self._load is not None
            # CDC starts at the position taken with the snapshot (stored in the checkpoint across restarts).
            start = cast(MySQLCheckpoint, self._load.start_position)  # our engine's
            checkpoint = {"file": start["file"], "pos": start["pos"], "gtid": start.get("gtid")}
            if not self._load.resumed:
                known = None
        if checkpoint is not None:
            stored = stored_position(checkpoint)
        if stored is not None and known is not None and not owned:
            self._log.info(
                "checkpoint written by an older cdcstream (it records no owner): adopted after the server identity "
                "and position checks; its owner is recorded from the next write on",
                checkpoint=checkpoint,
            )
        file, pos, gtid = stored or current
        self._use_gtid = resumes_by_gtid(self.cfg.gtid_mode, checkpoint, gtid, info)
        self._verify_resume(info, file, pos, gtid, known)
        self._conv = EventConverter(
            selector=self._selects,
            no_hex_prefix=self._no_hex_prefix,
            mariadb=info.mariadb,
            file=file,
            pos=pos,
            gtid=gtid,
            invalid_dates=self.cfg.invalid_dates,
            schema_captured=self._schema_captured,
        )
        self._set_extra()
        self._resume = self._conv.checkpoint()
        self._last_checkpoint = self._reloads.stamp(self._resume)
        self._acked = checkpoint
        self._started = True
        if self._load is not None:
            return  # the binlog reader starts after the last load row (changes())
        self._start_reader()
        self._log_streaming(file, pos, gtid)

    def _log_streaming(self, file: str, pos: int, gtid: str | None) -> None:
        assert self._info is not None
        self._log.info(
            "binlog streaming started",
            server=self._info.version,
            file=file,
            pos=pos,
            gtid=gtid,
            resume_by="gtid" if self._use_gtid else "file/pos",
            **self._identity,
        )

    def _verify_resume(
        self, info: ServerInfo, file: str, pos: int, gtid: str | None, known: MySQLCheckpoint | None
    ) -> None:
        """Before streaming (at start and after every reconnect): is the server the one the position was
        written for, and does it still have the binlogs after it (``resume.resume_refusals``)?"""
        where = f"{self.cfg.host}:{self.cfg.port}"
        refusals = resume_refusals(info, file, pos, gtid, known, use_gtid=self._use_gtid, where=where)
        if refusals:
            raise refusals[0].error()
        identity = info.identity
        if known and other_server(known, identity):
            self._log.warning(
                "server identity changed (failover?): continuing by GTID, which names the same transactions on "
                "every server of a replication topology",
                old=describe_server(known),
                new=describe_server(identity),
                gtid=gtid,
            )
        self._identity = identity
        self._set_extra()

    def _set_extra(self) -> None:
        """Fields every checkpoint carries besides the position: the server identity and, after a full load,
        that it is done (so a restart neither reloads nor forgets it)."""
        if self._conv is not None:
            self._conv.checkpoint_extra = {**self._identity, **self._load_extra}

    async def _prepare_load(self, checkpoint: MySQLCheckpoint | None, info: ServerInfo) -> None:
        """Open the load sessions (a fresh snapshot and its binlog position, or a resumed load's fresh snapshots
        with the stored position) and plan the tables; the rows are read by changes()."""
        from cdcstream.sources.mysql.snapshot import MyLoadEngine

        fl = self._full_load_cfg
        engine = MyLoadEngine(
            lambda: connection_settings(self.cfg),
            mariadb=info.mariadb,
            want_position=self.migration_type != "full-load",
            selector=self._selects,
            chunk_rows=fl.chunk_rows,
            buffer_size=fl.parallel_load_buffer_size,
            no_hex_prefix=self._no_hex_prefix,
            where=self._where,
            invalid_dates=self.cfg.invalid_dates,
        )
        self._load = FullLoad(
            engine,
            fl,
            label=self._label,
            checkpoint=checkpoint,
            base_checkpoint=MySQLCheckpoint,
            ranges=self._key_ranges,
            offload=self._offload,
        )
        await self._load.open()

    def _start_reader(self) -> None:
        assert self._conv is not None and self._info is not None
        r = self._resume
        start = DumpStart(str(r["file"]), int(r["pos"]), r.get("gtid"), self._use_gtid and bool(r.get("gtid")))
        self._reader = ReaderThread(
            settings=connection_settings(self.cfg),
            server_id=self.cfg.server_id,
            heartbeat=self.cfg.heartbeat_interval,
            mariadb=self._info.mariadb,
            start=start,
            converter=self._conv,
            loop=asyncio.get_running_loop(),
            queue=self._queue,
        )
        self._reader.start()
        self._m_connected.set(1)

    # ------------------------------------------------------------------------------------------------------
    async def changes(self) -> AsyncGenerator[Sequence[Item], None]:
        if not self._started:
            raise SourceError("MySQLSource.changes() called before start()")
        if self._load is not None:
            load = self._load
            async for items in load.run():
                yield items
            # Every later checkpoint says the load is done, so a restart neither reloads nor forgets it.
            done = completed_load(len(load.status()["tables"]), load.rows)
            self._load_extra = {"load": done}
            if self.migration_type == "full-load":
                yield [Marker(MySQLCheckpoint(load=done), None, False)]
                return
            assert self._conv is not None
            self._set_extra()
            self._resume = self._conv.checkpoint()
            yield self._out([Marker(self._resume.copy(), None, False)])
            self._start_reader()
            self._log.info("full load done: streaming the binlog from the snapshot's position", resume=self._resume)
        while not self._closed:
            if self._reloads and self._reload is None and self._at_boundary and not await self._begin_reload():
                # The failed request leaves the checkpoint promptly.
                yield self._out([Marker(self._reloads.stamp(self._last_checkpoint), None, False)])
                continue
            if self._reader is None:
                await self._reconnect()
                continue
            msg = await self._queue.get()
            if isinstance(msg, Failure):
                await self._reader_failed(msg)
                continue
            self._after_batch(msg)
            items = msg.items
            if self._reload_point is not None:
                split = self._reload_split(items, msg.heard)
                if split is not None:
                    if split:
                        yield self._out(items[:split])
                    async for batch in self._finish_reload():
                        yield batch
                    items = items[split:]
            if items:
                yield self._out(items)

    def _out(self, items: list[Item]) -> list[Item]:
        """``items`` as yielded: markers name the pending reloads; remembers the last marker and whether the
        batch ends a transaction (a reload starts only there)."""
        if self._reloads:
            items = [
                Marker(self._reloads.stamp(ours(i)), i.commit_epoch, i.transaction) if isinstance(i, Marker) else i
                for i in items
            ]
        for item in reversed(items):
            if isinstance(item, Marker):
                self._last_checkpoint = ours(item)
                break
        if items:
            self._at_boundary = isinstance(items[-1], Marker)
        return items

    # ------------------------------------------------------------------------------------------------------
    # reload --table: re-copy one table while CDC runs
    # ------------------------------------------------------------------------------------------------------
    async def request_reload(self, name: str) -> str:
        """Queue a consistent re-copy of ``schema.table`` (``POST /reload``, ``cdcstream reload``).

        At the next transaction boundary of the yielded stream the load sessions open one snapshot with its
        exact binlog position P (README, "Reloading one table while CDC runs"); the stream goes on up to the
        last transaction ending at or before P, the table's rows follow as ``load`` records, then the changes
        from P on. The request is in every checkpoint until the rows are out, so a crash in between redoes it.
        """
        await self._validate_reload(name)
        return self._reloads.add(name)[1]

    async def _validate_reload(self, name: str) -> tuple[str, str]:
        def unreadable(schema: str, table: str) -> str | None:
            conn = open_connection(self.cfg)
            try:
                with conn.cursor() as cur:
                    return copy_problem(cur, schema, table, f"the MySQL/MariaDB server {self.cfg.host}:{self.cfg.port}")
            finally:
                conn.close()

        return await validate_reload(
            name,
            migration_type=self.migration_type,
            initial_load=self._load,
            selector=self._selects,
            unreadable=lambda schema, table: asyncio.to_thread(unreadable, schema, table),
        )

    async def _begin_reload(self) -> bool:
        """Start the pending reload (:meth:`_open_reload`). False when it cannot start: it is then marked
        failed (PendingReloads.pop) and CDC goes on."""
        try:
            await self._open_reload()
        except Exception as exc:  # whatever stops this copy must not stop the stream (or every later start)
            self._reload, self._reload_point = None, None
            self._reloads.pop(error=exc)
            return False
        return True

    async def _open_reload(self) -> None:
        """Open the reload's sessions at one snapshot and set its binlog point P.

        Called between batches at a transaction boundary, so everything yielded so far ends at the last
        yielded marker Y. Under FLUSH TABLES WITH READ LOCK, P is the binlog's end, so P >= Y. Without the lock
        (MariaDB: the snapshot's own Binlog_snapshot_position) a transaction can be in the binlog, and so
        already streamed, a moment before it is visible to new snapshots: then P < Y, and the rows would miss
        changes already sent before them. That snapshot is thrown away and a new one taken, until P >= Y.
        """
        from cdcstream.sources.mysql.snapshot import MyLoadEngine, SnapshotsDiffer

        assert self._info is not None
        name = self._reloads.current
        schema, table = await self._validate_reload(name)
        fl = self._full_load_cfg
        yielded = position_of(self._last_checkpoint)
        sessions: int | None = None
        for attempt in range(REOPEN_ATTEMPTS):
            engine = MyLoadEngine(
                lambda: connection_settings(self.cfg),
                mariadb=self._info.mariadb,
                want_position=True,
                selector=lambda s, t: (s, t) == (schema, table),
                chunk_rows=fl.chunk_rows,
                buffer_size=fl.parallel_load_buffer_size,
                no_hex_prefix=self._no_hex_prefix,
                where=self._where,
                exact=True,
                invalid_dates=self.cfg.invalid_dates,
            )
            load = FullLoad.for_reload(
                engine,
                fl,
                label=self._label,
                # The last position yielded, naming the reload (also when nothing was yielded since the request).
                base_checkpoint=lambda: self._reloads.stamp(self._last_checkpoint),
                ranges=self._key_ranges,
                offload=self._offload,
                sessions=sessions,
            )
            try:
                await load.open()
            except SnapshotsDiffer as exc:
                self._log.warning("reload: reading with one session (one snapshot)", table=name, reason=str(exc))
                sessions = 1
                continue
            if not load.covers(name):
                await engine.close()
                raise SourceError(f"reload: table {name} disappeared before its snapshot was taken")
            point = position_of(load.start_position)
            if point >= yielded:
                self._reload, self._reload_point = load, point
                self._last_reload = {
                    "table": name,
                    "point": str(point),
                    "path": engine.path,
                    "sessions": load.cfg.max_full_load_subtasks,
                }
                if engine.path != "lock" and not self._info.mariadb:
                    self._log.warning(
                        "reload without FLUSH TABLES WITH READ LOCK on MySQL: the position is read before the "
                        "snapshot, so rows changed in between arrive as load rows and again as changes after them "
                        "(lossless, not exact); grant RELOAD for an exact reload",
                        table=name,
                    )
                self._log.info(
                    "reload: snapshot taken, streaming up to its binlog position",
                    table=name,
                    point=str(point),
                    path=engine.path,
                )
                return
            await engine.close()
            self._log.info(
                "reload: snapshot older than the stream already sent; taking another", table=name, attempt=attempt
            )
            await asyncio.sleep(0.05 * (attempt + 1))
        raise SourceError(
            f"reload of {name}: {REOPEN_ATTEMPTS} snapshots in a row were older than the binlog position already "
            f"streamed ({yielded}); the server's binlog_snapshot_position does not advance"
        )

    def _reload_split(self, items: list[Item], heard: tuple[str, int] | None) -> int | None:
        """Index of the first item after the reload point P, or None while all are before it and the reader
        may not have reached P yet. P is a transaction boundary of the binlog, so a transaction either ends at
        or before P (its marker's position) or starts at or after it (its events' stream-position)."""
        point = self._reload_point
        assert point is not None
        for i, item in enumerate(items):
            if isinstance(item, Marker):
                at = position_of(item.checkpoint)
                if at > point:
                    return i
                if at == point:
                    return i + 1
            elif isinstance(item, ChangeEvent):  # CDC items only here (load rows come after the split)
                file, _, rest = item.stream_position.rpartition(":")
                if binlog_pos(file, int(rest.partition(".")[0])) >= point:
                    return i
        if heard is not None and binlog_pos(*heard) >= point:
            return len(items)  # an idle server: everything up to the heartbeat's position is in
        return None

    async def _finish_reload(self) -> AsyncIterator[list[Item]]:
        """The reload's rows, then a marker that no longer names it. A copy that fails half-way is marked
        failed the same way (its rows so far are in the stream, harmlessly) and CDC goes on."""
        load = self._reload
        assert load is not None
        try:
            async for batch in load.run():
                yield list(batch)
        except Exception as exc:  # the copy only: the held-back changes after P are still to be yielded
            self._reloads.pop(rows=load.rows, error=exc)
        else:
            self._reloads.pop(rows=load.rows)
        self._reload = None
        self._reload_point = None
        self._last_reload = {**(self._last_reload or {}), "rows": load.rows}
        # The first checkpoint no longer naming the table: acknowledged only after every row before it.
        yield self._out([Marker(self._reloads.stamp(self._last_checkpoint), None, False)])

    async def _reader_failed(self, failure: Failure) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await asyncio.to_thread(reader.thread.join, 5)
        self._m_connected.set(0)
        assert self._conv is not None
        self._conv.reset_transaction()
        err = classify(failure.error, self._where, failure.position)
        if not err.retriable:
            raise err
        self._log.warning("binlog connection lost", reason=str(err), resume=self._resume)

    async def _reconnect(self) -> None:
        delay = self._backoff.next()
        self._m_reconnects.inc()
        self._log.info("reconnecting", delay=round(delay, 3), resume=self._resume)
        await asyncio.sleep(delay)
        if self._closed:
            return
        # While we were away the binlogs may have been purged, or another server may have taken the address
        # (failover): check before streaming again, exactly as at start.
        r = self._resume
        try:
            position = (str(r["file"]), int(r["pos"]), r.get("gtid") or None)
            info, _ = await asyncio.to_thread(fetch_server_info, self.cfg, position)
        except SourceConnectionError as exc:
            self._log.warning("reconnect failed", reason=str(exc))
            return
        self._verify_resume(info, str(r["file"]), int(r["pos"]), r.get("gtid"), self._identity)
        self._info = info
        self._resume = {**r, **self._identity}  # a failover by GTID: later checkpoints name the new server
        self._start_reader()
        self._log.info("binlog streaming reconnected", resume=self._resume)

    def _after_batch(self, batch: Batch) -> None:
        now = time.time()
        self._m_last_event.set(now)
        self._backoff.reset()
        for plan in batch.touched:
            counts = plan.counts
            for i, n in enumerate(counts):
                if not n:
                    continue
                counts[i] = 0
                key = (plan.label, i)
                child = self._m_events.get(key)
                if child is None:
                    child = self._m_events[key] = metrics.SOURCE_EVENTS.labels(self._label, plan.label, OPS[i].value)
                child.inc(n)
        if batch.transactions:
            self._m_transactions.inc(batch.transactions)
        if batch.ddl_skipped:
            self._m_ddl_skipped.inc(batch.ddl_skipped)
        if batch.items:
            for item in reversed(batch.items):
                if isinstance(item, Marker):
                    self._resume = ours(item)
                    break
        if batch.last_commit_epoch is not None and batch.items:
            self._set_read_lag(max(0.0, now - batch.last_commit_epoch))
            self._m_commit_ts.set(batch.last_commit_epoch)
        elif batch.heartbeat:
            self._set_read_lag(0)

    # ------------------------------------------------------------------------------------------------------
    async def ack(self, given: Checkpoint) -> None:
        if self.migration_type == "full-load":
            return  # no position: a full load alone reads no binlog
        checkpoint = cast(MySQLCheckpoint, given)
        if not isinstance(checkpoint, dict) or "file" not in checkpoint or "pos" not in checkpoint:
            raise SourceError(f"ack with a checkpoint that is not a MySQL position: {checkpoint!r}")
        self._acked = checkpoint  # nothing to release upstream: binlogs are retained by time, not by readers

    async def lag_probe(self) -> dict[str, float | None]:
        """Bytes of binlog from the acknowledged checkpoint to the end of the log (polled by
        telemetry/probe.py); nothing before the first checkpoint."""
        acked = self._acked
        if not acked:
            return {}
        sizes = await asyncio.to_thread(fetch_binlog_sizes, self.cfg)
        lag = binlog_bytes_after(sizes, str(acked["file"]), int(acked["pos"]))
        return {} if lag is None else {"lag_bytes": float(lag)}

    def status(self) -> dict[str, Any]:
        conv = self._conv
        return {
            "engine": "mysql",
            "server": self._info.version if self._info else None,
            "connected": (self._reader is not None and self._reader.thread.is_alive())
            or (self._load is not None and not self._load.finished),
            "resume": self._resume or None,
            "acked": self._acked,
            "resume_by": "gtid" if self._use_gtid else "file/pos",
            "server_identity": self._identity or None,
            "last_commit_time": conv.last_commit_time if conv else None,
            "full_load": None if self._load is None else self._load.status(),
            "reload": {
                **self._reloads.status(self._reload),
                "last": self._last_reload,
            },
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        reload, self._reload = self._reload, None
        if reload is not None:
            await reload.engine.close()  # opened but not run (run() closes it itself)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.stop()
            # Unblock a put() waiting on a full queue, then wait for the thread.
            while not self._queue.empty():
                self._queue.get_nowait()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reader.thread.join, 5)
        self._m_connected.set(0)
        self._log.info("source closed", acked=self._acked)
