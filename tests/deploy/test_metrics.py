"""``/metrics``, ``/healthz``, ``/readyz`` and ``/status`` of the running daemon.

The catalogue below is written out here, not imported from ``cdcstream.telemetry.metrics``, so a metric that
disappears or is renamed fails the test (dashboards and alerts depend on the names).
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import Daemon, create_stream, start_daemon
from tests.support.faultproxy import FaultProxy
from tests.support.postgres import PgDb
from tests.support.tools import tool

#: Every family of the catalogue (docs/operations.md, "Metrics"), as exposed (counters with _total).
CATALOGUE = (
    "cdcstream_build_info",
    "cdcstream_source_connected",
    "cdcstream_source_reconnects_total",
    "cdcstream_source_events_total",
    "cdcstream_source_transactions_total",
    "cdcstream_source_lag_seconds",
    "cdcstream_delivery_lag_seconds",
    "cdcstream_source_last_event_timestamp_seconds",
    "cdcstream_source_commit_timestamp_seconds",
    "cdcstream_source_lag_bytes",
    "cdcstream_source_retained_wal_bytes",
    "cdcstream_source_probe_timestamp_seconds",
    "cdcstream_end_to_end_lag_seconds_bucket",
    "cdcstream_records_sent_total",
    "cdcstream_record_bytes_sent_total",
    "cdcstream_sink_request_duration_seconds_bucket",
    "cdcstream_sink_batch_records_bucket",
    "cdcstream_sink_throttled_records_total",
    "cdcstream_sink_failed_records_total",
    "cdcstream_sink_retries_total",
    "cdcstream_inflight_records",
    "cdcstream_sink_connected",
    "cdcstream_dead_letter_records_total",
    "cdcstream_checkpoint_commit_timestamp_seconds",
    "cdcstream_checkpoint_position_commit_timestamp_seconds",
    "cdcstream_checkpoint_writes_total",
    "cdcstream_queue_depth",
    "cdcstream_queue_capacity",
    "cdcstream_queue_pushed_total",
    "cdcstream_queue_popped_total",
    "cdcstream_errors_total",
    "cdcstream_full_load_rows_total",
    "cdcstream_full_load_tables",
    "cdcstream_full_load_progress_ratio",
    "cdcstream_source_uncaptured_tables",
    "cdcstream_reloads_total",
    "cdcstream_control_requests_total",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "python_gc_collections_total",
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(daemon: Daemon) -> tuple[str, Samples]:
    text = daemon.metrics()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return text, out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (missing: AssertionError naming it)."""
    key = (name, frozenset(labels.items()))
    assert key in samples, f"missing {name}{labels}"
    return samples[key]


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lbl), v in samples.items() if n == name and want <= lbl)


