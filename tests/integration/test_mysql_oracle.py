"""Every MySQL/MariaDB value as the server itself renders it, in load and CDC records alike.

The type matrix is tests/support/mysql_types.py: per column, the server's own rendering of each stored value
(``CAST(... AS CHAR)``, ``HEX()``, ...) and the documented rule from that answer to the record value. Here:

1. the tables are created and filled (writer session at +02:00, strict with ``ALLOW_INVALID_DATES``, then the
   values only a non-strict session stores), and the server is asked for every cell (the "before" oracle);
2. ``MySQLSource`` runs ``full-load-and-cdc`` and yields the load rows;
3. every row is updated (its ``tick``), copied with ``id + 1000`` (inserts), the server asked again (the "after"
   oracle), and everything deleted;
4. every event goes through the DMS mapper (``primary-key`` partition keys, NULLs kept, before images of all
   columns) and each record's data, before image and partition key must be the rule over the server's answer.

The CDC steps run again with the writing sessions at ``binlog_row_image = MINIMAL`` and ``NOBLOB``: each value a
record holds must be the server's, each column it lacks listed in ``unchanged-columns``.

CDC decoding is driven only through ``MySQLSource`` and the records, so the test holds whatever decodes the
binlog underneath. Wall time: about 12 s for this module on this machine, beside the shared server's start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import orjson
import pymysql
import pytest

from cdcstream.changes import ChangeEvent, Op
from cdcstream.config import BeforeImageConfig, FullLoadConfig, TargetConfig
from cdcstream.errors import SourceError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.sources.loadengine import Segment
from cdcstream.sources.mysql import MySQLSource, snapshot
from cdcstream.sources.mysql.server import connection_settings
from cdcstream.sources.mysql.snapshot import MyLoadEngine
from tests.integration.test_mysql_full_load import _read_all
from tests.support import mysql_types as m
from tests.support.mysql import MyDb
from tests.support.reader import Reader

pytestmark = pytest.mark.timeout(180)

WRITER_MODE = "STRICT_ALL_TABLES,ALLOW_INVALID_DATES"  # zero and invalid dates allowed, nothing else truncated
LAX_MODE = "ALLOW_INVALID_DATES"


def _session(db: MyDb, sql_mode: str, time_zone: str = "+02:00", row_image: str = "FULL") -> pymysql.Connection[Any]:
    # conv={}: the server's text as is, never PyMySQL's reading of it
    conn = pymysql.connect(
        unix_socket=str(db.server.socket), user="root", database=db.name, autocommit=True, charset="utf8mb4", conv={}
    )
    with conn.cursor() as cur:
        cur.execute(f"SET time_zone = '{time_zone}', sql_mode = '{sql_mode}', binlog_row_image = '{row_image}'")
    return conn


def _execute(db: MyDb, statements: list[str], sql_mode: str = WRITER_MODE, row_image: str = "FULL") -> None:
    conn = _session(db, sql_mode, row_image=row_image)
    try:
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)
    finally:
        conn.close()


def _oracle(
    db: MyDb, invalid_dates: str = "text", tables: Sequence[m.Table] = m.MATRIX
) -> dict[str, dict[str, dict[str, Any]]]:
    """The expected record values of every row of the tables, by table and partition key."""
    conn = _session(db, "", time_zone="+00:00")
    try:
        out = {}
        with conn.cursor() as cur:
            for table in tables:
                cur.execute(table.oracle_query())
                out[table.name] = m.expected_rows(table, cur.fetchall(), invalid_dates)
        return out
    finally:
        conn.close()


def _create(db: MyDb) -> None:
    _execute(db, [s for table in m.MATRIX for s in table.statements])
    _execute(db, m.NON_STRICT, LAX_MODE)


def _mapper(db: MyDb) -> Mapper:
    rules = parse_rules(
        {
            "rules": [
                {
                    "rule-type": "selection",
                    "rule-id": "1",
                    "rule-name": "1",
                    "object-locator": {"schema-name": db.name, "table-name": "%"},
                    "rule-action": "include",
                },
                {
                    "rule-type": "object-mapping",
                    "rule-id": "2",
                    "rule-name": "2",
                    "rule-action": "map-record-to-record",
                    "object-locator": {"schema-name": db.name, "table-name": "%"},
                    "mapping-parameters": {"partition-key-type": "primary-key"},
                },
            ]
        },
        "oracle test",
    )
    target = TargetConfig(
        stream_name="s",
        message_format="json-unformatted",
        include_null_and_empty=True,
        before_image=BeforeImageConfig(enabled=True, column_filter="all"),
    )
    return Mapper(rules, target, "oracle")


class Mismatches:
    """Wrong cells, collected over the whole matrix so one run reports all of them."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str, str], list[str]] = {}

    def compare(self, table: str, op: str, key: str, expected: dict[str, Any], got: dict[str, Any] | None) -> None:
        if got is None:
            self.cells.setdefault((table, "<record>", op), []).append(f"row {key}: no record")
            return
        for column in expected.keys() | got.keys():
            want, have = expected.get(column, "<absent>"), got.get(column, "<absent>")
            # == alone would take 1 for 1.0 and True for 1; JSON types must match too
            if want != have or type(want) is not type(have):
                self.cells.setdefault((table, column, op), []).append(f"row {key}: expected {want!r}, got {have!r}")

    def report(self, cells: set[tuple[str, str, str]]) -> str:
        lines = []
        for cell in sorted(cells):
            details = self.cells[cell]
            lines.append(f"{'.'.join(cell)}: {'; '.join(d[:300] for d in details[:3])}")
        return "\n".join(lines)


