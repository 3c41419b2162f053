"""Full-load records rendered straight from COPY text (``render_copy`` in _fused.c) against the reference path.

The reference is what a mapping worker did before: the block split and rendered into row dicts
(``CopyBlock.rows``), mapped (``Mapper.map``) and turned into PutRecords entries. Every case maps the same block
both ways with ``map_chunk`` - once with the compiled path switched off (``CDCSTREAM_PURE=1``) - and compares
the partition keys, the record bytes, the entries and the label; where the reference raises, the compiled path
must raise the same error. Blocks are random tables of every type (compiled kinds and not), random key columns
(composite, none: a ``schema.table`` key), random values with NULLs and every character COPY escapes, text
outside PostgreSQL's grammar, invalid UTF-8 and escapes COPY never writes, under the default, rename/remove,
prefixed, object-mapping and reshaping mappings, with and without NULLs.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcstream.changes import Column, LoadLayout, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.mapping import envelope
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.rules import MappingRules
from cdcstream.records import put_records_entry
from cdcstream.sinks.kinesis import MAX_PARTITION_KEY_CHARS, effective_partition_key
from cdcstream.sources.loadengine import new_spec_key
from cdcstream.sources.postgres import fused, values
from cdcstream.sources.postgres.snapshot import CopyBlock, RowSpec
from cdcstream.workers import pool
from cdcstream.workers.pool import map_chunk
from tests.unit.test_fused import MAPPINGS, TYPES, _om, _rules, _tr

COMPILED = fused.path_name().startswith("compiled")
needs_compiled = pytest.mark.skipif(not COMPILED, reason=fused.path_name())


@pytest.fixture(autouse=True)
def _fixed_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope, "now_iso", lambda: "2026-12-07T10:00:00.000000Z")


LOAD_MAPPINGS: dict[str, tuple[MappingRules, dict[str, Any]]] = {
    **MAPPINGS,
    "prefixed": (_rules(), {"partition_include_schema_table": True}),
    "rename-key+prefixed": (_rules(_tr(2, "rename", "c0", value="k")), {"partition_include_schema_table": True}),
    "schema-table": (_rules(_om("schema-table")), {}),
    "partition-value": (_rules(), {"include_partition_value": True}),
}

# COPY TO's escapes (CopyAttributeOutText): these characters, and the delimiter, as two characters.
_COPY_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f", "\v": "\\v"}


def copy_field(value: bytes | None) -> bytes:
    """One value as COPY TO writes it in text format."""
    if value is None:
        return b"\\N"
    try:
        text = value.decode()
    except UnicodeDecodeError:
        return value.replace(b"\\", b"\\\\").replace(b"\t", b"\\t").replace(b"\n", b"\\n")
    return "".join(_COPY_ESCAPES.get(c, c) for c in text).encode()


def _info(oids: list[int], keys: list[bool]) -> TableInfo:
    return TableInfo(
        "public",
        "t",
        tuple(
            Column(f"c{i}", values.BUILTIN_NAMES.get(o, "x"), o, True, k)
            for i, (o, k) in enumerate(zip(oids, keys, strict=True))
        ),
    )


def _spec(oids: list[int], no_hex_prefix: bool = False) -> RowSpec:
    names = tuple(f"c{i}" for i in range(len(oids)))
    return RowSpec(new_spec_key(), names, tuple(oids), (), no_hex_prefix, "string", "string")


def _map(info: TableInfo, block: CopyBlock, mapping: str, include_nulls: bool) -> Any:
    rules, extra = LOAD_MAPPINGS[mapping]
    target = TargetConfig(
        stream_name="s", message_format="json-unformatted", include_null_and_empty=include_nulls, **extra
    )
    mapper = Mapper(rules, target, "task")
    try:
        return map_chunk(mapper, info, block)
    except Exception as exc:  # the reference path's own error, whatever it is (text no server prints)
        return ("error", type(exc).__name__, str(exc))


def _same(info: TableInfo, block: CopyBlock, mapping: str, include_nulls: bool) -> bool:
    """Both paths give the same answer; True when the compiled path rendered the block."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv("CDCSTREAM_PURE", "1")
        pure = _map(info, block, mapping, include_nulls)
    rendered: list[bool] = []
    real = CopyBlock.render_records

    def spy(self: CopyBlock, layout: LoadLayout) -> Any:
        got = real(self, layout)
        rendered.append(got is not None)
        return got

    with pytest.MonkeyPatch.context() as m:
        m.setattr(CopyBlock, "render_records", spy)
        compiled = _map(info, block, mapping, include_nulls)
    assert compiled == pure
    return any(rendered)


