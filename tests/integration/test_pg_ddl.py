"""PostgreSQL DDL capture (event triggers -> logical messages -> control events) against the private server.

The setup runs as the superuser (event triggers need one); the source connects as the non-superuser ``cdc`` role.
"""

from __future__ import annotations

import pytest

from cdcstream.changes import ChangeEvent, Op
from cdcstream.sources.postgres import ddl
from cdcstream.sources.postgres.checks import run_checks
from tests.support.postgres import PgDb
from tests.support.reader import Reader, open_reader

pytestmark = [pytest.mark.timeout(120), pytest.mark.pg_core]


def install(pg_db: PgDb) -> None:
    ddl.install(pg_db.server.superuser_dsn(pg_db.name))


def summary(events: list[ChangeEvent]) -> list[tuple[str, str, str | None, str | None]]:
    out = []
    for e in events:
        c = e.change
        out.append((e.op.value, e.table.table, c.column if c else None, c.old_column if c else None))
    return out


async def test_alter_rename_drop_in_stream_order(pg_db: PgDb) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY, a text, b int)")
    pg_db.execute("CREATE TABLE other (id int PRIMARY KEY)")
    install(pg_db)
    install(pg_db)  # idempotent
    reader: Reader = await open_reader(pg_db.config())
    try:
        # One session, DDL interleaved with DML, several changes in one statement.
        pg_db.execute(
            "BEGIN; INSERT INTO t VALUES (1, 'x', 2); ALTER TABLE t ADD COLUMN c numeric(5,2), DROP COLUMN b; "
            "INSERT INTO t VALUES (2, 'y', 1.5); COMMIT;"
        )
        pg_db.execute("ALTER TABLE t RENAME COLUMN a TO title")
        pg_db.execute("ALTER TABLE t ALTER COLUMN c TYPE numeric(10,2)")
        pg_db.execute("ALTER TABLE t RENAME TO u")
        pg_db.execute("INSERT INTO u VALUES (3, 'z', 2.25)")
        pg_db.execute("DROP TABLE u, other")
        await reader.wait_for(lambda r: sum(e.op is Op.DROP_TABLE for e in r.events) == 2)
    finally:
        await reader.stop()
    assert summary(reader.events)[:8] == [
        ("insert", "t", None, None),
        ("drop-column", "t", None, "b"),
        ("add-column", "t", "c", None),
        ("insert", "t", None, None),
        ("rename-column", "t", "title", "a"),
        ("column-type-change", "t", "c", "c"),
        ("rename-table", "u", None, None),
        ("insert", "u", None, None),
    ]
    # one DROP of two tables: two records, in the server's drop order
    assert sorted(summary(reader.events)[8:]) == [("drop-table", "other", None, None), ("drop-table", "u", None, None)]
    ev = reader.events
    assert ev[0].after == {"id": 1, "a": "x", "b": 2}
    assert ev[3].after == {"id": 2, "a": "y", "c": "1.50"}
    assert ev[7].after == {"id": 3, "title": "z", "c": "2.25"}
    assert [c.name for c in ev[2].table.columns] == ["id", "a", "c"]
    assert ev[6].change is not None and ev[6].change.old_table.table == "t"
    [dropped_u] = [e for e in ev if e.op is Op.DROP_TABLE and e.table.table == "u"]
    assert [c.name for c in dropped_u.table.columns] == ["id", "title", "c"]  # the shape it had when dropped
    # same transaction, stream order
    positions = [e.stream_position for e in ev]
    assert positions == sorted(positions)
    assert ev[1].transaction_id == ev[0].transaction_id == ev[3].transaction_id


