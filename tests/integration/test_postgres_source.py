"""PostgresSource against the private PostgreSQL server (each of --pg-versions), as the non-superuser ``cdc`` role."""

from __future__ import annotations

import asyncio
import time

import pytest

from cdcstream.changes import ChangeEvent, Marker, Op
from cdcstream.errors import SourceError
from cdcstream.sources.postgres import PostgresSource
from cdcstream.sources.postgres.checks import run_checks
from cdcstream.sources.postgres.pgoutput import parse_lsn
from cdcstream.telemetry import metrics
from tests.support.checkpoints import pg
from tests.support.postgres import PgDb
from tests.support.reader import n_events, open_reader, source_for

pytestmark = [pytest.mark.timeout(120), pytest.mark.pg_core]


async def slot_confirmed_lsn(db: PgDb, slot: str = "cdc_slot") -> int:
    rows = await asyncio.to_thread(
        db.execute,
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        params=(slot,),
    )
    return parse_lsn(rows[0][0])


async def test_insert_update_delete_truncate(pg_db: PgDb) -> None:
    pg_db.execute(
        "CREATE TABLE items (id bigint PRIMARY KEY, name text, qty int, price numeric(12,2),"
        " created timestamptz, flag boolean, payload jsonb, raw bytea, c9 float8)"
    )
    reader = await open_reader(pg_db.config())
    try:
        pg_db.execute(
            "INSERT INTO items VALUES (1, 'one', 10, 12.50, '2026-11-27 12:00:00.123456+01', true,"
            " '{\"a\": 1}', '\\x0aff', 'NaN')"
        )
        pg_db.execute("UPDATE items SET qty = 11 WHERE id = 1")
        pg_db.execute("DELETE FROM items WHERE id = 1")
        pg_db.execute("INSERT INTO items (id) VALUES (2), (3)")
        pg_db.execute("TRUNCATE items")
        await reader.wait_for(n_events(6), what="6 events")
        ev = reader.events
        assert [e.op for e in ev] == [Op.INSERT, Op.UPDATE, Op.DELETE, Op.INSERT, Op.INSERT, Op.TRUNCATE]
        ins = ev[0]
        assert ins.after == {
            "id": 1,
            "name": "one",
            "qty": 10,
            "price": "12.50",
            "created": "2026-11-27T11:00:00.123456Z",
            "flag": True,
            "payload": '{"a": 1}',
            "raw": "0x0aff",
            "c9": "NaN",
        }
        assert ins.before is None
        assert ins.table.schema == "public" and ins.table.table == "items"
        assert ins.table.key_columns == ("id",)
        assert ins.transaction_record_id == 1
        assert ins.commit_time.endswith("Z") and "T" in ins.commit_time
        assert abs(ins.commit_epoch - time.time()) < 60
        assert ev[1].after is not None and ev[1].after["qty"] == 11 and ev[1].before is None
        assert ev[2].after is None and ev[2].before == {"id": 1}
        # two rows of one transaction: same position prefix, record ids 1 and 2
        assert (ev[3].transaction_record_id, ev[4].transaction_record_id) == (1, 2)
        assert ev[3].stream_position[:-10] == ev[4].stream_position[:-10]
        assert ev[3].transaction_id == ev[4].transaction_id
        assert ev[5].after is None and ev[5].before is None and ev[5].table.table == "items"
        positions = [e.stream_position for e in ev]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        # the table's TableInfo is shared by its events while the relation is unchanged (also across a re-sent
        # Relation message: pgoutput sends one again after an invalidation of the table's cache entry)
        assert ev[0].table is ev[1].table
    finally:
        await reader.stop()