def _check(
    records: list[tuple[str, str, str, dict[str, Any]]],
    before: dict[str, dict[str, dict[str, Any]]],
    after: dict[str, dict[str, dict[str, Any]]],
) -> Mismatches:
    """Compare (table, operation, partition key, record document) against the two oracles: load rows and
    update before images are the rows before the CDC statements, the rest the rows after them."""
    got: dict[tuple[str, str, str], dict[str, Any]] = {}
    bad = Mismatches()
    for table, op, key, doc in records:
        if (table, op, key) in got or key not in (before[table] if op == "load" else after[table]):
            bad.cells.setdefault((table, "<partition key>", op), []).append(f"unexpected record {key}: {doc}")
        got[table, op, key] = doc
    for spec in m.MATRIX:
        name = spec.name
        for key, row in before[name].items():
            bad.compare(name, "load", key, row, _data(got.get((name, "load", key))))
            update = got.get((name, "update", key))
            bad.compare(name, "update-before", key, row, None if update is None else update["before-image"])
        for key, row in after[name].items():
            op = "update" if key in before[name] else "insert"
            bad.compare(name, op, key, row, _data(got.get((name, op, key))))
            bad.compare(name, "delete", key, row, _data(got.get((name, "delete", key))))
    return bad


def _data(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if doc is None else doc["data"]


def _records(db: MyDb, events: list[ChangeEvent]) -> list[tuple[str, str, str, dict[str, Any]]]:
    out = []
    for rec in _mapper(db).map(events):
        doc = orjson.loads(rec.data)
        out.append((doc["metadata"]["table-name"], doc["metadata"]["operation"], rec.partition_key, doc))
    return out


async def _load_and_cdc(
    db: MyDb, row_image: str = "FULL", **cfg: Any
) -> tuple[list[ChangeEvent], dict[str, Any], dict[str, Any], str]:
    """Steps 1-3 of the module docstring: the source's events, the before/after oracles, and the error the
    stream stopped with (empty if it did not stop). ``row_image``: the writing sessions' binlog_row_image."""
    invalid_dates = cfg.get("invalid_dates", "text")
    await asyncio.to_thread(_create, db)
    before = await asyncio.to_thread(_oracle, db, invalid_dates)
    rows = sum(len(t) for t in before.values())
    fl = FullLoadConfig(max_full_load_subtasks=2, parallel_load_buffer_size=3, chunk_rows=100)
    src = MySQLSource(db.config(**cfg), migration_type="full-load-and-cdc", full_load=fl)
    await src.start(None)
    reader = Reader(src)
    stopped = ""
    try:
        await reader.wait_for(lambda r: len(r.events) >= rows, within=60, what="load rows")

        def cdc() -> dict[str, Any]:
            # table by table, so a value that stops the stream only costs the events after it
            after = {}
            for t in m.MATRIX:
                _execute(db, [f"UPDATE `{t.name}` SET `{t.tick}` = `{t.tick}` + 1"], row_image=row_image)
                if t.copyable:
                    _execute(db, [t.copy_statement()], LAX_MODE, row_image)
                after.update(_oracle(db, invalid_dates, [t]))
                _execute(db, [f"DELETE FROM `{t.name}`"], row_image=row_image)
            return after

        after = await asyncio.to_thread(cdc)
        # load and update of every row, insert of the copies, delete of all
        total = rows + 2 * sum(len(t) for t in after.values())
        try:
            await reader.wait_for(lambda r: len(r.events) >= total, within=60, what="CDC events")
        except SourceError as exc:  # a value the reader cannot decode: exit 3, never a skip
            stopped = str(exc)
    finally:
        await src.close()
        reader.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, SourceError):
            await reader.task
    events = reader.events
    assert [e.op for e in events[:rows]] == [Op.LOAD] * rows
    return events, before, after, stopped