async def test_unusual_ddl_never_fails_user_statements_or_the_source(pg_db: PgDb) -> None:
    install(pg_db)
    # FOR ALL TABLES also publishes DDL capture's own table: the source must not emit its rows.
    pg_db.execute("CREATE PUBLICATION cdc_pub FOR ALL TABLES", superuser=True)
    reader: Reader = await open_reader(pg_db.config())
    corpus = [
        "CREATE TABLE m (id int, at date NOT NULL, PRIMARY KEY (id, at)) PARTITION BY RANGE (at)",
        "CREATE TABLE m_2026 PARTITION OF m FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
        "ALTER TABLE m ADD COLUMN note text",  # propagates to the partition
        "CREATE TABLE g (id int PRIMARY KEY, a int, twice int GENERATED ALWAYS AS (a * 2) STORED)",
        "ALTER TABLE g ADD COLUMN thrice int GENERATED ALWAYS AS (a * 3) STORED",
        "COMMENT ON TABLE g IS 'a comment'",
        "COMMENT ON COLUMN g.a IS 'a'",
        'CREATE TABLE "Odd ""Name""" ("Mixed Case" int PRIMARY KEY, "select" text)',
        'ALTER TABLE "Odd ""Name""" RENAME COLUMN "select" TO "from"',
        "CREATE INDEX ON g (a)",
        "CREATE VIEW v AS SELECT * FROM g",
        "ALTER VIEW v RENAME TO v2",
        "CREATE TEMP TABLE tmp (id int); ALTER TABLE tmp ADD COLUMN x int",
        "CREATE UNLOGGED TABLE unl (id int)",
        "ALTER TABLE unl ADD COLUMN x int",
        "CREATE SEQUENCE s1",
        "CREATE TYPE mood AS ENUM ('sad', 'ok')",
        "ALTER TABLE g ADD COLUMN mood mood",
        "CREATE SCHEMA side",
        "CREATE TABLE side.a (id int PRIMARY KEY)",
        "CREATE TABLE side.b (id int PRIMARY KEY)",
        "ALTER TABLE g SET SCHEMA side",
        "DROP TABLE IF EXISTS nope, side.a",
        "DROP SCHEMA side CASCADE",
        "DROP TABLE m",
        'DROP TABLE "Odd ""Name"""',
    ]
    try:
        for stmt in corpus:
            pg_db.execute(stmt)
        pg_db.execute("CREATE TABLE last (id int PRIMARY KEY)")
        pg_db.execute("INSERT INTO last VALUES (1)")
        await reader.wait_for(lambda r: any(e.table.table == "last" for e in r.events))
    finally:
        await reader.stop()
    got = summary([e for e in reader.events if e.op is not Op.INSERT])
    assert ("add-column", "m", "note", None) in got
    assert ("add-column", "m_2026", "note", None) in got
    assert ("add-column", "g", "thrice", None) in got
    assert ("rename-column", 'Odd "Name"', "from", "select") in got
    assert ("add-column", "g", "mood", None) in got
    assert ("rename-table", "g", None, None) in got  # SET SCHEMA: same name, other schema
    dropped = {(e.table.schema, e.table.table) for e in reader.events if e.op is Op.DROP_TABLE}
    assert dropped >= {("side", "a"), ("side", "b"), ("side", "g"), ("public", "m"), ("public", "m_2026")}
    assert ("public", 'Odd "Name"') in dropped
    assert not any(e.table.table in ("tmp", "unl", "v", "v2", "s1") for e in reader.events)
    assert not any(e.table.schema == "cdcstream" for e in reader.events)


async def test_trigger_errors_never_fail_user_ddl(pg_db: PgDb) -> None:
    install(pg_db)
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    # Break the trigger's own state: capture must degrade to a warning, never block the user's DDL.
    pg_db.execute("ALTER TABLE cdcstream.ddl_tables RENAME TO broken", superuser=True)
    pg_db.execute("ALTER TABLE t ADD COLUMN x int")
    pg_db.execute("DROP TABLE t")


async def test_check_warns_without_ddl_capture(pg_db: PgDb) -> None:
    results = {r.name: r for r in await run_checks(pg_db.config(), None)}
    r = results["DDL capture"]
    assert r.ok and r.warning
    assert "DROP TABLE" in r.detail and "cdcstream setup postgres-ddl" in r.fix
    install(pg_db)
    r = {r.name: r for r in await run_checks(pg_db.config(), None)}["DDL capture"]
    assert r.ok and not r.warning
