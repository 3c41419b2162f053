"""The only module that knows every stage: source -> mapping -> sink, acknowledgements -> watermark -> checkpoint.

Ordering of durable effects (the at-least-once argument):

1. every record gets a sequence number in source order; every source marker (transaction end, idle position)
   is placed in the same sequence;
2. the sink reports records Kinesis accepted; the watermark advances over the contiguous acknowledged prefix;
3. the newest marker inside that prefix is written to the checkpoint file (fsync), and only then passed to
   ``source.ack`` (PostgreSQL ``flush_lsn``).

So no position is released upstream before every record at or before it is in the stream. A crash at any
instant replays from the last checkpoint: duplicates, never gaps.

The pipeline takes its parts ready-made (:class:`Parts`, built from the configuration by
:mod:`cdcstream.wiring`) and knows them only by their protocols, so it runs in process with fakes as well.

Over 500 lines as one class: the flow, the checkpoints, the health answers and the stop all read the same
stages' state; what can stand apart already does (wiring.py, workers/, checkpoints/).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from cdcstream import __version__
from cdcstream.changes import ChangeEvent, FusedRows, Item, MappedRows, Marker, Op, TableInfo
from cdcstream.checkpoints.model import Checkpoint, intent_checkpoint, load_completed
from cdcstream.checkpoints.store import FileCheckpointStore, append_durably
from cdcstream.checkpoints.watermark import Watermark
from cdcstream.config import Config
from cdcstream.errors import CdcstreamError, MappingError, OversizeRecordError, PositionRefusedError, SourceError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.preview import unused_rules
from cdcstream.records import Record
from cdcstream.runtime.liveness import LoopStamps, assess
from cdcstream.runtime.retry import Backoff
from cdcstream.runtime.signals import EXIT_INTERRUPTED, STOP_SIGNALS, take_early
from cdcstream.runtime.stopping import Deadline, StopRequested, cancel_and_wait, first_or_stop
from cdcstream.runtime.systemd import Notifier
from cdcstream.sinks import AckCallback, Sink
from cdcstream.sources import Source, SupportsAliveAt, SupportsReadLag, SupportsReload, SupportsStartCheckpoint
from cdcstream.sources.reload import stamp_requested_reloads
from cdcstream.telemetry import metrics
from cdcstream.telemetry.control import daemon_token, token_path
from cdcstream.telemetry.http import HttpServer
from cdcstream.telemetry.probe import LagProbe

if TYPE_CHECKING:
    from cdcstream.workers.cdc import CdcWorkers, Delivery
    from cdcstream.workers.pool import MappingPool

log = structlog.get_logger(__name__)

EXIT_OK = 0
#: Seconds between supervision ticks (readiness bookkeeping, STATUS= lines) when no watchdog asks for more.
SUPERVISE_TICK = 1.0
#: Seconds between STATUS= updates to the service manager.
STATUS_INTERVAL = 5.0


@dataclass(frozen=True, slots=True)
class Parts:
    """What a pipeline runs, built from the configuration by :func:`cdcstream.wiring.build_parts` (tests hand in
    fakes: tests/unit/test_pipeline.py). The pipeline knows them by their protocols only, never by engine."""

    mapper: Mapper
    source: Source
    #: Builds the sink, given where it reports acknowledged records (the pipeline's watermark, which exists
    #: only once the pipeline does).
    sink: Callable[[AckCallback], Sink]
    store: FileCheckpointStore
    #: The source's label in metrics and logs (``postgres:dbname``, ``mysql:host:port``).
    label: str
    #: The bound on every stop: armed at the first stop request or when the run ends, it ends the process.
    deadline: Deadline
    #: The source's tables as they are now, to check the mapping against at start.
    tables: Callable[[], Awaitable[list[TableInfo]]]
    #: Maps full-load chunks in worker processes (the source hands them over); None: in the event loop.
    pool: MappingPool | None = None
    #: Maps CDC changes in worker processes, handing them back in source order (workers/cdc.py); None: in the
    #: event loop.
    cdc: CdcWorkers | None = None
    notifier: Notifier = field(default_factory=Notifier)


class Pipeline:
    """Runs one task (one source, one stream) until stopped or a non-retriable error."""

    def __init__(self, cfg: Config, parts: Parts) -> None:
        self.cfg = cfg
        self.mapper = parts.mapper
        self.store = parts.store
        self.watermark = Watermark()
        self.pool = parts.pool
        self.cdc = parts.cdc
        self.source: Source = parts.source
        self.sink: Sink = parts.sink(self._on_ack)
        self.notifier = parts.notifier
        self._label = parts.label
        self._tables = parts.tables
        metrics.precreate(source=self._label, source_kind=cfg.source.engine, stream=cfg.target.stream_name)
        self.probe = LagProbe.for_source(self.source, self._label, cfg.http.lag_probe_interval)
        # Records handed to the sink and acknowledged by it: the sink buffer's depth is their difference.
        self._pushed = 0
        self._popped = 0
        metrics.QUEUES.stages["sink"] = lambda: (
            self._pushed - self._popped,
            cfg.target.max_buffered_records,
            self._pushed,
            self._popped,
        )
        metrics.QUEUES.stages["sink_bytes"] = lambda: (
            self.sink.outstanding_bytes,
            cfg.target.max_buffered_bytes,
            self.sink.acknowledged_bytes + self.sink.outstanding_bytes,
            self.sink.acknowledged_bytes,
        )
        metrics.DELIVERY_LAG_SECONDS.labels(self._label).set_function(self._delivery_lag)
        # Liveness stamps (runtime/liveness.py): the read loop's last batch, and since when it has been
        # handing one to the sink (None while it waits for the source).
        self._read_at = time.monotonic()
        self._delivering_since: float | None = None
        self._unhealthy: str | None = None
        self._acked = asyncio.Event()
        self._stop = asyncio.Event()
        self._signals = 0
        self._deadline = parts.deadline
        # While starting: the stage being waited for and why ("sink: Kinesis endpoint ... unreachable"), for
        # /readyz and the log.
        self._waiting_for: str | None = None
        self._last_checkpoint: Checkpoint | None = None
        self._last_checkpoint_at = 0.0
        self._saving: asyncio.Future[None] | None = None
        self._saved: Checkpoint | None = None  # the checkpoint last written (or loaded at start)
        # The checkpoint being written and released upstream, with its marker, until the source has it.
        self._unreleased: tuple[Checkpoint, Marker] | None = None
        # reload --table requests, each with the first sequence number issued after it. A marker issued before
        # a request does not name the table (the source stamps only later ones), so saving such a marker adds
        # it (_with_reloads): once the daemon said "queued", no checkpoint written may forget the reload.
        self._reload_cuts: list[tuple[str, int]] = []
        # Last time the checkpoint could advance (an acknowledgement) or had nothing to wait for (idle):
        # /readyz fails when this is older than ready_window.
        self._last_progress = time.monotonic()
        self._started = False
        # full-load: set when the source ended after its last load row and every record was acknowledged.
        self._load_finished = False
        # Whether the last event handed to the mapper was a full-load row: at every switch between load rows
        # and CDC events the sink is drained first (the two usually have different partition keys).
        self._after_load: bool | None = None
        self.http: HttpServer | None = None
        self._checkpoint_ts = metrics.CHECKPOINT_TIMESTAMP.labels(self._label)
        self._checkpoint_pos_ts = metrics.CHECKPOINT_POSITION_TIMESTAMP.labels(self._label)
        self._checkpoint_ok = metrics.CHECKPOINT_WRITES.labels(self._label, "ok")
        self._checkpoint_err = metrics.CHECKPOINT_WRITES.labels(self._label, "error")
        #: Called once start-up is over, before streaming: the daemon settles the garbage collector there
        #: (runtime/collector.py); in-process runs (tests) leave it alone.
        self.on_started: Callable[[], None] = lambda: None

    # --- acknowledgements and checkpoints ----------------------------------------------------------------

    def _on_ack(self, records: Sequence[Record]) -> None:
        ack = self.watermark.ack
        for record in records:
            ack(record.seq)
        self._popped += len(records)
        self._last_progress = time.monotonic()
        self._acked.set()

    async def _checkpoint(self) -> None:
        """Persist the newest safe marker, then release it upstream (never the other way round).

        A checkpoint the stop cancelled between the two (written, or being written, but not released) is
        finished by the last one (_run): the source is told what the file says."""
        taken = self.watermark.take()
        if taken is not None:
            seq, marker = taken
            self._unreleased = self._with_reloads(marker.checkpoint, seq), marker
        if self._unreleased is None:
            return
        checkpoint, marker = self._unreleased
        try:
            await self._save(checkpoint)
        except Exception:
            self._checkpoint_err.inc()
            raise
        self._checkpoint_ok.inc()
        now = time.time()
        self._checkpoint_ts.set(now)
        if marker.commit_epoch is not None:
            self._checkpoint_pos_ts.set(marker.commit_epoch)
        self._last_checkpoint, self._last_checkpoint_at = checkpoint, now
        await self.source.ack(marker.checkpoint)
        self._unreleased = None

    async def _hold_start(self, start: Checkpoint | None) -> None:
        """Write a fresh task's start position before it reports ready. It started at the server's position of
        that moment; a binlog position is held by nothing but this file, so without it a kill before the first
        acknowledged record made the next start begin at the server's new position, past the changes between.
        Nothing was read before it: writing it acknowledges nothing."""
        if start is None:
            return
        await self._save(start)
        self._last_checkpoint, self._last_checkpoint_at = start, time.time()
        await self.source.ack(start)

    async def _save(self, checkpoint: Checkpoint) -> None:
        """Write ``checkpoint``, one write at a time (the store writes through one temporary file).

        Shielded: cancelling the checkpoint task at stop does not stop the thread, and the final checkpoint
        must not race it on the same temporary file (or be overwritten by it): _run waits for this first."""
        while self._saving is not None and not self._saving.done():
            with contextlib.suppress(Exception):  # the other writer's failure is its own to report
                await asyncio.shield(self._saving)
        self._saved = checkpoint
        self._saving = asyncio.ensure_future(asyncio.to_thread(self.store.save, checkpoint))
        await asyncio.shield(self._saving)

    def _with_reloads(self, checkpoint: Checkpoint, seq: int) -> Checkpoint:
        """``checkpoint`` (of the marker numbered ``seq``) naming every reload requested after that marker."""
        checkpoint, self._reload_cuts = stamp_requested_reloads(checkpoint, seq, self._reload_cuts)
        return checkpoint

    async def _checkpoint_loop(self) -> None:
        interval = self.cfg.checkpoint.interval
        while True:
            await self._acked.wait()
            self._acked.clear()
            await self._checkpoint()
            if interval:
                await asyncio.sleep(interval)

    # --- reading -----------------------------------------------------------------------------------------

    def _stamp(self, record: Record) -> None:
        """Note the commit time (load rows: now) of the run of records numbered next, for the delivery lag."""
        epoch = record.commit_epoch
        self.watermark.stamp(time.time() if epoch is None else epoch, time.monotonic())

    async def _emit(self, record: Record) -> None:
        self._stamp(record)
        record.seq = self.watermark.issue()
        await self._put(record)

    async def _put(self, record: Record) -> None:
        """Hand one numbered record to the sink (or its dead-letter stand-in, under the same number)."""
        try:
            await self.sink.put(record)
        except OversizeRecordError as exc:
            if self.cfg.target.oversize_policy != "dead-letter":
                raise
            await self.sink.put(await self._divert(record, exc))
        self._pushed += 1  # after put(): one record in the sink per sequence number, diverted or not

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
        await asyncio.to_thread(append_durably, path, line)
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

    async def _emit_many(self, records: list[Record], start: int, stop: int) -> None:
        """:meth:`_emit` for ``records[start:stop]``, handed to the sink as a list: one await per run, not per
        record (a full load maps ~1,000 rows per batch, and a per-record await was a tenth of its CPU)."""
        sink = self.sink
        done = start
        if start < stop:
            self._stamp(records[start])  # a run is in commit order: its first record is its oldest
        while done < stop:
            # Number only what the sink takes without waiting (at least one, for which it waits): records in
            # flight stay bounded by max_buffered_records, as with one put() per record.
            end = min(stop, done + max(1, sink.room))
            seq = self.watermark.issue_many(end - done)
            for i in range(done, end):
                records[i].seq = seq
                seq += 1
            while done < end:
                queued = await sink.put_many(records, done, end)
                self._pushed += queued
                done += queued
                if done < end:  # put_many stopped before an oversize record: put() raises for it
                    await self._put(records[done])
                    done += 1

    async def _flush_events(self, events: list[ChangeEvent | FusedRows]) -> None:
        records = self.mapper.map(events)
        events.clear()
        await self._emit_records(records)

    async def _emit_records(self, records: list[Record]) -> None:
        start = 0
        for i, record in enumerate(records):
            if record.barrier:
                await self._emit_many(records, start, i)
                # Control records (TRUNCATE, DROP, ALTER) are rare: a full drain on both sides of one is cheap
                # and orders it against every partition key, which retries per key alone could not.
                await self.sink.drain()
                await self._emit(record)
                await self.sink.drain()
                start = i + 1
        await self._emit_many(records, start, len(records))

    async def _read_loop(self) -> None:
        events: list[ChangeEvent | FusedRows] = []
        batch: Sequence[Item]
        # aclosing: a return below runs the source's own clean-up (a full load's sessions) here and now.
        async with contextlib.aclosing(self.source.changes()) as changes:
            if self.cdc is not None:
                await self.cdc.run(changes, self._stop, self._delivery())
                return
            async for batch in changes:
                if self._stop.is_set():
                    # Cooperative as well as cancelled: a stop must not depend on a cancellation being
                    # delivered (see runtime/stopping.py); nothing read after it is handed over.
                    return
                await self._handle(batch, events)

    def _delivery(self) -> Delivery:
        """How the CDC workers' answers (workers/cdc.py) are handed over: as :meth:`_handle` hands its own."""
        from cdcstream.workers.cdc import Delivery

        def marker(item: Marker) -> None:
            self.watermark.issue_marker(item)
            self._acked.set()

        def handling(busy: bool) -> None:
            self._delivering_since = time.monotonic() if busy else None
            if not busy:
                self._read_at = time.monotonic()

        return Delivery(self._emit_records, marker, self.sink.drain, handling)

    async def _handle(self, batch: Sequence[Item], events: list[ChangeEvent | FusedRows]) -> None:
        """Map one batch from the source and hand its records and markers to the sink and the watermark."""
        self._delivering_since = time.monotonic()
        for item in batch:
            if isinstance(item, Marker):
                if events:
                    await self._flush_events(events)
                self.watermark.issue_marker(item)
                self._acked.set()
                continue
            is_load = isinstance(item, MappedRows) or item.op is Op.LOAD
            if is_load is not self._after_load and self._after_load is not None:
                # Per-key order across a switch between load rows and CDC (after the initial load, around
                # reload --table): a row's load record and its changes are under different partition keys
                # (primary key vs schema.table by default), so one side must be in the stream first.
                if events:
                    await self._flush_events(events)
                await self.sink.drain()
            self._after_load = is_load
            if isinstance(item, MappedRows):  # load rows a mapping worker process turned into records
                if events:
                    await self._flush_events(events)
                await self._emit_records(item.records)
            else:
                events.append(item)
        if events:  # a transaction split across batches: map what we have, its marker comes later
            await self._flush_events(events)
        self._read_at = time.monotonic()
        self._delivering_since = None

    # --- supervision -------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "task_id": self.cfg.task_id,
            "stream": self.cfg.target.stream_name,
            "source": self.source.status(),
            "watermark": self.watermark.status(),
            "checkpoint": {"position": self._last_checkpoint, "written_at": self._last_checkpoint_at or None},
            "lag": {
                "read_seconds": self.source.read_lag if isinstance(self.source, SupportsReadLag) else None,
                "delivery_seconds": self._delivery_lag(),
                "probe": self.probe.last if self.probe else None,
                "probed_at": self.probe.last_at if self.probe else None,
            },
            "queues": {
                "sink": {
                    "depth": self._pushed - self._popped,
                    "capacity": self.cfg.target.max_buffered_records,
                    "bytes": self.sink.outstanding_bytes,
                    "bytes_capacity": self.cfg.target.max_buffered_bytes,
                    "pushed": self._pushed,
                    "popped": self._popped,
                }
            },
            "full_load": {
                "migration_type": self.cfg.migration_type,
                "mapping_workers": self.pool.status() if self.pool is not None else {"processes": 0, "pids": []},
                **(self.source.status().get("full_load") or {"tables": {}}),
            },
            "cdc": {"mapping_workers": self.cdc.status() if self.cdc is not None else {"processes": 0, "pids": []}},
            "health": {"ready": self.ready()[1], "alive": self._unhealthy or "ok"},
        }

    async def _reload(self, table: str) -> str:
        """``POST /reload?table=schema.table``: re-copy one table while CDC runs (sources that support it)."""
        if not isinstance(self.source, SupportsReload) or not self._started:
            raise SourceError("reload: not available (source still starting, or it has no reload)")
        answer = await self.source.request_reload(table)
        if self.cdc is not None:  # changes read before the request, still with the workers, are numbered first
            await self.cdc.settled()
        self._reload_cuts.append((table, self.watermark.next_seq))
        if self._saved is not None:
            # Durable before the answer: a crash before the next checkpoint must not forget the request.
            await self._save(self._with_reloads(self._saved, -1))
        return answer

    def _control_token(self) -> str | None:
        """The token POST /reload requires. A state directory that cannot hold a generated one disables the
        control endpoint (said in the log), never the daemon: streaming does not depend on it."""
        try:
            return daemon_token(self.cfg)
        except OSError as exc:
            log.error(
                "control endpoint disabled: cannot keep the control token in the state directory; set [http] "
                "control_token_file, or fix the directory",
                file=str(token_path(self.cfg)),
                error=exc.strerror or str(exc),
            )
            return None

    def _delivery_lag(self) -> float:
        """Now minus the commit time of the oldest record read and not yet acknowledged by Kinesis, or the
        source's read lag when every record read is acknowledged (never below it)."""
        read_lag = self.source.read_lag if isinstance(self.source, SupportsReadLag) else 0.0
        oldest = self.watermark.oldest()
        return read_lag if oldest is None else max(read_lag, time.time() - oldest[0])

    def ready(self) -> tuple[bool, str]:
        """/readyz: started, source connected, and no record read more than ``ready_window`` ago still waiting
        for Kinesis (acknowledgements that merely trickle in, as over a slow link, are not enough)."""
        if not self._started:
            return False, f"waiting for {self._waiting_for}" if self._waiting_for else "starting"
        if not self.source.status().get("connected"):
            return False, "source not connected"
        window = self.cfg.http.ready_window
        oldest = self.watermark.oldest()
        now = time.monotonic()
        if oldest is not None and now - oldest[1] > window:
            if now - self._last_progress > window:
                return False, f"no acknowledgement for {window:.0f}s with records in flight"
            return False, (
                f"a record read {now - oldest[1]:.0f}s ago is still not acknowledged by Kinesis (ready_window "
                f"{window:.0f}s; delivery lag {self._delivery_lag():.0f}s): delivery is not keeping up"
            )
        return True, "ready"

    def _liveness(self) -> str | None:
        """Why the pipeline is not alive (runtime/liveness.py), or None."""
        window = self.notifier.watchdog_interval or self.cfg.http.ready_window
        reader_at = max(self._read_at, self.source.alive_at if isinstance(self.source, SupportsAliveAt) else 0.0)
        outstanding = self._pushed - self._popped
        sink_at = getattr(self.sink, "alive_at", self._last_progress)
        return assess(time.monotonic(), window, LoopStamps(reader_at, self._delivering_since, outstanding, sink_at))

    async def _supervise_loop(self) -> None:
        """Readiness bookkeeping, STATUS= lines and the progress-gated watchdog ping (WATCHDOG=1 at half the
        interval, and only while :meth:`_liveness` finds both loops alive: a hung pipeline gets restarted)."""
        interval = self.notifier.watchdog_interval
        tick = min(SUPERVISE_TICK, interval / 2) if interval else SUPERVISE_TICK
        last_status = 0.0
        while True:
            await asyncio.sleep(tick)
            if self.watermark.in_flight == 0:
                # Idle counts as progress, so records arriving after a quiet hour are not judged by an old
                # acknowledgement time (at most one tick stale).
                self._last_progress = time.monotonic()
            reason = self._liveness()
            if reason != self._unhealthy:
                if reason is None:
                    log.info("pipeline alive again", watchdog=interval is not None)
                else:
                    log.error("pipeline not making progress, watchdog ping withheld", reason=reason)
                self._unhealthy = reason
            if interval is not None and reason is None:
                self.notifier.watchdog()
            now = time.monotonic()
            if self.notifier.enabled and now - last_status >= STATUS_INTERVAL:
                last_status = now
                age = f"{time.time() - self._last_checkpoint_at:.0f}s ago" if self._last_checkpoint_at else "none"
                self.notifier.status(
                    f"{'streaming' if reason is None else 'stalled: ' + reason}; "
                    f"in flight {self.watermark.in_flight}; buffered {self._pushed - self._popped}; "
                    f"checkpoint {self._last_checkpoint} ({age})"
                )

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        if self._signals > 1:
            # Still safe: nothing unacknowledged was checkpointed; the next start replays from the checkpoint.
            log.warning("second signal, exiting at once", signal=signal.Signals(signum).name)
            os._exit(EXIT_INTERRUPTED)
        log.info(
            "stopping: draining in-flight records",
            signal=signal.Signals(signum).name,
            drain_timeout=self.cfg.target.drain_timeout,
            exit_within=self._deadline.seconds,
        )
        self.stop()

    def stop(self) -> None:
        """Stop cleanly (what SIGTERM does): deliver what is in flight for up to ``drain_timeout``, write the
        last checkpoint, end :meth:`run` with 0; the deadline bounds it all."""
        self.notifier.stopping()
        self._deadline.arm(asyncio.get_running_loop())
        self._stop.set()

    async def run(self) -> int:
        """Run until a signal (exit 0 after draining) or a non-retriable error (raised as CdcstreamError)."""
        # First of all: a second daemon of the same task (or a copy sharing its checkpoint) stops here, before it
        # binds a port or touches the source.
        self.store.lock()
        try:
            return await self._run_locked()
        finally:
            self.store.unlock()

    async def _run_locked(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        for signum in take_early():  # arrived while the interpreter was still starting
            self._on_signal(signum)
        if self.cfg.http.listen:
            self.http = HttpServer(self.cfg.http.listen, self.status, self.ready, self._reload, self._control_token())
            await self.http.start()
        code = EXIT_INTERRUPTED
        try:
            code = await self._run()
            return code
        except CdcstreamError as exc:
            code = exc.exit_code
            raise
        finally:
            # Whatever ended the run (a signal, a fatal error, a completed full load), closing is bounded too;
            # should it alone hang (the interpreter joining threads at exit), the process still exits with this.
            self._deadline.exit_code = code
            self._deadline.arm(loop)
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
            if self.http is not None:
                await self.http.stop()

    async def _start_with_retry(self, what: str, start: Callable[[], Awaitable[None]]) -> None:
        """Start a stage, retrying retriable errors (database still starting, previous walsender not yet gone,
        Kinesis unreachable) with backoff, forever; a stop request ends an attempt or the wait at once
        (StopRequested)."""
        backoff = Backoff(base=0.2, maximum=10.0)
        while True:
            try:
                await first_or_stop(start(), self._stop)
                self._waiting_for = None
                return
            except CdcstreamError as exc:
                if not exc.retriable:
                    raise
                metrics.ERRORS.labels(exc.stage, type(exc).__name__).inc()
                self._waiting_for = f"{what}: {exc}"
                delay = backoff.next()
                log.warning(f"{what} not available yet, retrying", error=str(exc), delay=round(delay, 2))
                # Retrying is the designed behaviour, not a hang: keep the service manager informed and the
                # watchdog fed (a restart would only land here again).
                self.notifier.status(f"waiting for {what}: {str(exc)[:200]}")
                if self.notifier.watchdog_interval is not None:
                    self.notifier.watchdog()
                await first_or_stop(asyncio.sleep(delay), self._stop)

    async def _validate_mapping(self) -> None:
        """Refuse to stream when a rule cannot work for a selected table that exists now (a ${column} or
        partition-key-name it lacks, two tables written as one, ...): better at start than at its first change.
        Warn about rules that match no table (a misspelt name would otherwise capture nothing, silently).
        Tables created later are checked when their first change arrives."""
        if not self.cfg.table_mappings:
            return
        from cdcstream.checks import UNUSED_RULE_FIX, mapping_errors

        try:
            tables = await self._tables()
        except Exception as exc:  # the catalog read is a courtesy; the per-table check at run time still applies
            log.warning("could not check the mapping against the source's tables", error=str(exc))
            return
        for warning in unused_rules(self.mapper.rules, tables):
            log.warning("mapping rule matches nothing", rule=warning, fix=UNUSED_RULE_FIX)
        errors = mapping_errors(self.cfg, self.mapper.rules, tables)
        if errors:
            raise MappingError("\n".join(errors))

    async def _run(self) -> int:
        checkpoint = self.store.load()
        if self.cfg.migration_type == "full-load" and load_completed(checkpoint):
            log.info(
                "full load already completed (checkpoint); nothing to do. Move the checkpoint file away to load again",
                checkpoint_file=str(self.store.path),
            )
            return EXIT_OK
        if self.cfg.migration_type != "cdc" and checkpoint is None:
            # Durable before the source creates its snapshot (a PostgreSQL slot): see intent_checkpoint().
            checkpoint = intent_checkpoint()
            await asyncio.to_thread(self.store.save, checkpoint)
        self._saved = checkpoint
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
                owned = self.store.owned
                try:
                    await self._start_with_retry("source", lambda: self.source.start(checkpoint, owned=owned))
                except PositionRefusedError as exc:
                    raise PositionRefusedError(f"checkpoint {self.store.path}: {exc}") from None
                await first_or_stop(self._validate_mapping(), self._stop)
                if checkpoint is None and isinstance(self.source, SupportsStartCheckpoint):
                    await self._hold_start(self.source.start_checkpoint())
                if self.cdc is not None:  # before "ready": the first change must not wait ~1 s for them
                    await first_or_stop(self.cdc.start(), self._stop)
            except StopRequested:
                log.info("stopped before start-up completed")
                return EXIT_OK
            await self._emit(self.mapper.restart_record())
            self._started = True
            self.notifier.ready(f"streaming from {checkpoint or 'the slot position'}")
            log.info("ready", checkpoint=checkpoint, source=self._label, stream=self.cfg.target.stream_name)
            self.on_started()
            try:
                await self._stream()
            except* CdcstreamError as group:
                err = group.exceptions[0]
                assert isinstance(err, CdcstreamError)
                metrics.ERRORS.labels(err.stage, type(err).__name__).inc()
                raise err from None
            if self._saving is not None:
                await self._saving  # a write the cancelled checkpoint task left running
            await self._checkpoint()
            if self._load_finished:
                log.info(
                    "full load complete: every row is in the stream and checkpointed; exiting (migration_type "
                    "full-load)",
                    checkpoint=self._last_checkpoint,
                )
                return EXIT_OK
            log.info("stopped", checkpoint=self._last_checkpoint)
            return EXIT_OK
        finally:
            await self.source.close()
            await self.sink.close()
            if self.pool is not None:
                await self.pool.close()
            if self.cdc is not None:
                await self.cdc.close()

    async def _stream(self) -> None:
        """Run the stages until a stop request (then drain) or the first non-retriable error."""
        async with asyncio.TaskGroup() as tg:
            sink_task = tg.create_task(self.sink.run(), name="sink")
            read_task = tg.create_task(self._read_loop(), name="source")
            ckpt_task = tg.create_task(self._checkpoint_loop(), name="checkpoint")
            wd_task = tg.create_task(self._supervise_loop(), name="supervise")
            aux = [wd_task]
            if self.probe is not None:
                aux.append(tg.create_task(self.probe.run(), name="lag-probe"))
            stop_task = tg.create_task(self._stop.wait(), name="stop")
            for task in (sink_task, read_task, ckpt_task, *aux):
                task.add_done_callback(self._stage_done)
            await asyncio.wait({sink_task, read_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            # Only a stop request (or, for full-load, the source's end) ends this wait normally; a failing task
            # makes the TaskGroup raise.
            while read_task.done() and not self._stop.is_set():
                with contextlib.suppress(StopRequested):
                    if await first_or_stop(self.sink.drain(timeout=30.0), self._stop):
                        self._load_finished = True
                        break
                    # Not yet (or a fatal sink error, which ends the TaskGroup while this sleeps).
                    log.info("full load read: waiting for Kinesis to acknowledge the last records")
                    await asyncio.sleep(0.5)
            await cancel_and_wait(read_task)
            if not await self.sink.drain(timeout=self.cfg.target.drain_timeout):
                log.warning(
                    "stopping with records still unacknowledged; they will be replayed on restart",
                    unacknowledged=self._pushed - self._popped,
                )
            await cancel_and_wait([ckpt_task, *aux, sink_task, stop_task])

    def _stage_done(self, task: asyncio.Task[None]) -> None:
        """A stage that fails stops the daemon: from then on the stop deadline bounds the rest."""
        if not task.cancelled() and task.exception() is not None:
            self._deadline.arm(asyncio.get_running_loop())
