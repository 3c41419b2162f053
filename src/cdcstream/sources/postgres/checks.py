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
from cdcstream.sources.postgres import ddl
from cdcstream.sources.postgres.replication import quote_ident
from cdcstream.sources.postgres.source import _USER_TABLES_SQL, build_conninfo, connect_error, slot_problem


@dataclass
class CheckResult:
    """One line of the ``cdcstream check`` report.

    ``warning`` marks a passing check that still deserves attention (printed as WARN, exit code unaffected):
    capture works, but some records will carry less than a consumer might expect.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False


async def run_checks(
    cfg: PostgresSourceConfig,
    selector: Callable[[str, str], bool] | None,
    checkpoint: dict[str, Any] | None = None,
) -> list[CheckResult]:
    """Connect with the configured role and report on every requirement of the PostgreSQL source, judging the
    slot against the stored ``checkpoint`` as ``run`` will."""
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
        out.extend(await _server_checks(conn, cfg, selector, checkpoint))
    return out


async def _one(conn: psycopg.AsyncConnection[Any], query: str, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return row


async def _server_checks(
    conn: psycopg.AsyncConnection[Any],
    cfg: PostgresSourceConfig,
    selector: Callable[[str, str], bool] | None,
    checkpoint: dict[str, Any] | None,
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
        "SELECT plugin, slot_type, database, wal_status, active, confirmed_flush_lsn::text "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (cfg.slot_name,),
    )
    max_slots = int((await _one(conn, "SHOW max_replication_slots"))[0])
    used_slots = int((await _one(conn, "SELECT count(*) FROM pg_replication_slots"))[0])
    max_senders = int((await _one(conn, "SHOW max_wal_senders"))[0])
    used_senders = int((await _one(conn, "SELECT count(*) FROM pg_stat_replication"))[0])
    problem = slot_problem(cfg, slot[:4] if slot else None, checkpoint)  # what `run` will say
    if problem is not None:
        out.append(CheckResult("slot", False, str(problem), "see the options above"))
    elif slot is None:
        creatable = ok and used_slots < max_slots
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
        plugin, _, _, wal_status, active, confirmed = slot
        out.append(
            CheckResult(
                "slot",
                True,
                f"slot {cfg.slot_name}: plugin {plugin}, wal_status {wal_status}, active {active}, "
                f"confirmed_flush_lsn {confirmed}",
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
    out.extend(await _table_checks(conn, selector))
    out.append(await _ddl_check(conn))
    return out


async def _ddl_check(conn: psycopg.AsyncConnection[Any]) -> CheckResult:
    """DDL capture is optional (rows and TRUNCATE are captured without it), so its absence is a warning: the
    stream will have no DropTable and no alter control records (README, "Schema changes")."""
    rows = await (await conn.execute(ddl.INSTALLED_SQL, (list(ddl.TRIGGERS),))).fetchall()
    found = {r[0] for r in rows}
    missing = [t for t in ddl.TRIGGERS if t not in found]
    if not missing:
        return CheckResult("DDL capture", True, f"event triggers {', '.join(ddl.TRIGGERS)} installed and enabled")
    return CheckResult(
        "DDL capture",
        True,
        f"event trigger(s) {', '.join(missing)} missing or disabled: DROP TABLE and ALTER TABLE cannot be captured "
        "(no DropTable or alter control records; row changes and TRUNCATE are captured)",
        "as a superuser, once: cdcstream setup postgres-ddl --config <file> --user postgres "
        "(or run the script printed by --print-sql)",
        warning=True,
    )


# Per selected table: replica identity, whether a primary key exists, and the columns whose values can be
# TOASTed (storage other than 'plain'), i.e. can arrive as "unchanged" in an UPDATE.
_TABLES_SQL = """
SELECT n.nspname, c.relname, c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attstorage <> 'p'
             ORDER BY a.attnum)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'cdcstream') AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""

_LIST_MAX = 10


def _names(tables: list[str]) -> str:
    more = f" and {len(tables) - _LIST_MAX} more" if len(tables) > _LIST_MAX else ""
    return ", ".join(tables[:_LIST_MAX]) + more


async def _table_checks(
    conn: psycopg.AsyncConnection[Any], selector: Callable[[str, str], bool] | None
) -> list[CheckResult]:
    """Warnings about selected tables whose UPDATE/DELETE records will be incomplete or impossible."""
    rows = await (await conn.execute(_TABLES_SQL)).fetchall()
    no_identity: list[str] = []
    toastable: list[str] = []
    for schema, table, ident, has_pk, toast_cols in rows:
        if selector is not None and not selector(schema, table):
            continue
        name = f"{schema}.{table}"
        if ident == "n" or (ident == "d" and not has_pk):
            no_identity.append(name)
        if toast_cols and ident != "f":
            toastable.append(f"{name} ({', '.join(toast_cols)})")
    out = [
        CheckResult(
            "replica identity",
            True,
            "every selected table has a primary key or replica identity"
            if not no_identity
            else f"no replica identity: {_names(no_identity)} — PostgreSQL refuses UPDATE and DELETE on them "
            "while they are in the publication; INSERTs are captured",
            ""
            if not no_identity
            else "add a primary key, or ALTER TABLE <table> REPLICA IDENTITY FULL (or USING INDEX <unique index>)",
            warning=bool(no_identity),
        ),
        CheckResult(
            "unchanged TOAST",
            True,
            "no selected table can send unchanged TOASTed values"
            if not toastable
            else f"UPDATEs that leave a large value unchanged omit it (listed in metadata.unchanged-columns): "
            f"{_names(toastable)}",
            ""
            if not toastable
            else "ALTER TABLE <table> REPLICA IDENTITY FULL makes cdcstream fill them from the old row "
            "(costs WAL), or let consumers merge the columns listed in unchanged-columns",
            warning=bool(toastable),
        ),
    ]
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
