"""The mapping worker pool (real spawned processes): same records as mapping in-process, errors surface."""

from __future__ import annotations

import asyncio
import io
import os
import pickle
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from cdcstream.changes import ChangeEvent, Column, MappedRows, Op, TableInfo
from cdcstream.config import Config
from cdcstream.errors import MappingError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import load_rules, parse_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.records import Record
from cdcstream.sinks.batching import Batch, key_size
from cdcstream.sinks.putrecords import PutRecordsClient
from cdcstream.sources.postgres.snapshot import CopyBlock, RowSpec
from cdcstream.sources.postgres.values import INT4, PgType
from cdcstream.workers import pool as pool_module
from cdcstream.workers.pool import (
    AUTO_MAX,
    MappingPool,
    cgroup_cpu_limit,
    default_processes,
    map_chunk,
    map_parts,
)
from tests.support.fullload import schema_table_key_mapping

INFO = TableInfo("public", "t", (Column("id", "int4", 23, False, True), Column("s", "text", 25, True, False)))
ROWS = [{"id": i, "s": None if i % 3 == 0 else f'v"{i}\\é'} for i in range(1, 40)]


@dataclass
class Rows:
    """RawRows over ready rows; ``fail`` makes rows() raise, ``die`` ends the worker process."""

    data: list[dict[str, Any]]
    fail: str = ""
    die: bool = False

    def __len__(self) -> int:
        return len(self.data)

    def rows(self) -> list[dict[str, Any]] | None:
        if self.die:
            os._exit(3)
        if self.fail == "stale":
            return None
        if self.fail:
            raise MappingError(self.fail)
        return self.data


def _config(**target: Any) -> Config:
    return Config.model_validate(
        {"source": {"engine": "postgres", "database": "app"}, "target": {"stream_name": "s", **target}}
    )


def _pool(processes: int, cfg: Config | None = None, idle_stop: float = pool_module.IDLE_STOP) -> MappingPool:
    """A pool over the default mapping (no mapping file)."""
    cfg = cfg or _config()
    return MappingPool(cfg, Mapper(MappingRules(), cfg.target, cfg.task_id), processes, idle_stop)


def _in_process(cfg: Config) -> list[Record]:
    mapper = Mapper(MappingRules(), cfg.target, cfg.task_id)
    return mapper.map([ChangeEvent(Op.LOAD, INFO, row, None, None, "", 0.0, "", 0) for row in ROWS])


def _body(records: list[Record]) -> bytes:
    batch = Batch()
    for r in records:
        batch.keys.append(r.partition_key)
        batch.counts.append(1)
        batch.key_sizes.append(key_size(r.partition_key))
        batch.records.append(r)
    client = PutRecordsClient(
        stream_name="s", region="us-east-1", endpoint_url="http://127.0.0.1:1", credentials=None, request_timeout=1
    )
    return client.build_body(batch)


def _without_stamps(data: bytes) -> dict[str, Any]:
    doc = orjson.loads(data)
    doc["metadata"].pop("timestamp")
    return dict(doc)


def test_map_chunk_matches_in_process_mapping_and_the_sinks_entries() -> None:
    cfg = _config()
    out = map_chunk(Mapper(MappingRules(), cfg.target, cfg.task_id), INFO, Rows(ROWS))
    assert out is not None
    keys, datas, entries, label = out
    expected = _in_process(cfg)
    assert keys == [r.partition_key for r in expected]
    assert [_without_stamps(d) for d in datas] == [_without_stamps(r.data) for r in expected]
    assert label == expected[0].label
    # The prebuilt entries are byte for byte what the sink writes for the same records.
    records = [Record(k, d, label=label) for k, d in zip(keys, datas, strict=True)]
    with_entries = [Record(k, d, label=label, entry=e) for k, d, e in zip(keys, datas, entries, strict=True)]
    assert _body(with_entries) == _body(records)
    assert map_chunk(Mapper(MappingRules(), cfg.target, cfg.task_id), INFO, Rows(ROWS, fail="stale")) is None


