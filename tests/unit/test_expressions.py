"""The add-column expression evaluator: SQLite semantics, and no way to run anything but arithmetic."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcstream.changes import ChangeEvent, Column, Op, TableInfo
from cdcstream.mapping.expressions import ExpressionError, compile_expression

ROW = {"FIRST_NAME": "Randy", "LAST_NAME": "Marsh", "QTY": 3, "PRICE": "2.50", "N": None, "S": "  pad  "}


def ev(op: Op = Op.UPDATE) -> ChangeEvent:
    info = TableInfo("public", "t", (Column("QTY", "int4"),))
    return ChangeEvent(op, info, ROW, None, 9, "2026-01-01T00:00:00.000000Z", 0.0, "pos", 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$FIRST_NAME||'_'||$LAST_NAME", "Randy_Marsh"),
        ("'it''s'", "it's"),
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7.0 / 2", 3.5),
        ("1 / 0", None),
        ("7 % 3", 1),
        ("$QTY * $PRICE", 7.5),
        ("'a' || 1 + 1", 2),  # || binds tighter than +: ('a'||1)+1 = 0+1... SQLite gives 1? see below
        ("$N || 'x'", None),
        ("coalesce($N, $QTY)", 3),
        ("ifnull($N, 'd')", "d"),
        ("nullif(1, 1)", None),
        ("upper($FIRST_NAME)", "RANDY"),
        ("lower('ABC')", "abc"),
        ("trim($S)", "pad"),
        ("ltrim($S)", "pad  "),
        ("rtrim('xxaxx', 'x')", "xxa"),
        ("substr('abcdef', 2, 3)", "bcd"),
        ("substr('abcdef', -2)", "ef"),
        ("replace('a-b-c', '-', '+')", "a+b+c"),
        ("length($LAST_NAME)", 5),
        ("abs(-4)", 4),
        ("round(2.567, 2)", 2.57),
        ("max(1, 5, 3)", 5),
        ("min('b', 'a')", "a"),
        ("CASE WHEN $QTY > 2 THEN 'many' ELSE 'few' END", "many"),
        ("CASE $QTY WHEN 1 THEN 'one' WHEN 3 THEN 'three' END", "three"),
        ("CASE WHEN $N IS NULL THEN 'null' END", "null"),
        ("CASE WHEN $QTY = 4 THEN 1 END", None),
        ("$QTY >= 3 AND $FIRST_NAME <> 'x'", 1),
        ("NOT $QTY = 3 OR 0", 0),
        ("$N IS NOT NULL", 0),
        ("$AR_M_SOURCE_SCHEMA || '.' || $AR_M_SOURCE_TABLE_NAME", "public.t"),
        ("$AR_H_STREAM_POSITION", "pos"),
        ("operation_indicator('D', 'U', 'I')", "U"),
        ("'10' > 9", 1),
        ("$first_name", "Randy"),  # column names resolve case-insensitively when unique
    ],
)
def test_evaluates(text: str, expected: Any) -> None:
    if text == "'a' || 1 + 1":
        expected = 1  # SQLite: ('a' || 1) + 1 = 'a1' + 1 = 0 + 1
    cols = list(ROW)
    folded = {c.lower(): c for c in cols}

    def resolve(name: str, pos: int) -> str:
        if name in ROW:
            return name
        if name.lower() in folded:
            return folded[name.lower()]
        raise ExpressionError(f"no column {name}", pos)

    assert compile_expression(text, resolve).evaluate(ROW, ev()) == expected


@pytest.mark.parametrize(
    ("text", "position", "fragment"),
    [
        ("$A ||", 5, "unexpected 'end of expression'"),
        ("'open", 0, "unterminated string"),
        ("upper($A", 8, "expected ')'"),
        ("nosuch($A)", 0, "unknown function"),
        ("upper($A, $B)", 0, "takes 1 argument"),
        ("$A ; DROP TABLE x", 3, "unexpected character ';'"),
        ("__import__('os')", 0, "unknown function"),
        ("A", 0, "unknown name 'A'"),
        ("CASE END", 5, "unexpected keyword END"),
        ("CASE 1 ELSE 2 END", 7, "CASE needs at least one WHEN"),
        ("CASE WHEN 1 THEN 2", 18, "expected END"),
        ("", 0, "empty expression"),
        ("1 2", 2, "unexpected '2'"),
    ],
)
def test_errors_name_the_position(text: str, position: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(text)
    assert info.value.position == position
    assert fragment in str(info.value)


def test_unknown_column_reported_by_resolver() -> None:
    def resolve(name: str, pos: int) -> str:
        raise ExpressionError(f"no column {name!r}", pos)

    with pytest.raises(ExpressionError, match=r"at position 6: no column 'B'"):
        compile_expression("$A || $B", lambda n, p: n if n == "A" else resolve(n, p))


TOKENS = ["$A", "$B", "'x'", "'1.5'", "1", "0", "-", "+", "*", "/", "%", "||", "(", ")", ",", "=", "<", ">=", "<>",
          "IS", "NOT", "NULL", "AND", "OR", "CASE", "WHEN", "THEN", "ELSE", "END", "upper", "coalesce", "substr",
          "round", "abs", "1e308", "max", "length", "replace"]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=12),
    st.one_of(st.none(), st.integers(-(10**30), 10**30), st.floats(), st.text(max_size=5), st.booleans()),
    st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=5)),
)
def test_random_token_soup_is_rejected_or_evaluates(tokens: list[str], a: Any, b: Any) -> None:
    """Parsing raises only ExpressionError; evaluation raises nothing but arithmetic errors on extreme values."""
    try:
        expr = compile_expression(" ".join(tokens))
    except ExpressionError:
        return
    with contextlib.suppress(ArithmeticError, ValueError):  # the plan turns these into a MappingError
        expr.evaluate({"A": a, "B": b}, ev())
