"""Telemetry without servers: the liveness rule behind the watchdog, the lag probe's gauge handling, the
pre-created metric catalogue, and the ``healthcheck`` command."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from prometheus_client import REGISTRY, generate_latest

from cdcstream.cli import main
from cdcstream.runtime.liveness import LoopStamps, assess
from cdcstream.telemetry import metrics
from cdcstream.telemetry.probe import LagProbe

W = 10.0


def test_liveness_idle_and_busy_pipelines_are_alive() -> None:
    # idle source (the reader loop still turns), nothing outstanding
    assert assess(100.0, W, LoopStamps(reader_at=99.0, delivering_since=None, sink_outstanding=0, sink_at=0.0)) is None
    # a Kinesis outage: the reader waits on the sink (backpressure), the sink keeps finishing failed requests
    s = LoopStamps(reader_at=10.0, delivering_since=20.0, sink_outstanding=20_000, sink_at=98.0)
    assert assess(100.0, W, s) is None


def test_liveness_wedged_loops_are_not_alive() -> None:
    # the sink holds records and no request finished for longer than the window
    reason = assess(100.0, W, LoopStamps(reader_at=99.0, delivering_since=None, sink_outstanding=5, sink_at=80.0))
    assert reason is not None and reason.startswith("sink:")
    # the reader has not gone round its loop (and is not waiting on the sink)
    reason = assess(100.0, W, LoopStamps(reader_at=80.0, delivering_since=None, sink_outstanding=0, sink_at=0.0))
    assert reason is not None and reason.startswith("reader:")
    # stuck handing a batch to a sink that has nothing to do: a hang in mapping, not backpressure
    reason = assess(100.0, W, LoopStamps(reader_at=50.0, delivering_since=60.0, sink_outstanding=0, sink_at=0.0))
    assert reason is not None and "idle sink" in reason


def _sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_lag_probe_sets_removes_and_survives_errors() -> None:
    values: list[dict[str, float | None]] = [
        {"lag_bytes": 10.0, "retained_wal_bytes": 100.0, "safe_wal_bytes": 5.0, "unknown": 1.0},
        {"lag_bytes": 0.0, "retained_wal_bytes": 50.0, "safe_wal_bytes": None},
    ]

    async def probe() -> dict[str, float | None]:
        if not values:
            raise RuntimeError("connection lost")
        return values.pop(0)

    label = "test:probe"
    p = LagProbe(probe, label, interval=1.0)
    await p.probe_once()
    assert _sample("cdcstream_source_lag_bytes", {"source": label}) == 10.0
    assert _sample("cdcstream_source_slot_safe_wal_bytes", {"source": label}) == 5.0
    await p.probe_once()
    assert _sample("cdcstream_source_retained_wal_bytes", {"source": label}) == 50.0
    # unlimited max_slot_wal_keep_size: the series disappears instead of reading 0
    assert _sample("cdcstream_source_slot_safe_wal_bytes", {"source": label}) is None
    before = _sample("cdcstream_errors_total", {"stage": "probing", "error_type": "RuntimeError"}) or 0.0
    await p.probe_once()  # raises inside: counted and logged, never propagated
    assert _sample("cdcstream_errors_total", {"stage": "probing", "error_type": "RuntimeError"}) == before + 1
    assert _sample("cdcstream_source_lag_bytes", {"source": label}) == 0.0  # last value kept
    assert LagProbe.for_source(object(), label, 1.0) is None
    assert LagProbe.for_source(p, label, 0) is None  # probing off


def test_precreate_exports_known_series_at_zero() -> None:
    metrics.precreate(source="postgres:unit", source_kind="postgres", stream="unit-stream")
    text = generate_latest().decode()
    for line in (
        'cdcstream_source_connected{source="postgres:unit"} 0.0',
        'cdcstream_sink_throttled_records_total{error_code="ProvisionedThroughputExceededException",'
        'stream="unit-stream"} 0.0',
        'cdcstream_full_load_tables{source="postgres:unit",state="pending"} 0.0',
        'cdcstream_sink_retries_total{reason="throttle",stream="unit-stream"} 0.0',
    ):
        assert line in text, line
    # not per source or stream: other tests in this process may have counted some already
    assert _sample("cdcstream_errors_total", {"stage": "receiving", "error_type": "SourceConnectionError"}) is not None
    assert 'cdcstream_build_info{python="' in text and 'source_kind="postgres"' in text


def test_table_label_switch() -> None:
    try:
        metrics.configure(table_label=False)
        assert metrics.table_value("public", "t") == ""
    finally:
        metrics.configure(table_label=True)
    assert metrics.table_value("public", "t") == "public.t"


@pytest.fixture
def health_server() -> Iterator[tuple[str, list[int]]]:
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", status
    finally:
        server.shutdown()


async def test_healthcheck_command(health_server: tuple[str, list[int]]) -> None:
    listen, status = health_server
    url = f"http://{listen}/healthz"
    assert await asyncio.to_thread(main, ["healthcheck", "--url", url]) == 0
    status[0] = 503
    assert await asyncio.to_thread(main, ["healthcheck", "--url", url]) == 1
    assert await asyncio.to_thread(main, ["healthcheck", "--url", "http://127.0.0.1:1/healthz", "--timeout", "1"]) == 1
