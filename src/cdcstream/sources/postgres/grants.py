"""What the daemon's role may read: ``SELECT`` on the tables a full load or ``reload --table`` copies, and the
``GRANT`` statements that fix it when it may not.

Streaming needs no ``SELECT`` (the walsender reads the WAL), so a role can capture a table it cannot copy; the
server's own privilege functions say which (``has_schema_privilege`` for the schema, ``has_column_privilege`` for
every column the copy reads, which also honours column-level grants).
"""

from __future__ import annotations

from typing import Any

import psycopg

from cdcstream.sources.postgres.replication import quote_ident

# Per user table (the same set a publication or a load covers): USAGE on its schema, SELECT on all its columns.
_PRIVILEGES_SQL = """
SELECT n.nspname, c.relname, has_schema_privilege(n.oid, 'USAGE'),
       NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND NOT has_column_privilege(c.oid, a.attnum, 'SELECT'))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cdcstream') AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp%%'
"""
_ONE_TABLE = " AND n.nspname = %s AND c.relname = %s"


def grant_statements(user: str, tables: list[tuple[str, str, bool, bool]]) -> list[str]:
    """The GRANTs that let ``user`` read ``(schema, table, has USAGE, has SELECT)``, one per schema and table."""
    role = quote_ident(user)
    schemas = sorted({s for s, _, usage, _ in tables if not usage})
    out = [f"GRANT USAGE ON SCHEMA {quote_ident(s)} TO {role};" for s in schemas]
    out += [f"GRANT SELECT ON {quote_ident(s)}.{quote_ident(t)} TO {role};" for s, t, _, ok in tables if not ok]
    return out


async def unreadable_tables(
    conn: psycopg.AsyncConnection[Any], table: tuple[str, str] | None = None
) -> list[tuple[str, str, bool, bool]]:
    """``(schema, table, has USAGE, has SELECT)`` of the user tables the connected role cannot read entirely
    (only ``table``'s, when given)."""
    query, params = (_PRIVILEGES_SQL, None) if table is None else (_PRIVILEGES_SQL + _ONE_TABLE, table)
    rows = await (await conn.execute(query, params)).fetchall()
    return [(s, t, bool(usage), bool(ok)) for s, t, usage, ok in rows if not (usage and ok)]


async def table_exists(conn: psycopg.AsyncConnection[Any], schema: str, table: str) -> bool:
    """Whether ``schema.table`` is a table (or partitioned table) of the database."""
    row = await (
        await conn.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
            (schema, table),
        )
    ).fetchone()
    return row is not None


async def copy_problem(
    conn: psycopg.AsyncConnection[Any], user: str, database: str, schema: str, table: str
) -> str | None:
    """Why a copy of ``schema.table`` (``reload --table``) cannot read it, with the fix, or None."""
    if not await table_exists(conn, schema, table):
        return f"table {schema}.{table} does not exist in database {database!r}"
    denied = await unreadable_tables(conn, (schema, table))
    if not denied:
        return None
    return (
        f"role {user!r} may not SELECT {schema}.{table}, which the copy reads (streaming it needs no SELECT, "
        f"copying it does). As its owner or a superuser: {' '.join(grant_statements(user, denied))}"
    )
