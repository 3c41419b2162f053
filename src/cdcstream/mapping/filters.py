"""Source filters (a selection rule's ``filters``) compiled into one row predicate per table version.

Values compare as DMS compares them on the source (SQLite semantics): numeric columns as numbers, others as
text, times written as DMS filters write them; a NULL, a NaN or a value that cannot be compared matches nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from cdcstream.changes import Column, TableInfo
from cdcstream.errors import MappingError
from cdcstream.mapping.columns import resolver
from cdcstream.mapping.rules import FilterCondition, SelectionRule

Row = dict[str, Any]
_NUMERIC_TYPES = frozenset(
    {"int2", "int4", "int8", "oid", "float4", "float8", "numeric", "money", "smallint", "integer", "int", "bigint",
     "tinyint", "mediumint", "decimal", "float", "double", "real"}
)  # fmt: skip
_TIME_TYPES = frozenset({"timestamp", "timestamptz", "datetime", "time", "timetz"})


def _condition(c: FilterCondition, column: Column, where: str) -> Callable[[Any], bool]:
    """A predicate on one (non-missing) value. Numeric columns compare as numbers, others as text (SQLite)."""
    tname = column.type_name.lower()
    numeric = tname in _NUMERIC_TYPES
    if c.operator == "null":
        return lambda v: v is None
    if c.operator == "notnull":
        return lambda v: v is not None

    def parse(s: str | None) -> Any:
        assert s is not None
        if numeric:
            try:
                return Decimal(s.strip())
            except InvalidOperation:
                raise MappingError(f"{where}: {s!r} is not a number, but column {column.name!r} is {tname}") from None
        return s

    safe = _safe_predicate(numeric, tname)
    op = c.operator
    if op in ("between", "notbetween"):
        lo, hi = parse(c.start), parse(c.end)
        if op == "between":
            return safe(lambda x: bool(lo <= x <= hi))
        return safe(lambda x: not (lo <= x <= hi))
    val = parse(c.value)
    tests: dict[str, Callable[[Any], bool]] = {
        "eq": lambda x: bool(x == val),
        "noteq": lambda x: bool(x != val),
        "lte": lambda x: bool(x <= val),
        "ste": lambda x: bool(x <= val),
        "gte": lambda x: bool(x >= val),
    }
    return safe(tests[op])


def _safe_predicate(numeric: bool, tname: str) -> Callable[[Callable[[Any], bool]], Callable[[Any], bool]]:
    """Wraps a comparison of normalised values into a predicate on raw values (NULL and NaN match nothing)."""

    def norm(v: Any) -> Any:
        if numeric:
            if isinstance(v, bool):
                return Decimal(int(v))
            try:
                return Decimal(str(v)) if not isinstance(v, int) else v
            except InvalidOperation:
                return None
        if isinstance(v, bool):
            return "true" if v else "false"
        s = v if isinstance(v, str) else str(v)
        if tname in _TIME_TYPES:
            # The source renders 2026-11-27T12:00:00.5Z; DMS filters are written 2026-11-27 12:00:00.
            s = s.replace("T", " ", 1).removesuffix("Z")
        return s

    def safe(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
        def pred(v: Any) -> bool:
            if v is None:
                return False  # SQLite: a comparison with NULL is not true
            x = norm(v)
            if x is None:
                return False
            try:
                return test(x)
            except (InvalidOperation, TypeError):
                return False  # NaN and friends match nothing

        return pred

    return safe


def compile_filter(rules: Sequence[SelectionRule], info: TableInfo) -> Callable[[Row], bool] | None:
    """The row filter of a table: OR over its selecting rules, AND over a rule's filters, OR over conditions.

    A rule without filters selects every row, so then there is no filter at all. A filter column missing from
    the row (a PostgreSQL DELETE carries only the key unless REPLICA IDENTITY FULL; an unchanged TOASTed value)
    does not reject it: the value is unknown, and dropping a DELETE would leave a consumer's copy of the row
    forever (DMS drops such DELETEs; docs/table-mappings.md, "Source filters").
    """
    if not rules or any(not r.filters for r in rules):
        return None
    by_name = {c.name: c for c in info.columns}
    resolve = resolver([c.name for c in info.columns])
    compiled: list[list[tuple[str, list[Callable[[Any], bool]]]]] = []
    for rule in rules:
        preds: list[tuple[str, list[Callable[[Any], bool]]]] = []
        for f in rule.filters:
            name = resolve(f.column)
            if name is None:
                raise MappingError(
                    f"{rule.origin.at(f.json_path + '.column-name')}: {info.schema}.{info.table} has no column "
                    f"{f.column!r} (columns: {', '.join(by_name)})"
                )
            where = rule.origin.at(f.json_path)
            preds.append((name, [_condition(c, by_name[name], where) for c in f.conditions]))
        compiled.append(preds)

    def passes(row: Row) -> bool:
        for preds in compiled:
            for name, conds in preds:
                if name in row:
                    v = row[name]
                    for cond in conds:
                        if cond(v):
                            break
                    else:
                        break
            else:
                return True
        return False

    return passes
