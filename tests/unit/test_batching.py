"""The PutRecords batcher: limits, per-key order, fairness, partial-failure requeue, backoff; plus a hypothesis
state machine checking the ordering and delivery guarantees against a model."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cdcstream.records import Record
from cdcstream.sinks import batching
from cdcstream.sinks.batching import WINDOW_RESET, Batch, Batcher, RequestLimit, key_size
from cdcstream.sinks.kinesis import effective_partition_key
from cdcstream.sinks.shards import ShardLimiter, ShardMap

THROTTLE = "ProvisionedThroughputExceededException"


def _rec(key: str, seq: int, size: int = 10) -> Record:
    return Record(partition_key=key, data=b"x" * size, seq=seq)


def _add(b: Batcher, key: str, seq: int, now: float = 0.0, size: int = 10) -> Record:
    r = _rec(key, seq, size)
    b.add(key, r, now, size + key_size(key))
    return r


def _seqs(batch: Batch) -> list[int]:
    return [r.seq for r in batch.records]


def test_count_limit_and_key_grouping() -> None:
    b = Batcher()
    for i in range(1200):
        _add(b, f"k{i % 3}", i)
    batch = b.take_batch(0.0, 500, 5 * 1024 * 1024)
    assert batch is not None and len(batch) == 500
    # k0's 400 records come first, in put order, then 100 of k1.
    assert batch.keys == ["k0", "k1"] and batch.counts == [400, 100]
    assert _seqs(batch)[:3] == [0, 3, 6]
    # k0 and k1 are in flight now: only k2 may go next.
    batch2 = b.take_batch(0.0, 500, 5 * 1024 * 1024)
    assert batch2 is not None and batch2.keys == ["k2"] and len(batch2) == 400
    assert b.take_batch(0.0, 500, 5 * 1024 * 1024) is None
    assert b.pending == 300


def test_byte_limit_counts_data_and_key() -> None:
    b = Batcher()
    for i in range(10):
        _add(b, "kk", i, size=98)  # 100 bytes with the key
    batch = b.take_batch(0.0, 500, 350)
    assert batch is not None and len(batch) == 3 and batch.nbytes == 300
    assert b.pending == 7 and b.pending_bytes == 700


def test_linger_holds_small_batches() -> None:
    b = Batcher()
    _add(b, "a", 1, now=10.0)
    assert b.take_batch(10.005, 500, 10_000, linger=0.02) is None
    assert b.next_wakeup(10.005, 0.02) == 10.02
    batch = b.take_batch(10.02, 500, 10_000, linger=0.02)
    assert batch is not None and _seqs(batch) == [1]


def test_full_batch_ignores_linger() -> None:
    b = Batcher()
    for i in range(5):
        _add(b, "a", i, now=10.0)
    batch = b.take_batch(10.0, 5, 10_000, linger=1.0)
    assert batch is not None and len(batch) == 5


def test_fairness_emptied_key_goes_to_back() -> None:
    b = Batcher()
    _add(b, "a", 1)
    _add(b, "b", 2)
    batch = b.take_batch(0.0, 1, 10_000)
    assert batch is not None and batch.keys == ["a"]
    b.complete(batch, None, 0.0)
    _add(b, "a", 3)  # a's queue was emptied, so it comes back behind b
    batch = b.take_batch(0.0, 500, 10_000)
    assert batch is not None and batch.keys == ["b", "a"]


def test_partial_failure_requeues_failed_and_later_entries_of_the_key() -> None:
    b = Batcher(base_delay=1.0, max_delay=1.0)
    for i in range(4):
        _add(b, "a", i)
    for i in range(4, 6):
        _add(b, "b", i)
    batch = b.take_batch(0.0, 6, 10_000)
    assert batch is not None and _seqs(batch) == [0, 1, 2, 3, 4, 5]
    _add(b, "a", 99)  # queued while a is in flight: must stay behind the resent records
    done = b.complete(batch, [None, THROTTLE, None, None, None, None], 5.0)
    assert [r.seq for r in done.acked] == [0, 4, 5]
    assert done.errors == {THROTTLE: 1} and done.collateral == 2 and done.fatal_code is None
    assert [r.seq for r in b.queued("a")] == [1, 2, 3, 99]
    assert b.in_flight_keys == frozenset()
    # a backs off (<= 1 s of full jitter), b does not.
    assert 5.0 <= b.ready_at("a") <= 6.0
    _add(b, "b", 6, now=5.0)
    batch = b.take_batch(5.0, 500, 10_000)
    assert batch is not None and batch.keys == ["b"]
    batch = b.take_batch(6.0, 500, 10_000)
    # a's window was halved (4 records sent -> 2), in order from the first failed entry
    assert batch is not None and _seqs(batch) == [1, 2]


def test_whole_request_failure_requeues_everything_in_order() -> None:
    b = Batcher(base_delay=0.5, max_delay=0.5)
    for i in range(6):
        _add(b, f"k{i % 2}", i)
    batch = b.take_batch(0.0, 500, 10_000)
    assert batch is not None
    _add(b, "k0", 6)
    b.requeue_all(batch, 1.0)
    assert [r.seq for r in b.queued("k0")] == [0, 2, 4, 6]
    assert [r.seq for r in b.queued("k1")] == [1, 3, 5]
    assert b.pending == 7
    assert b.take_batch(1.0 + 0.5 + 1e-9, 500, 10_000) is not None


def test_non_retriable_entry_error_is_reported() -> None:
    b = Batcher()
    _add(b, "a", 1)
    batch = b.take_batch(0.0, 500, 10_000)
    assert batch is not None
    done = b.complete(batch, ["KMSDisabledException"], 0.0, ["key disabled"])
    assert done.fatal_code == "KMSDisabledException" and done.fatal_message == "key disabled"
    assert done.acked == []


def test_backoff_grows_and_resets_on_success() -> None:
    b = Batcher(base_delay=1.0, max_delay=100.0)
    _add(b, "a", 1)
    now = 0.0
    for _ in range(5):
        batch = b.take_batch(now + 1000, 500, 10_000)
        assert batch is not None
        now += 1000
        b.complete(batch, [THROTTLE], now)
    assert b._backoffs["a"].attempt == 5
    batch = b.take_batch(now + 1000, 500, 10_000)
    assert batch is not None
    b.complete(batch, None, now)
    assert "a" not in b._backoffs


def test_long_partition_keys_are_hashed_deterministically() -> None:
    long = "x" * 257
    assert effective_partition_key("x" * 256) == "x" * 256
    h = effective_partition_key(long)
    assert len(h) == 64 and h == effective_partition_key(long) and h != effective_partition_key(long + "y")


def test_a_request_takes_one_record_even_over_a_shrunk_byte_limit() -> None:
    b = Batcher()
    _add(b, "a", 0, size=100)
    _add(b, "a", 1, size=100)
    first = b.take_batch(0.0, 500, 50)  # queued key: one record, never none
    assert first is not None and _seqs(first) == [0]
    lane = Batcher()
    _add(lane, "x", 0, size=100)
    _add(lane, "y", 1, size=100)
    alone = lane.take_batch(0.0, 500, 50)  # fast lane alike
    assert alone is not None and _seqs(alone) == [0]


def _batch(records: int, nbytes: int) -> Batch:
    batch = Batch()
    batch.records = [_rec("k", i) for i in range(records)]
    batch.nbytes = nbytes
    return batch


def test_request_limit_shrinks_after_timeouts_and_grows_back_after_fast_answers() -> None:
    limit = RequestLimit(500, 5_000_000, timeout=30.0)
    assert not limit.shrunk
    assert limit.timed_out(_batch(500, 250_000))  # the record count bound it: a quarter of the records
    assert (limit.records, limit.bytes) == (125, 1_250_000)
    assert not limit.timed_out(_batch(500, 250_000))  # another request sent before the cut: no further cut
    assert limit.timed_out(_batch(125, 62_500))
    assert (limit.records, limit.bytes) == (31, 312_500)
    assert not limit.answered(_batch(31, 15_000), 10.0)  # slower than timeout / 4: the size is right
    assert not limit.answered(_batch(3, 1_500), 0.1)  # a small request says nothing about the link
    assert limit.answered(_batch(31, 15_000), 1.0)
    assert (limit.records, limit.bytes) == (62, 625_000)
    while limit.answered(_batch(limit.records, 1_000), 1.0):
        pass
    assert (limit.records, limit.bytes) == (500, 5_000_000) and not limit.shrunk
    assert limit.timed_out(_batch(40, 4_000_000))  # large records: the bytes bound it, a quarter of them
    assert limit.bytes == 1_000_000 and limit.records == 100
    assert limit.timed_out(_batch(2, 400)) and limit.records == 1
    assert not limit.timed_out(_batch(1, 100))  # one record is the least a request can be


# --- model-based ------------------------------------------------------------------------------------------
KEYS = st.sampled_from(["a", "b", "c", "d"])
OUTCOME = st.sampled_from([None, None, None, THROTTLE, "InternalFailure"])


class BatcherMachine(RuleBasedStateMachine):
    """Random puts, takes and (partial/whole) failures, completed out of order, against a model.

    The model: per key, the list of put sequence numbers; the "stream": per key, every accepted entry in
    the order its request was answered (requests of one key never overlap, so that is write order)."""

    def __init__(self) -> None:
        super().__init__()
        self.b = Batcher(base_delay=0.01, max_delay=0.05)
        self.now = 0.0
        self.seq = 0
        self.put: dict[str, list[int]] = defaultdict(list)
        self.stream: dict[str, list[int]] = defaultdict(list)
        self.acked: set[int] = set()
        self.inflight: list[Batch] = []

    @rule(key=KEYS, n=st.integers(1, 5))
    def put_records(self, key: str, n: int) -> None:
        for _ in range(n):
            _add(self.b, key, self.seq, self.now)
            self.put[key].append(self.seq)
            self.seq += 1

    @rule(max_records=st.integers(1, 7), max_bytes=st.sampled_from([5, 25, 10_000]))
    def take(self, max_records: int, max_bytes: int) -> None:
        # 5 bytes: below one record (a RequestLimit shrunk after timeouts); a request still takes one.
        batch = self.b.take_batch(self.now, max_records, max_bytes)
        if batch is None:
            return
        assert len(batch) <= max_records
        assert batch.nbytes <= max_bytes or len(batch) == 1
        keys_in_flight = [k for other in self.inflight for k in other.keys]
        assert not set(batch.keys) & set(keys_in_flight), "a key is in two in-flight requests"
        assert len(set(batch.keys)) == len(batch.keys)
        self.inflight.append(batch)

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def complete(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.inflight) - 1))
        batch = self.inflight.pop(i)
        results = data.draw(st.lists(OUTCOME, min_size=len(batch), max_size=len(batch)))
        # What Kinesis wrote: every entry without an error code.
        for rec, code in zip(batch.records, results, strict=True):
            if code is None:
                self.stream[rec.partition_key].append(rec.seq)
        done = self.b.complete(batch, results, self.now)
        for rec in done.acked:
            assert rec.seq in self.stream[rec.partition_key], "acknowledged a record that was not written"
            self.acked.add(rec.seq)

    @precondition(lambda self: self.inflight)
    @rule(data=st.data(), written=st.booleans())
    def fail_request(self, data: st.DataObject, written: bool) -> None:
        batch = self.inflight.pop(data.draw(st.integers(0, len(self.inflight) - 1)))
        if written:  # e.g. a timeout after the server wrote everything
            for rec in batch.records:
                self.stream[rec.partition_key].append(rec.seq)
        self.b.requeue_all(batch, self.now)

    @rule(dt=st.sampled_from([0.0, 0.01, 0.1]))
    def tick(self, dt: float) -> None:
        self.now += dt

    @invariant()
    def acked_is_a_prefix_of_each_key(self) -> None:
        # Acknowledgements per key never skip a record: what the watermark relies on.
        for key, seqs in self.put.items():
            n = sum(1 for s in seqs if s in self.acked)
            assert all(s in self.acked for s in seqs[:n]), f"key {key}: acks skip a record"

    def last_occurrences_in_put_order(self) -> None:
        # Holds once everything is delivered (in between, a resend can be half-way through a key's records).
        for key, written in self.stream.items():
            last: dict[int, int] = {}
            for pos, seq in enumerate(written):
                last[seq] = pos
            ordered = sorted(last, key=last.__getitem__)
            assert ordered == sorted(ordered), f"key {key}: last occurrences out of order: {written}"
            # and what is written is a prefix of what was put (nothing skipped before a later record)
            assert ordered == self.put[key][: len(ordered)]

    def teardown(self) -> None:
        # Deliver everything: answer in-flight requests successfully, then send the rest without failures.
        for batch in self.inflight:
            for rec in batch.records:
                self.stream[rec.partition_key].append(rec.seq)
            self.acked.update(r.seq for r in self.b.complete(batch, None, self.now).acked)
        self.inflight = []
        for _ in range(10_000):
            self.now += 1.0
            taken = self.b.take_batch(self.now, 500, 10_000)
            if taken is None:
                break
            for rec in taken.records:
                self.stream[rec.partition_key].append(rec.seq)
            self.acked.update(r.seq for r in self.b.complete(taken, None, self.now).acked)
        assert self.b.pending == 0 and self.b.pending_bytes == 0
        assert self.acked == set(range(self.seq)), "some records were never acknowledged"
        self.last_occurrences_in_put_order()


BatcherMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestBatcherModel = BatcherMachine.TestCase


class FastLaneMachine(BatcherMachine):
    """The same model with mostly distinct keys (a full load keyed by primary key): the fast lane carries most
    records, and a key comes back now and then while its first record waits, is in flight or was requeued."""

    @rule(n=st.integers(1, 8), repeat=st.integers(0, 3))
    def put_distinct(self, n: int, repeat: int) -> None:
        for i in range(n):
            key = f"u{self.seq - repeat}" if i == 0 and repeat and self.seq >= repeat else f"u{self.seq}"
            _add(self.b, key, self.seq, self.now)
            self.put[key].append(self.seq)
            self.seq += 1


FastLaneMachine.TestCase.settings = settings(
    max_examples=300, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestFastLaneModel = FastLaneMachine.TestCase


class LimitedFastLaneMachine(FastLaneMachine):
    """The fast lane under per-shard budgets (the default with real Kinesis): blocked keys move to queues."""

    def __init__(self) -> None:
        super().__init__()
        self.b.limiter = ShardLimiter(_two_shards(), records_per_second=4, bytes_per_second=200, now=0.0)


LimitedFastLaneMachine.TestCase.settings = FastLaneMachine.TestCase.settings
TestLimitedFastLaneModel = LimitedFastLaneMachine.TestCase


def test_fast_lane_distinct_keys_make_one_request_without_per_key_queues() -> None:
    b = Batcher()
    for i in range(600):
        _add(b, f"pk{i}", i)
    batch = b.take_batch(0.0, 500, 1 << 30)
    assert batch is not None and _seqs(batch) == list(range(500))
    assert batch.keys == [f"pk{i}" for i in range(500)] and batch.counts == [1] * 500
    assert batch.nbytes == sum(10 + key_size(f"pk{i}") for i in range(500))
    assert b.pending == 100 and b.in_flight_keys == frozenset(batch.keys)
    assert b.take_batch(0.0, 500, 1 << 30, linger=0.02) is None  # 100 records, not lingered yet
    rest = b.take_batch(0.02, 500, 1 << 30, linger=0.02)
    assert rest is not None and _seqs(rest) == list(range(500, 600))
    assert b.pending == 0 and b.pending_bytes == 0


def test_fast_lane_key_repeated_while_waiting_stays_in_order() -> None:
    b = Batcher()
    _add(b, "a", 0)
    _add(b, "b", 1)
    _add(b, "a", 2)  # a's first record still waits: both move to a's own queue, in order
    assert [r.seq for r in b.queued("a")] == [0, 2]
    sent: list[int] = []
    while (batch := b.take_batch(1.0, 500, 1 << 30)) is not None:
        sent += _seqs(batch)
    assert sorted(sent) == [0, 1, 2] and sent.index(0) < sent.index(2)


def test_fast_lane_key_in_flight_queues_behind_it_and_partial_failure_keeps_order() -> None:
    b = Batcher(base_delay=0.001, max_delay=0.001)
    for i in range(3):
        _add(b, f"k{i}", i)
    first = b.take_batch(0.0, 500, 1 << 30)
    assert first is not None and _seqs(first) == [0, 1, 2]
    _add(b, "k1", 3)  # k1 is in flight: an ordinary queue, not the fast lane
    _add(b, "k9", 4)
    second = b.take_batch(0.0, 500, 1 << 30)
    assert second is not None and _seqs(second) == [4]  # k1 waits for its request
    done = b.complete(first, [None, THROTTLE, None], 0.0)
    assert [r.seq for r in done.acked] == [0, 2]
    assert [r.seq for r in b.queued("k1")] == [1, 3]  # the failed record goes back before the newer one
    b.complete(second, None, 0.0)
    resent: list[int] = []
    for t in (1.0, 2.0, 3.0):  # k1's congestion window is one record after its failure
        retry = b.take_batch(t, 500, 1 << 30)
        if retry is not None:
            resent += _seqs(retry)
            b.complete(retry, None, t)
    assert resent == [1, 3]
    assert b.pending == 0 and b.pending_bytes == 0 and not b.in_flight_keys


def test_fast_lane_whole_request_failure_requeues_in_order() -> None:
    b = Batcher(base_delay=0.001, max_delay=0.001)
    for i in range(4):
        _add(b, f"k{i}", i)
    batch = b.take_batch(0.0, 500, 1 << 30)
    assert batch is not None
    _add(b, "k0", 4)
    b.requeue_all(batch, 0.0)
    again = b.take_batch(1.0, 500, 1 << 30)
    assert again is not None
    assert [r.seq for r in again.records if r.partition_key == "k0"] == [0, 4]
    assert sorted(_seqs(again)) == [0, 1, 2, 3, 4]


def _two_shards() -> ShardMap:
    return ShardMap([(0, 2**127 - 1, "s0"), (2**127, 2**128 - 1, "s1")])


def test_fast_lane_keeps_shard_budgets_and_sends_the_blocked_keys_later() -> None:
    shards = _two_shards()
    b = Batcher()
    b.limiter = ShardLimiter(shards, records_per_second=3, bytes_per_second=10**9, now=0.0)
    keys = [f"k{i}" for i in range(20)]
    for i, key in enumerate(keys):
        _add(b, key, i)
    assert {shards.shard_of(k) for k in keys[:8]} == {0, 1}
    now = 0.0
    sent: list[int] = []
    while len(sent) < 20:
        batch = b.take_batch(now, 500, 1 << 30)
        if batch is None:
            wake = b.next_wakeup(now, 0.0)
            assert wake is not None and wake >= now, "blocked keys must be woken for, never forgotten"
            now = max(wake, now + 0.01)
            continue
        per_shard = Counter(shards.shard_of(k) for k in batch.keys)
        assert max(per_shard.values()) <= 3 + now * 3  # never above the burst plus the refill
        assert len(set(batch.keys)) == len(batch.keys)
        sent += _seqs(batch)
        b.complete(batch, None, now)
    assert sorted(sent) == list(range(20)) and b.pending == 0 and b.pending_bytes == 0
    assert now >= (20 / 2 - 3) / 3 * 0.9  # the budget held them back: ~10 records per shard at 3/s


def test_older_queues_go_before_newer_fast_lane_records() -> None:
    b = Batcher()
    _add(b, "hot", 0, now=0.0)
    _add(b, "hot", 1, now=0.0)  # moved to a queue (its first_at stays 0.0)
    _add(b, "new", 2, now=1.0)
    batch = b.take_batch(2.0, 2, 1 << 30)
    assert batch is not None and _seqs(batch) == [0, 1]  # the older queue before the newer fast-lane record


def test_partial_failure_halves_the_key_window_then_it_grows_and_resets() -> None:
    b = Batcher(base_delay=0.001, max_delay=0.001)
    for i in range(5000):
        _add(b, "a", i)
    batch = b.take_batch(0.0, 500, 1 << 30)
    assert batch is not None and len(batch) == 500
    b.complete(batch, [None] * 3 + [THROTTLE] + [None] * 496, 0.0)
    batch = b.take_batch(1.0, 500, 1 << 30)
    assert batch is not None and len(batch) == 250  # halved
    b.complete(batch, [None] * 10 + [THROTTLE] + [None] * 239, 1.0)
    sizes = []
    for step in range(2, 6):
        batch = b.take_batch(float(step), 500, 1 << 30)
        assert batch is not None
        sizes.append(len(batch))
        b.complete(batch, None, float(step))
    assert sizes == [125, 126, 127, 128]  # halved again, then one more record per accepted request
    batch = b.take_batch(7.0, 500, 1 << 30)  # no failure for longer than WINDOW_RESET: full size again
    assert batch is not None
    b.complete(batch, None, 7.0 + WINDOW_RESET)
    batch = b.take_batch(20.0, 500, 1 << 30)
    assert batch is not None and len(batch) == 500


def test_one_hot_key_under_ten_percent_failures_keeps_duplicates_low() -> None:
    """Issue #5's goal, on the model: 10 % random per-entry failures, one key, duplicates <= 25 % of records."""
    rnd = random.Random(5)
    b = Batcher(base_delay=0.001, max_delay=0.001)
    total = 20_000
    for i in range(total):
        _add(b, "hot", i)
    delivered: list[int] = []
    sent = failed = 0
    now = 0.0
    while len(delivered) < total:
        now += 0.01
        batch = b.take_batch(now, 500, 1 << 30)
        if batch is None:
            continue
        results = ["ProvisionedThroughputExceededException" if rnd.random() < 0.1 else None for _ in batch.records]
        sent += len(results)
        failed += sum(r is not None for r in results)
        delivered.extend(r.seq for r in b.complete(batch, results, now).acked)
    assert delivered == list(range(total))
    duplicates = sent - failed - total  # accepted by Kinesis but resent after an earlier failure of the key
    assert duplicates <= 0.25 * total, duplicates / total


