"""The pipeline in process, with a fake source and a fake sink (tests/support/fakes.py) and the real mapper,
watermark and checkpoint file: acknowledgements -> watermark -> checkpoint -> source acknowledgement in that
order whatever order Kinesis acknowledges in, oversize records diverted or fatal, a stop that drains within its
bound, backpressure by records and by bytes, start-up retries and fatal errors.

The subprocess tests (tests/e2e) prove the same daemon against real servers; these prove the pipeline's own
logic, fast and deterministically: the fakes record every save and acknowledgement in one journal.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from cdcstream.changes import Item
from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.config import Config
from cdcstream.errors import (
    CdcstreamError,
    DecodeError,
    OversizeRecordError,
    SinkError,
    SinkRetriableError,
)
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import load_rules
from cdcstream.pipeline import Parts, Pipeline
from cdcstream.records import Record
from cdcstream.sinks import AckCallback
from tests.support.fakes import (
    FakeSink,
    FakeSource,
    Journal,
    RecordingDeadline,
    RecordingNotifier,
    RecordingStore,
    transaction,
    tx_of,
)

pytestmark = pytest.mark.timeout(60)


def config(tmp_path: Path, **target: Any) -> Config:
    return Config.model_validate(
        {
            "task_id": "task",
            "source": {"engine": "postgres", "database": "db"},
            "target": {"stream_name": "s", "message_format": "json-unformatted", **target},
            "checkpoint": {"state_dir": str(tmp_path), "interval": 0},
            "http": {"listen": "", "lag_probe_interval": 0},
            "full_load": {"processes": 0},
        }
    )


@dataclass
class Run:
    """One pipeline running in a task of the test's event loop, and its fakes."""

    pipeline: Pipeline
    source: FakeSource
    sink: FakeSink
    store: RecordingStore
    journal: Journal
    deadline: RecordingDeadline
    notifier: RecordingNotifier
    task: asyncio.Task[int]

    def saves(self) -> list[MySQLCheckpoint]:
        return [checkpoint for what, checkpoint in self.journal if what == "save"]

    async def result(self) -> int:
        async with asyncio.timeout(30):
            return await self.task


async def start(
    tmp_path: Path,
    *,
    source: FakeSource | None = None,
    check: Callable[[MySQLCheckpoint], None] | None = None,
    start_errors: Iterable[CdcstreamError] = (),
    max_record_bytes: int = 1 << 20,
    ready: bool = True,
    **target: Any,
) -> Run:
    """Build a pipeline from fakes for ``config(tmp_path, **target)`` and run it (until ready, by default)."""
    cfg = config(tmp_path, **target)
    journal: Journal = []
    source = source or FakeSource(journal)
    source.journal = journal
    sinks: list[FakeSink] = []

    def sink(on_ack: AckCallback) -> FakeSink:
        # The real sink's bounds come from the same settings.
        made = FakeSink(
            on_ack,
            max_records=cfg.target.max_buffered_records,
            max_bytes=cfg.target.max_buffered_bytes,
            max_record_bytes=max_record_bytes,
            start_errors=start_errors,
        )
        sinks.append(made)
        return made

    async def no_tables() -> list[Any]:
        return []

    store = RecordingStore(tmp_path, journal, check)
    deadline, notifier = RecordingDeadline(cfg.target.drain_timeout + 10), RecordingNotifier()
    parts = Parts(
        mapper=Mapper(load_rules(None), cfg.target, cfg.task_id),
        source=source,
        sink=sink,
        store=store,
        label="fake:db",
        deadline=deadline,
        tables=no_tables,
        notifier=notifier,
    )
    pipeline = Pipeline(cfg, parts)
    run = Run(pipeline, source, sinks[0], store, journal, deadline, notifier, asyncio.create_task(pipeline.run()))
    if ready:
        await until(lambda: pipeline.ready()[0], "the pipeline ready", run)
    return run


