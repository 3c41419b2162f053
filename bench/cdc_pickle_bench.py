"""What handing CDC changes to mapping worker processes costs the event loop, per change (workers/cdc.py).

On mapping_bench.py's 10-column events (default mapping): the event loop's side (compacting a change and pickling
its request; unpickling the answer and building the records) against mapping it in process; the worker's side
(unpickling, mapping, serialising, pickling the answer). Also the dataclass pickled as is, the
form the compact tuple replaces. Best of ``--repeat``, one core, no server.

Then the whole hand-off: ``CdcWorkers.run`` with ``--processes`` real workers over ``--changes`` changes (in
source batches of 500 with a marker per 100), the records handed to a stub; the event loop's own CPU per change
(``time.process_time`` of this process: the workers are others) against mapping in process (the sink builds
the PutRecords entries either way).
Once with plain rows, once with rows the compiled PostgreSQL path pre-rendered (``fused``), and with ``--rich``
once more with mapping_bench.py's rich mapping (less ``include_transaction_details``, which keeps CDC in process).

    python bench/cdc_pickle_bench.py [--rows 256] [--repeat 200] [--changes 200000] [--processes 2] [--rich]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import pickle
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from bench.mapping_bench import RICH, TABLE, events  # noqa: E402
from cdcstream.changes import ChangeEvent, Item, Marker  # noqa: E402
from cdcstream.config import BeforeImageConfig, Config, TargetConfig  # noqa: E402
from cdcstream.mapping.envelope import Mapper  # noqa: E402
from cdcstream.mapping.ruleparse import parse_rules  # noqa: E402
from cdcstream.mapping.rules import MappingRules  # noqa: E402
from cdcstream.records import Record  # noqa: E402
from cdcstream.workers.cdc import CdcWorkers, Delivery, compact, map_runs, records_of  # noqa: E402


def best(repeat: int, fn: Callable[[], Any], n: int) -> float:
    """µs per change of ``fn`` (which handles ``n`` changes), best of ``repeat``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=256, help="changes per request (workers/cdc.py BATCH_EVENTS)")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--changes", type=int, default=200_000, help="changes through the whole hand-off")
    parser.add_argument("--processes", type=int, default=2, help="worker processes for the whole hand-off")
    parser.add_argument("--rich", action="store_true", help="also the whole hand-off with the rich mapping")
    args = parser.parse_args()
    target = TargetConfig(stream_name="s", message_format="json-unformatted")
    mapper = Mapper(MappingRules(), target, "task")
    worker = Mapper(MappingRules(), target, "task")
    worker.check_targets = False
    evs = events(args.rows)
    n = len(evs)
    request = ([(1, TABLE)], [[compact(ev, 1) for ev in evs]])
    frame = pickle.dumps(request, pickle.HIGHEST_PROTOCOL)
    answer = pickle.dumps(map_runs(worker, request, {}), pickle.HIGHEST_PROTOCOL)
    tables: dict[int, Any] = {}

    def worker_side() -> None:
        pickle.dumps(map_runs(worker, pickle.loads(frame), tables), pickle.HIGHEST_PROTOCOL)

    rows = {
        "in process: Mapper.map (event loop)": best(args.repeat, lambda: mapper.map(evs), n),
        "event loop: compact + pickle request": best(
            args.repeat, lambda: pickle.dumps(([], [[compact(ev, 1) for ev in evs]]), pickle.HIGHEST_PROTOCOL), n
        ),
        "event loop: unpickle answer + Records": best(args.repeat, lambda: records_of(pickle.loads(answer)), n),
        "worker: unpickle, map, pickle answer": best(args.repeat, worker_side, n),
        "(the dataclasses pickled as they are)": best(
            args.repeat, lambda: pickle.dumps(evs, pickle.HIGHEST_PROTOCOL), n
        ),
    }
    print(f"{n} changes per request; request {len(frame) / n:.0f} B/change, answer {len(answer) / n:.0f} B/change")
    for name, us in rows.items():
        print(f"{name:42s} {us:6.2f} µs/change")
    plain = events(args.changes)
    fused = [dataclasses.replace(ev, after=None, before=None, fused=orjson.dumps(ev.after)) for ev in plain]
    cases = [("plain rows", plain, MappingRules(), target), ("fused rows", fused, MappingRules(), target)]
    if args.rich:
        rich = target.model_copy(
            update={
                "include_partition_value": True,
                "partition_include_schema_table": True,
                "before_image": BeforeImageConfig(enabled=True, column_filter="all"),
            }
        )
        cases.append(("rich mapping", plain, parse_rules(RICH, "rich"), rich))
    for name, evs, rules, settings in cases:
        in_process = _in_process(Mapper(rules, settings, "task"), evs)
        handed = asyncio.run(_handed_off(args.processes, settings, evs, rules))
        print(f"{name}: event loop {in_process:.2f} µs/change in process, {handed:.2f} with {args.processes} workers")
    return 0


def _batches(evs: list[ChangeEvent]) -> list[list[Item]]:
    out: list[list[Item]] = []
    for lo in range(0, len(evs), 500):
        batch: list[Item] = []
        for i in range(lo, min(lo + 500, len(evs)), 100):
            batch.extend(evs[i : i + 100])
            batch.append(Marker({"pos": i}))
        out.append(batch)
    return out


def _in_process(mapper: Mapper, evs: list[ChangeEvent]) -> float:
    """CPU µs per change of mapping the batches in the event loop (the pipeline's in-process path)."""
    batches = _batches(evs)
    t0 = time.process_time()
    for batch in batches:
        mapper.map([ev for ev in batch if isinstance(ev, ChangeEvent)])
    return (time.process_time() - t0) / len(evs) * 1e6


async def _handed_off(processes: int, target: TargetConfig, evs: list[ChangeEvent], rules: MappingRules) -> float:
    """CPU µs per change the event loop spends handing the batches to workers and taking their records back."""
    cfg = Config.model_validate(
        {"source": {"database": "db"}, "target": target.model_dump(), "log": {"level": "warning"}}
    )
    workers = CdcWorkers(cfg, Mapper(rules, target, "task"), processes)
    await workers.start()
    done = 0

    async def emit(records: list[Record]) -> None:
        nonlocal done
        done += len(records)

    async def drain() -> bool:
        return True

    async def source() -> Any:
        for batch in _batches(evs):
            yield batch
            await asyncio.sleep(0)

    try:
        t0 = time.process_time()
        await workers.run(source(), asyncio.Event(), Delivery(emit, lambda m: None, drain, lambda busy: None))
        spent = time.process_time() - t0
    finally:
        await workers.close()
    assert done > 0
    return spent / len(evs) * 1e6


if __name__ == "__main__":
    raise SystemExit(main())
