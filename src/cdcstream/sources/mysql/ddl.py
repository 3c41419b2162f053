"""Table-scoped DDL from binlog QueryEvents, parsed with sqlglot (MySQL dialect).

TRUNCATE TABLE and DROP TABLE become ``TruncateTable`` / ``DropTable`` control records; ALTER TABLE (ADD, DROP,
RENAME, MODIFY and CHANGE COLUMN, RENAME TO) and RENAME TABLE become alter control records (written with
``include_table_alter_operations``). Everything else an ALTER does (indexes, options, partitions, defaults) and
every other statement is ignored here: column names and types of the *rows* come from the table map of each row
event (``binlog_row_metadata=FULL``), never from DDL, so a statement this module misreads can cost a control
record but never a row. A statement is first *tokenised* (cheap) to find its leading keyword, and only
TRUNCATE/DROP/ALTER/RENAME statements are fully parsed. A statement sqlglot cannot handle raises
:class:`UnparsedStatement`, which the source logs with the statement and skips: an unusual statement never stops
the pipeline.

:func:`dml_targets` reads the other kind of statement a QueryEvent can carry: a data change logged as a statement
(a session with ``binlog_format = STATEMENT`` or ``MIXED``), whose rows the binlog does not have. It names the
tables such a statement may write, so the reader can refuse it when one of them is captured
(:func:`captured_dml`). :func:`altered` is what an ALTER or RENAME tells about the table's columns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from cdcstream.changes import Column, Op, TableInfo

_DIALECT = sqlglot.Dialect.get_or_raise("mysql")
# What a statement that cannot even be tokenised must look like to be reported (and logged) as not understood.
_TABLE_DDL = re.compile(
    r"\b(TRUNCATE|DROP\s+TABLE|RENAME\s+TABLE|ALTER\s+(ONLINE\s+|IGNORE\s+)?TABLE)\b", re.IGNORECASE
)
_TRANSACTION_CONTROL = frozenset({"BEGIN", "COMMIT", "ROLLBACK", "XA", "SAVEPOINT", "RELEASE"})


class UnparsedStatement(Exception):
    """A TRUNCATE/DROP/ALTER/RENAME statement (or one that could not even be tokenised) sqlglot cannot parse."""


@dataclass(frozen=True, slots=True)
class TableDdl:
    """One change to one table: truncated, dropped, renamed, or one column added, dropped, renamed or retyped.

    ``column`` is the column's name after the change, ``old_column`` before it; ``type_name`` the column's new
    type as the statement spells it (lower case, without parameters); ``new_schema``/``new_table`` the name
    after a rename.
    """

    op: Op
    schema: str
    table: str
    column: str | None = None
    old_column: str | None = None
    type_name: str | None = None
    new_schema: str | None = None
    new_table: str | None = None


def _alters_a_table(tokens: list[Any]) -> bool:
    words = [str(t.text).upper() for t in tokens if t.token_type.name != "SEMICOLON"][1:3]
    return bool(words) and (words[0] == "TABLE" or (words[0] in ("ONLINE", "IGNORE") and words[1:] == ["TABLE"]))


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


def _cut(query: str, spans: list[tuple[int, int]]) -> str:
    """``query`` without the character spans (inclusive token ``start``/``end`` offsets)."""
    out, last = [], 0
    for start, end in spans:
        out.append(query[last:start])
        last = end + 1
    out.append(query[last:])
    return "".join(out)


def _without_mariadb_clauses(query: str, tokens: list[Any]) -> str | None:
    """``query`` without what sqlglot's MySQL grammar lacks but never changes which table or column is affected:
    MariaDB's lock-wait clause (``WAIT <number>`` / ``NOWAIT``), ``ALTER ONLINE|IGNORE TABLE``, and the ``AS`` of
    ``RENAME AS``. None when it has none of them."""
    cut: list[tuple[int, int]] = []
    for i, tok in enumerate(tokens):
        word = str(tok.text).upper()
        prev = str(tokens[i - 1].text).upper() if i else ""
        if tok.token_type.name == "VAR" and word == "NOWAIT":
            cut.append((tok.start, tok.end))
        elif (
            tok.token_type.name == "VAR"
            and word == "WAIT"
            and i + 1 < len(tokens)
            and tokens[i + 1].token_type.name == "NUMBER"
        ):
            cut.append((tok.start, tokens[i + 1].end))
        elif (i == 1 and prev == "ALTER" and word in ("ONLINE", "IGNORE")) or (
            prev == "RENAME" and tok.token_type.name == "ALIAS"
        ):
            cut.append((tok.start, tok.end))
    return _cut(query, cut) if cut else None


def _qualified(table: exp.Table, default_schema: str | None) -> tuple[str, str]:
    schema = table.db or default_schema
    if not schema or not table.name:
        raise UnparsedStatement(f"no schema for table {table.name!r} and no current database")
    return schema, table.name


def _type(kind: Any) -> str | None:
    if not isinstance(kind, exp.DataType):
        return None
    return kind.sql(dialect="mysql").split("(", 1)[0].strip().lower()


def _alter(stmt: exp.Alter, default_schema: str | None) -> list[TableDdl]:
    if str(stmt.args.get("kind") or "").upper() != "TABLE":
        return []  # ALTER VIEW / DATABASE / ...: not a table's columns
    schema, table = _qualified(stmt.this, default_schema)
    out: list[TableDdl] = []
    for action in stmt.args.get("actions") or ():
        if isinstance(action, exp.ColumnDef):
            out.append(TableDdl(Op.ADD_COLUMN, schema, table, action.name, None, _type(action.args.get("kind"))))
        elif isinstance(action, exp.Drop) and str(action.args.get("kind") or "").upper() == "COLUMN":
            for col in action.args.get("tables") or ():
                out.append(TableDdl(Op.DROP_COLUMN, schema, table, None, col.name))
        elif isinstance(action, exp.RenameColumn):
            out.append(TableDdl(Op.RENAME_COLUMN, schema, table, action.args["to"].name, action.this.name))
        elif isinstance(action, exp.ModifyColumn):
            col = action.this
            new_type = _type(col.args.get("kind"))
            old = action.args.get("rename_from")
            if old is not None and old.name != col.name:
                out.append(TableDdl(Op.CHANGE_COLUMNS, schema, table, col.name, old.name, new_type))
            else:
                out.append(TableDdl(Op.COLUMN_TYPE_CHANGE, schema, table, col.name, col.name, new_type))
        elif isinstance(action, exp.AlterRename):
            new_schema, new_table = _qualified(action.this, schema)
            out.append(TableDdl(Op.RENAME_TABLE, schema, table, new_schema=new_schema, new_table=new_table))
    return out


def _rename_tables(query: str, default_schema: str | None) -> list[TableDdl]:
    """``RENAME TABLE a TO b [, c TO d ...]`` (sqlglot keeps RENAME as an opaque command): read from tokens."""
    body = query.lstrip().lstrip(";").lstrip()[len("RENAME") :].lstrip()
    if body[:5].upper() != "TABLE":
        return []  # RENAME USER
    try:
        tokens = _DIALECT.tokenize(body[5:])
    except SqlglotError as exc:
        raise UnparsedStatement(f"cannot tokenise: {exc}") from None
    names: list[list[str]] = [[]]
    i = 0
    while i < len(tokens):
        tok, word = tokens[i], str(tokens[i].text)
        kind = tok.token_type.name
        if kind in ("VAR", "IDENTIFIER") and not (kind == "VAR" and word.upper() in ("TO", "WAIT", "NOWAIT")):
            names[-1].append(word)
        elif kind == "DOT":
            pass
        elif (kind == "VAR" and word.upper() == "TO") or kind == "COMMA":
            names.append([])
        elif word.upper() in ("WAIT", "NOWAIT"):
            i += 2 if word.upper() == "WAIT" else 1
            continue
        elif kind != "SEMICOLON":
            raise UnparsedStatement(f"unexpected {word!r} in RENAME TABLE")
        i += 1
    if len(names) % 2 or any(not 1 <= len(n) <= 2 for n in names):
        raise UnparsedStatement("RENAME TABLE is not a list of 'old TO new' pairs")
    out = []
    for old, new in zip(names[::2], names[1::2], strict=True):
        schema, table = (old[0], old[1]) if len(old) == 2 else (default_schema, old[0])
        new_schema, new_table = (new[0], new[1]) if len(new) == 2 else (default_schema, new[0])
        if not schema or not new_schema:
            raise UnparsedStatement(f"no schema for table {old[-1]!r} and no current database")
        out.append(TableDdl(Op.RENAME_TABLE, schema, table, new_schema=new_schema, new_table=new_table))
    return out


def parse_ddl(query: str, default_schema: str | None) -> list[TableDdl]:
    """The table changes of a statement, qualified with ``default_schema`` (the QueryEvent's current database)
    where the statement does not name one. Empty for every statement that changes no table's data or columns."""
    head = query.lstrip()[:10].upper()
    if head.split(" ", 1)[0].rstrip(";") in _TRANSACTION_CONTROL:
        return []
    try:
        tokens = _DIALECT.tokenize(query)
    except SqlglotError as exc:
        if not _TABLE_DDL.search(query[:500]):
            return []  # not a statement about a table (and possibly one with a password: never logged)
        raise UnparsedStatement(f"cannot tokenise: {exc}") from None
    keyword = _first_keyword(tokens)
    if keyword == "RENAME":
        return _rename_tables(query, default_schema)
    if keyword not in ("TRUNCATE", "DROP", "ALTER"):
        return []
    if keyword == "ALTER" and not _alters_a_table(tokens):
        return []  # ALTER USER / DATABASE / VIEW / EVENT ...: nothing of a table's (and ALTER USER is never logged)
    try:
        statements = _parse(query)
    except UnparsedStatement:
        # Drop the *tokens* of MariaDB clauses sqlglot does not know (they never change which table or column
        # is affected) and parse again.
        stripped = _without_mariadb_clauses(query, tokens)
        if stripped is None:
            raise
        statements = _parse(stripped)
    out: list[TableDdl] = []
    for stmt in statements:
        if isinstance(stmt, exp.Alter):
            out.extend(_alter(stmt, default_schema))
            continue
        if isinstance(stmt, exp.TruncateTable):
            op = Op.TRUNCATE
        elif isinstance(stmt, exp.Drop) and str(stmt.args.get("kind") or "").upper() == "TABLE":
            if stmt.args.get("temporary"):
                continue  # temporary tables never produce row events, so they are never captured
            op = Op.DROP_TABLE
        else:
            continue  # DROP VIEW / DATABASE / INDEX / ...: not a table's data
        for table in stmt.find_all(exp.Table):
            out.append(TableDdl(op, *_qualified(table, default_schema)))
    return out


_DML = frozenset({"INSERT", "REPLACE", "UPDATE", "DELETE", "LOAD", "CREATE", "WITH"})
_NAME_TOKENS = frozenset({"VAR", "IDENTIFIER"})
# Modifiers sqlglot's grammar lacks between UPDATE/DELETE and the table; they never change which table is written.
_DML_MODIFIERS = frozenset({"LOW_PRIORITY", "QUICK", "IGNORE", "HIGH_PRIORITY", "DELAYED"})


def _name_after(tokens: list[Any], i: int, default_schema: str | None) -> tuple[str, str]:
    """The (schema, table) name starting at token ``i`` (an unquoted name may be tokenised as a keyword)."""
    parts: list[str] = []
    while i < len(tokens):
        tok = tokens[i]
        if tok.token_type.name not in _NAME_TOKENS and not str(tok.text).isidentifier():
            break
        parts.append(str(tok.text))
        if i + 1 < len(tokens) and tokens[i + 1].token_type.name == "DOT":
            i += 2
            continue
        break
    if not parts or len(parts) > 2:
        raise UnparsedStatement("no table name where one was expected")
    if len(parts) == 2:
        return parts[0], parts[1]
    if not default_schema:
        raise UnparsedStatement(f"no schema for table {parts[0]!r} and no current database")
    return default_schema, parts[0]


def dml_targets(query: str, default_schema: str | None) -> list[tuple[str, str]]:
    """The tables a data-changing statement may write (INSERT/REPLACE and LOAD DATA: the target; UPDATE and
    DELETE: every table they name, as a multi-table statement may write any of them; CREATE TABLE ... SELECT:
    the new table). Empty for every other statement; :class:`UnparsedStatement` when it changes data but its
    tables cannot be read."""
    head = query.lstrip()[:12].upper()
    if head.split(" ", 1)[0].rstrip(";") in _TRANSACTION_CONTROL:
        return []
    text = query.lstrip()
    if head.startswith("REPLACE"):  # the tokenizer takes REPLACE for a command; its syntax is INSERT's
        text = "INSERT" + text[len("REPLACE") :]
    try:
        tokens = [t for t in _DIALECT.tokenize(text) if t.token_type.name != "SEMICOLON"]
    except SqlglotError as exc:
        if head.split(" ", 1)[0] in _DML:
            raise UnparsedStatement(f"cannot tokenise: {exc}") from None
        return []
    keyword = _first_keyword(tokens)
    if keyword not in _DML:
        return []
    words = [str(t.text).upper() for t in tokens]
    if keyword in ("INSERT", "REPLACE"):
        i = 1
        while i < len(tokens) and words[i] in _DML_MODIFIERS | {"INTO"}:
            i += 1
        return [_name_after(tokens, i, default_schema)]
    if keyword == "LOAD":
        return _load_target(tokens, words, default_schema)
    if keyword == "CREATE":
        return _create_target(tokens, words, default_schema)
    return _named_tables(text, tokens, words, default_schema)


def _load_target(tokens: list[Any], words: list[str], default_schema: str | None) -> list[tuple[str, str]]:
    """The table LOAD DATA / LOAD XML writes (``INTO TABLE t``)."""
    for i in range(len(tokens) - 2):
        if words[i] == "INTO" and words[i + 1] == "TABLE":
            return [_name_after(tokens, i + 2, default_schema)]
    if "XML" in words[:3] or "DATA" in words[:3]:
        raise UnparsedStatement("LOAD DATA without INTO TABLE")
    return []  # LOAD INDEX INTO CACHE and the like


def _create_target(tokens: list[Any], words: list[str], default_schema: str | None) -> list[tuple[str, str]]:
    """The table CREATE TABLE ... SELECT fills."""
    if "TABLE" not in words[1:4] or "SELECT" not in words:
        return []  # no rows come with it (a table's rows always arrive as row events or statements)
    i = words.index("TABLE") + 1
    if words[i : i + 3] == ["IF", "NOT", "EXISTS"]:
        i += 3
    return [_name_after(tokens, i, default_schema)]


def _named_tables(text: str, tokens: list[Any], words: list[str], default_schema: str | None) -> list[tuple[str, str]]:
    """Every table an UPDATE or DELETE names (a multi-table statement may write any of them)."""
    cut = [(t.start, t.end) for t, w in zip(tokens, words, strict=True) if w in _DML_MODIFIERS - {"IGNORE"}]
    statements = _parse(_cut(text, cut) if cut else text)
    out: list[tuple[str, str]] = []
    for stmt in statements:
        if stmt is None:  # an empty statement between semicolons
            continue
        for table in stmt.find_all(exp.Table):
            if table.name:
                out.append(_qualified(table, default_schema))
    if not out:
        raise UnparsedStatement("a data change naming no table")
    return out


def captured_dml(
    query: str,
    schema: str | None,
    selected: Callable[[str, str], bool],
    schema_captured: Callable[[str], bool],
) -> str | None:
    """What a data change logged as a statement would change of the captured tables (``"a change of s.t"``,
    or that its tables cannot be read), None when it changes none of them. ``schema``: the statement's default
    schema; ``schema_captured``: whether a table of that schema may be captured at all."""
    try:
        targets = dml_targets(query, schema)
    except UnparsedStatement as exc:
        if schema is not None and not schema_captured(schema):
            return None
        return f"a data change whose tables cannot be read ({exc})"
    hit = [f"{s}.{t}" for s, t in targets if selected(s, t)]
    return f"a change of {', '.join(sorted(set(hit)))}" if hit else None


def altered(info: TableInfo, ddl: TableDdl) -> TableInfo:
    """``info`` after one ALTER/RENAME: the best the statement tells until the next table map says exactly."""
    if ddl.op is Op.RENAME_TABLE:
        return TableInfo(ddl.new_schema or info.schema, ddl.new_table or info.table, info.columns)
    cols = list(info.columns)
    names = [c.name for c in cols]
    typed = ddl.type_name or "unknown"
    if ddl.op is Op.ADD_COLUMN and ddl.column and ddl.column not in names:
        cols.append(Column(ddl.column, typed))
    elif ddl.op is Op.DROP_COLUMN:
        cols = [c for c in cols if c.name != ddl.old_column]
    elif ddl.old_column in names and ddl.column:
        i = names.index(ddl.old_column)
        c = cols[i]
        cols[i] = Column(ddl.column, ddl.type_name or c.type_name, c.type_id, c.nullable, c.is_key)
    return TableInfo(info.schema, info.table, tuple(cols))
