"""Per-partition-key batching for PutRecords: which records go into the next request, and what a (partial)
failure does to them. Pure bookkeeping, no I/O, no clock of its own (callers pass ``now``), so it can be
tested exhaustively against a model.

The ordering rule it enforces (docs/delivery-guarantees.md, "Per-key order"):

* a partition key is never in two in-flight requests at once, and within a request its records are in put
  order;
* after a partial failure, for each key the records before its first failed entry are acknowledged, and
  the first failed entry plus **every later entry of that key in that request** (even those Kinesis
  accepted) go back, in order, to the front of that key's queue. Accepted-but-resent records become
  duplicates; a consumer keeping the last occurrence of each record still sees the key's records in put
  order.
* a key that failed waits for its own backoff delay (full jitter); other keys go on.

Keeping duplicates low: every accepted entry after a key's first failure is a duplicate, so after a failure
a key's requests are limited by a congestion window, as in TCP Reno: halved on a partial failure, doubled per
fully accepted request up to the last threshold, then grown by one record per request. Under 10 % random
per-entry failures this keeps duplicates near 20 % of records (a fixed 500-record request would resend ~10
accepted entries per failure); a key with no failure for ``WINDOW_RESET`` seconds gets its full size back.

Hot-path notes: records are stored as-is in a deque per key (no per-record wrapper objects); a request is
a flat list of records plus a list of ``(key, count)`` groups, each key's records contiguous. Keys live
in a dict in arrival order; a key whose queue empties is removed, so when it comes back it goes to the
back (fairness).

Fast lane: a record whose key has nothing queued and nothing in flight waits
in ``_fresh`` (key -> record, arrival order) instead of a queue of its own. A request of fast-lane records has
pairwise distinct keys by construction, so it is built without any per-key planning: a full load keyed by
primary key (every record a new key) skips the per-key bookkeeping that was a sixth of its CPU. A second record
for a key still in the fast lane moves both to an ordinary queue, in order; once taken, a fast-lane key is in
flight like any other, so later records of it queue behind it and failures requeue exactly as above.

Kept in one file over 500 lines: the Batcher's take and complete paths share one set of per-key invariants
(queues, fast lane, in-flight keys, windows) that a split would scatter across modules.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from cdcstream import compiled
from cdcstream.records import Record
from cdcstream.runtime.retry import Backoff
from cdcstream.sinks.shards import ShardLimiter

#: Per-entry error codes that mean "try again later". Everything else is a non-retriable error.
RETRIABLE_ENTRY_ERRORS = frozenset(
    {"ProvisionedThroughputExceededException", "KMSThrottlingException", "InternalFailure"}
)
#: Entry errors that are throttling (for the ``reason`` label of the retries metric).
THROTTLE_ENTRY_ERRORS = frozenset({"ProvisionedThroughputExceededException", "KMSThrottlingException"})


#: Kinesis partition keys are 1..256 Unicode characters (the sink sends a longer or empty key hashed).
MAX_PARTITION_KEY_CHARS = 256


def _compiled_add_run() -> Callable[..., tuple[int, int, int, int, int]] | None:
    """``add_run`` of the sink's optional C extension (``_putrecords.c``: :meth:`Batcher.add_run`'s two common cases
    per record in C); None without the extension or with ``CDCSTREAM_PURE=1``."""
    try:
        from cdcstream.sinks._putrecords import add_run
    except ImportError:
        return None
    return None if compiled.pure_requested() else add_run


_ADD_RUN = _compiled_add_run()

#: Seconds without a failure after which a key's congestion window is forgotten (full-size requests again).
WINDOW_RESET = 5.0


@dataclass(slots=True)
class Window:
    """A key's congestion window: at most ``cap`` of its records per request."""

    cap: float
    threshold: float
    last_failure: float


