"""The only module that knows every stage: source -> mapping -> sink, acknowledgements -> watermark -> checkpoint.

Ordering of durable effects (the at-least-once argument):

1. every record gets a sequence number in source order; every source marker (transaction end, idle position)
   is placed in the same sequence;
2. the sink reports records Kinesis accepted; the watermark advances over the contiguous acknowledged prefix;
3. the newest marker inside that prefix is written to the checkpoint file (fsync), and only then passed to
   ``source.ack`` (PostgreSQL ``flush_lsn``).

So no position is released upstream before every record at or before it is in the stream. A crash at any
instant replays from the last checkpoint: duplicates, never gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import structlog

from cdcstream import __version__
from cdcstream.changes import ChangeEvent, Item, Marker
from cdcstream.checkpoints.store import FileCheckpointStore
from cdcstream.checkpoints.watermark import Watermark
from cdcstream.config import Config
from cdcstream.errors import CdcstreamError, OversizeRecordError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.rules import load_rules
from cdcstream.records import Record
from cdcstream.runtime.retry import Backoff
from cdcstream.runtime.systemd import Notifier
from cdcstream.sinks import Sink
from cdcstream.sources import Source
from cdcstream.telemetry import metrics
from cdcstream.telemetry.http import HttpServer

log = structlog.get_logger(__name__)

EXIT_OK = 0
EXIT_INTERRUPTED = 130


def _append_durably(path: Path, line: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


class StopRequested(Exception):
    """A stop signal arrived while a stage was still starting."""


def build_source(cfg: Config, mapper: Mapper) -> Source:
    """The configured source engine."""
    if cfg.source.engine == "mysql":
        from cdcstream.sources.mysql import MySQLSource

        return MySQLSource(cfg.source, selector=mapper.selects, no_hex_prefix=cfg.target.no_hex_prefix)
    from cdcstream.sources.postgres import PostgresSource

    return PostgresSource(cfg.source, selector=mapper.selects, no_hex_prefix=cfg.target.no_hex_prefix)


def build_sink(cfg: Config, on_ack: Any) -> Sink:
    """The configured sink."""
    from cdcstream.sinks.kinesis import KinesisSink

    return KinesisSink(cfg.target, on_ack)


def source_label(cfg: Config) -> str:
    if cfg.source.engine == "mysql":
        return f"mysql:{cfg.source.host}:{cfg.source.port}"
    return f"{cfg.source.engine}:{cfg.source.database}"


class Pipeline:
    """Runs one task (one source, one stream) until stopped or a non-retriable error."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        rules = load_rules(cfg.resolve(cfg.table_mappings) if cfg.table_mappings else None)
        self.mapper = Mapper(rules, cfg.target, cfg.task_id)
        self.store = FileCheckpointStore(cfg.resolve(cfg.checkpoint.state_dir), cfg.task_id)
        self.watermark = Watermark()
        self.source: Source = build_source(cfg, self.mapper)
        self.sink: Sink = build_sink(cfg, self._on_ack)
        self.notifier = Notifier()
        self._label = source_label(cfg)
        self._acked = asyncio.Event()
        self._stop = asyncio.Event()
        self._signals = 0
        self._last_checkpoint: dict[str, Any] | None = None
        self._last_checkpoint_at = 0.0
        self._last_progress = time.monotonic()
        self._started = False
        self.http: HttpServer | None = None
        self._checkpoint_ts = metrics.CHECKPOINT_TIMESTAMP.labels(self._label)
        self._checkpoint_pos_ts = metrics.CHECKPOINT_POSITION_TIMESTAMP.labels(self._label)
        self._checkpoint_ok = metrics.CHECKPOINT_WRITES.labels(self._label, "ok")

    # --- acknowledgements and checkpoints ----------------------------------------------------------------

    def _on_ack(self, records: Sequence[Record]) -> None:
        ack = self.watermark.ack
        for record in records:
            ack(record.seq)
        self._last_progress = time.monotonic()
        self._acked.set()

    async def _checkpoint(self) -> None:
        """Persist the newest safe marker, then release it upstream (never the other way round)."""
        marker = self.watermark.take()
        if marker is None:
            return
        await asyncio.to_thread(self.store.save, marker.checkpoint)
        self._checkpoint_ok.inc()
        now = time.time()
        self._checkpoint_ts.set(now)
        if marker.commit_epoch is not None:
            self._checkpoint_pos_ts.set(marker.commit_epoch)
        self._last_checkpoint, self._last_checkpoint_at = marker.checkpoint, now
        await self.source.ack(marker.checkpoint)

    async def _checkpoint_loop(self) -> None:
        interval = self.cfg.checkpoint.interval
        while True:
            await self._acked.wait()
            self._acked.clear()
            await self._checkpoint()
            if interval:
                await asyncio.sleep(interval)

    # --- reading -----------------------------------------------------------------------------------------

    async def _emit(self, record: Record) -> None:
        record.seq = self.watermark.issue()
        try:
            await self.sink.put(record)
        except OversizeRecordError as exc:
            if self.cfg.target.oversize_policy != "dead-letter":
                raise
            await self.sink.put(await self._divert(record, exc))

    async def _divert(self, record: Record, exc: OversizeRecordError) -> Record:
        """Write an oversize record to the dead-letter file (durably, before its stand-in can be acknowledged
        and checkpointed past) and return the control record that takes its place in the stream."""
        path = self.store.dir / f"{self.cfg.task_id}.dead-letter.jsonl"
        line = orjson.dumps(
            {
                "diverted_at": time.time(),
                "stream": self.cfg.target.stream_name,
                "partition_key": record.partition_key,
                "table": record.label,
                "size": exc.size,
                "limit": exc.limit,
                "data": record.data.decode("utf-8", "replace"),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        await asyncio.to_thread(_append_durably, path, line)
        metrics.DEAD_LETTER_RECORDS.labels(self.cfg.target.stream_name).inc()
        log.warning(
            "oversize record diverted to the dead-letter file",
            table=record.label,
            partition_key=record.partition_key[:80],
            size=exc.size,
            limit=exc.limit,
            file=str(path),
        )
        return self.mapper.diverted_record(record, exc.size, exc.limit, path.name)

    async def _flush_events(self, events: list[ChangeEvent]) -> None:
        for record in self.mapper.map(events):
            if record.barrier:
                # Control records (TRUNCATE, DROP) are rare: a full drain on both sides of one is cheap and
                # orders it against every partition key, which retries per key alone could not.
                await self.sink.drain()
                await self._emit(record)
                await self.sink.drain()
            else:
                await self._emit(record)
        events.clear()

    async def _read_loop(self) -> None:
        events: list[ChangeEvent] = []
        batch: Sequence[Item]
        async for batch in self.source.changes():
            for item in batch:
                if isinstance(item, Marker):
                    if events:
                        await self._flush_events(events)
                    self.watermark.issue_marker(item)
                    self._last_progress = time.monotonic()
                    self._acked.set()
                else:
                    events.append(item)
            if events:  # a transaction split across batches: map what we have, its marker comes later
                await self._flush_events(events)

    # --- supervision -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "task_id": self.cfg.task_id,
            "stream": self.cfg.target.stream_name,
            "source": self.source.status(),
            "watermark": self.watermark.status(),
            "checkpoint": {"position": self._last_checkpoint, "written_at": self._last_checkpoint_at or None},
        }

    def ready(self) -> tuple[bool, str]:
        if not self._started:
            return False, "starting"
        if not self.source.status().get("connected"):
            return False, "source not connected"
        idle = self.watermark.in_flight == 0
        if not idle and time.monotonic() - self._last_progress > self.cfg.http.ready_window:
            return False, f"no acknowledgement for {self.cfg.http.ready_window:.0f}s with records in flight"
        return True, "ready"

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_interval
        if interval is None:
            return
        while True:
            await asyncio.sleep(interval / 2)
            # The loop is alive (we are running) and the pipeline is either idle or retrying: both healthy.
            self.notifier.watchdog()
            wm = self.watermark.status()
            self.notifier.status(f"streaming; in flight {wm['in_flight']}; checkpoint {self._last_checkpoint}")

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            # Still safe: nothing unacknowledged was checkpointed; the next start replays from the checkpoint.
            log.warning("second signal, exiting at once", signal=signal.Signals(signum).name)
            os._exit(EXIT_INTERRUPTED)
        log.info("stopping: draining in-flight records", signal=signal.Signals(signum).name)
        self.notifier.stopping()
        self._stop.set()

    async def run(self) -> int:
        """Run until a signal (exit 0 after draining) or a non-retriable error (raised as CdcstreamError)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        if self.cfg.http.listen:
            self.http = HttpServer(self.cfg.http.listen, self.status, self.ready)
            await self.http.start()
        try:
            return await self._run()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self.http is not None:
                await self.http.stop()

    async def _start_with_retry(self, what: str, start: Callable[[], Awaitable[None]]) -> None:
        """Start a stage, retrying retriable errors (database still starting, previous walsender not yet gone,
        Kinesis unreachable) with backoff; a stop request ends the wait."""
        backoff = Backoff(base=0.2, maximum=10.0)
        while True:
            try:
                await start()
                return
            except CdcstreamError as exc:
                if not exc.retriable:
                    raise
                delay = backoff.next()
                log.warning(f"{what} not available yet, retrying", error=str(exc), delay=round(delay, 2))
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    continue
                raise StopRequested from None

    async def _run(self) -> int:
        checkpoint = self.store.load()
        log.info(
            "starting",
            version=__version__,
            task_id=self.cfg.task_id,
            stream=self.cfg.target.stream_name,
            checkpoint=checkpoint,
        )
        try:
            try:
                await self._start_with_retry("sink", lambda: self.sink.start())
                await self._start_with_retry("source", lambda: self.source.start(checkpoint))
            except StopRequested:
                log.info("stopped before start-up completed")
                return EXIT_OK
            await self._emit(self.mapper.restart_record())
            self._started = True
            self.notifier.ready(f"streaming from {checkpoint or 'the slot position'}")
            log.info("ready")
            try:
                await self._stream()
            except* CdcstreamError as group:
                err = group.exceptions[0]
                assert isinstance(err, CdcstreamError)
                metrics.ERRORS.labels(err.stage, type(err).__name__).inc()
                raise err from None
            await self._checkpoint()
            log.info("stopped", checkpoint=self._last_checkpoint)
            return EXIT_OK
        finally:
            await self.source.close()
            await self.sink.close()

    async def _stream(self) -> None:
        """Run the stages until a stop request (then drain) or the first non-retriable error."""
        async with asyncio.TaskGroup() as tg:
            sink_task = tg.create_task(self.sink.run(), name="sink")
            read_task = tg.create_task(self._read_loop(), name="source")
            ckpt_task = tg.create_task(self._checkpoint_loop(), name="checkpoint")
            wd_task = tg.create_task(self._watchdog_loop(), name="watchdog")
            stop_task = tg.create_task(self._stop.wait(), name="stop")
            await asyncio.wait({sink_task, read_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            # Only a stop request ends this wait normally; a failing task makes the TaskGroup raise.
            read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await read_task
            if not await self.sink.drain(timeout=30.0):
                log.warning("stopping with records still unacknowledged; they will be replayed on restart")
            for task in (ckpt_task, wd_task, sink_task, stop_task):
                task.cancel()
