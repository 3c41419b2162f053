"""Tables created while CDC runs on the private PostgreSQL: captured from their first row when
DDL capture (or the publication itself) can include them, named (status, metric, ``check``) when nothing can,
partitioned tables included; and the selection DDL capture evaluates in SQL agrees with the mapping's own.

The source connects as the non-superuser ``cdc`` role, which creates and owns the tables and the publication, as
an application's role would; the DDL capture setup runs as the superuser.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from cdcstream.changes import Op
from cdcstream.mapping.ruleparse import load_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.sources.postgres import ddl
from cdcstream.sources.postgres.checks import run_checks
from cdcstream.sources.postgres.connection import build_conninfo
from cdcstream.sources.postgres.publication import uncaptured_tables
from cdcstream.telemetry import metrics
from tests.support.postgres import PgDb
from tests.support.reader import Reader, open_reader

pytestmark = pytest.mark.timeout(120)


def acc_rules(tmp_path: Path) -> MappingRules:
    """DMS rules selecting ``acc_%`` tables of ``public`` except ``acc_skip%``."""
    path = tmp_path / "mapping.json"
    rule = {"rule-type": "selection", "object-locator": {"schema-name": "public", "table-name": "acc_%"}}
    skip = {"rule-type": "selection", "object-locator": {"schema-name": "public", "table-name": "acc_skip%"}}
    path.write_text(
        json.dumps(
            {
                "rules": [
                    {**rule, "rule-id": "1", "rule-name": "1", "rule-action": "include"},
                    {**skip, "rule-id": "2", "rule-name": "2", "rule-action": "exclude"},
                ]
            }
        )
    )
    return load_rules(path)


async def open_acc_reader(pg_db: PgDb, rules: MappingRules, **cfg: Any) -> Reader:
    return await open_reader(
        pg_db.config(table_check_interval=0.2, **cfg), selector=rules.selects, selection=rules.selection_regexes()
    )


def rows_of(reader: Reader, table: str) -> list[dict[str, Any]]:
    return [e.after or {} for e in reader.events if e.table.table == table and e.op is Op.INSERT]


def uncaptured(reader: Reader) -> dict[str, str]:
    return {u["table"]: u["reason"] for u in reader.source.status()["uncaptured_tables"]}


async def test_ddl_capture_adds_new_tables_in_their_creating_transaction(pg_db: PgDb, tmp_path: Path) -> None:
    """Fails on main: the publication was FOR TABLE the tables of the start, so none of these rows arrived and
    nothing said so."""
    rules = acc_rules(tmp_path)
    pg_db.execute("CREATE TABLE acc_old (id int PRIMARY KEY)")
    pg_db.execute("CREATE TABLE acc_pold (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)")
    pg_db.execute("CREATE TABLE acc_pold_1 PARTITION OF acc_pold FOR VALUES FROM (0) TO (10)")
    ddl.install(pg_db.server.superuser_dsn(pg_db.name))
    reader = await open_acc_reader(pg_db, rules)
    gauge = metrics.SOURCE_UNCAPTURED_TABLES.labels(reader.source._label)
    try:
        assert uncaptured(reader) == {}
        pg_db.execute(
            "BEGIN; CREATE TABLE acc_new (id int PRIMARY KEY, v text); INSERT INTO acc_new VALUES (1, 'a'); COMMIT"
        )
        pg_db.execute("INSERT INTO acc_new VALUES (2, 'b')")
        # A new partitioned table and a new partition of an old one: rows under the partitioned table's name.
        pg_db.execute(
            "BEGIN; CREATE TABLE acc_part (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);"
            "CREATE TABLE acc_part_1 PARTITION OF acc_part FOR VALUES FROM (0) TO (10);"
            "INSERT INTO acc_part VALUES (1, 1); COMMIT"
        )
        pg_db.execute(
            "BEGIN; CREATE TABLE acc_pold_2 PARTITION OF acc_pold FOR VALUES FROM (10) TO (20);"
            "INSERT INTO acc_pold VALUES (1, 12); COMMIT"
        )
        # Not selected: never added to the publication.
        pg_db.execute(
            "BEGIN; CREATE TABLE acc_skip_me (id int PRIMARY KEY); INSERT INTO acc_skip_me VALUES (1); COMMIT"
        )
        pg_db.execute("BEGIN; CREATE TABLE other (id int PRIMARY KEY); INSERT INTO other VALUES (1); COMMIT")
        # No replica identity: left out (PostgreSQL would refuse its UPDATEs in a publication) and named...
        pg_db.execute("CREATE TABLE acc_nokey (id int, v text)")
        pg_db.execute("INSERT INTO acc_nokey VALUES (1, 'lost')")
        pg_db.execute("UPDATE acc_nokey SET v = 'still works' WHERE id = 1")
        await reader.wait_for(lambda r: "public.acc_nokey" in uncaptured(r), what="acc_nokey named")
        assert "no primary key or replica identity" in uncaptured(reader)["public.acc_nokey"]
        assert gauge._value.get() == 1
        # ... until it gets one, in the same transaction as its next row.
        pg_db.execute(
            "BEGIN; ALTER TABLE acc_nokey ADD PRIMARY KEY (id); INSERT INTO acc_nokey VALUES (2, 'kept'); COMMIT"
        )
        await reader.wait_for(lambda r: rows_of(r, "acc_nokey") and not uncaptured(r), what="acc_nokey captured")
        assert gauge._value.get() == 0
        await reader.wait_for(lambda r: len(rows_of(r, "acc_new")) == 2 and rows_of(r, "acc_pold"))
    finally:
        await reader.stop()
    assert rows_of(reader, "acc_new") == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
    assert rows_of(reader, "acc_part") == [{"id": 1, "k": 1}]
    assert rows_of(reader, "acc_pold") == [{"id": 1, "k": 12}]
    assert rows_of(reader, "acc_nokey") == [{"id": 2, "v": "kept"}]
    assert {e.table.table for e in reader.events} == {"acc_new", "acc_part", "acc_pold", "acc_nokey"}
    published = pg_db.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = 'cdc_pub' ORDER BY 1")
    assert [t for (t,) in published] == ["acc_new", "acc_nokey", "acc_old", "acc_part", "acc_pold"]


async def test_without_ddl_capture_new_tables_are_named(
    pg_db: PgDb, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fails on main: acc_new's rows never reached the stream, and neither the daemon nor check said so."""
    rules = acc_rules(tmp_path)
    pg_db.execute("CREATE TABLE acc_old (id int PRIMARY KEY)")
    reader = await open_acc_reader(pg_db, rules)
    assert "new tables are NOT captured automatically" in capsys.readouterr().out  # said at start
    try:
        pg_db.execute("BEGIN; CREATE TABLE acc_new (id int PRIMARY KEY); INSERT INTO acc_new VALUES (1); COMMIT")
        await reader.wait_for(lambda r: "public.acc_new" in uncaptured(r), what="acc_new named")
        logged = [line for line in capsys.readouterr().out.splitlines() if "selected table is not captured" in line]
        assert len(logged) == 1 and "table=public.acc_new" in logged[0]  # once, when it appeared
        [entry] = reader.source.status()["uncaptured_tables"]
        assert entry["reason"] == "not in publication cdc_pub"
        assert entry["fix"].startswith('ALTER PUBLICATION "cdc_pub" ADD TABLE "public"."acc_new";')
        results = {r.name: r for r in await run_checks(pg_db.config(), rules.selects)}
        assert not results["publication"].ok and "not captured: public.acc_new" in results["publication"].detail
        assert results["new tables"].warning and "not installed" in results["new tables"].detail
        # The fix named: from then on it is captured.
        pg_db.execute("ALTER PUBLICATION cdc_pub ADD TABLE acc_new")
        pg_db.execute("INSERT INTO acc_new VALUES (2)")
        await reader.wait_for(lambda r: rows_of(r, "acc_new") and not uncaptured(r), what="captured after the fix")
    finally:
        await reader.stop()
    assert rows_of(reader, "acc_new") == [{"id": 2}]


