"""Binlog events without a server, for the decoder's unit and fuzz tests (tests/unit/test_mysql_binlog.py,
test_fuzz_mysql.py, scripts/fuzz_mysql_rows.py): events read from binlog files, events built from parts, and
table maps given the optional metadata (names, key) the files' MINIMAL ``binlog_row_metadata`` left out.

The binlog files are the ones Debian's ``mariadb-test-data`` package installs (MariaDB's own test suite, GPL):
read from the installed path, never copied into this repository.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zstandard

from cdcstream.sources.mysql.binlog import events as ev
from cdcstream.sources.mysql.binlog.charsets import Charsets
from cdcstream.sources.mysql.converter import EventConverter

STD_DATA = Path("/usr/share/mysql/mysql-test/std_data")
MYSQL_80 = STD_DATA / "mdev35643_mysql_80_binlog.000001"  # recorded by MySQL 8.0.40 (rpl_from_mysql80.test)
MYSQL_80_STM = STD_DATA / "rpl" / "mysql-8.0.13-stm-temporal-round-binlog.000001"


def read_binlog(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, event) of every event of a binlog file."""
    data = path.read_bytes()
    assert data[:4] == ev.BINLOG_MAGIC, path
    pos = 4
    while pos < len(data):
        size = int.from_bytes(data[pos + 9 : pos + 13], "little")
        yield pos, data[pos : pos + size]
        pos += size


def event(
    code: int,
    body: bytes,
    *,
    log_pos: int,
    timestamp: int = 1_700_000_000,
    server_id: int = 1,
    flags: int = 0,
    checksum: bool = True,
) -> bytes:
    """One event of type ``code``: the header, ``body`` (post-header and payload), and its CRC32."""
    size = ev.HEADER_LEN + len(body) + (ev.CHECKSUM_LEN if checksum else 0)
    raw = struct.pack("<IBIIIH", timestamp, code, server_id, size, log_pos, flags) + body
    return ev.with_checksum(raw) if checksum else raw


def resize(raw: bytes, body: bytes, *, checksum: bool) -> bytes:
    """``raw``'s header with a new body (size and checksum recomputed)."""
    size = ev.HEADER_LEN + len(body) + (ev.CHECKSUM_LEN if checksum else 0)
    head = bytearray(raw[: ev.HEADER_LEN])
    head[9:13] = size.to_bytes(4, "little")
    out = bytes(head) + body
    return ev.with_checksum(out) if checksum else out


def _packed(n: int) -> bytes:
    if n < 251:
        return bytes([n])
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    return b"\xfd" + n.to_bytes(3, "little")


