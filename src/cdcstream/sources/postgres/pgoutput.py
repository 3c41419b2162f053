"""Sans-IO parser of the pgoutput logical replication protocol (version 1) and its CopyBoth framing.

:func:`parse_frame` and :func:`parse_message` turn one CopyData payload / one pgoutput message into a small
dataclass: a pure function of bytes (no sockets, no clocks). They are the reference decoding, used by tests,
tools and the slow paths of :class:`~cdcstream.sources.postgres.decoder.Decoder`, the hot path the source runs,
which reads rows straight from the frames with the layouts defined here.

Anything malformed raises :class:`~cdcstream.errors.DecodeError` carrying the LSN of the frame, never
``IndexError``/``struct.error``.

Message layouts: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html and
https://www.postgresql.org/docs/15/protocol-replication.html (XLogData ``w``, keepalive ``k``).
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cdcstream.errors import DecodeError

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_UNIX = 946_684_800  # seconds from 1970-01-01 to 2000-01-01

XLOG = struct.Struct("!QQq")  # 'w': dataStart, walEnd, sendTime
KEEPALIVE = struct.Struct("!QqB")  # 'k': walEnd, sendTime, replyRequested
BEGIN = struct.Struct("!QqI")  # final (commit) LSN, commit time, xid
COMMIT = struct.Struct("!BQQq")  # flags, commit LSN, end LSN, commit time
I16 = struct.Struct("!h")
I32 = struct.Struct("!i")
U32 = struct.Struct("!I")
I64 = struct.Struct("!q")
U64 = struct.Struct("!Q")
U16 = struct.Struct("!H")

UNCHANGED = object()
"""Placeholder for an unchanged TOASTed value ('u') in :func:`parse_message` tuples."""

TRUNCATE_CASCADE = 1
TRUNCATE_RESTART_IDENTITY = 2

MALFORMED = (IndexError, struct.error, ValueError, UnicodeDecodeError, KeyError, OverflowError)


def format_lsn(lsn: int) -> str:
    """``0x16B3748`` -> ``'0/16B3748'`` (PostgreSQL's notation)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


#: What PostgreSQL prints for a pg_lsn (``%X/%X``; 18 zero-pads the low half to 8 digits): upper-case hex, no
#: sign, prefix, space or underscore. ``int(x, 16)`` alone would take ``+1``, ``0x0``, `` 1`` and ``1_0``.
_LSN = re.compile(r"([0-9A-F]{1,8})/([0-9A-F]{1,8})")


def parse_lsn(text: str) -> int:
    """``'0/16B3748'`` -> int; raises ValueError on anything PostgreSQL would not have printed."""
    match = _LSN.fullmatch(text)
    if match is None:
        raise ValueError(f"not an LSN (X/Y, upper-case hex as PostgreSQL prints it): {text!r}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def pg_time_to_epoch(pg_us: int) -> float:
    """Microseconds since 2000-01-01 UTC (the protocol's timestamps) -> Unix epoch seconds."""
    return pg_us / 1_000_000 + PG_EPOCH_UNIX


def pg_time_to_iso(pg_us: int) -> str:
    """Microseconds since 2000-01-01 UTC -> ``2026-11-27T12:00:00.123456Z``."""
    return (PG_EPOCH + timedelta(microseconds=pg_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# ---------------------------------------------------------------------------------------------------------
# Reference decoding: one frame / one message -> dataclass
# ---------------------------------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class XLogData:
    data_start: int
    wal_end: int
    send_time: int
    payload: bytes


@dataclass(slots=True, frozen=True)
class Keepalive:
    wal_end: int
    send_time: int
    reply_requested: bool


@dataclass(slots=True, frozen=True)
class Begin:
    final_lsn: int
    commit_time: int
    xid: int


@dataclass(slots=True, frozen=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int
    commit_time: int


@dataclass(slots=True, frozen=True)
class Origin:
    lsn: int
    name: str


@dataclass(slots=True, frozen=True)
class RelationColumn:
    is_key: bool
    name: str
    type_oid: int
    type_modifier: int


@dataclass(slots=True, frozen=True)
class Relation:
    relation_id: int
    namespace: str
    name: str
    replica_identity: str
    columns: tuple[RelationColumn, ...]


@dataclass(slots=True, frozen=True)
class TypeMessage:
    type_oid: int
    namespace: str
    name: str


TupleValue = str | None | object
"""A decoded tuple column: text, None ('n') or :data:`UNCHANGED` ('u')."""


@dataclass(slots=True, frozen=True)
class Insert:
    relation_id: int
    new: tuple[TupleValue, ...]


@dataclass(slots=True, frozen=True)
class Update:
    relation_id: int
    old_kind: str | None  # 'K' (key), 'O' (old tuple, REPLICA IDENTITY FULL) or None
    old: tuple[TupleValue, ...] | None
    new: tuple[TupleValue, ...]


@dataclass(slots=True, frozen=True)
class Delete:
    relation_id: int
    old_kind: str
    old: tuple[TupleValue, ...]


@dataclass(slots=True, frozen=True)
class Truncate:
    options: int
    relation_ids: tuple[int, ...]

    @property
    def cascade(self) -> bool:
        return bool(self.options & TRUNCATE_CASCADE)

    @property
    def restart_identity(self) -> bool:
        return bool(self.options & TRUNCATE_RESTART_IDENTITY)


@dataclass(slots=True, frozen=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = Begin | Commit | Origin | Relation | TypeMessage | Insert | Update | Delete | Truncate | LogicalMessage


def parse_frame(frame: bytes, *, lsn_hint: int = 0) -> XLogData | Keepalive:
    """One CopyData payload of the replication stream: ``w`` XLogData or ``k`` primary keepalive."""
    try:
        tag = frame[0]
        if tag == 0x77:  # 'w'
            start, end, clock = XLOG.unpack_from(frame, 1)
            return XLogData(start, end, clock, bytes(frame[25:]))
        if tag == 0x6B:  # 'k'
            end, clock, reply = KEEPALIVE.unpack_from(frame, 1)
            return Keepalive(end, clock, bool(reply))
    except MALFORMED as exc:
        raise DecodeError(f"malformed replication frame near LSN {format_lsn(lsn_hint)}: {exc!r}") from None
    raise DecodeError(f"unknown replication frame type {frame[:1]!r} near LSN {format_lsn(lsn_hint)}")


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.index(0, pos)
    return buf[pos:end].decode(), end + 1


def _parse_tuple(buf: bytes, pos: int) -> tuple[tuple[TupleValue, ...], int]:
    (ncols,) = I16.unpack_from(buf, pos)
    pos += 2
    out: list[TupleValue] = []
    for _ in range(ncols):
        kind = buf[pos]
        pos += 1
        if kind == 0x74:  # 't'
            (n,) = I32.unpack_from(buf, pos)
            pos += 4
            if n < 0 or pos + n > len(buf):
                raise ValueError("column value runs past the end of the message")
            out.append(buf[pos : pos + n].decode())
            pos += n
        elif kind == 0x6E:  # 'n'
            out.append(None)
        elif kind == 0x75:  # 'u'
            out.append(UNCHANGED)
        else:
            raise ValueError(f"unknown tuple column kind {kind!r}")
    return tuple(out), pos


def parse_message(buf: bytes, *, lsn: int = 0) -> Message:
    """Decode one pgoutput message (the payload of a ``w`` frame)."""
    try:
        msg, pos = parse_body(buf)
    except DecodeError:
        raise
    except MALFORMED as exc:
        raise DecodeError(f"malformed pgoutput message at LSN {format_lsn(lsn)}: {exc!r}") from None
    if pos != len(buf):
        raise DecodeError(f"pgoutput message {buf[:1]!r} at LSN {format_lsn(lsn)} has {len(buf) - pos} trailing bytes")
    return msg


def parse_body(buf: bytes) -> tuple[Message, int]:
    """One message and the offset where it ends; malformed bytes raise what :data:`MALFORMED` lists."""
    parse = _PARSERS.get(buf[0])
    if parse is None:
        raise DecodeError(f"unknown pgoutput message type {buf[:1]!r}")
    return parse(buf)


def _parse_begin(buf: bytes) -> tuple[Message, int]:
    return Begin(*BEGIN.unpack_from(buf, 1)), 1 + BEGIN.size


def _parse_commit(buf: bytes) -> tuple[Message, int]:
    return Commit(*COMMIT.unpack_from(buf, 1)), 1 + COMMIT.size


def _parse_origin(buf: bytes) -> tuple[Message, int]:
    (lsn,) = U64.unpack_from(buf, 1)
    name, pos = _cstring(buf, 9)
    return Origin(lsn, name), pos


def _parse_relation(buf: bytes) -> tuple[Message, int]:
    (relid,) = U32.unpack_from(buf, 1)
    ns, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    ident = chr(buf[pos])
    (ncols,) = I16.unpack_from(buf, pos + 1)
    pos += 3
    cols = []
    for _ in range(ncols):
        flags = buf[pos]
        cname, pos = _cstring(buf, pos + 1)
        oid, typmod = struct.unpack_from("!Ii", buf, pos)
        pos += 8
        cols.append(RelationColumn(bool(flags & 1), cname, oid, typmod))
    return Relation(relid, ns, name, ident, tuple(cols)), pos


def _parse_type(buf: bytes) -> tuple[Message, int]:
    (oid,) = U32.unpack_from(buf, 1)
    ns, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    return TypeMessage(oid, ns, name), pos


def _parse_insert(buf: bytes) -> tuple[Message, int]:
    (relid,) = U32.unpack_from(buf, 1)
    if buf[5] != 0x4E:
        raise ValueError("INSERT without a new tuple")
    new, pos = _parse_tuple(buf, 6)
    return Insert(relid, new), pos


def _parse_update(buf: bytes) -> tuple[Message, int]:
    (relid,) = U32.unpack_from(buf, 1)
    pos = 5
    old_kind: str | None = None
    old = None
    if buf[pos] in (0x4B, 0x4F):
        old_kind = chr(buf[pos])
        old, pos = _parse_tuple(buf, pos + 1)
    if buf[pos] != 0x4E:
        raise ValueError("UPDATE without a new tuple")
    new, pos = _parse_tuple(buf, pos + 1)
    return Update(relid, old_kind, old, new), pos


def _parse_delete(buf: bytes) -> tuple[Message, int]:
    (relid,) = U32.unpack_from(buf, 1)
    if buf[5] not in (0x4B, 0x4F):
        raise ValueError("DELETE without a key or old tuple")
    old, pos = _parse_tuple(buf, 6)
    return Delete(relid, chr(buf[5]), old), pos


def _parse_truncate(buf: bytes) -> tuple[Message, int]:
    (nrel,) = I32.unpack_from(buf, 1)
    options = buf[5]
    if nrel < 0:
        raise ValueError("negative relation count")
    relids = struct.unpack_from(f"!{nrel}I", buf, 6)
    return Truncate(options, relids), 6 + 4 * nrel


def _parse_logical_message(buf: bytes) -> tuple[Message, int]:
    flags = buf[1]
    (lsn,) = U64.unpack_from(buf, 2)
    prefix, pos = _cstring(buf, 10)
    (n,) = I32.unpack_from(buf, pos)
    pos += 4
    if n < 0 or pos + n > len(buf):
        raise ValueError("message content runs past the end")
    return LogicalMessage(bool(flags & 1), lsn, prefix, bytes(buf[pos : pos + n])), pos + n


_PARSERS: dict[int, Callable[[bytes], tuple[Message, int]]] = {
    0x42: _parse_begin,  # 'B'
    0x43: _parse_commit,  # 'C'
    0x4F: _parse_origin,  # 'O'
    0x52: _parse_relation,  # 'R'
    0x59: _parse_type,  # 'Y'
    0x49: _parse_insert,  # 'I'
    0x55: _parse_update,  # 'U'
    0x44: _parse_delete,  # 'D'
    0x54: _parse_truncate,  # 'T'
    0x4D: _parse_logical_message,  # 'M'
}
