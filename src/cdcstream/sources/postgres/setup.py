"""What the PostgreSQL source verifies and creates before it streams (besides the slot, ``slot.py``): the server
settings and the role's privileges, the publication, and how tables created while CDC runs reach it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from structlog.typing import FilteringBoundLogger

from cdcstream.config import PostgresSourceConfig
from cdcstream.errors import SourceError
from cdcstream.sources.postgres import ddl
from cdcstream.sources.postgres.catalog import user_tables
from cdcstream.sources.postgres.failover import standby_problem
from cdcstream.sources.postgres.publication import (
    all_tables,
    generated_columns_problem,
    publication_sql,
    published_schemas,
    publishes_generated,
    register_selection,
)
from cdcstream.sources.postgres.replication import quote_ident

#: The oldest server the source streams from: pgoutput's ``messages`` option, which carries the heartbeats and
#: the DDL capture's records, is PostgreSQL 14's.
MIN_SERVER_VERSION = 140000


def version_problem(server_version: int, version_text: str) -> str | None:
    """Why the source cannot stream from a server of this version, or None."""
    if server_version >= MIN_SERVER_VERSION:
        return None
    return (
        f"PostgreSQL 14 or newer is required, the server is PostgreSQL {version_text}: cdcstream reads logical "
        "messages (heartbeats, DDL capture) from pgoutput, which sends them from PostgreSQL 14"
    )


async def check_server(conn: psycopg.AsyncConnection[Any], cfg: PostgresSourceConfig) -> bool:
    """The server version is supported, ``wal_level`` is logical and the role may replicate; returns whether the
    role is a superuser."""
    problem = version_problem(conn.info.server_version, conn.info.parameter_status("server_version") or "?")
    if problem is not None:
        raise SourceError(problem)
    row = await (await conn.execute("SELECT pg_is_in_recovery()")).fetchone()
    standby = standby_problem(conn.info.server_version, bool(row and row[0]))
    if standby is not None:
        raise SourceError(standby)
    row = await (await conn.execute("SELECT current_setting('wal_level')")).fetchone()
    wal_level = row[0] if row else "?"
    if wal_level != "logical":
        raise SourceError(
            f"PostgreSQL wal_level is {wal_level!r}, logical decoding needs 'logical'. Fix: "
            "ALTER SYSTEM SET wal_level = logical; then restart the server."
        )
    row = await (
        await conn.execute("SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user")
    ).fetchone()
    if not (row and (row[0] or row[1])):
        raise SourceError(
            f"role {cfg.user!r} has neither REPLICATION nor superuser, needed for a replication "
            "slot. "
            f"Fix (as a superuser): ALTER ROLE {quote_ident(cfg.user)} WITH REPLICATION;"
        )
    return bool(row[0])


async def ensure_publication(
    conn: psycopg.AsyncConnection[Any],
    cfg: PostgresSourceConfig,
    selector: Callable[[str, str], bool] | None,
    *,
    superuser: bool,
    log: FilteringBoundLogger,
) -> None:
    """Create the publication when it is missing and ``create_publication`` allows (FOR ALL TABLES for a
    superuser without a mapping, else the selected tables), or say what a DBA should run. Refuses a
    ``publish_generated_columns`` the server or the existing publication cannot honour."""
    info = conn.info
    problem = generated_columns_problem(
        cfg.publication,
        cfg.publish_generated_columns,
        info.server_version,
        info.parameter_status("server_version") or str(info.server_version),
        await publishes_generated(conn, cfg.publication),
    )
    if problem is not None:
        raise SourceError(f"{problem[0]}. Fix: {problem[1]}")
    row = await (
        await conn.execute("SELECT puballtables FROM pg_publication WHERE pubname = %s", (cfg.publication,))
    ).fetchone()
    if row is not None:
        return
    tables = None if selector is None and superuser else await user_tables(conn, selector)
    stmt = publication_sql(cfg.publication, tables, generated=cfg.publish_generated_columns)
    if not cfg.create_publication:
        raise SourceError(
            f"publication {cfg.publication!r} does not exist in database {cfg.database!r} and "
            f"create_publication is off. Ask a DBA to run (as the tables' owner or a superuser): {stmt}"
        )
    try:
        await conn.execute(stmt.encode())
    except psycopg.errors.InsufficientPrivilege as exc:
        full = publication_sql(cfg.publication, None)
        raise SourceError(
            f"cannot create publication {cfg.publication!r}: {str(exc).splitlines()[0]}. "
            f"A DBA should run (as the tables' owner or a superuser): {stmt}"
            + ("" if tables is None else f"  (or, as a superuser, to capture every table: {full})")
        ) from None
    except psycopg.Error as exc:
        raise SourceError(
            f"cannot create publication {cfg.publication!r}: {str(exc).splitlines()[0]}. SQL was: {stmt}"
        ) from None
    log.info("publication created", tables="ALL" if tables is None else len(tables))
    if tables == []:
        log.warning("publication created without tables: nothing is captured until tables are added")


async def check_ddl_capture(
    conn: psycopg.AsyncConnection[Any],
    publication: str,
    selection: list[dict[str, Any]],
    log: FilteringBoundLogger,
) -> bool:
    """Say once at start when DDL capture is off (DROP TABLE and ALTER then leave no control record), and how
    tables created while CDC runs get into the publication: FOR ALL TABLES, DDL capture (registering the
    mapping's ``selection`` with it), or not at all (then each is named when it appears,
    ``publication.UncapturedTables``). Returns whether DDL capture adds them."""
    rows = await (await conn.execute(ddl.INSTALLED_SQL, (list(ddl.TRIGGERS),))).fetchall()
    installed = len(rows) == len(ddl.TRIGGERS)
    if not installed:
        log.warning(
            "DDL capture is not installed in this database: DROP TABLE and ALTER TABLE produce no control "
            "records (rows and TRUNCATE are captured). Enable it once, as a superuser: cdcstream setup "
            "postgres-ddl --config <file> --user postgres"
        )
    if await all_tables(conn, publication):
        log.info("new tables are captured: the publication is FOR ALL TABLES")
        return False
    reason = "DDL capture is not installed"
    if installed:
        try:
            outcome = await register_selection(conn, publication, selection)
        except psycopg.Error as exc:
            reason = (
                f"DDL capture cannot add tables to it ({str(exc).strip().splitlines()[0]}; re-running "
                "cdcstream setup postgres-ddl --config <file> installs what this version needs and registers "
                "the selection as a superuser)"
            )
        else:
            log.info(
                "new tables are captured: DDL capture adds each new selected table to the publication in the "
                "transaction that creates it",
                registration=outcome,
            )
            return True
    schemas = await published_schemas(conn, publication)
    log.warning(
        f"new tables are NOT captured automatically: publication {publication!r} lists its tables"
        + (f" (and those of the schemas {', '.join(schemas)})" if schemas else "")
        + f" and {reason}. A "
        "selected table created while CDC runs is named in the log, in /status and in "
        "cdcstream_source_uncaptured_tables, and its changes are missed until it is added to the publication. "
        'Fix: cdcstream setup postgres-ddl --config <file> --user postgres (as a superuser; docs/postgresql.md, "New '
        'tables"), or a publication FOR ALL TABLES / FOR TABLES IN SCHEMA'
    )
    return False