async def test_pool_maps_in_worker_processes_and_reports_errors() -> None:
    cfg = _config(partition_include_schema_table=True)
    pool = _pool(2, cfg)
    try:
        mapped = await pool.map(INFO, Rows(ROWS))
        assert isinstance(mapped, MappedRows)
        expected = _in_process(cfg)
        assert [r.partition_key for r in mapped.records] == [r.partition_key for r in expected]
        assert [_without_stamps(r.data) for r in mapped.records] == [_without_stamps(r.data) for r in expected]
        assert all(r.entry is not None and r.seq == 0 for r in mapped.records)
        assert await pool.map(INFO, Rows(ROWS, fail="stale")) is None
        with pytest.raises(MappingError, match="bad row 7"):
            await pool.map(INFO, Rows(ROWS, fail="bad row 7"))
        # Both workers still answer after an error.
        for _ in range(3):
            assert await pool.map(INFO, Rows(ROWS[:2])) is not None
        with pytest.raises(MappingError, match="died"):
            await pool.map(INFO, Rows(ROWS, die=True))
    finally:
        await pool.close()


@dataclass
class Parts(Rows):
    """Rows of a chunk of parts (loadengine.Chunk.parts): ``sizes`` rows each."""

    sizes: tuple[int, ...] = ()


def _not_null_s() -> MappingRules:
    rule = {
        "rule-type": "selection",
        "rule-id": "1",
        "rule-name": "f",
        "object-locator": {"schema-name": "%", "table-name": "%"},
        "rule-action": "include",
        "filters": [
            {"filter-type": "source", "column-name": "s", "filter-conditions": [{"filter-operator": "notnull"}]}
        ],
    }
    return parse_rules({"rules": [rule]}, "rules.json")


async def test_chunks_of_parts_are_mapped_part_by_part_and_counted_where_a_filter_drops_rows() -> None:
    """A chunk of parts is mapped in one request; where a filter left rows out, the answer says how many records
    each part gave (the load's markers go between the parts' records), through a worker process too."""
    cfg = _config()
    sizes = (10, 10, 10, 9)  # ROWS: 39 rows, every third without "s"
    plain = map_parts(Mapper(MappingRules(), cfg.target, cfg.task_id), INFO, Parts(ROWS, sizes=sizes))
    assert plain is not None and plain[1] is None and len(plain[0][0]) == 39  # one record per row: no counts
    mapper = Mapper(_not_null_s(), cfg.target, cfg.task_id)
    filtered = map_parts(mapper, INFO, Parts(ROWS, sizes=sizes))
    expected = [
        sum(1 for r in ROWS[i : i + n] if r["s"] is not None) for i, n in zip((0, 10, 20, 30), sizes, strict=True)
    ]
    assert filtered is not None and filtered[1] == expected and len(filtered[0][0]) == sum(expected)
    alone = map_chunk(mapper, INFO, Parts(ROWS, sizes=sizes))
    assert alone is not None and alone[0] == filtered[0][0]
    assert [_without_stamps(d) for d in alone[1]] == [_without_stamps(d) for d in filtered[0][1]]
    pool = MappingPool(cfg, mapper, 1)
    try:
        mapped = await pool.map(INFO, Parts(ROWS, sizes=sizes))
        assert mapped is not None and mapped.counts == expected
        assert [r.partition_key for r in mapped.records] == filtered[0][0]
    finally:
        await pool.close()


async def test_workers_exit_when_the_daemon_closes_their_sockets() -> None:
    pool = _pool(1)
    await pool.map(INFO, Rows(ROWS[:1]))
    processes = [w.process for w in pool._workers]
    await pool.close()
    for p in processes:
        assert p.exitcode == 0  # ended by the closed socket, not killed


