"""Rendering of PostgreSQL text values (pgoutput proto v1) into JSON-ready values: every converter and parser."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcstream.sources.postgres import structured
from cdcstream.sources.postgres import values as v


def conv(oid: int, text: str, reg: v.TypeRegistry | None = None) -> object:
    c = (reg or v.TypeRegistry()).converter(oid)
    return text if c is None else c(text)


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (v.BOOL, "t", True),
        (v.BOOL, "f", False),
        (v.INT2, "-32768", -32768),
        (v.INT4, "2147483647", 2147483647),
        (v.INT8, "9223372036854775807", 9223372036854775807),  # exact, no float rounding
        (v.INT8, "-9223372036854775808", -9223372036854775808),
        (v.OID, "4294967295", 4294967295),
        (v.XID, "1140", 1140),
        (v.XID8, "18446744073709551615", 18446744073709551615),
        (v.FLOAT8, "1.5", 1.5),
        (v.FLOAT8, "0.1", 0.1),
        (v.FLOAT8, "1.7976931348623157e+308", 1.7976931348623157e308),
        (v.FLOAT8, "5e-324", 5e-324),
        (v.FLOAT4, "-1e+30", -1e30),
        (v.FLOAT8, "NaN", "NaN"),
        (v.FLOAT8, "Infinity", "Infinity"),
        (v.FLOAT4, "-Infinity", "-Infinity"),
        (v.NUMERIC, "12.50", "12.50"),
        (v.NUMERIC, "NaN", "NaN"),
        (v.NUMERIC, "-Infinity", "-Infinity"),
        (v.NUMERIC, "123456789012345678901234567890.000000001", "123456789012345678901234567890.000000001"),
        (v.MONEY, "$1,234.56", "1234.56"),
        (v.MONEY, "-$92,233,720,368,547,758.08", "-92233720368547758.08"),
        (v.MONEY, "$0.00", "0.00"),
        (v.MONEY, "1.234,56 €", "1.234,56 €"),  # another lc_monetary: passed through, never guessed
        (v.JSON, '{"a": [1, 2]}', '{"a": [1, 2]}'),
        (v.JSONB, '{"a": 1}', '{"a": 1}'),
        (v.BYTEA, "\\x0aff", "0x0aff"),
        (v.BYTEA, "\\x", "0x"),
        (v.TIMESTAMPTZ, "2026-11-27 12:00:00.123456+00", "2026-11-27T12:00:00.123456Z"),
        (v.TIMESTAMPTZ, "2026-11-27 12:00:00+00", "2026-11-27T12:00:00Z"),
        (v.TIMESTAMPTZ, "2026-11-27 12:00:00.12+00", "2026-11-27T12:00:00.12Z"),
        (v.TIMESTAMPTZ, "2026-11-27 13:30:00.5+01:30", "2026-11-27T12:00:00.5Z"),  # a non-UTC session
        (v.TIMESTAMPTZ, "12026-11-27 12:00:00+00", "12026-11-27T12:00:00Z"),
        (v.TIMESTAMPTZ, "infinity", "infinity"),
        (v.TIMESTAMPTZ, "-infinity", "-infinity"),
        (v.TIMESTAMPTZ, "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"),
        (v.TIMESTAMP, "2026-11-27 12:00:00.5", "2026-11-27T12:00:00.5"),
        (v.TIMESTAMP, "infinity", "infinity"),
        (v.TIMESTAMP, "0044-03-15 12:00:00 BC", "0044-03-15 12:00:00 BC"),
        (v.DATE, "2026-11-27", "2026-11-27"),
        (v.DATE, "0044-03-15 BC", "0044-03-15 BC"),
        (v.DATE, "infinity", "infinity"),
        (v.TIME, "23:59:59.999999", "23:59:59.999999"),
        (v.TIMETZ, "12:00:00+05:30", "12:00:00+05:30"),
        (v.INTERVAL, "P1Y2M3DT4H5M6.5S", "P1Y2M3DT4H5M6.5S"),
        (v.TEXT, "text as-is", "text as-is"),
        (v.BPCHAR, "ab  ", "ab  "),  # char(n) keeps its padding
        (v.UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (99999, "user type nobody described", "user type nobody described"),
    ],
)
def test_render_scalar(oid: int, text: str, expected: object) -> None:
    got = conv(oid, text)
    assert got == expected and type(got) is type(expected)


def test_text_like_types_have_no_converter() -> None:
    reg = v.TypeRegistry()
    for oid in (v.TEXT, v.VARCHAR, v.NUMERIC, v.UUID, v.DATE, v.INTERVAL, v.JSON, v.JSONB, 99999):
        assert reg.converter(oid) is None, oid  # the hot loop skips the call


def test_bytea_without_prefix_and_escape_format() -> None:
    reg = v.TypeRegistry(no_hex_prefix=True)
    assert conv(v.BYTEA, "\\xdeadbeef", reg) == "deadbeef"
    assert conv(v.BYTEA, "ab\\\\\\000") == "0x" + b"ab\\\x00".hex()


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ('{"a": [1, 2.5, null, true], "b": {"c": "ü"}}', b'{"a":[1,2.5,null,true],"b":{"c":"\xc3\xbc"}}'),
        ('{"x": 0.1, "y": 1.50, "z": -0.0}', b'{"x":0.1,"y":1.5,"z":-0.0}'),  # same numbers, shortest digits
        ("[1.00000000000000000001, 1e400]", b"[1.00000000000000000001,1e400]"),  # a double cannot: digits kept
        ("[18446744073709551615, -9223372036854775808]", b"[18446744073709551615,-9223372036854775808]"),
        ("[123456789012345678901234567890]", b"[123456789012345678901234567890]"),
        ('{"a": 1, "a": 2}', b'{"a": 1, "a": 2}'),  # json keeps duplicate keys: embedded verbatim
        ('"s"', b'"s"'),
        ("null", b"null"),
    ],
)
def test_json_as_object_is_exact(text: str, written: bytes) -> None:
    got = conv(v.JSONB, text, v.TypeRegistry(json_as="object"))
    assert orjson.dumps(got) == written


def test_json_null_is_not_sql_null() -> None:
    got = conv(v.JSONB, "null", v.TypeRegistry(json_as="object"))
    assert got is not None and orjson.dumps(got) == b"null"


def test_json_as_object_gives_plain_values() -> None:
    got = conv(v.JSON, '{"k": [1, "x"]}', v.TypeRegistry(json_as="object"))
    assert got == {"k": [1, "x"]} and str(got) == str({"k": [1, "x"]})  # deterministic partition key text


# ---- composite text forms -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ("{1,2,NULL}", ["1", "2", None]),
        ('{"NULL",NULL,""}', ["NULL", None, ""]),
        ('{"a b","c,d","e\\"f","g\\\\h","{}"}', ["a b", "c,d", 'e"f', "g\\h", "{}"]),
        ("{{1,2},{3,4}}", [["1", "2"], ["3", "4"]]),
        ("{{{1},{2}},{{3},{4}}}", [[["1"], ["2"]], [["3"], ["4"]]]),
        ("[0:2]={7,8,9}", ["7", "8", "9"]),
        ("[1:1][-1:0]={{5,6}}", [["5", "6"]]),
        ("{ü,日本}", ["ü", "日本"]),
    ],
)
def test_parse_array(text: str, expected: list[Any]) -> None:
    assert structured.parse_array(text) == expected


def test_parse_array_other_delimiter_and_garbage() -> None:
    assert structured.parse_array("{(1,1),(0,0);(2,2),(1,1)}", ";") == ["(1,1),(0,0)", "(2,2),(1,1)"]
    for bad in ("", "{1,2", "{1}x", "1,2"):
        with pytest.raises((ValueError, IndexError)):
            structured.parse_array(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(1,abc)", ["1", "abc"]),
        ("(1,)", ["1", None]),
        ("(,)", [None, None]),
        ('(1,"")', ["1", ""]),
        ('("a b","x""y","c,d","e\\\\f")', ["a b", 'x"y', "c,d", "e\\f"]),
        ("()", [None]),
        ('(,"(1,2)",)', [None, "(1,2)", None]),
    ],
)
def test_parse_record(text: str, expected: list[Any]) -> None:
    assert structured.parse_record(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ('"a"=>"1", "b"=>NULL', {"a": "1", "b": None}),
        ('"k\\"q"=>"v\\\\w", "NULL"=>"NULL"', {'k"q': "v\\w", "NULL": "NULL"}),
        ('"ü"=>""', {"ü": ""}),
    ],
)
def test_parse_hstore(text: str, expected: dict[str, Any]) -> None:
    assert structured.parse_hstore(text) == expected


# ---- the registry: arrays, domains, composites, enums, extension types ---------------------------

ARR_INT4, ARR_BOOL, ARR_TS, ARR_BYTEA, ARR_JSONB, ARR_FLOAT8 = 1007, 1000, 1185, 1001, 3807, 1022


def registry(**kw: Any) -> v.TypeRegistry:
    reg = v.TypeRegistry(**kw)
    reg.add(
        [
            v.PgType(ARR_INT4, "pg_catalog", "_int4", "b", True, elem=v.INT4),
            v.PgType(ARR_BOOL, "pg_catalog", "_bool", "b", True, elem=v.BOOL),
            v.PgType(ARR_TS, "pg_catalog", "_timestamptz", "b", True, elem=v.TIMESTAMPTZ),
            v.PgType(ARR_BYTEA, "pg_catalog", "_bytea", "b", True, elem=v.BYTEA),
            v.PgType(ARR_JSONB, "pg_catalog", "_jsonb", "b", True, elem=v.JSONB),
            v.PgType(ARR_FLOAT8, "pg_catalog", "_float8", "b", True, elem=v.FLOAT8),
            v.PgType(20000, "public", "mood", "e", False),
            v.PgType(20001, "public", "_mood", "b", True, elem=20000),
            v.PgType(20002, "public", "posint", "d", False, base=v.INT4),
            v.PgType(20003, "public", "_posint", "b", True, elem=20002),
            v.PgType(20004, "public", "pair", "c", False, fields=(("n", v.INT4), ("t", v.TIMESTAMPTZ), ("b", v.BOOL))),
            v.PgType(20005, "public", "_pair", "b", True, elem=20004),
            v.PgType(20006, "public", "hstore", "b", False),
            v.PgType(20007, "public", "citext", "b", False),
            v.PgType(20008, "public", "intlist", "d", False, base=ARR_INT4),
            v.PgType(20009, "public", "nest", "c", False, fields=(("p", 20004), ("xs", ARR_INT4))),
            v.PgType(20010, "public", "empty", "c", False),
            v.PgType(3904, "pg_catalog", "int4range", "r", False),
        ]
    )
    return reg


@pytest.mark.parametrize(
    ("oid", "text", "expected"),
    [
        (ARR_INT4, "{1,NULL,-3}", [1, None, -3]),
        (ARR_INT4, "{{1,2},{3,NULL}}", [[1, 2], [3, None]]),
        (ARR_INT4, "{}", []),
        (ARR_BOOL, "{t,f,NULL}", [True, False, None]),
        (ARR_TS, '{"2026-11-27 12:00:00+00",infinity}', ["2026-11-27T12:00:00Z", "infinity"]),
        (ARR_BYTEA, '{"\\\\x0aff",NULL}', ["0x0aff", None]),
        (ARR_FLOAT8, "{1.5,NaN,-Infinity}", [1.5, "NaN", "-Infinity"]),
        (ARR_JSONB, '{"{\\"a\\": 1}",NULL}', ['{"a": 1}', None]),
        (20000, "happy", "happy"),
        (20001, "{sad,happy}", ["sad", "happy"]),
        (20002, "42", 42),
        (20003, "{1,2}", [1, 2]),
        (20004, '(1,"2026-11-27 12:00:00+00",t)', {"n": 1, "t": "2026-11-27T12:00:00Z", "b": True}),
        (20004, "(,,)", {"n": None, "t": None, "b": None}),
        (20005, '{"(1,,f)",NULL}', [{"n": 1, "t": None, "b": False}, None]),
        (20006, '"a"=>"1"', '"a"=>"1"'),
        (20007, "MiXeD", "MiXeD"),
        (20008, "{5,6}", [5, 6]),
        (20009, '("(1,,t)","{1,2}")', {"p": {"n": 1, "t": None, "b": True}, "xs": [1, 2]}),
        (20010, "()", {}),
        (3904, "[1,10)", "[1,10)"),
    ],
)
def test_registry_render(oid: int, text: str, expected: object) -> None:
    assert conv(oid, text, registry()) == expected


def test_registry_options_and_names() -> None:
    reg = registry(hstore_as="object", json_as="object")
    assert conv(20006, '"a"=>"1", "b"=>NULL', reg) == {"a": "1", "b": None}
    got = conv(ARR_JSONB, '{"{\\"a\\": 1}",NULL}', reg)
    assert isinstance(got, list) and orjson.dumps(got) == b'[{"a":1},null]'
    assert reg.name(20000) == "public.mood" and reg.name(v.INT8) == "int8" and reg.name(1) is None


def test_missing_follows_references_and_add_refreshes() -> None:
    reg = v.TypeRegistry()
    assert reg.missing([v.INT4, v.TEXT]) == set()
    assert reg.missing([20005, v.INT4]) == {20005}
    reg.add([v.PgType(20005, "public", "_pair", "b", True, elem=20004)])
    assert reg.missing([20005]) == {20004}  # the element type is needed too
    assert reg.converter(20005) is not None
    assert conv(20005, "{x}", reg) == ["x"]  # element not described yet: text elements
    reg.add([v.PgType(20004, "public", "pair", "c", False, fields=(("n", v.INT4),))])
    assert reg.missing([20005]) == set()
    assert conv(20005, '{"(7)"}', reg) == [{"n": 7}]  # cache cleared by add()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text()), max_size=8))
def test_array_of_text_round_trips(items: list[str | None]) -> None:
    def quote(x: str | None) -> str:
        if x is None:
            return "NULL"
        return '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'

    assert structured.parse_array("{" + ",".join(quote(x) for x in items) + "}") == items


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=6))
def test_record_of_text_round_trips(items: list[str | None]) -> None:
    def quote(x: str | None) -> str:
        if x is None:
            return ""
        return '"' + x.replace("\\", "\\\\").replace('"', '""') + '"'

    assert structured.parse_record("(" + ",".join(quote(x) for x in items) + ")") == items


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), st.one_of(st.none(), st.text()), max_size=6))
def test_hstore_round_trips(d: dict[str, str | None]) -> None:
    def q(x: str) -> str:
        return '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'

    text = ", ".join(f"{q(k)}=>{'NULL' if val is None else q(val)}" for k, val in d.items())
    assert structured.parse_hstore(text) == d


def test_composite_that_does_not_fit_asks_once_then_passes_text() -> None:
    reg = registry()
    conv_pair = reg.converter(20004)
    assert conv_pair is not None
    with pytest.raises(v.NeedTypes) as need:
        conv_pair("(1,2)")  # two fields, the description has three: maybe ALTER TYPE since
    assert need.value.oids == {20004}
    assert conv_pair("(1,2)") == "(1,2)"  # re-described and still no fit: older value, its text, never mislabelled
    with pytest.raises(v.NeedTypes):
        conv_pair("(1,2,3,4)")  # another shape: ask again
