"""Whether the MySQL/MariaDB user may read a table as a load (or a ``reload --table`` copy) does, tried on the
server itself, and the GRANT that fixes it when it may not."""

from __future__ import annotations

from typing import Any

import pymysql

from cdcstream.errors import SourceError

# Server errors of a denied or impossible read (ER_TABLEACCESS_DENIED_ERROR, ER_COLUMNACCESS_DENIED_ERROR,
# ER_DBACCESS_DENIED_ERROR; ER_NO_SUCH_TABLE, ER_BAD_DB_ERROR).
_DENIED = (1142, 1143, 1044)
_MISSING = (1146, 1049)


def quote_table(schema: str, table: str) -> str:
    return f"`{schema.replace('`', '``')}`.`{table.replace('`', '``')}`"


def load_denied(cur: Any, schema: str, table: str) -> bool | None:
    """Whether the connected user may not read every column of ``schema.table`` as a load does (True), may
    (False), or the table does not exist (None). Tried with ``SELECT * … LIMIT 0``, so the server's own rules
    decide (global, schema, table and column grants, roles); a user sees in information_schema only what it
    may use, so a catalog lookup would mistake "denied" for "missing"."""
    try:
        cur.execute(f"SELECT * FROM {quote_table(schema, table)} LIMIT 0")
        cur.fetchall()
    except pymysql.err.MySQLError as exc:
        code = exc.args[0] if exc.args else None
        if code in _DENIED:
            return True
        if code in _MISSING:
            return None
        raise
    return False


def copy_problem(cur: Any, schema: str, table: str, where: str) -> str | None:
    """Why a copy (``reload --table``) cannot read ``schema.table``, with the GRANT that fixes it, or None."""
    name = f"{schema}.{table}"
    try:
        denied = load_denied(cur, schema, table)
        if denied is None:
            return f"table {name} does not exist in {where}"
        if denied:
            cur.execute("SELECT CURRENT_USER()")
            user, _, host = str(cur.fetchone()[0]).rpartition("@")
            return (
                f"user {user}@{host} may not SELECT {name} (or it does not exist: the server does not tell a user "
                "without privileges on it), which the copy reads (streaming it needs no SELECT, copying it does). "
                f"As an administrator: GRANT SELECT ON {quote_table(schema, table)} TO '{user}'@'{host}';"
            )
        cur.execute(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
            "AND TABLE_TYPE = 'BASE TABLE'",
            (schema, table),
        )
        if cur.fetchone() is None:
            return f"{name} is not a table in {where} (a view?)"
    except pymysql.err.MySQLError as exc:
        raise SourceError(f"cannot check whether {name} can be copied: {exc.args[-1]}") from None
    return None
