"""Compressed binlog events, decompressed into the events they stand for (sans-IO).

**MariaDB** (``log_bin_compress = ON``, 10.2+): a QUERY or row event longer than ``log_bin_compress_min_len`` is
written as QUERY_COMPRESSED_EVENT (165) or WRITE/UPDATE/DELETE_ROWS_COMPRESSED_EVENT(_V1) (166-171). Everything
up to the statement text (query) or the row images (rows: after the column bitmaps) stays as it is; that rest is
replaced by a *compressed record*: one header byte (bit 7 set; bits 4-6 the algorithm, 0 = zlib, the only one;
bits 0-2 how many bytes follow holding the original length, big-endian), the length, then a zlib stream
(MariaDB ``sql/log_event.cc``, ``binlog_buf_uncompress``). :func:`mariadb_uncompress` rebuilds the plain event
(QUERY_EVENT, or the row event type of the same version) exactly as the server's own replica does.

**MySQL** (``binlog_transaction_compression = ON``, 8.0.20+): a whole transaction (everything after its GTID
event) is written as one TRANSACTION_PAYLOAD_EVENT (40): a type-length-value header (1 = compressed size,
2 = algorithm: 0 zstd, 255 none; 3 = uncompressed size; 0 ends the header), then the payload, a zstd frame
holding the transaction's events back to back, without checksums (the payload event carries one) and with 0
as their position. :func:`mysql_payload_events` yields them one at a time, so the decompressed transaction is
never held in memory at once.

MariaDB's *column* compression (``COMPRESSED`` columns, zlib too) is a value format and lives in
:mod:`.values`.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from typing import Any

import zstandard

from cdcstream.errors import DecodeError
from cdcstream.sources.mysql.binlog import events as ev

_PAYLOAD_SIZE, _COMPRESSION_TYPE, _UNCOMPRESSED_SIZE = 1, 2, 3
_ZSTD, _NONE = 0, 255


def _record(raw: bytes, pos: int, end: int, what: str) -> bytes:
    """The original bytes of a MariaDB compressed record at ``raw[pos:end]``."""
    if pos >= end:
        raise DecodeError(f"{what}: the compressed record is missing")
    head = raw[pos]
    if head & 0xF0 != 0x80:  # bit 7: compressed; bits 4-6: the algorithm, 0 (zlib) the only one defined
        raise DecodeError(f"{what}: compressed record header {head:#04x} names no algorithm cdcstream knows")
    lenlen = head & 0x07
    if not 1 <= lenlen <= 4 or pos + 1 + lenlen > end:
        raise DecodeError(f"{what}: compressed record header {head:#04x} has a bad length size")
    length = int.from_bytes(raw[pos + 1 : pos + 1 + lenlen], "big")
    inflate = zlib.decompressobj()
    try:
        out = inflate.decompress(raw[pos + 1 + lenlen : end], length + 1)  # bounded: never more than it says
    except zlib.error as exc:
        raise DecodeError(f"{what}: zlib cannot decompress the record: {exc}") from None
    if len(out) != length or not inflate.eof:
        raise DecodeError(f"{what}: the record decompresses to {len(out)} bytes, its header says {length}")
    return out


def mariadb_uncompress(raw: bytes, end: int, fmt: ev.Format) -> bytes:
    """The plain event (without checksum) a MariaDB compressed event stands for; ``end`` is where its body
    ends (before the checksum)."""
    try:
        return _mariadb_uncompress(raw, end, fmt)
    except IndexError:
        raise DecodeError(f"{ev.type_name(raw[4])}: the event is cut short") from None


def _mariadb_uncompress(raw: bytes, end: int, fmt: ev.Format) -> bytes:
    code = raw[4]
    what = ev.type_name(code)
    if code == ev.QUERY_COMPRESSED_EVENT:
        post = fmt.post_header_len(code, 13)
        if end < ev.HEADER_LEN + post:
            raise DecodeError(f"{what}: too short")
        db_len = raw[ev.HEADER_LEN + 8]
        status_len = int.from_bytes(raw[ev.HEADER_LEN + 11 : ev.HEADER_LEN + 13], "little")
        pos = ev.HEADER_LEN + post + status_len + db_len + 1
        plain = ev.QUERY_EVENT
    elif code in ev.COMPRESSED_ROWS_EVENTS:
        v1 = code <= ev.DELETE_ROWS_COMPRESSED_EVENT_V1
        post = fmt.post_header_len(code, 8 if v1 else 10)
        pos = ev.HEADER_LEN + post
        if post == 10:  # v2: the variable-length extra header is part of the post-header's declared length
            if end < ev.HEADER_LEN + 10:
                raise DecodeError(f"{what}: too short")
            pos = ev.HEADER_LEN + 8 + int.from_bytes(raw[ev.HEADER_LEN + 8 : ev.HEADER_LEN + 10], "little")
        if pos >= end:
            raise DecodeError(f"{what}: too short")
        width, pos = ev.packed_int(raw, pos)
        bitmaps = 2 if code in (ev.UPDATE_ROWS_COMPRESSED_EVENT, ev.UPDATE_ROWS_COMPRESSED_EVENT_V1) else 1
        pos += bitmaps * ((width + 7) // 8)
        base = ev.WRITE_ROWS_EVENT_V1 if v1 else ev.WRITE_ROWS_EVENT
        first = ev.WRITE_ROWS_COMPRESSED_EVENT_V1 if v1 else ev.WRITE_ROWS_COMPRESSED_EVENT
        plain = base + (code - first)
    else:
        raise DecodeError(f"{what} is not a MariaDB compressed event")
    body = _record(raw, pos, end, what)
    size = pos + len(body)
    head = bytearray(raw[:pos])
    head[4] = plain
    head[9:13] = size.to_bytes(4, "little")
    return bytes(head) + body


def mysql_payload_events(raw: bytes, end: int) -> Iterator[bytes]:
    """The events inside a MySQL TRANSACTION_PAYLOAD_EVENT, in order (each with header, no checksum)."""
    what = "TRANSACTION_PAYLOAD_EVENT"
    pos, size, algorithm, uncompressed = _payload_header(raw, end, what)
    payload = raw[pos:end]
    if size is not None and size != len(payload):
        raise DecodeError(f"{what}: the payload is {len(payload)} bytes, the header says {size}")
    stream = _payload_stream(payload, algorithm, what)
    total = 0
    try:
        while True:
            head = _read(stream, ev.HEADER_LEN)
            if not head:
                break
            if len(head) < ev.HEADER_LEN:
                raise DecodeError(f"{what}: the payload ends inside an event header")
            length = int.from_bytes(head[9:13], "little")
            if length < ev.HEADER_LEN:
                raise DecodeError(f"{what}: an embedded event says it is {length} bytes long")
            rest = _read(stream, length - ev.HEADER_LEN)
            if len(rest) != length - ev.HEADER_LEN:
                raise DecodeError(f"{what}: the payload ends inside an embedded event")
            total += length
            yield head + rest
    except zstandard.ZstdError as exc:
        raise DecodeError(f"{what}: zstd cannot decompress the payload: {exc}") from None
    if uncompressed is not None and total != uncompressed:
        raise DecodeError(f"{what}: the payload holds {total} bytes of events, the header says {uncompressed}")


def _payload_header(raw: bytes, end: int, what: str) -> tuple[int, int | None, int | None, int | None]:
    """Where the payload starts, and the header's payload size, compression type and uncompressed size."""
    pos = ev.HEADER_LEN
    fields: dict[int, int] = {}
    try:
        while True:
            if pos >= end:
                raise DecodeError(f"{what}: the header runs past the end of the event")
            kind, pos = ev.packed_int(raw, pos)
            if kind == 0:
                break
            length, pos = ev.packed_int(raw, pos)
            value = raw[pos : pos + length]
            pos += length
            if kind in (_PAYLOAD_SIZE, _COMPRESSION_TYPE, _UNCOMPRESSED_SIZE):
                fields[kind] = ev.packed_int(value, 0)[0]
            # other fields: added by later servers, not needed to read the payload
    except IndexError:
        raise DecodeError(f"{what}: the header is cut short") from None
    return pos, fields.get(_PAYLOAD_SIZE), fields.get(_COMPRESSION_TYPE), fields.get(_UNCOMPRESSED_SIZE)


def _payload_stream(payload: bytes, algorithm: int | None, what: str) -> Any:
    if algorithm == _NONE:
        return io.BytesIO(payload)
    if algorithm == _ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(payload), read_across_frames=True)
    raise DecodeError(f"{what}: compression type {algorithm} is not known (0 = zstd, 255 = none)")


def _read(stream: Any, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = stream.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out