async def test_publications_that_cover_new_tables_by_themselves(pg_db: PgDb) -> None:
    """FOR TABLES IN SCHEMA (PostgreSQL 15) and FOR ALL TABLES, created by a superuser: nothing to add."""
    pg_db.execute("CREATE SCHEMA app AUTHORIZATION cdc", superuser=True)
    pg_db.execute(
        "CREATE PUBLICATION in_schema FOR TABLES IN SCHEMA app WITH (publish_via_partition_root)", superuser=True
    )
    pg_db.execute("CREATE PUBLICATION every FOR ALL TABLES", superuser=True)
    readers = [
        await open_reader(pg_db.config(publication="in_schema", slot_name="s_schema", table_check_interval=0.2)),
        await open_reader(pg_db.config(publication="every", slot_name="s_all", table_check_interval=0.2)),
    ]
    try:
        pg_db.execute("BEGIN; CREATE TABLE app.fresh (id int PRIMARY KEY); INSERT INTO app.fresh VALUES (1); COMMIT")
        for reader in readers:
            await reader.wait_for(lambda r: rows_of(r, "fresh"), what=reader.source.cfg.publication)
        # A table outside the schema is named by the schema publication's daemon only.
        pg_db.execute("CREATE TABLE public.elsewhere (id int PRIMARY KEY)")
        await readers[0].wait_for(lambda r: "public.elsewhere" in uncaptured(r), what="named")
        await asyncio.sleep(0.5)
        assert uncaptured(readers[1]) == {}
    finally:
        for reader in readers:
            await reader.stop()


