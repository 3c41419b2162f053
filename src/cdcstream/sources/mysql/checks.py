"""``cdcstream check`` for MySQL / MariaDB: what the binlog source needs, one item at a time, with the fix.

Checks: connection, binary logging, ``binlog_format=ROW``, ``binlog_row_image=FULL``, ``binlog_row_metadata=FULL``,
privileges (REPLICATION SLAVE and REPLICATION CLIENT / MariaDB BINLOG MONITOR, SELECT), the checkpointed binlog
file (or GTID position) still on the server, the checkpoint's server identity, and binlog retention; with a full
load also RELOAD (the snapshot lock; without it the lossless fallback, a warning) and SELECT on every selected table
(tried); a full load alone (no CDC) checks only those. No text produced here contains a password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pymysql

from cdcstream.checkpoints.model import Checkpoint, MySQLCheckpoint
from cdcstream.config import MySQLSourceConfig
from cdcstream.errors import SourceError
from cdcstream.sources.checks import CheckResult
from cdcstream.sources.mysql.grants import load_denied
from cdcstream.sources.mysql.resume import (
    IDENTITY_CHECK,
    POSITION_CHECK,
    ServerInfo,
    describe_server,
    inspect_resume,
    other_server,
    resume_refusals,
    resumes_by_gtid,
    stored_position,
)
from cdcstream.sources.mysql.server import REQUIRED_SETTINGS, monitor_privilege, open_connection

_TABLES_SQL = (
    "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
    "AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"
)

# Retention shorter than this leaves little room to fix an outage before the checkpointed binlog is purged.
MIN_RETENTION_SECONDS = 3 * 86_400


def _grant_fix(user: str, mariadb: bool) -> str:
    return f"GRANT REPLICATION SLAVE, {monitor_privilege(mariadb)}, SELECT ON *.* TO '{user}'@'<host>';"


def _run_checks(
    cfg: MySQLSourceConfig,
    checkpoint: MySQLCheckpoint | None,
    selector: Callable[[str, str], bool],
    full_load: bool = False,
    cdc: bool = True,
) -> list[CheckResult]:
    out: list[CheckResult] = []
    where = f"{cfg.user}@{cfg.host}:{cfg.port}"
    try:
        conn = open_connection(cfg)
    except SourceError as exc:
        out.append(CheckResult("connect", False, str(exc), "check host, port, user, password and the user's host"))
        return out
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = str(cur.fetchone()[0])
            mariadb = "mariadb" in version.lower()
            out.append(CheckResult("connect", True, f"connected to {where} ({version})"))
            if not cdc:
                # A full load alone reads tables only: no binlog, no replication privileges.
                return out + _full_load_checks(cur, cfg, selector)
            cur.execute("SHOW GLOBAL VARIABLES")
            variables = {str(k).lower(): str(v) for k, v in cur.fetchall()}
            log_bin = variables.get("log_bin", "OFF").upper()
            out.append(
                CheckResult(
                    "log_bin",
                    log_bin == "ON",
                    f"log_bin = {log_bin}",
                    "" if log_bin == "ON" else "set log_bin and server_id in the server config and restart it",
                )
            )
            for key, want in REQUIRED_SETTINGS.items():
                have = variables.get(key, "(unsupported: needs MariaDB 10.5+ / MySQL 8.0.14+)")
                ok = have.upper() == want
                out.append(
                    CheckResult(
                        key,
                        ok,
                        f"{key} = {have}",
                        "" if ok else f"SET GLOBAL {key} = {want}; and {key} = {want} in the server config",
                    )
                )
            out.append(_privileges(cur, cfg, mariadb))
            if full_load:
                out += _full_load_checks(cur, cfg, selector)
            else:
                out.append(_select_check(cur, cfg, selector, required=False))
            binlogs: list[tuple[str, int]] = []
            try:
                cur.execute("SHOW BINARY LOGS")
                binlogs = [(str(r[0]), int(r[1])) for r in cur.fetchall()]
            except pymysql.err.MySQLError as exc:
                out.append(
                    CheckResult(
                        "binlog files", False, f"SHOW BINARY LOGS: {exc.args[-1]}", _grant_fix(cfg.user, mariadb)
                    )
                )
            if binlogs:
                out += _resume_checks(cur, cfg, ServerInfo(version, variables, binlogs), checkpoint)
            out.append(_retention(variables))
    finally:
        conn.close()
    return out


def global_privileges(grants: list[str]) -> set[str]:
    """The privilege names of the global (``ON *.*``) grants among ``SHOW GRANTS`` lines, upper case.

    Whole names, never substrings: a user called ``selector`` or a role grant must not read as SELECT."""
    out: set[str] = set()
    for line in grants:
        head, sep, _ = line.upper().partition(" ON *.* ")
        if sep and head.startswith("GRANT "):
            out.update(p.strip() for p in head.removeprefix("GRANT ").split(","))
    if "ALL" in out:
        out.add("ALL PRIVILEGES")
    return out


def _privileges(cur: Any, cfg: MySQLSourceConfig, mariadb: bool) -> CheckResult:
    cur.execute("SHOW GRANTS")
    privileges = global_privileges([str(r[0]) for r in cur.fetchall()])
    have_all = "ALL PRIVILEGES" in privileges
    slave = have_all or "REPLICATION SLAVE" in privileges
    monitor = have_all or bool(privileges & {"REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"})
    select = have_all or "SELECT" in privileges
    missing = [
        name
        for name, ok in (
            ("REPLICATION SLAVE", slave),
            (monitor_privilege(mariadb), monitor),
            ("SELECT", select),
        )
        if not ok
    ]
    return CheckResult(
        "privileges",
        not missing,
        f"user {cfg.user}: "
        + (
            "REPLICATION SLAVE, binlog monitoring and SELECT granted"
            if not missing
            else f"missing {', '.join(missing)}"
        ),
        "" if not missing else _grant_fix(cfg.user, mariadb),
    )


def _full_load_checks(cur: Any, cfg: MySQLSourceConfig, selector: Callable[[str, str], bool]) -> list[CheckResult]:
    """RELOAD for the snapshot lock, and SELECT on every selected table (each tried with ``LIMIT 0``)."""
    cur.execute("SHOW GRANTS")
    privileges = global_privileges([str(r[0]) for r in cur.fetchall()])
    reload = bool(privileges & {"ALL PRIVILEGES", "RELOAD"})
    lock = CheckResult(
        "full load lock",
        True,
        "RELOAD granted: the load's snapshot is taken under a brief FLUSH TABLES WITH READ LOCK"
        if reload
        else "RELOAD not granted: the load uses the lock-free fallback (lossless; rows changed while the "
        "snapshots open appear twice; docs/full-load.md)",
        "" if reload else f"GRANT RELOAD ON *.* TO '{cfg.user}'@'<host>'; (optional)",
        warning=not reload,
    )
    return [lock, _select_check(cur, cfg, selector, required=True)]


def _select_check(
    cur: Any, cfg: MySQLSourceConfig, selector: Callable[[str, str], bool], *, required: bool
) -> CheckResult:
    """SELECT on every selected table, tried as a load reads it. ``required`` (a full load reads them all): a
    denied table fails the check; otherwise (CDC: only ``reload --table`` reads them) it is a warning."""
    cur.execute(_TABLES_SQL)
    tables = [
        (str(s), str(t))
        for s, t in cur.fetchall()
        if (cfg.databases is None or s in cfg.databases) and selector(str(s), str(t))
    ]
    denied = []
    for schema, table in tables:
        try:
            if load_denied(cur, schema, table) is not False:
                denied.append(f"{schema}.{table}")
        except pymysql.err.MySQLError:
            denied.append(f"{schema}.{table}")
    # A database the user may not see at all hides its tables from information_schema: name it instead.
    unseen = [d for d in cfg.databases or () if not any(s == d for s, _ in tables)]
    missing = denied + [f"{d}.* (no table visible)" for d in unseen]
    return CheckResult(
        "full load tables" if required else "reload tables",
        not (denied and required),
        f"SELECT works on the {len(tables)} selected table(s)"
        + (f"; not readable: {', '.join(missing[:10])}" if missing else "")
        + ("" if required or not missing else " (streaming needs no SELECT; reload --table of these is refused)"),
        "" if not missing else f"GRANT SELECT ON `<database>`.* TO '{cfg.user}'@'<host>'; for each named",
        warning=bool(missing) and not (denied and required),
    )


def table_names(cfg: MySQLSourceConfig) -> list[tuple[str, str]]:
    """(schema, table) of every base table the reader can capture (in ``databases`` when that is set)."""
    conn = open_connection(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute(_TABLES_SQL)
            rows = cur.fetchall()
    finally:
        conn.close()
    return [(str(s), str(t)) for s, t in rows if cfg.databases is None or s in cfg.databases]


def _resume_checks(
    cur: Any, cfg: MySQLSourceConfig, info: ServerInfo, checkpoint: MySQLCheckpoint | None
) -> list[CheckResult]:
    """The checkpoint's position and server identity, judged by what ``run`` refuses on
    (``resume.resume_refusals``)."""
    if checkpoint is None or "file" not in checkpoint:
        current = info.binlogs[-1]
        return [
            CheckResult(POSITION_CHECK, True, f"no checkpoint: streaming starts at the current position ({current})")
        ]
    try:
        file, pos, gtid = stored_position(checkpoint)
        use_gtid = resumes_by_gtid(cfg.gtid_mode, checkpoint, gtid, info)
    except SourceError as exc:
        return [CheckResult(POSITION_CHECK, False, str(exc), "fix the config or the checkpoint as the message says")]
    inspect_resume(cur, info, file, pos, gtid, at_position=True)
    refusals = resume_refusals(info, file, pos, gtid, checkpoint, use_gtid=use_gtid, where=f"{cfg.host}:{cfg.port}")
    out = [CheckResult(r.check, False, r.problem, r.fix) for r in refusals]
    identity = info.identity
    if not any(r.check == IDENTITY_CHECK for r in refusals):
        moved = other_server(checkpoint, identity)
        out.insert(
            0,
            CheckResult(
                IDENTITY_CHECK,
                True,
                f"the server is {describe_server(identity)}, the checkpoint was written for "
                f"{describe_server(checkpoint)} (failover?): run resumes by GTID, which names the same transactions "
                "on every server of a topology"
                if moved
                else f"{describe_server(identity)}, as in the checkpoint",
                warning=moved,
            ),
        )
    if not any(r.check == POSITION_CHECK for r in refusals):
        at = f"GTID position {gtid}" if use_gtid else f"binlog position {file}:{pos}"
        out.append(CheckResult(POSITION_CHECK, True, f"checkpointed {at} is on the server"))
    return out


def _retention(variables: dict[str, str]) -> CheckResult:
    seconds = 0.0
    with_seconds = variables.get("binlog_expire_logs_seconds")
    if with_seconds not in (None, "", "0"):
        seconds = float(with_seconds or 0)
    elif variables.get("expire_logs_days") not in (None, "", "0", "0.000000"):
        seconds = float(variables.get("expire_logs_days") or 0) * 86_400
    if seconds == 0:
        return CheckResult("binlog retention", True, "binlogs never expire (watch the disk)")
    ok = seconds >= MIN_RETENTION_SECONDS
    return CheckResult(
        "binlog retention",
        ok,
        f"binlogs expire after {seconds / 86_400:.1f} days",
        ""
        if ok
        else "keep binlogs for at least 3 days (binlog_expire_logs_seconds = 259200), or an outage longer than the "
        "retention loses changes",
    )


async def run_checks(
    cfg: MySQLSourceConfig,
    selector: Callable[[str, str], bool] | None,
    checkpoint: Checkpoint | None = None,
    *,
    full_load: bool = False,
    cdc: bool = True,
) -> list[CheckResult]:
    """Connect as the configured user and report on every requirement of the binlog source (and, with
    ``full_load``, of the load: the selected tables are read, so ``selector`` matters there). ``cdc=False``
    (``migration_type = "full-load"``) checks the load's requirements only."""
    mine = cast(MySQLCheckpoint | None, checkpoint)  # another engine's position fails stored_position
    return await asyncio.to_thread(_run_checks, cfg, mine, selector or (lambda s, t: True), full_load, cdc)