async def until(pred: Callable[[], object], what: str, run: Run | None = None, within: float = 20) -> None:
    """Wait for ``pred()`` (a hang guard, not a timing assertion); fail early if the pipeline ended."""
    deadline = time.monotonic() + within
    while not pred():
        if run is not None and run.task.done():
            raise AssertionError(f"pipeline ended ({run.task.result()!r}) before {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def settle() -> None:
    """Give the pipeline's tasks (and a checkpoint write in its thread) the chance to act on what just
    happened: whatever they do is in the journal, which the tests check whole at the end."""
    await asyncio.sleep(0.05)


def of_tx(*txs: int) -> Callable[[Record], bool]:
    return lambda r: tx_of(r) in txs


async def test_the_checkpoint_waits_for_every_record_before_it_whatever_order_acks_come_in(tmp_path: Path) -> None:
    run = await start(tmp_path)
    run.source.feed([*transaction(1, rows=2), *transaction(2)], transaction(3))
    await until(lambda: len(run.sink.records) == 5, "RestartTask and four rows in the sink", run)
    assert [tx_of(r) for r in run.sink.records] == [0, 1, 1, 2, 3]
    assert [r.seq for r in run.sink.records] == sorted(r.seq for r in run.sink.records)

    run.sink.ack(of_tx(2))
    run.sink.ack(of_tx(1), order=[1])  # the second row of transaction 1, before the first
    run.sink.ack(of_tx(0))  # RestartTask
    await settle()
    assert run.journal == []  # the first row of transaction 1 is still out: nothing may be saved

    run.sink.ack(of_tx(1))
    await until(lambda: run.source.acks, "a checkpoint", run)
    await settle()
    assert run.journal == [("save", {"pos": 2}), ("ack", {"pos": 2})]  # up to transaction 3's unacked row

    run.sink.ack()
    await until(lambda: len(run.source.acks) == 2, "the second checkpoint", run)
    run.pipeline.stop()
    assert await run.result() == 0
    # Saved durably first, released to the source after; never a marker with anything before it unacknowledged.
    assert run.journal == [("save", {"pos": 2}), ("ack", {"pos": 2}), ("save", {"pos": 3}), ("ack", {"pos": 3})]
    assert run.store.load() == {"pos": 3}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_acks_in_random_order_never_let_a_checkpoint_pass_an_unacknowledged_record(
    tmp_path: Path, seed: int
) -> None:
    rnd = random.Random(seed)
    sizes = {tx: rnd.randint(1, 4) for tx in range(1, 31)}
    violations: list[str] = []
    sink: list[FakeSink] = []

    def check(checkpoint: MySQLCheckpoint) -> None:
        """At the moment a checkpoint is written (the saving thread): every record up to it acknowledged."""
        acked = Counter(tx_of(r) for r in list(sink[0].acked))
        missing = [tx for tx in range(0, checkpoint["pos"] + 1) if acked[tx] < sizes.get(tx, 1)]
        if missing:
            violations.append(f"checkpoint {checkpoint} written with transactions {missing} not acknowledged")

    run = await start(tmp_path, check=check)
    sink.append(run.sink)
    items: list[Item] = [item for tx, rows in sizes.items() for item in transaction(tx, rows)]
    cuts = sorted(rnd.sample(range(1, len(items)), 5))
    run.source.feed(*(items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)))
    total = 1 + sum(sizes.values())
    while len(run.sink.acked) < total:
        await until(lambda: run.sink.pending, "records to acknowledge", run)
        pending = len(run.sink.pending)
        picked = rnd.sample(range(pending), rnd.randint(1, pending))
        chosen = set(picked)
        order = sorted(chosen)
        rnd.shuffle(order)
        run.sink.ack(lambda r: True, order=order)
        await asyncio.sleep(rnd.choice([0, 0, 0.001, 0.01]))
    await until(lambda: run.source.acks[-1:] == [{"pos": 30}], "the last checkpoint", run)
    run.pipeline.stop()
    assert await run.result() == 0
    assert violations == []
    saves = run.saves()
    assert [c["pos"] for c in saves] == sorted({c["pos"] for c in saves})  # forward only
    assert run.journal == [(what, c) for c in saves for what in ("save", "ack")]  # each saved, then released


