"""Full-load planning, state in markers and resumption (engine-neutral core, with an in-memory engine)."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import pytest

from cdcstream.changes import ChangeEvent, Column, MappedRows, Marker, Op, RawRows, TableInfo
from cdcstream.checkpoints.model import (
    Checkpoint,
    LoadProgress,
    PgCheckpoint,
    intent_checkpoint,
    is_loading,
    load_completed,
    load_started,
)
from cdcstream.config import FullLoadConfig, load_config
from cdcstream.errors import ConfigError
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.records import Record
from cdcstream.sources.fullload import READ_AHEAD_ROWS, FullLoad, KeyRanges, plan_ranges, plan_split
from cdcstream.sources.loadengine import Chunk, Offload, Segment, TableSpec
from cdcstream.sources.reload import stamp_requested_reloads
from cdcstream.wiring import key_ranges
from tests.support.checkpoints import pg


def _spec(name: str, rows: int, key: bool = True) -> TableSpec:
    cols = (Column("id", "int4", 23, True, key), Column("v", "text", 25))
    return TableSpec(TableInfo("public", name, cols), ("id",) if key else (), rows)


class MemoryEngine:
    """A LoadEngine over Python lists: rows ``{"id": i, "v": ...}`` for i in 1..n; segments split on id."""

    def __init__(self, tables: dict[str, int], keyless: tuple[str, ...] = ()) -> None:
        self.sizes = tables
        self.keyless = keyless
        self.opened: list[tuple[int, bool]] = []
        self.reads: list[tuple[str, Any, Any, Any]] = []
        self.closed = False

    async def open(self, sessions: int, *, fresh: bool) -> Checkpoint:
        self.opened.append((sessions, fresh))
        return PgCheckpoint(lsn="0/10") if fresh else {}

    async def tables(self) -> list[TableSpec]:
        return [_spec(n, rows, n not in self.keyless) for n, rows in self.sizes.items()]

    async def split_points(self, spec: TableSpec, parts: int) -> list[tuple[str, ...]]:
        n = spec.estimated_rows or 0
        return [(str(n * i // parts),) for i in range(1, parts)]

    async def read(
        self, session: int, spec: TableSpec, segment: Segment, after: Any, *, raw: bool = False
    ) -> AsyncIterator[Chunk]:
        self.reads.append((spec.name, segment.lo, segment.hi, after))
        lo = int(segment.lo[0]) if segment.lo else 0
        hi = int(segment.hi[0]) if segment.hi else self.sizes[spec.info.table]
        start = max(lo, int(after[0]) if after else 0)
        ids = list(range(start + 1, hi + 1))
        for i in range(0, len(ids), 7):
            part = ids[i : i + 7]
            await asyncio.sleep(0)
            yield Chunk([{"id": x, "v": str(x)} for x in part], [str(part[-1])] if spec.key_columns else None)

    async def decode(self, spec: TableSpec, raw: RawRows) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] | None = raw.rows()
        assert rows is not None
        return rows

    async def close(self) -> None:
        self.closed = True


def _id(event: ChangeEvent) -> Any:
    assert event.after is not None
    return event.after["id"]


def _load(engine: MemoryEngine, checkpoint: Checkpoint | None = None, **cfg: Any) -> FullLoad:
    return FullLoad(
        engine,
        FullLoadConfig(**cfg),
        label="unit",
        checkpoint=checkpoint,
        base_checkpoint=lambda: {"system_id": "1"},
        ranges=lambda s, t: None,
    )


def _offloaded(engine: MemoryEngine, cfg: FullLoadConfig, offload: Offload | None) -> FullLoad:
    return FullLoad(
        engine,
        cfg,
        label="unit",
        checkpoint=None,
        base_checkpoint=lambda: {},
        ranges=lambda s, t: None,
        offload=offload,
    )


async def _collect(load: FullLoad, stop_after: int | None = None) -> list[Any]:
    await load.open()
    out: list[Any] = []
    async for batch in load.run():
        out.extend(batch)
        if stop_after is not None and sum(isinstance(i, ChangeEvent) for i in out) >= stop_after:
            break
    return out


def test_plan_ranges_and_split() -> None:
    segs = plan_ranges("public.t", KeyRanges(("a", "b"), (("1", "x"), ("5", "y"))))
    assert [(s.lo, s.hi) for s in segs] == [(None, ("1", "x")), (("1", "x"), ("5", "y")), (("5", "y"), None)]
    assert all(s.columns == ("a", "b") for s in segs)
    segs = plan_split("public.t", "id", [("10",), ("10",), ("20",)])
    assert [(s.lo, s.hi) for s in segs] == [(None, ("10",)), (("10",), ("20",)), (("20",), None)]
    assert [(s.lo, s.hi) for s in plan_split("public.t", "id", [])] == [(None, None)]
    seg = Segment("public.t", ("id",), ("1",), None, ["7"], False, 3)
    assert Segment.from_json("public.t", seg.to_json()) == seg


def test_table_settings_ranges_are_kept_by_the_rules() -> None:
    rules = parse_rules(
        {
            "rules": [
                {
                    "rule-type": "selection",
                    "rule-id": "1",
                    "rule-name": "1",
                    "object-locator": {"schema-name": "%", "table-name": "%"},
                    "rule-action": "include",
                },
                {
                    "rule-type": "table-settings",
                    "rule-id": "2",
                    "rule-name": "2",
                    "object-locator": {"schema-name": "HR", "table-name": "SALES"},
                    "parallel-load": {"type": "ranges", "columns": ["C1"], "boundaries": [["10"], [20]]},
                },
            ]
        },
        "m.json",
    )
    pl = rules.parallel_load("HR", "SALES")
    assert pl is not None and pl.columns == ("C1",) and pl.boundaries == (("10",), ("20",))
    assert rules.parallel_load("HR", "OTHER") is None
    # ... and handed to the sources as explicit key ranges, naming the rule for errors
    ranges = key_ranges(rules)("HR", "SALES")
    assert ranges is not None and ranges.columns == ("C1",) and ranges.boundaries == (("10",), ("20",))
    assert "m.json" in ranges.origin and "parallel-load.columns" in ranges.origin
    assert key_ranges(rules)("HR", "OTHER") is None


def test_every_row_once_with_markers_and_completion() -> None:
    engine = MemoryEngine({"a": 300, "b": 0, "c": 30})
    load = _load(engine, max_full_load_subtasks=2, parallel_load_threads=3, chunk_rows=100)
    items = asyncio.run(_collect(load))
    rows = [(i.table.table, _id(i)) for i in items if isinstance(i, ChangeEvent)]
    assert sorted(rows) == sorted([("a", x) for x in range(1, 301)] + [("c", x) for x in range(1, 31)])
    assert all(i.op is Op.LOAD for i in items if isinstance(i, ChangeEvent))
    assert isinstance(items[-1], Marker)
    last = pg(items[-1].checkpoint)
    assert last["phase"] == "full-load" and last["lsn"] == "0/10" and last["system_id"] == "1"
    progress = cast(LoadProgress, last["load"])
    assert sorted(progress["loaded"]) == ["public.a", "public.b", "public.c"]
    assert progress["tables"] == {} and progress["rows"] == 330
    assert load.finished and engine.closed
    # "a" (300 rows >= 2 x chunk_rows) was split into 3 segments; small "c" was not.
    assert len([r for r in engine.reads if r[0] == "public.a"]) == 3
    assert len([r for r in engine.reads if r[0] == "public.c"]) == 1
    # Markers follow every chunk and describe exactly the rows before them.
    seen = 0
    for item in items:
        if isinstance(item, ChangeEvent):
            seen += 1
        else:
            assert item.checkpoint["load"]["rows"] == seen


@dataclass
class _Raw:
    """RawRows over ready rows."""

    data: list[dict[str, Any]]

    def __len__(self) -> int:
        return len(self.data)

    def rows(self) -> list[dict[str, Any]]:
        return self.data


class RawMemoryEngine(MemoryEngine):
    """MemoryEngine handing its chunks over undecoded (for mapping worker processes) when asked to."""

    async def read(
        self, session: int, spec: TableSpec, segment: Segment, after: Any, *, raw: bool = False
    ) -> AsyncIterator[Chunk]:
        async for chunk in super().read(session, spec, segment, after):
            yield Chunk([], chunk.last_key, _Raw(chunk.rows)) if raw else chunk


def test_chunks_mapped_out_of_order_reach_the_consumer_in_read_order() -> None:
    """Sessions read ahead while their chunks are mapped (finishing in any order); each segment's chunks still
    arrive in read order, and every marker describes exactly the rows before it."""
    engine = RawMemoryEngine({"a": 400, "c": 50})
    rng = random.Random(5)
    busy = peak = busy_rows = peak_rows = 0

    async def offload(info: TableInfo, raw: Any) -> MappedRows:
        nonlocal busy, peak, busy_rows, peak_rows
        busy += 1
        busy_rows += len(raw)
        peak = max(peak, busy)
        peak_rows = max(peak_rows, busy_rows)
        await asyncio.sleep(rng.random() / 200)
        busy -= 1
        busy_rows -= len(raw)
        return MappedRows([Record(str(r["id"]), b"", label=info.table) for r in raw.rows()])

    cfg = FullLoadConfig(
        max_full_load_subtasks=2, parallel_load_threads=3, chunk_rows=100, parallel_load_buffer_size=250
    )
    load = _offloaded(engine, cfg, offload)
    items = asyncio.run(_collect(load))
    ids: dict[str, list[int]] = {"a": [], "c": []}
    seen = 0
    for item in items:
        if isinstance(item, MappedRows):
            for r in item.records:
                ids[r.label].append(int(r.partition_key))
            seen += len(item.records)
        else:
            assert isinstance(item, Marker) and item.checkpoint["load"]["rows"] == seen
    assert ids["c"] == list(range(1, 51))
    bounds = [0, 133, 266, 400]  # the MemoryEngine's three segments of "a"
    for lo, hi in itertools.pairwise(bounds):
        assert [x for x in ids["a"] if lo < x <= hi] == list(range(lo + 1, hi + 1))
    # Read ahead: more chunks in mapping at once than sessions, at most READ_AHEAD_ROWS and a chunk each.
    assert peak > 2
    assert peak_rows <= 2 * (READ_AHEAD_ROWS + 7)


def test_resume_continues_after_the_last_key_and_skips_finished_work() -> None:
    engine = MemoryEngine({"a": 300, "c": 30})
    first = _load(engine, max_full_load_subtasks=1, parallel_load_threads=2, chunk_rows=100)
    items = asyncio.run(_collect(first, stop_after=200))
    marker = [i for i in items if isinstance(i, Marker)][-1]
    checkpoint = marker.checkpoint
    assert load_started(checkpoint) and is_loading(checkpoint) and not load_completed(checkpoint)
    copied = marker.checkpoint["load"]["rows"]

    engine2 = MemoryEngine({"a": 300, "c": 30})
    second = _load(engine2, checkpoint, max_full_load_subtasks=1, parallel_load_threads=2, chunk_rows=100)
    rest = asyncio.run(_collect(second))
    assert engine2.opened == [(1, False)]  # a resumed load: fresh snapshot sessions, start position kept
    assert rest[-1].checkpoint["lsn"] == "0/10"
    before = [_id(i) for i in items if isinstance(i, ChangeEvent)][:copied]
    after = [(i.table.table, _id(i)) for i in rest if isinstance(i, ChangeEvent)]
    assert len(after) == 330 - copied  # nothing re-copied, nothing missing
    assert sorted(before + [x for t, x in after if t == "a"]) == list(range(1, 301))


def test_keyless_table_is_one_pass_and_intent_checkpoint() -> None:
    engine = MemoryEngine({"n": 20}, keyless=("n",))
    items = asyncio.run(_collect(_load(engine, parallel_load_threads=4)))
    assert len([i for i in items if isinstance(i, ChangeEvent)]) == 20
    assert len(engine.reads) == 1
    intent = intent_checkpoint()
    assert is_loading(intent) and not load_started(intent)
    # An intent alone means a fresh load (new snapshot), not a resumed one.
    fresh = _load(MemoryEngine({"n": 1}), intent)
    assert not fresh.resumed


def test_config_full_load(tmp_path: Any) -> None:
    path = tmp_path / "c.toml"
    base = '[source]\ndatabase = "d"\n[target]\nstream_name = "s"\n'
    path.write_text('migration_type = "full-load-and-cdc"\n' + base + "[full_load]\nmax_full_load_subtasks = 49\n")
    cfg = load_config(path, environ={})
    assert cfg.migration_type == "full-load-and-cdc" and cfg.full_load.max_full_load_subtasks == 49
    path.write_text(base + "[full_load]\nmax_full_load_subtasks = 50\n")
    with pytest.raises(ConfigError, match=r"full_load\.max_full_load_subtasks"):
        load_config(path, environ={})
    path.write_text(base + "[full_load]\nparallel_load_buffer_size = 1001\n")
    with pytest.raises(ConfigError, match=r"full_load\.parallel_load_buffer_size"):
        load_config(path, environ={})
    path.write_text(
        'migration_type = "full-load"\n[source]\nengine = "mysql"\nserver_id = 5\n[target]\nstream_name = "s"\n'
    )
    assert load_config(path, environ={}).migration_type == "full-load"  # MySQL/MariaDB load too


def test_checkpoints_of_markers_before_a_reload_request_name_it() -> None:
    """Markers issued before ``reload --table`` was answered get the name when checkpointed; from the request's
    sequence number on the source's own stamp counts (it drops the name when the copy is out)."""
    requests = [("s.a", 10), ("s.b", 20)]
    early, requests = stamp_requested_reloads(PgCheckpoint(lsn="0/1"), 5, requests)
    assert early == {"lsn": "0/1", "reload": ["s.a", "s.b"]} and len(requests) == 2
    between, requests = stamp_requested_reloads(PgCheckpoint(lsn="0/2", reload=["s.a"]), 12, requests)
    assert between == {"lsn": "0/2", "reload": ["s.a", "s.b"]} and requests == [("s.b", 20)]
    done = PgCheckpoint(lsn="0/3")  # the source's marker after both copies: nothing added back
    assert stamp_requested_reloads(done, 25, requests) == (done, [])