def _field(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + _packed(len(value)) + value


def with_names(raw: bytes, names: list[str], primary_key: list[int], *, checksum: bool = True) -> bytes:
    """A TABLE_MAP_EVENT with COLUMN_NAME and SIMPLE_PRIMARY_KEY optional metadata added, as a server with
    ``binlog_row_metadata = FULL`` writes them."""
    end = len(raw) - (ev.CHECKSUM_LEN if checksum else 0)
    names_field = b"".join(_packed(len(n.encode())) + n.encode() for n in names)
    body = bytes(raw[ev.HEADER_LEN : end]) + _field(4, names_field) + _field(8, b"".join(map(_packed, primary_key)))
    return resize(raw, body, checksum=checksum)


def payload_events(raw: bytes) -> list[bytes]:
    """The events inside a MySQL TRANSACTION_PAYLOAD_EVENT (checksummed), decompressed."""
    from cdcstream.sources.mysql.binlog.compression import mysql_payload_events

    return list(mysql_payload_events(raw, len(raw) - ev.CHECKSUM_LEN))


def mysql_payload(inner: list[bytes], like: bytes, *, compress: bool = True) -> bytes:
    """A TRANSACTION_PAYLOAD_EVENT holding ``inner`` (zstd, or uncompressed), with ``like``'s header."""
    data = b"".join(inner)
    payload = zstandard.ZstdCompressor().compress(data) if compress else data
    header = (
        _field(2, _packed(0 if compress else 255))
        + _field(3, _packed(len(data)))
        + _field(1, _packed(len(payload)))
        + b"\x00"
    )
    return resize(like, header + payload, checksum=True)


def mariadb_compressed_record(data: bytes) -> bytes:
    """MariaDB's compressed record: header byte, big-endian length, zlib stream."""
    n = len(data)
    lenlen = 1 if n < 1 << 8 else 2 if n < 1 << 16 else 3 if n < 1 << 24 else 4
    return bytes([0x80 | lenlen]) + n.to_bytes(lenlen, "big") + zlib.compress(data)


def converter(*, mariadb: bool = True, checksum: bool = True, file: str = "bin.000001", **kw: object) -> EventConverter:
    """A converter selecting every table (unless ``selector`` is given), at ``file``:4."""
    kw.setdefault("selector", lambda _s, _t: True)
    conv = EventConverter(no_hex_prefix=False, mariadb=mariadb, file=file, pos=4, gtid=None, **kw)  # type: ignore[arg-type]
    conv.connected(checksum, Charsets(), None)
    return conv


@dataclass
class Col:
    """A column of a table map built by :func:`table_map`: type code, metadata bytes as the table map stores
    them, signedness, collation (character, ENUM and SET columns) and ENUM/SET members."""

    type: int
    meta: bytes = b""
    name: str = "c"
    unsigned: bool = False
    collation: int | None = None
    members: list[str] | None = None
    nullable: bool = True


def table_map(
    columns: list[Col],
    *,
    table_id: int = 7,
    schema: str = "db",
    table: str = "t",
    key: list[int] | None = None,
    log_pos: int = 1000,
    checksum: bool = True,
    mariadb: bool = True,
) -> bytes:
    """A TABLE_MAP_EVENT with ``binlog_row_metadata = FULL`` optional metadata."""
    from cdcstream.sources.mysql import rows as types
    from cdcstream.sources.mysql.binlog import tablemap

    def real(c: Col) -> int:
        return c.meta[0] if c.type == types.STRING and c.meta and c.meta[0] in (types.ENUM, types.SET) else c.type

    body = table_id.to_bytes(6, "little") + b"\x01\x00"
    body += bytes([len(schema)]) + schema.encode() + b"\0" + bytes([len(table)]) + table.encode() + b"\0"
    body += _packed(len(columns)) + bytes(c.type for c in columns)
    meta = b"".join(c.meta for c in columns)
    body += _packed(len(meta)) + meta
    nulls = bytearray((len(columns) + 7) // 8)
    for i, c in enumerate(columns):
        if c.nullable:
            nulls[i >> 3] |= 1 << (i & 7)
    body += bytes(nulls)
    numeric = [c for c in columns if c.type in tablemap.NUMERIC]
    signs = bytearray((len(numeric) + 7) // 8)
    for i, c in enumerate(numeric):
        if c.unsigned:
            signs[i >> 3] |= 0x80 >> (i & 7)
    body += _field(tablemap.SIGNEDNESS, bytes(signs))
    chars = [c for c in columns if real(c) not in (types.ENUM, types.SET) and c.collation is not None]
    if chars:
        body += _field(tablemap.COLUMN_CHARSET, b"".join(_packed(c.collation or 0) for c in chars))
    body += _field(tablemap.COLUMN_NAME, b"".join(_packed(len(c.name.encode())) + c.name.encode() for c in columns))
    for kind, wanted in ((tablemap.SET_STR_VALUE, types.SET), (tablemap.ENUM_STR_VALUE, types.ENUM)):
        lists = [c.members or [] for c in columns if real(c) == wanted]
        if lists:
            body += _field(
                kind,
                b"".join(_packed(len(m)) + b"".join(_packed(len(v.encode())) + v.encode() for v in m) for m in lists),
            )
    enum_set = [c for c in columns if real(c) in (types.ENUM, types.SET)]
    if enum_set:
        body += _field(tablemap.ENUM_AND_SET_COLUMN_CHARSET, b"".join(_packed(c.collation or 45) for c in enum_set))
    if key:
        body += _field(tablemap.SIMPLE_PRIMARY_KEY, b"".join(map(_packed, key)))
    return event(ev.TABLE_MAP_EVENT, body, log_pos=log_pos, checksum=checksum)


def rows_event(
    code: int,
    ncols: int,
    images: bytes,
    *,
    table_id: int = 7,
    log_pos: int = 2000,
    present: bytes | None = None,
    present2: bytes | None = None,
    checksum: bool = True,
) -> bytes:
    """A row event (v1 or v2 by ``code``) of ``ncols`` columns (all present unless given) with ``images``."""
    full = b"\xff" * (ncols // 8) + (bytes([(1 << (ncols % 8)) - 1]) if ncols % 8 else b"")
    v1 = code in (ev.WRITE_ROWS_EVENT_V1, ev.UPDATE_ROWS_EVENT_V1, ev.DELETE_ROWS_EVENT_V1)
    body = table_id.to_bytes(6, "little") + b"\x01\x00" + (b"" if v1 else b"\x02\x00")
    body += _packed(ncols) + (present if present is not None else full)
    if code in ev.UPDATE_ROWS:
        body += present2 if present2 is not None else full
    return event(code, body + images, log_pos=log_pos, checksum=checksum)