class Batch:
    """One PutRecords request: ``records`` in request order, grouped by key (``keys[i]`` owns the next
    ``counts[i]`` records). ``nbytes`` is the request size as Kinesis counts it (data + partition key)."""

    __slots__ = ("counts", "entry_sizes", "key_sizes", "keys", "nbytes", "records")

    def __init__(self) -> None:
        # With aggregation: user records per Kinesis entry, in order (set when the request body is built).
        self.entry_sizes: list[int] | None = None
        self.keys: list[str] = []
        self.counts: list[int] = []
        self.key_sizes: list[int] = []
        self.records: list[Record] = []
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"Batch(records={len(self.records)}, keys={len(self.keys)}, nbytes={self.nbytes})"


@dataclass(slots=True)
class Completion:
    """What :meth:`Batcher.complete` decided for one request."""

    acked: list[Record]
    #: Data + partition key bytes of ``acked`` (what the sink counts against its byte bound).
    acked_bytes: int = 0
    #: Records that go back to their key's queue because Kinesis rejected them, by error code.
    errors: dict[str, int] = field(default_factory=dict)
    #: Records Kinesis accepted but that are resent because an earlier record of their key failed.
    collateral: int = 0
    #: The first non-retriable per-entry error code, if any (the caller stops the pipeline on it).
    fatal_code: str | None = None
    fatal_message: str | None = None

    @property
    def requeued(self) -> int:
        return sum(self.errors.values()) + self.collateral


class RequestLimit:
    """How large the next PutRecords request may be: the API's limits, scaled down after a request timed out and
    back up after fast answers, so that a link too slow for full requests still delivers, at its own rate.

    Over a 15 KB/s link a 500-record request (~250 KB) takes longer than ``request_timeout``; resent at the same
    size it timed out again, forever, and nothing was delivered. Here a timeout scales the limits down so the next
    request is a quarter of the one that timed out (requests in flight share the link, so the time a request
    takes grows with its size; a quarter brings one that took up to 4x too long under the timeout, and repeated
    timeouts reach any rate geometrically), and an answer in under a quarter of the timeout to a request of at
    least half the limit doubles them again, up to the API's limits: requests settle between a quarter of the
    timeout and the timeout. A request always takes at least one record (the batcher's rule), so a one-record
    request that times out is as small as it gets (only a longer ``request_timeout`` helps then).
    Pure bookkeeping: the sink reports outcomes, the batcher reads ``records`` and ``bytes``.
    """

    __slots__ = ("bytes", "max_bytes", "max_records", "records", "scale", "timeout")

    def __init__(self, max_records: int, max_bytes: int, timeout: float) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._set(1.0)

    def _set(self, scale: float) -> None:
        self.scale = scale
        self.records = max(1, int(self.max_records * scale))
        self.bytes = max(1, int(self.max_bytes * scale))

    @property
    def shrunk(self) -> bool:
        return self.scale < 1.0

    def timed_out(self, batch: Batch) -> bool:
        """``batch`` got no answer within the timeout; True if the limits shrank."""
        if len(batch) <= 1:
            return False
        # A quarter of the request in whichever dimension bound it (the other then binds no earlier).
        scale = max(len(batch) / 4 / self.max_records, batch.nbytes / 4 / self.max_bytes)
        if scale >= self.scale:
            return False  # a request sent before an earlier cut: the limits are already smaller
        self._set(scale)
        return True

    def answered(self, batch: Batch, seconds: float) -> bool:
        """``batch`` was answered after ``seconds``; True if the limits grew."""
        if self.scale >= 1.0 or seconds >= self.timeout / 4:
            return False
        if 2 * len(batch) < self.records and 2 * batch.nbytes < self.bytes:
            return False  # a small request (linger, little traffic) says nothing about the link
        self._set(min(1.0, 2 * self.scale))
        return True


