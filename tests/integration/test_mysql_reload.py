"""``reload --table`` on the MySQL/MariaDB source against the private MariaDB: exact in every snapshot path while
a writer changes the table on every transaction, the refusals, and the split on an idle server.

Exactness is checked per key with full before images (:func:`assert_exact_reload`), stronger than comparing
the final state; the end-to-end tests (``tests/e2e/test_mysql_full_load.py``) add the CLI and SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any

import pytest

from cdcstream.changes import ChangeEvent, Op
from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.config import FullLoadConfig
from cdcstream.errors import SourceError
from cdcstream.sources.mysql import MySQLSource, snapshot
from tests.integration.test_mysql_full_load import user_without_reload
from tests.integration.test_mysql_source import run
from tests.support.mysql import MyDb
from tests.support.reader import Reader, n_events

pytestmark = pytest.mark.timeout(120)


def reload_writer(db: MyDb, stop: threading.Event, pause: float = 0.0) -> None:
    """Updates, inserts and deletes rows of ``r`` (one transaction each, as fast as it can or ``pause`` seconds
    apart) and inserts into ``o``, until told to stop."""
    conn = db.connect()
    n = 0
    try:
        with conn.cursor() as cur:
            while not stop.is_set():
                n += 1
                cur.execute("UPDATE r SET v = v + 1 WHERE id = %s", (n * 13 % 3000 + 1,))
                cur.execute("INSERT INTO r VALUES (%s, -1)", (1_000_000 + n,))
                cur.execute("DELETE FROM r WHERE id = %s", (n * 7 % 3000 + 1,))
                cur.execute("INSERT INTO o VALUES (%s)", (n,))
                if pause:
                    time.sleep(pause)
    finally:
        conn.close()


def assert_exact_reload(items: list[Any], table: str) -> int:
    """The reload of ``table`` in ``items`` is exact: one contiguous run of load rows, the last change of each
    key before it leads to its load row (or its absence), and the first change after it starts from the load
    row (full before images) — no change is both in the rows and after them, none is in neither. Returns the
    number of load rows."""
    events = [e for e in items if isinstance(e, ChangeEvent) and e.table.table == table]
    load_at = [i for i, e in enumerate(events) if e.op is Op.LOAD]
    assert load_at, "no load rows"
    first, last = load_at[0], load_at[-1]
    assert load_at == list(range(first, last + 1)), "load rows interleaved with changes"
    rows = {int(e.after["id"]): e.after for e in events[first : last + 1] if e.after is not None}
    assert len(rows) == last - first + 1, "a key loaded twice"
    before_load: dict[int, ChangeEvent] = {}
    for e in events[:first]:
        before_load[int((e.after or e.before or {})["id"])] = e
    for key, e in before_load.items():
        if e.op is Op.DELETE:
            assert key not in rows, f"{key} deleted before the snapshot, yet loaded"
        else:
            assert rows.get(key) == e.after, f"{key}: load row is not the state after its last earlier change"
    seen: set[int] = set()
    for e in events[last + 1 :]:
        key = int((e.after or e.before or {})["id"])
        if key in seen:
            continue
        seen.add(key)
        if e.op is Op.INSERT:
            assert key not in rows, f"{key} inserted after the snapshot, yet loaded"
        else:
            assert rows.get(key) == e.before, f"{key}: first change after the load does not start from its row"
    return len(rows)


@pytest.mark.parametrize(
    ("lock", "pause", "sessions"),
    [(True, 0.0, 2), (False, 0.002, 2), (False, 0.0, 1)],
    ids=["lock", "binlog_snapshot", "binlog_snapshot_one_session"],
)
async def test_reload_is_exact_while_a_writer_runs(
    my_db: MyDb, monkeypatch: pytest.MonkeyPatch, lock: bool, pause: float, sessions: int
) -> None:
    """reload --table in a cdc task while every transaction changes the table: exact in every snapshot path
    (FLUSH TABLES WITH READ LOCK; without RELOAD, MariaDB's per-snapshot binlog position with two sessions
    brought to one position, and with one session when they cannot be, forced here)."""
    if sessions == 1:
        align = snapshot.MyLoadEngine._align

        def never_aligned(engine: snapshot.MyLoadEngine) -> MySQLCheckpoint:
            if len(engine._sessions) > 1:  # a server too busy for the sessions to meet at one position
                raise snapshot.SnapshotsDiffer("forced by the test")
            return align(engine)

        monkeypatch.setattr(snapshot.MyLoadEngine, "_align", never_aligned)
    await run(
        my_db,
        "CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL)",
        "INSERT INTO r SELECT seq, 0 FROM seq_1_to_3000",
        "CREATE TABLE o (id int PRIMARY KEY)",
        "ANALYZE TABLE r",
    )
    fl = FullLoadConfig(parallel_load_threads=2, chunk_rows=200, parallel_load_buffer_size=50)
    with contextlib.ExitStack() as stack:
        creds = {} if lock else stack.enter_context(user_without_reload(my_db))
        src = MySQLSource(my_db.config(**creds), migration_type="cdc", full_load=fl)
        await src.start(None)
        reader = Reader(src)
        stop = threading.Event()
        writer = threading.Thread(target=reload_writer, args=(my_db, stop, pause), daemon=True)
        writer.start()
        try:
            await reader.wait_for(n_events(200), what="changes before the reload")
            assert await src.request_reload(f"{my_db.name}.r") == f"reload of {my_db.name}.r queued"
            assert await src.request_reload(f"{my_db.name}.r") == f"reload of {my_db.name}.r already pending"
            await reader.wait_for(lambda r: bool(r.markers) and "reload" in r.markers[-1].checkpoint, what="stamp")
            await reader.wait_for(
                lambda r: not src._reloads.pending and src._reloads.copy is None, within=60, what="reload done"
            )
            n = len(reader.events)
            await reader.wait_for(n_events(n + 100), what="changes after the reload")
            stop.set()
            await asyncio.to_thread(writer.join)
            last_o = int(my_db.execute("SELECT MAX(id) FROM o")[0][0])
            await reader.wait_for(
                lambda r: any(e.table.table == "o" and e.after and e.after["id"] == last_o for e in r.events),
                what="the writer's last transaction",
            )
        finally:
            stop.set()
            await reader.stop()
    items = reader.items
    assert assert_exact_reload(items, "r") > 2000
    assert _replay_r(items) == {int(k): int(v) for k, v in my_db.execute("SELECT id, v FROM r")}
    # Markers name the pending reload until its rows are out, and no longer after.
    assert any("reload" in m.checkpoint for m in reader.markers)
    assert not [m for m in reader.markers[-3:] if "reload" in m.checkpoint]
    status = src.status()["reload"]
    assert status["pending"] == [] and status["running"] is None
    # Two sessions (two segments) at one snapshot: under the lock, or at aligned binlog_snapshot positions.
    assert status["last"]["path"] == ("lock" if lock else "binlog_snapshot") and status["last"]["sessions"] == sessions
    assert status["last"]["rows"] == assert_exact_reload(items, "r")


def _replay_r(items: list[Any]) -> dict[int, int]:
    state: dict[int, int] = {}
    for e in items:
        if not isinstance(e, ChangeEvent) or e.table.table != "r":
            continue
        if e.op is Op.DELETE and e.before is not None:
            state.pop(int(e.before["id"]), None)
        elif e.after is not None:
            state[int(e.after["id"])] = int(e.after["v"])
    return state


async def test_reload_refusals(my_db: MyDb) -> None:
    await run(my_db, "CREATE TABLE r (id int PRIMARY KEY)")
    src = MySQLSource(my_db.config(), migration_type="cdc")
    await src.start(None)
    try:
        for name, message in (
            ("r", "expected schema.table"),
            (f"{my_db.name}.nope", f"table {my_db.name}.nope does not exist"),
            ("mysql.user", "mysql.user is not selected by the table mapping"),
        ):
            with pytest.raises(SourceError, match=message):
                await src.request_reload(name)
    finally:
        await src.close()
    only_load = MySQLSource(my_db.config(), migration_type="full-load")
    with pytest.raises(SourceError, match="migration_type full-load has no change stream"):
        await only_load.request_reload(f"{my_db.name}.r")


async def test_reload_on_an_idle_server(my_db: MyDb) -> None:
    """No transaction after P: the reader's heartbeat position says everything before P is in, and the rows
    follow (instead of waiting for the next write)."""
    await run(
        my_db, "CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL)", "INSERT INTO r SELECT seq, 0 FROM seq_1_to_100"
    )
    src = MySQLSource(my_db.config(heartbeat_interval=0.5), migration_type="cdc")
    await src.start(None)
    reader = Reader(src)
    try:
        await src.request_reload(f"{my_db.name}.r")
        await reader.wait_for(
            lambda r: len(r.events) >= 100 and not src._reloads.pending, within=20, what="reload rows"
        )
    finally:
        await reader.stop()
    assert [e.op for e in reader.events] == [Op.LOAD] * 100
    assert "reload" in reader.markers[0].checkpoint and "reload" not in reader.markers[-1].checkpoint
