"""``cdcstream check`` for PostgreSQL: what the source needs, verified one item at a time, with the fix.

Each check is independent where possible (a failed privilege check does not hide the wal_level result). No
text produced here contains a password or a connection string.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import psycopg

from cdcstream.checkpoints.model import Checkpoint, PgCheckpoint
from cdcstream.config import PostgresSourceConfig
from cdcstream.errors import SourceError
from cdcstream.sources.checks import CheckResult
from cdcstream.sources.postgres import ddl
from cdcstream.sources.postgres.catalog import USER_TABLES_FROM, user_tables
from cdcstream.sources.postgres.connection import build_conninfo, connect_error
from cdcstream.sources.postgres.failover import failover_checks
from cdcstream.sources.postgres.grants import grant_statements, unreadable_tables
from cdcstream.sources.postgres.pgoutput import format_lsn, parse_lsn
from cdcstream.sources.postgres.publication import (
    GENERATED_COLUMNS_VERSION,
    generated_columns_problem,
    publication_sql,
    publishes_generated,
    uncaptured_tables,
)
from cdcstream.sources.postgres.replication import FAILOVER_VERSION, ReplicationConnection, quote_ident
from cdcstream.sources.postgres.resume import CHECK, read_server_state, resume_refusals
from cdcstream.sources.postgres.setup import version_problem
from cdcstream.sources.postgres.slot import slot_problem, slot_sql


async def run_checks(
    cfg: PostgresSourceConfig,
    selector: Callable[[str, str], bool] | None,
    checkpoint: Checkpoint | None = None,
    *,
    full_load: bool = False,
) -> list[CheckResult]:
    """Connect with the configured role and report on every requirement of the PostgreSQL source, judging the
    slot against the stored ``checkpoint`` as ``run`` will (``full_load``: the task copies the selected tables,
    so SELECT on them is required, not only wanted for reload --table)."""
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
        out.append(await _select_check(conn, cfg, selector, required=full_load))
    return out


async def _one(conn: psycopg.AsyncConnection[Any], query: str, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return row


async def _server_checks(
    conn: psycopg.AsyncConnection[Any],
    cfg: PostgresSourceConfig,
    selector: Callable[[str, str], bool] | None,
    checkpoint: Checkpoint | None,
) -> list[CheckResult]:
    out: list[CheckResult] = []
    version = (await _one(conn, "SHOW server_version"))[0]
    num = int((await _one(conn, "SHOW server_version_num"))[0])
    too_old = version_problem(num, version)
    out.append(
        CheckResult(
            "server version",
            too_old is None,
            f"PostgreSQL {version}" if too_old is None else too_old,
            "" if too_old is None else "upgrade the server to PostgreSQL 14 or newer",
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
    failover_cols = "failover, synced" if num >= FAILOVER_VERSION else "NULL::bool, NULL::bool"
    slot = await _one(conn, slot_sql(num, f"active, confirmed_flush_lsn::text, {failover_cols}"), (cfg.slot_name,))
    max_slots = int((await _one(conn, "SHOW max_replication_slots"))[0])
    used_slots = int((await _one(conn, "SELECT count(*) FROM pg_replication_slots"))[0])
    max_senders = int((await _one(conn, "SHOW max_wal_senders"))[0])
    used_senders = int((await _one(conn, "SELECT count(*) FROM pg_stat_replication"))[0])
    problem = slot_problem(cfg, slot[:5] if slot else None, cast(PgCheckpoint | None, checkpoint))  # as `run` says
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
        plugin, _, _, wal_status, _, active, confirmed, failover, synced = slot
        out.append(
            CheckResult(
                "slot",
                True,
                f"slot {cfg.slot_name}: plugin {plugin}, wal_status {wal_status}, active {active}, "
                f"confirmed_flush_lsn {confirmed}"
                + ("" if failover is None else f", failover {failover}, synced {synced}"),
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
    out.extend(await failover_checks(conn, cfg, None if slot is None else slot[7:9]))
    out.append(await _publication_check(conn, cfg, selector, bool(su)))
    out.extend(await _version_checks(conn, cfg, num, version))
    out.extend(await _table_checks(conn, selector))
    ddl_check = await _ddl_check(conn)
    out.append(ddl_check)
    out.append(await _new_tables_check(conn, cfg, installed=not ddl_check.warning))
    return out


async def _select_check(
    conn: psycopg.AsyncConnection[Any],
    cfg: PostgresSourceConfig,
    selector: Callable[[str, str], bool] | None,
    *,
    required: bool,
) -> CheckResult:
    """SELECT on every selected table: what a full load (``required``) or ``reload --table`` reads. Streaming
    needs none, so for a cdc task a missing one is a warning: reloads of those tables are refused."""
    denied = [d for d in await unreadable_tables(conn) if selector is None or selector(d[0], d[1])]
    name = "full load tables" if required else "reload tables"
    if not denied:
        return CheckResult(name, True, f"role {cfg.user} may SELECT every selected table")
    tables = [f"{s}.{t}" for s, t, _, _ in denied]
    return CheckResult(
        name,
        not required,
        f"role {cfg.user} may not SELECT {_names(tables)}"
        + ("" if required else " (streaming needs no SELECT; reload --table of these is refused)"),
        "as the tables' owner or a superuser: " + " ".join(grant_statements(cfg.user, denied[:_LIST_MAX])),
        warning=not required,
    )


# Whether this version's DDL capture is installed and callable by the role (an older one has no such function,
# or kept its schema closed to everyone).
_REGISTER_FUNCTION = """
SELECT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
               WHERE n.nspname = 'cdcstream' AND p.proname = 'register_publication'
                 AND has_schema_privilege(n.oid, 'USAGE') AND has_function_privilege(p.oid, 'EXECUTE'))
