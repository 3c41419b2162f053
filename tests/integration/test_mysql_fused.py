"""The compiled fused row path for MySQL/MariaDB against the reference path on a real server, over the type
matrix (tests/support/mysql_types.py, the server as the oracle).

The matrix tables are created and filled, and so are the same cases regrouped into tables of only the types the
compiled code renders (one other column keeps a table on the reference path). Then sources read the binlog from
there, in pairs - one with the mapper's fused hook, one without - under three mappings (``primary-key`` keys with
NULLs kept; the same with the ``schema.table.`` prefix, the key in the metadata and NULLs left out; the default
``schema-table`` key), while every row is updated, copied (inserts) and deleted. Each pair's records must be byte
for byte the same, partition keys included (the stream stops at the same value with the same error, if it
stops); where the extension is built, the fused source must have rendered the rows of the compiled-type tables
itself; and its records' data must be the rule over the server's answer for every cell.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson
import pytest

from cdcstream.changes import ChangeEvent
from cdcstream.config import TargetConfig
from cdcstream.errors import SourceError
from cdcstream.mapping import envelope
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.sources.mysql import MySQLSource, fused
from tests.integration.test_mysql_oracle import LAX_MODE, Mismatches, _create, _execute, _oracle
from tests.support import mysql_types as m
from tests.support.mysql import MyDb
from tests.support.reader import Reader

pytestmark = pytest.mark.timeout(180)

# Column types the compiled code renders (sources/mysql/fused.py): the server's default charset is utf8mb4.
_COMPILED_TYPES = frozenset(
    [
        "tinyint",
        "smallint",
        "mediumint",
        "int",
        "bigint",
        "decimal",
        "double",
        "float",
        "date",
        "datetime",
        "timestamp",
        "year",
        "char",
        "varchar",
        "tinytext",
        "text",
        "mediumtext",
        "longtext",
        "binary",
        "varbinary",
        "tinyblob",
        "blob",
        "mediumblob",
        "longblob",
    ]
)


def _compiled(case: m.Case) -> bool:
    word = case.sql_type.split("(")[0].split()[0]
    charset = case.sql_type.partition("character set ")[2].split()[:1]
    return word in _COMPILED_TYPES and charset in ([], ["utf8mb3"], ["binary"])


FUSED = [
    m.matrix_table(f"f{name}", [c for c in cases if _compiled(c)])
    for name, cases in m.TABLES.items()
    if name in ("num", "dat", "txt")
]
TABLES = [*m.MATRIX, *FUSED]

# name -> (primary-key object mapping?, TargetConfig settings)
MAPPINGS: dict[str, tuple[bool, dict[str, Any]]] = {
    "primary-key": (True, {"include_null_and_empty": True}),
    "primary-key+schema-table+value": (
        True,
        {"partition_include_schema_table": True, "include_partition_value": True, "include_transaction_details": True},
    ),
    "default": (False, {"include_null_and_empty": True}),
}


def _mapper(db: MyDb, name: str) -> Mapper:
    primary_key, settings = MAPPINGS[name]
    rules: list[dict[str, Any]] = [
        {
            "rule-type": "selection",
            "rule-id": "1",
            "rule-name": "1",
            "object-locator": {"schema-name": db.name, "table-name": "%"},
            "rule-action": "include",
        }
    ]
    if primary_key:
        rules.append(
            {
                "rule-type": "object-mapping",
                "rule-id": "2",
                "rule-name": "2",
                "rule-action": "map-record-to-record",
                "object-locator": {"schema-name": db.name, "table-name": "%"},
                "mapping-parameters": {"partition-key-type": "primary-key"},
            }
        )
    target = TargetConfig(stream_name="s", message_format="json-unformatted", **settings)
    return Mapper(parse_rules({"rules": rules}, "fused test"), target, "fused")


def _cdc(db: MyDb) -> dict[str, dict[str, dict[str, Any]]]:
    """Every row updated, copied and deleted, table by table; the server's answer for the rows after the updates
    and copies (what the update, insert and delete records carry)."""
    after = {}
    for t in TABLES:
        _execute(db, [f"UPDATE `{t.name}` SET `{t.tick}` = `{t.tick}` + 1"])
        if t.copyable:
            _execute(db, [t.copy_statement()], LAX_MODE)
        after.update(_oracle(db, "text", [t]))
        _execute(db, [f"DELETE FROM `{t.name}`"])
    return after


async def _read(db: MyDb) -> tuple[dict[tuple[str, bool], tuple[list[ChangeEvent], str]], Any]:
    """For each mapping and path (fused hook or not): the source's events and the error it stopped with ("" if it
    did not stop); and the server's answer after the changes."""
    await asyncio.to_thread(_create, db)
    await asyncio.to_thread(_execute, db, [s for t in FUSED for s in t.statements])
    readers: dict[tuple[str, bool], Reader] = {}
    try:
        for name in MAPPINGS:
            for compiled in (True, False):
                mapper = _mapper(db, name)
                hook = mapper.fused_columns if compiled else None
                src = MySQLSource(db.config(), selector=mapper.selects, migration_type="cdc", fuse=hook)
                await src.start(None)
                readers[name, compiled] = Reader(src)
        after = await asyncio.to_thread(_cdc, db)
        total = 2 * sum(len(t) for t in after.values())  # update or insert of every row after, delete of each
        out = {}
        for key, reader in readers.items():
            stopped = ""
            try:
                await reader.wait_for(lambda r: len(r.events) >= total, within=60, what="CDC events")
            except SourceError as exc:  # a value the reader cannot decode: the same stop on both paths
                stopped = str(exc)
            out[key] = (reader.events, stopped)
        return out, after
    finally:
        for reader in readers.values():
            await reader.source.close()
            reader.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, SourceError):
                await reader.task


async def test_fused_records_are_the_reference_records_and_the_servers_values(
    my_db: MyDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envelope, "now_iso", lambda: "2026-12-07T10:00:00.000000Z")
    got, after = await _read(my_db)
    for name in MAPPINGS:
        (fused_events, fused_stop), (pure_events, pure_stop) = got[name, True], got[name, False]
        assert fused_stop == pure_stop, name
        assert not any(e.fused is not None for e in pure_events)
        # where the extension is built, every row of the compiled-type tables is rendered by it
        if fused.available():
            compiled_tables = {e.table.table for e in fused_events if e.fused is not None}
            assert {t.name for t in FUSED} <= compiled_tables, name
        fused_records = _mapper(my_db, name).map(fused_events)
        pure_records = _mapper(my_db, name).map(pure_events)
        assert [(r.partition_key, r.data) for r in fused_records] == [(r.partition_key, r.data) for r in pure_records]
    # the compiled path's records against the server: every cell of every insert, update and delete
    bad = Mismatches()
    fused_rows = [e for e in got["primary-key", True][0] if e.table.table in {t.name for t in FUSED}]
    assert len(fused_rows) == 2 * sum(len(after[t.name]) for t in FUSED)
    for rec in _mapper(my_db, "primary-key").map(fused_rows):
        doc = orjson.loads(rec.data)
        table, op = doc["metadata"]["table-name"], doc["metadata"]["operation"]
        expected = after[table].get(rec.partition_key)
        if expected is None:
            bad.cells.setdefault((table, "<partition key>", op), []).append(f"unexpected record {rec.partition_key}")
        else:
            bad.compare(table, op, rec.partition_key, expected, doc["data"])
    assert not bad.cells, "compiled records differ from the server:\n" + bad.report(set(bad.cells))
