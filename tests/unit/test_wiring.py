"""The parts ``cdcstream run`` builds from the configuration (cdcstream/wiring.py): the engine the config names,
the Kinesis sink reporting to the pipeline, the stop bound, the worker pool only when asked for. Nothing
connects here: building is free of I/O."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cdcstream.config import Config
from cdcstream.records import Record
from cdcstream.sinks.kinesis import KinesisSink
from cdcstream.sources.mysql import MySQLSource
from cdcstream.sources.postgres import PostgresSource
from cdcstream.wiring import STOP_GRACE, build_parts
from cdcstream.workers.pool import MappingPool

SOURCES: dict[str, dict[str, Any]] = {
    "postgres": {"engine": "postgres", "database": "shop"},
    "mysql": {"engine": "mysql", "host": "db.example", "port": 3307, "server_id": 7, "databases": ["shop"]},
}


def _config(tmp_path: Path, engine: str, **extra: Any) -> Config:
    return Config.model_validate(
        {
            "task_id": "orders",
            "source": SOURCES[engine],
            "target": {"stream_name": "s", "drain_timeout": 12},
            "checkpoint": {"state_dir": str(tmp_path)},
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("engine", "source_type", "label"),
    [("postgres", PostgresSource, "postgres:shop"), ("mysql", MySQLSource, "mysql:db.example:3307")],
)
async def test_the_configured_engine_and_sink_are_built(
    tmp_path: Path, engine: str, source_type: type, label: str
) -> None:
    parts = build_parts(_config(tmp_path, engine, full_load={"processes": 0}))
    assert isinstance(parts.source, source_type) and parts.label == label
    assert parts.pool is None
    assert parts.deadline.seconds == 12 + STOP_GRACE
    assert parts.store.path == tmp_path / "orders.checkpoint.json" and parts.store.owner is not None
    acked: list[Record] = []
    sink = parts.sink(acked.extend)
    assert isinstance(sink, KinesisSink)
    record = Record("k", b"{}", seq=7)
    sink._on_ack([record])  # the sink reports to the callback it was built with
    assert acked == [record]


async def test_the_mapping_pool_is_built_when_processes_are_asked_for(tmp_path: Path) -> None:
    parts = build_parts(_config(tmp_path, "postgres", full_load={"processes": 2}))
    assert isinstance(parts.pool, MappingPool)
    await parts.pool.close()  # nothing started: its workers start at the first load chunk