# A value: mostly the text of its type; sometimes NULL, any text (with tabs, newlines, backslashes), bytes that
# are not UTF-8.
_ANY_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=20)
_BAD_UTF8 = st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"a\xe2\x82", b"\xf4\x90\x80\x80"])


def _value(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[bytes | None]:
    typed = strategy.map(lambda t: t.encode())
    return st.one_of(typed, typed, typed, st.none(), _ANY_TEXT.map(lambda t: t.encode()), _BAD_UTF8)


@st.composite
def tables(draw: st.DrawFn, types: list[tuple[int, st.SearchStrategy[str]]] = TYPES) -> tuple[TableInfo, CopyBlock]:
    ncols = draw(st.integers(1, 6))
    chosen = [draw(st.sampled_from(types)) for _ in range(ncols)]
    keys = [draw(st.booleans()) for _ in range(ncols)]
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        fields = [copy_field(draw(_value(s))) for _, s in chosen]
        lines.append(b"\t".join(fields) + b"\n")
    oids = [o for o, _ in chosen]
    spec = _spec(oids, no_hex_prefix=draw(st.booleans()))
    return _info(oids, keys), CopyBlock(b"".join(lines), len(lines), spec)


@needs_compiled
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables(), mapping=st.sampled_from(list(LOAD_MAPPINGS)), include_nulls=st.booleans())
def test_random_blocks_identical(table: tuple[TableInfo, CopyBlock], mapping: str, include_nulls: bool) -> None:
    """Every key, record and entry the same, whatever the table, its key columns, the values and the mapping."""
    info, block = table
    _same(info, block, mapping, include_nulls)


# Only the compiled kinds, only values of their type (no NULL keys): every block must be rendered compiled.
_CLEAN = [
    (o, s)
    for o, s in TYPES
    if o not in (values.DATE, values.MONEY, values.JSON, values.INT8, values.FLOAT4, values.FLOAT8)
]
_CLEAN += [(values.INT8, st.integers(-(2**63), 2**63 - 1).map(str))]


@st.composite
def clean_tables(draw: st.DrawFn) -> tuple[TableInfo, CopyBlock]:
    ncols = draw(st.integers(1, 6))
    chosen = [draw(st.sampled_from(_CLEAN)) for _ in range(ncols)]
    keys = [i == 0 or draw(st.booleans()) for i in range(ncols)]  # an object mapping keyed by primary key needs one
    lines = []
    for _ in range(draw(st.integers(1, 5))):
        fields = []
        for (_, s), key in zip(chosen, keys, strict=True):
            ts = s.filter(lambda t: not t.endswith("+02") and not t.endswith("y") and not t.endswith(" BC"))
            fields.append(copy_field(draw(ts.map(str.encode) if key else st.one_of(st.none(), ts.map(str.encode)))))
        lines.append(b"\t".join(fields) + b"\n")
    oids = [o for o, _ in chosen]
    return _info(oids, keys), CopyBlock(b"".join(lines), len(lines), _spec(oids))


@needs_compiled
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(table=clean_tables(), mapping=st.sampled_from(["default", "rename+remove", "prefixed", "primary-key"]))
def test_values_of_their_type_are_rendered_compiled(table: tuple[TableInfo, CopyBlock], mapping: str) -> None:
    info, block = table
    assert _same(info, block, mapping, True)
    assert _same(info, block, mapping, False)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"])), key=st.booleans())
def test_every_string_through_copy_escapes(text: str, key: bool) -> None:
    """Any text, escaped as COPY writes it, comes out as orjson writes it (and as the key text)."""
    info = _info([values.TEXT, values.INT4], [key, not key])
    block = CopyBlock(copy_field(text.encode()) + b"\t1\n", 1, _spec([values.TEXT, values.INT4]))
    assert _same(info, block, "default", True)