"""


async def _new_tables_check(
    conn: psycopg.AsyncConnection[Any], cfg: PostgresSourceConfig, *, installed: bool
) -> CheckResult:
    """How a table created while CDC runs gets into the publication (docs/postgresql.md), or that it does not
    (then the daemon names each one when it appears, and its changes are missed until it is added)."""
    pub = await _one(
        conn,
        "SELECT puballtables, pg_has_role(current_user, pubowner, 'USAGE') FROM pg_publication WHERE pubname = %s",
        (cfg.publication,),
    )
    name = "new tables"
    if pub is not None and pub[0]:
        return CheckResult(name, True, f"captured: publication {cfg.publication} is FOR ALL TABLES")
    setup = "as a superuser, once: cdcstream setup postgres-ddl --config <file> --user postgres"
    if installed and (await _one(conn, _REGISTER_FUNCTION))[0]:
        if pub is None or pub[1]:
            return CheckResult(
                name,
                True,
                "captured: DDL capture adds each new selected table (once it has a replica identity) to publication "
                f"{cfg.publication} in the transaction that creates it; the daemon registers the mapping's "
                "selection at start",
            )
        return CheckResult(
            name,
            True,
            f"publication {cfg.publication} belongs to another role, so the daemon cannot register the mapping's "
            "selection with DDL capture: new tables are captured only as setup last registered them",
            f"{setup} (registers the selection; again after each change of the mapping)",
            warning=True,
        )
    return CheckResult(
        name,
        True,
        f"not captured automatically: publication {cfg.publication} lists its tables and DDL capture "
        + ("is older than this version" if installed else "is not installed")
        + "; a selected table created while CDC runs is named by the daemon, and its changes are missed until it is "
        "added to the publication",
        f"{setup} (or a publication FOR ALL TABLES / FOR TABLES IN SCHEMA, created by a superuser)",
        warning=True,
    )


async def _ddl_check(conn: psycopg.AsyncConnection[Any]) -> CheckResult:
    """DDL capture is optional (rows and TRUNCATE are captured without it), so its absence is a warning: the
    stream will have no DropTable and no alter control records (docs/schema-changes.md)."""
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
_TABLES_SQL = (
    """
