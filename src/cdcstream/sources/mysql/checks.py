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
from typing import Any

import pymysql

from cdcstream.config import MySQLSourceConfig
from cdcstream.errors import SourceError
from cdcstream.sources.mysql.source import (
    REQUIRED_SETTINGS,
    ServerInfo,
    describe_server,
    fetch_gtid_gap,
    monitor_privilege,
    open_connection,
    other_server,
)
from cdcstream.sources.postgres.checks import CheckResult

# Retention shorter than this leaves little room to fix an outage before the checkpointed binlog is purged.
MIN_RETENTION_SECONDS = 3 * 86_400


def _grant_fix(user: str, mariadb: bool) -> str:
    return f"GRANT REPLICATION SLAVE, {monitor_privilege(mariadb)}, SELECT ON *.* TO '{user}'@'<host>';"


def _run_checks(
    cfg: MySQLSourceConfig,
    checkpoint: dict[str, Any] | None,
    load_selector: Callable[[str, str], bool] | None = None,
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
                assert load_selector is not None
                return out + _full_load_checks(cur, cfg, load_selector)
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
            if variables.get("binlog_transaction_compression", "OFF").upper() == "ON":
                out.append(
                    CheckResult(
                        "binlog_transaction_compression",
                        False,
                        "binlog_transaction_compression = ON (compressed payloads cannot be decoded)",
                        "SET GLOBAL binlog_transaction_compression = OFF; and in the server config",
                    )
                )
            out.append(_privileges(cur, cfg, mariadb))
            if load_selector is not None:
                out += _full_load_checks(cur, cfg, load_selector)
            binlogs: list[str] = []
            try:
                cur.execute("SHOW BINARY LOGS")
                binlogs = [str(r[0]) for r in cur.fetchall()]
            except pymysql.err.MySQLError as exc:
                out.append(
                    CheckResult(
                        "binlog files", False, f"SHOW BINARY LOGS: {exc.args[-1]}", _grant_fix(cfg.user, mariadb)
                    )
                )
            if binlogs:
                info = ServerInfo(version, variables, binlogs)
                by_gtid = bool(checkpoint and checkpoint.get("gtid")) and cfg.gtid_mode != "off"
                if checkpoint and by_gtid and info.server_has_gtids:
                    out.append(_gtid_check(cur, info, str(checkpoint["gtid"])))
                else:
                    out.append(_checkpoint_check(checkpoint, binlogs))
                if checkpoint:
                    out.append(_identity_check(checkpoint, info))
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
    out = [
        CheckResult(
            "full load lock",
            True,
            "RELOAD granted: the load's snapshot is taken under a brief FLUSH TABLES WITH READ LOCK"
            if reload
            else "RELOAD not granted: the load uses the lock-free fallback (lossless; rows changed while the "
            "snapshots open appear twice; README, Full load)",
            "" if reload else f"GRANT RELOAD ON *.* TO '{cfg.user}'@'<host>'; (optional)",
            warning=not reload,
        )
    ]
    cur.execute(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' "
        "AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"
    )
    tables = [
        (str(s), str(t))
        for s, t in cur.fetchall()
        if (cfg.databases is None or s in cfg.databases) and selector(str(s), str(t))
    ]
    denied = []
    for schema, table in tables:
        try:
            cur.execute(f"SELECT 1 FROM `{schema.replace('`', '``')}`.`{table.replace('`', '``')}` LIMIT 0")
        except pymysql.err.MySQLError:
            denied.append(f"{schema}.{table}")
    # A database the user may not see at all hides its tables from information_schema: name it instead.
    unseen = [d for d in cfg.databases or () if not any(s == d for s, _ in tables)]
    missing = denied + [f"{d}.* (no table visible)" for d in unseen]
    out.append(
        CheckResult(
            "full load tables",
            not denied,
            f"SELECT works on the {len(tables)} selected table(s)"
            + (f"; not readable: {', '.join(missing[:10])}" if missing else ""),
            "" if not missing else f"GRANT SELECT ON `<database>`.* TO '{cfg.user}'@'<host>'; for each named",
            warning=bool(unseen) and not denied,
        )
    )
    return out


def _checkpoint_check(checkpoint: dict[str, Any] | None, binlogs: list[str]) -> CheckResult:
    if checkpoint is None:
        return CheckResult(
            "binlog position", True, f"no checkpoint: streaming starts at the current position ({binlogs[-1]})"
        )
    file = checkpoint.get("file")
    if file in binlogs:
        return CheckResult(
            "binlog position", True, f"checkpointed binlog {file}:{checkpoint.get('pos')} is on the server"
        )
    return CheckResult(
        "binlog position",
        False,
        f"the checkpointed binlog file {file} was purged (oldest on the server: {binlogs[0]}): changes after the "
        "checkpoint are lost",
        "raise binlog retention, delete the checkpoint file and re-sync the target with a full load",
    )


def _gtid_check(cur: Any, info: ServerInfo, gtid: str) -> CheckResult:
    fetch_gtid_gap(cur, info, gtid)
    if not info.missing_gtids:
        return CheckResult("binlog position", True, f"checkpointed GTID position {gtid} is on the server")
    return CheckResult(
        "binlog position",
        False,
        f"the checkpointed GTID position {gtid} was purged: the oldest binlog ({info.binlogs[0]}) starts after "
        f"{info.purged_gtids}, so transactions up to {info.missing_gtids} are lost",
        "raise binlog retention, move the checkpoint file away and re-sync the target with a full load",
    )


def _identity_check(checkpoint: dict[str, Any], info: ServerInfo) -> CheckResult:
    identity = info.identity
    if not other_server(checkpoint, identity):
        return CheckResult("server identity", True, f"{describe_server(identity)}, as in the checkpoint")
    return CheckResult(
        "server identity",
        False,
        f"the server is {describe_server(identity)}, the checkpoint was written for {describe_server(checkpoint)} "
        "(failover, restore, or another server at this address)",
        "resume by GTID (gtid_mode = 'auto') if this is a promoted replica; otherwise point the config at the "
        "original server, or move the checkpoint away and re-sync with a full load",
    )


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
    checkpoint: dict[str, Any] | None = None,
    *,
    full_load: bool = False,
    cdc: bool = True,
) -> list[CheckResult]:
    """Connect as the configured user and report on every requirement of the binlog source (and, with
    ``full_load``, of the load: the selected tables are read, so ``selector`` matters there). ``cdc=False``
    (``migration_type = "full-load"``) checks the load's requirements only."""
    load_selector = (selector or (lambda s, t: True)) if full_load or not cdc else None
    return await asyncio.to_thread(_run_checks, cfg, checkpoint, load_selector, cdc)
