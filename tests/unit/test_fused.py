"""The compiled fused row path (sources/postgres/fused.py, _fused.c) against the reference path, byte for byte.

Every case decodes the same frames twice, with the mapper's fused hook (compiled renderer) and without it (the
pure decoder + mapper + orjson, the reference), and compares every record: partition key, bytes, commit time,
label, barrier flag; or, where the reference raises, the same error. Frames are the captured scenario and
random relations and rows of every eligible type (NULLs, unchanged TOAST, unicode, characters JSON escapes,
huge and odd numbers, text outside PostgreSQL's grammar, invalid UTF-8, long text), under the default, a
rename/remove and a reshaping mapping, and ``primary-key`` partition keys (composite keys from the random key
flags, NULL and empty key values, with the ``schema.table.`` prefix and the key in the metadata), with and
without NULLs.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcstream.changes import ChangeEvent
from cdcstream.config import TargetConfig
from cdcstream.errors import DecodeError
from cdcstream.mapping import envelope
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.sources.postgres import fused, values
from cdcstream.sources.postgres.decoder import Decoder

SCENARIO = Path(__file__).parent / "fixtures" / "pgoutput" / "scenario.json"
COMPILED = fused.path_name().startswith("compiled")
needs_compiled = pytest.mark.skipif(not COMPILED, reason=fused.path_name())


@pytest.fixture(autouse=True)
def _fixed_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope, "now_iso", lambda: "2026-12-07T10:00:00.000000Z")


def _rules(*rules: dict[str, Any]) -> MappingRules:
    if not rules:
        return MappingRules()
    sel = {
        "rule-type": "selection",
        "rule-id": "1",
        "rule-name": "all",
        "object-locator": {"schema-name": "%", "table-name": "%"},
        "rule-action": "include",
    }
    return parse_rules({"rules": [sel, *rules]}, "rules.json")


def _tr(rid: int, action: str, column: str, **extra: Any) -> dict[str, Any]:
    return {
        "rule-type": "transformation",
        "rule-id": str(rid),
        "rule-name": f"t{rid}",
        "rule-action": action,
        "rule-target": "column",
        "object-locator": {"schema-name": "%", "table-name": "%", "column-name": column},
        **extra,
    }


def _filtered(column: str) -> MappingRules:
    condition = {"filter-operator": "notnull"}
    rule = {
        "rule-type": "selection",
        "rule-id": "9",
        "rule-name": "f",
        "object-locator": {"schema-name": "%", "table-name": "%"},
        "rule-action": "include",
        "filters": [{"filter-type": "source", "column-name": column, "filter-conditions": [condition]}],
    }
    return parse_rules({"rules": [rule]}, "rules.json")


def _om(key_type: str = "primary-key", **extra: Any) -> dict[str, Any]:
    return {
        "rule-type": "object-mapping",
        "rule-id": "5",
        "rule-name": "om",
        "rule-action": "map-record-to-record",
        "object-locator": {"schema-name": "%", "table-name": "%"},
        "mapping-parameters": {"partition-key-type": key_type, **extra},
    }


PK_TARGETS: dict[str, Any] = {
    "partition_include_schema_table": True,
    "include_partition_value": True,
    "include_transaction_details": True,
}

# name -> (rules, TargetConfig settings beyond the format and include_null_and_empty)
MAPPINGS: dict[str, tuple[MappingRules, dict[str, Any]]] = {
    "default": (_rules(), {}),
    "rename+remove": (_rules(_tr(2, "rename", "c1", value='Renamed "é"'), _tr(3, "remove-column", "c2")), {}),
    "uppercase": (_rules(_tr(2, "convert-uppercase", "%")), {}),
    "filtered": (_filtered("c0"), {}),
    "primary-key": (_rules(_om()), {}),
    "primary-key+schema-table+value": (_rules(_om(), _tr(2, "rename", "c0", value="k")), PK_TARGETS),
    # the reference path: the object mapping reshapes rows
    "primary-key+exclude": (_rules(_om("primary-key", **{"exclude-columns": ["c1"]})), {}),
    "transaction-id": (_rules(_om("transaction-id")), {}),
}


def _run(
    frames: list[bytes], mapping: tuple[MappingRules, dict[str, Any]], include_nulls: bool, compiled: bool
) -> tuple[Any, int]:
    """(the records, or the error, and how many events the compiled path rendered)."""
    rules, extra = mapping
    target = TargetConfig(
        stream_name="s", message_format="json-unformatted", include_null_and_empty=include_nulls, **extra
    )
    mapper = Mapper(rules, target, "task")
    decoder = Decoder(fuse=mapper.fused_columns if compiled else None, types=values.TypeRegistry())
    try:
        items = decoder.feed(frames)
        events = [i for i in items if isinstance(i, ChangeEvent)]
        records = mapper.map(events)
    except DecodeError as exc:
        return ("error", str(exc)), 0
    out = [(r.partition_key, r.data, r.commit_epoch, r.label, r.barrier) for r in records]
    return out, sum(1 for e in events if e.fused is not None)


def _same(frames: list[bytes], mapping: tuple[MappingRules, dict[str, Any]], include_nulls: bool = True) -> int:
    pure, none = _run(frames, mapping, include_nulls, compiled=False)
    compiled, n = _run(frames, mapping, include_nulls, compiled=True)
    assert none == 0
    assert compiled == pure
    return n


# --- captured frames ------------------------------------------------------------------------------------------


@needs_compiled
@pytest.mark.parametrize("name", list(MAPPINGS))
@pytest.mark.parametrize("include_nulls", [True, False])
def test_captured_scenario_identical(name: str, include_nulls: bool) -> None:
    frames = [bytes.fromhex(f) for f in json.loads(SCENARIO.read_text())]
    mapping = (_filtered("id"), {}) if name == "filtered" else MAPPINGS[name]
    rendered = _same(frames, mapping, include_nulls)
    if name in ("filtered", "transaction-id"):
        assert rendered == 0  # the mapping needs the row: the reference path
    elif name != "primary-key+exclude":  # the captured tables have no column c1 to exclude
        assert rendered > 0


def test_pure_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCSTREAM_PURE", "1")
    assert not fused.available()
    assert fused.path_name().startswith("pure")
    frames = [bytes.fromhex(f) for f in json.loads(SCENARIO.read_text())]
    _, rendered = _run(frames, MAPPINGS["default"], True, compiled=True)
    assert rendered == 0


def test_mapping_half() -> None:
    """Only rename/remove mappings in json-unformatted let a source render rows."""
    frames = [bytes.fromhex(f) for f in json.loads(SCENARIO.read_text())]
    decoder = Decoder()
    decoder.feed(frames)
    info = next(p.table for p in decoder.plans.values() if p.table.table == "items")
    compact = TargetConfig(stream_name="s", message_format="json-unformatted")
    names = tuple(c.name for c in info.columns)
    assert Mapper(_rules(), compact, "t").fused_columns(info) == (names, False, None)
    key = tuple(i for i, c in enumerate(info.columns) if c.is_key)
    assert Mapper(_rules(_om()), compact, "t").fused_columns(info) == (names, False, (key, ""))
    prefixed = TargetConfig(stream_name="s", message_format="json-unformatted", partition_include_schema_table=True)
    assert Mapper(_rules(_om()), prefixed, "t").fused_columns(info) == (names, False, (key, "public.items."))
    assert Mapper(_rules(_om("transaction-id")), compact, "t").fused_columns(info) is None
    assert Mapper(_rules(), TargetConfig(stream_name="s", message_format="json"), "t").fused_columns(info) is None
    assert Mapper(MAPPINGS["filtered"][0], compact, "t").fused_columns(info) is None
    cast = _rules(_tr(2, "change-data-type", "qty", **{"data-type": {"type": "string"}}))
    assert Mapper(cast, compact, "t").fused_columns(info) is None


# --- random relations and rows --------------------------------------------------------------------------------

# (type OID, strategy of text values as PostgreSQL prints them)
_DIGITS = st.integers(-(2**70), 2**70).map(str)
_FLOATS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(lambda f: repr(f).replace("inf", "Infinity")),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "1e-05", "1.5e-05", "1e+16", "100", "1e400", "1E5"]),
)
_TS = st.datetimes().map(lambda d: d.isoformat(sep=" "))
_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
_LONG = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=200, max_size=400)
TYPES: list[tuple[int, st.SearchStrategy[str]]] = [
    (values.BOOL, st.sampled_from(["t", "f"])),
    (values.INT2, st.integers(-(2**15), 2**15 - 1).map(str)),
    (values.INT4, st.integers(-(2**31), 2**31 - 1).map(str)),
    (values.INT8, _DIGITS),
    (values.XID8, st.integers(0, 2**64 - 1).map(str)),
    (values.OID, st.integers(0, 2**32 - 1).map(str)),
    (values.TEXT, _TEXT),
    (values.VARCHAR, _TEXT),
    (values.TEXT, st.one_of(_LONG, st.sampled_from(["", ".", "null", "<empty>"]))),
    (values.NUMERIC, st.decimals(allow_nan=False, allow_infinity=False).map(str)),
    (values.UUID, st.uuids().map(str)),
    (values.JSONB, st.sampled_from(['{"a": [1, 2]}', '"x\\"y"', "null", "[]"])),
    (values.JSON, _TEXT),
    (values.FLOAT8, _FLOATS),
    (values.FLOAT4, _FLOATS),
    (values.TIMESTAMPTZ, st.one_of(_TS.map(lambda t: t + "+00"), _TS.map(lambda t: t + "+02"))),
    (values.TIMESTAMP, st.one_of(_TS, st.sampled_from(["infinity", "-infinity", "2000-01-01 00:00:00 BC"]))),
    (values.BYTEA, st.binary(max_size=8).map(lambda b: "\\x" + b.hex())),
    (values.DATE, st.dates().map(str)),
    (values.MONEY, st.sampled_from(["$1.00", "-$1,234.56"])),  # no compiled kind: the reference path
]

# A value is mostly text of its type; sometimes NULL, unchanged TOAST, any text or bytes that are not UTF-8.
_Value = tuple[str, bytes]


def _value(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[_Value]:
    return st.one_of(
        strategy.map(lambda t: ("t", t.encode())),
        strategy.map(lambda t: ("t", t.encode())),
        strategy.map(lambda t: ("t", t.encode())),
        st.just(("n", b"")),
        st.just(("u", b"")),
        _TEXT.map(lambda t: ("t", t.encode())),
        st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"a\xe2\x82", b"\xf4\x90\x80\x80"]).map(
            lambda b: ("t", b)
        ),
    )


def _tuple(cols: list[_Value]) -> bytes:
    out = bytearray(struct.pack("!h", len(cols)))
    for kind, data in cols:
        out += kind.encode()
        if kind == "t":
            out += struct.pack("!i", len(data)) + data
    return bytes(out)


def _w(msg: bytes, lsn: int = 0x100) -> bytes:
    return b"w" + struct.pack("!QQq", lsn, lsn, 0) + msg


@st.composite
def scenarios(draw: st.DrawFn) -> list[bytes]:
    ncols = draw(st.integers(1, 6))
    types = [draw(st.sampled_from(TYPES)) for _ in range(ncols)]
    keys = [i == 0 or draw(st.booleans()) for i in range(ncols)]
    rel = b"R" + struct.pack("!I", 7) + b"public\0t\0" + draw(st.sampled_from([b"d", b"f"])) + struct.pack("!h", ncols)
    for i, ((oid, _), key) in enumerate(zip(types, keys, strict=True)):
        rel += bytes([key]) + f"c{i}".encode() + b"\0" + struct.pack("!Ii", oid, -1)
    frames = [_w(b"B" + struct.pack("!QqI", 0x200, 0, 42)), _w(rel)]

    def row() -> bytes:
        return _tuple([draw(_value(s)) for _, s in types])

    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from("IUUDD"))
        relid = struct.pack("!I", 7)
        if op == "I":
            frames.append(_w(b"I" + relid + b"N" + row()))
        elif op == "U":
            old = draw(st.sampled_from([b"", b"K", b"O"]))
            frames.append(_w(b"U" + relid + (old + row() if old else b"") + b"N" + row()))
        else:
            frames.append(_w(b"D" + relid + draw(st.sampled_from([b"K", b"O"])) + row()))
    frames.append(_w(b"C" + struct.pack("!BQQq", 0, 0x200, 0x210, 0)))
    return frames


@needs_compiled
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frames=scenarios(),
    mapping=st.sampled_from(list(MAPPINGS)),
    include_nulls=st.booleans(),
)
def test_random_rows_identical(frames: list[bytes], mapping: str, include_nulls: bool) -> None:
    """Every record and partition key the same, whatever the relation, its key columns and the values."""
    _same(frames, MAPPINGS[mapping], include_nulls)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(cut=st.integers(0, 200), junk=st.binary(max_size=4))
def test_truncated_and_trailing_bytes_identical(cut: int, junk: bytes) -> None:
    """A malformed message fails with the reference path's own error, whatever the compiled code saw."""
    frames = [bytes.fromhex(f) for f in json.loads(SCENARIO.read_text())]
    for i, f in enumerate(frames):
        if len(f) > 26 and f[25:26] in (b"I", b"U", b"D"):
            broken = [*frames[:i], f[: max(26, len(f) - cut)] + junk]
            _same(broken, MAPPINGS["default"])
            _same(broken, MAPPINGS["primary-key+schema-table+value"])
            break


