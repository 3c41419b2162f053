"""Oversize records: ``fail`` stops the daemon naming table, key, size and limit, and checkpoints nothing past
the record; ``dead-letter`` writes it durably to the state directory and sends a control record in its place."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson

from tests.support.daemon import create_stream, read_stream, start_daemon
from tests.support.postgres import PgDb


def test_oversize_fail_then_dead_letter(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    stream = create_stream(moto_url, f"big-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(pg_db, moto_url, stream, tmp_path)
    daemon.wait_ready()
    config = daemon.config
    pg_db.execute("INSERT INTO docs VALUES (1, 'small')")
    # 1.2 MB of incompressible-looking text: over the stream's 1 MiB record limit once wrapped in JSON
    pg_db.execute("INSERT INTO docs SELECT 2, string_agg(md5(g::text), '') FROM generate_series(1, 40000) g")
    pg_db.execute("INSERT INTO docs VALUES (3, 'after')")
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=60) == 5, daemon.log_tail()
    log = daemon.log_tail(200)
    assert "public.docs" in log and "1048576" in log and "oversize_policy" in log

    # Nothing after the oversize record was checkpointed: with dead-letter the same changes come again.
    config.write_text(config.read_text().replace("[target]\n", '[target]\noversize_policy = "dead-letter"\n'))
    daemon.start()
    daemon.wait_ready()
    try:
        deadline = time.monotonic() + 60
        while True:
            docs = [r for r in read_stream(moto_url, stream) if r["data"]["metadata"].get("table-name") == "docs"]
            if any(r["data"].get("data", {}).get("id") == 3 for r in docs):
                break
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.5)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    ops = [(r["data"]["metadata"]["operation"], r["data"].get("data", {}).get("id")) for r in docs]
    assert ops[-3:] == [("insert", 1), ("OversizeRecordDiverted", None), ("insert", 3)], ops
    diverted = docs[-2]
    assert diverted["partition_key"] == "public.docs"
    assert diverted["data"]["control"]["reason"] == "oversize"
    assert diverted["data"]["control"]["limit"] == 1048576
    lines = (tmp_path / "state" / "task1.dead-letter.jsonl").read_bytes().splitlines()
    assert len(lines) == 1
    entry = orjson.loads(lines[0])
    original = orjson.loads(entry["data"])
    assert original["data"]["id"] == 2 and len(original["data"]["body"]) == 40000 * 32
    assert original["metadata"]["stream-position"] == diverted["data"]["metadata"]["stream-position"]
