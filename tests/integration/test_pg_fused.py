"""The compiled fused row path against the reference path on a real server: two slots read the same changes,
one source with the mapper's fused hook, one without; the mapped records must be byte for byte the same.

Run once as configured (compiled, where the extension is built) and once with ``CDCSTREAM_PURE=1`` (both pure);
the same with a ``primary-key`` partition key (composite, with the ``schema.table.`` prefix and the key in the
metadata), whose partition keys must be the same too.
"""

from __future__ import annotations

import pytest

from cdcstream.changes import ChangeEvent, FusedRows, Item, Marker
from cdcstream.config import TargetConfig
from cdcstream.mapping import envelope
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.sources.postgres import fused
from tests.support.postgres import PgDb
from tests.support.reader import n_events, open_reader

pytestmark = pytest.mark.timeout(180)

TABLE = """CREATE TABLE fz (id bigint PRIMARY KEY, i2 smallint, i4 int, t text, vc varchar(20), num numeric,
  b boolean, f4 real, f8 double precision, tz timestamptz, ts timestamp, d date, u uuid, jb jsonb, j json,
  by bytea, big text)"""

ROWS = [
    "INSERT INTO fz VALUES (1, 1, 2, 'plain', 'v', 1.50, true, 1.1, 0.1, '2026-12-07 10:00:00.123456+00',"
    " '2026-12-07 10:00:00.5', '2026-12-07', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": [1, 2.50]}',"
    " '{\"a\":1, \"a\":2}', '\\x00ff', NULL)",
    "INSERT INTO fz VALUES (2, -32768, -2147483648, E'quote\" back\\\\ tab\\t nl\\n bell\\x07 é € 😀', '',"
    " 123456789012345678901234567890.123456789, false, 'NaN', '-Infinity', 'infinity',"
    " '0044-03-15 12:00:00 BC', '-infinity', NULL, 'null', '[]', '\\x', NULL)",
    "INSERT INTO fz VALUES (3, 32767, 2147483647, NULL, NULL, 'NaN', NULL, 3.4028235e38, 1e-05,"
    " '1999-12-31 23:59:59.999999+00', '9999-12-31 23:59:59', '4713-01-01 BC', NULL, NULL, NULL, NULL,"
    " (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g))",
    "INSERT INTO fz (id, f8, i4) VALUES (9223372036854775807, 1.7976931348623157e308, 0)",
    "UPDATE fz SET i4 = 5 WHERE id = 3",  # big is TOASTed and unchanged: listed, not sent
    "UPDATE fz SET id = 4, f8 = 5e-324 WHERE id = 2",  # key change: a 'K' old tuple
    "DELETE FROM fz WHERE id = 1",
]


Output = tuple[list[tuple[str, bytes]], int]


