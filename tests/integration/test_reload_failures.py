"""``reload --table`` that cannot work, on both engines against the private servers: refused
when requested (no SELECT: with the GRANT to run), and a copy that fails half-way (its sessions killed) marked
failed while CDC of every table goes on, with no later checkpoint naming it. The daemon's side (persisted
requests at the next start, HTTP, metrics) is in tests/e2e/test_control_plane.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import pytest

from cdcstream.changes import ChangeEvent, Item, Marker, Op
from cdcstream.checkpoints.model import RELOAD_FIELD
from cdcstream.config import FullLoadConfig
from cdcstream.errors import SourceError
from cdcstream.sources.mysql import MySQLSource
from cdcstream.sources.mysql.checks import run_checks as mysql_checks
from cdcstream.sources.postgres import PostgresSource
from cdcstream.sources.postgres.checks import run_checks
from tests.support.mysql import MyDb
from tests.support.postgres import PgDb

pytestmark = pytest.mark.timeout(120)

# One session, small chunks: the copy of a few thousand rows takes many pages, so it can be cut half-way.
SLOW_COPY = FullLoadConfig(max_full_load_subtasks=1, parallel_load_buffer_size=50, chunk_rows=100)
ROWS = 5000


async def take(items: AsyncIterator[Sequence[Item]], got: list[Item], until: Callable[[list[Item]], bool]) -> None:
    """Consume ``items`` into ``got`` until ``until(got)``, then leave the generator suspended."""
    deadline = time.monotonic() + 30
    while not until(got):
        assert time.monotonic() < deadline, f"condition not met; {len(got)} items"
        got.extend(await asyncio.wait_for(anext(items), 30))


def load_rows(got: list[Item], table: str) -> int:
    return sum(1 for i in got if isinstance(i, ChangeEvent) and i.op is Op.LOAD and i.table.table == table)


def inserted(got: list[Item], table: str) -> bool:
    return any(isinstance(i, ChangeEvent) and i.op is Op.INSERT and i.table.table == table for i in got)


async def reload_cut_half_way(
    src: PostgresSource | MySQLSource, name: str, kill: Callable[[], int], write: Callable[[], object]
) -> dict[str, Any]:
    """Start ``src``, reload ``name`` (table ``r``), ``kill`` the copy's session once rows arrive, then ``write``
    a row of table ``o``: the copy stops half-way, the change of ``o`` still arrives, and every marker yielded
    after the failure no longer names the reload. Returns ``/status``'s ``source.reload``."""
    await src.start(None)
    items = src.changes()
    got: list[Item] = []
    try:
        await src.request_reload(name)
        await take(items, got, lambda g: load_rows(g, "r") > 0)
        assert await asyncio.to_thread(kill) == 1
        cut = len(got)
        await take(items, got, lambda g: bool(src.status()["reload"]["failed"]))
        await asyncio.to_thread(write)
        await take(items, got, lambda g: inserted(g, "o"))
        status: dict[str, Any] = src.status()["reload"]
    finally:
        await items.aclose()  # an async generator
        await src.close()
    assert 0 < load_rows(got, "r") < ROWS
    naming = [RELOAD_FIELD in i.checkpoint for i in got[cut:] if isinstance(i, Marker)]
    assert False in naming and not any(naming[naming.index(False) :]), naming  # dropped for good
    return status


# --------------------------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------------------------


async def test_pg_reload_without_select_is_refused_with_the_grant(pg_db: PgDb) -> None:
    """Fails on main: the request was queued; the copy then failed on "permission denied" and the daemon exited
    3 (and again at every start, the request being in the checkpoint)."""
    pg_db.execute("CREATE TABLE secret (id int PRIMARY KEY)", superuser=True)
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_db.execute("CREATE PUBLICATION cdc_pub FOR ALL TABLES", superuser=True)
    src = PostgresSource(pg_db.config())
    await src.start(None)
    try:
        with pytest.raises(SourceError) as refused:
            await src.request_reload("public.secret")
        assert 'GRANT SELECT ON "public"."secret" TO "cdc";' in str(refused.value)
        with pytest.raises(SourceError, match=r"table public\.gone does not exist"):
            await src.request_reload("public.gone")
        assert src.status()["reload"]["pending"] == []
        assert await src.request_reload("public.t") == "reload of public.t queued"
    finally:
        await src.close()
    checks = {r.name: r for r in await run_checks(pg_db.config(), None)}
    assert checks["reload tables"].ok and checks["reload tables"].warning
    assert "public.secret" in checks["reload tables"].detail and "public.t" not in checks["reload tables"].detail
    assert 'GRANT SELECT ON "public"."secret" TO "cdc";' in checks["reload tables"].fix
    loading = {r.name: r for r in await run_checks(pg_db.config(), None, full_load=True)}
    assert not loading["full load tables"].ok  # a full load reads them all: a failure, not a warning


