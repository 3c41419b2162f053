"""The MySQL/MariaDB server as the source sees it: how to connect (TLS and timeouts alike for every connection), what
a failed connect means, and what the server says about itself (version, binlog settings and files, its current
binlog position) before streaming starts or resumes.

``cdcstream check`` and the source read the server through the same functions, so they never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pymysql

from cdcstream.config import MySQLSourceConfig
from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.sources.mysql.positions import binlog_status
from cdcstream.sources.mysql.resume import ServerInfo, inspect_resume
from cdcstream.sources.mysql.tls import rsa_failure, ssl_settings, tls_failure

REQUIRED_SETTINGS = {"binlog_format": "ROW", "binlog_row_image": "FULL", "binlog_row_metadata": "FULL"}


def monitor_privilege(mariadb: bool) -> str:
    """The privilege of SHOW BINARY LOGS and the binlog status statement, as the server names it: MariaDB 10.5
    renamed REPLICATION CLIENT to BINLOG MONITOR (the old name is an alias there); MySQL 8.0 to 9.x keep
    REPLICATION CLIENT."""
    return "BINLOG MONITOR" if mariadb else "REPLICATION CLIENT"


def connection_settings(cfg: MySQLSourceConfig) -> dict[str, Any]:
    """PyMySQL keyword arguments for every connection (queries, ``check`` and the binlog stream), so TLS and
    timeouts are the same everywhere. Contains the password: never log them."""
    settings: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "user": cfg.user,
        "connect_timeout": max(1, int(cfg.connect_timeout)),
        # A heartbeat arrives every heartbeat_interval while idle; silence far beyond it means a dead link.
        "read_timeout": max(10, int(cfg.heartbeat_interval * 4)),
        "charset": "utf8mb4",
        **ssl_settings(cfg),
    }
    if cfg.password is not None:
        settings["password"] = cfg.password.get_secret_value()
    return settings


def open_connection(cfg: MySQLSourceConfig) -> pymysql.Connection[Any]:
    """A PyMySQL connection with :func:`connection_settings`; any failure to connect as :func:`connect_error`."""
    try:
        return pymysql.connect(**connection_settings(cfg))
    except (pymysql.err.MySQLError, RuntimeError) as exc:  # RuntimeError: PyMySQL without cryptography
        raise connect_error(cfg, exc) from None


def connect_error(cfg: MySQLSourceConfig, exc: pymysql.err.MySQLError | RuntimeError) -> SourceError:
    """Bad credentials / missing grants / TLS or RSA key exchange failures are fatal; an unreachable or
    restarting server is worth retrying."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    msg = exc.args[1] if len(exc.args) > 1 else str(exc)
    where = f"{cfg.user}@{cfg.host}:{cfg.port}"
    tls = tls_failure(str(msg))
    if tls is not None:
        return SourceError(f"cannot connect to MySQL/MariaDB {where} (ssl_mode = {cfg.ssl_mode!r}): {tls}. ({msg})")
    rsa = rsa_failure(exc)
    if rsa is not None:
        return SourceError(f"cannot connect to MySQL/MariaDB {where} (ssl_mode = {cfg.ssl_mode!r}): {rsa}")
    if code in (1045, 1044, 1698, 1130):
        hint = ""
        if code == 1045 and cfg.ssl_mode == "disabled":
            hint = " (a server with require_secure_transport = ON also refuses plaintext like this: set ssl_mode)"
        return SourceError(f"cannot connect to MySQL/MariaDB {where}: [{code}] {msg}{hint}")
    return SourceConnectionError(f"cannot connect to MySQL/MariaDB {where}: [{code}] {msg}")


