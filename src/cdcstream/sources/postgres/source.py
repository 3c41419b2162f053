"""``PostgresSource``: committed changes from PostgreSQL logical decoding (pgoutput), with reconnects.

Moving parts:

* a normal connection (psycopg ``AsyncConnection``, autocommit) for checks, slot/publication setup and
  heartbeats (``pg_logical_emit_message``: an idle slot advances even when only uncaptured tables change);
* a replication connection (:mod:`.replication`) streaming pgoutput into the sans-IO :mod:`.pgoutput` decoder;
* a table check every ``table_check_interval`` seconds naming each selected table the publication does not cover
  (tables created while CDC runs, :mod:`.publication`);
* a status task sending standby status updates every ``status_interval`` seconds and promptly after an ack.
  The flush position sent is only ever an LSN the pipeline acknowledged (:meth:`PostgresSource.ack`), never
  what was merely received: that is what makes a crash lose nothing.

When the replication connection drops, :meth:`changes` reconnects with backoff forever and restarts from the
end LSN of the last commit it yielded; the server re-sends everything after its confirmed flush position, so a
restart yields duplicates at worst, never a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import psycopg
import structlog
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cdcstream.changes import ChangeEvent, Item, Marker
from cdcstream.checkpoints.model import (
    Checkpoint,
    PgCheckpoint,
    completed_load,
    is_loading,
    load_completed,
    load_started,
)
from cdcstream.config import FullLoadConfig, PostgresSourceConfig
from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.runtime.stopping import cancel_and_wait
from cdcstream.sources.base import SourceBase
from cdcstream.sources.fullload import FullLoad, KeyRangesOf, Offload, PendingReloads, validate_reload
from cdcstream.sources.postgres import ddl
from cdcstream.sources.postgres.grants import copy_problem
from cdcstream.sources.postgres.pgoutput import OPS, Decoder, format_lsn, parse_lsn
from cdcstream.sources.postgres.publication import (
    EVERY_TABLE,
    Uncaptured,
    all_tables,
    publication_sql,
    published_schemas,
    register_selection,
    uncaptured_tables,
)
from cdcstream.sources.postgres.replication import ReplicationConnection, classify_connect_failure, quote_ident
from cdcstream.sources.postgres.resume import read_server_state, resume_refusals
from cdcstream.sources.postgres.values import PgType, TypeRegistry
from cdcstream.telemetry import metrics

log = structlog.get_logger(__name__)

# Output formatting of pgoutput proto v1 uses the walsender session's GUCs: pin them so values.py can reshape
# strings instead of parsing them. IntervalStyle=iso_8601 makes intervals ISO 8601 durations (P1DT2H), which
# consumers can parse; lc_monetary is deliberately *not* pinned (it defines what a stored money value means).
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 -c bytea_output=hex -c extra_float_digits=1"
)
HEARTBEAT_PREFIX = "cdcstream.heartbeat"
PROMPT_ACK_INTERVAL = 0.5  # an ack is sent at once if the last status update is older than this

SYSTEM_SCHEMAS = ("pg_catalog", "information_schema")

#: The user tables a publication or a full load can cover (partitions through their root), ordered by name.
USER_TABLES_FROM = """
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cdcstream') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""

_USER_TABLES_SQL = "SELECT n.nspname, c.relname" + USER_TABLES_FROM

# One round of type descriptions for the decoder's TypeRegistry (values.PgType). Referenced types (array
# elements, domain bases, composite attributes) are fetched in further rounds until the closure is known.
_TYPES_SQL = """
SELECT t.oid::int8, n.nspname::text, t.typname::text, t.typtype::text, t.typoutput = 'array_out'::regproc,
       t.typelem::int8, t.typbasetype::int8, t.typdelim::text,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       ARRAY(SELECT a.atttypid::int8 FROM pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = ANY(%s::oid[])
"""

_PRIMARY_KEYS_SQL = """
SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE i.indisprimary AND n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1, 2
"""


def lsn_of(checkpoint: Checkpoint) -> int:
    """The LSN of a PostgreSQL checkpoint (or a load's start position); KeyError or ValueError when it has none."""
    return parse_lsn(str(cast(PgCheckpoint, checkpoint)["lsn"]))


def build_conninfo(cfg: PostgresSourceConfig, *, replication: bool) -> str:
    """libpq conninfo from the config. Contains the password: never log it."""
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "user": cfg.user,
        "dbname": cfg.database,
        "sslmode": cfg.sslmode,
        "connect_timeout": max(1, math.ceil(cfg.connect_timeout)),
        "application_name": "cdcstream",
        "options": SESSION_OPTIONS,
    }
    if cfg.password is not None:
        params["password"] = cfg.password.get_secret_value()
    for key in ("sslrootcert", "sslcert", "sslkey"):
        value = getattr(cfg, key)
        if value:
            params[key] = value
    if replication:
        params["replication"] = "database"
    return make_conninfo(**params)