def _verify(db: MyDb, events: list[ChangeEvent], before: Any, after: Any, stopped: str) -> None:
    """Step 4 of the module docstring, and one description of each table (column names, types and key) for its
    load and CDC records. Every cell must be right, in load and CDC records alike."""
    bad = _check(_records(db, events), before, after)
    loaded = {e.table.table: e.table for e in events if e.op is Op.LOAD}
    for ev in events:
        if ev.op is not Op.LOAD and ev.table != loaded[ev.table.table]:
            pairs = zip(loaded[ev.table.table].columns, ev.table.columns, strict=False)
            diff = [f"{a} != {b}" for a, b in pairs if a != b]
            bad.cells[(ev.table.table, "<table description>", "cdc")] = [f"load vs CDC: {'; '.join(diff)}"]
    if stopped:
        bad.cells[("<stream>", "<stopped>", "cdc")] = [stopped]
    load = {c for c in bad.cells if c[2] == "load"}
    assert not load, "load records differ from the server:\n" + bad.report(load)
    cdc = {c for c in bad.cells if c[2] != "load"}
    assert not cdc, "CDC records differ from the server:\n" + bad.report(cdc)


async def test_load_and_cdc_records_are_the_servers_values(my_db: MyDb) -> None:
    _verify(my_db, *await _load_and_cdc(my_db))


async def test_invalid_dates_null_is_the_dms_rendering(my_db: MyDb) -> None:
    """``invalid_dates = "null"``: the dates the calendar cannot hold are null, everything else unchanged."""
    _verify(my_db, *await _load_and_cdc(my_db, invalid_dates="null"))


# Types whose columns binlog_row_image = NOBLOB leaves out of an image when a change does not need them.
LOB_TYPES = ("blob", "text", "json", "geometry", "point")


def _check_partial(
    records: list[tuple[str, str, str, dict[str, Any]]],
    before: dict[str, dict[str, dict[str, Any]]],
    after: dict[str, dict[str, dict[str, Any]]],
    row_image: str,
) -> Mismatches:
    """CDC records written under a partial row image: every value a record holds is the server's, every column
    it lacks is listed in ``unchanged-columns`` (never silently missing), the key is always there, and with
    NOBLOB only BLOB/TEXT-like columns are ever left out. Every change has its record."""
    bad = Mismatches()
    seen = set()
    for table, op, key, doc in records:
        if op == "load":
            continue
        seen.add((table, op, key))
        spec = next(t for t in m.MATRIX if t.name == table)
        want = after[table].get(key)
        if want is None:
            bad.cells.setdefault((table, "<partition key>", op), []).append(f"unexpected record {key}: {doc}")
            continue
        data, unchanged = doc["data"], doc["metadata"].get("unchanged-columns", [])
        bad.compare(table, op, key, {c: want[c] for c in data if c in want}, data)
        listed = set(data) | set(unchanged)
        if listed != set(want) or set(data) & set(unchanged) or not set(spec.key) <= set(data):
            bad.cells.setdefault((table, "<columns>", op), []).append(
                f"row {key}: data has {sorted(data)}, unchanged-columns {unchanged}, the table {sorted(want)}"
            )
        types = {c.column: c.sql_type.lower() for c in spec.cases}
        if row_image == "NOBLOB" and any(not any(t in types[c] for t in LOB_TYPES) for c in unchanged):
            bad.cells.setdefault((table, "<noblob>", op), []).append(f"row {key}: left out {unchanged}")
        if op == "update":
            image = doc["before-image"]
            old = before[table][key]
            bad.compare(table, "update-before", key, {c: old[c] for c in image if c in old}, image)
            if not set(spec.key) <= set(image):
                bad.cells.setdefault((table, "<before-image key>", op), []).append(f"row {key}: {sorted(image)}")
    for spec in m.MATRIX:
        for key in after[spec.name]:
            for op in ("update" if key in before[spec.name] else "insert", "delete"):
                if (spec.name, op, key) not in seen:
                    bad.cells.setdefault((spec.name, "<record>", op), []).append(f"row {key}: no record")
    return bad