def test_ordering_none_resends_only_rejected_entries_and_allows_parallel_requests_per_key() -> None:
    b = Batcher(base_delay=0.001, max_delay=0.001, ordered=False)
    for i in range(4):
        _add(b, "a", i)
    first = b.take_batch(0.0, 2, 1 << 30)
    second = b.take_batch(0.0, 2, 1 << 30)  # the same key in a second request while the first is in flight
    assert first is not None and second is not None
    assert _seqs(first) == [0, 1] and _seqs(second) == [2, 3]
    done = b.complete(first, [THROTTLE, None], 0.0)
    assert [r.seq for r in done.acked] == [1] and done.collateral == 0
    assert [r.seq for r in b.queued("a")] == [0]


def _state(b: Batcher) -> tuple[object, ...]:
    return (
        {k: [r.seq for r in q] for k, q in b._queues.items()},
        list(b._queues),
        {k: r.seq for k, r in b._fresh.items()},
        list(b._fresh),
        dict(b._first_at),
        b._fresh_at,
        b._fresh_bytes,
        b.pending,
        b.pending_bytes,
    )


_run_keys = st.sampled_from(["a", "b", "é", "", "L" * 257, "c" * 256])


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.lists(st.tuples(_run_keys, st.integers(0, 60)), max_size=12),  # a run: (key, data size)
            st.integers(0, 400),  # the buffer's byte room for the run
            st.booleans(),  # take a request (keys go in flight) after the run
        ),
        max_size=8,
    )
)
def test_add_run_queues_what_add_one_by_one_queues(steps: list[tuple[list[tuple[str, int]], int, bool]]) -> None:
    """``add_run`` (one call per run; pure, and with the C loop when built) against :meth:`Batcher.add` per
    record, the loop the sink ran before: the same records taken, the same queues, fast lane, wait times and
    counters, and the same stop."""
    ref, pure, built = Batcher(), Batcher(), Batcher()
    max_size, overhead = 300, 7
    seq = 0
    for t, (run, room_bytes, take) in enumerate(steps):
        now = float(t)
        records = []
        for key, size in run:
            records.append(Record(partition_key=key, data=b"x" * size, seq=seq))
            seq += 1
        # The reference: add() per record while the byte room lasts, stopping at a key sent hashed or oversize.
        n_ref = nbytes_ref = 0
        new_ref = False
        for r in records:
            key = r.partition_key
            if nbytes_ref + n_ref * overhead >= room_bytes or not 0 < len(key) <= 256:
                break
            size = len(r.data) + key_size(key)
            if size > max_size:
                break
            new_ref = ref.add(key, r, now, size) or new_ref
            n_ref += 1
            nbytes_ref += size
        with mock.patch.object(batching, "_ADD_RUN", None):
            got_pure = pure.add_run(records, 0, len(records), now, max_size, room_bytes, overhead)
        got_built = built.add_run(records, 0, len(records), now, max_size, room_bytes, overhead)
        assert got_pure == got_built == (n_ref, nbytes_ref, new_ref)
        assert _state(pure) == _state(built) == _state(ref)
        if take:
            want = ref.take_batch(now + 1, 3, 10_000, 0.0)
            for b in (pure, built):
                got = b.take_batch(now + 1, 3, 10_000, 0.0)
                assert (got and _seqs(got)) == (want and _seqs(want))
                if got is not None and t % 2:
                    b.complete(got, None, now + 1)
            if want is not None and t % 2:
                ref.complete(want, None, now + 1)


def test_the_compiled_add_run_is_used_when_built() -> None:
    """The differential test above compares something wherever the extension is built, unless CDCSTREAM_PURE is
    set (which must turn it off)."""
    import importlib.util

    from cdcstream import compiled

    if importlib.util.find_spec("cdcstream.sinks._putrecords") is None:
        pytest.skip("the compiled extension is not built")
    assert (batching._ADD_RUN is None) == compiled.pure_requested()