async def test_commit_markers_increase_and_follow_their_events(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    reader = await open_reader(pg_db.config())
    try:
        for i in range(5):
            pg_db.execute(f"INSERT INTO t VALUES ({i})")
        await reader.wait_for(lambda r: len([m for m in r.markers if m.transaction]) >= 5)
        commits = [m for m in reader.markers if m.transaction]
        lsns = [parse_lsn(pg(m.checkpoint)["lsn"]) for m in commits]
        assert lsns == sorted(lsns) and len(set(lsns)) == 5
        assert all(m.commit_epoch is not None for m in commits)
        # every event is followed by its commit marker before the next event
        kinds = [
            "E" if isinstance(i, ChangeEvent) else "M"
            for i in reader.items
            if not (isinstance(i, Marker) and not i.transaction)
        ]
        assert "".join(kinds).startswith("EMEMEMEMEM")
    finally:
        await reader.stop()


async def test_replica_identity_full_has_before_and_real_key(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE f (id int PRIMARY KEY, v text); ALTER TABLE f REPLICA IDENTITY FULL")
    pg_db.execute("INSERT INTO f VALUES (1, 'a')")
    reader = await open_reader(pg_db.config())
    try:
        pg_db.execute("UPDATE f SET v = 'b' WHERE id = 1")
        pg_db.execute("DELETE FROM f WHERE id = 1")
        await reader.wait_for(n_events(2))
        upd, dele = reader.events
        assert upd.op is Op.UPDATE and upd.before == {"id": 1, "v": "a"} and upd.after == {"id": 1, "v": "b"}
        assert dele.before == {"id": 1, "v": "b"}
        assert upd.table.key_columns == ("id",)  # not every column, as pgoutput's flags claim
    finally:
        await reader.stop()


async def test_unchanged_toast_is_listed_not_sent(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE tt (id int PRIMARY KEY, small int, big text)")
    pg_db.execute("ALTER TABLE tt ALTER COLUMN big SET STORAGE EXTERNAL")
    reader = await open_reader(pg_db.config())
    try:
        pg_db.execute("INSERT INTO tt SELECT 1, 1, string_agg(md5(g::text), '') FROM generate_series(1, 200) g")
        pg_db.execute("UPDATE tt SET small = 2")
        await reader.wait_for(n_events(2))
        upd = reader.events[1]
        assert upd.after == {"id": 1, "small": 2}
        assert upd.unchanged_columns == ("big",)
    finally:
        await reader.stop()


async def test_unselected_table_produces_no_events(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)")
    pg_db.execute("CREATE PUBLICATION cdc_pub FOR TABLE a, b")  # b is published but not selected
    reader = await open_reader(pg_db.config(), selector=lambda s, t: t == "a")
    try:
        pg_db.execute("INSERT INTO b VALUES (1)")
        pg_db.execute("INSERT INTO a VALUES (1)")
        pg_db.execute("TRUNCATE a, b")
        await reader.wait_for(n_events(2))
        await asyncio.sleep(0.2)
        assert [(e.table.table, e.op) for e in reader.events] == [("a", Op.INSERT), ("a", Op.TRUNCATE)]
        # the transaction touching only b still yields its commit marker, so the position advances
        assert len([m for m in reader.markers if m.transaction]) == 3
    finally:
        await reader.stop()


async def test_ack_moves_confirmed_flush_only_to_acked_lsn(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    cfg = pg_db.config()
    reader = await open_reader(cfg)
    try:
        before = await slot_confirmed_lsn(pg_db)
        pg_db.execute("INSERT INTO t VALUES (1)")
        pg_db.execute("INSERT INTO t VALUES (2)")
        await reader.wait_for(lambda r: len([m for m in r.markers if m.transaction]) >= 2)
        m1, m2 = [m for m in reader.markers if m.transaction][:2]
        await asyncio.sleep(1.5)  # several status updates: none may move the slot without an ack
        assert await slot_confirmed_lsn(pg_db) == before
        await reader.source.ack(m1.checkpoint)
        await reader.source.ack({"lsn": "0/1"})  # an older ack never moves it backwards
        deadline = time.monotonic() + 10
        while await slot_confirmed_lsn(pg_db) != parse_lsn(pg(m1.checkpoint)["lsn"]):
            assert time.monotonic() < deadline, "confirmed_flush_lsn did not reach the acked LSN"
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.2)
        assert await slot_confirmed_lsn(pg_db) == parse_lsn(pg(m1.checkpoint)["lsn"])
        assert reader.source.status()["acked_lsn"] == pg(m1.checkpoint)["lsn"]
    finally:
        await reader.stop()
    # the transaction after the acked position is delivered again on restart from the checkpoint
    reader = await open_reader(cfg, m1.checkpoint)
    try:
        await reader.wait_for(n_events(1))
        await asyncio.sleep(0.3)
        assert [e.after for e in reader.events] == [{"id": 2}]
        assert reader.markers[-1].checkpoint == m2.checkpoint or any(
            m.checkpoint == m2.checkpoint for m in reader.markers
        )
    finally:
        await reader.stop()


async def _walsender_pid(db: PgDb) -> int:
    deadline = time.monotonic() + 10
    while True:
        rows = await asyncio.to_thread(
            db.execute,
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = 'cdc_slot' AND active",
            superuser=True,
        )
        if rows and rows[0][0]:
            return int(rows[0][0])
        assert time.monotonic() < deadline, "no active walsender"
        await asyncio.sleep(0.05)


async def test_reconnect_after_walsender_is_terminated(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    label = f"postgres:{pg_db.name}"
    reader = await open_reader(pg_db.config())
    try:
        pg_db.execute("INSERT INTO t VALUES (1)")
        await reader.wait_for(n_events(1))
        pid = await _walsender_pid(pg_db)
        reconnects = metrics.SOURCE_RECONNECTS.labels(label)._value.get()
        pg_db.execute(f"SELECT pg_terminate_backend({pid})", superuser=True)
        for i in range(2, 6):
            pg_db.execute(f"INSERT INTO t VALUES ({i})")
        await reader.wait_for(lambda r: {e.after["id"] for e in r.events if e.after} >= {1, 2, 3, 4, 5})
        assert metrics.SOURCE_RECONNECTS.labels(label)._value.get() > reconnects
        assert metrics.SOURCE_CONNECTED.labels(label)._value.get() == 1
        assert await _walsender_pid(pg_db) != pid
    finally:
        await reader.stop()


async def test_reconnect_after_server_restart(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    reader = await open_reader(pg_db.config())
    try:
        pg_db.execute("INSERT INTO t VALUES (1)")
        await reader.wait_for(n_events(1))
        await asyncio.to_thread(pg_db.server.restart)
        for i in range(2, 5):
            pg_db.execute(f"INSERT INTO t VALUES ({i})")
        await reader.wait_for(lambda r: {e.after["id"] for e in r.events if e.after} >= {1, 2, 3, 4}, within=30)
        assert reader.source.status()["connected"] is True
    finally:
        await reader.stop()


async def test_missing_slot_with_checkpoint_is_an_error(pg_db: PgDb) -> None:
    src = PostgresSource(pg_db.config())
    with pytest.raises(SourceError, match="does not exist, but a checkpoint") as exc:
        await src.start({"lsn": "0/1000000"})
    await src.close()
    assert "may be lost" in str(exc.value)
    assert not pg_db.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = 'cdc_slot'")


async def test_publication_not_creatable_prints_sql(pg_db: PgDb) -> None:
    # A table owned by the superuser: cdc may read it but not publish it.
    pg_db.execute("CREATE TABLE owned (id int PRIMARY KEY)", superuser=True)
    src = PostgresSource(pg_db.config())
    with pytest.raises(SourceError) as exc:
        await src.start(None)
    await src.close()
    msg = str(exc.value)
    assert 'CREATE PUBLICATION "cdc_pub" FOR TABLE "public"."owned" WITH (publish_via_partition_root = true);' in msg
    assert "FOR ALL TABLES" in msg
    assert "cdc'" not in msg.lower() or "password" not in msg.lower()


async def test_idle_keepalive_and_heartbeat_markers(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int)")
    pg_db.execute("CREATE PUBLICATION cdc_pub FOR TABLE t")
    reader = await open_reader(pg_db.config(heartbeat_interval=0.3))
    try:
        # heartbeats: commit markers with no change events
        await reader.wait_for(lambda r: len([m for m in r.markers if m.transaction]) >= 2, what="heartbeats")
        assert reader.events == []
        # WAL the publication does not cover: the walsender answers with a keepalive past our position
        for i in range(20):
            pg_db.execute(f"INSERT INTO other VALUES ({i})")
        await reader.wait_for(lambda r: any(not m.transaction for m in r.markers), what="idle marker")
        idle = [m for m in reader.markers if not m.transaction]
        assert all(m.commit_epoch is None for m in idle)
        lag = metrics.SOURCE_LAG_SECONDS.labels(f"postgres:{pg_db.name}")._value.get()
        assert lag < 5
        lsns = [parse_lsn(pg(m.checkpoint)["lsn"]) for m in reader.markers]
        assert lsns == sorted(lsns)
    finally:
        await reader.stop()


async def test_checks_report(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    results = await run_checks(pg_db.config(), None)
    by_name = {r.name: r for r in results}
    assert by_name["connect"].ok
    assert by_name["wal_level"].ok
    assert by_name["replication privilege"].ok
    assert by_name["slot"].ok  # creatable
    assert all("cdc'" not in r.detail and "password" not in r.detail for r in results)


async def test_a_stream_the_daemon_holds_back_is_not_reported_stalled(pg_db: PgDb) -> None:
    """While the consumer holds a batch (the sink is full, e.g. through a Kinesis outage) the reader does not read,
    so nothing arrives while the server's WAL grows: that is the daemon's own backpressure, not a stalled server,
    and cdcstream_source_stalled_seconds stays 0 (a false "stalled" warning pointed operators at the walsender)."""
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_db.execute("CREATE PUBLICATION cdc_pub FOR TABLE t")
    source = source_for(pg_db.config(stall_timeout=1))
    await source.start(None)
    stalled = metrics.SOURCE_STALLED_SECONDS.labels(f"postgres:{pg_db.name}")
    batches = source.changes()
    try:
        pg_db.execute("INSERT INTO t VALUES (0)")
        got: list[ChangeEvent] = []
        async with asyncio.timeout(20):
            while not got:
                got += [i for i in await anext(batches) if isinstance(i, ChangeEvent)]
        # held: no anext() for 4 s (the watch looks every 0.5 s) while commits keep the server's WAL growing
        highest = 0.0
        for i in range(1, 21):
            pg_db.execute(f"INSERT INTO t VALUES ({i})")
            await asyncio.sleep(0.2)
            highest = max(highest, stalled._value.get())
        assert highest == 0
        async with asyncio.timeout(20):
            while len(got) < 21:
                got += [i for i in await anext(batches) if isinstance(i, ChangeEvent)]
        assert [e.after["id"] for e in got if e.after] == list(range(21))
    finally:
        await source.close()
        await batches.aclose()
