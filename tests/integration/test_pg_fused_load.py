"""Full-load records rendered straight from the server's COPY text (compiled, ``render_copy``) against the
reference path on a real server.

A ``full-load`` source reads the tables; its offload hook keeps every raw chunk (the COPY text block a mapping
worker would get) and hands it back undecoded, so the source decodes each chunk itself and yields its rows. The
rows mapped in process (``Mapper.map``, entries as the sink builds them) are the reference; each kept chunk
mapped as a worker maps it (``map_chunk``: compiled where eligible) must give the same partition keys, records
and entries. Run once as built and once with ``CDCSTREAM_PURE=1``. Tables: every compiled type with the values
of tests/integration/test_pg_fused.py (including those the compiled code leaves to the reference path), a
composite text/timestamptz/int/bytea key with an empty and a 300-character key, a keyless table, a table without
columns, and the whole
type matrix (arrays, composites, hstore...: the reference path).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cdcstream.changes import ChangeEvent, MappedRows, RawRows, TableInfo
from cdcstream.config import FullLoadConfig, TargetConfig
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.records import put_records_entry
from cdcstream.sinks.kinesis import effective_partition_key
from cdcstream.sources.postgres import fused
from cdcstream.sources.postgres.snapshot import CopyBlock
from cdcstream.workers.pool import map_chunk
from tests.integration.test_pg_fused import PK_ROWS, PK_TABLE, ROWS, TABLE
from tests.integration.test_pg_fused import pure as pure  # the fixture: as built and with CDCSTREAM_PURE=1
from tests.support import pg_types
from tests.support.postgres import PgDb
from tests.support.reader import open_reader

pytestmark = pytest.mark.timeout(180)


def _tables(pg_db: PgDb) -> None:
    pg_db.execute(TABLE)
    for stmt in ROWS:
        if stmt.startswith("INSERT"):
            pg_db.execute(stmt)
    pg_db.execute("INSERT INTO fz (id, t) SELECT g, 'row ' || g || E'\\t\\\\' FROM generate_series(10, 40) g")
    pg_db.execute(PK_TABLE)
    for stmt in PK_ROWS:
        if stmt.startswith("INSERT"):
            pg_db.execute(stmt)
    pg_db.execute("CREATE TABLE nokey (a int, b text)")
    pg_db.execute("INSERT INTO nokey VALUES (1, 'x'), (NULL, NULL), (3, E'\\n')")
    # a table without columns still has rows (COPY writes each as an empty line: the load failed on it)
    pg_db.execute("CREATE TABLE nocols (); INSERT INTO nocols DEFAULT VALUES; INSERT INTO nocols DEFAULT VALUES")
    pg_types.prepare(pg_db)
    for row in range(pg_types.ROWS):
        pg_db.execute(pg_types.insert_sql(row))
    pg_db.execute("INSERT INTO types (id) VALUES (99)")


async def _load(pg_db: PgDb, buffer: int) -> tuple[list[ChangeEvent], list[tuple[TableInfo, CopyBlock]]]:
    """The load's rows as the source decoded them, and the raw chunks it read (in read order per session)."""
    chunks: list[tuple[TableInfo, CopyBlock]] = []

    async def keep(info: TableInfo, raw: RawRows) -> MappedRows | None:
        assert isinstance(raw, CopyBlock)
        chunks.append((info, raw))
        return None  # the source decodes it itself: the reference rows

    full_load = FullLoadConfig(max_full_load_subtasks=2, parallel_load_buffer_size=buffer)
    reader = await open_reader(pg_db.config(), migration_type="full-load", full_load=full_load, offload=keep)
    try:
        async with asyncio.timeout(60):
            await reader.task  # a full-load source ends after the load
    finally:
        await reader.stop()
    return reader.events, chunks


Out = list[tuple[str, bytes, bytes]]


def _reference(mapper: Mapper, events: list[ChangeEvent]) -> Out:
    records = mapper.map(events)
    return [
        (r.partition_key, r.data, put_records_entry(r.data, effective_partition_key(r.partition_key))) for r in records
    ]


def _workers(mapper: Mapper, chunks: list[tuple[TableInfo, CopyBlock]]) -> tuple[Out, int, int]:
    """The chunks mapped as a worker maps them; how many of their parts (chunks of parts: loadengine.Chunk.parts)
    the compiled path rendered, and of how many (a worker retries a chunk part by part where it cannot render all
    of it at once)."""
    out: Out = []
    rendered = parts = 0
    for info, raw in chunks:
        layout = mapper.load_layout(info)
        for part in raw.split():
            parts += 1
            rendered += layout is not None and part.render_records(layout) is not None
        got = map_chunk(mapper, info, raw)
        assert got is not None
        keys, datas, entries, _ = got
        out.extend(zip(keys, datas, entries, strict=True))
    return out, rendered, parts


MAPPINGS: dict[str, tuple[MappingRules, dict[str, Any]]] = {
    "default": (MappingRules(), {}),
    "renamed, prefixed, no nulls": (
        parse_rules(
            {
                "rules": [
                    {
                        "rule-type": "selection",
                        "rule-id": "1",
                        "rule-name": "all",
                        "object-locator": {"schema-name": "%", "table-name": "%"},
                        "rule-action": "include",
                    },
                    {
                        "rule-type": "transformation",
                        "rule-id": "2",
                        "rule-name": "up",
                        "rule-action": "convert-uppercase",
                        "rule-target": "column",
                        "object-locator": {"schema-name": "%", "table-name": "%", "column-name": "%"},
                    },
                ]
            },
            "rules.json",
        ),
        {"partition_include_schema_table": True, "include_null_and_empty": False},
    ),
}


@pytest.mark.parametrize("mapping", list(MAPPINGS))
async def test_load_records_identical_on_a_real_server(pg_db: PgDb, pure: bool, mapping: str) -> None:
    _tables(pg_db)
    events, chunks = await _load(pg_db, buffer=3)
    rules, extra = MAPPINGS[mapping]
    target = TargetConfig(stream_name="s", message_format="json-unformatted", **extra)
    reference = _reference(Mapper(rules, target, "task"), events)
    workers, rendered, parts = _workers(Mapper(rules, target, "task"), chunks)
    # Sessions interleave their chunks differently in the two lists; each record, key and entry is the same.
    assert sorted(workers) == sorted(reference)
    assert len(reference) == len(events) == 4 + 31 + 4 + 3 + 2 + pg_types.ROWS + 1
    keys = {k for k, _, _ in reference}
    prefix = "public.fzk." if extra else ""
    assert f"{prefix}.2026-12-07T10:00:00Z.0.0x" in keys  # the empty text key part
    assert any(len(k) > 256 for k in keys)  # its entry carries the digest the sink sends
    assert "public.nokey" in keys
    assert next(d for k, d, _ in reference if k == "public.nocols").startswith(b'{"data":{},')
    if pure or not fused.path_name().startswith("compiled"):
        assert rendered == 0
    else:
        assert rendered > parts // 2  # the type matrix and chunks with BC or infinite timestamps: reference