@pytest.mark.parametrize("row_image", ["MINIMAL", "NOBLOB"])
async def test_partial_row_images_hold_the_servers_values(my_db: MyDb, row_image: str) -> None:
    """The matrix's changes written by sessions with binlog_row_image = MINIMAL / NOBLOB (each image read by its
    own generated reader): what a record holds is the server's value, and what it lacks is listed, never
    silently missing (docs/mysql.md, "What the binlog may carry")."""
    events, before, after, stopped = await _load_and_cdc(my_db, row_image)
    assert not stopped, stopped
    records = _records(my_db, events)
    # not vacuous: the sessions' setting took effect (MINIMAL leaves out nearly every column of an update or a
    # delete, NOBLOB the unchanged BLOB/TEXT columns of an update)
    partial = {(t, op) for t, op, _k, doc in records if doc["metadata"].get("unchanged-columns")}
    assert {("txt", "update"), ("oth", "update")} <= partial, sorted(partial)
    bad = _check_partial(records, before, after, row_image)
    assert not bad.cells, f"CDC records under {row_image} differ from the server:\n" + bad.report(set(bad.cells))


def _engine(db: MyDb, invalid_dates: str = "text", chunk_rows: int = 5) -> MyLoadEngine:
    return MyLoadEngine(
        lambda: connection_settings(db.config()),
        mariadb=True,
        want_position=False,
        selector=lambda s, t: s == db.name,
        chunk_rows=chunk_rows,
        buffer_size=2,
        no_hex_prefix=False,
        where="test",
        invalid_dates=invalid_dates,
    )


@pytest.mark.parametrize("invalid_dates", ["text", "null"])
async def test_every_load_path_renders_the_servers_values(
    my_db: MyDb, monkeypatch: pytest.MonkeyPatch, invalid_dates: str
) -> None:
    """The load's three ways of rendering rows, each against the server: row packets rendered in a mapping
    worker (``read(raw=True)``, after a pickle round trip) or in the session's thread, and PyMySQL's own row
    parsing (when the packet reads are off); in keyset pages of 5 rows (the UUID/INET/BINARY key of ``k``
    included), and with ``PAD_CHAR_TO_FULL_LENGTH`` in the server's default sql_mode, which must not pad CHAR
    values in load rows (the binlog has them unpadded)."""
    await asyncio.to_thread(_create, my_db)
    expected = await asyncio.to_thread(_oracle, my_db, invalid_dates)
    engine = _engine(my_db, invalid_dates)
    [(default_mode,)] = my_db.server.execute("SELECT @@GLOBAL.sql_mode")
    my_db.server.execute("SET GLOBAL sql_mode = 'PAD_CHAR_TO_FULL_LENGTH'")
    try:
        await engine.open(1, fresh=True)  # the sessions take the global sql_mode when they connect
    finally:
        my_db.server.execute("SET GLOBAL sql_mode = %s", params=(default_mode,))
    bad = Mismatches()
    try:
        specs = {s.info.table: s for s in await engine.tables()}
        for table in m.MATRIX:
            for path, raw, packets in (("worker", True, True), ("thread", False, True), ("pymysql", False, False)):
                monkeypatch.setattr(snapshot, "RAW_READS", packets)
                chunks = await _read_all(engine, specs[table.name], raw=raw)
                got = {m.partition_key(table, row): row for rows, _ in chunks for row in rows}
                assert got.keys() == expected[table.name].keys(), (table.name, path)
                for key, row in expected[table.name].items():
                    bad.compare(table.name, f"load ({path})", key, row, got[key])
    finally:
        await engine.close()
    assert not bad.cells, "load rows differ from the server:\n" + bad.report(set(bad.cells))


async def test_float_keys_page_on_exact_values(my_db: MyDb) -> None:
    """A FLOAT key pages on the float's exact value. Its 6-digit text as the last key of a page would skip the
    rows between the value and that rounding (1.234569 after 1.2345678, read as ``1.23457``), or read a page
    again and again (16777216, read as ``16777200``)."""
    values = ["1.2345678", "1.234569", "1.23457", "-3.4028234e38", "16777217", "16777218", "2"]
    my_db.execute("CREATE TABLE fk (f float PRIMARY KEY, n int)")
    my_db.execute("INSERT INTO fk VALUES " + ", ".join(f"({v}, {i})" for i, v in enumerate(values)))
    engine = _engine(my_db, chunk_rows=1)
    await engine.open(1, fresh=True)
    got: list[int] = []
    try:
        [spec] = await engine.tables()
        async for chunk in engine.read(0, spec, Segment(spec.name), None):
            got += [row["n"] for row in chunk.rows]
            assert len(got) <= len(values), f"rows read again: {got}"
    finally:
        await engine.close()
    assert sorted(got) == list(range(len(values)))
