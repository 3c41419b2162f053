"""The daemon end to end against the private PostgreSQL and both Kinesis-API servers (moto, kinesalite)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon, create_stream, start_daemon, table_records, wait_for
from tests.support.postgres import PgDb

pytestmark = pytest.mark.pg_core


def _start(pg_db: PgDb, url: str, tmp_path: Path, **kw: Any) -> tuple[Daemon, str]:
    stream = create_stream(url, f"s-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(pg_db, url, stream, tmp_path, **kw)
    daemon.wait_ready()
    return daemon, stream


def test_every_operation_envelope_key_and_truncate_order(pg_db: PgDb, kinesis_url: str, tmp_path: Path) -> None:
    pg_db.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, qty int, price numeric(12,2), payload jsonb, "
        "created timestamptz, flag boolean)"
    )
    daemon, stream = _start(pg_db, kinesis_url, tmp_path)
    try:
        pg_db.execute(
            "INSERT INTO items VALUES (1, 'a', 2, 12.50, '{\"x\": 1}', '2026-11-27 12:00:00.5+00', true), "
            "(2, 'b', NULL, 0.10, NULL, NULL, false)"
        )
        pg_db.execute("UPDATE items SET qty = 5 WHERE id = 1")
        pg_db.execute("DELETE FROM items WHERE id = 2")
        pg_db.execute("TRUNCATE items")
        pg_db.execute("INSERT INTO items (id, name) VALUES (3, 'after truncate')")
        records = wait_for(kinesis_url, stream, lambda rs: len(table_records(rs, "items")) >= 6)
        time.sleep(0.5)  # let the checkpoint catch up with the last acknowledgement
        metrics = _metrics(daemon.metrics())
    finally:
        assert daemon.stop() == 0, daemon.log_tail()

    items = table_records(records, "items")
    ops = [(r["data"]["metadata"]["record-type"], r["data"]["metadata"]["operation"]) for r in items]
    assert ops == [
        ("data", "insert"),
        ("data", "insert"),
        ("data", "update"),
        ("data", "delete"),
        ("control", "TruncateTable"),
        ("data", "insert"),
    ]
    first = items[0]
    assert first["partition_key"] == "public.items"
    assert first["data"]["data"] == {
        "id": 1,
        "name": "a",
        "qty": 2,
        "price": "12.50",
        "payload": '{"x": 1}',
        "created": "2026-11-27T12:00:00.5Z",
        "flag": True,
    }
    md = first["data"]["metadata"]
    for key in (
        "timestamp",
        "record-type",
        "operation",
        "partition-key-type",
        "schema-name",
        "table-name",
        "transaction-id",
        "stream-position",
    ):
        assert key in md, key
    assert "commit-timestamp" not in md  # only with include_transaction_details (DMS)
    assert md["partition-key-type"] == "schema-table"
    assert (md["schema-name"], md["table-name"]) == ("public", "items")
    assert isinstance(md["transaction-id"], int)
    assert items[1]["data"]["data"] == {
        "id": 2,
        "name": "b",
        "price": "0.10",
        "flag": False,
    }  # NULLs left out
    assert items[3]["data"]["data"] == {"id": 2}  # default replica identity: the key
    truncate = items[4]
    assert truncate["partition_key"] == "task1.public.items"
    assert truncate["data"]["control"] == {}
    positions = [r["data"]["metadata"]["stream-position"] for r in items]
    assert positions == sorted(positions)
    restart = [r for r in records if r["data"]["metadata"]["operation"] == "RestartTask"]
    assert len(restart) == 1 and restart[0]["partition_key"] == "task1"

    label = f'{{source="postgres:{pg_db.name}"}}'
    assert metrics[f'cdcstream_records_sent_total{{stream="{stream}"}}'] >= 7
    assert 0 <= metrics[f"cdcstream_source_lag_seconds{label}"] < 60
    assert metrics[f"cdcstream_checkpoint_commit_timestamp_seconds{label}"] > time.time() - 60
    assert metrics[f"cdcstream_source_connected{label}"] == 1


def _metrics(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_restart_emits_restart_task_and_resumes_without_loss(pg_db: PgDb, kinesis_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    daemon, stream = _start(pg_db, kinesis_url, tmp_path)
    pg_db.execute("INSERT INTO t SELECT generate_series(1, 50)")
    wait_for(kinesis_url, stream, lambda rs: len(table_records(rs, "t")) >= 50)
    assert daemon.stop() == 0, daemon.log_tail()
    pg_db.execute("INSERT INTO t SELECT generate_series(51, 100)")  # while the daemon is down
    daemon.start()
    daemon.wait_ready()
    try:
        records = wait_for(
            kinesis_url, stream, lambda rs: len({r["data"]["data"]["id"] for r in table_records(rs, "t")}) >= 100
        )
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    ids = [r["data"]["data"]["id"] for r in table_records(records, "t")]
    assert sorted(set(ids)) == list(range(1, 101))
    assert len(ids) == 100, "a clean stop checkpoints everything: nothing is replayed"
    restarts = [r for r in records if r["data"]["metadata"]["operation"] == "RestartTask"]
    assert len(restarts) == 2


def test_survives_terminated_walsender(pg_db: PgDb, kinesis_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    daemon, stream = _start(pg_db, kinesis_url, tmp_path)
    try:
        pg_db.execute("INSERT INTO t SELECT generate_series(1, 10)")
        wait_for(kinesis_url, stream, lambda rs: len(table_records(rs, "t")) >= 10)
        killed = pg_db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'cdcstream'",
            superuser=True,
        )
        assert killed, "no walsender found"
        pg_db.execute("INSERT INTO t SELECT generate_series(11, 20)")
        records = wait_for(
            kinesis_url, stream, lambda rs: len({r["data"]["data"]["id"] for r in table_records(rs, "t")}) >= 20
        )
        assert "cdcstream_source_reconnects_total" in daemon.metrics()
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert {r["data"]["data"]["id"] for r in table_records(records, "t")} == set(range(1, 21))
