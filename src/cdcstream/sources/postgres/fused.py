"""The fused hot path for PostgreSQL: a pgoutput TupleData straight to a record's JSON ``data`` section.

Why: most of a row's cost on the reference path is building a Python object per value (``bytes.decode``, a
converter, a dict entry) only for ``orjson`` to turn it back into JSON text a moment later. For the common case
the compiled renderer (``_fused.c``) writes the ``data`` section's bytes directly from the message.

Design:

* **Who decides.** Eligibility has two halves, each decided once per relation (per Relation message, and again
  when type descriptions change), never per row:

  - the mapping's half, :meth:`Mapper.fused_columns <cdcstream.mapping.envelope.Mapper.fused_columns>`: records
    in ``json-unformatted``, the table selected with no source filter, no computed, cast or before-image
    columns, no endpoint before image, and either no object mapping (the partition key is ``schema-table``) or
    a ``map-record-to-record`` one keyed by ``primary-key`` that excludes no column and adds no attribute.
    Renames and removed columns are fine: the answer is each source column's output name (or None), whether
    NULLs are written and, for a ``primary-key`` key, its columns (in key order) and prefix (``schema.table.``
    with ``partition_include_schema_table``);
  - the source's half, :func:`kinds`: every column's converter in the
    :class:`~cdcstream.sources.postgres.values.TypeRegistry` is one whose rendering is a reshaping of
    PostgreSQL's text output (text-like types, integers, bool, float4/8, timestamp[tz], bytea; json/jsonb
    with ``json_as = "string"``). Arrays, composites, hstore, money, json as object: the reference path. A
    float key column too: its key text is Python's ``str()`` of the value, which the compiled code does not
    write.

* **Where it plugs in.** The wiring hands the mapper's half to the :class:`~.decoder.Decoder` as a hook (as it
  already hands it the table selector). For an eligible relation the decoder's :class:`~.decoder.RelationPlan`
  holds a compiled :class:`RowPlan`; an Insert, Update or Delete of that relation then becomes a
  ``ChangeEvent`` whose ``fused`` field carries the ``data`` section's bytes (``after``/``before`` None), and
  :class:`~cdcstream.mapping.envelope.Mapper` splices them into the record beside the metadata, which it builds
  as for every other record. A ``schema-table`` key is static; a ``primary-key`` key is rendered by the compiled
  code with the row (``fused_key``): the prefix, then each key column's text as the reference path's
  ``key_text`` writes the decoded value (a string as is, integers' digits, ``true``/``false``, timestamps and
  bytea as in the data section, unquoted and unescaped), NULL - or, in a 'K' old tuple, a key column outside
  the replica identity - as ``null``, joined by '.'. The mapper turns an empty key into ``<empty>`` and puts
  it in ``partition-key-value`` when asked, as for every record; the sink hashes keys over 256 characters.
  Per-key order, positions and the record bytes are unchanged.

* **Runs.** When the daemon maps in process, the decoder hands the compiled code the frame list from a row
  message on (``RowPlan.render_run``): it renders that relation's consecutive row messages as ``render`` would,
  stopping before the first frame it is not sure of (which the decoder handles as always), and the run travels
  as one :class:`~cdcstream.changes.FusedRows`; the mapper writes its records with ``splice_records`` and
  ``clone_records``. Per row no ``ChangeEvent``, position string or render tuple is made.

* **Fallback per message.** The compiled code renders only what it is sure of: a value outside the grammar
  PostgreSQL prints, invalid UTF-8, a truncated message, a non-UTC, BC or infinite timestamp, an integer beyond
  what orjson writes (64 bits), an UPDATE whose new tuple leaves a TOASTed value out under REPLICA IDENTITY FULL
  or leaves out a key column of the partition key:
  ``render`` returns None and that message is decoded by the reference path, which renders it or raises its
  exact error.

* **Reference and switch.** The pure path (decoder + mapper + ``orjson``) is the reference; the differential
  tests (tests/unit/test_fused.py) hold the compiled path to it byte for byte. The extension is optional at
  build time; without it, or with ``CDCSTREAM_PURE=1`` in the environment, nothing here is used. At import the
  float and string renderings are checked against the installed ``orjson`` (whose float formatting has changed
  between releases): on a mismatch floats (or everything) go to the reference path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import orjson

from cdcstream import compiled
from cdcstream.sources.postgres import values

if TYPE_CHECKING:
    from cdcstream.sources.postgres._fused import RowPlan

try:
    from cdcstream.sources.postgres import _fused
except ImportError:  # built without a compiler: the pure path
    _fused = None  # type: ignore[assignment]

STRING, INT, BOOL, FLOAT, TIMESTAMPTZ, TIMESTAMP, BYTEA, BYTEA_BARE = range(8)

FusedKey = tuple[tuple[int, ...], str]
"""A ``primary-key`` partition key: its source columns' indexes, in key order, and its prefix (``schema.table.``
with ``partition_include_schema_table``, else empty)."""

FusedColumns = tuple[tuple[str | None, ...], bool, FusedKey | None]
"""The mapping's half: each source column's output name (None: not in the records), whether NULLs are written,
and the partition key the source must render (None: the key needs no value of the row)."""


def _probe() -> tuple[bool, bool]:
    """(strings and integers render as orjson writes them, floats do): checked once against this orjson."""
    if _fused is None:
        return False, False
    text = "".join(chr(i) for i in range(0x80)) + "é€😀\u2028"
    floats = [
        "0",
        "-0",
        "1",
        "100",
        "1.5",
        "0.1",
        "1e-05",
        "1.5e-05",
        "0.0001",
        "1e-07",
        "1.2345678901234567e-300",
        "1e+16",
        "1.5e+300",
        "5e-324",
        "1.7976931348623157e+308",
        "1234567890123456.8",
        "NaN",
        "-Infinity",
    ]
    plan = _fused.RowPlan(bytes([STRING, INT]), b"\0\0", (b'"a":', b'"b":'), False, (1, 0), b"p.")
    got = plan.render(_tuple([text.encode(), b"-123"]), 0, False)
    basic = got is not None and got[0] == orjson.dumps({"a": text, "b": -123}) and got[3] == f"p.-123.{text}"
    fplan = _fused.RowPlan(bytes([FLOAT]), b"\0", (b'"f":',), False)
    ok_floats = True
    for f in floats:
        r = fplan.render(_tuple([f.encode()]), 0, False)
        if r is None or r[0] != orjson.dumps({"f": values.to_float(f)}):
            ok_floats = False
    return basic, ok_floats


def _tuple(cols: Sequence[bytes | None]) -> bytes:
    """A pgoutput TupleData of text values (None: 'n')."""
    out = bytearray(len(cols).to_bytes(2, "big"))
    for c in cols:
        if c is None:
            out += b"n"
        else:
            out += b"t" + len(c).to_bytes(4, "big") + c
    return bytes(out)


_BASIC, _FLOATS = _probe()


def available() -> bool:
    """Whether the compiled path is built, agrees with this orjson and is not switched off (``CDCSTREAM_PURE``)."""
    return _BASIC and not compiled.pure_requested()


def path_name() -> str:
    """Which row path this process runs, for the start-up log line and ``cdcstream check``."""
    caveat = None if _FLOATS else "float columns pure: orjson formats them differently"
    return compiled.path_name(_fused is not None, _BASIC, caveat)


def kinds(converters: Sequence[values.Converter | None], types: values.TypeRegistry) -> bytes | None:
    """Each column's kind, from the converter the reference path uses for it; None if one has no compiled kind."""
    bytea = types.converter(values.BYTEA)
    scalar: dict[values.Converter, int] = {
        values.to_bool: BOOL,
        values.timestamptz: TIMESTAMPTZ,
        values.timestamp: TIMESTAMP,
    }
    if _FLOATS:
        scalar[values.to_float] = FLOAT
    out = bytearray()
    for conv in converters:
        if conv is None:
            out.append(STRING)
        elif conv is int:
            out.append(INT)
        elif conv is bytea:
            out.append(BYTEA_BARE if types.no_hex_prefix else BYTEA)
        else:
            kind = scalar.get(conv)
            if kind is None:
                return None
            out.append(kind)
    return bytes(out)


def row_plan(
    converters: Sequence[values.Converter | None],
    key_flags: Sequence[bool],
    columns: FusedColumns,
    types: values.TypeRegistry,
) -> RowPlan | None:
    """The compiled renderer of one relation, or None where the reference path must render it."""
    if not available():
        return None
    names, include_nulls, key = columns
    k = kinds(converters, types)
    if k is None or len(names) != len(k):
        return None
    encoded = tuple(None if n is None else orjson.dumps(n) + b":" for n in names)
    if key is None:
        return _fused.RowPlan(k, bytes(key_flags), encoded, not include_nulls)
    indexes, prefix = key
    # A float's key text is Python's str() of the value, which the compiled code does not write.
    if not indexes or any(i >= len(k) or k[i] == FLOAT for i in indexes):
        return None
    try:
        encoded_prefix = prefix.encode()
    except UnicodeEncodeError:
        return None
    return _fused.RowPlan(k, bytes(key_flags), encoded, not include_nulls, indexes, encoded_prefix)