SELECT n.nspname, c.relname, c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
       ARRAY(SELECT a.attname::text FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attstorage <> 'p'
             ORDER BY a.attnum)"""
    + USER_TABLES_FROM
)

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


async def _version_checks(
    conn: psycopg.AsyncConnection[Any], cfg: PostgresSourceConfig, num: int, version: str
) -> list[CheckResult]:
    """What depends on the server version: generated columns (18+) and the idle slot timeout (18+)."""
    out: list[CheckResult] = []
    if cfg.publish_generated_columns or num >= GENERATED_COLUMNS_VERSION:
        publishes = await publishes_generated(conn, cfg.publication)
        problem = generated_columns_problem(cfg.publication, cfg.publish_generated_columns, num, version, publishes)
        if problem is not None:
            out.append(CheckResult("generated columns", False, *problem))
        else:
            sent = cfg.publish_generated_columns or bool(publishes)
            out.append(
                CheckResult(
                    "generated columns",
                    True,
                    "stored generated columns are in the records"
                    if sent
                    else "generated columns are left out of the records (publish_generated_columns = false)",
                )
            )
    if num >= 180000:
        row = await _one(conn, "SELECT setting::int FROM pg_settings WHERE name = 'idle_replication_slot_timeout'")
        timeout = int(row[0])
        out.append(
            CheckResult(
                "idle_replication_slot_timeout",
                True,
                "0: a stopped daemon's slot is never invalidated for being idle"
                if not timeout
                else f"{timeout} s: if the daemon is stopped longer, the server invalidates slot {cfg.slot_name} "
                "and changes since the checkpoint are lost (a full load is then needed)",
                ""
                if not timeout
                else "ALTER SYSTEM SET idle_replication_slot_timeout = 0; SELECT pg_reload_conf();"
                "  -- or a value beyond the longest time the daemon may be stopped",
                warning=bool(timeout),
            )
        )
    return out


async def _publication_check(
    conn: psycopg.AsyncConnection[Any],
    cfg: PostgresSourceConfig,
    selector: Callable[[str, str], bool] | None,
    superuser: bool,
) -> CheckResult:
    selected = await user_tables(conn, selector)
    pub = await _one(conn, "SELECT puballtables FROM pg_publication WHERE pubname = %s", (cfg.publication,))
    if pub is None:
        tables = None if selector is None and superuser else selected
        stmt = publication_sql(cfg.publication, tables, generated=cfg.publish_generated_columns)
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
    missing = await uncaptured_tables(conn, cfg.publication, selector)
    what = "ALL TABLES" if pub[0] else f"{len(selected) - len(missing)} of {len(selected)} selected tables"
    return CheckResult(
        "publication",
        not missing,
        f"publication {cfg.publication} covers {what}"
        + "".join(f"\n  not captured: {u.name}: {u.reason}" for u in missing[:_LIST_MAX])
        + (f"\n  and {len(missing) - _LIST_MAX} more" if len(missing) > _LIST_MAX else ""),
        "\n".join(u.fix for u in missing[:_LIST_MAX]),
    )


async def checkpoint_checks(
    cfg: PostgresSourceConfig, stored: Checkpoint | None, *, owned: bool, adopt: str
) -> list[CheckResult]:
    """The checkpoint's LSN against the server and the slot, by exactly what ``run`` refuses on (resume.py)."""
    checkpoint = cast(PgCheckpoint | None, stored)  # another engine's has no lsn
    if checkpoint is None or "lsn" not in checkpoint:
        return []
    try:
        lsn = parse_lsn(str(checkpoint["lsn"]))
    except ValueError as exc:
        return [CheckResult(CHECK, False, f"the checkpoint holds no PostgreSQL position: {exc}", "restore the file")]
    repl = ReplicationConnection(build_conninfo(cfg, replication=True), connect_timeout=cfg.connect_timeout)
    try:
        await repl.connect()
        where = repl.where
        async with await psycopg.AsyncConnection.connect(build_conninfo(cfg, replication=False)) as conn:
            timeline = checkpoint.get("timeline")
            server = await read_server_state(repl, conn, cfg.slot_name, timeline if isinstance(timeline, int) else None)
    except (SourceError, psycopg.Error) as exc:
        return [CheckResult(CHECK, False, f"cannot read the server's position: {exc}", "see the connect check")]
    finally:
        repl.close()
    refusals = resume_refusals(lsn, checkpoint, server, owned=owned, slot=cfg.slot_name, where=where, adopt=adopt)
    if refusals:
        return [CheckResult(r.check, False, r.problem, r.fix) for r in refusals]
    fits = f"LSN {checkpoint['lsn']} fits database system {server.system_id}"
    if server.slot_confirmed is not None:
        fits += f" and slot {cfg.slot_name} (confirmed {format_lsn(server.slot_confirmed)})"
    moved = checkpoint.get("timeline") not in (None, server.timeline)
    if moved:
        fits += (
            f"; the server moved from timeline {checkpoint['timeline']} to {server.timeline} after it (a promotion): "
            "run goes on, which is right only if the slot was carried over"
        )
    return [CheckResult(CHECK, True, fits, warning=moved)]