async def test_partitions_published_under_names_the_mapping_does_not_select(pg_db: PgDb, tmp_path: Path) -> None:
    """A publication made without publish_via_partition_root (by a DBA; cdcstream makes its own with it) sends a
    partition's rows under the partition's name: a mapping selecting the partitioned table misses them, said."""
    rules = acc_rules(tmp_path)
    pg_db.execute("CREATE TABLE acc_m (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k)")
    pg_db.execute("CREATE TABLE m_2026 PARTITION OF acc_m FOR VALUES FROM (0) TO (10)")
    pg_db.execute("CREATE PUBLICATION leafy FOR TABLE acc_m")
    conninfo = build_conninfo(pg_db.config(publication="leafy"), replication=False)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        [u] = await uncaptured_tables(conn, "leafy", rules.selects)
        assert u.name == "public.acc_m" and "publish_via_partition_root off" in u.reason and "m_2026" in u.reason
        assert u.fix.startswith('ALTER PUBLICATION "leafy" SET (publish_via_partition_root = true)')
        assert await uncaptured_tables(conn, "leafy", None) == []  # every name selected: captured as m_2026
        await conn.execute("ALTER PUBLICATION leafy SET (publish_via_partition_root = true)")
        assert await uncaptured_tables(conn, "leafy", rules.selects) == []


async def test_sql_selection_agrees_with_the_mapping(pg_db: PgDb, tmp_path: Path) -> None:
    """DDL capture decides in SQL which new tables are selected; the server evaluates the translated patterns
    exactly as the mapping's own matcher does (wildcards, sets, ranges, literal underscores, exclusions, odd
    characters)."""
    ddl.install(pg_db.server.superuser_dsn(pg_db.name))
    locators = [
        ("include", "public", "acc_%"),
        ("include", "s%", "t[_]x"),
        ("include", "odd", "a.b$c(d)*e+?f|g^h"),
        ("include", "r", "[a-c]_[xy]%"),
        ("exclude", "public", "acc_no%"),
        ("explicit", "x.y", "Mixed Case_1"),
        ("include", "sp ace", "tab\\le"),
    ]
    rules_doc = [
        {
            "rule-type": "selection",
            "rule-id": str(i),
            "rule-name": str(i),
            "rule-action": action,
            "object-locator": {"schema-name": schema, "table-name": table},
        }
        for i, (action, schema, table) in enumerate(locators, 1)
    ]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"rules": rules_doc}))
    rules = load_rules(path)
    names = [
        ("public", "acc_x"), ("public", "acc"), ("public", "acc_no_1"), ("public", "Acc_x"), ("s1", "t_x"),
        ("s1", "tax"), ("s", "t_xy"), ("odd", "a.b$c(d)*e+?f|g^h"), ("odd", "aXb$c(d)*e+?f|g^h"), ("r", "b1y"),
        ("r", "d1y"), ("r", "a_x-anything\n"), ("x.y", "Mixed Case_1"), ("xzy", "Mixed Case_1"),
        ("x.y", "Mixed CaseX1"), ("sp ace", "tab\\le"), ("sp ace", "table"), ("public", "acc_é"),
    ]  # fmt: skip
    selection = json.dumps(rules.selection_regexes())
    for schema, table in names:
        [(server,)] = pg_db.execute(
            "SELECT cdcstream.selects(%s::jsonb, %s, %s)", superuser=True, params=(selection, schema, table)
        )
        assert server is rules.selects(schema, table), (schema, table)
    every = json.dumps(MappingRules().selection_regexes())
    assert pg_db.execute("SELECT cdcstream.selects(%s::jsonb, 'a', 'b')", superuser=True, params=(every,)) == [(True,)]


async def test_setup_registers_a_publication_the_daemon_does_not_own(pg_db: PgDb, tmp_path: Path) -> None:
    """A DBA's publication: ``setup postgres-ddl --config`` registers the mapping's selection as the superuser,
    and the daemon (not its owner) finds it unchanged. With another selection the daemon cannot register it:
    it says so, and names the new tables nothing adds."""
    rules = acc_rules(tmp_path)
    pg_db.execute("CREATE TABLE acc_old (id int PRIMARY KEY)")
    pg_db.execute("CREATE PUBLICATION cdc_pub FOR TABLE acc_old WITH (publish_via_partition_root)", superuser=True)
    dsn = pg_db.server.superuser_dsn(pg_db.name)
    assert ddl.install(dsn, register=("cdc_pub", rules.selection_regexes())) == "registered"
    assert ddl.install(dsn, register=("cdc_pub", rules.selection_regexes())) == "unchanged"
    assert ddl.install(dsn, register=("nope", rules.selection_regexes())) is None  # no such publication yet
    reader = await open_acc_reader(pg_db, rules)
    everything = await open_reader(pg_db.config(slot_name="s_every", table_check_interval=0.2))
    try:
        assert reader.source._tables.ddl_capture and not everything.source._tables.ddl_capture
        pg_db.execute("BEGIN; CREATE TABLE acc_new (id int PRIMARY KEY); INSERT INTO acc_new VALUES (1); COMMIT")
        pg_db.execute("CREATE TABLE zzz (id int PRIMARY KEY)")  # selected by "every table", not by acc_%
        await reader.wait_for(lambda r: rows_of(r, "acc_new"), what="acc_new captured")
        await everything.wait_for(lambda r: "public.zzz" in uncaptured(r), what="zzz named")
        assert "public.acc_new" not in uncaptured(everything)
    finally:
        await reader.stop()
        await everything.stop()
