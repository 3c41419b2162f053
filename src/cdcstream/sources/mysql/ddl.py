"""Table-scoped DDL from binlog QueryEvents: TRUNCATE TABLE and DROP TABLE, parsed with sqlglot (MySQL dialect).

Only these two statements become events (``TruncateTable`` / ``DropTable`` control records); every other
statement is ignored here, because column names and types come from the table map of each row event, not from
DDL. A statement is first *tokenised* (cheap) to find its leading keyword, and only TRUNCATE/DROP statements are
fully parsed. A statement sqlglot cannot handle raises :class:`UnparsedStatement`, which the source logs with the
statement and skips: an unusual statement never stops the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from cdcstream.changes import Op

_DIALECT = sqlglot.Dialect.get_or_raise("mysql")
_TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "XA", "SAVEPOINT", "RELEASE"})


class UnparsedStatement(Exception):
    """A TRUNCATE/DROP statement (or a statement that could not even be tokenised) sqlglot cannot parse."""


@dataclass(frozen=True, slots=True)
class TableDdl:
    """One table affected by a TRUNCATE or DROP TABLE statement."""

    op: Op
    schema: str
    table: str


def _first_keyword(tokens: list[Any]) -> str:
    for tok in tokens:
        if tok.token_type.name == "SEMICOLON":
            continue
        return str(tok.text).upper()
    return ""


def _parse(query: str) -> list[Any]:
    try:
        statements = _DIALECT.parse(query)
    except SqlglotError as exc:
        raise UnparsedStatement(str(exc).splitlines()[0]) from None
    if any(isinstance(stmt, exp.Command) for stmt in statements):
        # sqlglot falls back to an opaque Command for syntax it does not model: say so, do not guess.
        raise UnparsedStatement("parsed only as an opaque command")
    return statements


def _without_lock_wait(query: str, tokens: list[Any]) -> str | None:
    """``query`` without MariaDB ``WAIT <number>`` / ``NOWAIT`` tokens, or None when it has none."""
    cut: list[tuple[int, int]] = []
    for i, tok in enumerate(tokens):
        word = str(tok.text).upper()
        if tok.token_type.name != "VAR":
            continue
        if word == "NOWAIT":
            cut.append((tok.start, tok.end))
        elif word == "WAIT" and i + 1 < len(tokens) and tokens[i + 1].token_type.name == "NUMBER":
            cut.append((tok.start, tokens[i + 1].end))
    if not cut:
        return None
    out, last = [], 0
    for start, end in cut:
        out.append(query[last:start])
        last = end + 1
    out.append(query[last:])
    return "".join(out)


def parse_ddl(query: str, default_schema: str | None) -> list[TableDdl]:
    """The tables a statement truncates or drops, qualified with ``default_schema`` (the QueryEvent's current
    database) where the statement does not name one. Empty for every other statement."""
    head = query.lstrip()[:10].upper()
    if head.split(" ", 1)[0].rstrip(";") in _TRANSACTION_CONTROL:
        return []
    try:
        tokens = _DIALECT.tokenize(query)
    except SqlglotError as exc:
        raise UnparsedStatement(f"cannot tokenise: {exc}") from None
    keyword = _first_keyword(tokens)
    if keyword not in ("TRUNCATE", "DROP"):
        return []
    try:
        statements = _parse(query)
    except UnparsedStatement:
        # MariaDB's lock-wait clause (``WAIT n`` / ``NOWAIT`` after the table list) is not in sqlglot's MySQL
        # grammar; it never changes which tables are affected, so drop those *tokens* and parse again.
        stripped = _without_lock_wait(query, tokens)
        if stripped is None:
            raise
        statements = _parse(stripped)
    out: list[TableDdl] = []
    for stmt in statements:
        if isinstance(stmt, exp.TruncateTable):
            op = Op.TRUNCATE
        elif isinstance(stmt, exp.Drop) and str(stmt.args.get("kind") or "").upper() == "TABLE":
            if stmt.args.get("temporary"):
                continue  # temporary tables never produce row events, so they are never captured
            op = Op.DROP_TABLE
        else:
            continue  # DROP VIEW / DATABASE / INDEX / ...: not a table's data
        for table in stmt.find_all(exp.Table):
            schema = table.db or default_schema
            if not schema or not table.name:
                raise UnparsedStatement(f"no schema for table {table.name!r} and no current database")
            out.append(TableDdl(op, schema, table.name))
    return out
