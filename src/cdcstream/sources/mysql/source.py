"""``MySQLSource``: committed row changes from a MySQL 8 / MariaDB binary log, with reconnects.

:meth:`MySQLSource.start` asks the server (:mod:`.server`) what the source depends on (``log_bin``,
``binlog_format=ROW``, ``binlog_row_image=FULL``, ``binlog_row_metadata=FULL``, the binlog privileges, the
checkpointed binlog file still being on the server, :mod:`.resume`) and fails with the fix for each; then a
:class:`~cdcstream.sources.mysql.reader.ReaderThread` streams the binlog through the
:class:`~cdcstream.sources.mysql.converter.EventConverter`. :meth:`changes` yields the thread's batches; when the
thread fails with a retriable error it reconnects with backoff, forever, from the last marker it yielded (a
transaction end), so a dropped connection or a server restart yields duplicates at worst, never a gap. MySQL has
no upstream acknowledgement (the binlog is retained by time, not by consumers), so :meth:`ack` only records the
position for ``/status``. A full load (:mod:`.snapshot`) runs before CDC; ``reload --table`` (:mod:`.reload`,
driven by the engine-neutral ``sources/reload.py``) while it runs.

Positions (docs/mysql.md, "Positions and resume"): checkpoint ``{"file", "pos", "gtid"}`` — the binlog file and the
offset after the transaction's last event, plus the server's GTID state after it (MariaDB ``domain-server-seq`` list,
MySQL GTID set). ``stream-position`` is ``<file>:<start offset, 12 digits>.<record, 10 digits>``, which sorts in
commit order as a string as long as the binlog base name stays the same (the numeric suffix is fixed width).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from typing import Any, cast

import structlog

from cdcstream.changes import Item, Marker
from cdcstream.checkpoints.model import Checkpoint, MySQLCheckpoint, is_loading, load_started
from cdcstream.config import FullLoadConfig, MySQLSourceConfig
from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.sources.base import SourceBase
from cdcstream.sources.fullload import FullLoad, KeyRangesOf
from cdcstream.sources.loadengine import Offload
from cdcstream.sources.mysql import fused
from cdcstream.sources.mysql.binlog.client import DumpStart
from cdcstream.sources.mysql.converter import SYSTEM_SCHEMAS, EventConverter
from cdcstream.sources.mysql.positions import BinlogPos
from cdcstream.sources.mysql.reader import Batch, Failure, ReaderThread, classify
from cdcstream.sources.mysql.reload import MySQLReloads, reload_split
from cdcstream.sources.mysql.resume import (
    ServerInfo,
    describe_server,
    other_server,
    resume_refusals,
    resumes_by_gtid,
    stored_position,
)
from cdcstream.sources.mysql.server import (
    binlog_bytes_after,
    connection_settings,
    fetch_binlog_sizes,
    fetch_server_info,
    settings_problems,
)
from cdcstream.sources.mysql.snapshot import MyLoadEngine
from cdcstream.sources.mysql.tableplans import OPS, FuseHook
from cdcstream.sources.reload import TableReloads
from cdcstream.telemetry import metrics

log = structlog.get_logger(__name__)

QUEUE_BATCHES = 4  # bound on batches waiting for the pipeline (each at most reader.BATCH_MAX items)


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
        fuse: FuseHook | None = None,
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
        self._user_selector = selector
        self._no_hex_prefix = no_hex_prefix
        # fuse: the mapping's half of the compiled fused row path (fused.py); without it every row is pure.
        self._fuse = fuse
        self._where = f"{cfg.user}@{cfg.host}:{cfg.port}"
        self._conv: EventConverter | None = None
        self._reader: ReaderThread | None = None
        self._queue: asyncio.Queue[Batch | Failure] = asyncio.Queue(maxsize=QUEUE_BATCHES)
        self._info: ServerInfo | None = None
        self._resume: MySQLCheckpoint = {}
        self._identity: MySQLCheckpoint = {}
        self._server_labels: tuple[str, str, str, str] | None = None  # of cdcstream_source_server_info
        self._acked: MySQLCheckpoint | None = None
        self._use_gtid = False
        self._m_events: dict[tuple[str, int], Any] = {}
        self._log = log.bind(source=self._label)
        fl = self._full_load_cfg
        self._load_engine = functools.partial(
            MyLoadEngine,
            lambda: connection_settings(cfg),
            chunk_rows=fl.chunk_rows,
            buffer_size=fl.parallel_load_buffer_size,
            no_hex_prefix=no_hex_prefix,
            where=self._where,
            invalid_dates=cfg.invalid_dates,
        )
        # reload --table: pending requests are stamped on every marker yielded while any is pending (out()),
        # never put into the reader's markers (which may be queued before a request or after its end).
        self._reloads: TableReloads[MySQLCheckpoint, BinlogPos] = TableReloads(
            MySQLReloads(cfg, lambda: self._info, self._load_engine, self._log),
            label=self._label,
            migration_type=migration_type,
            selector=self._selects,
            initial_load=lambda: self._load,
            new_copy=self._new_copy,
        )

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
        self._restore_load(checkpoint)
        self._reloads.restore(checkpoint)  # a reload requested and not finished before the last stop is redone
        if is_loading(checkpoint) and not load_started(checkpoint):
            checkpoint = None  # a load intent without a snapshot yet: nothing was acknowledged, load afresh
        known = checkpoint  # what a stored position must be verified against (None: the server's own, just now)
        if self.migration_type == "full-load" or (
            self.migration_type == "full-load-and-cdc" and (checkpoint is None or is_loading(checkpoint))
        ):
            # A fresh snapshot and its binlog position, or a resumed load's fresh snapshots with the stored one.
            want_position = self.migration_type != "full-load"
            engine = self._load_engine(mariadb=info.mariadb, want_position=want_position, selector=self._selects)
            await self._open_load(engine, checkpoint, MySQLCheckpoint)
            if self.migration_type == "full-load":
                self._started = True
                return
            checkpoint, known = self._load_start(known)
        if checkpoint is not None:
            stored = stored_position(checkpoint)
        if stored is not None and known is not None and not owned:
            self._log.info(
                "checkpoint written by an older cdcstream (it records no owner): adopted after the server identity "
                "and position checks; its owner is recorded from the next write on",
                checkpoint=checkpoint,
            )
        self._resume_from(info, checkpoint, known, *(stored or current))

    def _load_start(self, known: MySQLCheckpoint | None) -> tuple[MySQLCheckpoint, MySQLCheckpoint | None]:
        """Where CDC starts after the load: the position taken with its snapshot (stored in the checkpoint
        across restarts: a resumed load checks it like any stored position), and what to verify it against."""
        assert self._load is not None
        start = cast(MySQLCheckpoint, self._load.start_position)  # our engine's
        checkpoint: MySQLCheckpoint = {"file": start["file"], "pos": start["pos"], "gtid": start.get("gtid")}
        return checkpoint, known if self._load.resumed else None

    def _resume_from(
        self,
        info: ServerInfo,
        checkpoint: MySQLCheckpoint | None,
        known: MySQLCheckpoint | None,
        file: str,
        pos: int,
        gtid: str | None,
    ) -> None:
        """Verify the position and set the reader up to stream from it (now, or after the full load)."""
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
            fuse=self._fuse,
        )
        self._set_extra()
        self._resume = self._conv.checkpoint()
        self._reloads.last = self._reloads.pending.stamp(self._resume)
        self._acked = checkpoint
        self._started = True
        if self._load is not None:
            return  # the binlog reader starts after the last load row (changes())
        self._start_reader()
        self._log.info(
            "binlog streaming started",
            server=info.version,
            file=file,
            pos=pos,
            gtid=gtid,
            resume_by="gtid" if self._use_gtid else "file/pos",
            row_path=fused.path_name() if self._fuse is not None else "pure (no fused hook)",
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
        self._show_server(info)

    def _show_server(self, info: ServerInfo) -> None:
        """Say which server is read (at start and after every reconnect): a log line, and the one series of
        ``cdcstream_source_server_info``, so a failover shows on a dashboard as a new server_id."""
        labels = (
            self._label,
            str(self._identity.get("server_id", "")),
            str(self._identity.get("server_uuid", "")),
            info.variables.get("gtid_domain_id", "") if info.mariadb else "",
        )
        if labels != self._server_labels:
            if self._server_labels is not None:
                metrics.SOURCE_SERVER_INFO.remove(*self._server_labels)
            metrics.SOURCE_SERVER_INFO.labels(*labels).set(1)
            self._server_labels = labels
        self._log.info(
            "source server",
            host=f"{self.cfg.host}:{self.cfg.port}",
            version=info.version,
            server_id=labels[1],
            server_uuid=labels[2] or None,
            gtid_domain=labels[3] or None,
            resume_by="gtid" if self._use_gtid else "file/pos",
        )

    def _set_extra(self) -> None:
        """Fields every checkpoint carries besides the position: the server identity and, after a full load,
        that it is done (so a restart neither reloads nor forgets it)."""
        if self._conv is not None:
            self._conv.checkpoint_extra = {**self._identity, **self._load_extra}

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
            async for items in self._initial_load(self._load):
                yield items
            if self.migration_type == "full-load":
                return
        reloads = self._reloads
        while not self._closed:
            if reloads.due(reloads.at_boundary) and not await reloads.begin():
                yield reloads.out([reloads.marker()])  # the failed request leaves the checkpoint promptly
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
            point = reloads.point
            if point is not None and (at := reload_split(items, point, msg.heard)) is not None:
                async for batch in reloads.split(items, at):
                    yield batch
                items = items[at:]
            if items:
                yield reloads.out(items)

    async def _initial_load(self, load: FullLoad) -> AsyncIterator[Sequence[Item]]:
        """The full load's rows, then a checkpoint saying it is done (at the snapshot's binlog position, where
        the reader starts, unless the load is all there is)."""
        async for items in self._run_load(load):
            yield items
        if self.migration_type == "full-load":
            yield [Marker(MySQLCheckpoint(load=self._load_extra["load"]), None, False)]
            return
        assert self._conv is not None
        self._set_extra()
        self._resume = self._conv.checkpoint()
        yield self._reloads.out([Marker(self._resume.copy(), None, False)])
        self._start_reader()
        self._log.info("full load done: streaming the binlog from the snapshot's position", resume=self._resume)

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
        # A first start streams from the server's file/position, but every position read since carries the GTID
        # state: resume by it when allowed, so a failover behind the same address (a virtual IP, DNS, a managed
        # service's endpoint) is followed in this run too, not refused until a restart.
        self._use_gtid = self.cfg.gtid_mode != "off" and bool(r.get("gtid")) and info.server_has_gtids
        self._verify_resume(info, str(r["file"]), int(r["pos"]), r.get("gtid"), self._identity)
        self._info = info
        self._resume = {**r, **self._identity}  # a failover by GTID: later checkpoints name the new server
        self._start_reader()
        self._log.info("binlog streaming reconnected", resume=self._resume)

    def _after_batch(self, batch: Batch) -> None:
        now = time.time()
        self._m_last_event.set(now)
        self._backoff.reset()
        self._count_events(batch)
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

    def _count_events(self, batch: Batch) -> None:
        """The batch's per-table event counts into ``cdcstream_source_events_total``."""
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

    # ------------------------------------------------------------------------------------------------------
    # reload --table, acknowledgements, status
    # ------------------------------------------------------------------------------------------------------
    async def request_reload(self, name: str) -> str:
        """Queue a consistent re-copy of ``schema.table`` (``POST /reload``, ``cdcstream reload``).

        At the next transaction boundary of the yielded stream the load sessions open one snapshot with its
        exact binlog position P (docs/full-load.md, "Reloading one table while CDC runs"); the stream goes on up to the
        last transaction ending at or before P, the table's rows follow as ``load`` records, then the changes
        from P on. The request is in every checkpoint until the rows are out, so a crash in between redoes it.
        """
        return await self._reloads.request(name)

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
            "gtid_domain": self._server_labels[3] or None if self._server_labels else None,
            "last_commit_time": conv.last_commit_time if conv else None,
            "full_load": None if self._load is None else self._load.status(),
            "reload": {**self._reloads.status(), "last": self._reloads.last_copy},
        }

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._reloads.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.stop()
            # Unblock a put() waiting on a full queue, then wait for the thread.
            while not self._queue.empty():
                self._queue.get_nowait()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(reader.thread.join, 5)
        self._m_connected.set(0)
        if self._server_labels is not None:
            metrics.SOURCE_SERVER_INFO.remove(*self._server_labels)
            self._server_labels = None
        self._log.info("source closed", acked=self._acked)