async def test_a_stop_signal_while_workers_start_does_not_kill_them() -> None:
    """systemd signals the whole unit at stop: a worker still starting Python (before it can ignore the signal)
    must not die of it, or the daemon's drain fails."""
    pool = _pool(2)
    try:
        await pool._start()
        for w in pool._workers:  # at once: the workers are still importing
            os.kill(w.process.pid, signal.SIGTERM)
            os.kill(w.process.pid, signal.SIGINT)
        for _ in range(4):
            mapped = await pool.map(INFO, Rows(ROWS))
            assert isinstance(mapped, MappedRows) and len(mapped.records) == len(ROWS)
        assert all(w.process.is_alive() for w in pool._workers)
    finally:
        await pool.close()


def test_descriptions_go_to_a_worker_once_then_by_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table's description travels with its first chunk only; both sides drop the same old ones, so a
    reference never names one the worker no longer holds."""
    monkeypatch.setattr(pool_module, "KEPT", 2)
    pool = _pool(1)
    known: dict[int, None] = {}
    kept: dict[int, Any] = {}
    tables = [INFO, TableInfo("public", "u", INFO.columns), TableInfo("public", "v", INFO.columns)]

    def send(info: TableInfo) -> tuple[int, TableInfo]:
        buf = io.BytesIO()
        pool_module._RequestPickler(buf, pool._serials.of, known).dump((info, Rows(ROWS[:1])))
        got, rows = pool_module._RequestUnpickler(buf.getvalue(), kept).load()
        assert got == info and rows.data == ROWS[:1]
        return len(buf.getvalue()), got

    first, got = send(INFO)
    again, got_again = send(INFO)
    assert again < first - 100 and got_again is got  # by reference: the worker's own copy
    for info in tables[1:]:  # two more tables: INFO is dropped on both sides (KEPT = 2)
        send(info)
    assert len(known) == len(kept) == 2
    resent, _ = send(INFO)  # sent whole again, not as a reference the worker no longer holds
    assert resent == first


async def test_idle_workers_stop_and_the_next_chunk_starts_new_ones() -> None:
    pool = _pool(2, idle_stop=0.5)
    try:
        assert pool.status()["pids"] == []  # started by the first chunk, not before
        assert await pool.map(INFO, Rows(ROWS)) is not None
        first = [w.process for w in pool._workers]
        assert len(first) == 2
        for _ in range(2):  # chunks coming before the idle time is up keep the same workers
            await asyncio.sleep(0.3)
            assert await pool.map(INFO, Rows(ROWS)) is not None
            assert [w.process for w in pool._workers] == first
        await asyncio.sleep(1.5)
        assert pool.status()["pids"] == []
        for p in first:  # ended by their closed sockets (on a loaded machine, some time after the pool let go)
            await asyncio.to_thread(p.join, 30)
        assert all(p.exitcode == 0 for p in first)
        mapped = await pool.map(INFO, Rows(ROWS))
        assert isinstance(mapped, MappedRows) and len(mapped.records) == len(ROWS)
        assert set(pool.status()["pids"]).isdisjoint(p.pid for p in first)
    finally:
        await pool.close()
    assert pool.status()["pids"] == []


def test_copy_block_renders_in_another_process_and_reports_stale_composites() -> None:
    spec = RowSpec(
        "t1",
        ("id", "c"),
        (INT4, 90001),
        (PgType(90001, "public", "pair", "c", False, fields=(("a", INT4), ("b", 25))),),
        False,
        "string",
        "string",
    )
    block = CopyBlock(b"1\t(2,x)\n2\t\\N\n", 2, spec)
    again = pickle.loads(pickle.dumps(block))
    assert again.rows() == [{"id": 1, "c": {"a": 2, "b": "x"}}, {"id": 2, "c": None}]
    # A value with more fields than the description: the composite changed; the source must re-describe.
    assert CopyBlock(b"3\t(2,x,9)\n", 1, spec).rows() is None


@pytest.mark.parametrize(
    ("cores", "limit", "expected"),
    [(1, None, 0), (2, None, 1), (4, None, 3), (64, None, AUTO_MAX), (64, 0.25, 0), (64, 2.5, 2), (2, 8.0, 1)],
)
def test_auto_is_a_worker_per_spare_core_up_to_the_cap(
    monkeypatch: pytest.MonkeyPatch, cores: int, limit: float | None, expected: int
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(pool_module, "cgroup_cpu_limit", lambda: limit)
    assert default_processes() == expected


def _cgroup(root: Path, proc: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(proc)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_cgroup_cpu_limits_v2_and_v1(tmp_path: Path) -> None:
    unit = "sys/fs/cgroup/system.slice/cdc.service/cpu.max"
    v2 = _cgroup(tmp_path / "a", "0::/system.slice/cdc.service\n", {unit: "150000 100000\n"})
    assert cgroup_cpu_limit(v2) == 1.5
    unlimited = _cgroup(tmp_path / "b", "0::/\n", {"sys/fs/cgroup/cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(unlimited) is None
    v1 = _cgroup(
        tmp_path / "c",
        "9:name=systemd:/\n4:cpu,cpuacct:/kubepods/pod1\n",
        {"sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us": "50000\n",
         "sys/fs/cgroup/cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us": "100000\n"},
    )  # fmt: skip
    assert cgroup_cpu_limit(v1) == 0.5
    v1_unlimited = _cgroup(tmp_path / "d", "4:cpu,cpuacct:/\n", {"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n"})
    assert cgroup_cpu_limit(v1_unlimited) is None
    assert cgroup_cpu_limit(tmp_path / "nothing") is None
    # A hybrid host: the unified hierarchy has no cpu.max, the v1 cpu controller has the limit.
    hybrid = _cgroup(
        tmp_path / "e",
        "0::/x\n4:cpu:/x\n",
        {"sys/fs/cgroup/cpu/x/cpu.cfs_quota_us": "200000\n", "sys/fs/cgroup/cpu/x/cpu.cfs_period_us": "100000\n"},
    )
    assert cgroup_cpu_limit(hybrid) == 2.0


@pytest.mark.parametrize(("value", "ok"), [("auto", True), (0, True), (3, True), ("many", False), (-1, False)])
def test_processes_setting_is_validated(value: Any, ok: bool) -> None:
    raw = {"source": {"engine": "postgres", "database": "app"}, "target": {"stream_name": "s"}}
    if ok:
        assert Config.model_validate({**raw, "full_load": {"processes": value}}).full_load.processes == value
    else:
        with pytest.raises(ValidationError, match="processes"):
            Config.model_validate({**raw, "full_load": {"processes": value}})


class Picky(Exception):
    """Pickles, but does not unpickle: its __init__ wants two arguments."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(f"{a}/{b}")