def names(samples: Samples) -> set[str]:
    return {n for n, _ in samples}


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_every_catalogue_metric_is_present_moves_and_passes_promtool(
    pg_db: PgDb, moto_server: str, tmp_path: Path
) -> None:
    pg_db.execute("CREATE TABLE m (id int PRIMARY KEY, v text)")
    stream = create_stream(moto_server, f"m-{uuid.uuid4().hex[:8]}")
    src = f"postgres:{pg_db.name}"
    # The proxy throttles a share of the entries, so the throttle and retry counters have something to count.
    with FaultProxy(moto_server, seed=3, entry_failure_rate=0.2) as proxy:
        daemon = start_daemon(pg_db, proxy.url, stream, tmp_path, extra_http="lag_probe_interval = 0.5")
        try:
            daemon.wait_ready()
            time.sleep(1.5)  # a heartbeat, a probe and a checkpoint
            _, before = scrape(daemon)
            pg_db.execute("INSERT INTO m SELECT g, 'x' FROM generate_series(1, 200) g")
            pg_db.execute("UPDATE m SET v = 'y' WHERE id <= 50")
            pg_db.execute("DELETE FROM m WHERE id <= 10")
            assert pg_db.terminate_walsender()
            pg_db.execute("INSERT INTO m VALUES (1000, 'after reconnect')")

            def caught_up() -> bool:
                _, s = scrape(daemon)
                return (
                    total(s, "cdcstream_source_events_total", operation="insert") >= 201
                    and value(s, "cdcstream_queue_depth", stage="sink") == 0
                    and value(s, "cdcstream_source_connected", source=src) == 1
                )

            _wait(caught_up, 60, "the daemon to deliver everything")
            time.sleep(1.0)  # the next probe and checkpoint
            text, after = scrape(daemon)
        finally:
            assert daemon.stop() == 0, daemon.log_tail()
            daemon.kill()

    missing = [n for n in CATALOGUE if n not in names(after)]
    assert not missing, missing

    res = subprocess.run([tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True)
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert after[("cdcstream_build_info", frozenset(after_build_labels(after)))] == 1
    assert value(after, "cdcstream_source_connected", source=src) == 1
    assert moved("cdcstream_source_reconnects_total", source=src) >= 1
    assert moved("cdcstream_errors_total", stage="receiving", error_type="SourceConnectionError") >= 1
    table = {"source": src, "table": "public.m"}
    assert value(after, "cdcstream_source_events_total", operation="insert", **table) >= 201
    assert value(after, "cdcstream_source_events_total", operation="update", **table) >= 50
    assert value(after, "cdcstream_source_events_total", operation="delete", **table) >= 10
    assert moved("cdcstream_source_transactions_total", source=src) >= 4
    now = time.time()
    assert 0 <= value(after, "cdcstream_source_lag_seconds", source=src) < 30
    # everything read is acknowledged: the delivery lag is the read lag
    assert value(after, "cdcstream_delivery_lag_seconds", source=src) == value(
        after, "cdcstream_source_lag_seconds", source=src
    )
    assert now - value(after, "cdcstream_source_last_event_timestamp_seconds", source=src) < 10
    assert now - value(after, "cdcstream_source_commit_timestamp_seconds", source=src) < 60
    # the probe: a slot that is caught up is a few hundred bytes (heartbeats) behind at most; it pins WAL
    assert 0 <= value(after, "cdcstream_source_lag_bytes", source=src) < 10_000_000
    assert value(after, "cdcstream_source_retained_wal_bytes", source=src) > 0
    assert now - value(after, "cdcstream_source_probe_timestamp_seconds", source=src) < 10
    # max_slot_wal_keep_size is unlimited on the test server: no safe_wal_size series rather than a fake 0
    assert "cdcstream_source_slot_safe_wal_bytes" not in names(after)
    assert moved("cdcstream_end_to_end_lag_seconds_count", stream=stream) >= 1
    assert moved("cdcstream_records_sent_total", stream=stream) >= 261
    assert moved("cdcstream_record_bytes_sent_total", stream=stream) > 261 * 50
    assert moved("cdcstream_sink_request_duration_seconds_count", stream=stream) >= 1
    assert moved("cdcstream_sink_batch_records_count", stream=stream) >= 1
    throttled = moved("cdcstream_sink_throttled_records_total", stream=stream)
    assert throttled >= 1 and throttled == proxy.counters["entries_failed"] - total(
        before, "cdcstream_sink_throttled_records_total", stream=stream
    )
    assert moved("cdcstream_sink_retries_total", stream=stream, reason="throttle") == throttled
    assert value(after, "cdcstream_sink_failed_records_total", stream=stream, error_code="InternalFailure") == 0
    assert value(after, "cdcstream_inflight_records", stream=stream) == 0
    assert value(after, "cdcstream_sink_connected", stream=stream) == 1
    assert value(after, "cdcstream_dead_letter_records_total", stream=stream) == 0
    assert now - value(after, "cdcstream_checkpoint_commit_timestamp_seconds", source=src) < 10
    assert now - value(after, "cdcstream_checkpoint_position_commit_timestamp_seconds", source=src) < 60
    assert moved("cdcstream_checkpoint_writes_total", source=src, outcome="ok") >= 1
    assert value(after, "cdcstream_checkpoint_writes_total", source=src, outcome="error") == 0
    assert value(after, "cdcstream_queue_capacity", stage="sink") == 20000
    pushed = moved("cdcstream_queue_pushed_total", stage="sink")
    assert pushed >= 261 and moved("cdcstream_queue_popped_total", stage="sink") == pushed
    assert value(after, "cdcstream_queue_capacity", stage="sink_bytes") == 256 * 1024 * 1024
    assert value(after, "cdcstream_queue_depth", stage="sink_bytes") == 0
    pushed_bytes = moved("cdcstream_queue_pushed_total", stage="sink_bytes")
    assert pushed_bytes > pushed * 200 and moved("cdcstream_queue_popped_total", stage="sink_bytes") == pushed_bytes
    assert value(after, "cdcstream_full_load_rows_total", source=src) == 0
    assert value(after, "cdcstream_full_load_tables", source=src, state="pending") == 0
    assert value(after, "cdcstream_source_uncaptured_tables", source=src) == 0
    assert value(after, "cdcstream_reloads_total", source=src, outcome="failed") == 0
    assert value(after, "cdcstream_control_requests_total", outcome="denied") == 0


def after_build_labels(samples: Samples) -> set[tuple[str, str]]:
    (labels,) = [lbl for n, lbl in samples if n == "cdcstream_build_info"]
    d = dict(labels)
    assert d["source_kind"] == "postgres" and d["version"] and d["python"]
    return set(labels)


def test_table_label_can_be_switched_off(pg_db: PgDb, moto_server: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE a (id int PRIMARY KEY)")
    pg_db.execute("CREATE TABLE b (id int PRIMARY KEY)")
    stream = create_stream(moto_server, f"l-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(pg_db, moto_server, stream, tmp_path, extra_http="metrics_table_label = false")
    try:
        daemon.wait_ready()
        pg_db.execute("INSERT INTO a VALUES (1), (2)")
        pg_db.execute("INSERT INTO b VALUES (1)")
        src = f"postgres:{pg_db.name}"
        _wait(
            lambda: total(scrape(daemon)[1], "cdcstream_source_events_total", source=src) >= 3,
            30,
            "three events",
        )
        _, s = scrape(daemon)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    events = {lbl: v for (n, lbl), v in s.items() if n == "cdcstream_source_events_total"}
    assert events == {frozenset({("source", src), ("table", ""), ("operation", "insert")}): 3.0}


def test_readyz_fails_during_a_kinesis_outage_and_recovers_healthz_never_fails(
    pg_db: PgDb, moto_server: str, tmp_path: Path
) -> None:
    pg_db.execute("CREATE TABLE r (id int PRIMARY KEY)")
    stream = create_stream(moto_server, f"r-{uuid.uuid4().hex[:8]}")
    with FaultProxy(moto_server) as proxy:
        daemon = start_daemon(pg_db, proxy.url, stream, tmp_path, extra_http="ready_window = 2")
        try:
            daemon.wait_ready()
            # idle for longer than ready_window: still ready (nothing is waiting for an acknowledgement)
            time.sleep(3)
            assert _get(daemon.http + "/readyz")[0] == 200
            proxy.outage(600)
            pg_db.execute("INSERT INTO r SELECT generate_series(1, 20)")
            _wait(lambda: _get(daemon.http + "/readyz")[0] == 503, 30, "/readyz to fail during the outage")
            status, body = _get(daemon.http + "/readyz")
            assert status == 503 and b"no acknowledgement" in body, body
            assert _get(daemon.http + "/healthz") == (200, b"ok\n")
            doc = orjson.loads(_get(daemon.http + "/status")[1])
            assert doc["queues"]["sink"]["depth"] >= 20, doc  # the 20 rows, undelivered
            assert doc["source"]["connected"] is True
            assert doc["health"]["ready"].startswith("no acknowledgement")
            assert doc["health"]["alive"] == "ok", "retrying through an outage is alive"
            assert set(doc) >= {"source", "watermark", "checkpoint", "lag", "queues", "full_load", "health"}
            proxy.outage(0)
            _wait(lambda: _get(daemon.http + "/readyz")[0] == 200, 30, "/readyz to recover")
            doc = orjson.loads(_get(daemon.http + "/status")[1])
            assert doc["queues"]["sink"]["depth"] == 0
            assert doc["lag"]["probe"]["retained_wal_bytes"] > 0
        finally:
            assert daemon.stop() == 0, daemon.log_tail()
            daemon.kill()
