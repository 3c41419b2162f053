"""A checkpoint the daemon cannot prove is its own never moves a slot, on PostgreSQL.

Each case runs the real daemon against the private server: two tasks sharing one state dir, an LSN past the
server's WAL, a slot dropped and re-created under the same name, a checkpoint written by the previous version
(upgrade), and a new timeline. Every refusal is exit 3 or 6 with the file, what differs and the fix, is reported
the same way by ``check``, and leaves the slot where it was. The MySQL/MariaDB cases are in
test_mysql_checkpoint_identity.py.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cdcstream.checkpoints.store import FileCheckpointStore
from cdcstream.config import load_config
from cdcstream.sources.postgres.pgoutput import format_lsn, parse_lsn
from tests.support import running
from tests.support.checkpoints import pg
from tests.support.daemon import (
    Daemon,
    check_fails,
    create_stream,
    read_stream,
    run_cli,
    run_refused,
    stream_rows_then_stop,
    table_records,
    wait_for,
    write_config,
)
from tests.support.postgres import PgDb, PgServer, ServerStartError, start_private_postgres


def _config(path: Path, server: PgServer, db: str, url: str, stream: str, slot: str, task_id: str = "task1") -> Path:
    return write_config(
        path,
        pg_port=server.port,
        database=db,
        endpoint_url=url,
        stream=stream,
        task_id=task_id,
        extra_source=f'slot_name = "{slot}"',
    )


def _confirmed(server: PgServer, db: str, slot: str) -> str:
    rows = server.execute(
        db, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", params=(slot,)
    )
    return str(rows[0][0])


def _insert_durably(server: PgServer, db: str, n: int) -> str:
    """Insert row ``n`` of ``t`` and return the flushed WAL end after it. The test servers commit asynchronously,
    and a walsender (hence a checkpoint) never goes past the flushed WAL, so this commit waits for its flush."""
    server.execute(db, f"SET synchronous_commit = on; INSERT INTO t VALUES ({n})")
    return str(server.execute(db, "SELECT pg_current_wal_flush_lsn()::text")[0][0])


def _one_row_streamed(pg_db: PgDb, url: str, tmp_path: Path) -> tuple[Path, str, str]:
    """Table ``t``, its first row streamed and checkpointed by a daemon that was then stopped cleanly: the
    config, stream and slot."""
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(url, f"ckpt-{uuid.uuid4().hex[:8]}")
    slot = f"{pg_db.name}_s"
    config = _config(tmp_path / "c.toml", pg_db.server, pg_db.name, url, stream, slot)
    stream_rows_then_stop(
        config, tmp_path / f"{config.stem}.log", lambda: pg_db.execute("INSERT INTO t VALUES (1)"), url, stream, "t", 1
    )
    return config, stream, slot


class _Writer(threading.Thread):
    """Commits one row to each of ``tables`` per transaction until stopped; remembers the committed ids."""

    def __init__(self, dsn: str, tables: tuple[str, ...]) -> None:
        super().__init__(daemon=True)
        self.dsn, self.tables, self.committed = dsn, tables, 0
        self.done = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=False) as conn:
            while not self.done.is_set():
                n = self.committed + 1
                for table in self.tables:
                    conn.execute(f"INSERT INTO {table} VALUES (%s)", (n,))
                conn.commit()
                self.committed = n
                time.sleep(0.01)


def test_two_tasks_with_one_task_id_and_state_dir(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    """The issue's reproduction: a config copied with only the slot (and stream) changed, so both tasks would use
    <state_dir>/task1.checkpoint.json. While the first runs, the second is refused by the lock; while the first is
    stopped, by the file's owner (slot and stream differ). Given its own task_id it runs beside the first, and
    every row committed meanwhile reaches each stream: the refusals cost nothing, because the slots keep their
    positions. (Before: both ran, each resumed from the other's LSN, and rows were lost without an error.)"""
    server, db = pg_db.server, pg_db.name
    pg_db.execute("CREATE TABLE ta (id int PRIMARY KEY)")
    pg_db.execute("CREATE TABLE tb (id int PRIMARY KEY)")
    pg_db.execute("CREATE PUBLICATION cdcstream FOR TABLE ta, tb")
    slots = (f"{db}_a", f"{db}_b")
    for slot in slots:  # made up front, so each stream must end up with every row committed from here on
        pg_db.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    streams = [create_stream(moto_url, f"two-{name}-{uuid.uuid4().hex[:6]}") for name in "ab"]
    config_a = _config(tmp_path / "a.toml", server, db, moto_url, streams[0], slots[0])
    config_b = _config(tmp_path / "b.toml", server, db, moto_url, streams[1], slots[1])
    daemon_a = Daemon(config_a, tmp_path / "a.log")
    daemon_b = Daemon(config_b, tmp_path / "b.log")
    writer = _Writer(pg_db.dsn, ("ta", "tb"))
    daemon_a.start()
    try:
        daemon_a.wait_ready()
        writer.start()
        assert daemon_a.proc is not None
        lock = tmp_path / "state" / "task1.checkpoint.lock"
        run_refused(config_b, 6, f"{lock}: another cdcstream process (pid {daemon_a.proc.pid})", "own task_id")
        wait_for(moto_url, streams[0], lambda rs: len(table_records(rs, "ta")) >= 20)
        assert daemon_a.stop() == 0, daemon_a.log_tail()
        ckpt = tmp_path / "state" / "task1.checkpoint.json"
        run_refused(
            config_b,
            6,
            f"{ckpt} was written for another task: slot '{slots[0]}' (this config: '{slots[1]}')",
            f"stream '{streams[0]}' (this config: '{streams[1]}')",
            "give each its own task_id or state_dir",
        )
        daemon_a.start()
        config_b.write_text(config_b.read_text().replace('task_id = "task1"', 'task_id = "task2"'))
        daemon_b.start()
        daemon_a.wait_ready()
        daemon_b.wait_ready()
        time.sleep(1)  # both streaming while the writer commits
        writer.done.set()
        writer.join(30)
        expected = set(range(1, writer.committed + 1))
        for stream in streams:
            for table in ("ta", "tb"):
                wait_for(
                    moto_url,
                    stream,
                    lambda rs, t=table: {r["data"]["data"]["id"] for r in table_records(rs, t)} >= expected,
                    timeout=90,
                )
        assert daemon_a.stop() == 0 and daemon_b.stop() == 0
    finally:
        writer.done.set()
        daemon_a.kill()
        daemon_b.kill()
    a = FileCheckpointStore.for_task(load_config(config_a))
    b = FileCheckpointStore.for_task(load_config(config_b))
    assert a.load() is not None and a.owned and b.load() is not None and b.owned and a.path != b.path
    assert writer.committed >= 20


def test_an_lsn_ahead_of_the_wal_and_a_recreated_slot_are_refused(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    """A checkpoint LSN past the server's WAL end (another server's, or a server restored to an earlier point),
    then a slot dropped and re-created under the same name while the daemon was down: both refused (exit 3) by
    run and check alike, and neither moves the slot. (Before: the first moved the slot forward, skipping every
    change up to the made-up LSN; the second silently started at the new slot, losing what was committed in
    between.)"""
    server, db = pg_db.server, pg_db.name
    config, stream, slot = _one_row_streamed(pg_db, moto_url, tmp_path)
    store = FileCheckpointStore.for_task(load_config(config))
    good = pg(store.load())
    assert store.owned
    wal_end = _insert_durably(server, db, 2)  # committed while the daemon is down
    before = _confirmed(server, db, slot)
    ahead = format_lsn(parse_lsn(wal_end) + 0x100000000)
    store.save({**good, "lsn": ahead})
    run_refused(config, 3, f"LSN {ahead} is ahead of the WAL", "written for another server", "restored")
    check_fails(config, "checkpoint position", f"LSN {ahead} is ahead of the WAL")
    assert _confirmed(server, db, slot) == before  # the slot did not move

    store.save(good)
    pg_db.execute(f"SELECT pg_drop_replication_slot('{slot}')")
    pg_db.execute("INSERT INTO t VALUES (3)")  # in no slot at all
    pg_db.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')")
    recreated = _confirmed(server, db, slot)
    message = f"replication slot '{slot}' has confirmed LSN {recreated}, past the checkpoint's {good['lsn']}"
    run_refused(config, 3, message, "re-created", "full load")
    check_fails(config, "checkpoint position", message)
    assert _confirmed(server, db, slot) == recreated
    ids = {r["data"]["data"]["id"] for r in table_records(read_stream(moto_url, stream), "t")}
    assert ids == {1}  # nothing was streamed from a wrong place


def test_a_checkpoint_written_by_the_previous_version_is_adopted_or_refused_with_the_fix(
    pg_db: PgDb, moto_url: str, tmp_path: Path
) -> None:
    """Upgrade: the file name is unchanged; a file without an owner is adopted when its LSN is exactly the slot's
    confirmed_flush_lsn (a clean stop), and written with its owner from then on. One ahead of the slot (a crash
    before the confirmation, or another slot's file) is refused with the two exact fixes, and
    ``adopt-checkpoint`` is one of them."""
    server, db = pg_db.server, pg_db.name
    config, stream, slot = _one_row_streamed(pg_db, moto_url, tmp_path)
    legacy = FileCheckpointStore(tmp_path / "state", "task1")  # no owner: the format every earlier version wrote
    checkpoint = pg(legacy.load())
    assert checkpoint["lsn"] == _confirmed(server, db, slot)
    legacy.save(checkpoint)
    insert = lambda: pg_db.execute("INSERT INTO t VALUES (2)")  # noqa: E731
    stream_rows_then_stop(config, tmp_path / f"{config.stem}.log", insert, moto_url, stream, "t", 2)
    store = FileCheckpointStore.for_task(load_config(config))
    assert store.load() is not None and store.owned  # adopted, and owned from its first write on

    stored = pg(store.load())
    ahead = _insert_durably(server, db, 3)
    assert parse_lsn(ahead) > parse_lsn(_confirmed(server, db, slot))
    legacy.save({**stored, "lsn": ahead})
    fix = f"cdcstream adopt-checkpoint --config {config}"
    run_refused(config, 3, "does not record which task and slot", f"LSN {ahead} is ahead of replication slot", fix)
    check_fails(config, "checkpoint position", "does not record which task and slot", fix)
    res = run_cli("adopt-checkpoint", "--config", str(config))
    assert res.returncode == 0 and ahead in res.stdout and "older cdcstream" in res.stdout, res.stdout + res.stderr
    daemon = Daemon(config, tmp_path / "after.log")
    daemon.start()
    try:
        daemon.wait_ready()  # the owner asserted the position: streaming resumes there
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert parse_lsn(_confirmed(server, db, slot)) >= parse_lsn(ahead)


@pytest.fixture
def private_pg() -> Iterator[PgServer]:
    """A server of the test's own: it is promoted to a new timeline."""
    yield from running(start_private_postgres, ServerStartError)


def _promote(server: PgServer) -> None:
    """Restart as a standby of nothing and promote it: a real timeline switch on the same data directory (the
    same system identifier and slots), as after a failover or a point-in-time restore."""
    assert server.pg_ctl("stop", "-m", "fast", "-w").returncode == 0
    signal_file = server.datadir / "standby.signal"
    signal_file.touch()
    shutil.chown(signal_file, server.datadir.owner(), server.datadir.group())
    res = server.pg_ctl("start", "-w", "-t", "30")
    assert res.returncode == 0, res.stderr + server.log_tail()
    res = server.pg_ctl("promote", "-w", "-t", "30")
    assert res.returncode == 0, res.stderr + server.log_tail()


def test_a_new_timeline_is_followed_up_to_its_branch_point_and_refused_past_it(
    private_pg: PgServer, moto_url: str, tmp_path: Path
) -> None:
    """Timeline 2 branches off timeline 1 at the end of the WAL: the checkpoint (before that point) is in both
    histories, so the daemon goes on with a warning. A checkpoint of timeline 1 past the branch point (WAL this
    server's history does not have) is refused, by TIMELINE_HISTORY read over the replication connection."""
    server = private_pg
    db = server.create_database()
    server.execute(db, "CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"tli-{uuid.uuid4().hex[:8]}")
    config = _config(tmp_path / "c.toml", server, db, moto_url, stream, "tli_slot")
    stream_rows_then_stop(
        config,
        tmp_path / f"{config.stem}.log",
        lambda: server.execute(db, "INSERT INTO t VALUES (1)"),
        moto_url,
        stream,
        "t",
        1,
    )
    store = FileCheckpointStore.for_task(load_config(config))
    before = pg(store.load())
    assert before["timeline"] == 1
    _promote(server)
    branch = str(server.execute(db, "SELECT pg_current_wal_flush_lsn()::text")[0][0])  # just past the branch
    insert = lambda: server.execute(db, "INSERT INTO t VALUES (2)")  # noqa: E731
    daemon = stream_rows_then_stop(config, tmp_path / f"{config.stem}.log", insert, moto_url, stream, "t", 2)
    assert "timeline changed" in daemon.log_tail(200)
    after = pg(store.load())
    assert after["timeline"] == 2
    past = _insert_durably(server, db, 3)
    assert parse_lsn(past) > parse_lsn(branch)
    store.save({**after, "timeline": 1, "lsn": past})  # as if timeline 1 had gone on past the branch point
    run_refused(config, 3, f"(LSN {past}, timeline 1) is past", "where timeline 2 of PostgreSQL", "left timeline 1")
    check_fails(config, "checkpoint position", f"(LSN {past}, timeline 1) is past")