@pytest.fixture(params=[False, True], ids=["as-built", "CDCSTREAM_PURE"])
def pure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each test as built and with the pure path forced; a fixed record timestamp, so records compare."""
    if request.param:
        monkeypatch.setenv("CDCSTREAM_PURE", "1")
    monkeypatch.setattr(envelope, "now_iso", lambda: "2026-12-07T10:00:00.000000Z")
    return bool(request.param)


async def _read(pg_db: PgDb, slots: list[tuple[str, Mapper, bool]], statements: list[str]) -> list[Output]:
    """Each slot's records (partition key, bytes) for ``statements`` and how many events were rendered compiled;
    a slot's source gets its mapper's fused hook when its flag says so."""
    readers = []
    for slot, mapper, fuse in slots:
        reader = await open_reader(
            pg_db.config(slot_name=slot), selector=mapper.selects, fuse=mapper.fused_columns if fuse else None
        )
        readers.append((reader, mapper))
    try:
        for stmt in statements:
            pg_db.execute(stmt)
        for reader, _ in readers:
            await reader.wait_for(n_events(len(statements)), what=f"{len(statements)} events")
    finally:
        for reader, _ in readers:
            await reader.stop()
    outputs = []
    for reader, mapper in readers:
        events = [e for e in reader.events if isinstance(e, ChangeEvent)]
        records = mapper.map(events)
        outputs.append(([(r.partition_key, r.data) for r in records], sum(e.fused is not None for e in events)))
    return outputs


PK_TABLE = """CREATE TABLE fzk (t text, ts timestamptz, n int, by bytea, v text, f8 double precision,
  PRIMARY KEY (t, ts, n, by))"""

PK_ROWS = [
    "INSERT INTO fzk VALUES ('a.b', '2026-12-07 10:00:00.5+00', -7, '\\x00ff', 'x', 1.5)",
    "INSERT INTO fzk VALUES ('', '2026-12-07 10:00:00+00', 0, '\\x', NULL, NULL)",
    "INSERT INTO fzk VALUES (E'é € 😀 \"q\" \\\\ \\n', 'infinity', 1, '\\x01', 'y', 2)",
    "INSERT INTO fzk VALUES (repeat('k', 300), '2000-01-01 00:00:00+00', 2, '\\x02', 'z', 3)",
    "UPDATE fzk SET v = 'w' WHERE n = -7",
    "UPDATE fzk SET n = 8 WHERE n = 0",  # a key change: a 'K' old tuple
    "DELETE FROM fzk WHERE n = 2",
    "DELETE FROM fzk WHERE n = -7",
]


async def test_fused_primary_key_records_identical_on_a_real_server(pg_db: PgDb, pure: bool) -> None:
    pg_db.execute(PK_TABLE)
    sel = {
        "rule-type": "selection",
        "rule-id": "1",
        "rule-name": "all",
        "object-locator": {"schema-name": "%", "table-name": "%"},
        "rule-action": "include",
    }
    om = {
        "rule-type": "object-mapping",
        "rule-id": "2",
        "rule-name": "pk",
        "rule-action": "map-record-to-record",
        "object-locator": {"schema-name": "%", "table-name": "%"},
        "mapping-parameters": {"partition-key-type": "primary-key"},
    }
    rules = parse_rules({"rules": [sel, om]}, "rules.json")
    target = TargetConfig(
        stream_name="s",
        message_format="json-unformatted",
        partition_include_schema_table=True,
        include_partition_value=True,
    )
    slots = [("k_pure", Mapper(rules, target, "task"), False), ("k_fused", Mapper(rules, target, "task"), True)]
    (pure_records, none), (fused_records, rendered) = await _read(pg_db, slots, PK_ROWS)
    assert none == 0
    assert fused_records == pure_records
    keys = [k for k, _ in pure_records]
    assert keys[0] == "public.fzk.a.b.2026-12-07T10:00:00.5Z.-7.0x00ff"
    assert keys[1] == "public.fzk..2026-12-07T10:00:00Z.0.0x"
    assert len(keys[3]) > 256  # the sink sends its SHA-256 (sinks/kinesis.py); the record keeps the key
    if pure or not fused.path_name().startswith("compiled"):
        assert rendered == 0
    else:
        assert rendered == len(PK_ROWS) - 1  # all but the infinite timestamp (the reference path)


async def test_fused_records_identical_on_a_real_server(pg_db: PgDb, pure: bool) -> None:
    pg_db.execute(TABLE)
    pg_db.execute("ALTER TABLE fz ALTER COLUMN big SET STORAGE EXTERNAL")
    slots = []
    for slot, fuse, include_nulls in [("s_pure", False, True), ("s_fused", True, True), ("s_nonull", True, False)]:
        target = TargetConfig(stream_name="s", message_format="json-unformatted", include_null_and_empty=include_nulls)
        slots.append((slot, Mapper(MappingRules(), target, "task"), fuse))
    outputs = await _read(pg_db, slots, ROWS)
    (pure_records, none), (fused_records, rendered), (nonull_records, _) = outputs
    assert none == 0
    assert fused_records == pure_records
    # the NULL-less records are the same records without their nulls
    assert len(nonull_records) == len(pure_records)
    if pure or not fused.path_name().startswith("compiled"):
        assert rendered == 0
    else:
        assert rendered == len(ROWS) - 2  # all but the two with BC and infinite timestamps (the reference path)


RUN_ROWS = [
    # One transaction of many rows: the runs path renders them in few calls; the BC timestamp, the infinite one
    # and the unchanged TOAST value break the runs (the reference path, row at a time).
    "BEGIN",
    "INSERT INTO fz (id, i4, t, b, f8, tz, by, big) SELECT g, g, 'row ' || g, g % 2 = 0, g / 7.0,"
    " '2026-12-07 10:00:00+00'::timestamptz + g * interval '1 second', '\\x0a0b', NULL"
    " FROM generate_series(1, 300) g",
    "INSERT INTO fz (id, ts) VALUES (1000, '0044-03-15 12:00:00 BC')",
    "INSERT INTO fz (id, big) VALUES (1001, (SELECT string_agg(md5(g::text), '') FROM generate_series(1, 200) g))",
    "UPDATE fz SET i4 = i4 + 1 WHERE id <= 150 OR id = 1001",
    "UPDATE fz SET id = id + 5000 WHERE id BETWEEN 10 AND 20",
    "DELETE FROM fz WHERE id BETWEEN 100 AND 200",
    "COMMIT",
    "INSERT INTO fz (id, i4) VALUES (2000, 1)",
]


async def test_runs_identical_on_a_real_server(pg_db: PgDb, pure: bool) -> None:
    """The source handing compiled rows over as runs (changes.FusedRows: the daemon mapping in process) against
    the reference path: the same records and the same commit markers, in the same order."""
    pg_db.execute(TABLE)
    pg_db.execute("ALTER TABLE fz ALTER COLUMN big SET STORAGE EXTERNAL")
    target = TargetConfig(stream_name="s", message_format="json-unformatted")
    readers = []
    for slot, fuse, runs in [("r_pure", False, False), ("r_runs", True, True)]:
        mapper = Mapper(MappingRules(), target, "task")
        cfg = pg_db.config(slot_name=slot)
        hook = mapper.fused_columns if fuse else None
        readers.append((await open_reader(cfg, selector=mapper.selects, fuse=hook, runs=runs), mapper))
    rows = 300 + 2 + 151 + 11 + 101 + 1
    try:
        pg_db.execute("\n".join(s + ";" for s in RUN_ROWS))
        for reader, _ in readers:
            await reader.wait_for(lambda r: _rows(r.items) >= rows, what=f"{rows} rows")
            await reader.wait_for(lambda r: sum(m.transaction for m in r.markers) >= 2, what="both commits")
    finally:
        for reader, _ in readers:
            await reader.stop()
    outputs = []
    for reader, mapper in readers:
        out: list[object] = []
        pending: list[ChangeEvent | FusedRows] = []
        for item in reader.items:
            if isinstance(item, Marker):
                out.extend((r.partition_key, r.data) for r in mapper.map(pending))
                pending.clear()
                if item.transaction:  # idle positions depend on when each slot was read
                    out.append(item)
            elif isinstance(item, ChangeEvent | FusedRows):
                pending.append(item)
        out.extend((r.partition_key, r.data) for r in mapper.map(pending))
        made = [i for i in reader.items if isinstance(i, FusedRows)]
        outputs.append((out, sum(len(r.ops) for r in made)))
    (pure_out, none), (runs_out, in_runs) = outputs
    assert none == 0
    assert runs_out == pure_out
    assert len([o for o in pure_out if isinstance(o, tuple)]) == rows
    if pure or not fused.path_name().startswith("compiled"):
        assert in_runs == 0
    else:
        assert in_runs >= rows - 10


def _rows(items: list[Item]) -> int:
    return sum(len(i.ops) if isinstance(i, FusedRows) else isinstance(i, ChangeEvent) for i in items)