def _kill_pg_load_sessions(pg_db: PgDb) -> int:
    # The load sessions hold a snapshot (REPEATABLE READ): the daemon's other connections do not.
    return len(
        pg_db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'cdcstream' AND backend_type = 'client backend' AND backend_xmin IS NOT NULL",
            superuser=True,
        )
    )


async def test_pg_reload_failing_half_way_is_marked_failed_and_cdc_goes_on(pg_db: PgDb) -> None:
    """Fails on main: the failed copy stopped the source (exit 3 for the daemon, and at every later start)."""
    pg_db.execute(
        f"CREATE TABLE r (id int PRIMARY KEY, v text); INSERT INTO r SELECT g, 'x' FROM generate_series(1, {ROWS}) g"
    )
    pg_db.execute("CREATE TABLE o (id int PRIMARY KEY)")
    src = PostgresSource(pg_db.config(), full_load=SLOW_COPY)
    status = await reload_cut_half_way(
        src, "public.r", lambda: _kill_pg_load_sessions(pg_db), lambda: pg_db.execute("INSERT INTO o VALUES (1)")
    )
    [failed] = status["failed"]
    assert failed["table"] == "public.r" and "connection" in failed["error"]
    assert status["pending"] == [] and status["running"] is None


# --------------------------------------------------------------------------------------------------------------
# MySQL / MariaDB
# --------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def limited_user(db: MyDb) -> Iterator[dict[str, str]]:
    """A user that streams (REPLICATION SLAVE, BINLOG MONITOR) and may read ``t`` but only column ``id`` of
    ``secret`` (so it sees the table, yet a copy cannot read it)."""
    db.server.execute("CREATE USER 'limited'@'127.0.0.1' IDENTIFIED BY 'limited'")
    try:
        db.server.execute("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO 'limited'@'127.0.0.1'")
        db.server.execute(f"GRANT SELECT ON `{db.name}`.`t` TO 'limited'@'127.0.0.1'")
        db.server.execute(f"GRANT SELECT (id) ON `{db.name}`.`secret` TO 'limited'@'127.0.0.1'")
        yield {"user": "limited", "password": "limited"}
    finally:
        db.server.execute("DROP USER 'limited'@'127.0.0.1'")


async def test_mysql_reload_without_select_is_refused_with_the_grant(my_db: MyDb) -> None:
    """Fails on main: the request was queued (the table is visible to the user) and the copy failed or read only
    the columns the user may see."""
    my_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    my_db.execute("CREATE TABLE secret (id int PRIMARY KEY, pin int)")
    with limited_user(my_db) as user:
        src = MySQLSource(my_db.config(**user))
        await src.start(None)
        try:
            with pytest.raises(SourceError) as refused:
                await src.request_reload(f"{my_db.name}.secret")
            assert f"GRANT SELECT ON `{my_db.name}`.`secret` TO 'limited'@'127.0.0.1';" in str(refused.value)
            with pytest.raises(SourceError, match="or it does not exist"):  # the server does not say which
                await src.request_reload(f"{my_db.name}.gone")
            assert await src.request_reload(f"{my_db.name}.t") == f"reload of {my_db.name}.t queued"
        finally:
            await src.close()
        checks = {r.name: r for r in await mysql_checks(my_db.config(**user), None, None)}
        assert checks["reload tables"].ok and checks["reload tables"].warning
        assert f"not readable: {my_db.name}.secret (streaming needs no SELECT" in checks["reload tables"].detail


def _kill_mysql_load_sessions(db: MyDb) -> int:
    # The load sessions are the transactions with a consistent snapshot; the binlog connections have none.
    ids = [i for (i,) in db.server.execute("SELECT trx_mysql_thread_id FROM information_schema.INNODB_TRX")]
    for thread in ids:
        db.server.execute(f"KILL {int(thread)}")
    return len(ids)


async def test_mysql_reload_failing_half_way_is_marked_failed_and_cdc_goes_on(my_db: MyDb) -> None:
    """Fails on main: the failed copy stopped the source (exit 3 for the daemon, and at every later start)."""
    my_db.execute("CREATE TABLE r (id int PRIMARY KEY, v varchar(10))")
    my_db.execute(f"INSERT INTO r SELECT seq, 'x' FROM seq_1_to_{ROWS}")  # MariaDB's sequence engine
    my_db.execute("CREATE TABLE o (id int PRIMARY KEY)")
    src = MySQLSource(my_db.config(), full_load=SLOW_COPY)
    status = await reload_cut_half_way(
        src,
        f"{my_db.name}.r",
        lambda: _kill_mysql_load_sessions(my_db),
        lambda: my_db.execute("INSERT INTO o VALUES (1)"),
    )
    [failed] = status["failed"]
    assert failed["table"] == f"{my_db.name}.r"
    assert status["pending"] == [] and status["running"] is None
