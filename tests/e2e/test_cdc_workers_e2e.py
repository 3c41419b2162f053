"""End to end with CDC mapped in worker processes (``[cdc] processes = 2``, set: "auto" starts none, for now):
SIGKILL at random moments loses nothing and keeps order (tests/e2e/test_crash_safety.py's writer and checks), the
workers end with the daemon, and on PostgreSQL a daemon with workers writes exactly the records (but for their
construction time) of one without, in the same order per partition key.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.e2e.test_crash_safety import _writer
from tests.support.daemon import (
    Daemon,
    check_numbered_changes,
    create_stream,
    kill_at_random_moments,
    read_stream,
    start_daemon,
)
from tests.support.engines import Engine
from tests.support.postgres import PgDb
from tests.unit.test_mapping import sel

WORKERS = "[cdc]\nprocesses = 2\n"
KILLS = 6


def _status(daemon: Daemon) -> dict[str, Any]:
    with urllib.request.urlopen(daemon.http + "/status", timeout=5) as resp:
        status: dict[str, Any] = json.loads(resp.read())
    return status


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone too (its parent, the killed daemon, was reaped by the test; init reaps it).
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1].startswith("Z")


def _until(pred: Any, what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within  # a hang guard, not a timing assertion
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_sigkill_with_cdc_workers_loses_nothing(engine: Engine, moto_url: str, tmp_path: Path) -> None:
    engine.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
    if engine.name == "postgres":
        engine.execute("ALTER TABLE counters REPLICA IDENTITY FULL")
    stream = create_stream(moto_url, f"cdcw-{uuid.uuid4().hex[:8]}")
    daemon = engine.start_daemon(moto_url, stream, tmp_path, extra=WORKERS)
    daemon.wait_ready()

    committed: list[tuple[str, int, int]] = []
    done = threading.Event()
    changes = engine.pick(postgres=1500, mariadb=1200)
    writer = threading.Thread(target=_writer, args=(engine, changes, committed, done), daemon=True)
    writer.start()
    pids: set[int] = set()
    try:
        _until(lambda: _status(daemon)["cdc"]["mapping_workers"]["pids"], "the CDC workers to start")
        first = _status(daemon)["cdc"]["mapping_workers"]
        assert first["processes"] == 2 and len(first["pids"]) == 2
        pids.update(first["pids"])
        kill_at_random_moments(daemon, done, KILLS)
        writer.join()
        check_numbered_changes(moto_url, stream, "counters", committed, f"{engine.schema}.counters")
        pids.update(_status(daemon)["cdc"]["mapping_workers"]["pids"])
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    # Workers of killed daemons ended with their sockets; those of the last one with its clean stop.
    _until(lambda: all(_gone(pid) for pid in pids), "every CDC worker process to end")
    assert daemon.starts >= KILLS + 1
    assert "CDC mapping worker processes started" in daemon.log_path.read_text()


_STAMP = re.compile(r'"timestamp":"[^"]*"')

MAPPING = {
    "rules": [
        sel("1", "include", "public", "%"),
        sel("2", "exclude", "public", "skipped"),
        {
            "rule-type": "object-mapping",
            "rule-id": "3",
            "rule-name": "3",
            "rule-action": "map-record-to-record",
            "object-locator": {"schema-name": "public", "table-name": "keyed"},
            "mapping-parameters": {"partition-key-type": "primary-key"},
        },
    ]
}


def _by_key(records: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, doc in records:
        out.setdefault(key, []).append(doc)
    return out


def _daemon(pg_db: PgDb, moto_url: str, tmp_path: Path, name: str, processes: int) -> tuple[Daemon, str]:
    tmp_path.mkdir()
    (tmp_path / "m.json").write_text(json.dumps(MAPPING))
    stream = create_stream(moto_url, f"{name}-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(
        pg_db,
        moto_url,
        stream,
        tmp_path,
        extra=f'table_mappings = "m.json"\n[cdc]\nprocesses = {processes}\n',
        extra_source=f'slot_name = "{name}"\npublication = "{name}"\n',
        extra_target="include_partition_value = true\n",
    )
    return daemon, stream


def test_pg_records_with_and_without_workers_are_the_same(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute(
        "CREATE TABLE plain (id int PRIMARY KEY, t text, f float8, j jsonb, a int[], ts timestamptz, b bytea);"
        "CREATE TABLE keyed (k text PRIMARY KEY, n numeric);"
        "CREATE TABLE skipped (id int PRIMARY KEY)"
    )
    off, off_stream = _daemon(pg_db, moto_url, tmp_path / "off", "inproc", 0)
    on, on_stream = _daemon(pg_db, moto_url, tmp_path / "on", "workers", 2)
    try:
        off.wait_ready()
        on.wait_ready()
        for batch in range(6):
            pg_db.execute(
                "INSERT INTO plain SELECT i + %(b)s * 1000, repeat('x', i %% 7), i / 3.0, jsonb_build_object('i', i),"
                " ARRAY[i, NULL], '2026-12-07 12:00+00'::timestamptz + i * interval '1 second', '\\x00ff'"
                " FROM generate_series(1, 300) i",
                params={"b": batch},
            )
            pg_db.execute(
                "UPDATE plain SET t = NULL, f = 'NaN' WHERE id %% 5 = 0 AND id > %(b)s * 1000", params={"b": batch}
            )
            pg_db.execute(
                "INSERT INTO keyed SELECT 'k' || i, i * 1.5 FROM generate_series(1, 50) i ON CONFLICT (k) DO "
                "UPDATE SET n = keyed.n + 1"
            )
            pg_db.execute(
                "INSERT INTO skipped SELECT i + %(b)s * 1000 FROM generate_series(1, 20) i", params={"b": batch}
            )
            pg_db.execute("DELETE FROM plain WHERE id %% 7 = 0 AND id > %(b)s * 1000", params={"b": batch})
            if batch == 3:
                pg_db.execute("TRUNCATE keyed")
        # One marker row, last: both streams are complete once they have it.
        pg_db.execute("INSERT INTO keyed VALUES ('end', 0)")

        def records(stream: str) -> list[tuple[str, str]]:
            return [
                (
                    r["partition_key"],
                    _STAMP.sub('"timestamp":"T"', json.dumps(r["data"], sort_keys=True, separators=(",", ":"))),
                )
                for r in read_stream(moto_url, stream)
            ]

        def complete(stream: str) -> bool:
            return any(r["data"].get("data", {}).get("k") == "end" for r in read_stream(moto_url, stream))

        _until(lambda: complete(off_stream) and complete(on_stream), "both streams to have every change", 180)
        without, with_workers = records(off_stream), records(on_stream)
        assert len(without) > 2000
        assert any('"operation":"TruncateTable"' in r[1] for r in without)
        # Kinesis orders records per partition key only (the sink sends keys side by side): per key, the same.
        assert _by_key(with_workers) == _by_key(without)
        assert _status(on)["cdc"]["mapping_workers"]["processes"] == 2
        assert _status(off)["cdc"]["mapping_workers"]["processes"] == 0
        assert off.stop() == 0 and on.stop() == 0
    finally:
        off.kill()
        on.kill()
