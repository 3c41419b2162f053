"""Binlog coordinates (file, offset), the order the binlog gives them, and where the server's binlog ends now.

File names do not sort as text once their sequence number outgrows six digits (``.999999`` is followed by
``.1000000``), so every comparison of positions goes through :class:`BinlogPos`.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import pymysql

from cdcstream.checkpoints.model import Checkpoint, MySQLCheckpoint

ER_PARSE_ERROR = 1064


class BinlogPos(NamedTuple):
    """A binlog coordinate that orders as the binlog does: by the file's sequence number, then the offset."""

    number: int
    pos: int
    file: str

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


def binlog_pos(file: str, pos: int) -> BinlogPos:
    """The :class:`BinlogPos` of ``file`` (``base.000042``) and offset ``pos``."""
    suffix = file.rpartition(".")[2]
    return BinlogPos(int(suffix) if suffix.isdigit() else -1, pos, file)


def position_of(checkpoint: Checkpoint) -> BinlogPos:
    """The binlog position of a checkpoint, or of a snapshot's position (``file`` and ``pos`` keys)."""
    mysql = cast(MySQLCheckpoint, checkpoint)  # another engine's has no file: KeyError
    return binlog_pos(str(mysql["file"]), int(mysql["pos"]))


def binlog_status(cur: Any, *, mariadb: bool) -> tuple[Any, ...] | None:
    """The server's current binlog file and position (the row of its binlog status statement; None when binary
    logging is off), on the cursor ``cur``.

    ``SHOW MASTER STATUS`` was removed in MySQL 8.4: MySQL 8.2+ has ``SHOW BINARY LOG STATUS``, MariaDB 10.5.2+
    ``SHOW BINLOG STATUS`` (it keeps the old name as an alias; the new one is tested here). A server older than
    those answers the new name with a syntax error, and gets the old one. Both need the same privilege
    (REPLICATION CLIENT on MySQL, BINLOG MONITOR on MariaDB)."""
    statements = ("SHOW BINLOG STATUS" if mariadb else "SHOW BINARY LOG STATUS", "SHOW MASTER STATUS")
    for statement in statements:
        try:
            cur.execute(statement)
        except pymysql.err.ProgrammingError as exc:
            if exc.args and exc.args[0] == ER_PARSE_ERROR and statement != statements[-1]:
                continue
            raise
        row = cur.fetchone()
        return tuple(row) if row is not None else None
    return None  # not reached: the last statement returns or raises