@dataclass
class PickyRows(Rows):
    def rows(self) -> list[dict[str, Any]] | None:
        raise Picky("x", "y")


async def test_an_exception_that_does_not_unpickle_still_arrives_as_text() -> None:
    pool = _pool(1)
    try:
        with pytest.raises(MappingError, match="Picky: x/y"):
            await pool.map(INFO, PickyRows(ROWS))
        assert await pool.map(INFO, Rows(ROWS[:1])) is not None  # and the worker goes on
    finally:
        await pool.close()


async def test_workers_map_with_the_rules_as_the_daemon_read_them(tmp_path: Path) -> None:
    """The mapping file edited after the start (say, for the next restart) does not change what workers started
    later (a reload --table) write: the daemon's own records would otherwise differ from its load records."""
    path = schema_table_key_mapping(tmp_path / "mapping.json", "public", "t")
    rules = orjson.loads(path.read_bytes())["rules"]
    cfg = Config.model_validate(
        {
            "source": {"engine": "postgres", "database": "app"},
            "target": {"stream_name": "s"},
            "table_mappings": str(path),
        }
    )
    pool = MappingPool(cfg, Mapper(load_rules(path), cfg.target, cfg.task_id), 1)
    path.write_bytes(orjson.dumps({"rules": rules[:1]}))  # primary-key load keys from now on
    try:
        mapped = await pool.map(INFO, Rows(ROWS[:3]))
        assert mapped is not None
        assert {r.partition_key for r in mapped.records} == {"public.t"}
    finally:
        await pool.close()