def fetch_server_info(
    cfg: MySQLSourceConfig,
    resume: tuple[str, int, str | None] | None = None,
    *,
    at_position: bool = False,
    binlog: bool = True,
) -> tuple[ServerInfo, tuple[str, int, str | None]]:
    """Blocking: version, settings, binlog list and the current position (file, pos, GTID state); with
    ``resume`` (file, pos, GTID), also what the server has of it (``resume.inspect_resume``). ``binlog=False``
    (a full load only) tolerates binary logging off and a user without binlog privileges: the position is then
    empty."""
    conn = open_connection(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            version = str(cur.fetchone()[0])
            cur.execute(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('log_bin', 'binlog_format', 'binlog_row_image', "
                "'binlog_row_metadata', 'gtid_mode', 'gtid_binlog_pos', 'gtid_binlog_state', 'gtid_executed', "
                "'expire_logs_days', 'binlog_expire_logs_seconds', 'server_id', 'binlog_transaction_compression', "
                "'binlog_row_value_options', 'server_uuid', 'binlog_checksum', 'gtid_domain_id')"
            )
            variables = {str(k).lower(): str(v) for k, v in cur.fetchall()}
            mariadb = "mariadb" in version.lower()
            try:
                cur.execute("SHOW BINARY LOGS")
                binlogs = [(str(r[0]), int(r[1])) for r in cur.fetchall()]
                row = binlog_status(cur, mariadb=mariadb)
            except pymysql.err.MySQLError as exc:
                code = exc.args[0] if exc.args else 0
                if not binlog and code in (1227, 1044, 1142, 1381):
                    binlogs, row = [], None
                elif code in (1227, 1044, 1142):
                    raise SourceError(
                        f"user {cfg.user!r} may not list the binary logs: {exc.args[1]}. Fix: GRANT "
                        f"{monitor_privilege(mariadb)} ON *.* TO '{cfg.user}'@'…';"
                    ) from None
                elif code == 1381:  # "You are not using binary logging"
                    binlogs, row = [], None
                else:
                    raise
        info = ServerInfo(version, variables, binlogs)
        if row is None and not binlog:
            return info, ("", 0, None)
        if row is None:
            raise SourceError(
                f"binary logging is off on {cfg.host}:{cfg.port} (log_bin = {variables.get('log_bin', '?')}). Fix: "
                "set log_bin (and server_id) in the server config and restart the server."
            )
        if resume is not None:
            with conn.cursor() as cur:
                inspect_resume(cur, info, *resume, at_position=at_position)
        gtid = variables.get("gtid_binlog_pos") if info.mariadb else variables.get("gtid_executed")
        return info, (str(row[0]), int(row[1]), (gtid or "").replace("\n", "") or None)
    except pymysql.err.MySQLError as exc:
        raise connect_error(cfg, exc) from None
    finally:
        conn.close()


def binlog_bytes_after(binlogs: Sequence[tuple[str, int]], file: str, pos: int) -> int | None:
    """Bytes of binlog after position (file, pos): the rest of that file plus every later file. None when the
    file is no longer listed (purged; ``check`` and start-up report that)."""
    names = [name for name, _size in binlogs]
    if file not in names:
        return None
    i = names.index(file)
    return max(0, binlogs[i][1] - pos) + sum(size for _name, size in binlogs[i + 1 :])


def fetch_binlog_sizes(cfg: MySQLSourceConfig) -> list[tuple[str, int]]:
    """Blocking: ``SHOW BINARY LOGS`` as (file, size) in order (needs BINLOG MONITOR / REPLICATION CLIENT)."""
    conn = open_connection(cfg)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW BINARY LOGS")
            return [(str(r[0]), int(r[1])) for r in cur.fetchall()]
    finally:
        conn.close()


def settings_problems(variables: dict[str, str]) -> list[str]:
    """The required binlog settings that are not set, each with its fix."""
    problems = []
    for key, want in REQUIRED_SETTINGS.items():
        have = variables.get(key, "(not supported by this server version)")
        if have.upper() != want:
            problems.append(
                f"{key} is {have}, cdcstream needs {want} (fix: SET GLOBAL {key} = {want}; and {key} = {want} in "
                "the server config so it survives a restart; sessions already open keep the old value)"
            )
    # binlog_transaction_compression (MySQL's zstd payloads) and binlog_row_value_options = PARTIAL_JSON are
    # decoded (converter.py), so they are no problem; sessions may set them (and binlog_row_image, binlog_format)
    # whatever the global value is, which is why the reader handles what they produce rather than this check.
    return problems
