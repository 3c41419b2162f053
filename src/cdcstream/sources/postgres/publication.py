"""The publication: which tables' changes pgoutput sends, and whether every table the mapping selects is among
them, including tables created while CDC runs.

* cdcstream creates it (when missing and permitted) ``FOR ALL TABLES`` (a superuser without a mapping file) or
  ``FOR TABLE`` the selected tables, always ``WITH (publish_via_partition_root = true)``: a partitioned table's
  rows, of every partition present or future, arrive under the partitioned table's name, the name the mapping
  selects and the full load reads.
* New tables get in by themselves with ``FOR ALL TABLES``, with ``FOR TABLES IN SCHEMA`` (for those schemas), or
  through DDL capture (``cdcstream setup postgres-ddl``), whose trigger adds each new selected table with a
  replica identity in its creating transaction: :func:`register_selection` tells it what the mapping selects.
* :func:`uncaptured_tables` names every selected table whose changes cannot reach the stream, with the reason and
  the fix. The daemon runs it at start and every ``table_check_interval`` seconds (log, metric, ``/status``),
  ``cdcstream check`` once: a table nothing captures is named, never silently missed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg

from cdcstream.sources.postgres import ddl
from cdcstream.sources.postgres.replication import quote_ident

Selector = Callable[[str, str], bool] | None


def qualified(schema: str, table: str) -> str:
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def publication_sql(name: str, tables: Sequence[tuple[str, str]] | None, *, generated: bool = False) -> str:
    """The CREATE PUBLICATION statement for ``tables`` (None: FOR ALL TABLES); ``generated``: with stored generated
    columns (PostgreSQL 18+)."""
    pub = quote_ident(name)
    options = " WITH (publish_via_partition_root = true" + (
        ", publish_generated_columns = stored)" if generated else ")"
    )
    if tables is None:
        return f"CREATE PUBLICATION {pub} FOR ALL TABLES{options};"
    if not tables:
        return f"CREATE PUBLICATION {pub}{options};"
    return f"CREATE PUBLICATION {pub} FOR TABLE {', '.join(qualified(s, t) for s, t in tables)}{options};"


#: The first server version whose pgoutput can send generated columns.
GENERATED_COLUMNS_VERSION = 180000


def generated_columns_problem(
    publication: str, want: bool, server_version: int, version_text: str, publishes: bool | None
) -> tuple[str, str] | None:
    """Why the ``publish_generated_columns`` setting (``want``) cannot hold on this server, and the fix; or None.
    ``publishes``: whether the existing publication sends stored generated columns (None: no such publication,
    or a server before 18)."""
    if not want:
        return None
    if server_version < GENERATED_COLUMNS_VERSION:
        return (
            f"publish_generated_columns = true needs PostgreSQL 18 or newer, the server is PostgreSQL "
            f"{version_text}: its pgoutput never sends generated columns",
            "set publish_generated_columns = false in [source] (records then leave generated columns out), or "
            "upgrade the server",
        )
    if publishes is False:
        return (
            f"publish_generated_columns = true, but publication {publication} does not publish generated columns "
            "(cdcstream never changes an existing publication's options)",
            f"as its owner: ALTER PUBLICATION {quote_ident(publication)} SET (publish_generated_columns = stored);",
        )
    return None


async def publishes_generated(conn: psycopg.AsyncConnection[Any], publication: str) -> bool | None:
    """Whether ``publication`` sends stored generated columns (PostgreSQL 18's pubgencols); None when it does not
    exist or the server is older."""
    if conn.info.server_version < GENERATED_COLUMNS_VERSION:
        return None
    row = await (
        await conn.execute("SELECT pubgencols = 's' FROM pg_publication WHERE pubname = %s", (publication,))
    ).fetchone()
    return None if row is None else bool(row[0])


@dataclass(frozen=True, slots=True)
class Uncaptured:
    """A selected table whose changes cannot reach the stream, why, and what fixes it."""

    schema: str
    table: str
    reason: str
    fix: str

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_json(self) -> dict[str, str]:
        return {"table": self.name, "reason": self.reason, "fix": self.fix}


# Every user table (the set a publication or a load covers) with what decides whether its changes are sent:
# listed by pg_publication_tables (which resolves FOR ALL TABLES, FOR TABLES IN SCHEMA and partitions as the
# server publishes them), explicitly a member, a replica identity, unlogged, and for a partitioned table the
# partitions published under their own names (publish_via_partition_root off).
_COVERAGE_SQL = """
WITH published AS MATERIALIZED (
  SELECT schemaname::text AS s, tablename::text AS t FROM pg_publication_tables WHERE pubname = %(pub)s)
SELECT n.nspname::text, c.relname::text, c.relpersistence::text, pub.s IS NOT NULL,
       EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication pb ON pb.oid = r.prpubid
               WHERE pb.pubname = %(pub)s AND r.prrelid = c.oid),
       c.relreplident = 'f'
       OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
       OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)),
       CASE WHEN c.relkind = 'p' THEN ARRAY(
         SELECT ARRAY[ln.nspname::text, lc.relname::text]
         FROM pg_partition_tree(c.oid) pt JOIN pg_class lc ON lc.oid = pt.relid
         JOIN pg_namespace ln ON ln.oid = lc.relnamespace
         WHERE pt.isleaf AND EXISTS (SELECT 1 FROM published p WHERE p.s = ln.nspname AND p.t = lc.relname))
       END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN published pub ON pub.s = n.nspname AND pub.t = c.relname
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cdcstream') AND n.nspname NOT LIKE 'pg\\_toast%%'
  AND n.nspname NOT LIKE 'pg\\_temp%%'