async def test_an_oversize_record_is_diverted_in_its_place(tmp_path: Path) -> None:
    run = await start(tmp_path, max_record_bytes=2000, oversize_policy="dead-letter")
    run.source.feed(transaction(1), transaction(2, pad="x" * 5000), transaction(3))
    await until(lambda: len(run.sink.records) == 4, "RestartTask, two rows and a stand-in", run)
    _restart, first, stand_in, last = run.sink.records
    assert [r.seq for r in run.sink.records] == [0, 1, 3, 5]  # the stand-in has the original's (markers: 2, 4)
    doc = orjson.loads(stand_in.data)
    assert doc["metadata"]["operation"] == "OversizeRecordDiverted" and doc["metadata"]["table-name"] == "t"
    assert doc["control"]["limit"] == 2000 and doc["control"]["size"] > 5000
    assert stand_in.partition_key == first.partition_key == last.partition_key  # its place in the key's order
    (line,) = (tmp_path / "task.dead-letter.jsonl").read_bytes().splitlines()
    diverted = orjson.loads(line)
    assert orjson.loads(diverted["data"])["data"] == {"id": 2000, "tx": 2, "pad": "x" * 5000}
    assert (diverted["size"], diverted["limit"], diverted["table"]) == (doc["control"]["size"], 2000, "public.t")
    run.sink.ack()
    await until(lambda: run.source.acks[-1:] == [{"pos": 3}], "the checkpoint past the diverted record", run)
    run.pipeline.stop()
    assert await run.result() == 0


async def test_an_oversize_record_under_policy_fail_stops_before_the_checkpoint_passes_it(tmp_path: Path) -> None:
    run = await start(tmp_path, max_record_bytes=2000)
    run.source.feed(transaction(1))
    await until(lambda: len(run.sink.records) == 2, "two records", run)
    run.sink.ack()
    await until(lambda: run.source.acks == [{"pos": 1}], "the first checkpoint", run)
    run.source.feed(transaction(2, pad="x" * 5000), transaction(3))
    with pytest.raises(OversizeRecordError) as raised:
        await run.result()
    assert raised.value.exit_code == 5 and raised.value.size > 5000
    assert run.saves() == [{"pos": 1}] and run.store.load() == {"pos": 1}
    assert [tx_of(r) for r in run.sink.records] == [0, 1]  # nothing after it reached the sink
    assert not (tmp_path / "task.dead-letter.jsonl").exists()
    assert run.source.closed and run.sink.closed
    assert run.deadline.armed and run.deadline.exit_code == 5  # closing is bounded, and keeps the exit code


async def test_a_stop_drains_what_is_in_flight_checkpoints_it_and_reads_nothing_more(tmp_path: Path) -> None:
    run = await start(tmp_path, drain_timeout=30)
    run.source.feed(transaction(1), transaction(2, rows=3))
    await until(lambda: len(run.sink.records) == 5, "five records", run)
    run.sink.ack(of_tx(0, 1))
    await until(lambda: run.source.acks == [{"pos": 1}], "the first checkpoint", run)
    run.pipeline.stop()
    assert run.deadline.armed == 1 and "STOPPING=1" in run.notifier.sent
    await until(lambda: run.sink.drains, "the drain", run)
    assert run.sink.drains == [30]
    run.source.feed(transaction(3))  # read after the stop request: never handed over
    await settle()
    assert not run.task.done()  # waiting for transaction 2's records
    run.sink.ack(of_tx(2), order=[2, 0, 1])
    assert await run.result() == 0
    # Saved, then released to the source, even when the stop cancelled the checkpoint task in between.
    assert run.journal[-2:] == [("save", {"pos": 2}), ("ack", {"pos": 2})] and run.store.load() == {"pos": 2}
    assert [tx_of(r) for r in run.sink.records] == [0, 1, 2, 2, 2]
    assert run.source.closed and run.sink.closed


async def test_a_stop_gives_up_on_unacknowledged_records_after_drain_timeout(tmp_path: Path) -> None:
    run = await start(tmp_path, drain_timeout=0.2)
    run.source.feed(transaction(1), transaction(2))
    await until(lambda: len(run.sink.records) == 3, "three records", run)
    run.sink.ack(of_tx(0, 1))
    await until(lambda: run.source.acks == [{"pos": 1}], "the first checkpoint", run)
    with capture_logs() as logs:
        run.pipeline.stop()
        assert await run.result() == 0  # Kinesis never acknowledged transaction 2: the stop ends anyway
    assert run.sink.drains == [0.2]
    warning = [e for e in logs if e["event"].startswith("stopping with records still unacknowledged")]
    assert warning and warning[0]["unacknowledged"] == 1
    assert run.saves()[-1] == {"pos": 1} and run.store.load() == {"pos": 1}  # it is replayed at the next start
    assert run.deadline.armed >= 1 and run.deadline.exit_code == 0  # the backstop, armed at the request
    assert run.deadline.seconds == 0.2 + 10