class PartsEngine(MemoryEngine):
    """MemoryEngine handing over raw chunks of parts (three 7-row chunks at once), as PostgreSQL's engine does."""

    async def read(
        self, session: int, spec: TableSpec, segment: Segment, after: Any, *, raw: bool = False
    ) -> AsyncIterator[Chunk]:
        assert raw
        group: list[Chunk] = []
        async for chunk in super().read(session, spec, segment, after):
            group.append(chunk)
            if len(group) == 3:
                yield _grouped(group)
                group = []
        if group:
            yield _grouped(group)


def _grouped(chunks: list[Chunk]) -> Chunk:
    rows = [r for c in chunks for r in c.rows]
    return Chunk([], chunks[-1].last_key, _Raw(rows), [(len(c.rows), c.last_key) for c in chunks])


@pytest.mark.parametrize("filtered", [False, True])
def test_chunks_of_parts_keep_a_marker_per_part(filtered: bool) -> None:
    """A chunk of parts (one worker request for several chunks) still moves the load state part by part: each
    marker follows exactly its part's records, also when a filter left rows out (the worker counts each part's
    records then)."""
    engine = PartsEngine({"a": 100, "c": 30})

    async def offload(info: TableInfo, raw: Any) -> MappedRows:
        records: list[Record] = []
        counts: list[int] = []
        start = 0
        rows = raw.rows()
        for n in [n for n, _ in parts_of[id(raw)]]:
            kept = [r for r in rows[start : start + n] if not (filtered and r["id"] % 4 == 0)]
            records.extend(Record(str(r["id"]), b"", label=info.table) for r in kept)
            counts.append(len(kept))
            start += n
        return MappedRows(records, counts if filtered else None)

    parts_of: dict[int, list[tuple[int, Any]]] = {}
    read = engine.read

    async def noting(*args: Any, **kwargs: Any) -> AsyncIterator[Chunk]:
        async for chunk in read(*args, **kwargs):
            assert chunk.parts is not None and chunk.raw is not None
            parts_of[id(chunk.raw)] = chunk.parts
            yield chunk

    engine.read = noting  # type: ignore[method-assign]
    cfg = FullLoadConfig(max_full_load_subtasks=2, parallel_load_threads=2, chunk_rows=100)
    load = _offloaded(engine, cfg, offload)
    items = asyncio.run(_collect(load))
    got: dict[str, list[int]] = {"a": [], "c": []}
    markers = 0
    for item in items:
        if isinstance(item, MappedRows):
            got[item.records[0].label if item.records else "a"].extend(int(r.partition_key) for r in item.records)
            continue
        assert isinstance(item, Marker)
        markers += 1
        # "Everything before this marker": every row of each segment up to its "after" key, nothing beyond.
        for name, table in cast(LoadProgress, item.checkpoint["load"])["tables"].items():
            ids = got[name.split(".")[1]]
            for s in table["segments"]:
                lo = int(s["lo"][0]) if s["lo"] else 0
                hi = int(s["hi"][0]) if s["hi"] else 10**9
                upto = int(s["after"][0]) if s["after"] else lo
                mine = [x for x in ids if lo < x <= hi]
                assert mine == [x for x in range(lo + 1, upto + 1) if not (filtered and x % 4 == 0)]
    assert markers >= (100 + 30) // 7  # one per 7-row part (and segment ends)
    for name, n in (("a", 100), ("c", 30)):
        assert sorted(got[name]) == [x for x in range(1, n + 1) if not (filtered and x % 4 == 0)]
    assert load.rows == 130


def test_the_queue_holds_as_many_rows_of_chunks_of_parts_as_of_single_chunks() -> None:
    """Chunks of parts hold up to GROUP_ROWS rows: the queue holds fewer of them (memory bound as before), at
    least two; engines of single chunks (and loads without workers) keep two per session."""

    async def offload(info: TableInfo, raw: Any) -> MappedRows:
        return MappedRows([])

    def depth(engine: MemoryEngine, buffer: int, sessions: int, with_workers: bool = True) -> int:
        cfg = FullLoadConfig(max_full_load_subtasks=sessions, parallel_load_buffer_size=buffer)
        return _offloaded(engine, cfg, offload if with_workers else None)._queue_depth(sessions)

    parts, single = PartsEngine({}), MemoryEngine({})
    parts.reads_parts = True  # type: ignore[attr-defined]
    assert depth(parts, 50, 8) == 2 and depth(parts, 50, 49) == 4 and depth(parts, 1000, 8) == 16
    assert depth(single, 50, 8) == 16 and depth(parts, 50, 8, with_workers=False) == 16
