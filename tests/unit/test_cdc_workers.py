"""CDC mapped in worker processes (workers/cdc.py) against the pipeline mapping in process: byte-identical
records in the same order, markers at the same places among them, control records, load switches and errors
as in process; a worker's death a typed error; the auto setting.

The pipeline runs with the fakes of tests/support/fakes.py and real spawned worker processes; the records'
construction time (``timestamp``) is the one byte that may differ, and is compared as a placeholder."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdcstream.changes import ChangeEvent, Column, Item, Marker, Op, SchemaChange, TableInfo
from cdcstream.checkpoints.watermark import Watermark
from cdcstream.config import CdcConfig, Config
from cdcstream.errors import MappingError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import load_rules
from cdcstream.pipeline import Parts, Pipeline
from cdcstream.records import Record
from cdcstream.sinks import AckCallback
from cdcstream.workers import cdc as cdc_module
from cdcstream.workers.cdc import CdcWorkers, Delivery, compact, map_runs, records_of
from tests.support.fakes import FakeSink, FakeSource, RecordingDeadline, RecordingNotifier, RecordingStore
from tests.unit.test_mapping import sel
from tests.unit.test_pipeline import until

pytestmark = pytest.mark.timeout(120)

T1 = TableInfo("public", "t1", (Column("id", "int4", is_key=True), Column("v", "text"), Column("n", "float8")))
T2 = TableInfo("app", "t2", (Column("k", "text", is_key=True), Column("j", "jsonb")))
SKIPPED = TableInfo("other", "skipped", (Column("id", "int4", is_key=True),))
T1_ALTERED = TableInfo("public", "t1", (*T1.columns, Column("extra", "int4")))

RULES = {
    "rules": [
        sel("1", "include", "%", "%"),
        sel("2", "exclude", "other", "%"),
        {
            "rule-type": "object-mapping",
            "rule-id": "3",
            "rule-name": "3",
            "rule-action": "map-record-to-record",
            "object-locator": {"schema-name": "app", "table-name": "t2"},
            "mapping-parameters": {"partition-key-type": "primary-key"},
        },
    ]
}


def _config(tmp_path: Path, processes: int, **target: Any) -> Config:
    tmp_path.mkdir(parents=True, exist_ok=True)
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps(RULES))
    return Config.model_validate(
        {
            "task_id": "task",
            "table_mappings": str(rules),
            "source": {"engine": "postgres", "database": "db"},
            "target": {
                "stream_name": "s",
                "message_format": "json-unformatted",
                "include_table_alter_operations": True,
                "include_partition_value": True,
                **target,
            },
            "checkpoint": {"state_dir": str(tmp_path / "state"), "interval": 0},
            "http": {"listen": "", "lag_probe_interval": 0},
            "full_load": {"processes": 0},
            "cdc": {"processes": processes},
        }
    )


def _event(rnd: random.Random, tx: int, i: int, table: TableInfo) -> ChangeEvent:
    op = rnd.choice([Op.INSERT, Op.UPDATE, Op.DELETE, Op.INSERT])
    if table is T2:
        row: dict[str, Any] = {"k": rnd.choice(["a", "b", "", "ü"]) + str(rnd.randint(0, 9)), "j": '{"x": 1}'}
    else:
        row = {"id": rnd.randint(1, 50), "v": rnd.choice([None, "", "x" * rnd.randint(0, 40)]), "n": rnd.random()}
        if table is T1_ALTERED:
            row["extra"] = rnd.randint(0, 3)
    after = None if op is Op.DELETE else row
    before = row if op is Op.DELETE else None
    return ChangeEvent(
        op, table, after, before, tx, f"2026-12-07T12:00:{tx % 60:02d}.000000Z", 1.8e9 + tx, f"{tx:010d}.{i:04d}", i + 1
    )


def _control(tx: int, op: Op) -> ChangeEvent:
    change = None
    table = T1
    if op is Op.ADD_COLUMN:
        change, table = SchemaChange(T1, column="extra"), T1_ALTERED
    return ChangeEvent(
        op, table, None, None, tx, "2026-12-07T12:00:00.000000Z", 1.8e9 + tx, f"{tx:010d}.0000", 1, change=change
    )


def random_stream(seed: int, transactions: int = 300) -> list[list[Item]]:
    """Source batches: transactions of 0-40 changes over three tables (one not selected), control events
    (TRUNCATE, an ADD COLUMN, DROP), a stretch of load rows (a reload), idle markers; cut at random places."""
    rnd = random.Random(seed)
    items: list[Item] = []
    tables = [T1, T2, SKIPPED]
    for tx in range(1, transactions + 1):
        kind = rnd.random()
        if kind < 0.03:
            items.append(_control(tx, rnd.choice([Op.TRUNCATE, Op.ADD_COLUMN, Op.DROP_TABLE])))
        elif kind < 0.06:
            items.extend(
                ChangeEvent(Op.LOAD, T2, {"k": f"load{j}", "j": None}, None, None, "", 0.0, "", 0)
                for j in range(rnd.randint(1, 30))
            )
        elif kind < 0.1:
            items.append(Marker({"pos": tx}, None, transaction=False))  # an idle position
            continue
        else:
            for i in range(rnd.randint(0, 40)):
                items.append(_event(rnd, tx, i, rnd.choice(tables)))
        items.append(Marker({"pos": tx}, commit_epoch=1.8e9 + tx))
    cuts = sorted(rnd.sample(range(1, len(items)), min(len(items) - 1, 40)))
    return [items[a:b] for a, b in zip([0, *cuts], [*cuts, len(items)], strict=True)]


class TracingWatermark(Watermark):
    """Notes where each marker lands among the records."""

    __slots__ = ("trace",)

    def __init__(self, trace: list[Any]) -> None:
        super().__init__()
        self.trace = trace

    def issue_marker(self, marker: Marker) -> None:
        self.trace.append((self.next_seq, "marker", marker.checkpoint))
        super().issue_marker(marker)


_STAMP = re.compile(rb'"timestamp": ?"[^"]*"')


def _normal(data: bytes) -> bytes:
    return _STAMP.sub(b'"timestamp":"T"', data)


def _pipeline(
    tmp_path: Path, processes: int, source: FakeSource, max_record_bytes: int = 1 << 20, **target: Any
) -> tuple[Pipeline, list[FakeSink]]:
    """A pipeline over ``source`` and a fake sink (in the list once the pipeline made it), workers or not."""
    cfg = _config(tmp_path, processes, **target)
    mapper = Mapper(load_rules(Path(cfg.table_mappings or "")), cfg.target, cfg.task_id)
    sinks: list[FakeSink] = []

    def sink(on_ack: AckCallback) -> FakeSink:
        sinks.append(FakeSink(on_ack, max_records=cfg.target.max_buffered_records, max_record_bytes=max_record_bytes))
        return sinks[0]

    async def no_tables() -> list[Any]:
        return []

    parts = Parts(
        mapper=mapper,
        source=source,
        sink=sink,
        store=RecordingStore(tmp_path, []),
        label="fake:db",
        deadline=RecordingDeadline(60),
        tables=no_tables,
        notifier=RecordingNotifier(),
        cdc=CdcWorkers(cfg, mapper, processes) if processes else None,
    )
    return Pipeline(cfg, parts), sinks


async def _run(
    tmp_path: Path, processes: int, batches: list[list[Item]], max_record_bytes: int = 1 << 20, **target: Any
) -> tuple[list[Any], Any]:
    """Run the pipeline over ``batches`` (Kinesis acknowledging as it goes) until the source ends; the trace of
    what reached the sink and the watermark, in sequence order, and how the run ended."""
    source = FakeSource()
    source.feed(*batches)
    source.end()
    pipeline, sinks = _pipeline(tmp_path, processes, source, max_record_bytes, **target)
    trace: list[Any] = []
    pipeline.watermark = TracingWatermark(trace)
    task = asyncio.create_task(pipeline.run())
    while not task.done():  # Kinesis: acknowledges everything, a little later (a hang guard: pytest's timeout)
        if sinks:
            sinks[0].ack()
        await asyncio.sleep(0.002)
    try:
        outcome: Any = task.result()
    except MappingError as exc:
        outcome = exc
    records = [(r.seq, r.partition_key, _normal(r.data), r.commit_epoch, r.label, r.barrier) for r in sinks[0].records]
    return sorted(trace + records, key=lambda t: t[0]), outcome


async def test_a_stop_with_workers_drains_checkpoints_and_ends_them(tmp_path: Path) -> None:
    source = FakeSource()
    pipeline, sinks = _pipeline(tmp_path, 2, source)
    task = asyncio.create_task(pipeline.run())
    batches = random_stream(9, transactions=60)
    source.feed(*batches)  # the source never ends: a daemon streaming when the stop comes
    await until(lambda: sinks and len(sinks[0].records) > 100, "records in the sink")
    assert pipeline.cdc is not None
    pids = pipeline.cdc.status()["pids"]
    assert len(pids) == 2
    sinks[0].ack()
    pipeline.stop()
    while not task.done():
        sinks[0].ack()  # Kinesis acknowledges what is in flight within drain_timeout
        await asyncio.sleep(0.005)
    assert task.result() == 0
    assert pipeline.cdc.status()["pids"] == []  # stopped with the daemon
    saved = pipeline.store.load()
    assert saved is not None and not sinks[0].pending  # drained, and checkpointed after its last acknowledged marker
    for pid in pids:  # joined (reaped) by the stop
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_workers_on_and_off_hand_the_sink_the_same_records_and_markers_in_the_same_order(
    tmp_path: Path, seed: int
) -> None:
    batches = random_stream(seed)
    off, off_end = await _run(tmp_path / "off", 0, batches)
    on, on_end = await _run(tmp_path / "on", 2, batches)
    assert off_end == on_end == 0  # the source ended and every record was acknowledged
    assert len(off) > 1000
    assert on == off
    records = [t for t in off if t[1] != "marker"]
    assert any(t[5] for t in records)  # control records (barriers) among them
    assert any(b'"operation":"load"' in t[2] for t in records)  # and load rows
    assert any(b'"operation":"add-column"' in t[2] for t in records)


async def test_one_worker_matches_too(tmp_path: Path) -> None:
    batches = random_stream(7, transactions=120)
    off, _ = await _run(tmp_path / "off", 0, batches, message_format="json")
    on, _ = await _run(tmp_path / "on", 1, batches, message_format="json")
    assert on == off


async def test_oversize_records_are_diverted_in_their_place_with_workers_too(tmp_path: Path) -> None:
    batches = random_stream(11, transactions=80)  # records of 226-329 bytes
    big = [
        ChangeEvent(Op.INSERT, T1, {"id": i, "v": "x" * 2000, "n": 0.5}, None, 500, "", 0.0, f"500.{i}", i + 1)
        for i in range(3)
    ]
    batches[20:20] = [[*big[:2], Marker({"pos": 500})], [big[2], Marker({"pos": 501})]]
    off, off_end = await _run(tmp_path / "off", 0, batches, max_record_bytes=1000, oversize_policy="dead-letter")
    on, on_end = await _run(tmp_path / "on", 2, batches, max_record_bytes=1000, oversize_policy="dead-letter")
    assert off_end == on_end == 0
    assert on == off
    assert any(b"OversizeRecordDiverted" in t[2] for t in off if t[1] != "marker")
    lines = [(tmp_path / side / "task.dead-letter.jsonl").read_bytes().count(b"\n") for side in ("off", "on")]
    assert lines == [3, 3]


async def test_a_mapping_error_in_a_worker_is_the_same_error_after_the_same_records(tmp_path: Path) -> None:
    good = random_stream(4, transactions=30)
    # A row the source pre-rendered with a partition key this mapping does not make: Mapper.map refuses it.
    bad = ChangeEvent(Op.INSERT, T1, None, None, 99, "", 0.0, "0000000099.0000", 1, fused=b"{}", fused_key="k")
    batches: list[list[Item]] = [
        *good,
        [bad, Marker({"pos": 99})],
        [_event(random.Random(1), 100, 0, T1), Marker({"pos": 100})],
    ]
    off, off_end = await _run(tmp_path / "off", 0, batches)
    on, on_end = await _run(tmp_path / "on", 2, batches)
    assert isinstance(off_end, MappingError) and isinstance(on_end, MappingError)
    assert str(on_end) == str(off_end)
    # Nothing after the bad row reached the sink or the watermark, either way (what before it did may differ
    # only in how far the in-process path got within the failing batch: here, a batch of its own).
    assert on == off
    assert not any(t[1] == "marker" and t[2]["pos"] >= 99 for t in on)


def test_map_runs_is_byte_identical_to_the_mapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _config(tmp_path, 1)
    mapper = Mapper(load_rules(Path(cfg.table_mappings or "")), cfg.target, cfg.task_id)
    worker = Mapper(load_rules(Path(cfg.table_mappings or "")), cfg.target, cfg.task_id)
    worker.check_targets = False
    monkeypatch.setattr(cdc_module, "now_iso", lambda: "2026-12-07T00:00:00.000000Z")
    rnd = random.Random(5)
    runs = [[_event(rnd, tx, i, rnd.choice([T1, T2])) for i in range(rnd.randint(0, 20))] for tx in range(30)]
    serials = {id(T1): 1, id(T2): 2}
    request = ([(1, T1), (2, T2)], [[compact(ev, serials[id(ev.table)]) for ev in run] for run in runs])
    got = records_of(map_runs(worker, request, {}))
    want = [mapper.map(run, "2026-12-07T00:00:00.000000Z") for run in runs]
    assert [[(r.partition_key, r.data, r.commit_epoch, r.label) for r in run] for run in got] == [
        [(r.partition_key, r.data, r.commit_epoch, r.label) for r in run] for run in want
    ]


async def test_a_worker_killed_mid_stream_ends_the_run_with_a_typed_error(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 1)
    mapper = Mapper(load_rules(Path(cfg.table_mappings or "")), cfg.target, cfg.task_id)
    workers = CdcWorkers(cfg, mapper, 1)
    records: list[Record] = []

    first_records = asyncio.Event()

    async def emit(batch: list[Record]) -> None:
        records.extend(batch)
        first_records.set()

    async def drain() -> bool:
        return True

    delivery = Delivery(emit, lambda m: None, drain, lambda busy: None)
    rnd = random.Random(3)
    killed = asyncio.Event()

    async def changes() -> Any:
        yield [_event(rnd, 1, i, T1) for i in range(10)]
        await first_records.wait()
        os.kill(workers.status()["pids"][0], signal.SIGKILL)
        killed.set()
        for tx in range(2, 100):
            yield [_event(rnd, tx, i, T1) for i in range(10)]
            await asyncio.sleep(0.01)

    try:
        with pytest.raises(MappingError, match=r"cdcstream-cdc-0 died.*changes resume from the last checkpoint"):
            await workers.run(changes(), asyncio.Event(), delivery)
    finally:
        await workers.close()
    assert killed.is_set()


async def test_settled_waits_until_everything_read_before_it_is_handed_over(tmp_path: Path) -> None:
    """reload --table numbers its cut after settled(): the markers read before the request must be in the
    watermark by then (the source names the reload only in later ones)."""
    cfg = _config(tmp_path, 1)
    workers = CdcWorkers(cfg, Mapper(load_rules(Path(cfg.table_mappings or "")), cfg.target, cfg.task_id), 1)
    gate = asyncio.Event()
    issued: list[Marker] = []

    async def emit(records: list[Record]) -> None:
        await gate.wait()  # Kinesis is slow: nothing is handed over until the test opens the gate

    async def drain() -> bool:
        return True

    batches = random_stream(3, transactions=40)
    source = FakeSource()
    source.feed(*batches)
    run = asyncio.create_task(workers.run(source.changes(), asyncio.Event(), Delivery(emit, issued.append, drain, _no)))
    try:
        await until(lambda: source.pulled >= 2, "two batches read")
        read = [m for batch in batches[: source.pulled] for m in batch if isinstance(m, Marker)]
        settled = asyncio.create_task(workers.settled())
        await asyncio.sleep(0.2)
        assert not settled.done()  # the gate is closed: the records before those markers are not handed over
        gate.set()
        await settled
        assert all(any(m is i for i in issued) for m in read)
        source.end()
        await run
    finally:
        run.cancel()
        await workers.close()


async def test_settled_does_not_wait_forever_when_the_hand_off_failed(tmp_path: Path) -> None:
    """A reload request waiting in settled() while the sink fails gets an error instead of hanging: the deliverer
    that would have reached its marker has ended."""
    cfg = _config(tmp_path, 1)
    workers = CdcWorkers(cfg, Mapper(load_rules(Path(cfg.table_mappings or "")), cfg.target, cfg.task_id), 1)
    gate = asyncio.Event()

    async def emit(records: list[Record]) -> None:
        await gate.wait()
        raise MappingError("the sink failed")

    async def drain() -> bool:
        return True

    source = FakeSource()
    source.feed(*random_stream(5, transactions=40))
    run = asyncio.create_task(workers.run(source.changes(), asyncio.Event(), Delivery(emit, _no_marker, drain, _no)))
    try:
        await until(lambda: source.pulled >= 2, "two batches read")
        settled = asyncio.create_task(workers.settled())
        await asyncio.sleep(0.1)
        assert not settled.done()
        gate.set()
        with pytest.raises(MappingError, match="hand-off ended before"):
            async with asyncio.timeout(10):
                await settled
        with pytest.raises(MappingError, match="the sink failed"):
            await run
    finally:
        run.cancel()
        await workers.close()


def _no_marker(marker: Marker) -> None:
    pass


def _no(busy: bool) -> None:
    pass


def test_wiring_keeps_transaction_details_in_process(tmp_path: Path) -> None:
    from cdcstream.wiring import cdc_workers

    cfg = _config(tmp_path, 2)
    mapper = Mapper(load_rules(None), cfg.target, cfg.task_id)
    assert isinstance(cdc_workers(cfg, mapper), CdcWorkers)
    details = _config(tmp_path, 2, include_transaction_details=True)
    assert cdc_workers(details, Mapper(load_rules(None), details.target, details.task_id)) is None
    assert cdc_workers(_config(tmp_path, 0), mapper) is None
    auto = cfg.model_copy(update={"cdc": CdcConfig()})
    assert auto.cdc.processes == "auto" and cdc_workers(auto, mapper) is None  # in process, for now
