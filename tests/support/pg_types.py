"""The PostgreSQL type matrix: one column per type, SQL literals and the documented JSON rendering of each.

Used by tests/integration/test_pg_types.py (the source driven directly) and tests/e2e/test_pg_types_e2e.py
(through the daemon into a Kinesis server). The expected values are docs/types.md, "PostgreSQL types", spelled
out; a change to either must change both.

Each column has exactly ``ROWS`` samples: row *i* of the table holds sample *i* of every column; one more row
holds NULL in every column.
"""

from __future__ import annotations

from typing import Any

ROWS = 4

SETUP_SUPERUSER = ["CREATE EXTENSION IF NOT EXISTS hstore", "CREATE EXTENSION IF NOT EXISTS citext"]

SETUP = [
    "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')",
    "CREATE DOMAIN posint AS int CHECK (VALUE > 0)",
    "CREATE DOMAIN email AS citext",
    "CREATE TYPE pair AS (n int, t timestamptz, s text)",
]

# (column, SQL type, [(SQL literal, expected rendering)] * ROWS)
MATRIX: list[tuple[str, str, list[tuple[str, Any]]]] = [
    ("c_int2", "smallint", [("-32768", -32768), ("0", 0), ("32767", 32767), ("7", 7)]),
    ("c_int4", "integer", [("-2147483648", -2147483648), ("2147483647", 2147483647), ("0", 0), ("-1", -1)]),
    (
        "c_int8",
        "bigint",
        [
            ("-9223372036854775808", -9223372036854775808),
            ("9223372036854775807", 9223372036854775807),
            ("12345678901234567", 12345678901234567),  # > 2^53: a double would round it
            ("0", 0),
        ],
    ),
    (
        "c_numeric",
        "numeric",
        [
            ("12.50", "12.50"),
            ("'NaN'", "NaN"),
            ("'-Infinity'", "-Infinity"),
            (
                "123456789012345678901234567890.000000000000000000001",
                "123456789012345678901234567890.000000000000000000001",
            ),
        ],
    ),
    (
        "c_numeric_s",
        "numeric(12,2)",
        [("0.1", "0.10"), ("-9999999999.99", "-9999999999.99"), ("0", "0.00"), ("12345.678", "12345.68")],
    ),
    ("c_real", "real", [("1.5", 1.5), ("'NaN'", "NaN"), ("'-Infinity'", "-Infinity"), ("0.1", 0.1)]),
    (
        "c_double",
        "double precision",
        [
            ("0.1", 0.1),
            ("'Infinity'", "Infinity"),
            ("1.7976931348623157e308", 1.7976931348623157e308),
            ("-5e-324", -5e-324),
        ],
    ),
    (
        "c_money",
        "money",
        [("1234.56", "1234.56"), ("-92233720368547758.08", "-92233720368547758.08"), ("0", "0.00"), ("0.01", "0.01")],
    ),
    (
        "c_text",
        "text",
        [("'héllo 日本 😀'", "héllo 日本 😀"), ("''", ""), ("E'a\"b\\\\c\\nd'", 'a"b\\c\nd'), ("'NULL'", "NULL")],
    ),
    ("c_varchar", "varchar(10)", [("'abc'", "abc"), ("' '", " "), ("'ü'", "ü"), ("'0123456789'", "0123456789")]),
    ("c_char", "char(5)", [("'ab'", "ab   "), ("''", "     "), ("'abcde'", "abcde"), ("'x'", "x    ")]),
    ("c_name", "name", [("'pg_name'", "pg_name"), ("'Ab C'", "Ab C"), ("''", ""), ("'x'", "x")]),
    ("c_citext", "citext", [("'MiXeD'", "MiXeD"), ("''", ""), ("'ß'", "ß"), ("'a'", "a")]),
    ("c_bytea", "bytea", [("'\\x0aff'", "0x0aff"), ("'\\x'", "0x"), ("'\\x00'", "0x00"), ("'abc'::bytea", "0x616263")]),
    ("c_bool", "boolean", [("true", True), ("false", False), ("'t'", True), ("'no'", False)]),
    (
        "c_date",
        "date",
        [
            ("'2026-11-27'", "2026-11-27"),
            ("'infinity'", "infinity"),
            ("'-infinity'", "-infinity"),
            ("'0044-03-15 BC'", "0044-03-15 BC"),
        ],
    ),
    (
        "c_time",
        "time(6)",
        [
            ("'23:59:59.999999'", "23:59:59.999999"),
            ("'00:00:00'", "00:00:00"),
            ("'24:00:00'", "24:00:00"),
            ("'12:30:00.5'", "12:30:00.5"),
        ],
    ),
    (
        "c_timetz",
        "timetz",
        [
            ("'12:00:00.5+05:30'", "12:00:00.5+05:30"),
            ("'00:00:00+00'", "00:00:00+00"),
            ("'23:59:59-12'", "23:59:59-12"),
            ("'01:02:03.000001+14'", "01:02:03.000001+14"),
        ],
    ),
    (
        "c_timestamp",
        "timestamp",
        [
            ("'2026-11-27 12:00:00.123456'", "2026-11-27T12:00:00.123456"),
            ("'infinity'", "infinity"),
            ("'0044-03-15 12:00:00 BC'", "0044-03-15 12:00:00 BC"),
            ("'294276-12-31 23:59:59.999999'", "294276-12-31T23:59:59.999999"),
        ],
    ),
    (
        "c_timestamptz",
        "timestamptz",
        [
            ("'2026-11-27 13:00:00.5+01'", "2026-11-27T12:00:00.5Z"),
            ("'-infinity'", "-infinity"),
            ("'0044-03-15 12:00:00+00 BC'", "0044-03-15 12:00:00+00 BC"),
            ("'10000-01-01 00:00:00+00'", "10000-01-01T00:00:00Z"),
        ],
    ),
    (
        "c_interval",
        "interval",
        [
            ("'1 year 2 months 3 days 04:05:06.5'", "P1Y2M3DT4H5M6.5S"),
            ("'0'", "PT0S"),
            ("'-1 day'", "P-1D"),
            ("'1 mon -1 day -00:00:01'", "P1M-1DT-1S"),
        ],
    ),
    (
        "c_uuid",
        "uuid",
        [
            ("'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ("'00000000-0000-0000-0000-000000000000'", "00000000-0000-0000-0000-000000000000"),
            ("'ffffffff-ffff-ffff-ffff-ffffffffffff'", "ffffffff-ffff-ffff-ffff-ffffffffffff"),
            ("'12345678-1234-1234-1234-123456789abc'", "12345678-1234-1234-1234-123456789abc"),
        ],
    ),
    (
        "c_json",
        "json",
        [
            ('\'{"b": 1, "a": [1.00000000000000000001]}\'', '{"b": 1, "a": [1.00000000000000000001]}'),
            ("'[]'", "[]"),
            ("'\"ü\"'", '"ü"'),
            ("'null'", "null"),  # JSON null: a value, not SQL NULL
        ],
    ),
    (
        "c_jsonb",
        "jsonb",
        [
            ('\'{"b": 1, "a": [1.0, 12345678901234567890]}\'', '{"a": [1.0, 12345678901234567890], "b": 1}'),
            ("'{}'", "{}"),
            ('\'"x\\"y"\'', '"x\\"y"'),
            ("'null'", "null"),
        ],
    ),
    ("c_xml", "xml", [("'<a x=\"1\">t</a>'", '<a x="1">t</a>'), ("'text'", "text"), ("''", ""), ("'<b/>'", "<b/>")]),
    (
        "c_int_arr",
        "int[]",
        [
            ("'{1,NULL,3}'", [1, None, 3]),
            ("'{{1,2},{3,4}}'", [[1, 2], [3, 4]]),
            ("'{}'", []),
            ("'[0:1]={5,6}'", [5, 6]),
        ],
    ),
    (
        "c_text_arr",
        "text[]",
        [
            ("ARRAY['a b', 'NULL', NULL, 'q\"x', '']", ["a b", "NULL", None, 'q"x', ""]),
            ("'{}'", []),
            ("ARRAY['ü,{}', E'\\\\']", ["ü,{}", "\\"]),
            ("'{{a,b},{c,NULL}}'", [["a", "b"], ["c", None]]),
        ],
    ),
    (
        "c_tstz_arr",
        "timestamptz[]",
        [
            (
                "ARRAY['2026-11-27 12:00:00+00'::timestamptz, NULL, 'infinity']",
                ["2026-11-27T12:00:00Z", None, "infinity"],
            ),
            ("'{}'", []),
            ("ARRAY['2026-11-27 12:00:00.25+02'::timestamptz]", ["2026-11-27T10:00:00.25Z"]),
            ("ARRAY[NULL::timestamptz]", [None]),
        ],
    ),
    (
        "c_numeric_arr",
        "numeric[]",
        [
            ("'{1.50,NaN,NULL}'", ["1.50", "NaN", None]),
            ("'{}'", []),
            ("'{-0.000001}'", ["-0.000001"]),
            ("'{Infinity}'", ["Infinity"]),
        ],
    ),
    (
        "c_float_arr",
        "float8[]",
        [("'{1.5,NaN,-Infinity}'", [1.5, "NaN", "-Infinity"]), ("'{}'", []), ("'{0.1}'", [0.1]), ("'{NULL}'", [None])],
    ),
    (
        "c_bool_arr",
        "boolean[]",
        [("'{t,f,NULL}'", [True, False, None]), ("'{}'", []), ("'{t}'", [True]), ("'{{t},{f}}'", [[True], [False]])],
    ),
    (
        "c_bytea_arr",
        "bytea[]",
        [
            ("ARRAY['\\x0aff'::bytea, NULL]", ["0x0aff", None]),
            ("'{}'", []),
            ("ARRAY[''::bytea]", ["0x"]),
            ("ARRAY['\\x00'::bytea]", ["0x00"]),
        ],
    ),
    (
        "c_jsonb_arr",
        "jsonb[]",
        [
            ("ARRAY['{\"a\": 1}'::jsonb, NULL]", ['{"a": 1}', None]),
            ("'{}'", []),
            ("ARRAY['[1, \"x\"]'::jsonb]", ['[1, "x"]']),
            ("ARRAY['null'::jsonb]", ["null"]),
        ],
    ),
    (
        "c_uuid_arr",
        "uuid[]",
        [
            ("ARRAY['a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid]", ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
            ("'{}'", []),
            ("'{NULL}'", [None]),
            ("'{}'", []),
        ],
    ),
    (
        "c_interval_arr",
        "interval[]",
        [
            ("ARRAY['1 day'::interval, NULL]", ["P1D", None]),
            ("'{}'", []),
            ("ARRAY['-1 hour'::interval]", ["PT-1H"]),
            ("'{}'", []),
        ],
    ),
    ("c_mood", "mood", [("'happy'", "happy"), ("'sad'", "sad"), ("'ok'", "ok"), ("'happy'", "happy")]),
    (
        "c_mood_arr",
        "mood[]",
        [
            ("'{sad,NULL,happy}'", ["sad", None, "happy"]),
            ("'{}'", []),
            ("'{ok}'", ["ok"]),
            ("'{{sad},{ok}}'", [["sad"], ["ok"]]),
        ],
    ),
    ("c_posint", "posint", [("1", 1), ("2147483647", 2147483647), ("42", 42), ("7", 7)]),
    ("c_posint_arr", "posint[]", [("'{1,2}'", [1, 2]), ("'{}'", []), ("'{NULL}'", [None]), ("'{3}'", [3])]),
    ("c_email", "email", [("'A@Example.com'", "A@Example.com"), ("''", ""), ("'b@c'", "b@c"), ("'ü@x'", "ü@x")]),
    (
        "c_pair",
        "pair",
        [
            ("ROW(1, '2026-11-27 12:00:00+00', 'x y')::pair", {"n": 1, "t": "2026-11-27T12:00:00Z", "s": "x y"}),
            ("ROW(NULL, NULL, NULL)::pair", {"n": None, "t": None, "s": None}),
            ("ROW(-5, 'infinity', 'a\"b,c')::pair", {"n": -5, "t": "infinity", "s": 'a"b,c'}),
            ("ROW(0, NULL, '')::pair", {"n": 0, "t": None, "s": ""}),
        ],
    ),
    (
        "c_pair_arr",
        "pair[]",
        [
            ("ARRAY[ROW(1, NULL, 'a')::pair, NULL]", [{"n": 1, "t": None, "s": "a"}, None]),
            ("'{}'", []),
            (
                "ARRAY[ROW(2, '2026-11-27 12:00:00+00', '(x)')::pair]",
                [{"n": 2, "t": "2026-11-27T12:00:00Z", "s": "(x)"}],
            ),
            ("'{}'", []),
        ],
    ),
    (
        "c_int4range",
        "int4range",
        [("'[1,10)'", "[1,10)"), ("'empty'", "empty"), ("'(,5]'", "(,6)"), ("'[3,)'", "[3,)")],
    ),
    (
        "c_tstzrange",
        "tstzrange",
        [
            ("'[2026-01-01,2026-02-01)'", '["2026-01-01 00:00:00+00","2026-02-01 00:00:00+00")'),
            ("'empty'", "empty"),
            ("'(,infinity]'", "(,infinity]"),
            ("'[2026-01-01 00:00:00.5+00,)'", '["2026-01-01 00:00:00.5+00",)'),
        ],
    ),
    (
        "c_multirange",
        "int4multirange",
        [("'{[1,3),[5,7)}'", "{[1,3),[5,7)}"), ("'{}'", "{}"), ("'{(,)}'", "{(,)}"), ("'{[1,2]}'", "{[1,3)}")],
    ),
    (
        "c_inet",
        "inet",
        [
            ("'192.168.0.1/24'", "192.168.0.1/24"),
            ("'::1'", "::1"),
            ("'10.0.0.1'", "10.0.0.1"),
            ("'2001:db8::/32'", "2001:db8::/32"),
        ],
    ),
    (
        "c_cidr",
        "cidr",
        [
            ("'10.0.0.0/8'", "10.0.0.0/8"),
            ("'2001:db8::/32'", "2001:db8::/32"),
            ("'192.168.1'", "192.168.1.0/24"),
            ("'0.0.0.0/0'", "0.0.0.0/0"),
        ],
    ),
    (
        "c_macaddr",
        "macaddr",
        [
            ("'08:00:2B:01:02:03'", "08:00:2b:01:02:03"),
            ("'0800.2b01.0203'", "08:00:2b:01:02:03"),
            ("'ff:ff:ff:ff:ff:ff'", "ff:ff:ff:ff:ff:ff"),
            ("'00:00:00:00:00:00'", "00:00:00:00:00:00"),
        ],
    ),
    (
        "c_macaddr8",
        "macaddr8",
        [
            ("'08:00:2b:01:02:03:04:05'", "08:00:2b:01:02:03:04:05"),
            ("'08:00:2b:01:02:03'", "08:00:2b:ff:fe:01:02:03"),
            ("'00:00:00:00:00:00:00:00'", "00:00:00:00:00:00:00:00"),
            ("'ff:ff:ff:ff:ff:ff:ff:ff'", "ff:ff:ff:ff:ff:ff:ff:ff"),
        ],
    ),
    ("c_bit", "bit(4)", [("B'1010'", "1010"), ("B'0000'", "0000"), ("B'1111'", "1111"), ("B'0001'", "0001")]),
    ("c_varbit", "varbit", [("B'1'", "1"), ("B''", ""), ("B'101010101'", "101010101"), ("B'0'", "0")]),
    (
        "c_tsvector",
        "tsvector",
        [("'a fat cat'", "'a' 'cat' 'fat'"), ("''", ""), ("'x:1A'", "'x':1A"), ("$$'it''s'$$", "'it''s'")],
    ),
    (
        "c_tsquery",
        "tsquery",
        [("'fat & rat'", "'fat' & 'rat'"), ("'!x'", "!'x'"), ("'a <-> b'", "'a' <-> 'b'"), ("'a | b'", "'a' | 'b'")],
    ),
    (
        "c_point",
        "point",
        [("'(1,2)'", "(1,2)"), ("'(-1.5,0)'", "(-1.5,0)"), ("'(0,0)'", "(0,0)"), ("'(1e+20,1)'", "(1e+20,1)")],
    ),
    (
        "c_box",
        "box",
        [
            ("'((0,0),(1,1))'", "(1,1),(0,0)"),
            ("'(2,2),(0,0)'", "(2,2),(0,0)"),
            ("'(1,1),(1,1)'", "(1,1),(1,1)"),
            ("'((0,0),(1,1))'", "(1,1),(0,0)"),
        ],
    ),
    (
        "c_box_arr",
        "box[]",
        [
            ("ARRAY['((0,0),(1,1))'::box, '((2,2),(3,3))'::box]", ["(1,1),(0,0)", "(3,3),(2,2)"]),
            ("'{}'", []),
            ("ARRAY[NULL::box]", [None]),
            ("'{}'", []),
        ],
    ),
    (
        "c_circle",
        "circle",
        [
            ("'<(0,0),1>'", "<(0,0),1>"),
            ("'<(1,2),0.5>'", "<(1,2),0.5>"),
            ("'<(0,0),0>'", "<(0,0),0>"),
            ("'<(0,0),1>'", "<(0,0),1>"),
        ],
    ),
    (
        "c_path",
        "path",
        [
            ("'[(0,0),(1,1)]'", "[(0,0),(1,1)]"),
            ("'((0,0),(1,1))'", "((0,0),(1,1))"),
            ("'[(0,0)]'", "[(0,0)]"),
            ("'[(0,0)]'", "[(0,0)]"),
        ],
    ),
    ("c_oid", "oid", [("4294967295", 4294967295), ("0", 0), ("1", 1), ("16384", 16384)]),
    (
        "c_regclass",
        "regclass",
        [("'pg_class'", "pg_class"), ("'pg_type'", "pg_type"), ("'pg_class'", "pg_class"), ("'pg_type'", "pg_type")],
    ),
    (
        "c_pg_lsn",
        "pg_lsn",
        [
            ("'16/B374D848'", "16/B374D848"),
            ("'0/0'", "0/0"),
            ("'FFFFFFFF/FFFFFFFF'", "FFFFFFFF/FFFFFFFF"),
            ("'0/1'", "0/1"),
        ],
    ),
    (
        "c_hstore",
        "hstore",
        [
            ("'a=>1, b=>NULL'", '"a"=>"1", "b"=>NULL'),
            ("''", ""),
            ("hstore('k\"q', 'v\\w')", '"k\\"q"=>"v\\\\w"'),
            ("'x=>\"\"'", '"x"=>""'),
        ],
    ),
]

# Renderings that change with json_as / hstore_as = "object" (the value as a consumer parses it back).
OBJECT_RENDERING: dict[str, list[Any]] = {
    "c_json": [{"b": 1, "a": [1.0]}, [], "ü", None],
    "c_jsonb": [{"a": [1.0, 12345678901234567890], "b": 1}, {}, 'x"y', None],
    "c_jsonb_arr": [[{"a": 1}, None], [], [[1, "x"]], [None]],
    "c_hstore": [{"a": "1", "b": None}, {}, {'k"q': "v\\w"}, {"x": ""}],
}

COLUMNS = [name for name, _, _ in MATRIX]


def prepare(db: Any) -> None:
    """Create the extensions, types and the ``types`` table in ``db`` (a :class:`tests.support.postgres.PgDb`)."""
    for stmt in SETUP_SUPERUSER:
        db.execute(stmt, superuser=True)
    for stmt in SETUP:
        db.execute(stmt)
    db.execute(create_table_sql())


def create_table_sql(table: str = "types") -> str:
    cols = ", ".join(f"{name} {typ}" for name, typ, _ in MATRIX)
    return f"CREATE TABLE {table} (id int PRIMARY KEY, {cols})"


def insert_sql(row: int, table: str = "types") -> str:
    """INSERT of sample ``row`` (0-based) with id ``row + 1``."""
    vals = ", ".join(samples[row][0] for _, _, samples in MATRIX)
    return f"INSERT INTO {table} (id, {', '.join(COLUMNS)}) VALUES ({row + 1}, {vals})"


def expected(row: int | None, id_: int) -> dict[str, Any]:
    """The rendering of sample ``row`` (None: the all-NULL row) as the decoder produces it (NULLs included)."""
    out: dict[str, Any] = {"id": id_}
    for name, _, samples in MATRIX:
        out[name] = None if row is None else samples[row][1]
    return out