def _count_errors(
    done: Completion, results: Sequence[str | None], messages: Sequence[str | None] | None, start: int, end: int
) -> int:
    """Counts the error codes of entries [start, end) into ``done`` (the first non-retriable one is fatal);
    returns how many of them Kinesis accepted."""
    errors = done.errors
    accepted = 0
    for i in range(start, end):
        code = results[i]
        if code is None:
            accepted += 1
            continue
        errors[code] = errors.get(code, 0) + 1
        if code not in RETRIABLE_ENTRY_ERRORS and done.fatal_code is None:
            done.fatal_code = code
            done.fatal_message = messages[i] if messages is not None else None
    return accepted


def key_size(key: str) -> int:
    """Bytes Kinesis counts for a partition key (its UTF-8 length); ASCII keys skip the encode."""
    return len(key) if key.isascii() else len(key.encode())


class Batcher:
    """Pending records per partition key, keys in flight and per-key backoff.

    ``add`` queues a record; ``take_batch`` builds the next request from keys that are neither in flight nor
    backing off; ``complete`` / ``requeue_all`` apply the outcome of a request.
    """

    __slots__ = (
        "_backoffs",
        "_base_delay",
        "_first_at",
        "_fresh",
        "_fresh_at",
        "_fresh_bytes",
        "_in_flight",
        "_limited_until",
        "_max_delay",
        "_ordered",
        "_queues",
        "_rate_blocked",
        "_ready_at",
        "_ready_heap",
        "_windows",
        "limiter",
        "pending",
        "pending_bytes",
    )

    def __init__(self, base_delay: float = 0.1, max_delay: float = 10.0, *, ordered: bool = True) -> None:
        # ordered=False (``ordering = "none"``): keys may be in several requests at once and a partial failure
        # resends only the rejected entries; for consumers that order by stream-position themselves.
        self._ordered = ordered
        #: Per-shard token buckets (``ShardLimiter``); None = no rate limiting.
        self.limiter: ShardLimiter | None = None
        self._limited_until: float | None = None
        self._rate_blocked: set[str] = set()  # keys the last take_batch skipped for their shard's budget
        self._queues: dict[str, deque[Record]] = {}
        # When the record at the head of a key's queue started waiting (for the linger decision); 0.0 means
        # "already waited enough" (requeued records).
        self._first_at: dict[str, float] = {}
        # The fast lane (module docstring): keys with exactly one pending record, none in flight or queued;
        # when its oldest record started waiting, and the data + key bytes it holds.
        self._fresh: dict[str, Record] = {}
        self._fresh_at = 0.0
        self._fresh_bytes = 0
        self._in_flight: set[str] = set()
        self._ready_at: dict[str, float] = {}
        self._ready_heap: list[tuple[float, str]] = []
        self._backoffs: dict[str, Backoff] = {}
        # Per-key congestion windows after partial failures (module docstring): resending a whole 500-record
        # run of a hot key because its 10th entry was throttled would mostly produce duplicates.
        self._windows: dict[str, Window] = {}
        self._base_delay = base_delay
        self._max_delay = max_delay
        #: Records queued (not in flight) and their data + key bytes.
        self.pending = 0
        self.pending_bytes = 0

    # --- queueing ---------------------------------------------------------------------------------------
    def add(self, key: str, record: Record, now: float, size: int) -> bool:
        """Queue ``record`` under ``key`` (``size`` = data + key bytes). True if the key's queue is new."""
        self.pending += 1
        self.pending_bytes += size
        q = self._queues.get(key)
        if q is None:
            fresh = self._fresh
            if key in fresh:
                # A second record while the first still waits in the fast lane: both to a queue, in order.
                first = fresh.pop(key)
                self._fresh_bytes -= len(first.data) + key_size(key)
                self._queues[key] = deque((first, record))
                self._first_at[key] = self._fresh_at
                return False
            if key not in self._in_flight:
                if not fresh:
                    self._fresh_at = now
                fresh[key] = record
                self._fresh_bytes += size
                return True
            self._queues[key] = deque((record,))
            self._first_at[key] = now
            return True
        q.append(record)
        return False

    def add_run(
        self,
        records: Sequence[Record],
        start: int,
        stop: int,
        now: float,
        max_size: int,
        room_bytes: int,
        overhead: int,
    ) -> tuple[int, int, bool]:
        """:meth:`add` for ``records[start:stop]``, each under its own ``partition_key``, in order, in one call
        (the sink's per-record cost was a call and a dozen attribute updates per record). Stops before a record
        :meth:`add` must not get as is: its key is empty or over :data:`MAX_PARTITION_KEY_CHARS` (the sink sends
        it hashed), or its data + key bytes exceed ``max_size``; and before the next record once the records
        added take ``room_bytes`` (each counted as its data + key bytes + ``overhead``: the sink's buffer bound).
        Returns ``(records added, their data + key bytes, whether a key arrived that had nothing queued)``.

        The loop below is the reference; with the C extension a list goes through :meth:`_add_run_compiled`
        (tests/unit/test_batching.py holds both to :meth:`add` per record)."""
        if _ADD_RUN is not None and type(records) is list:
            return self._add_run_compiled(records, start, stop, now, (max_size, room_bytes, overhead))
        queues = self._queues
        fresh = self._fresh
        in_flight = self._in_flight
        fresh_bytes = self._fresh_bytes
        nbytes = 0
        new_key = False
        i = start
        while i < stop:
            if nbytes + (i - start) * overhead >= room_bytes:
                break
            record = records[i]
            key = record.partition_key
            if not 0 < len(key) <= MAX_PARTITION_KEY_CHARS:
                break
            size = len(record.data) + (len(key) if key.isascii() else len(key.encode()))
            if size > max_size:
                break
            nbytes += size
            i += 1
            # add(), inlined.
            q = queues.get(key)
            if q is not None:
                q.append(record)
            elif key in fresh:
                first = fresh.pop(key)
                fresh_bytes -= len(first.data) + key_size(key)
                queues[key] = deque((first, record))
                self._first_at[key] = self._fresh_at
            elif key not in in_flight:
                if not fresh:
                    self._fresh_at = now
                fresh[key] = record
                fresh_bytes += size
                new_key = True
            else:
                queues[key] = deque((record,))
                self._first_at[key] = now
                new_key = True
        self._fresh_bytes = fresh_bytes
        self.pending += i - start
        self.pending_bytes += nbytes
        return i - start, nbytes, new_key

    def _add_run_compiled(
        self, records: list[Record], start: int, stop: int, now: float, limits: tuple[int, int, int]
    ) -> tuple[int, int, bool]:
        """:meth:`add_run` with the C loop (``_putrecords.add_run``), which appends to existing queues and fills
        the fast lane, and stops at a key that waits in the fast lane or is in flight: those are added here.
        ``limits``: add_run's ``max_size``, ``room_bytes`` and ``overhead``."""
        assert _ADD_RUN is not None
        max_size, room_bytes, overhead = limits
        fresh = self._fresh
        i = start
        nbytes = 0
        new_key = False
        while True:
            was_empty = not fresh
            room = room_bytes - nbytes - (i - start) * overhead
            end, added, added_fresh, new, rare = _ADD_RUN(
                records, i, stop, max_size, room, overhead, self._queues, fresh, self._in_flight
            )
            if was_empty and fresh:
                self._fresh_at = now
            self.pending += end - i
            self.pending_bytes += added
            self._fresh_bytes += added_fresh
            nbytes += added
            new_key = new_key or bool(new)
            i = end
            if not rare:
                return i - start, nbytes, new_key
            # records[i] passed the key, size and room checks; its key waits in the fast lane or is in flight:
            # add()'s other two cases.
            record = records[i]
            size = len(record.data) + key_size(record.partition_key)
            new_key = self.add(record.partition_key, record, now, size) or new_key
            nbytes += size
            i += 1

    @property
    def in_flight_keys(self) -> frozenset[str]:
        return frozenset(self._in_flight)

    def queued(self, key: str) -> list[Record]:
        """The records pending for ``key`` (for tests and debugging)."""
        if key in self._fresh:
            return [self._fresh[key]]
        return list(self._queues.get(key, ()))

    def ready_at(self, key: str) -> float:
        return self._ready_at.get(key, 0.0)

    # --- building requests --------------------------------------------------------------------------------
    def take_batch(self, now: float, max_records: int, max_bytes: int, linger: float = 0.0) -> Batch | None:
        """The next request, or None if nothing may be sent now: from the fast lane or the per-key queues,
        whichever holds the older waiting record first (the other when the first has nothing to send)."""
        if not self._fresh:
            return self._take_queued(now, max_records, max_bytes, linger)
        queues = self._queues
        if queues and self._first_at[next(iter(queues))] < self._fresh_at:
            return self._take_queued(now, max_records, max_bytes, linger) or self._take_fresh(
                now, max_records, max_bytes, linger
            )
        return self._take_fresh(now, max_records, max_bytes, linger) or self._take_queued(
            now, max_records, max_bytes, linger
        )

    def _spill(self, keys: Iterable[str]) -> None:
        """Move these keys' fast-lane records to ordinary queues (in arrival order), where the rules for
        oversize records and spent shard budgets apply."""
        fresh = self._fresh
        queues = self._queues
        for key in keys:
            record = fresh.pop(key)
            self._fresh_bytes -= len(record.data) + key_size(key)
            q = queues.get(key)
            if q is None:
                queues[key] = deque((record,))
                self._first_at[key] = self._fresh_at
            else:  # ordering = "none" only: the key was requeued after a failure while this record waited here
                q.append(record)

    def _take_fresh(self, now: float, max_records: int, max_bytes: int, linger: float) -> Batch | None:
        """The fast lane's oldest records as one request (same full/linger rule as the queues). Its keys are
        pairwise distinct and none is in flight, so no per-key plan is needed."""
        fresh = self._fresh
        if len(fresh) < max_records and self._fresh_bytes <= max_bytes and self._fresh_at > now - linger:
            return None
        batch = Batch()
        records = batch.records
        keys = batch.keys
        key_sizes = batch.key_sizes
        nbytes = 0
        limiter = self.limiter
        # Per shard touched: [records left, bytes left, records taken, bytes taken] of its budget.
        budgets: dict[int, list[float]] = {}
        blocked: list[str] = []
        for key, record in fresh.items():
            ks = len(key) if key.isascii() else len(key.encode())
            size = len(record.data) + ks
            if nbytes + size > max_bytes and records:  # a request takes at least one record (RequestLimit)
                break
            if limiter is not None:
                shard = limiter.map.shard_of(key)
                budget = budgets.get(shard)
                if budget is None:
                    budget = budgets[shard] = [*limiter.available(shard, now), 0, 0]
                if budget[0] < 1 or budget[1] < size:
                    # The shard's budget is spent: the key waits in a queue, where the per-shard wait and
                    # wake-up rules apply; records of other shards go on.
                    blocked.append(key)
                    continue
                budget[0] -= 1
                budget[1] -= size
                budget[2] += 1
                budget[3] += size
            records.append(record)
            keys.append(key)
            key_sizes.append(ks)
            nbytes += size
            if len(records) >= max_records:
                break
        if blocked:
            self._spill(blocked)
        if not records:
            return None
        if limiter is not None:
            for shard, budget in budgets.items():
                if budget[2]:
                    limiter.spend(shard, int(budget[2]), int(budget[3]))
        self._took_fresh(batch, nbytes, now)
        return batch

    def _took_fresh(self, batch: Batch, nbytes: int, now: float) -> None:
        """The fast lane's bookkeeping once ``batch`` took its records."""
        fresh = self._fresh
        keys = batch.keys
        n = len(keys)
        if n == len(fresh):
            fresh.clear()
        else:
            for key in keys:
                del fresh[key]
            self._fresh_at = now  # the rest has been waiting at least since this take
        batch.counts = [1] * n
        batch.nbytes = nbytes
        if self._ordered:
            self._in_flight.update(keys)
        self._fresh_bytes -= nbytes
        self.pending -= n
        self.pending_bytes -= nbytes

    def _take_queued(self, now: float, max_records: int, max_bytes: int, linger: float = 0.0) -> Batch | None:
        """The next request from the per-key queues, or None if nothing may be sent now.

        Takes records of eligible keys (not in flight, backoff expired) in key arrival order, each key's
        records in order, until ``max_records`` or ``max_bytes`` would be exceeded. The batch is returned
        only if it is full or one of its keys has waited at least ``linger``; otherwise nothing is taken.
        Two passes: decide how much of each key fits without touching the queues, then move the records.
        """
        self._limited_until = None
        if self._rate_blocked:
            self._rate_blocked.clear()
        plan, count, nbytes, ready = self._plan_queued(now, max_records, max_bytes, now - linger)
        if not plan or not ready:
            return None
        return self._move_planned(plan, count, nbytes, now)

    def _plan_queued(
        self, now: float, max_records: int, max_bytes: int, deadline: float
    ) -> tuple[list[tuple[str, int, int, int, int]], int, int, bool]:
        """Pass 1: ``(key, count, key bytes, data+key bytes, shard)`` per key that sends, the totals, and whether
        the request may go now (full, or a key in it waited since ``deadline``)."""
        in_flight = self._in_flight
        ready_at = self._ready_at
        first_at = self._first_at
        windows = self._windows
        limiter = self.limiter
        shard_used: dict[int, tuple[int, int]] = {}  # records and bytes planned per shard in this request
        plan: list[tuple[str, int, int, int, int]] = []
        count = 0
        nbytes = 0
        full = False
        lingered = False
        for key, q in self._queues.items():
            if key in in_flight:
                continue
            r_at = ready_at.get(key)
            if r_at is not None:
                if r_at > now:
                    continue
                del ready_at[key]
            ks = key_size(key)
            window = windows.get(key) if windows else None
            cap = int(window.cap) if window is not None else max_records
            shard = -1
            byte_budget = float("inf")
            if limiter is not None:
                room = self._shard_room(limiter, key, len(q[0].data) + ks, now, shard_used)
                if room is None:
                    continue  # this shard's budget is spent: the key waits for the refill, other shards go on
                shard, rec_tokens, byte_budget = room
                cap = min(cap, rec_tokens)
            n = 0
            kb = 0
            for rec in q:
                if n >= cap:
                    break
                size = len(rec.data) + ks
                # A request takes at least one record, even one over max_bytes (a RequestLimit shrunk below it).
                if count + n >= max_records or (nbytes + kb + size > max_bytes and count + n):
                    full = True
                    break
                if kb + size > byte_budget and n:
                    break
                n += 1
                kb += size
            if n:
                plan.append((key, n, ks, kb, shard))
                count += n
                nbytes += kb
                if shard >= 0:
                    prev = shard_used.get(shard, (0, 0))
                    shard_used[shard] = (prev[0] + n, prev[1] + kb)
                if first_at[key] <= deadline:
                    lingered = True
            if full or count >= max_records:
                full = True
                break
        return plan, count, nbytes, full or lingered

    def _shard_room(
        self, limiter: ShardLimiter, key: str, head: int, now: float, shard_used: dict[int, tuple[int, int]]
    ) -> tuple[int, int, float] | None:
        """``(shard, records, bytes)`` the key's shard may still take in this request, or None when its budget is
        spent (the key is then rate-blocked and the wake-up time noted). ``head``: the key's first record's size."""
        shard = limiter.map.shard_of(key)
        rec_tokens, byte_budget = limiter.available(shard, now)
        used = shard_used.get(shard)
        if used is not None:
            rec_tokens -= used[0]
            byte_budget -= used[1]
        # A record larger than a second's byte budget goes alone on a full bucket (and leaves a debt).
        if rec_tokens < 1 or (byte_budget < head and byte_budget < limiter.bytes_per_second):
            t = now + max(
                (1 - rec_tokens) / limiter.records_per_second,
                (head - byte_budget) / limiter.bytes_per_second,
                0.0,
            )
            if self._limited_until is None or t < self._limited_until:
                self._limited_until = t
            self._rate_blocked.add(key)
            return None
        return shard, int(rec_tokens), byte_budget

    def _move_planned(self, plan: list[tuple[str, int, int, int, int]], count: int, nbytes: int, now: float) -> Batch:
        """Pass 2: move the planned records from their queues into a request."""
        queues = self._queues
        first_at = self._first_at
        in_flight = self._in_flight
        limiter = self.limiter
        batch = Batch()
        records = batch.records
        for key, n, ks, kb, shard in plan:
            if limiter is not None:
                limiter.spend(shard, n, kb)
            q = queues[key]
            if n == len(q):
                records.extend(q)
                del queues[key]
                del first_at[key]
            else:
                for _ in range(n):
                    records.append(q.popleft())
                # The rest of this key has been waiting at least since this take.
                first_at[key] = now
            batch.keys.append(key)
            batch.counts.append(n)
            batch.key_sizes.append(ks)
            if self._ordered:
                in_flight.add(key)
        batch.nbytes = nbytes
        self.pending -= count
        self.pending_bytes -= nbytes
        return batch

    def next_wakeup(self, now: float, linger: float) -> float | None:
        """The earliest time something may become sendable without a new event: the oldest eligible key's
        linger deadline or the next backoff expiry. None if only in-flight keys have pending records."""
        best: float | None = None
        if self._fresh:
            best = self._fresh_at + linger
        heap = self._ready_heap
        ready_at = self._ready_at
        while heap:
            t, key = heap[0]
            if ready_at.get(key) != t or key not in self._queues:
                heapq.heappop(heap)  # stale: key became ready or was emptied since
                continue
            if best is None or t < best:
                best = t
            break
        if self._limited_until is not None and (best is None or self._limited_until < best):
            best = self._limited_until
        first_at = self._first_at
        for key in self._queues:
            if key in self._in_flight or key in self._rate_blocked:
                continue
            r_at = ready_at.get(key)
            if r_at is not None and r_at > now:
                continue
            t = first_at[key] + linger
            if best is None or t < best:
                best = t
            # Keys are in arrival order, so the first eligible key is (nearly always) the oldest.
            break
        return best

    # --- outcomes ---------------------------------------------------------------------------------------
    def _requeue_front(
        self, key: str, records: Sequence[Record], key_bytes: int, now: float, min_delay: float = 0.0
    ) -> None:
        q = self._queues.get(key)
        if q is None:
            # Appended at the back of the key order; its backoff governs when it is sent, not its position.
            self._queues[key] = deque(records)
        else:
            q.extendleft(reversed(records))
        self._first_at[key] = 0.0
        self.pending += len(records)
        self.pending_bytes += sum(len(r.data) for r in records) + key_bytes * len(records)
        backoff = self._backoffs.get(key)
        if backoff is None:
            backoff = self._backoffs[key] = Backoff(self._base_delay, self._max_delay)
        t = now + max(min_delay, backoff.next())
        self._ready_at[key] = t
        heapq.heappush(self._ready_heap, (t, key))

    def complete(
        self,
        batch: Batch,
        results: Sequence[str | None] | None,
        now: float,
        messages: Sequence[str | None] | None = None,
    ) -> Completion:
        """Apply per-entry results (an error code, or None for success, per record in ``batch.records``
        order; ``results=None`` means every entry succeeded). Returns the acknowledged records."""
        in_flight = self._in_flight
        if results is None:
            in_flight.difference_update(batch.keys)  # a request's keys are distinct: one group per key
            if self._backoffs:
                for key in batch.keys:
                    self._backoffs.pop(key, None)
            if self._windows:
                for key, n in zip(batch.keys, batch.counts, strict=True):
                    self._grow_window(key, n, now)
            return Completion(batch.records, batch.nbytes)
        if len(results) != len(batch.records):
            raise ValueError(f"{len(results)} results for a batch of {len(batch.records)} records")
        acked: list[Record] = []
        done = Completion(acked)
        records = batch.records
        start = 0
        for key, n, ks in zip(batch.keys, batch.counts, batch.key_sizes, strict=True):
            in_flight.discard(key)
            end = start + n
            first_fail = -1
            for i in range(start, end):
                code = results[i]
                if code is not None:
                    first_fail = i
                    break
            if first_fail < 0:
                acked.extend(records[start:end])
                done.acked_bytes += sum(len(r.data) for r in records[start:end]) + ks * n
                self._backoffs.pop(key, None)
                if key in self._windows:
                    self._grow_window(key, n, now)
            elif not self._ordered:
                self._failed_unordered(done, batch, key, ks, start, first_fail, end, results, messages, now)
            else:
                self._failed_ordered(done, batch, key, ks, start, first_fail, end, results, messages, now)
            start = end
        return done

    # A key's entries [start, end) of a request, the first failed one at first_fail: what is acknowledged, what
    # goes back to the key's queue, and the errors counted.
    def _failed_unordered(
        self,
        done: Completion,
        batch: Batch,
        key: str,
        ks: int,
        start: int,
        first_fail: int,
        end: int,
        results: Sequence[str | None],
        messages: Sequence[str | None] | None,
        now: float,
    ) -> None:
        """``ordering = "none"``: only the rejected entries are resent."""
        records = batch.records
        failed = [records[i] for i in range(first_fail, end) if results[i] is not None]
        good_records = [records[i] for i in range(start, end) if results[i] is None]
        done.acked.extend(good_records)
        done.acked_bytes += sum(len(r.data) for r in good_records) + ks * len(good_records)
        _count_errors(done, results, messages, first_fail, end)
        self._requeue_front(key, failed, ks, now)

    def _failed_ordered(
        self,
        done: Completion,
        batch: Batch,
        key: str,
        ks: int,
        start: int,
        first_fail: int,
        end: int,
        results: Sequence[str | None],
        messages: Sequence[str | None] | None,
        now: float,
    ) -> None:
        """Per-key order: the first failed entry and every later entry of the key go back, in order."""
        records = batch.records
        done.acked.extend(records[start:first_fail])
        good = first_fail - start
        done.acked_bytes += sum(len(r.data) for r in records[start:first_fail]) + ks * good
        if good:
            # Progress was made: retry after a short delay rather than an ever-growing one.
            self._backoffs.pop(key, None)
        self._shrink_window(key, end - start, now)
        done.collateral += _count_errors(done, results, messages, first_fail, end)
        self._requeue_front(key, records[first_fail:end], ks, now)

    def _shrink_window(self, key: str, sent: int, now: float) -> None:
        window = self._windows.get(key)
        size = float(sent) if window is None else min(window.cap, float(sent))
        half = max(1.0, size / 2)
        self._windows[key] = Window(half, half, now)

    def _grow_window(self, key: str, sent: int, now: float) -> None:
        window = self._windows.get(key)
        if window is None:
            return
        if now - window.last_failure > WINDOW_RESET:
            del self._windows[key]
        elif sent >= int(window.cap):  # only a request that used the whole window says it can grow
            window.cap = window.cap * 2 if window.cap < window.threshold else window.cap + 1
            if window.cap >= 500:
                del self._windows[key]

    def requeue_all(self, batch: Batch, now: float, min_delay: float = 0.0) -> None:
        """The whole request failed (throttled, 5xx, connection error): every record goes back, in order, to
        the front of its key's queue, and each key backs off for at least ``min_delay`` seconds."""
        start = 0
        for key, n, ks in zip(batch.keys, batch.counts, batch.key_sizes, strict=True):
            self._in_flight.discard(key)
            self._requeue_front(key, batch.records[start : start + n], ks, now, min_delay)
            start += n
