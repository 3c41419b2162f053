"""``PostgresSource``: committed changes from PostgreSQL logical decoding (pgoutput), with reconnects.

Moving parts, each in a module of its own:

* a normal connection (:class:`~.connection.Session`) for the checks and the setup at start (:mod:`.setup`:
  server, role, publication, DDL capture; :mod:`.slot`), heartbeats, table checks and type descriptions;
* a replication connection (:mod:`.replication`) streaming pgoutput into the sans-IO :mod:`.decoder`, whose new
  types are described from the catalogue (:mod:`.catalog`) before their rows are decoded;
* background tasks: standby status updates and heartbeats (:mod:`.heartbeat`), and a check every
  ``table_check_interval`` seconds naming each selected table the publication does not cover (:mod:`.monitor`);
* a full load before CDC (:mod:`.snapshot`), and ``reload --table`` while CDC runs (:mod:`.reload`, driven by
  the engine-neutral ``sources/reload.py``).

When the replication connection drops, :meth:`changes` reconnects with backoff forever and restarts from the
end LSN of the last commit it yielded; the server re-sends everything after its confirmed flush position, so a
restart yields duplicates at worst, never a gap. Before streaming, at start and after every reconnect, the
server, timeline and slot are checked against the position (:mod:`.resume`). About 500 lines as one class: what
is left here is the start, the stream and the reconnects, which share the connections' state.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, cast

import psycopg
import structlog

from cdcstream.changes import Item, Marker
from cdcstream.checkpoints.model import Checkpoint, PgCheckpoint, is_loading, load_started
from cdcstream.config import FullLoadConfig, PostgresSourceConfig
from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.runtime.stopping import cancel_and_wait
from cdcstream.sources.base import SourceBase
from cdcstream.sources.fullload import FullLoad, KeyRangesOf
from cdcstream.sources.loadengine import Offload
from cdcstream.sources.postgres import fused
from cdcstream.sources.postgres.catalog import primary_keys, read_types
from cdcstream.sources.postgres.connection import Session, build_conninfo
from cdcstream.sources.postgres.decoder import OPS, Decoder, FuseHook
from cdcstream.sources.postgres.failover import (
    ensure_failover_slot,
    in_recovery,
    wants_failover_slot,
    warn_standby_slots,
    watch_server,
    watch_standby_slots,
)
from cdcstream.sources.postgres.heartbeat import StandbyStatus, heartbeat_loop
from cdcstream.sources.postgres.monitor import UncapturedTables
from cdcstream.sources.postgres.pgoutput import format_lsn
from cdcstream.sources.postgres.publication import EVERY_TABLE
from cdcstream.sources.postgres.reload import PgReloads, lsn_of, reload_split
from cdcstream.sources.postgres.replication import ReplicationConnection
from cdcstream.sources.postgres.resume import check_position
from cdcstream.sources.postgres.setup import check_ddl_capture, check_server, ensure_publication
from cdcstream.sources.postgres.slot import (
    cdc_checkpoint,
    check_slot,
    drop_slot,
    no_load_recorded,
    slot_lag,
    slot_without_load,
)
from cdcstream.sources.postgres.snapshot import PgLoadEngine
from cdcstream.sources.postgres.values import TypeRegistry
from cdcstream.sources.reload import TableReloads
from cdcstream.telemetry import metrics

log = structlog.get_logger(__name__)


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
        fuse: FuseHook | None = None,
        runs: bool = False,
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
        self._log = log.bind(source=self._label, slot=cfg.slot_name, publication=cfg.publication)
        self.types = TypeRegistry(no_hex_prefix=no_hex_prefix, json_as=cfg.json_as, hstore_as=cfg.hstore_as)
        # fuse: the mapping's half of the compiled fused row path (fused.py); without it every row is pure.
        # runs: compiled rows as FusedRows runs (their consumer maps in process; wiring.py decides).
        self._decoder = Decoder(selector=selector, types=self.types, fuse=fuse, runs=runs)
        self._session = Session(cfg)
        self._repl: ReplicationConnection | None = None
        self._status = StandbyStatus(
            lambda: self._repl, lambda: self._decoder.received_lsn, interval=cfg.status_interval, log=self._log
        )
        self._tables = UncapturedTables(self._session, cfg.publication, selector, label=self._label, log=self._log)
        self._identity: PgCheckpoint = {}  # system_id and timeline of the server, from IDENTIFY_SYSTEM
        self._server_labels: tuple[str, ...] | None = None  # of cdcstream_source_server_info
        self._standby = False  # the server read is a hot standby (logical decoding on a standby, 16+)
        self._server_version = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._m_disconnects = metrics.ERRORS.labels("receiving", "SourceConnectionError")
        # Monotonic time the reader last went round its loop (at least every second while streaming, data or
        # not): the pipeline's watchdog tells an idle source from a wedged one with it.
        self.alive_at = time.monotonic()
        # True while the consumer holds the batch last yielded (the sink is full: the daemon holds the stream
        # back itself); the stall watch counts only time the reader is waiting on the server.
        self._held = False
        fl = self._full_load_cfg
        self._load_engine = functools.partial(
            PgLoadEngine,
            build_conninfo(cfg, replication=False),
            build_conninfo(cfg, replication=True),
            types=self.types,
            describe_types=self._describe_types,
            chunk_rows=fl.chunk_rows,
            buffer_size=fl.parallel_load_buffer_size,
            connect_timeout=cfg.connect_timeout,
        )
        self._reloads: TableReloads[PgCheckpoint, int] = TableReloads(
            PgReloads(cfg, self._session, self._decoder, self._load_engine, self._log),
            label=self._label,
            migration_type=migration_type,
            selector=selector,
            initial_load=lambda: self._load,
            new_copy=self._new_copy,
        )

    # ------------------------------------------------------------------------------------------------------
    # start: checks, publication, slot, replication
    # ------------------------------------------------------------------------------------------------------
    async def start(self, stored: Checkpoint | None, *, owned: bool = True) -> None:
        """``owned``: the checkpoint file records this task and slot as its owner (resume.py: only such a file
        may move the slot past its confirmed_flush_lsn)."""
        checkpoint = cast(PgCheckpoint | None, stored)  # another engine's position fails the checks below
        if self.migration_type == "full-load":
            # No slot, no publication, no replication: a snapshot exported from a normal transaction. The
            # pipeline exits once every row is acknowledged.
            await self._session.get()  # fail early (and retried) when the server is not reachable
            await self._load_from(checkpoint, slot=None)
            self._started = True
            return
        self._restore_load(checkpoint)
        self._reloads.restore(checkpoint)  # a reload requested and not finished before the last stop is redone
        # A load intent without a snapshot yet: the previous start died before its first load checkpoint, so
        # a slot it may have created carries nothing acknowledged (it is dropped and made again below).
        intent_only = is_loading(checkpoint) and not load_started(checkpoint)
        if intent_only:
            checkpoint = None
        start_lsn = self._start_position(checkpoint)
        conn = await self._session.get()
        superuser = await check_server(conn, self.cfg)
        self._standby = await in_recovery(conn)
        self._server_version = conn.info.server_version
        await ensure_publication(conn, self.cfg, self._selector, superuser=superuser, log=self._log)
        self._decoder.primary_keys = await primary_keys(conn)
        self._tables.ddl_capture = await check_ddl_capture(conn, self.cfg.publication, self._selection, self._log)
        await self._tables.check()
        wants_load = self.migration_type == "full-load-and-cdc" and (checkpoint is None or is_loading(checkpoint))
        repl = await self._open_replication()
        try:
            await self._check_identity(repl, checkpoint, start_lsn if checkpoint is not None else None, owned=owned)
            slot_exists = await check_slot(conn, self.cfg, checkpoint)
            if not wants_load:
                await self._start_replication(repl, start_lsn, slot_exists=slot_exists)
        except BaseException:
            repl.close()
            raise
        if wants_load:
            # The load engine creates the slot with an exported snapshot (fresh) or resumes from the stored
            # consistent point; the replication stream starts after the last load row (changes()).
            repl.close()
            await self._prepare_full_load(conn, checkpoint, slot_exists=slot_exists, intent_only=intent_only)
        self._started = True
        self._start_tasks()

    def _start_position(self, checkpoint: PgCheckpoint | None) -> int:
        """The LSN streaming resumes after (0: the slot's own position), checked against the migration type."""
        if self.migration_type == "full-load-and-cdc" and cdc_checkpoint(checkpoint):
            raise no_load_recorded(self.cfg, checkpoint)
        start_lsn = 0
        if checkpoint is not None:
            try:
                start_lsn = lsn_of(checkpoint)
            except (KeyError, ValueError):
                raise SourceError(
                    f"checkpoint {checkpoint!r} is not a PostgreSQL position (expected lsn X/Y)"
                ) from None
        self._resume_at(start_lsn)
        return start_lsn

    def _resume_at(self, lsn: int) -> None:
        self._status.acked = lsn
        self._decoder.last_position = lsn
        self._decoder.received_lsn = lsn

    async def _prepare_full_load(
        self,
        conn: psycopg.AsyncConnection[Any],
        checkpoint: PgCheckpoint | None,
        *,
        slot_exists: bool,
        intent_only: bool,
    ) -> None:
        """Drop the slot of a load interrupted before its first checkpoint, refuse one a load cannot match, then
        :meth:`_load_from` it."""
        if intent_only and slot_exists:
            self._log.warning("dropping the slot of a full load interrupted before its first checkpoint")
            await drop_slot(conn, self.cfg.slot_name)
            slot_exists = False
        if checkpoint is None and slot_exists:
            raise slot_without_load(self.cfg)
        await self._load_from(checkpoint, slot=self.cfg.slot_name)

    async def _load_from(self, checkpoint: PgCheckpoint | None, *, slot: str | None) -> None:
        """Open the load sessions (creating ``slot`` with an exported snapshot on a fresh load; None: a snapshot
        of a normal transaction) and plan the tables; the rows are read by changes()."""
        failover = slot is not None and wants_failover_slot(self.cfg, self._server_version, self._standby)
        engine = self._load_engine(slot_name=slot, selector=self._selector, failover=failover)
        await self._open_load(engine, checkpoint, self._identity.copy)
        assert self._load is not None
        if "lsn" in self._load.start_position:
            self._resume_at(lsn_of(self._load.start_position))

    async def _start_replication(self, repl: ReplicationConnection, start_lsn: int, *, slot_exists: bool) -> None:
        if not slot_exists:
            failover = wants_failover_slot(self.cfg, self._server_version, self._standby)
            if self._standby:
                self._log.info(
                    "creating the replication slot on a standby: it waits for the primary to log its running "
                    "transactions (every 15 s when busy; SELECT pg_log_standby_snapshot(); on the primary at once)"
                )
            point = await repl.create_slot(self.cfg.slot_name, failover=failover)
            self._log.info("replication slot created", consistent_point=point, failover=failover)
        else:
            conn = await self._session.get()
            await ensure_failover_slot(repl, conn, self.cfg, standby=self._standby, log=self._log)
        await repl.start_replication(self.cfg.slot_name, format_lsn(start_lsn), self.cfg.publication)
        self._repl = repl
        self._reloads.last = {"lsn": format_lsn(start_lsn)}
        self._m_connected.set(1)
        self._log.info("replication started", start_lsn=format_lsn(start_lsn), row_path=fused.path_name())

    def _start_tasks(self) -> None:
        self._tasks.append(asyncio.create_task(self._status.loop(), name="pg-status"))
        if self.cfg.heartbeat_interval > 0:
            beat = heartbeat_loop(self._session, self.cfg.heartbeat_interval, self._log)
            self._tasks.append(asyncio.create_task(beat, name="pg-heartbeat"))
        if self.cfg.table_check_interval > 0:
            check = self._tables.loop(self.cfg.table_check_interval)
            self._tasks.append(asyncio.create_task(check, name="pg-tables"))
        watch = watch_server(
            self._session,
            lambda: self._decoder.received_lsn,
            lambda: self._repl is not None and self._repl.streaming and not self._held,
            self._server_state,
            timeout=self.cfg.stall_timeout,
            label=self._label,
            log=self._log,
        )
        self._tasks.append(asyncio.create_task(watch, name="pg-server"))
        if self.cfg.table_check_interval > 0 and wants_failover_slot(self.cfg, self._server_version, self._standby):
            # each standby of the host list: does it hold the failover slot sync-ready (docs/postgresql.md)?
            interval = self.cfg.table_check_interval
            slots = watch_standby_slots(self.cfg, interval=interval, label=self._label, log=self._log)
            self._tasks.append(asyncio.create_task(slots, name="pg-standby-slots"))

    def _server_state(self, standby: bool, timeline: int | None) -> None:
        """The server's state now (``watch_server``). The standby read was promoted: its walsender follows the
        new timeline without a reconnect, so the checkpoints from now on carry it (every LSN before the switch
        is in the new timeline's history, so a restart resumes; with the old timeline, a position past the
        switch would be refused as another branch)."""
        if not self._standby or standby or timeline is None:
            return
        self._standby = False
        old = self._identity.get("timeline")
        if timeline != old:
            self._identity = {**self._identity, "timeline": timeline}
            self._set_extra()
            self._log.warning(
                "the standby read was promoted: streaming goes on from its slot on the new timeline",
                old_timeline=old,
                timeline=timeline,
            )
        self._show_server(self._repl.where if self._repl is not None and not self._repl.closed else "")

    async def _check_identity(
        self, repl: ReplicationConnection, known: PgCheckpoint | None, lsn: int | None, *, owned: bool
    ) -> None:
        """``resume.check_position`` before streaming from ``lsn``: at start, ``known`` is the checkpoint; after a
        reconnect, None (this run's own identity). Every later checkpoint carries the server's identity."""
        conn = await self._session.get()
        self._identity = await check_position(
            repl, conn, self.cfg, known or self._identity, lsn, owned=owned, adopt=self._adopt_command, log=self._log
        )
        self._set_extra()
        try:
            self._standby = await in_recovery(conn)
            await warn_standby_slots(conn, self.cfg.slot_name, self._log)
        except psycopg.OperationalError as exc:
            raise SourceConnectionError(f"reading the server's state: {str(exc).strip()}") from None
        self._show_server(repl.where)

    def _show_server(self, where: str) -> None:
        """Say which server is read (at start and after every reconnect): a log line, the one series of
        ``cdcstream_source_server_info`` (the system identifier as server_id) and ``cdcstream_source_timeline``,
        so a failover shows on a dashboard as a step of the timeline."""
        labels = (self._label, str(self._identity.get("system_id", "")), "", "")
        if labels != self._server_labels:
            if self._server_labels is not None:
                metrics.SOURCE_SERVER_INFO.remove(*self._server_labels)
            metrics.SOURCE_SERVER_INFO.labels(*labels).set(1)
            self._server_labels = labels
        timeline = self._identity.get("timeline")
        if isinstance(timeline, int):
            metrics.SOURCE_TIMELINE.labels(self._label).set(timeline)
        self._log.info(
            "source server",
            host=where,
            system_id=labels[1],
            timeline=timeline,
            standby=self._standby,
            version=self._server_version,
        )

    def _set_extra(self) -> None:
        self._decoder.checkpoint_extra = {**self._identity, **self._load_extra}

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
        async with contextlib.aclosing(self._changes()) as batches:
            async for items in batches:
                self._held = True
                try:
                    yield items
                finally:
                    self._held = False

    async def _changes(self) -> AsyncGenerator[Sequence[Item], None]:
        if not self._started:
            raise SourceError("PostgresSource.changes() called before start()")
        if self._load is not None:
            async for items in self._initial_load(self._load):
                yield items
            if self.migration_type == "full-load":
                return
            self._log.info(
                "full load done: streaming changes from the slot's consistent point",
                start_lsn=format_lsn(self._decoder.last_position),
            )
        reloads, decoder = self._reloads, self._decoder
        while not self._closed:
            self.alive_at = time.monotonic()
            if reloads.due(not decoder.in_transaction) and not await reloads.begin():
                yield reloads.out([reloads.marker()])  # the failed request leaves the checkpoint promptly
                continue
            frames = await self._read()
            if frames is None:
                return
            if not frames:
                continue
            items, lost = await self._decode(frames)
            self._after_batch(items)
            if decoder.reply_requested:
                decoder.reply_requested = False
                await self._status.send(reply=False)
            point = reloads.point
            if point is not None and (at := reload_split(items, point, decoder)) is not None:
                async for batch in reloads.split(items, at):
                    yield batch
                items = items[at:]
            if items:
                yield reloads.out(items)
            if lost is not None:
                self._disconnected(lost)

    async def _initial_load(self, load: FullLoad) -> AsyncIterator[Sequence[Item]]:
        """The full load's rows, then a checkpoint at the slot's consistent point saying the load is done."""
        async for items in self._run_load(load):
            yield items
        self._set_extra()
        final = self._decoder.checkpoint_extra.copy()
        if self.migration_type != "full-load":
            final["lsn"] = format_lsn(self._decoder.last_position)
        self._reloads.last = final
        yield [Marker(final, None, False)]

    async def _read(self) -> list[bytes] | None:
        """The next frames from the replication connection, its new types described (empty: none within a
        second, or the connection was lost: the next call reconnects); None once the source is closed."""
        try:
            repl = self._repl
            if repl is None or not repl.streaming:
                repl = await self._reconnect()
                if repl is None:
                    return None
            frames = await repl.read_batch(max_wait=1.0)
            if frames:
                # Describe new types before decoding the rows that use them (the decoder is sans-IO).
                oids = self._decoder.pending_type_oids(frames)
                if oids:
                    await self._describe_types(oids)
        except SourceConnectionError as exc:
            if self._closed:
                return None
            self._disconnected(str(exc))
            return []
        return frames

    async def _decode(self, frames: list[bytes]) -> tuple[list[Item], str | None]:
        """The items of ``frames``, and why the connection was lost meanwhile (None: it was not)."""
        decoder = self._decoder
        items = decoder.feed(frames)
        while decoder.stalled is not None:
            # A composite changed by ALTER TYPE without a new Relation message: describe it, then go on.
            oids, rest = decoder.stalled
            decoder.stalled = None
            try:
                await self._describe_types(oids)
            except SourceConnectionError as exc:
                return items, str(exc)  # yield what was decoded (its markers moved the resume position), reconnect
            items.extend(decoder.feed(rest))
        return items, None

    async def _describe_types(self, oids: set[int]) -> None:
        """Describe new types (``catalog.read_types``), then decode with them."""
        await read_types(self._session, self.types, oids, self._log)
        self._decoder.refresh_plans()

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
                await check_slot(await self._session.get(), self.cfg, {"lsn": start})
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
            self._count_events()
        if decoder.ddl_skipped:
            for skipped in decoder.ddl_skipped:
                log.warning("DDL capture message not understood, skipped (no control record for it)", **skipped)
            self._m_ddl_skipped.inc(len(decoder.ddl_skipped))
            decoder.ddl_skipped.clear()
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

    def _count_events(self) -> None:
        """The decoder's per-table event counts into ``cdcstream_source_events_total``."""
        decoder = self._decoder
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

    # ------------------------------------------------------------------------------------------------------
    # reload --table, acknowledgements, status
    # ------------------------------------------------------------------------------------------------------
    async def request_reload(self, name: str) -> str:
        """Queue a consistent re-copy of ``schema.table`` (``POST /reload``, ``cdcstream reload``).

        The reader pauses at a transaction boundary, a temporary slot exports a snapshot at consistent point P,
        the stream goes on up to the last transaction committed before P, the table's rows follow as ``load``
        records, then the changes from P on. The request is in every checkpoint until the rows are out, so a
        crash in between redoes it.
        """
        return await self._reloads.request(name)

    async def ack(self, checkpoint: Checkpoint) -> None:
        if self.migration_type == "full-load":
            return  # nothing upstream to release: no slot
        try:
            lsn = lsn_of(checkpoint)
        except (KeyError, ValueError):
            raise SourceError(f"ack with a checkpoint that is not a PostgreSQL position: {checkpoint!r}") from None
        await self._status.ack(lsn)

    async def lag_probe(self) -> dict[str, float | None]:
        """Byte lag of our slot, on the normal connection (polled by telemetry/probe.py; ``slot.slot_lag``)."""
        return await slot_lag(await self._session.get(), self.cfg.slot_name)

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
            "acked_lsn": format_lsn(self._status.acked),
            "resume_lsn": format_lsn(d.last_position),
            "last_commit_time": d.last_commit_time,
            "full_load": None if self._load is None else self._load.status(),
            "reload": self._reloads.status(),
            "uncaptured_tables": [u.to_json() for u in self._tables.found.values()],
            "system_id": self._identity.get("system_id"),
            "timeline": self._identity.get("timeline"),
            "standby": self._standby,
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shutting down: the tasks' own errors were logged when they happened.
        await cancel_and_wait(self._tasks)
        self._tasks.clear()
        await self._reloads.close()
        if self._repl is not None:
            if self._repl.streaming:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(2):
                        await self._status.send()
            self._repl.close()
            self._repl = None
        await self._session.reset()
        self._m_connected.set(0)
        if self._server_labels is not None:
            metrics.SOURCE_SERVER_INFO.remove(*self._server_labels)
            self._server_labels = None
        self._log.info("source closed", acked_lsn=format_lsn(self._status.acked))
