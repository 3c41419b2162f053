"""What the binlog does not say about a table, read from the server's catalogue: MariaDB's UUID/INET4/INET6.

MariaDB's table map describes a ``UUID`` or ``INET6`` column as ``BINARY(16)`` and an ``INET4`` column as
``BINARY(4)`` (MariaDB ``plugin/type_uuid``, ``plugin/type_inet``: "transferring ... would require extending the
binary log format to put the exact data type name into the column metadata"). To render them as the server
prints them, the reader asks ``information_schema.COLUMNS`` once per table version that has such a column
(:class:`FixedBinaryTypes`), on a connection of its own, opened only when first needed.

Limits (docs/types.md, "MySQL / MariaDB types"): the catalogue describes the table as it is *now*. The answer is used
only when its column names are those of the table map; a table dropped or renamed since, or one the user has no
privilege on, gives no answer, and its BINARY(16)/BINARY(4) columns are rendered as binary (hex), with a warning
naming the table. A column changed between UUID and BINARY(16) after the change was written, but before the
reader got to it (a backlog), is rendered as the catalogue says now. Any DDL in the stream makes the reader ask
again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pymysql
import structlog

from cdcstream.sources.mysql.binlog.values import FIXED_BINARY_LENGTH

log = structlog.get_logger(__name__)


class FixedBinaryTypes:
    """``lookup(schema, table, names) -> {column: "uuid" | "inet4" | "inet6"}`` over a lazily opened connection."""

    def __init__(self, connect: Callable[[], Any]) -> None:
        self._connect = connect
        self._conn: Any = None

    def lookup(self, schema: str, table: str, names: list[str]) -> dict[str, str] | None:
        """The MariaDB fixed-binary types of the table's columns, or None when the catalogue does not describe
        this version of the table (gone, renamed, altered, or not visible to the user)."""
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = self._connect()
                with self._conn.cursor() as cur:
                    cur.execute(
                        "SELECT COLUMN_NAME, LOWER(DATA_TYPE) FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                        (schema, table),
                    )
                    rows = [(str(n), str(t)) for n, t in cur.fetchall()]
                break
            except pymysql.err.OperationalError:
                self.close()  # a dropped connection: once more on a new one, then let the error stop the reader
                if attempt == 2:
                    raise
        if [n for n, _ in rows] != names:
            return None
        return {n: t for n, t in rows if t in FIXED_BINARY_LENGTH}

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
