"""How cdcstream connects to PostgreSQL: the conninfo (with the session settings every value rendering relies on),
what a failed connect means, and the source's normal connection, opened again whenever it broke."""

from __future__ import annotations

import math
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from cdcstream.config import PostgresSourceConfig
from cdcstream.errors import SourceError
from cdcstream.sources.postgres.replication import classify_connect_failure

# Output formatting of pgoutput proto v1 uses the walsender session's GUCs: pin them so values.py can reshape
# strings instead of parsing them. IntervalStyle=iso_8601 makes intervals ISO 8601 durations (P1DT2H), which
# consumers can parse; lc_monetary is deliberately *not* pinned (it defines what a stored money value means).
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=iso_8601 -c bytea_output=hex -c extra_float_digits=1"
)


def build_conninfo(cfg: PostgresSourceConfig, *, replication: bool) -> str:
    """libpq conninfo from the config. Contains the password: never log it."""
    params: dict[str, Any] = {
        "host": cfg.host,
        "port": cfg.port,
        "user": cfg.user,
        "dbname": cfg.database,
        "sslmode": cfg.sslmode,
        "connect_timeout": max(1, math.ceil(cfg.connect_timeout)),
        "application_name": "cdcstream",
        "options": SESSION_OPTIONS,
    }
    if cfg.password is not None:
        params["password"] = cfg.password.get_secret_value()
    for key in ("sslrootcert", "sslcert", "sslkey"):
        value = getattr(cfg, key)
        if value:
            params[key] = value
    if cfg.target_session_attrs:
        params["target_session_attrs"] = cfg.target_session_attrs
    if replication:
        params["replication"] = "database"
    return make_conninfo(**params)


def connect_error(cfg: PostgresSourceConfig, exc: psycopg.Error) -> SourceError:
    """Classify a failed connect: bad credentials, database or TLS setup are fatal, the rest is retried."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return classify_connect_failure(
        msg, f"cannot connect to PostgreSQL {cfg.user}@{cfg.host}:{cfg.port}/{cfg.database}"
    )


class Session:
    """The source's normal connection (autocommit): checks and setup at start, heartbeats, table checks, type
    descriptions, the lag probe, reloads. Opened when first needed and again after :meth:`reset`."""

    def __init__(self, cfg: PostgresSourceConfig) -> None:
        self._cfg = cfg
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def get(self) -> psycopg.AsyncConnection[Any]:
        """The open connection; a failed connect raises :func:`connect_error`'s error."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                build_conninfo(self._cfg, replication=False), autocommit=True
            )
        except psycopg.Error as exc:
            raise connect_error(self._cfg, exc) from None
        return self._conn

    async def reset(self) -> None:
        """Close it (it failed): the next :meth:`get` connects afresh."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
