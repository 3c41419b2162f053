"""A slow link to Kinesis: the daemon delivers at the link's rate, and its lag metrics and /readyz say how far
behind delivery is.

The fault proxy caps request bodies at 60 KB/s, shared by every connection like one slow link. A full request
(500 records of ~500 bytes, ~300 KB of JSON) then takes ~5 s, longer than the test's 2 s ``request_timeout``:
resent at that size it would time out forever (as it once did: 110 s without one record delivered). The requests
must shrink after a timeout and grow back once answers come quickly again, with every record delivered in
order. Meanwhile the read lag stays near 0 (the source is read at once), while the delivery lag and /readyz
show the records waiting for Kinesis.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon, create_stream, in_key_order, read_stream, start_daemon
from tests.support.faultproxy import FaultProxy
from tests.support.postgres import PgDb

ROWS = 1000


def _gauges(daemon: Daemon, source: str) -> tuple[float, float]:
    """(read lag, delivery lag) of ``source``."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(daemon.metrics()):
        for s in family.samples:
            lag = s.name in ("cdcstream_source_lag_seconds", "cdcstream_delivery_lag_seconds")
            if lag and s.labels.get("source") == source:
                found[s.name] = s.value
    nan = float("nan")  # absent: the assertions on it fail, the delivery loop still tells its own story
    return found.get("cdcstream_source_lag_seconds", nan), found.get("cdcstream_delivery_lag_seconds", nan)


def _rows(url: str, stream: str) -> list[dict[str, Any]]:
    return [r for r in read_stream(url, stream) if r["data"]["metadata"].get("table-name") == "t"]


def test_slow_link_shrinks_requests_delivers_everything_and_reports_delivery_lag(
    pg_db: PgDb, moto_url: str, tmp_path: Path
) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY, pad text NOT NULL)")
    stream = create_stream(moto_url, f"slow-{uuid.uuid4().hex[:8]}")
    source = f"postgres:{pg_db.name}"
    with FaultProxy(moto_url, bandwidth=60_000) as proxy:
        daemon = start_daemon(
            pg_db,
            proxy.url,
            stream,
            tmp_path,
            extra_target="request_timeout = 2",
            extra_http="ready_window = 3",
        )
        try:
            daemon.wait_ready()
            pg_db.execute(f"INSERT INTO t SELECT g, repeat('p', 300) FROM generate_series(1, {ROWS}) g")
            behind: list[tuple[float, float]] = []  # (read lag, delivery lag) scraped while not ready
            reasons: set[str] = set()
            deadline = time.monotonic() + 150
            while True:
                status, reason = daemon.readyz()
                if status != 200:
                    reasons.add(reason)
                    behind.append(_gauges(daemon, source))
                rows = _rows(moto_url, stream)
                if len({r["data"]["data"]["id"] for r in rows}) == ROWS and in_key_order(rows):
                    break
                assert time.monotonic() < deadline, (
                    f"{len(rows)} of {ROWS} rows delivered; requests never got small enough:\n{daemon.log_tail()}"
                )
                time.sleep(0.5)
            log = daemon.log_path.read_text()
            assert "sending smaller ones" in log
            assert proxy.counters["disconnected"] >= 1, "no request timed out: the link was not slow enough"
            # Records waited for Kinesis far beyond ready_window while the source was read at once.
            assert any("not keeping up" in r or "no acknowledgement" in r for r in reasons), reasons
            assert any(delivery >= 3 and delivery > read + 2 for read, delivery in behind), behind
            # Delivered: ready again, delivery lag back to the read lag.
            deadline = time.monotonic() + 30
            while daemon.readyz()[0] != 200:
                assert time.monotonic() < deadline, daemon.readyz()
                time.sleep(0.2)
            read, delivery = _gauges(daemon, source)
            assert delivery < 3 and delivery >= read

            # The link is fast again: requests grow back to full size.
            proxy.bandwidth = None
            pg_db.execute(f"INSERT INTO t SELECT g, repeat('q', 300) FROM generate_series({ROWS + 1}, {ROWS + 3000}) g")
            deadline = time.monotonic() + 60
            while "full size again" not in daemon.log_path.read_text():
                assert time.monotonic() < deadline, daemon.log_tail()
                time.sleep(0.3)
            assert daemon.stop() == 0, daemon.log_tail()
        finally:
            daemon.kill()