@pytest.mark.parametrize(
    ("bound", "target", "rows", "pad"),
    [
        ("records", {"max_buffered_records": 500}, 50, ""),
        ("bytes", {"max_buffered_bytes": 1_048_576}, 5, "x" * 10_000),
    ],
)
async def test_backpressure_stops_reading_at_the_sink_bound_and_resumes_on_acks(
    tmp_path: Path, bound: str, target: dict[str, Any], rows: int, pad: str
) -> None:
    source = FakeSource(produce=lambda n: transaction(n + 1, rows, pad))
    run = await start(tmp_path, source=source, drain_timeout=0.1, **target)
    await until(lambda: run.sink.waiting, "the sink to push back", run)
    sink, queues = run.sink, run.pipeline.status()["queues"]["sink"]
    if bound == "records":
        assert len(sink.pending) == 500 and queues["depth"] == queues["capacity"] == 500
    else:
        assert sink.outstanding_bytes >= 1_048_576 and len(sink.pending) < 500
        assert queues["bytes"] == sink.outstanding_bytes and queues["bytes_capacity"] == 1_048_576
    pulled = source.pulled
    assert pulled == (len(sink.pending) - 1) // rows + 1  # read exactly as far as the sink took (+ RestartTask)
    await settle()
    assert source.pulled == pulled and sink.waiting  # still waiting, not reading
    sink.ack(order=range(3 * rows))
    await until(lambda: source.pulled > pulled, "reading to resume", run)
    run.pipeline.stop()
    assert await run.result() == 0


async def test_a_retriable_sink_error_at_start_is_retried_until_the_sink_starts(tmp_path: Path) -> None:
    errors = [SinkRetriableError("endpoint unreachable"), SinkRetriableError("endpoint unreachable")]
    run = await start(tmp_path, start_errors=errors, ready=False)
    await until(lambda: "waiting for sink: endpoint unreachable" in run.pipeline.ready()[1], "the waiting reason")
    assert not run.source.started  # the source starts only once the sink has
    await until(lambda: run.pipeline.ready()[0], "the pipeline ready", run)
    assert run.sink.starts == 3 and run.source.started == [(None, False)]
    assert any(line.startswith("READY=1") for line in run.notifier.sent)
    run.source.feed(transaction(1))
    await until(lambda: len(run.sink.records) == 2, "the records", run)
    run.sink.ack()
    run.pipeline.stop()
    assert await run.result() == 0


async def test_a_stop_while_waiting_for_the_sink_at_start_ends_cleanly(tmp_path: Path) -> None:
    run = await start(tmp_path, start_errors=[SinkRetriableError("unreachable")] * 1000, ready=False)
    await until(lambda: run.sink.starts >= 1, "a start attempt")
    run.pipeline.stop()
    assert await run.result() == 0
    assert not run.source.started and run.journal == []


async def test_a_non_retriable_sink_error_at_start_exits_at_once(tmp_path: Path) -> None:
    run = await start(tmp_path, start_errors=[SinkError("stream s does not exist")], ready=False)
    with pytest.raises(SinkError, match="does not exist"):
        await run.result()
    assert run.sink.starts == 1 and not run.source.started and run.source.closed and run.sink.closed


@pytest.mark.parametrize(
    ("stage", "error"),
    [("sink", SinkError("AccessDenied: not allowed to PutRecords")), ("source", DecodeError("bad event at 0/1"))],
)
async def test_a_fatal_error_ends_the_run_with_its_exit_code_and_nothing_checkpointed_past_it(
    tmp_path: Path, stage: str, error: CdcstreamError
) -> None:
    run = await start(tmp_path)
    run.source.feed(transaction(1), transaction(2))
    await until(lambda: len(run.sink.records) == 3, "three records", run)
    run.sink.ack(of_tx(0, 1))
    await until(lambda: run.source.acks == [{"pos": 1}], "the first checkpoint", run)
    if stage == "sink":
        run.sink.fail(error)
    else:
        run.source.fail(error)
    with pytest.raises(type(error)) as raised:
        await run.result()
    assert raised.value is error
    assert run.saves() == [{"pos": 1}] and run.store.load() == {"pos": 1}
    assert run.source.closed and run.sink.closed
    assert run.deadline.armed and run.deadline.exit_code == error.exit_code
