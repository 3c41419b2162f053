"""The daemon behind a fault-injecting proxy: throttled entries, 500s and outages lose nothing and never
reorder a key; a second signal exits at once and is still safe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import (
    AWS_ENV,
    create_stream,
    in_key_order,
    read_stream,
    start_daemon,
    write_config,
)
from tests.support.faultproxy import FaultProxy
from tests.support.postgres import PgDb


def _rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["data"]["metadata"].get("table-name") == "kv"]


def _wait_all(
    url: str, stream: str, expected: set[int], timeout: float = 120, ordered: bool = True
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = _rows(read_stream(url, stream))
        missing = expected - {r["data"]["data"]["n"] for r in records}
        if not missing and (not ordered or in_key_order(records)):
            return records
        assert time.monotonic() < deadline, (
            f"{len(missing)} changes missing, e.g. {sorted(missing)[:10]}"
            if missing
            else "a key's changes are out of order after de-duplication, and the order never settled"
        )
        time.sleep(0.5)


def test_throttling_and_500s_lose_nothing_and_keep_key_order(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE kv (k int PRIMARY KEY, n int NOT NULL)")
    stream = create_stream(moto_url, f"f-{uuid.uuid4().hex[:8]}", shards=2)
    mapping = tmp_path / "m.json"
    # per-row partition keys, so several keys are in flight at once and partial failures interleave
    mapping.write_text(
        '{"rules": [{"rule-type": "selection", "rule-id": "1", "rule-name": "1", "rule-action": "include",'
        ' "object-locator": {"schema-name": "public", "table-name": "%"}},'
        ' {"rule-type": "object-mapping", "rule-id": "2", "rule-name": "2", "rule-action": "map-record-to-record",'
        ' "object-locator": {"schema-name": "public", "table-name": "kv"},'
        ' "mapping-parameters": {"partition-key-type": "primary-key"}}]}'
    )
    with FaultProxy(moto_url, seed=7, entry_failure_rate=0.2, request_error_rate=0.05) as proxy:
        daemon = start_daemon(pg_db, proxy.url, stream, tmp_path, extra='table_mappings = "m.json"')
        daemon.wait_ready()
        try:
            with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
                for n in range(1, 801):
                    conn.execute(
                        "INSERT INTO kv VALUES (%s, %s) ON CONFLICT (k) DO UPDATE SET n = EXCLUDED.n", (n % 30, n)
                    )
            records = _wait_all(moto_url, stream, set(range(1, 801)))
            shard_throttles = [
                line
                for line in daemon.metrics().splitlines()
                if line.startswith("cdcstream_sink_shard_throttled_records_total{") and 'shard="shardId-' in line
            ]
            assert shard_throttles and sum(float(line.rsplit(" ", 1)[1]) for line in shard_throttles) > 0
            assert daemon.stop() == 0, daemon.log_tail()
        finally:
            daemon.kill()
        assert proxy.counters["entries_failed"] > 0 and proxy.counters["request_500"] > 0, proxy.counters
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_key.setdefault(r["partition_key"], []).append(r)
    assert len(by_key) == 30
    for recs in by_key.values():
        # _wait_all waited for every key's order to settle: replaying its records ends in the final state
        assert recs[-1]["data"]["data"]["n"] == max(r["data"]["data"]["n"] for r in recs)
    final = dict(pg_db.execute("SELECT k, n FROM kv"))
    for key, recs in by_key.items():
        assert recs[-1]["data"]["data"]["n"] == final[int(key)]


def test_outage_backpressure_then_second_signal_exits_at_once_and_replays(
    pg_db: PgDb, moto_url: str, tmp_path: Path
) -> None:
    pg_db.execute("CREATE TABLE kv (k int PRIMARY KEY, n int NOT NULL)")
    stream = create_stream(moto_url, f"o-{uuid.uuid4().hex[:8]}")
    with FaultProxy(moto_url) as proxy:
        daemon = start_daemon(pg_db, proxy.url, stream, tmp_path)
        daemon.wait_ready()
        proxy.outage(600)
        pg_db.execute("INSERT INTO kv SELECT g, g FROM generate_series(1, 100) g")
        time.sleep(2)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        assert daemon.proc.poll() is None, "the first signal drains: records are still undelivered"
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(timeout=10) == 130
        proxy.outage(0)
        daemon.start()
        daemon.wait_ready()
        try:
            records = _wait_all(moto_url, stream, set(range(1, 101)))
            assert daemon.stop() == 0, daemon.log_tail()
        finally:
            daemon.kill()
    assert {r["data"]["data"]["k"] for r in records} == set(range(1, 101))


def test_check_command_reports_each_prerequisite(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE kv (k int PRIMARY KEY, n int NOT NULL)")
    config = write_config(
        tmp_path / "c.toml", pg_port=pg_db.server.port, database=pg_db.name, endpoint_url=moto_url, stream="nope"
    )
    env = {**os.environ, **AWS_ENV}
    res = subprocess.run(
        [sys.executable, "-m", "cdcstream", "check", "--config", str(config)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "FAIL kinesis stream" in res.stdout and "aws kinesis create-stream --stream-name nope" in res.stdout
    assert res.stdout.startswith("OK   config")
    create_stream(moto_url, "nope-ok")
    config.write_text(config.read_text().replace('"nope"', '"nope-ok"'))
    res = subprocess.run(
        [sys.executable, "-m", "cdcstream", "check", "--config", str(config)], capture_output=True, text=True, env=env
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FAIL" not in res.stdout
    for permission in ("kinesis:ListShards", "kinesis:PutRecords"):
        assert f"OK   {permission}" in res.stdout, res.stdout


def test_ordering_none_delivers_everything_resending_only_rejected(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE kv (k int PRIMARY KEY, n int NOT NULL)")
    stream = create_stream(moto_url, f"n-{uuid.uuid4().hex[:8]}")
    with FaultProxy(moto_url, seed=3, entry_failure_rate=0.2) as proxy:
        daemon = start_daemon(pg_db, proxy.url, stream, tmp_path, extra_target='ordering = "none"')
        daemon.wait_ready()
        try:
            pg_db.execute("INSERT INTO kv SELECT g, g FROM generate_series(1, 400) g")
            records = _wait_all(moto_url, stream, set(range(1, 401)), ordered=False)  # no order promised
            assert daemon.stop() == 0, daemon.log_tail()
        finally:
            daemon.kill()
        written_twice = len(records) - 400
        # rewrite mode: a rejected entry was written anyway, so only those can appear twice
        assert written_twice <= proxy.counters["entries_failed_written"]


def test_sixty_second_outage_backpressure_readyz_and_recovery(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    """Kinesis down for a minute: the source stalls at max_buffered_records, /readyz says not ready, and
    delivery resumes by itself when the endpoint is back."""
    pg_db.execute("CREATE TABLE kv (k int PRIMARY KEY, n int NOT NULL)")
    stream = create_stream(moto_url, f"out-{uuid.uuid4().hex[:8]}")
    with FaultProxy(moto_url) as proxy:
        daemon = start_daemon(
            pg_db,
            proxy.url,
            stream,
            tmp_path,
            extra_target="max_buffered_records = 500",
            extra_http="ready_window = 5",
        )
        daemon.wait_ready()
        try:
            proxy.outage(60)
            pg_db.execute("INSERT INTO kv SELECT g, g FROM generate_series(1, 3000) g")
            time.sleep(10)
            status = orjson.loads(urllib.request.urlopen(daemon.http + "/status", timeout=5).read())
            # backpressure: the sink holds at most max_buffered_records (plus the record being handed over and a
            # few transaction markers); the other ~2,500 changes wait in the server, not in the daemon
            assert status["watermark"]["in_flight"] <= 500 + 10, status
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(daemon.http + "/readyz", timeout=5)
            assert info.value.code == 503
            assert urllib.request.urlopen(daemon.http + "/healthz", timeout=5).status == 200
            records = _wait_all(moto_url, stream, set(range(1, 3001)), timeout=180)
            daemon.wait_ready(timeout=30)
            assert daemon.stop() == 0, daemon.log_tail()
        finally:
            daemon.kill()
        assert proxy.counters["outage"] > 0
    assert {r["data"]["data"]["k"] for r in records} == set(range(1, 3001))


def test_kinesis_unreachable_at_start_is_waited_for_not_ready_then_streams(
    pg_db: PgDb, moto_url: str, tmp_path: Path
) -> None:
    """A connection error is never an exit reason, at start neither (it was exit 5 after 60 s): the daemon waits,
    says so in /readyz, the log and cdcstream_sink_connected, and streams once Kinesis answers."""
    pg_db.execute("CREATE TABLE kv (k int PRIMARY KEY, n int NOT NULL)")
    stream = create_stream(moto_url, f"u-{uuid.uuid4().hex[:8]}")
    with FaultProxy(moto_url) as proxy:
        proxy.outage(600, "reset", every_call=True)
        daemon = start_daemon(pg_db, proxy.url, stream, tmp_path)
        try:
            deadline = time.monotonic() + 30
            while "sink not available yet, retrying" not in daemon.log_path.read_text():
                assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log_tail()
                assert time.monotonic() < deadline, daemon.log_tail()
                time.sleep(0.2)
            status, reason = daemon.readyz()
            assert status == 503 and reason.startswith("waiting for sink: ") and "unreachable" in reason, reason
            samples = {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(daemon.metrics())
                for s in family.samples
            }
            assert samples[("cdcstream_sink_connected", (("stream", stream),))] == 0
            errors = ("cdcstream_errors_total", (("error_type", "SinkRetriableError"), ("stage", "sending")))
            assert samples[errors] >= 1
            proxy.outage(0)
            daemon.wait_ready()
            pg_db.execute("INSERT INTO kv SELECT g, g FROM generate_series(1, 50) g")
            _wait_all(moto_url, stream, set(range(1, 51)))
            assert f'cdcstream_sink_connected{{stream="{stream}"}} 1.0' in daemon.metrics()
            assert daemon.stop() == 0, daemon.log_tail()
        finally:
            daemon.kill()


def test_missing_stream_still_exits_5_at_once(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    daemon = start_daemon(pg_db, moto_url, f"missing-{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=30) == 5, daemon.log_tail()
        assert "create-stream" in daemon.log_path.read_text()
    finally:
        daemon.kill()
