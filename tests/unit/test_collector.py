"""The garbage collector's settings once the daemon has started (runtime/collector.py), in a process of its own: they
are process-wide, and a test must not freeze pytest's heap."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any, cast

import pytest

from cdcstream import cli, pipeline, wiring
from cdcstream.runtime import collector

CHECK = """
import gc
from cdcstream.runtime import collector
before = gc.get_freeze_count()
junk = [[] for _ in range(1000)]
collector.settle()
assert gc.isenabled()
assert gc.get_threshold() == (collector.YOUNG, collector.MIDDLE, collector.OLD), gc.get_threshold()
assert gc.get_freeze_count() > before + 1000
print("ok")
"""


def test_settle_freezes_the_heap_and_spaces_out_the_passes_with_the_collector_still_on() -> None:
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "ok"
    assert collector.YOUNG > 700  # CPython's default, which made the collector ~15 % of the daemon's CPU


def test_the_run_command_settles_the_collector_once_the_pipeline_started(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakePipeline] = []

    class FakePipeline:
        def __init__(self, cfg: object, parts: object) -> None:
            self.on_started: object = None
            made.append(self)

        async def run(self) -> int:
            return 0

    monkeypatch.setattr(pipeline, "Pipeline", FakePipeline)
    monkeypatch.setattr(wiring, "build_parts", lambda cfg: None)
    assert asyncio.run(cli._run(cast(Any, None))) == 0
    # The pipeline calls it after "ready" (tests running pipelines in process leave the collector alone).
    assert [p.on_started for p in made] == [collector.settle]
