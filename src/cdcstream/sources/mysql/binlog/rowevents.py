"""Row events (WRITE/UPDATE/DELETE_ROWS v1 and v2, MySQL's PARTIAL_UPDATE_ROWS) into row dicts (sans-IO).

A row event names its table map by id, then: the column count, the *columns-present* bitmap (for UPDATE one for
the before image and one for the after image), and row images back to back (UPDATE: before, after). Each image
has a NULL bitmap over the columns present, then the non-NULL values (:mod:`.values`).

With ``binlog_row_image = FULL`` every column is present. A session may log ``MINIMAL`` (before image: the
primary key; after image: the columns the statement set), ``NOBLOB`` (no BLOB/TEXT the statement left alone)
or, on MariaDB 11.4+, ``FULL_NODUP``: then the images lack columns, and :class:`Image` says which
(:attr:`Image.missing`) so the reader can fill and mark them instead of losing them silently.

A PARTIAL_UPDATE_ROWS_EVENT (``binlog_row_value_options = PARTIAL_JSON``) has, before each after image, a
``value_options`` integer and, with PARTIAL_JSON_UPDATES, one bit per JSON column of the table telling whether
the column's value is a list of JSON diffs; they are applied to the before image's value
(:func:`.jsonb.apply_diffs`), and a diff whose old value is not in the before image is an error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cdcstream.errors import DecodeError
from cdcstream.sources.mysql import rows as types
from cdcstream.sources.mysql.binlog import events as ev
from cdcstream.sources.mysql.binlog import jsonb
from cdcstream.sources.mysql.binlog.tablemap import table_id as read_table_id
from cdcstream.sources.mysql.binlog.values import Decoder

PARTIAL_JSON_UPDATES = 1


@dataclass(slots=True)
class RowsHeader:
    """The fixed part of a row event: its table, column count, present-column bitmaps and where rows start."""

    table_id: int
    flags: int
    width: int
    present: bytes
    present2: bytes | None
    start: int


def rows_header(raw: bytes, end: int, fmt: ev.Format, code: int) -> RowsHeader:
    """Decode a row event's header (``code``: its plain, uncompressed type)."""
    v1 = code in (ev.WRITE_ROWS_EVENT_V1, ev.UPDATE_ROWS_EVENT_V1, ev.DELETE_ROWS_EVENT_V1)
    post = fmt.post_header_len(code, 8 if v1 else 10)
    if end < ev.HEADER_LEN + post + 1:
        raise DecodeError(f"{ev.type_name(code)} too short")
    tid = read_table_id(raw, post)
    flags_at = ev.HEADER_LEN + (4 if post == 6 else 6)
    flags = int.from_bytes(raw[flags_at : flags_at + 2], "little")
    pos = ev.HEADER_LEN + post
    if post == 10:  # v2: a variable header (extra row info, partition ids) whose length counts its own 2 bytes
        extra = int.from_bytes(raw[ev.HEADER_LEN + 8 : ev.HEADER_LEN + 10], "little")
        if extra < 2:
            raise DecodeError(f"{ev.type_name(code)}: extra header length {extra}")
        pos = ev.HEADER_LEN + 8 + extra
    width, pos = ev.packed_int(raw, pos)
    nbytes = (width + 7) // 8
    present = bytes(raw[pos : pos + nbytes])
    pos += nbytes
    present2 = None
    if code in ev.UPDATE_ROWS:
        present2 = bytes(raw[pos : pos + nbytes])
        pos += nbytes
    if pos > end:
        raise DecodeError(f"{ev.type_name(code)}: the column bitmaps run past the end of the event")
    return RowsHeader(tid, flags, width, present, present2, pos)


