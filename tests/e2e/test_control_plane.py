"""The control plane and the state the daemon persists, with the real daemon.

Per engine: anonymous and browser requests to ``POST /reload`` are refused; ``cdcstream reload`` of a table the
role may not read is refused with the GRANT; then every request and state the daemon persists is left at its
worst (checkpointed reloads of a table without SELECT, of a dropped one, of one the mapping no longer selects,
of a malformed name, next to a good one; a damaged dead-letter file, control token and temporary checkpoint) and
the daemon must start, stream, copy the good table and mark each bad reload failed (log, /status, metric) -
and start again cleanly after that. On today's main the first step already fails (the anonymous request is
queued), and the restart exits 3 at every start (PostgreSQL) or reports a reload of an unreadable or missing
table as done (MariaDB).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cdcstream.checkpoints.store import FileCheckpointStore
from tests.integration.test_reload_failures import limited_user
from tests.support.checkpoints import pg
from tests.support.daemon import (
    Daemon,
    create_stream,
    mysql_source,
    start_daemon,
    table_records,
    wait_for,
    write_config,
)
from tests.support.fullload import reload_cli
from tests.support.mysql import MyDb
from tests.support.postgres import PgDb

pytestmark = pytest.mark.timeout(300)


def post(daemon: Daemon, path: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(daemon.http + path, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def status(daemon: Daemon) -> dict[str, object]:
    with urllib.request.urlopen(daemon.http + "/status", timeout=5) as resp:
        return dict(json.loads(resp.read()))


def reloads(daemon: Daemon) -> dict[str, object]:
    source = status(daemon)["source"]
    assert isinstance(source, dict)
    return dict(source["reload"])


def reload_metric(daemon: Daemon, outcome: str) -> float:
    for line in daemon.metrics().splitlines():
        if line.startswith("cdcstream_reloads_total{") and f'outcome="{outcome}"' in line:
            return float(line.rpartition(" ")[2])
    raise AssertionError(f"no cdcstream_reloads_total{{outcome={outcome!r}}}")


def refuse_strangers(daemon: Daemon, table: str) -> None:
    """Nobody without the token, and no browser with it, gets a reload queued."""
    token = (daemon.config.parent / "state" / "control-token").read_text().strip()
    path = f"/reload?table={table}"
    assert post(daemon, path, {}) == 401
    assert post(daemon, path, {"Authorization": "Bearer " + "f" * 64}) == 401
    assert post(daemon, path, {"Authorization": f"Bearer {token}", "Origin": "http://attacker.example"}) == 403
    assert post(daemon, path, {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}) == 415
    assert reloads(daemon)["pending"] == []
    assert token not in daemon.log_path.read_text()


def leave_state_at_its_worst(state: Path, names: list[str]) -> None:
    """The checkpoint names ``names`` as pending reloads; the other files the daemon keeps are damaged."""
    store = FileCheckpointStore(state, "task1")
    checkpoint = pg(store.load())
    assert "reload" not in checkpoint
    store.save({**checkpoint, "reload": names})
    (state / "task1.dead-letter.jsonl").write_bytes(b'{"half a line\x00')  # appended to, never read
    (state / "control-token").write_text("")  # a crash while it was written
    (state / "task1.checkpoint.tmp").write_bytes(b'{"body": {"vers')  # a crash while a checkpoint was written


def restart_through_the_worst(
    daemon: Daemon, url: str, stream: str, good: str, bad: list[str], write: Callable[[int], object]
) -> None:
    """Two starts after :func:`leave_state_at_its_worst`: the first copies ``good`` and fails each of ``bad``
    while streaming, the second finds nothing left to redo."""
    daemon.start()
    daemon.wait_ready()
    write(2)
    table = good.partition(".")[2]
    wait_for(url, stream, lambda rs: {2} <= ids(rs, table, "insert") and ids(rs, table, "load"), timeout=90)
    deadline = time.monotonic() + 60
    while reloads(daemon)["pending"]:
        assert time.monotonic() < deadline, reloads(daemon)
        time.sleep(0.2)
    failed = reloads(daemon)["failed"]
    assert isinstance(failed, list)
    assert sorted(f["table"] for f in failed) == sorted(bad)
    assert (reload_metric(daemon, "failed"), reload_metric(daemon, "done")) == (len(bad), 1)
    assert daemon.log_path.read_text().count('"reload failed') == len(bad)
    assert daemon.stop() == 0, daemon.log_tail()
    checkpoint = FileCheckpointStore(daemon.config.parent / "state", "task1").load()
    assert checkpoint is not None and "reload" not in checkpoint
    daemon.start()
    daemon.wait_ready()
    write(3)
    wait_for(url, stream, lambda rs: {3} <= ids(rs, table, "insert"), timeout=60)
    assert reloads(daemon) == {**reloads(daemon), "pending": [], "running": None, "failed": []}
    assert daemon.stop() == 0, daemon.log_tail()


def ids(records: list[dict[str, Any]], table: str, operation: str) -> set[int]:
    out = set()
    for r in table_records(records, table):
        doc = r["data"]
        if doc["metadata"].get("operation") == operation:
            out.add(int(doc["data"]["id"]))
    return out


def test_pg_control_plane_and_persisted_state(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_db.execute("CREATE TABLE hidden (id int PRIMARY KEY)")
    pg_db.execute("CREATE TABLE secret (id int PRIMARY KEY)", superuser=True)  # the daemon's role may not read it
    pg_db.execute("CREATE TABLE gone (id int PRIMARY KEY)")
    pg_db.execute("CREATE PUBLICATION cdcstream FOR ALL TABLES", superuser=True)
    rule = {"rule-type": "selection", "object-locator": {"schema-name": "public", "table-name": "%"}}
    hidden = {"rule-type": "selection", "object-locator": {"schema-name": "public", "table-name": "hidden"}}
    (tmp_path / "m.json").write_text(
        json.dumps(
            {
                "rules": [
                    {**rule, "rule-id": "1", "rule-name": "1", "rule-action": "include"},
                    {**hidden, "rule-id": "2", "rule-name": "2", "rule-action": "exclude"},
                ]
            }
        )
    )
    stream = create_stream(moto_url, f"ctl-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(pg_db, moto_url, stream, tmp_path, extra='table_mappings = "m.json"')
    try:
        daemon.wait_ready()
        refuse_strangers(daemon, "public.t")
        refused = reload_cli(daemon, "public.secret")
        assert refused.returncode == 1 and 'GRANT SELECT ON "public"."secret" TO "cdc";' in refused.stderr, refused
        pg_db.execute("INSERT INTO t VALUES (1)")
        wait_for(moto_url, stream, lambda rs: ids(rs, "t", "insert") == {1}, timeout=60)
        assert daemon.stop() == 0, daemon.log_tail()
        pg_db.execute("DROP TABLE gone")
        bad = ["public.secret", "public.gone", "public.hidden", "nodot"]
        leave_state_at_its_worst(tmp_path / "state", [*bad, "public.t"])
        restart_through_the_worst(
            daemon, moto_url, stream, "public.t", bad, lambda n: pg_db.execute(f"INSERT INTO t VALUES ({n})")
        )
    finally:
        daemon.kill()


def test_mysql_control_plane_and_persisted_state(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    db = my_db.name
    my_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    my_db.execute("CREATE TABLE secret (id int PRIMARY KEY, pin int)")
    my_db.execute("CREATE TABLE gone (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"ctl-{uuid.uuid4().hex[:8]}")
    with limited_user(my_db) as user:  # streams, and may read t and secret's id column only
        my_db.server.execute(f"GRANT SELECT ON `{db}`.`gone` TO 'limited'@'127.0.0.1'")
        source = mysql_source(my_db.server.port, db).replace('user = "cdc"', f'user = "{user["user"]}"')
        source = source.replace('password = "cdc"', f'password = "{user["password"]}"')
        config = write_config(tmp_path / "c.toml", endpoint_url=moto_url, stream=stream, source=source)
        daemon = Daemon(config, tmp_path / "daemon.log")
        daemon.start()
        try:
            daemon.wait_ready()
            refuse_strangers(daemon, f"{db}.t")
            refused = reload_cli(daemon, f"{db}.secret")
            assert refused.returncode == 1, refused
            assert f"GRANT SELECT ON `{db}`.`secret` TO 'limited'@'127.0.0.1';" in refused.stderr, refused
            my_db.execute("INSERT INTO t VALUES (1)")
            wait_for(moto_url, stream, lambda rs: ids(rs, "t", "insert") == {1}, timeout=60)
            assert daemon.stop() == 0, daemon.log_tail()
            my_db.execute("DROP TABLE gone")
            bad = [f"{db}.secret", f"{db}.gone", "mysql.user", "nodot"]
            leave_state_at_its_worst(tmp_path / "state", [*bad, f"{db}.t"])
            restart_through_the_worst(
                daemon, moto_url, stream, f"{db}.t", bad, lambda n: my_db.execute(f"INSERT INTO t VALUES ({n})")
            )
        finally:
            daemon.kill()
