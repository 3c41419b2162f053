"""Mapping in worker processes: full-load chunks decoded, mapped and serialised beside the event loop.

One event loop on one core tops out at ~50k load rows/s in this design (bench/README.md): decoding, mapping and
JSON are ~60 % of a row's CPU. With ``full_load.processes`` > 0 a source hands raw chunks
(:class:`~cdcstream.changes.RawRows`) to this pool instead, and the pipeline only numbers and sends the records
that come back, in the order the chunks were read. Nothing here is durable: a chunk's records reach the
watermark exactly as in-process ones would, so checkpoints and at-least-once are unchanged.

Each worker builds its own :class:`Mapper` from the same mapping file and target settings. The daemon's own
mapper still plans every table first (:meth:`MappingPool.map`), so the checks that need all tables (two
source tables written as one target) see the tables the workers map.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import BrokenExecutor, ProcessPoolExecutor
from pathlib import Path
from typing import Any

from cdcstream.changes import ChangeEvent, MappedRows, Op, RawRows, TableInfo
from cdcstream.config import Config, TargetConfig
from cdcstream.errors import MappingError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.rules import load_rules
from cdcstream.records import Record

_mapper: Mapper | None = None  # in a worker process: built once by _init


def _init(rules_path: str | None, target: dict[str, Any], task_id: str, log_level: str, log_format: Any) -> None:
    from cdcstream.telemetry.logging import configure

    configure(log_level, log_format)
    global _mapper
    rules = load_rules(Path(rules_path) if rules_path else None)
    _mapper = Mapper(rules, TargetConfig.model_validate(target), task_id)


def _map(info: TableInfo, raw: RawRows) -> tuple[list[str], list[bytes], str] | None:
    """In a worker: the chunk's partition keys, record bodies and label (None: decode it in the source)."""
    assert _mapper is not None
    rows = raw.rows()
    if rows is None:
        return None
    records = _mapper.map([ChangeEvent(Op.LOAD, info, row, None, None, "", 0.0, "", 0) for row in rows])
    return [r.partition_key for r in records], [r.data for r in records], records[0].label if records else ""


def default_processes() -> int:
    """``processes = "auto"``: every core but the one the event loop uses (none on a single core)."""
    return max(0, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) - 1)


class MappingPool:
    """Worker processes that decode and map full-load chunks (started at the first chunk, so a CDC-only run
    never starts them)."""

    def __init__(self, cfg: Config, mapper: Mapper, processes: int) -> None:
        self._cfg = cfg
        self._mapper = mapper
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            cfg = self._cfg
            rules = str(cfg.resolve(cfg.table_mappings)) if cfg.table_mappings else None
            # spawn: the daemon has threads (checkpoint writes, the MySQL binlog reader); forking them is unsafe.
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init,
                initargs=(rules, cfg.target.model_dump(), cfg.task_id, cfg.log.level, cfg.log.format),
            )
        return self._pool

    async def map(self, info: TableInfo, raw: RawRows) -> MappedRows | None:
        """The chunk's records, in row order (None: the source must decode it itself, see RawRows.rows)."""
        if self._mapper.plan(info) is None:
            return MappedRows([])
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self._get_pool(), _map, info, raw)
        except BrokenExecutor as exc:
            raise MappingError(f"a mapping worker process died ({exc}); the load resumes from the checkpoint") from None
        if out is None:
            return None
        keys, datas, label = out
        return MappedRows([Record(k, d, 0, None, label) for k, d in zip(keys, datas, strict=True)])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