@needs_compiled
@pytest.mark.parametrize(
    "line",
    [
        b"1\tx\\qy\n",  # an escape COPY TO never writes
        b"1\tx\\\n",  # a trailing backslash
        b"1\tx\\Ny\n",  # \N inside a value
        b"1\tx\t2\n",  # one field too many
        b"1\n",  # one too few
        b"1\tx",  # no newline
        b"\\N\tx\n",  # a NULL key
        b"1\t\\x41\n",  # a hex escape (COPY FROM reads it, TO never writes it)
    ],
)
def test_framing_outside_copy_to(line: bytes) -> None:
    """What COPY TO does not write goes to the reference path, which renders it or raises its own error."""
    info = _info([values.INT4, values.TEXT], [True, False])
    block = CopyBlock(b"2\tok\n" + line, 2, _spec([values.INT4, values.TEXT]))
    for mapping in ("default", "prefixed"):
        _same(info, block, mapping, True)


@needs_compiled
def test_table_without_columns() -> None:
    """COPY writes an empty line per row of a table without columns: left to the reference path."""
    _same(_info([], []), CopyBlock(b"\n\n", 2, _spec([])), "default", True)


@needs_compiled
def test_empty_and_long_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty key is written as the mapper writes it; a key over 256 characters gets the entry the sink sends
    (its digest), also on the reference path."""
    info = _info([values.TEXT, values.INT4], [True, False])
    long = "é" * 300
    block = CopyBlock(b"\t1\n" + long.encode() + b"\t2\nshort\t3\n", 3, _spec([values.TEXT, values.INT4]))
    assert _same(info, block, "default", True)
    mapper = Mapper(MappingRules(), TargetConfig(stream_name="s", message_format="json-unformatted"), "task")
    out = map_chunk(mapper, info, block)
    assert out is not None
    keys, datas, entries, _ = out
    assert keys == ["<empty>", long, "short"]
    assert entries[1] == put_records_entry(datas[1], effective_partition_key(long))
    assert effective_partition_key(long) != long
    assert pool._MAX_KEY_CHARS == MAX_PARTITION_KEY_CHARS  # copied to spare every worker the sink's import


def test_pure_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCSTREAM_PURE", "1")
    block = CopyBlock(b"1\tx\n", 1, _spec([values.INT4, values.TEXT]))
    mapper = Mapper(MappingRules(), TargetConfig(stream_name="s", message_format="json-unformatted"), "task")
    layout = mapper.load_layout(_info([values.INT4, values.TEXT], [True, False]))
    assert layout is not None
    assert block.render_records(layout) is None


def test_load_layout() -> None:
    """Only rename/remove mappings in json-unformatted without partition-key-value let a chunk write records."""
    info = _info([values.INT4, values.TEXT], [True, False])
    compact = TargetConfig(stream_name="s", message_format="json-unformatted")
    layout = Mapper(MappingRules(), compact, "t").load_layout(info)
    assert layout is not None
    assert (layout.names, layout.key, layout.static_key, layout.label) == (("c0", "c1"), ((0,), ""), None, "public.t")
    assert layout.tail.startswith(b',"metadata":{"timestamp":"2026-12-07T10:00:00.000000Z","record-type":"data"')
    keyless = Mapper(MappingRules(), compact, "t").load_layout(_info([values.INT4, values.TEXT], [False, False]))
    assert keyless is not None
    assert (keyless.key, keyless.static_key) == (None, "public.t")
    for name in ("filtered", "transaction-id", "schema-table", "partition-value", "primary-key+exclude"):
        rules, extra = LOAD_MAPPINGS[name]
        target = TargetConfig(stream_name="s", message_format="json-unformatted", **extra)
        assert Mapper(rules, target, "t").load_layout(_info([values.INT4, values.TEXT], [True, False])) is None
    pretty = TargetConfig(stream_name="s", message_format="json")
    assert Mapper(MappingRules(), pretty, "t").load_layout(info) is None
