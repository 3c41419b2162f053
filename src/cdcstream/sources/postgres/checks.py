"""``cdcstream check`` for PostgreSQL: what the source needs, verified one item at a time, with the fix.

Each check is independent where possible (a failed privilege check does not hide the wal_level result). No
text produced here contains a password or a connection string.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from cdcstream.config import PostgresSourceConfig
from cdcstream.sources.postgres.replication import quote_ident
from cdcstream.sources.postgres.source import _USER_TABLES_SQL, build_conninfo, connect_error


@dataclass
class CheckResult:
    """One line of the ``cdcstream check`` report."""

    name: str
    ok: bool
    detail: str
    fix: str = ""


async def run_checks(cfg: PostgresSourceConfig, selector: Callable[[str, str], bool] | None) -> list[CheckResult]:
    """Connect with the configured role and report on every requirement of the PostgreSQL source."""
    out: list[CheckResult] = []
    where = f"{cfg.user}@{cfg.host}:{cfg.port}/{cfg.database}"
    try:
        conn = await psycopg.AsyncConnection.connect(build_conninfo(cfg, replication=False), autocommit=True)
    except psycopg.Error as exc:
        out.append(
            CheckResult(
                "connect",
                False,
                str(connect_error(cfg, exc)),
                "check host, port, database, user, password and pg_hba.conf (a logical replication "
                "connection matches the pg_hba *database* column, not the 'replication' keyword)",
            )
        )
        return out
    async with conn:
        out.append(CheckResult("connect", True, f"connected to {where}"))
        out.extend(await _server_checks(conn, cfg, selector))
    return out


async def _one(conn: psycopg.AsyncConnection[Any], query: str, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return row


async def _server_checks(
    conn: psycopg.AsyncConnection[Any], cfg: PostgresSourceConfig, selector: Callable[[str, str], bool] | None
) -> list[CheckResult]:
    out: list[CheckResult] = []
    version = (await _one(conn, "SHOW server_version"))[0]
    num = int((await _one(conn, "SHOW server_version_num"))[0])
    out.append(
        CheckResult(
            "server version",
            num >= 100000,
            f"PostgreSQL {version}",
            "" if num >= 100000 else "PostgreSQL 10 or newer is required for pgoutput",
        )
    )
    wal_level = (await _one(conn, "SHOW wal_level"))[0]
    out.append(
        CheckResult(
            "wal_level",
            wal_level == "logical",
            f"wal_level = {wal_level}",
            "" if wal_level == "logical" else "ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL",
        )
    )
    su, repl = await _one(conn, "SELECT rolsuper, rolreplication FROM pg_roles WHERE rolname = current_user")
    ok = bool(su or repl)
    out.append(
        CheckResult(
            "replication privilege",
            ok,
            f"role {cfg.user}: superuser={bool(su)}, replication={bool(repl)}",
            "" if ok else f"ALTER ROLE {quote_ident(cfg.user)} WITH REPLICATION;  -- as a superuser",
        )
    )
    slot = await _one(
        conn,
        "SELECT plugin, database, wal_status, active, confirmed_flush_lsn::text FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (cfg.slot_name,),
    )
    max_slots = int((await _one(conn, "SHOW max_replication_slots"))[0])
    used_slots = int((await _one(conn, "SELECT count(*) FROM pg_replication_slots"))[0])
    max_senders = int((await _one(conn, "SHOW max_wal_senders"))[0])
    used_senders = int((await _one(conn, "SELECT count(*) FROM pg_stat_replication"))[0])
    if slot is None:
        creatable = ok and cfg.create_slot and used_slots < max_slots
        fix = ""
        if not creatable:
            fix = f"SELECT pg_create_logical_replication_slot('{cfg.slot_name}', 'pgoutput');"
            if used_slots >= max_slots:
                fix = "raise max_replication_slots (restart needed) or drop an unused slot"
        out.append(
            CheckResult(
                "slot",
                creatable,
                f"slot {cfg.slot_name} does not exist; "
                + ("it will be created at start" if creatable else "cdcstream cannot create it"),
                fix,
            )
        )
    else:
        plugin, database, wal_status, active, confirmed = slot
        problems = []
        if plugin != "pgoutput":
            problems.append(f"plugin is {plugin}, not pgoutput")
        if database != cfg.database:
            problems.append(f"it belongs to database {database}")
        if wal_status == "lost":
            problems.append("it is invalidated (wal_status lost): changes were lost")
        out.append(
            CheckResult(
                "slot",
                not problems,
                f"slot {cfg.slot_name}: plugin {plugin}, wal_status {wal_status}, active {active}, "
                f"confirmed_flush_lsn {confirmed}" + (f" — {'; '.join(problems)}" if problems else ""),
                "" if not problems else "use another slot_name, or drop the slot and re-sync with a full load",
            )
        )
    out.append(
        CheckResult(
            "max_replication_slots",
            used_slots < max_slots or slot is not None,
            f"{used_slots} of {max_slots} slots in use",
            "" if used_slots < max_slots or slot is not None else "raise max_replication_slots (restart needed)",
        )
    )
    out.append(
        CheckResult(
            "max_wal_senders",
            used_senders < max_senders,
            f"{used_senders} of {max_senders} WAL senders in use",
            "" if used_senders < max_senders else "raise max_wal_senders (restart needed)",
        )
    )
    out.append(await _publication_check(conn, cfg, selector, bool(su)))
    return out


async def _publication_check(
    conn: psycopg.AsyncConnection[Any],
    cfg: PostgresSourceConfig,
    selector: Callable[[str, str], bool] | None,
    superuser: bool,
) -> CheckResult:
    rows = await (await conn.execute(_USER_TABLES_SQL)).fetchall()
    selected = [(s, t) for s, t in rows if selector is None or selector(s, t)]
    pub = await _one(conn, "SELECT puballtables FROM pg_publication WHERE pubname = %s", (cfg.publication,))
    tables_sql = ", ".join(f"{quote_ident(s)}.{quote_ident(t)}" for s, t in selected)
    if pub is None:
        if selector is None and superuser:
            stmt = f"CREATE PUBLICATION {quote_ident(cfg.publication)} FOR ALL TABLES;"
        else:
            stmt = f"CREATE PUBLICATION {quote_ident(cfg.publication)} FOR TABLE {tables_sql};"
        owned = await (
            await conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE pg_has_role(c.relowner, 'USAGE') AND (n.nspname, c.relname) IN "
                "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([s for s, _ in selected], [t for _, t in selected]),
            )
        ).fetchone()
        n_owned = int(owned[0]) if owned else 0
        creatable = cfg.create_publication and (superuser or n_owned == len(selected))
        return CheckResult(
            "publication",
            creatable,
            f"publication {cfg.publication} does not exist; "
            + (
                "it will be created at start"
                if creatable
                else f"cdcstream cannot create it (owns {n_owned} of {len(selected)} selected tables)"
            ),
            "" if creatable else f"as the tables' owner or a superuser: {stmt}",
        )
    if pub[0]:
        return CheckResult("publication", True, f"publication {cfg.publication} covers ALL TABLES")
    published = {
        (s, t)
        for s, t in await (
            await conn.execute(
                "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = %s",
                (cfg.publication,),
            )
        ).fetchall()
    }
    missing = [(s, t) for s, t in selected if (s, t) not in published]
    names = ", ".join(f"{quote_ident(s)}.{quote_ident(t)}" for s, t in missing)
    return CheckResult(
        "publication",
        not missing,
        f"publication {cfg.publication} covers {len(selected) - len(missing)} of {len(selected)} selected "
        "tables" + (f"; missing: {names}" if missing else ""),
        f"ALTER PUBLICATION {quote_ident(cfg.publication)} ADD TABLE {names};" if missing else "",
    )
