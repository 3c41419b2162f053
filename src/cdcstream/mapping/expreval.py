"""What an ``add-column`` expression computes: SQLite's value semantics (numbers from text, comparisons, three-valued
truth), the functions and header values an expression may call, and its operators as closures over the row.

:mod:`cdcstream.mapping.expressions` parses the text and builds an expression from these pieces; per row an
expression is only these closures.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Env = tuple[dict[str, Any], Any]
"""What an expression sees: (source row, ChangeEvent-like object or None)."""

Fn = Callable[[Env], Any]

# Header and metadata values DMS exposes to expressions (the subset that has a meaning for a CDC stream).
HEADERS: dict[str, Callable[[Any], Any]] = {
    "AR_M_SOURCE_SCHEMA": lambda ev: ev.table.schema if ev is not None else None,
    "AR_M_SOURCE_TABLE_NAME": lambda ev: ev.table.table if ev is not None else None,
    "AR_H_STREAM_POSITION": lambda ev: ev.stream_position if ev is not None else None,
    "AR_H_TRANSACTION_ID": lambda ev: ev.transaction_id if ev is not None else None,
    "AR_H_COMMIT_TIMESTAMP": lambda ev: ev.commit_time if ev is not None else None,
    "AR_H_OPERATION": lambda ev: str(ev.op.value).upper() if ev is not None else None,
}


# --- SQLite value semantics ---------------------------------------------------------------------------------


def to_number(v: Any) -> int | float:
    """SQLite numeric affinity: numbers as is, text by its longest numeric prefix (0 when none)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return v
    m = re.match(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?", str(v))
    if not m:
        return 0
    s = m.group(0)
    try:
        return int(s)
    except ValueError:
        return float(s)


def to_text(v: Any) -> str:
    """Text form of a value as SQLite's ``||`` produces it."""
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def truth(v: Any) -> bool | None:
    if v is None:
        return None
    return to_number(v) != 0


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(a: Any, b: Any) -> int:
    """-1/0/1 with numbers compared numerically (also numeric text against a number), else as text."""
    if _is_num(a) or _is_num(b) or isinstance(a, bool) or isinstance(b, bool):
        p, q = to_number(a), to_number(b)
        return (p > q) - (p < q)
    s, t = to_text(a), to_text(b)
    return (s > t) - (s < t)


# --- functions ----------------------------------------------------------------------------------------------


def _nullable(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any) -> Any:
        if any(a is None for a in args):
            return None
        return fn(*args)

    return wrapped


def _substr(s: Any, start: Any, length: Any = None) -> Any:
    text, i = to_text(s), int(to_number(start))
    # SQLite: 1-based; 0 behaves like 1 with one character less; negative counts from the end.
    if i > 0:
        begin = i - 1
    elif i < 0:
        begin = max(len(text) + i, 0)
    else:
        begin = 0
        if length is not None:
            length = int(to_number(length)) - 1
    if length is None:
        return text[begin:]
    n = int(to_number(length))
    if n < 0:
        return text[max(begin + n, 0) : begin]
    return text[begin : begin + n]


def _round(x: Any, digits: Any = 0) -> float:
    return float(round(float(to_number(x)), int(to_number(digits))))


def _trim(kind: str) -> Callable[..., Any]:
    def fn(s: Any, chars: Any = " ") -> str:
        t, c = to_text(s), to_text(chars)
        return t.strip(c) if kind == "both" else t.lstrip(c) if kind == "left" else t.rstrip(c)

    return fn


def _coalesce(*args: Any) -> Any:
    for a in args:
        if a is not None:
            return a
    return None


def _nullif(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return a
    return None if compare(a, b) == 0 else a


def _abs(x: Any) -> int | float:
    return abs(to_number(x))


def _minmax(pick: Callable[[int], bool]) -> Callable[..., Any]:
    def fn(*args: Any) -> Any:
        if any(a is None for a in args):
            return None
        best = args[0]
        for a in args[1:]:
            if pick(compare(a, best)):
                best = a
        return best

    return fn


# name -> (function, min args, max args or None for "any"); NULL-propagating where SQLite's is.
FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int | None]] = {
    "upper": (_nullable(lambda s: to_text(s).upper()), 1, 1),
    "lower": (_nullable(lambda s: to_text(s).lower()), 1, 1),
    "trim": (_nullable(_trim("both")), 1, 2),
    "ltrim": (_nullable(_trim("left")), 1, 2),
    "rtrim": (_nullable(_trim("right")), 1, 2),
    "substr": (_nullable(_substr), 2, 3),
    "substring": (_nullable(_substr), 2, 3),
    "replace": (_nullable(lambda s, a, b: to_text(s).replace(to_text(a), to_text(b)) if to_text(a) else s), 3, 3),
    "length": (_nullable(lambda s: len(to_text(s))), 1, 1),
    "abs": (_nullable(_abs), 1, 1),
    "round": (_nullable(_round), 1, 2),
    "coalesce": (_coalesce, 2, None),
    "ifnull": (_coalesce, 2, 2),
    "nullif": (_nullif, 2, 2),
    "max": (_minmax(lambda c: c > 0), 2, None),
    "min": (_minmax(lambda c: c < 0), 2, None),
}


# --- operators ----------------------------------------------------------------------------------------------


def op_or(a: Fn, b: Fn) -> Fn:
    def fn(env: Env) -> Any:
        x, y = truth(a(env)), truth(b(env))
        if x or y:
            return 1
        return None if x is None or y is None else 0

    return fn


def op_and(a: Fn, b: Fn) -> Fn:
    def fn(env: Env) -> Any:
        x, y = truth(a(env)), truth(b(env))
        if x is False or y is False:
            return 0
        return None if x is None or y is None else 1

    return fn


def op_cmp(a: Fn, b: Fn, test: Callable[[int], bool]) -> Fn:
    def fn(env: Env) -> Any:
        x, y = a(env), b(env)
        if x is None or y is None:
            return None
        return int(test(compare(x, y)))

    return fn


def op_is(a: Fn, b: Fn, negate: bool) -> Fn:
    def fn(env: Env) -> Any:
        x, y = a(env), b(env)
        same = (x is None and y is None) or (x is not None and y is not None and compare(x, y) == 0)
        return int(same != negate)

    return fn


def op_arith(a: Fn, b: Fn, op: str) -> Fn:
    def fn(env: Env) -> Any:
        x, y = a(env), b(env)
        if x is None or y is None:
            return None
        p, q = to_number(x), to_number(y)
        if op == "+":
            return p + q
        if op == "-":
            return p - q
        if op == "*":
            return p * q
        if q == 0:
            return None  # SQLite: division by zero is NULL
        if op == "/":
            if isinstance(p, int) and isinstance(q, int):
                quotient = abs(p) // abs(q)  # exact, truncating toward zero as SQLite does
                return quotient if (p >= 0) == (q >= 0) else -quotient
            return p / q
        if isinstance(p, int) and isinstance(q, int):
            return int(abs(p) % abs(q)) * (1 if p >= 0 else -1)
        return float(p) % float(q)

    return fn


def op_concat(a: Fn, b: Fn) -> Fn:
    def fn(env: Env) -> Any:
        x, y = a(env), b(env)
        if x is None or y is None:
            return None
        return to_text(x) + to_text(y)

    return fn