ORDER BY 1, 2
"""


async def uncaptured_tables(
    conn: psycopg.AsyncConnection[Any], publication: str, selector: Selector, *, ddl_capture: bool = False
) -> list[Uncaptured]:
    """Every selected table whose changes cannot reach the stream through ``publication``. ``ddl_capture``:
    the publication is registered with DDL capture (a table without replica identity is then waiting for one)."""
    row = await (
        await conn.execute("SELECT pubviaroot FROM pg_publication WHERE pubname = %s", (publication,))
    ).fetchone()
    via_root = bool(row and row[0])
    rows = await (await conn.execute(_COVERAGE_SQL, {"pub": publication})).fetchall()
    pub = quote_ident(publication)
    out: list[Uncaptured] = []
    for schema, table, persistence, published, member, identity, leaves in rows:
        if selector is not None and not selector(schema, table):
            continue
        name, q = f"{schema}.{table}", qualified(schema, table)
        if persistence == "u":
            out.append(
                Uncaptured(
                    schema,
                    table,
                    "unlogged: PostgreSQL writes no WAL for its changes, so logical decoding never sees them",
                    f"ALTER TABLE {q} SET LOGGED;",
                )
            )
        elif published:
            continue
        elif leaves or (member and not via_root):
            # A member, published partition by partition under the partitions' own names.
            foreign = [f"{s}.{t}" for s, t in leaves or () if selector is not None and not selector(s, t)]
            if foreign:
                out.append(
                    Uncaptured(
                        schema,
                        table,
                        f"publication {publication} has publish_via_partition_root off, so its partitions' rows "
                        f"arrive under their own names, which the mapping does not select ({', '.join(foreign[:5])})",
                        f"ALTER PUBLICATION {pub} SET (publish_via_partition_root = true);  -- rows then arrive as "
                        f"{name}",
                    )
                )
        else:
            reason = f"not in publication {publication}"
            if ddl_capture and not identity:
                reason += (
                    ": it has no primary key or replica identity, and DDL capture adds a table only once it has "
                    "one (in a publication without one, PostgreSQL refuses the table's UPDATEs and DELETEs)"
                )
            out.append(
                Uncaptured(
                    schema,
                    table,
                    reason,
                    f"ALTER PUBLICATION {pub} ADD TABLE {q};  -- as the owner of both (or a superuser); rows written "
                    f"before are copied with cdcstream reload --table {name}",
                )
            )
    return out


async def all_tables(conn: psycopg.AsyncConnection[Any], publication: str) -> bool:
    """Whether ``publication`` is FOR ALL TABLES."""
    row = await (
        await conn.execute("SELECT puballtables FROM pg_publication WHERE pubname = %s", (publication,))
    ).fetchone()
    return bool(row and row[0])


async def published_schemas(conn: psycopg.AsyncConnection[Any], publication: str) -> list[str]:
    """The schemas ``publication`` covers FOR TABLES IN SCHEMA (PostgreSQL 15+; none before)."""
    row = await (await conn.execute("SELECT to_regclass('pg_catalog.pg_publication_namespace') IS NOT NULL")).fetchone()
    if not (row and row[0]):
        return []
    rows = await (
        await conn.execute(
            "SELECT n.nspname FROM pg_publication_namespace pn JOIN pg_publication p ON p.oid = pn.pnpubid "
            "JOIN pg_namespace n ON n.oid = pn.pnnspid WHERE p.pubname = %s ORDER BY 1",
            (publication,),
        )
    ).fetchall()
    return [str(r[0]) for r in rows]


#: The selection of every table, in the form :func:`register_selection` takes (``mapping.rules`` gives the same
#: for a mapping without selection rules).
EVERY_TABLE: dict[str, Any] = {"include": True, "schema": "^.*$", "table": "^.*$"}


async def register_selection(
    conn: psycopg.AsyncConnection[Any], publication: str, selection: list[dict[str, Any]]
) -> str:
    """Tell DDL capture which new tables to add to ``publication`` ('registered' or 'unchanged'). Raises
    psycopg errors: ``UndefinedFunction`` / ``InsufficientPrivilege`` on the schema when DDL capture is missing
    or older than this version, ``InsufficientPrivilege`` when the role does not own the publication."""
    row = await (await conn.execute(ddl.REGISTER_SQL, (publication, orjson.dumps(selection).decode()))).fetchone()
    return str(row[0]) if row else "unchanged"