def _one_row(oid: int, text: bytes) -> list[bytes]:
    rel = b"R" + struct.pack("!I", 7) + b"public\0t\0d" + struct.pack("!h", 1) + b"\1v\0" + struct.pack("!Ii", oid, -1)
    return [
        _w(b"B" + struct.pack("!QqI", 0x200, 0, 42)),
        _w(rel),
        _w(b"I" + struct.pack("!I", 7) + b"N" + _tuple([("t", text)])),
        _w(b"C" + struct.pack("!BQQq", 0, 0x200, 0x210, 0)),
    ]


@needs_compiled
@settings(max_examples=2000, deadline=None)
@given(f=st.floats(allow_nan=False, allow_infinity=False), oid=st.sampled_from([values.FLOAT8, values.FLOAT4]))
def test_every_double_rendered_as_orjson(f: float, oid: int) -> None:
    """Float text as PostgreSQL prints it (shortest round-trip digits) is rendered compiled, never left over."""
    assert _same(_one_row(oid, repr(f).encode()), MAPPINGS["default"]) == 1


@needs_compiled
@settings(max_examples=1000, deadline=None)
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"])))
def test_every_string_rendered_as_orjson(text: str) -> None:
    assert _same(_one_row(values.TEXT, text.encode()), MAPPINGS["default"]) == 1
    assert _same(_one_row(values.TEXT, text.encode()), MAPPINGS["primary-key"]) == 1


@needs_compiled
@pytest.mark.parametrize(
    ("oid", "text"),
    [
        (values.INT8, b"-9223372036854775808"),
        (values.BOOL, b"f"),
        (values.TIMESTAMPTZ, b"2026-12-07 10:00:00.5+00"),
        (values.TIMESTAMP, b"10000-01-01 00:00:00"),
        (values.BYTEA, b"\\x00ff"),
        (values.UUID, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        (values.TEXT, b""),
        (values.TEXT, 'é.€ 😀\n"'.encode()),
        (values.TEXT, b"x" * 300),
    ],
)
def test_primary_key_of_every_kind(oid: int, text: bytes) -> None:
    """A key column of each compiled kind gives the reference path's key text (empty: ``<empty>``)."""
    for name in ("primary-key", "primary-key+schema-table+value"):
        assert _same(_one_row(oid, text), MAPPINGS[name]) == 1


@needs_compiled
def test_float_key_left_to_the_reference_path() -> None:
    """A float's key text is Python's str(): the relation is not compiled, its records are the same."""
    assert _same(_one_row(values.FLOAT8, b"1e+16"), MAPPINGS["primary-key"]) == 0