def _full_bitmap(n: int) -> bytes:
    return b"\xff" * (n // 8) + (bytes([(1 << (n % 8)) - 1]) if n % 8 else b"")


class Image:
    """How to read one row image with one columns-present bitmap: the decoders of the present columns and the
    names of the missing ones.

    :attr:`read` is generated per image (a straight sequence of decoder calls ending in a dict literal, with
    fixed-width integers unpacked inline), because it runs once per row: a loop over (name, decoder) pairs
    costs a third of the decoding of a typical row."""

    __slots__ = ("columns", "missing", "null_bytes", "present", "read")

    def __init__(self, columns: Sequence[tuple[str, Decoder]], missing: tuple[str, ...], present: tuple[int, ...]):
        self.columns = tuple(columns)
        self.missing = missing
        self.present = present  # indexes of the present columns
        self.null_bytes = (len(self.columns) + 7) // 8
        self.read: Callable[[bytes, int], tuple[dict[str, Any], int]] = _compile(self.columns, self.null_bytes)


def _compile(columns: tuple[tuple[str, Decoder], ...], nb: int) -> Callable[[bytes, int], tuple[dict[str, Any], int]]:
    """``read(buf, pos) -> (row, pos after the image)``: the NULL bitmap, then each present column's value.
    Only generated names (n0, d0, ...) appear in the code; column names and decoders are passed as values."""
    env: dict[str, Any] = {}
    full: list[str] = []  # no NULLs: the common case
    some: list[str] = []  # some NULLs
    for i, (name, dec) in enumerate(columns):
        env[f"n{i}"], env[f"d{i}"] = name, dec
        inline = getattr(dec, "inline", None)
        if inline is not None:  # a struct-unpacked fixed-width value
            env[f"u{i}"] = inline.unpack_from
            step = [f"v{i} = u{i}(buf, pos)[0]", f"pos += {inline.size}"]
        else:
            step = [f"v{i}, pos = d{i}(buf, pos)"]
        full += step
        some += [f"if nulls >> {i} & 1:", f"    v{i} = None", "else:", *(f"    {line}" for line in step)]
    names = ", ".join(f"n{i}: v{i}" for i in range(len(columns)))
    head = "nulls = buf[pos]" if nb == 1 else f"nulls = int.from_bytes(buf[pos : pos + {nb}], 'little')"
    code = "\n".join(
        [
            "def read(buf, pos):",
            f"    {head}",
            f"    pos += {nb}",
            "    if not nulls:",
            *(f"        {line}" for line in full),
            f"        return {{{names}}}, pos",
            *(f"    {line}" for line in some),
            f"    return {{{names}}}, pos",
        ]
    )
    exec(compile(code, "<row image>", "exec"), env)  # code from column positions only, no names or data
    return env["read"]  # type: ignore[no-any-return]


class RowPlan:
    """The decoders of every column of one table version, and the :class:`Image` of each present-columns
    bitmap met so far (almost always just the full one)."""

    __slots__ = ("_images", "decoders", "full", "json_columns", "names", "ncols")

    def __init__(self, names: Sequence[str], decoders: Sequence[Decoder], json_columns: Sequence[int]) -> None:
        self.names = tuple(names)
        self.decoders = tuple(decoders)
        self.ncols = len(self.names)
        self.json_columns = tuple(json_columns)  # indexes of MySQL JSON columns (partial updates)
        self.full = _full_bitmap(self.ncols)
        self._images: dict[bytes, Image] = {}

    def image(self, bitmap: bytes) -> Image:
        img = self._images.get(bitmap)
        if img is None:
            if len(bitmap) != len(self.full):
                raise DecodeError(f"a row event's column bitmap has {len(bitmap)} bytes for {self.ncols} columns")
            present = tuple(i for i in range(self.ncols) if bitmap[i >> 3] >> (i & 7) & 1)
            missing = tuple(self.names[i] for i in range(self.ncols) if i not in set(present))
            img = Image([(self.names[i], self.decoders[i]) for i in present], missing, present)
            self._images[bytes(bitmap)] = img
        return img


def partial_after_image(
    plan: RowPlan, img: Image, buf: bytes, pos: int, before: dict[str, Any]
) -> tuple[dict[str, Any], int]:
    """The after image of a PARTIAL_UPDATE_ROWS_EVENT row: ``value_options``, the partial bits, then the image,
    where a JSON column marked partial holds diffs to apply to ``before``'s value."""
    options, pos = ev.packed_int(buf, pos)
    partial: set[int] = set()
    if options & PARTIAL_JSON_UPDATES:
        nbytes = (len(plan.json_columns) + 7) // 8
        bits = int.from_bytes(buf[pos : pos + nbytes], "little")
        pos += nbytes
        partial = {col for i, col in enumerate(plan.json_columns) if bits >> i & 1}
    if not partial:
        return img.read(buf, pos)
    nulls = int.from_bytes(buf[pos : pos + img.null_bytes], "little")
    pos += img.null_bytes
    row: dict[str, Any] = {}
    for bit, (index, (name, dec)) in enumerate(zip(img.present, img.columns, strict=True)):
        if nulls >> bit & 1:
            row[name] = None
        elif index in partial:
            row[name], pos = _apply_partial(buf, pos, name, before)
        else:
            row[name], pos = dec(buf, pos)
    return row, pos


def _apply_partial(buf: bytes, pos: int, name: str, before: dict[str, Any]) -> tuple[str, int]:
    n = int.from_bytes(buf[pos : pos + 4], "little")  # JSON columns carry a 4-byte length
    end = pos + 4 + n
    if end > len(buf):
        raise DecodeError(f"partial JSON update of column {name} runs past the end of the row event")
    diffs = jsonb.parse_diffs(buf[pos + 4 : end])
    old = before.get(name)
    if name not in before or old is None:
        raise DecodeError(
            f"a partial JSON update (binlog_row_value_options = PARTIAL_JSON) of column {name} needs the old value, "
            "which this row's before image does not have (binlog_row_image is not FULL). Fix: SET GLOBAL "
            "binlog_row_value_options = ''; and binlog_row_image = FULL (sessions too)"
        )
    return jsonb.dumps(jsonb.apply_diffs(_tree(old), diffs)), end


def _tree(text: str) -> jsonb.Node:
    """JSON text back into a :mod:`.jsonb` tree, numbers and literals kept as the text they were."""

    def fix(v: Any) -> jsonb.Node:
        if v is True or v is False or v is None:
            return jsonb.Raw(json.dumps(v))
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v  # type: ignore[no-any-return]

    return fix(json.loads(text, parse_float=jsonb.Raw, parse_int=jsonb.Raw))


def json_column_indexes(column_types: Sequence[int]) -> tuple[int, ...]:
    return tuple(i for i, t in enumerate(column_types) if t == types.JSON)
