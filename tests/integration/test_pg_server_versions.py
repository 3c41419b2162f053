"""What newer PostgreSQL servers offer, each on a server of its version, and the clear refusal on older ones:
stored generated columns in the records (18), a slot invalidated by ``idle_replication_slot_timeout`` (18)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from cdcstream.errors import SourceError
from cdcstream.sources.postgres import PostgresSource
from cdcstream.sources.postgres.checks import run_checks
from tests.support import running
from tests.support.checkpoints import pg
from tests.support.postgres import PgDb, PgServer, ServerStartError, fresh_db, start_private_postgres
from tests.support.reader import n_events, open_reader

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def pg18_server() -> Iterator[PgServer]:
    yield from running(lambda: start_private_postgres(version=18), ServerStartError)


@pytest.fixture
def pg18_db(pg18_server: PgServer) -> Iterator[PgDb]:
    yield from fresh_db(pg18_server)


GENERATED = "CREATE TABLE g (id int PRIMARY KEY, a int, doubled int GENERATED ALWAYS AS (a * 2) STORED)"


@pytest.mark.parametrize("publish", [True, False], ids=["published", "default-off"])
async def test_stored_generated_columns_on_18(pg18_db: PgDb, publish: bool) -> None:
    pg18_db.execute(GENERATED)
    reader = await open_reader(pg18_db.config(publish_generated_columns=publish))
    try:
        pg18_db.execute("INSERT INTO g (id, a) VALUES (1, 5)")
        pg18_db.execute("UPDATE g SET a = 6 WHERE id = 1")
        await reader.wait_for(n_events(2), what="2 events")
        expected = [{"id": 1, "a": 5, "doubled": 10}, {"id": 1, "a": 6, "doubled": 12}]
        if not publish:
            expected = [{k: v for k, v in e.items() if k != "doubled"} for e in expected]
        assert [e.after for e in reader.events] == expected
    finally:
        await reader.stop()
    gencols = pg18_db.execute("SELECT pubgencols FROM pg_publication WHERE pubname = 'cdc_pub'")
    assert gencols == [("s" if publish else "n",)]
    checks = {r.name: r for r in await run_checks(pg18_db.config(publish_generated_columns=publish), None)}
    assert checks["generated columns"].ok
    assert ("are in the records" if publish else "left out") in checks["generated columns"].detail


async def test_a_publication_without_generated_columns_is_refused_with_the_fix(pg18_db: PgDb) -> None:
    pg18_db.execute(GENERATED)
    pg18_db.execute("CREATE PUBLICATION cdc_pub FOR TABLE g")
    cfg = pg18_db.config(publish_generated_columns=True)
    src = PostgresSource(cfg)
    with pytest.raises(SourceError, match="does not publish generated columns") as exc:
        await src.start(None)
    await src.close()
    assert 'ALTER PUBLICATION "cdc_pub" SET (publish_generated_columns = stored);' in str(exc.value)
    check = {r.name: r for r in await run_checks(cfg, None)}["generated columns"]
    assert not check.ok and "publish_generated_columns = stored" in check.fix


@pytest.mark.pg_core  # on every version: 14-17 refuse, 18 accepts
async def test_publish_generated_columns_is_refused_before_18(pg_db: PgDb) -> None:
    pg_db.execute(GENERATED)
    cfg = pg_db.config(publish_generated_columns=True)
    src = PostgresSource(cfg)
    if pg_db.server.version >= 18:
        await src.start(None)
        await src.close()
        assert {r.name: r for r in await run_checks(cfg, None)}["generated columns"].ok
        return
    with pytest.raises(SourceError, match="needs PostgreSQL 18 or newer") as exc:
        await src.start(None)
    await src.close()
    assert f"the server is PostgreSQL {pg_db.server.version}." in str(exc.value)
    assert "publish_generated_columns = false" in str(exc.value)
    assert not pg_db.execute("SELECT 1 FROM pg_publication")  # refused before anything was created
    check = {r.name: r for r in await run_checks(cfg, None)}["generated columns"]
    assert not check.ok and "needs PostgreSQL 18" in check.detail


async def test_a_slot_invalidated_by_idle_replication_slot_timeout_names_the_setting(pg18_db: PgDb) -> None:
    server = pg18_db.server
    pg18_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    reader = await open_reader(pg18_db.config())
    try:
        pg18_db.execute("INSERT INTO t VALUES (1)")
        await reader.wait_for(lambda r: any(m.transaction for m in r.markers), what="a commit")
        checkpoint = pg(next(m.checkpoint for m in reader.markers if m.transaction))
    finally:
        await reader.stop()
    try:
        server.execute("postgres", "ALTER SYSTEM SET idle_replication_slot_timeout = '1s'", superuser=True)
        server.execute("postgres", "SELECT pg_reload_conf()", superuser=True)
        cfg = pg18_db.config()
        check = {r.name: r for r in await run_checks(cfg, None, checkpoint)}["idle_replication_slot_timeout"]
        assert check.warning and "1 s" in check.detail
        # Slots are invalidated for idleness at a checkpoint.
        deadline = time.monotonic() + 30
        while True:
            await asyncio.sleep(1.5)
            server.execute("postgres", "CHECKPOINT", superuser=True)
            reason = pg18_db.execute(
                "SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = 'cdc_slot'"
            )
            if reason == [("idle_timeout",)] or time.monotonic() > deadline:
                break
        assert reason == [("idle_timeout",)]
        src = PostgresSource(cfg)
        with pytest.raises(SourceError, match="idle_replication_slot_timeout") as exc:
            await src.start(checkpoint)
        await src.close()
        assert "invalidation_reason 'idle_timeout'" in str(exc.value) and "full load" in str(exc.value)
        slot = {r.name: r for r in await run_checks(cfg, None, checkpoint)}["slot"]
        assert not slot.ok and "idle_replication_slot_timeout" in slot.detail
    finally:
        server.execute("postgres", "ALTER SYSTEM RESET idle_replication_slot_timeout", superuser=True)
        server.execute("postgres", "SELECT pg_reload_conf()", superuser=True)
