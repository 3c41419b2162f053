"""The Kinesis Data Streams sink: batches records into PutRecords requests, keeps several in flight, retries
forever with backoff, and acknowledges a record only when Kinesis accepted it.

Guarantees (docs/delivery-guarantees.md): at-least-once (nothing is dropped; a non-retriable error stops ``run()``
with :class:`SinkError` and nothing after it is acknowledged) and per-partition-key order (see
:mod:`cdcstream.sinks.batching`: one request per key at a time, failed records and everything after them
of the same key resent in order).

Partition keys longer than 256 characters (the Kinesis limit) are replaced by the SHA-256 hex digest of
their UTF-8 bytes (64 characters): deterministic, so all records of one long key still share a shard and
stay ordered.

Kept in one file over 500 lines: the send loop, its retries and the buffer bounds are one asyncio state machine
(split only with care for the per-request hot path).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import Any

import structlog

from cdcstream.config import TargetConfig
from cdcstream.errors import OversizeRecordError, SinkError, SinkRetriableError
from cdcstream.records import Record
from cdcstream.runtime.stopping import cancel_and_wait
from cdcstream.sinks import AckCallback, hints
from cdcstream.sinks.batching import MAX_PARTITION_KEY_CHARS as MAX_PARTITION_KEY_CHARS
from cdcstream.sinks.batching import (
    THROTTLE_ENTRY_ERRORS,
    Batch,
    Batcher,
    RequestLimit,
    key_size,
)
from cdcstream.sinks.putrecords import RETRIABLE_REQUEST_ERRORS, PutRecordsClient, error_hint
from cdcstream.sinks.shards import ShardLimiter, ShardMap
from cdcstream.telemetry import metrics

log = structlog.get_logger(__name__)

#: PutRecords accepts at most 500 entries per request.
MAX_RECORDS_PER_REQUEST = 500
#: Request byte limit (sum of data + partition key of all entries). The API allows 10 MiB per request on
#: streams whose MaxRecordSizeInKiB was raised above 1 MiB (2025 API); streams at the 1 MiB default (and every
#: emulator) keep the historical 5 MiB.
MAX_REQUEST_BYTES_DEFAULT = 5 * 1024 * 1024
MAX_REQUEST_BYTES_LARGE = 10 * 1024 * 1024
#: Used when DescribeStreamSummary does not report MaxRecordSizeInKiB (older servers, emulators).
DEFAULT_MAX_RECORD_KIB = 1024
#: Per-shard record budget with aggregation (user records per second; bytes are what binds then).
AGGREGATED_RECORDS_BUDGET = 1e9
#: How often a throttling summary is logged while throttling goes on.
THROTTLE_LOG_INTERVAL = 10.0
#: Memory a buffered record takes besides its data and partition key (the Record object, its sequence number
#: and commit time, its slot in the per-key queue), counted against ``max_buffered_bytes``: measured ~200 bytes
#: (bench/README.md, "Memory per buffered record").
RECORD_OVERHEAD = 200


def effective_partition_key(key: str) -> str:
    """The partition key actually sent: ``key`` itself, or for keys over 256 characters the SHA-256 hex
    digest of its UTF-8 encoding (deterministic, so one long key always maps to the same shard). An empty key
    (rejected by Kinesis) becomes the digest of the empty string for the same reason."""
    if 0 < len(key) <= MAX_PARTITION_KEY_CHARS:
        return key
    return hashlib.sha256(key.encode()).hexdigest()


class KinesisSink:
    """:class:`cdcstream.sinks.Sink` writing to one Kinesis data stream with PutRecords."""

    def __init__(
        self,
        cfg: TargetConfig,
        on_ack: AckCallback,
        *,
        session: Any = None,
    ) -> None:
        self.cfg = cfg
        self._on_ack = on_ack
        self._aio_session = session
        self._batcher = Batcher(cfg.retry_base_delay, cfg.retry_max_delay, ordered=cfg.ordering == "per-key")
        self._linger = cfg.linger_ms / 1000.0
        self._max_buffered = cfg.max_buffered_records
        self._max_bytes = cfg.max_buffered_bytes
        self._max_in_flight = cfg.max_in_flight_requests
        self.max_record_bytes = DEFAULT_MAX_RECORD_KIB * 1024
        self.max_request_bytes = MAX_REQUEST_BYTES_DEFAULT
        self._limit = RequestLimit(MAX_RECORDS_PER_REQUEST, self.max_request_bytes, cfg.request_timeout)
        self._client: PutRecordsClient | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Records put and not yet acknowledged (buffered + in flight), and their size (data + partition key +
        # RECORD_OVERHEAD each): the backpressure bounds.
        self._outstanding = 0
        self._outstanding_bytes = 0
        self.acknowledged_bytes = 0  # counted the same way, in total (the byte queue's "popped")
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._empty = asyncio.Event()
        self._empty.set()
        self._fatal: BaseException | None = None
        self._closed = False
        # When the run loop will wake by itself (inf: only on an event); put() wakes it earlier if needed.
        self._timer_at = float("inf")
        self._puts_since_scan = 0
        self._bytes_since_scan = 0
        self._throttled_since_log = 0
        self._throttle_log_at = 0.0
        stream = cfg.stream_name
        self._m_sent = metrics.RECORDS_SENT.labels(stream)
        self._m_bytes = metrics.RECORD_BYTES_SENT.labels(stream)
        self._m_lat = {o: metrics.PUT_LATENCY.labels(stream, o) for o in ("ok", "partial", "error")}
        self._m_batch = metrics.BATCH_RECORDS.labels(stream)
        self._m_retry = {r: metrics.RETRIES.labels(stream, r) for r in ("throttle", "partial", "request_error")}
        self._m_inflight = metrics.INFLIGHT_RECORDS.labels(stream)
        self._m_connected = metrics.SINK_CONNECTED.labels(stream)
        self._m_lag = metrics.END_TO_END_LAG.labels(stream)
        self._m_throttled: dict[str, Any] = {}
        self._m_failed: dict[str, Any] = {}
        self._m_request_errors = metrics.ERRORS.labels("sending", "SinkRetriableError")
        # Monotonic time a PutRecords request last finished (accepted, partial or failed): the pipeline's
        # watchdog counts a sink that keeps retrying through an outage as alive, a silent one as wedged.
        self.alive_at = time.monotonic()

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Check the stream (exists, ACTIVE/UPDATING), read its record size limit, open the HTTP session.

        One attempt, bounded by ``request_timeout``: :class:`SinkRetriableError` when the endpoint is unreachable,
        answers 5xx or throttling, or the stream is not ACTIVE yet (the pipeline retries with backoff, forever,
        as it does for connection errors once running); :class:`SinkError` for what retrying cannot fix (the
        stream does not exist or is being deleted, access denied, no credentials)."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session
        from botocore.exceptions import BotoCoreError, ClientError

        cfg = self.cfg
        where = f"stream {cfg.stream_name} in {cfg.region}{' at ' + cfg.endpoint_url if cfg.endpoint_url else ''}"
        session = self._aio_session or get_session()
        credentials = await session.get_credentials()
        if credentials is None:
            raise SinkError(f"stream {cfg.stream_name}: {hints.no_credentials(cfg.endpoint_url)}")
        # One try per call (the caller's backoff retries), each bounded: botocore's defaults (60 s connect
        # timeout, several retries) would leave the log silent for minutes while the endpoint is unreachable.
        config = AioConfig(
            connect_timeout=min(10.0, cfg.request_timeout),
            read_timeout=cfg.request_timeout,
            retries={"max_attempts": 1},
        )
        async with session.create_client(
            "kinesis", region_name=cfg.region, endpoint_url=cfg.endpoint_url, config=config
        ) as kc:
            try:
                summary: dict[str, Any] = (await kc.describe_stream_summary(StreamName=cfg.stream_name))[
                    "StreamDescriptionSummary"
                ]
                status = summary.get("StreamStatus", "?")
                if status == "DELETING":
                    raise SinkError(f"Kinesis stream {cfg.stream_name} is being deleted")
                if status not in ("ACTIVE", "UPDATING"):
                    raise SinkRetriableError(f"Kinesis {where} is {status}, not ACTIVE yet")
                if cfg.shard_rate_limit:
                    shard_map = await self._read_shard_map(kc)
                    # Aggregated records are few and large: only the byte budget binds.
                    per_second = AGGREGATED_RECORDS_BUDGET if cfg.aggregation else cfg.shard_records_per_second
                    self._batcher.limiter = ShardLimiter(
                        shard_map, per_second, cfg.shard_bytes_per_second, time.monotonic()
                    )
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "?")
                http_status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                call = exc.operation_name
                if code == "ResourceNotFoundException":
                    raise SinkError(str(hints.missing_stream(cfg.stream_name, cfg.region, cfg.endpoint_url))) from None
                if code in RETRIABLE_REQUEST_ERRORS or http_status >= 500 or http_status == 429:
                    raise SinkRetriableError(f"Kinesis {where}: {call} answered {code}") from None
                raise SinkError(
                    f"{call} on stream {cfg.stream_name} failed: {code}: {exc} -- {error_hint(code)}"
                ) from None
            except BotoCoreError as exc:
                raise SinkRetriableError(f"Kinesis endpoint for {where} unreachable: {exc}") from None
        self._m_connected.set(1)
        kib = summary.get("MaxRecordSizeInKiB") or DEFAULT_MAX_RECORD_KIB
        self.max_record_bytes = int(kib) * 1024
        self.max_request_bytes = (
            MAX_REQUEST_BYTES_LARGE if self.max_record_bytes > 1024 * 1024 else MAX_REQUEST_BYTES_DEFAULT
        )
        self._client = PutRecordsClient(
            stream_name=cfg.stream_name,
            region=cfg.region,
            endpoint_url=cfg.endpoint_url,
            credentials=credentials,
            request_timeout=cfg.request_timeout,
            max_connections=max(4, self._max_in_flight),
        )
        if cfg.aggregation:
            self._client.aggregate_max_bytes = self.max_record_bytes
            # protobuf framing costs a few bytes per record more than a repeated partition key saves
            self.max_request_bytes -= MAX_RECORDS_PER_REQUEST * 16
        self._limit = RequestLimit(MAX_RECORDS_PER_REQUEST, self.max_request_bytes, cfg.request_timeout)
        log.info(
            "kinesis sink started",
            stream=cfg.stream_name,
            status=status,
            shards=summary.get("OpenShardCount"),
            max_record_bytes=self.max_record_bytes,
            max_request_bytes=self.max_request_bytes,
        )

    async def _read_shard_map(self, client: Any) -> ShardMap:
        """Open shards and their hash-key ranges (ListShards, paginated)."""
        shards: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"StreamName": self.cfg.stream_name}
        while True:
            resp = await client.list_shards(**kwargs)
            shards.extend(resp.get("Shards", []))
            token = resp.get("NextToken")
            if not token:
                return ShardMap.from_list_shards(shards)
            kwargs = {"NextToken": token}

    async def _refresh_shard_map(self) -> None:
        """Re-read the shard map now and then, so budgets follow resharding (new shards, merged shards)."""
        from aiobotocore.session import get_session
        from botocore.exceptions import BotoCoreError, ClientError

        cfg = self.cfg
        session = self._aio_session or get_session()
        while True:
            await asyncio.sleep(cfg.shard_map_refresh)
            limiter = self._batcher.limiter
            if limiter is None:
                return
            try:
                async with session.create_client(
                    "kinesis", region_name=cfg.region, endpoint_url=cfg.endpoint_url
                ) as kc:
                    shard_map = await self._read_shard_map(kc)
            except (BotoCoreError, ClientError, ValueError) as exc:
                log.warning("cannot refresh the shard map, keeping the old one", stream=cfg.stream_name, error=str(exc))
                continue
            if shard_map.shard_ids != limiter.map.shard_ids:
                log.info("shard map changed", stream=cfg.stream_name, shards=len(shard_map))
                limiter.replace_map(shard_map, time.monotonic())

    async def close(self) -> None:
        """Stop: cancel in-flight requests (their records stay unacknowledged) and close the HTTP session."""
        self._closed = True
        await cancel_and_wait(list(self._tasks))
        self._wake.set()
        self._space.set()
        if self._client is not None:
            await self._client.close()

    # --- input ----------------------------------------------------------------------------------------------
    async def _wait_space(self) -> None:
        """Wait while ``max_buffered_records`` records or ``max_buffered_bytes`` are unacknowledged (raises a
        fatal error instead)."""
        while self._outstanding >= self._max_buffered or self._outstanding_bytes >= self._max_bytes:
            if self._fatal is not None:
                raise self._fatal
            if self._closed:
                raise SinkError(f"Kinesis sink for stream {self.cfg.stream_name} is closed")
            self._space.clear()
            await self._space.wait()
        if self._fatal is not None:
            raise self._fatal

    @property
    def room(self) -> int:
        """Records :meth:`put_many` queues now without waiting for buffer space (by the record bound; the byte
        bound may stop it earlier, and then it waits)."""
        if self._outstanding_bytes >= self._max_bytes:
            return 0
        return max(0, self._max_buffered - self._outstanding)

    async def put_many(self, records: Sequence[Record], start: int, stop: int) -> int:
        """Queue ``records[start:stop]`` in order (see :meth:`cdcstream.sinks.Sink.put_many`): the batcher takes
        the run in one call (:meth:`Batcher.add_run`) as far as the buffer has room, so a run costs one await and
        a few calls, not a call and a dozen counter updates per record."""
        await self._wait_space()
        batcher = self._batcher
        max_buffered = self._max_buffered
        max_bytes = self._max_bytes
        max_record = self.max_record_bytes
        now = time.monotonic()
        new_keys = False
        i = start
        while i < stop:
            room = max_buffered - self._outstanding
            room_bytes = max_bytes - self._outstanding_bytes
            if room <= 0 or room_bytes <= 0:
                self._wake_if_due(new_keys, now)  # the run loop must send for space to come
                new_keys = False
                await self._wait_space()
                now = time.monotonic()
                continue
            n, nbytes, new = batcher.add_run(
                records, i, min(stop, i + room), now, max_record, room_bytes, RECORD_OVERHEAD
            )
            if n:
                i += n
                self._outstanding += n
                self._outstanding_bytes += nbytes + n * RECORD_OVERHEAD
                self._puts_since_scan += n
                self._bytes_since_scan += nbytes
                new_keys = new_keys or new
                continue
            # add_run stopped at records[i] itself (room is left): a key sent hashed, or an oversize record.
            record = records[i]
            key = effective_partition_key(record.partition_key)
            size = len(record.data) + key_size(key)
            if size > max_record:
                break  # put() raises OversizeRecordError with the details (the caller puts it alone)
            self._outstanding += 1
            self._outstanding_bytes += size + RECORD_OVERHEAD
            if batcher.add(key, record, now, size):
                new_keys = True
            self._puts_since_scan += 1
            self._bytes_since_scan += size
            i += 1
        if i > start:
            self._empty.clear()
            self._wake_if_due(new_keys, now)
        return i - start

    def _wake_if_due(self, new_key: bool, now: float) -> None:
        # Wake the run loop only when it may have something new to do: a full request's worth arrived, or a
        # new key whose linger deadline is earlier than the loop's own timer. Waking on every put would make
        # each put rescan the pending records.
        limit = self._limit
        if (
            self._puts_since_scan >= limit.records
            or self._bytes_since_scan >= limit.bytes
            or (new_key and now + self._linger < self._timer_at)
        ):
            self._wake.set()

    async def put(self, record: Record) -> None:
        """Queue ``record``; waits while ``max_buffered_records`` records are unacknowledged."""
        if await self.put_many((record,), 0, 1):
            return
        key = effective_partition_key(record.partition_key)
        size = len(record.data) + len(key.encode())
        raise OversizeRecordError(
            f"record of table {record.label or '?'} (partition key {key[:80]!r}) is {size} bytes "
            f"(data + partition key), over stream {self.cfg.stream_name}'s maximum record size of "
            f"{self.max_record_bytes} bytes; raise the stream's MaxRecordSizeInKiB, exclude the columns, or "
            'set [target] oversize_policy = "dead-letter"',
            size=size,
            limit=self.max_record_bytes,
        )

    # --- delivery -------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Send requests until :meth:`close`; raises SinkError on a non-retriable error."""
        if self._client is None:
            raise SinkError("KinesisSink.run() called before start()")
        batcher = self._batcher
        linger = self._linger
        limit = self._limit
        loop = asyncio.get_running_loop()
        refresher = asyncio.create_task(self._refresh_shard_map()) if batcher.limiter is not None else None
        try:
            while not self._closed:
                if self._fatal is not None:
                    raise self._fatal
                now = time.monotonic()
                self._puts_since_scan = 0
                self._bytes_since_scan = 0
                while len(self._tasks) < self._max_in_flight:
                    batch = batcher.take_batch(now, limit.records, limit.bytes, linger)
                    if batch is None:
                        break
                    self._launch(batch)
                wake_at: float | None = None
                if len(self._tasks) < self._max_in_flight:
                    wake_at = batcher.next_wakeup(now, linger)
                self._wake.clear()
                if wake_at is None:
                    self._timer_at = float("inf")
                    await self._wake.wait()
                else:
                    self._timer_at = wake_at
                    delay = wake_at - time.monotonic()
                    if delay > 0:
                        handle = loop.call_later(delay, self._wake.set)
                        try:
                            await self._wake.wait()
                        finally:
                            handle.cancel()
        finally:
            self._timer_at = float("inf")
            if refresher is not None:
                refresher.cancel()
        if self._fatal is not None:
            raise self._fatal

    def _launch(self, batch: Batch) -> None:
        n = len(batch.records)
        self._m_inflight.inc(n)
        self._m_batch.observe(n)
        task = asyncio.create_task(self._send(batch), name=f"kinesis-put-{self.cfg.stream_name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        # Done callbacks run after the task's own wake-up of the run loop, which may therefore still have
        # counted this task as in flight: wake it again now that the slot is really free.
        self._tasks.discard(task)
        self.alive_at = time.monotonic()
        self._wake.set()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._wake.set()
        self._space.set()
        self._empty.set()

    def _retry_request(self, batch: Batch, exc: SinkRetriableError, t0: float) -> None:
        """A request that failed as a whole and may be retried: its records go back to the queue."""
        now = time.monotonic()
        n = len(batch.records)
        self._m_lat["error"].observe(now - t0)
        if exc.ambiguous:  # no answer at all
            self._m_connected.set(0)
        if exc.timed_out and self._limit.timed_out(batch):
            log.warning(
                "kinesis requests time out: sending smaller ones",
                stream=self.cfg.stream_name,
                timed_out_records=n,
                timed_out_bytes=batch.nbytes,
                max_records=self._limit.records,
                max_bytes=self._limit.bytes,
                request_timeout=self.cfg.request_timeout,
            )
        # An ambiguous failure (timeout, connection lost) may still be written late: resend only after a
        # further request_timeout, so a late original lands before the resend, never after newer records.
        self._batcher.requeue_all(batch, now, self.cfg.request_timeout if exc.ambiguous else 0.0)
        self._m_retry["request_error"].inc(n)
        self._m_request_errors.inc()
        log.warning("kinesis request failed, retrying", stream=self.cfg.stream_name, records=n, error=str(exc))
        self._wake.set()

    async def _send(self, batch: Batch) -> None:
        """One PutRecords request, and what its outcome means; the in-flight count is settled in every branch."""
        assert self._client is not None
        n = len(batch.records)
        t0 = time.monotonic()
        try:
            result = await self._client.put_records(batch)
        except SinkRetriableError as exc:
            self._m_inflight.dec(n)
            self._retry_request(batch, exc, t0)
            return
        except SinkError as exc:
            self._m_lat["error"].observe(time.monotonic() - t0)
            self._m_inflight.dec(n)
            log.error("kinesis request failed", stream=self.cfg.stream_name, error=str(exc))
            self._fail(exc)
            return
        except asyncio.CancelledError:
            self._m_inflight.dec(n)
            raise
        except Exception as exc:  # a bug: stop rather than lose track of the records
            self._m_inflight.dec(n)
            self._fail(SinkError(f"unexpected error sending to stream {self.cfg.stream_name}: {exc!r}"))
            return
        now = time.monotonic()
        self._m_inflight.dec(n)
        self._m_connected.set(1)
        if self._limit.answered(batch, now - t0):
            log.info(
                "kinesis requests answered quickly: sending larger ones"
                + ("" if self._limit.shrunk else " (full size again)"),
                stream=self.cfg.stream_name,
                max_records=self._limit.records,
                max_bytes=self._limit.bytes,
            )
        done = self._batcher.complete(batch, result.codes, now, result.messages)
        acked = done.acked
        self._m_lat["ok" if result.codes is None else "partial"].observe(now - t0)
        if result.codes is not None:
            self._account_failures(done.errors, done.collateral)
            self._account_shard_throttles(batch, result.codes)
        if acked:
            self._m_sent.inc(len(acked))
            if result.codes is None:
                nbytes = batch.nbytes
            else:
                nbytes = sum(len(r.data) + len(r.partition_key) for r in acked)
            self._m_bytes.inc(nbytes)
            oldest = min((r.commit_epoch for r in acked if r.commit_epoch is not None), default=None)
            if oldest is not None:
                self._m_lag.observe(max(0.0, time.time() - oldest))
            try:
                self._on_ack(acked)
            except Exception as exc:
                self._fail(exc)
                return
            self._outstanding -= len(acked)
            freed = done.acked_bytes + RECORD_OVERHEAD * len(acked)
            self._outstanding_bytes -= freed
            self.acknowledged_bytes += freed
            if self._outstanding < self._max_buffered and self._outstanding_bytes < self._max_bytes:
                self._space.set()
            if self._outstanding == 0:
                self._empty.set()
        if done.fatal_code is not None:
            code = done.fatal_code
            self._fail(
                SinkError(
                    f"PutRecords to stream {self.cfg.stream_name}: entries rejected with {code}: "
                    f"{(done.fatal_message or '')[:300]} -- {error_hint(code)}"
                )
            )
            return
        self._wake.set()

    def _account_shard_throttles(self, batch: Batch, codes: list[str | None]) -> None:
        """Throttled entries per shard (bounded label: the stream's shards), to spot hot shards and keys."""
        limiter = self._batcher.limiter
        if limiter is None:
            return
        per_shard: dict[str, int] = {}
        for record, code in zip(batch.records, codes, strict=True):
            if code in THROTTLE_ENTRY_ERRORS:
                shard = limiter.map.shard_ids[limiter.map.shard_of(record.partition_key)]
                per_shard[shard] = per_shard.get(shard, 0) + 1
        for shard, count in per_shard.items():
            metrics.SHARD_THROTTLED_RECORDS.labels(self.cfg.stream_name, shard).inc(count)

    def _account_failures(self, errors: dict[str, int], collateral: int) -> None:
        stream = self.cfg.stream_name
        throttled = 0
        other = 0
        for code, count in errors.items():
            if code in THROTTLE_ENTRY_ERRORS:
                throttled += count
                m = self._m_throttled.get(code)
                if m is None:
                    m = self._m_throttled[code] = metrics.THROTTLED_RECORDS.labels(stream, code)
                m.inc(count)
            else:
                other += count
                m = self._m_failed.get(code)
                if m is None:
                    m = self._m_failed[code] = metrics.FAILED_RECORDS.labels(stream, code)
                m.inc(count)
        if throttled:
            self._m_retry["throttle"].inc(throttled)
        if other or collateral:
            self._m_retry["partial"].inc(other + collateral)
        self._throttled_since_log += throttled + other
        now = time.monotonic()
        if now >= self._throttle_log_at:
            log.warning(
                "kinesis entries rejected, retrying with backoff",
                stream=stream,
                rejected=self._throttled_since_log,
                errors=errors,
                resent_after_failure=collateral,
                summary_interval_s=THROTTLE_LOG_INTERVAL,
            )
            self._throttled_since_log = 0
            self._throttle_log_at = now + THROTTLE_LOG_INTERVAL

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every record put so far is acknowledged; False on timeout or after a fatal error."""
        try:
            async with asyncio.timeout(timeout):
                while self._outstanding > 0 and self._fatal is None:
                    self._empty.clear()
                    await self._empty.wait()
        except TimeoutError:
            return False
        return self._outstanding == 0

    # --- introspection ------------------------------------------------------------------------------------
    @property
    def outstanding(self) -> int:
        """Records put and not yet acknowledged."""
        return self._outstanding

    @property
    def outstanding_bytes(self) -> int:
        """Their size as counted against ``max_buffered_bytes`` (data + partition key + RECORD_OVERHEAD each)."""
        return self._outstanding_bytes

    @property
    def in_flight_requests(self) -> int:
        return len(self._tasks)