def connect_error(cfg: PostgresSourceConfig, exc: psycopg.Error) -> SourceError:
    """Classify a failed connect: bad credentials, database or TLS setup are fatal, the rest is retried."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return classify_connect_failure(
        msg, f"cannot connect to PostgreSQL {cfg.user}@{cfg.host}:{cfg.port}/{cfg.database}"
    )


def slot_problem(
    cfg: PostgresSourceConfig, slot: tuple[str, str, str, str | None] | None, checkpoint: PgCheckpoint | None
) -> SourceError | None:
    """Why ``run`` cannot use the replication slot, or None (it exists and fits, or it will be created).

    ``slot``: its (plugin, slot_type, database, wal_status) from pg_replication_slots, None when missing.
    ``cdcstream check`` reports exactly this, so the two never disagree."""
    name = cfg.slot_name
    if is_loading(checkpoint) and not load_started(checkpoint):
        checkpoint = None  # a load intent only: nothing was acknowledged from any slot (start() drops it)
    if slot is None:
        if checkpoint is not None:
            return SourceError(
                f"replication slot {name!r} does not exist, but a checkpoint at LSN "
                f"{checkpoint.get('lsn')} does: the slot was dropped (or this is another server), so "
                "changes committed after the checkpoint may be lost. Recovery options: (1) if this is "
                "the wrong server or database, fix the config; (2) accept the gap: delete the checkpoint "
                "file and start again (a new slot is created and capture restarts from now); (3) re-sync "
                "the target with a full load. cdcstream never creates a fresh slot silently when a "
                "checkpoint exists."
            )
        if not cfg.create_slot:
            return SourceError(
                f"replication slot {name!r} does not exist and create_slot is off. Create it with: "
                f"SELECT pg_create_logical_replication_slot('{name}', 'pgoutput');"
            )
        return None
    plugin, slot_type, database, wal_status = slot
    if slot_type != "logical" or plugin != "pgoutput":
        return SourceError(
            f"replication slot {name!r} exists but is a {slot_type} slot with plugin {plugin!r}; "
            "cdcstream needs a logical slot using pgoutput. Use another slot_name or drop it."
        )
    if database != cfg.database:
        return SourceError(
            f"replication slot {name!r} belongs to database {database!r}, not {cfg.database!r}; "
            "slot names are cluster-wide: choose another slot_name."
        )
    if wal_status == "lost":
        return SourceError(
            f"replication slot {name!r} is invalidated (wal_status 'lost'): the server removed WAL it "
            "still needed (max_slot_wal_keep_size). Changes since the checkpoint are lost. Recovery: "
            f"drop the slot (SELECT pg_drop_replication_slot('{name}');), delete the checkpoint and "
            "re-sync with a full load."
        )
    return None


class PostgresSource(SourceBase[PgCheckpoint]):
    """A :class:`cdcstream.sources.Source` reading one PostgreSQL database through a logical slot."""

    def __init__(
        self,
        cfg: PostgresSourceConfig,
        *,
        selector: Callable[[str, str], bool] | None = None,
        selection: list[dict[str, Any]] | None = None,
        no_hex_prefix: bool = False,
        migration_type: str = "cdc",
        full_load: FullLoadConfig | None = None,
        key_ranges: KeyRangesOf | None = None,
        offload: Offload | None = None,
        adopt_command: str = "cdcstream adopt-checkpoint --config <config file>",
    ) -> None:
        super().__init__(
            f"postgres:{cfg.database}",
            reconnect_max_delay=cfg.reconnect_max_delay,
            migration_type=migration_type,
            full_load=full_load,
            key_ranges=key_ranges,
            offload=offload,
        )
        self.cfg = cfg
        self._adopt_command = adopt_command  # quoted when a checkpoint file without an owner cannot be verified
        self._selector = selector
        # The selection as regexes for DDL capture (publication.register_selection): every table without one.
        self._selection = [EVERY_TABLE] if selection is None else selection
        self._ddl_registered = False  # DDL capture adds new selected tables to the publication
        self._uncaptured: dict[str, Uncaptured] = {}  # selected tables the publication does not cover, by name
        self._m_uncaptured = metrics.SOURCE_UNCAPTURED_TABLES.labels(self._label)
        self._reload_point: int | None = None  # the running reload's consistent point P
        self.types = TypeRegistry(no_hex_prefix=no_hex_prefix, json_as=cfg.json_as, hstore_as=cfg.hstore_as)
        self._decoder = Decoder(selector=selector, types=self.types)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._repl: ReplicationConnection | None = None
        self._acked = 0
        self._identity: PgCheckpoint = {}  # system_id and timeline of the server, from IDENTIFY_SYSTEM
        self._sent_flush = -1
        self._last_status = 0.0
        self._superuser = False
        self._tasks: list[asyncio.Task[None]] = []
        self._m_disconnects = metrics.ERRORS.labels("receiving", "SourceConnectionError")
        # Monotonic time the reader last went round its loop (at least every second while streaming, data or
        # not): the pipeline's watchdog tells an idle source from a wedged one with it.
        self.alive_at = time.monotonic()
        self._log = log.bind(source=self._label, slot=cfg.slot_name, publication=cfg.publication)

    # ------------------------------------------------------------------------------------------------------
    # start: checks, publication, slot, replication
    # ------------------------------------------------------------------------------------------------------
    async def start(self, stored: Checkpoint | None, *, owned: bool = True) -> None:
        """``owned``: the checkpoint file records this task and slot as its owner (resume.py: only such a file
        may move the slot past its confirmed_flush_lsn)."""
        checkpoint = cast(PgCheckpoint | None, stored)  # another engine's position fails the checks below
        if self.migration_type == "full-load":
            await self._start_full_load_only(checkpoint)
            return
        start_lsn = 0
        if load_completed(checkpoint):
            assert checkpoint is not None
            self._load_extra = {"load": checkpoint["load"]}
        # A reload requested and not finished before the last stop is done again.
        self._reloads = PendingReloads(checkpoint, label=self._label)
        self._load_extra.update(self._reloads.extra())
        # A load intent without a snapshot yet: the previous start died before its first load checkpoint, so
        # a slot it may have created carries nothing acknowledged (it is dropped and made again below).
        intent_only = is_loading(checkpoint) and not load_started(checkpoint)
        if intent_only:
            checkpoint = None
        if (
            self.migration_type == "full-load-and-cdc"
            and checkpoint is not None
            and not is_loading(checkpoint)
            and not load_completed(checkpoint)
        ):
            raise SourceError(
                f"migration_type is full-load-and-cdc but the checkpoint (LSN {checkpoint.get('lsn')}) was written "
                "by a cdc task: no full load is recorded, and loading now would not match the stream's position. "
                'Options: (1) keep streaming with migration_type = "cdc"; (2) re-copy tables while streaming with '
                "cdcstream reload --table schema.table; (3) start over with a full load: move the checkpoint file "
                f"away and drop the slot (SELECT pg_drop_replication_slot('{self.cfg.slot_name}');)."
            )
        if checkpoint is not None:
            try:
                start_lsn = lsn_of(checkpoint)
            except (KeyError, ValueError):
                raise SourceError(
                    f"checkpoint {checkpoint!r} is not a PostgreSQL position (expected lsn X/Y)"
                ) from None
        self._acked = start_lsn
        self._decoder.last_position = start_lsn
        self._decoder.received_lsn = start_lsn
        conn = await self._normal_connection()
        await self._check_server(conn)
        await self._ensure_publication(conn)
        await self._load_primary_keys(conn)
        await self._check_ddl_capture(conn)
        await self._check_tables()
        repl = await self._open_replication()
        try:
            await self._check_identity(repl, checkpoint, start_lsn if checkpoint is not None else None, owned=owned)
            slot_exists = await self._check_slot(conn, checkpoint)
        except BaseException:
            repl.close()
            raise
        wants_load = self.migration_type == "full-load-and-cdc" and (checkpoint is None or is_loading(checkpoint))
        if wants_load and intent_only and slot_exists:
            self._log.warning("dropping the slot of a full load interrupted before its first checkpoint")
            await self._drop_slot(conn)
            slot_exists = False
        if wants_load and checkpoint is None and slot_exists:
            repl.close()
            raise SourceError(
                f"migration_type is full-load-and-cdc and replication slot {self.cfg.slot_name!r} already exists, "
                "but there is no checkpoint saying a full load happened: loading now would not match the slot's "
                "position. Options: (1) drop the slot (SELECT pg_drop_replication_slot("
                f"'{self.cfg.slot_name}');) and start again for a full load followed by CDC; (2) set "
                'migration_type = "cdc" to stream from the slot without a load; (3) use another slot_name.'
            )
        if wants_load:
            # The load engine creates the slot with an exported snapshot (fresh) or resumes from the stored
            # consistent point; the replication stream starts after the last load row (changes()).
            repl.close()
            await self._prepare_load(checkpoint, with_slot=True)
            self._started = True
            self._start_tasks()
            return
        if not slot_exists:
            point = await repl.create_slot(self.cfg.slot_name)
            self._log.info("replication slot created", consistent_point=point)
        await repl.start_replication(self.cfg.slot_name, format_lsn(start_lsn), self.cfg.publication)
        self._repl = repl
        self._last_checkpoint = {"lsn": format_lsn(start_lsn)}
        self._m_connected.set(1)
        self._log.info("replication started", start_lsn=format_lsn(start_lsn))
        self._started = True
        self._start_tasks()

    def _start_tasks(self) -> None:
        self._last_status = time.monotonic()
        self._tasks.append(asyncio.create_task(self._status_loop(), name="pg-status"))
        if self.cfg.heartbeat_interval > 0:
            self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="pg-heartbeat"))
        if self.cfg.table_check_interval > 0:
            self._tasks.append(asyncio.create_task(self._tables_loop(), name="pg-tables"))

    async def _check_ddl_capture(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Say once at start when DDL capture is off (DROP TABLE and ALTER then leave no control record), and how
        tables created while CDC runs get into the publication: FOR ALL TABLES, DDL capture (registering the
        mapping's selection with it), or not at all (then each is named when it appears, _check_tables)."""
        rows = await (await conn.execute(ddl.INSTALLED_SQL, (list(ddl.TRIGGERS),))).fetchall()
        installed = len(rows) == len(ddl.TRIGGERS)
        if not installed:
            self._log.warning(
                "DDL capture is not installed in this database: DROP TABLE and ALTER TABLE produce no control "
                "records (rows and TRUNCATE are captured). Enable it once, as a superuser: cdcstream setup "
                "postgres-ddl --config <file> --user postgres"
            )
        pub = self.cfg.publication
        if await all_tables(conn, pub):
            self._log.info("new tables are captured: the publication is FOR ALL TABLES")
            return
        reason = "DDL capture is not installed"
        if installed:
            try:
                outcome = await register_selection(conn, pub, self._selection)
            except psycopg.Error as exc:
                reason = (
                    f"DDL capture cannot add tables to it ({str(exc).strip().splitlines()[0]}; re-running "
                    "cdcstream setup postgres-ddl --config <file> installs what this version needs and registers "
                    "the selection as a superuser)"
                )
            else:
                self._ddl_registered = True
                self._log.info(
                    "new tables are captured: DDL capture adds each new selected table to the publication in the "
                    "transaction that creates it",
                    registration=outcome,
                )
                return
        schemas = await published_schemas(conn, pub)
        self._log.warning(
            f"new tables are NOT captured automatically: publication {pub!r} lists its tables"
            + (f" (and those of the schemas {', '.join(schemas)})" if schemas else "")
            + f" and {reason}. A "
            "selected table created while CDC runs is named in the log, in /status and in "
            "cdcstream_source_uncaptured_tables, and its changes are missed until it is added to the publication. "
            'Fix: cdcstream setup postgres-ddl --config <file> --user postgres (as a superuser; README, "New '
            'tables"), or a publication FOR ALL TABLES / FOR TABLES IN SCHEMA'
        )

    async def _check_tables(self) -> None:
        """Name every selected table whose changes cannot reach the stream (publication.uncaptured_tables) once
        when it is found, and say when one is captured again; the gauge holds how many there are. Best effort,
        like the heartbeat: a failure is logged and the next interval tries again."""
        try:
            conn = await self._normal_connection()
            found = {
                u.name: u
                for u in await uncaptured_tables(
                    conn, self.cfg.publication, self._selector, ddl_capture=self._ddl_registered
                )
            }
        except (psycopg.Error, SourceError) as exc:
            self._log.warning("table check failed", reason=str(exc).splitlines()[0] if str(exc) else repr(exc))
            if self._conn is not None and not isinstance(exc, SourceError):
                await self._conn.close()
                self._conn = None
            return
        for name, u in found.items():
            if name not in self._uncaptured:
                self._log.warning(
                    "selected table is not captured: its changes cannot reach the stream",
                    table=name,
                    reason=u.reason,
                    fix=u.fix,
                )
        for name in self._uncaptured.keys() - found.keys():
            self._log.info(
                "table is captured now (changes made before are not in the stream: cdcstream reload --table)",
                table=name,
            )
        self._uncaptured = found
        self._m_uncaptured.set(len(found))

    async def _tables_loop(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.cfg.table_check_interval)
            await self._check_tables()

    async def _start_full_load_only(self, checkpoint: PgCheckpoint | None) -> None:
        """``full-load``: no slot, no publication, no replication; a snapshot exported from a normal
        transaction. The pipeline exits once every row is acknowledged."""
        await self._normal_connection()  # fail early (and retried) when the server is not reachable
        await self._prepare_load(checkpoint, with_slot=False)
        self._started = True

    async def _prepare_load(self, checkpoint: PgCheckpoint | None, *, with_slot: bool) -> None:
        """Open the load sessions (creating the slot with an exported snapshot on a fresh full-load-and-cdc)
        and plan the tables; the rows are read by changes()."""
        from cdcstream.sources.postgres.snapshot import PgLoadEngine

        fl = self._full_load_cfg
        engine = PgLoadEngine(
            build_conninfo(self.cfg, replication=False),
            build_conninfo(self.cfg, replication=True),
            slot_name=self.cfg.slot_name if with_slot else None,
            types=self.types,
            describe_types=self._describe_types,
            selector=self._selector,
            chunk_rows=fl.chunk_rows,
            buffer_size=fl.parallel_load_buffer_size,
            connect_timeout=self.cfg.connect_timeout,
        )
        self._load = FullLoad(
            engine,
            fl,
            label=self._label,
            checkpoint=checkpoint,
            base_checkpoint=self._identity.copy,
            ranges=self._key_ranges,
            offload=self._offload,
        )
        await self._load.open()
        if "lsn" in self._load.start_position:
            start = lsn_of(self._load.start_position)
            self._acked = start
            self._decoder.last_position = start
            self._decoder.received_lsn = start

    async def _check_identity(
        self, repl: ReplicationConnection, known: PgCheckpoint | None, lsn: int | None, *, owned: bool
    ) -> None:
        """Before streaming from ``lsn`` (at start: the checkpoint's, ``known`` its identity; after a reconnect:
        the last position yielded, ``known`` None for this run's own identity): is this the server, timeline and
        slot the position belongs to (resume.py)? A new timeline the position survived (a promotion after it)
        is logged and streaming goes on, which is correct only if the slot was carried over: if it was not,
        the missing-slot error applies."""
        known = known or self._identity
        conn = await self._normal_connection()
        timeline = known.get("timeline")
        server = await read_server_state(
            repl, conn, self.cfg.slot_name, timeline if isinstance(timeline, int) else None
        )
        if lsn is not None:
            where = f"{self.cfg.host}:{self.cfg.port}"
            slot = self.cfg.slot_name
            refusals = resume_refusals(
                lsn, known, server, owned=owned, slot=slot, where=where, adopt=self._adopt_command
            )
            if refusals:
                raise refusals[0].error()
        if known.get("timeline") not in (None, server.timeline):
            self._log.warning(
                "timeline changed: the server was promoted (failover) after the resume position; continuing on "
                "the new timeline, which is safe only if the replication slot was carried over",
                old_timeline=known.get("timeline"),
                timeline=server.timeline,
                resume_lsn=None if lsn is None else format_lsn(lsn),
            )
        self._identity = {"system_id": server.system_id, "timeline": server.timeline}
        self._set_extra()

    def _set_extra(self) -> None:
        self._decoder.checkpoint_extra = {**self._identity, **self._load_extra}

    async def _normal_connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                build_conninfo(self.cfg, replication=False), autocommit=True
            )
        except psycopg.Error as exc:
            raise connect_error(self.cfg, exc) from None
        return self._conn

    async def _check_server(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = await (await conn.execute("SELECT current_setting('wal_level')")).fetchone()
        wal_level = row[0] if row else "?"
        if wal_level != "logical":
            raise SourceError(
                f"PostgreSQL wal_level is {wal_level!r}, logical decoding needs 'logical'. Fix: "
                "ALTER SYSTEM SET wal_level = logical; then restart the server."
            )
        row = await (
            await conn.execute("SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user")
        ).fetchone()
        self._superuser = bool(row and row[0])
        if not (row and (row[0] or row[1])):
            raise SourceError(
                f"role {self.cfg.user!r} has neither REPLICATION nor superuser, needed for a replication "
                "slot. "
                f"Fix (as a superuser): ALTER ROLE {quote_ident(self.cfg.user)} WITH REPLICATION;"
            )

    async def _selected_tables(self, conn: psycopg.AsyncConnection[Any]) -> list[tuple[str, str]]:
        rows = await (await conn.execute(_USER_TABLES_SQL)).fetchall()
        sel = self._selector
        return [(s, t) for s, t in rows if sel is None or sel(s, t)]

    async def _ensure_publication(self, conn: psycopg.AsyncConnection[Any]) -> None:
        row = await (
            await conn.execute("SELECT puballtables FROM pg_publication WHERE pubname = %s", (self.cfg.publication,))
        ).fetchone()
        if row is not None:
            return
        tables: list[tuple[str, str]] | None
        if self._selector is None and self._superuser:
            tables = None
        else:
            tables = await self._selected_tables(conn)
        stmt = publication_sql(self.cfg.publication, tables)
        if not self.cfg.create_publication:
            raise SourceError(
                f"publication {self.cfg.publication!r} does not exist in database {self.cfg.database!r} and "
                f"create_publication is off. Ask a DBA to run (as the tables' owner or a superuser): {stmt}"
            )
        try:
            await conn.execute(stmt.encode())
        except psycopg.errors.InsufficientPrivilege as exc:
            full = publication_sql(self.cfg.publication, None)
            raise SourceError(
                f"cannot create publication {self.cfg.publication!r}: {str(exc).splitlines()[0]}. "
                f"A DBA should run (as the tables' owner or a superuser): {stmt}"
                + ("" if tables is None else f"  (or, as a superuser, to capture every table: {full})")
            ) from None
        except psycopg.Error as exc:
            raise SourceError(
                f"cannot create publication {self.cfg.publication!r}: {str(exc).splitlines()[0]}. SQL was: {stmt}"
            ) from None
        self._log.info("publication created", tables="ALL" if tables is None else len(tables))
        if tables == []:
            self._log.warning("publication created without tables: nothing is captured until tables are added")

    async def _load_primary_keys(self, conn: psycopg.AsyncConnection[Any]) -> None:
        rows = await (await conn.execute(_PRIMARY_KEYS_SQL)).fetchall()
        self._decoder.primary_keys = {(s, t): tuple(cols) for s, t, cols in rows}

    async def _check_slot(self, conn: psycopg.AsyncConnection[Any], checkpoint: PgCheckpoint | None) -> bool:
        row = await (
            await conn.execute(
                "SELECT plugin, slot_type, database, wal_status FROM pg_replication_slots WHERE slot_name = %s",
                (self.cfg.slot_name,),
            )
        ).fetchone()
        problem = slot_problem(self.cfg, row, checkpoint)
        if problem is not None:
            raise problem
        return row is not None

    async def _drop_slot(self, conn: psycopg.AsyncConnection[Any]) -> None:
        try:
            await conn.execute("SELECT pg_drop_replication_slot(%s)", (self.cfg.slot_name,))
        except psycopg.errors.ObjectInUse:
            raise SourceConnectionError(f"replication slot {self.cfg.slot_name!r} is still in use") from None
        except psycopg.Error as exc:
            raise SourceError(f"cannot drop replication slot {self.cfg.slot_name!r}: {str(exc).strip()}") from None

    async def _open_replication(self) -> ReplicationConnection:
        repl = ReplicationConnection(
            build_conninfo(self.cfg, replication=True), connect_timeout=self.cfg.connect_timeout
        )
        await repl.connect()
        return repl

    # ------------------------------------------------------------------------------------------------------
    # changes
    # ------------------------------------------------------------------------------------------------------
    async def changes(self) -> AsyncGenerator[Sequence[Item], None]:
        if not self._started:
            raise SourceError("PostgresSource.changes() called before start()")
        if self._load is not None:
            load = self._load
            async for items in load.run():
                yield items
            # Every later checkpoint says the load is done, so a restart neither reloads nor forgets it.
            self._load_extra = {"load": completed_load(len(load.status()["tables"]), load.rows)}
            self._set_extra()
            final_checkpoint = self._decoder.checkpoint_extra.copy()
            if self.migration_type != "full-load":
                final_checkpoint["lsn"] = format_lsn(self._decoder.last_position)
            final = Marker(final_checkpoint, None, False)
            self._last_checkpoint = final_checkpoint
            yield [final]
            if self.migration_type == "full-load":
                return
            self._log.info(
                "full load done: streaming changes from the slot's consistent point",
                start_lsn=format_lsn(self._decoder.last_position),
            )
        decoder = self._decoder
        while not self._closed:
            self.alive_at = time.monotonic()
            if self._reloads and self._reload is None and not decoder.in_transaction and not await self._begin_reload():
                yield [self._position_marker()]  # the failed request leaves the checkpoint promptly
                continue
            try:
                repl = self._repl
                if repl is None or not repl.streaming:
                    repl = await self._reconnect()
                    if repl is None:
                        return
                frames = await repl.read_batch(max_wait=1.0)
                if frames:
                    # Describe new types before decoding the rows that use them (the decoder is sans-IO).
                    oids = decoder.pending_type_oids(frames)
                    if oids:
                        await self._describe_types(oids)
            except SourceConnectionError as exc:
                if self._closed:
                    return
                self._disconnected(str(exc))
                continue
            if not frames:
                continue
            items = decoder.feed(frames)
            lost: str | None = None
            while decoder.stalled is not None:
                # A composite changed by ALTER TYPE without a new Relation message: describe it, then go on.
                oids, rest = decoder.stalled
                decoder.stalled = None
                try:
                    await self._describe_types(oids)
                except SourceConnectionError as exc:
                    lost = str(exc)  # yield what was decoded (its markers moved the resume position), reconnect
                    break
                items.extend(decoder.feed(rest))
            self._after_batch(items)
            if decoder.reply_requested:
                decoder.reply_requested = False
                await self._send_status(reply=False)
            if self._reload_point is not None:
                split = self._reload_split(items)
                if split is not None:
                    if split:
                        self._remember(items[:split])
                        yield items[:split]
                    async for batch in self._finish_reload():
                        yield batch
                    items = items[split:]
            if items:
                self._remember(items)
                yield items
            if lost is not None:
                self._disconnected(lost)

    # ------------------------------------------------------------------------------------------------------
    # reload --table: re-copy one table while CDC runs
    # ------------------------------------------------------------------------------------------------------
    async def request_reload(self, name: str) -> str:
        """Queue a consistent re-copy of ``schema.table`` (``POST /reload``, ``cdcstream reload``).

        The reader pauses at a transaction boundary, a temporary slot exports a snapshot at consistent point P,
        the stream goes on up to the last transaction committed before P, the table's rows follow as ``load``
        records, then the changes from P on. The request is in every checkpoint until the rows are out, so a
        crash in between redoes it.
        """
        await self._validate_reload(name)
        added, answer = self._reloads.add(name)
        if added:
            self._load_extra.update(self._reloads.extra())
            self._set_extra()
        return answer

    async def _validate_reload(self, name: str) -> tuple[str, str]:
        async def unreadable(schema: str, table: str) -> str | None:
            conn = await self._normal_connection()
            return await copy_problem(conn, self.cfg.user, self.cfg.database, schema, table)

        return await validate_reload(
            name,
            migration_type=self.migration_type,
            initial_load=self._load,
            selector=self._selector,
            unreadable=unreadable,
        )

    def _remember(self, items: Sequence[Item]) -> None:
        for item in reversed(items):
            if isinstance(item, Marker):
                self._last_checkpoint = cast(PgCheckpoint, item.checkpoint)  # a marker of ours
                return

    async def _begin_reload(self) -> bool:
        """Start the pending reload (its snapshot, at the next transaction boundary). False when it cannot
        start: it is then marked failed (PendingReloads.pop) and CDC goes on."""
        try:
            await self._open_reload()
        except Exception as exc:  # whatever stops this copy must not stop the stream (or every later start)
            reload, self._reload, self._reload_point = self._reload, None, None
            if reload is not None:
                await reload.engine.close()
            self._end_reload(error=exc)
            return False
        return True

    async def _open_reload(self) -> None:
        from cdcstream.sources.postgres.snapshot import PgLoadEngine

        name = self._reloads.current
        schema, table = await self._validate_reload(name)
        fl = self._full_load_cfg
        engine = PgLoadEngine(
            build_conninfo(self.cfg, replication=False),
            build_conninfo(self.cfg, replication=True),
            slot_name=f"{self.cfg.slot_name}_reload"[:63],
            temporary=True,
            types=self.types,
            describe_types=self._describe_types,
            selector=lambda s, t: (s, t) == (schema, table),
            chunk_rows=fl.chunk_rows,
            buffer_size=fl.parallel_load_buffer_size,
            connect_timeout=self.cfg.connect_timeout,
        )
        # Markers inside the reload are plain CDC checkpoints at the last position yielded before it (never past
        # the changes held back for after the rows), still naming the pending reload.
        self._reload = FullLoad.for_reload(
            engine,
            fl,
            label=self._label,
            base_checkpoint=lambda: self._last_checkpoint | self._decoder.checkpoint_extra,
            ranges=self._key_ranges,
            offload=self._offload,
        )
        await self._reload.open()
        if not self._reload.covers(name):
            raise SourceError(f"reload: table {name} disappeared before its snapshot was taken")
        point = lsn_of(self._reload.start_position)
        self._reload_point = point
        # WAL past P even on an idle server, so the reader reaches the split point.
        conn = await self._normal_connection()
        await conn.execute(
            sql.SQL("SELECT pg_logical_emit_message(false, {}, {})").format(
                sql.Literal(HEARTBEAT_PREFIX + ".reload"), sql.Literal(name)
            )
        )
        self._log.info("reload: snapshot taken, streaming up to its point", table=name, point=format_lsn(point))

    def _reload_split(self, items: list[Item]) -> int | None:
        """Index of the first item at or after the reload's consistent point P, or None while all are before
        it (and the reader has not passed P between transactions)."""
        point = self._reload_point
        assert point is not None
        for i, item in enumerate(items):
            if isinstance(item, Marker):
                if lsn_of(item.checkpoint) > point:
                    return i
            elif isinstance(item, ChangeEvent) and parse_lsn(item.stream_position[:17]) >= point:  # commit LSN
                return i
        if self._decoder.received_lsn >= point and not self._decoder.in_transaction:
            return len(items)
        return None

    async def _finish_reload(self) -> AsyncIterator[Sequence[Item]]:
        """The reload's rows, then a marker that no longer names it. A copy that fails half-way is marked
        failed the same way (its rows so far are in the stream, harmlessly) and CDC goes on."""
        load = self._reload
        assert load is not None
        try:
            async for batch in load.run():
                yield batch
        except Exception as exc:  # the copy only: the held-back changes after P are still to be yielded
            self._end_reload(rows=load.rows, error=exc)
        else:
            self._end_reload(rows=load.rows)
        yield [self._position_marker()]

    def _end_reload(self, *, rows: int | None = None, error: BaseException | None = None) -> None:
        self._reloads.pop(rows=rows, error=error)
        self._load_extra = self._reloads.stamp(self._load_extra)
        self._set_extra()
        self._reload = None
        self._reload_point = None

    def _position_marker(self) -> Marker:
        """A checkpoint at the last position yielded, naming exactly the reloads pending now."""
        return Marker(self._reloads.stamp(self._last_checkpoint | self._decoder.checkpoint_extra), None, False)

    async def _describe_types(self, oids: set[int]) -> None:
        """Read ``pg_type`` for these OIDs (and what they reference) into the type registry.

        A connection failure raises SourceConnectionError, so the batch is dropped and re-read after the
        reconnect (the server re-sends from the last yielded commit). A type the catalog no longer has (dropped
        since the change was written) is rendered as its text, with a warning.
        """
        try:
            conn = await self._normal_connection()
            todo = set(oids)
            rounds = 0
            while todo and rounds < 16:
                rounds += 1
                rows = await (await conn.execute(_TYPES_SQL, (sorted(todo),))).fetchall()
                found = [
                    PgType(
                        oid, ns, name, kind, bool(is_array), elem, base, delim, tuple(zip(anames, atypes, strict=True))
                    )
                    for oid, ns, name, kind, is_array, elem, base, delim, anames, atypes in rows
                ]
                gone = todo - {t.oid for t in found}
                if gone:
                    self._log.warning("types not in the catalog, rendered as text", oids=sorted(gone))
                    found += [PgType(oid, "", str(oid), "b", False) for oid in gone]
                self.types.add(found)
                todo = self.types.missing(oids)
            self._decoder.refresh_plans()
        except psycopg.OperationalError as exc:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            raise SourceConnectionError(f"reading type descriptions failed: {str(exc).strip()}") from None
        except psycopg.Error as exc:
            raise SourceError(f"reading type descriptions from pg_type failed: {str(exc).strip()}") from None

    def _disconnected(self, reason: str) -> None:
        if self._repl is not None:
            self._repl.close()
            self._repl = None
        self._decoder.reset_transaction()
        self._m_connected.set(0)
        self._m_disconnects.inc()
        self._log.warning(
            "replication connection lost", reason=reason, resume_lsn=format_lsn(self._decoder.last_position)
        )

    async def _reconnect(self) -> ReplicationConnection | None:
        while not self._closed:
            self.alive_at = time.monotonic()  # retrying through a database outage is alive, not hung
            delay = self._backoff.next()
            self._m_reconnects.inc()
            start = format_lsn(self._decoder.last_position)
            self._log.info("reconnecting", delay=round(delay, 3), resume_lsn=start)
            await asyncio.sleep(delay)
            if self._closed:
                return None
            repl: ReplicationConnection | None = None
            try:
                repl = await self._open_replication()
                await self._check_identity(repl, None, self._decoder.last_position, owned=True)
                await repl.start_replication(self.cfg.slot_name, start, self.cfg.publication)
            except SourceConnectionError as exc:
                if repl is not None:
                    repl.close()
                self._log.warning("reconnect failed", reason=str(exc))
                continue
            except SourceError:
                if repl is not None:
                    repl.close()
                raise
            self._repl = repl
            self._backoff.reset()
            self._m_connected.set(1)
            self._log.info("replication reconnected", start_lsn=start)
            return repl
        return None

    def _after_batch(self, items: list[Item]) -> None:
        decoder = self._decoder
        now = time.time()
        self._m_last_event.set(now)
        if decoder.touched:
            for plan in decoder.touched:
                children = plan.metric_children
                counts = plan.counts
                for i, op in enumerate(OPS):
                    n = counts[i]
                    if not n:
                        continue
                    counts[i] = 0
                    child = children.get(op)
                    if child is None:
                        child = children[op] = metrics.SOURCE_EVENTS.labels(
                            self._label, metrics.table_value(plan.table.schema, plan.table.table), op.value
                        )
                    child.inc(n)
            decoder.touched.clear()
        if decoder.ddl_skipped:
            self._m_ddl_skipped.inc(decoder.ddl_skipped)
            decoder.ddl_skipped = 0
        if decoder.transactions:
            self._m_transactions.inc(decoder.transactions)
            decoder.transactions = 0
            if decoder.last_commit_epoch is not None:
                self._set_read_lag(max(0.0, now - decoder.last_commit_epoch))
                self._m_commit_ts.set(decoder.last_commit_epoch)
        if items:
            last = items[-1]
            if isinstance(last, Marker) and not last.transaction:
                self._set_read_lag(0)

    # ------------------------------------------------------------------------------------------------------
    # acknowledgements and status updates
    # ------------------------------------------------------------------------------------------------------
    async def ack(self, checkpoint: Checkpoint) -> None:
        if self.migration_type == "full-load":
            return  # nothing upstream to release: no slot
        try:
            lsn = lsn_of(checkpoint)
        except (KeyError, ValueError):
            raise SourceError(f"ack with a checkpoint that is not a PostgreSQL position: {checkpoint!r}") from None
        if lsn <= self._acked:
            return  # monotonic: an older (or repeated) ack never moves flush_lsn backwards
        self._acked = lsn
        if time.monotonic() - self._last_status >= PROMPT_ACK_INTERVAL:
            await self._send_status()

    async def _send_status(self, *, reply: bool = False) -> None:
        repl = self._repl
        if repl is None or not repl.streaming:
            return
        flush = self._acked
        write = max(flush, self._decoder.received_lsn)
        try:
            await repl.send_status(write, flush, flush, reply=reply)
        except SourceConnectionError as exc:
            # The reader notices the broken connection too and reconnects; nothing to do here.
            self._log.debug("status update failed", reason=str(exc))
            return
        self._last_status = time.monotonic()
        self._sent_flush = flush

    async def _status_loop(self) -> None:
        """Status updates every status_interval (keeps wal_sender_timeout away even when nobody reads) and
        shortly after an ack that could not be sent at once."""
        tick = min(0.25, self.cfg.status_interval)
        while not self._closed:
            await asyncio.sleep(tick)
            since = time.monotonic() - self._last_status
            if since >= self.cfg.status_interval or (self._acked > self._sent_flush and since >= PROMPT_ACK_INTERVAL):
                await self._send_status()

    async def _heartbeat_loop(self) -> None:
        interval = self.cfg.heartbeat_interval
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                conn = await self._normal_connection()
                now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                await conn.execute(
                    sql.SQL("SELECT pg_logical_emit_message(true, {}, {})").format(
                        sql.Literal(HEARTBEAT_PREFIX), sql.Literal(now)
                    )
                )
            except (psycopg.Error, SourceError) as exc:
                # Heartbeats are best effort: a failure is logged and retried at the next interval.
                self._log.warning("heartbeat failed", reason=str(exc).splitlines()[0] if str(exc) else repr(exc))
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None

    async def lag_probe(self) -> dict[str, float | None]:
        """Byte lag of our slot, on the normal connection (polled by telemetry/probe.py): WAL between the
        confirmed flush position and the server's current LSN (``lag_bytes``), WAL the slot pins
        (``retained_wal_bytes``, from restart_lsn) and ``safe_wal_bytes`` (PG >= 13 ``safe_wal_size``; None
        when max_slot_wal_keep_size is unlimited)."""
        conn = await self._normal_connection()
        row = await (
            await conn.execute(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::float8, "
                "(pg_current_wal_lsn() - restart_lsn)::float8, safe_wal_size::float8 "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (self.cfg.slot_name,),
            )
        ).fetchone()
        if row is None:
            return {}
        lag, retained, safe = row
        return {"lag_bytes": lag, "retained_wal_bytes": retained, "safe_wal_bytes": safe}

    # ------------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        d = self._decoder
        return {
            "engine": "postgres",
            "database": self.cfg.database,
            "slot": self.cfg.slot_name,
            "publication": self.cfg.publication,
            "connected": (self._repl is not None and self._repl.streaming)
            or (self._load is not None and not self._load.finished),
            "received_lsn": format_lsn(d.received_lsn),
            "acked_lsn": format_lsn(self._acked),
            "resume_lsn": format_lsn(d.last_position),
            "last_commit_time": d.last_commit_time,
            "full_load": None if self._load is None else self._load.status(),
            "reload": self._reloads.status(self._reload),
            "uncaptured_tables": [u.to_json() for u in self._uncaptured.values()],
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shutting down: the tasks' own errors were logged when they happened.
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        if self._repl is not None:
            if self._repl.streaming:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await self._send_status()
            self._repl.close()
            self._repl = None
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        self._m_connected.set(0)
        self._log.info("source closed", acked_lsn=format_lsn(self._acked))
