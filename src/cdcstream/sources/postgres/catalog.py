"""The PostgreSQL catalogue queries the source needs: which user tables there are (what a publication or a full load
can cover), their primary keys, their columns for a load, and the descriptions of the types their values have
(read into the decoder's ``values.TypeRegistry``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from structlog.typing import FilteringBoundLogger

from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.sources.postgres.connection import Session
from cdcstream.sources.postgres.values import PgType, TypeRegistry

#: The user tables a publication or a full load can cover (partitions through their root), ordered by name.
USER_TABLES_FROM = """
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cdcstream') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""

USER_TABLES_SQL = "SELECT n.nspname, c.relname" + USER_TABLES_FROM

# Every ordinary or partitioned user table with its columns, the replica-identity key (what pgoutput flags as
# key: the primary key, or the REPLICA IDENTITY USING INDEX columns) and a keyset key (the primary key, else a
# unique index over NOT NULL columns without expressions or predicate).
LOAD_TABLES_SQL = (
    """
SELECT n.nspname::text, c.relname::text, c.reltuples::float8,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       ARRAY(SELECT a.atttypid::int8 FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = c.oid
           AND (CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END)),
       (SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indexrelid = (
           SELECT i2.indexrelid FROM pg_index i2
            WHERE i2.indrelid = c.oid AND i2.indisunique AND i2.indisvalid AND i2.indpred IS NULL
              AND NOT 0 = ANY(i2.indkey::int2[])
              AND NOT EXISTS (SELECT 1 FROM pg_attribute a2 WHERE a2.attrelid = c.oid
                              AND a2.attnum = ANY(i2.indkey) AND NOT a2.attnotnull)
            ORDER BY i2.indisprimary DESC, i2.indnatts, i2.indexrelid LIMIT 1))"""
    + USER_TABLES_FROM
)

# One round of type descriptions for the decoder's TypeRegistry (values.PgType). Referenced types (array
# elements, domain bases, composite attributes) are fetched in further rounds until the closure is known.
_TYPES_SQL = """
SELECT t.oid::int8, n.nspname::text, t.typname::text, t.typtype::text, t.typoutput = 'array_out'::regproc,
       t.typelem::int8, t.typbasetype::int8, t.typdelim::text,
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       ARRAY(SELECT a.atttypid::int8 FROM pg_attribute a
             WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = ANY(%s::oid[])
"""

_PRIMARY_KEYS_SQL = """
SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum))
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY(i.indkey)
WHERE i.indisprimary AND n.nspname NOT IN ('pg_catalog', 'information_schema')
GROUP BY 1, 2
"""

#: Rounds of type descriptions at most (a type's references nest no deeper in practice).
TYPE_ROUNDS = 16


async def user_tables(
    conn: psycopg.AsyncConnection[Any], selector: Callable[[str, str], bool] | None = None
) -> list[tuple[str, str]]:
    """(schema, table) of every user table ``selector`` selects (all without one), ordered by name."""
    rows = await (await conn.execute(USER_TABLES_SQL)).fetchall()
    return [(s, t) for s, t in rows if selector is None or selector(s, t)]


async def primary_keys(conn: psycopg.AsyncConnection[Any]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Every user table's primary key columns, in key order."""
    rows = await (await conn.execute(_PRIMARY_KEYS_SQL)).fetchall()
    return {(s, t): tuple(cols) for s, t, cols in rows}


async def describe_types(conn: psycopg.AsyncConnection[Any], types: TypeRegistry, oids: set[int]) -> list[int]:
    """Read ``pg_type`` for these OIDs, and what they reference, into ``types``. Returns the OIDs the catalogue no
    longer has (dropped since the change was written): they are registered as text types."""
    todo = set(oids)
    gone_all: list[int] = []
    rounds = 0
    while todo and rounds < TYPE_ROUNDS:
        rounds += 1
        rows = await (await conn.execute(_TYPES_SQL, (sorted(todo),))).fetchall()
        found = [
            PgType(oid, ns, name, kind, bool(is_array), elem, base, delim, tuple(zip(anames, atypes, strict=True)))
            for oid, ns, name, kind, is_array, elem, base, delim, anames, atypes in rows
        ]
        gone = todo - {t.oid for t in found}
        if gone:
            gone_all += sorted(gone)
            found += [PgType(oid, "", str(oid), "b", False) for oid in gone]
        types.add(found)
        todo = types.missing(oids)
    return gone_all


async def read_types(session: Session, types: TypeRegistry, oids: set[int], log: FilteringBoundLogger) -> None:
    """:func:`describe_types` on the source's normal connection.

    A connection failure raises SourceConnectionError, so the batch is dropped and re-read after the reconnect
    (the server re-sends from the last yielded commit). A type the catalog no longer has (dropped since the
    change was written) is rendered as its text, with a warning."""
    try:
        gone = await describe_types(await session.get(), types, oids)
    except psycopg.OperationalError as exc:
        await session.reset()
        raise SourceConnectionError(f"reading type descriptions failed: {str(exc).strip()}") from None
    except psycopg.Error as exc:
        raise SourceError(f"reading type descriptions from pg_type failed: {str(exc).strip()}") from None
    if gone:
        log.warning("types not in the catalog, rendered as text", oids=gone)
