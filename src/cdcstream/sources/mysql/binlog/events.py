"""Binlog events: the common header, checksums, and what cdcstream does with every event type (sans-IO).

Every event starts with the 19-byte common header (timestamp, type code, server id, event size, position after
the event, flags). A FORMAT_DESCRIPTION_EVENT at the start of every binlog file says how long each type's
post-header is and whether events end with a CRC32 checksum; :class:`Format` keeps that, and :func:`frame`
checks an event against it (size, checksum) before anything reads its body.

:data:`EVENT_TYPES` is the dispatch table cdcstream owns: every type code MySQL 8.4/9.x and MariaDB 10.x/11.x
write is listed as **decoded**, **ignored** (with the reason next to it) or **refused** (with what to do). The
reader stops on a refused type, and on a type code that is not in the table at all, before anything after it
can be checkpointed — with one documented exception: an unknown type carrying ``LOG_EVENT_IGNORABLE_F``, the
flag with which a server promises that a replica that does not know the event may skip it.

The decoders here are pure functions of the event's bytes; row events, table maps and compressed events have
their own modules.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import Enum

from cdcstream.errors import DecodeError

HEADER_LEN = 19
CHECKSUM_LEN = 4
BINLOG_MAGIC = b"\xfebin"

# Common header flags (log_event.h).
LOG_EVENT_ARTIFICIAL_F = 0x20  # made up by the dump thread (the rotate at connect), not read from the binlog
LOG_EVENT_IGNORABLE_F = 0x80  # a replica that does not know the type may skip the event

# Type codes (MySQL libs/mysql/binlog/event/binlog_event.h, MariaDB sql/log_event.h).
UNKNOWN_EVENT = 0
START_EVENT_V3 = 1
QUERY_EVENT = 2
STOP_EVENT = 3
ROTATE_EVENT = 4
INTVAR_EVENT = 5
LOAD_EVENT = 6
SLAVE_EVENT = 7
CREATE_FILE_EVENT = 8
APPEND_BLOCK_EVENT = 9
EXEC_LOAD_EVENT = 10
DELETE_FILE_EVENT = 11
NEW_LOAD_EVENT = 12
RAND_EVENT = 13
USER_VAR_EVENT = 14
FORMAT_DESCRIPTION_EVENT = 15
XID_EVENT = 16
BEGIN_LOAD_QUERY_EVENT = 17
EXECUTE_LOAD_QUERY_EVENT = 18
TABLE_MAP_EVENT = 19
PRE_GA_WRITE_ROWS_EVENT = 20
PRE_GA_UPDATE_ROWS_EVENT = 21
PRE_GA_DELETE_ROWS_EVENT = 22
WRITE_ROWS_EVENT_V1 = 23
UPDATE_ROWS_EVENT_V1 = 24
DELETE_ROWS_EVENT_V1 = 25
INCIDENT_EVENT = 26
HEARTBEAT_LOG_EVENT = 27
IGNORABLE_LOG_EVENT = 28
ROWS_QUERY_LOG_EVENT = 29
WRITE_ROWS_EVENT = 30
UPDATE_ROWS_EVENT = 31
DELETE_ROWS_EVENT = 32
GTID_LOG_EVENT = 33
ANONYMOUS_GTID_LOG_EVENT = 34
PREVIOUS_GTIDS_LOG_EVENT = 35
TRANSACTION_CONTEXT_EVENT = 36
VIEW_CHANGE_EVENT = 37
XA_PREPARE_LOG_EVENT = 38
PARTIAL_UPDATE_ROWS_EVENT = 39
TRANSACTION_PAYLOAD_EVENT = 40
HEARTBEAT_LOG_EVENT_V2 = 41
GTID_TAGGED_LOG_EVENT = 42
ANNOTATE_ROWS_EVENT = 160
BINLOG_CHECKPOINT_EVENT = 161
MARIADB_GTID_EVENT = 162
GTID_LIST_EVENT = 163
START_ENCRYPTION_EVENT = 164
QUERY_COMPRESSED_EVENT = 165
WRITE_ROWS_COMPRESSED_EVENT_V1 = 166
UPDATE_ROWS_COMPRESSED_EVENT_V1 = 167
DELETE_ROWS_COMPRESSED_EVENT_V1 = 168
WRITE_ROWS_COMPRESSED_EVENT = 169
UPDATE_ROWS_COMPRESSED_EVENT = 170
DELETE_ROWS_COMPRESSED_EVENT = 171

WRITE_ROWS = frozenset({WRITE_ROWS_EVENT_V1, WRITE_ROWS_EVENT})
UPDATE_ROWS = frozenset({UPDATE_ROWS_EVENT_V1, UPDATE_ROWS_EVENT, PARTIAL_UPDATE_ROWS_EVENT})
DELETE_ROWS = frozenset({DELETE_ROWS_EVENT_V1, DELETE_ROWS_EVENT})
ROWS_EVENTS = WRITE_ROWS | UPDATE_ROWS | DELETE_ROWS
COMPRESSED_ROWS_EVENTS = frozenset(range(WRITE_ROWS_COMPRESSED_EVENT_V1, DELETE_ROWS_COMPRESSED_EVENT + 1))

# MariaDB GTID event flags (flags2).
FL_STANDALONE = 0x01  # a statement outside any transaction (DDL): no COMMIT/XID follows
FL_GROUP_COMMIT_ID = 0x02
FL_PREPARED_XA = 0x40  # the XA START ... XA PREPARE part of an XA transaction
FL_COMPLETED_XA = 0x80  # the XA COMMIT / XA ROLLBACK of a prepared XA transaction


class Handling(Enum):
    """What the reader does with an event type."""

    DECODE = "decoded"
    IGNORE = "ignored"
    REFUSE = "refused"


@dataclass(frozen=True, slots=True)
class EventType:
    """One row of the dispatch table: the type's name, its handling and why (for IGNORE/REFUSE, the reason
    or the fix, which the reader puts in its error)."""

    name: str
    handling: Handling
    why: str = ""


_STATEMENT_CONTEXT = (
    "context for the next statement-based QUERY event (a DML statement in a captured schema is refused there, "
    "so its context is never needed)"
)
_PRE_5_0 = (
    "written only by MySQL 3.23-5.0 (binlog format v1-v3), which cdcstream does not read; no supported server writes it"
)

EVENT_TYPES: dict[int, EventType] = {
    UNKNOWN_EVENT: EventType("UNKNOWN_EVENT", Handling.REFUSE, "an event the server itself marks as unknown"),
    START_EVENT_V3: EventType("START_EVENT_V3", Handling.REFUSE, _PRE_5_0),
    QUERY_EVENT: EventType("QUERY_EVENT", Handling.DECODE),
    STOP_EVENT: EventType(
        "STOP_EVENT", Handling.IGNORE, "the server shut down; the stream goes on in the next binlog file"
    ),
    ROTATE_EVENT: EventType("ROTATE_EVENT", Handling.DECODE),
    INTVAR_EVENT: EventType("INTVAR_EVENT", Handling.IGNORE, _STATEMENT_CONTEXT),
    LOAD_EVENT: EventType("LOAD_EVENT", Handling.REFUSE, _PRE_5_0),
    SLAVE_EVENT: EventType("SLAVE_EVENT", Handling.REFUSE, _PRE_5_0),
    CREATE_FILE_EVENT: EventType("CREATE_FILE_EVENT", Handling.REFUSE, _PRE_5_0),
    APPEND_BLOCK_EVENT: EventType(
        "APPEND_BLOCK_EVENT",
        Handling.IGNORE,
        "file data of a statement-based LOAD DATA; the statement itself (EXECUTE_LOAD_QUERY_EVENT) is refused "
        "when it loads a captured table",
    ),
    EXEC_LOAD_EVENT: EventType("EXEC_LOAD_EVENT", Handling.REFUSE, _PRE_5_0),
    DELETE_FILE_EVENT: EventType(
        "DELETE_FILE_EVENT", Handling.IGNORE, "discards the file data of a statement-based LOAD DATA that failed"
    ),
    NEW_LOAD_EVENT: EventType("NEW_LOAD_EVENT", Handling.REFUSE, _PRE_5_0),
    RAND_EVENT: EventType("RAND_EVENT", Handling.IGNORE, _STATEMENT_CONTEXT),
    USER_VAR_EVENT: EventType("USER_VAR_EVENT", Handling.IGNORE, _STATEMENT_CONTEXT),
    FORMAT_DESCRIPTION_EVENT: EventType("FORMAT_DESCRIPTION_EVENT", Handling.DECODE),
    XID_EVENT: EventType("XID_EVENT", Handling.DECODE),
    BEGIN_LOAD_QUERY_EVENT: EventType(
        "BEGIN_LOAD_QUERY_EVENT",
        Handling.IGNORE,
        "file data of a statement-based LOAD DATA; the statement itself (EXECUTE_LOAD_QUERY_EVENT) is refused "
        "when it loads a captured table",
    ),
    EXECUTE_LOAD_QUERY_EVENT: EventType("EXECUTE_LOAD_QUERY_EVENT", Handling.DECODE),
    TABLE_MAP_EVENT: EventType("TABLE_MAP_EVENT", Handling.DECODE),
    PRE_GA_WRITE_ROWS_EVENT: EventType(
        "PRE_GA_WRITE_ROWS_EVENT", Handling.REFUSE, "written only by MySQL 5.1 beta releases"
    ),
    PRE_GA_UPDATE_ROWS_EVENT: EventType(
        "PRE_GA_UPDATE_ROWS_EVENT", Handling.REFUSE, "written only by MySQL 5.1 beta releases"
    ),
    PRE_GA_DELETE_ROWS_EVENT: EventType(
        "PRE_GA_DELETE_ROWS_EVENT", Handling.REFUSE, "written only by MySQL 5.1 beta releases"
    ),
    WRITE_ROWS_EVENT_V1: EventType("WRITE_ROWS_EVENT_V1", Handling.DECODE),
    UPDATE_ROWS_EVENT_V1: EventType("UPDATE_ROWS_EVENT_V1", Handling.DECODE),
    DELETE_ROWS_EVENT_V1: EventType("DELETE_ROWS_EVENT_V1", Handling.DECODE),
    INCIDENT_EVENT: EventType(
        "INCIDENT_EVENT",
        Handling.REFUSE,
        "the server wrote an incident into its binlog: changes may be missing from the binlog at this point "
        "(e.g. a transaction too large for the binlog cache), and a replica stops here too. Re-sync the target "
        "with a full load (move the checkpoint file away deliberately; the new snapshot's position is after "
        "this event)",
    ),
    HEARTBEAT_LOG_EVENT: EventType("HEARTBEAT_LOG_EVENT", Handling.DECODE),
    IGNORABLE_LOG_EVENT: EventType(
        "IGNORABLE_LOG_EVENT", Handling.IGNORE, "by definition: the server marks it as skippable by any replica"
    ),
    ROWS_QUERY_LOG_EVENT: EventType(
        "ROWS_QUERY_LOG_EVENT",
        Handling.IGNORE,
        "the statement text of the row events after it (binlog_rows_query_log_events): informational only",
    ),
    WRITE_ROWS_EVENT: EventType("WRITE_ROWS_EVENT", Handling.DECODE),
    UPDATE_ROWS_EVENT: EventType("UPDATE_ROWS_EVENT", Handling.DECODE),
    DELETE_ROWS_EVENT: EventType("DELETE_ROWS_EVENT", Handling.DECODE),
    GTID_LOG_EVENT: EventType("GTID_LOG_EVENT", Handling.DECODE),
    ANONYMOUS_GTID_LOG_EVENT: EventType("ANONYMOUS_GTID_LOG_EVENT", Handling.DECODE),
    PREVIOUS_GTIDS_LOG_EVENT: EventType(
        "PREVIOUS_GTIDS_LOG_EVENT",
        Handling.IGNORE,
        "the server's GTID state at the start of the file; cdcstream keeps its own from the GTIDs it streamed",
    ),
    TRANSACTION_CONTEXT_EVENT: EventType(
        "TRANSACTION_CONTEXT_EVENT", Handling.IGNORE, "group replication certification data, no row changes"
    ),
    VIEW_CHANGE_EVENT: EventType(
        "VIEW_CHANGE_EVENT", Handling.IGNORE, "a group replication membership change, no row changes"
    ),
    XA_PREPARE_LOG_EVENT: EventType("XA_PREPARE_LOG_EVENT", Handling.DECODE),
    PARTIAL_UPDATE_ROWS_EVENT: EventType("PARTIAL_UPDATE_ROWS_EVENT", Handling.DECODE),
    TRANSACTION_PAYLOAD_EVENT: EventType("TRANSACTION_PAYLOAD_EVENT", Handling.DECODE),
    HEARTBEAT_LOG_EVENT_V2: EventType("HEARTBEAT_LOG_EVENT_V2", Handling.DECODE),
    GTID_TAGGED_LOG_EVENT: EventType(
        "GTID_TAGGED_LOG_EVENT",
        Handling.REFUSE,
        "a transaction with a tagged GTID (MySQL 8.3+, SET gtid_next = 'AUTOMATIC:<tag>'), which cdcstream does "
        "not decode yet. Stop sessions from writing tagged GTIDs on the captured server, then re-sync the "
        "target with a full load (move the checkpoint file away deliberately)",
    ),
    ANNOTATE_ROWS_EVENT: EventType(
        "ANNOTATE_ROWS_EVENT",
        Handling.IGNORE,
        "the statement text of the row events after it (binlog_annotate_row_events): informational only",
    ),
    BINLOG_CHECKPOINT_EVENT: EventType(
        "BINLOG_CHECKPOINT_EVENT", Handling.IGNORE, "crash-recovery bookkeeping of the server, no row changes"
    ),
    MARIADB_GTID_EVENT: EventType("GTID_EVENT", Handling.DECODE),
    GTID_LIST_EVENT: EventType(
        "GTID_LIST_EVENT",
        Handling.IGNORE,
        "the server's GTID state at the start of the file; cdcstream keeps its own from the GTIDs it streamed",
    ),
    START_ENCRYPTION_EVENT: EventType(
        "START_ENCRYPTION_EVENT",
        Handling.IGNORE,
        "marks where binlog encryption starts in the file; the dump thread sends the events after it decrypted",
    ),
    QUERY_COMPRESSED_EVENT: EventType("QUERY_COMPRESSED_EVENT", Handling.DECODE),
    WRITE_ROWS_COMPRESSED_EVENT_V1: EventType("WRITE_ROWS_COMPRESSED_EVENT_V1", Handling.DECODE),
    UPDATE_ROWS_COMPRESSED_EVENT_V1: EventType("UPDATE_ROWS_COMPRESSED_EVENT_V1", Handling.DECODE),
    DELETE_ROWS_COMPRESSED_EVENT_V1: EventType("DELETE_ROWS_COMPRESSED_EVENT_V1", Handling.DECODE),
    WRITE_ROWS_COMPRESSED_EVENT: EventType("WRITE_ROWS_COMPRESSED_EVENT", Handling.DECODE),
    UPDATE_ROWS_COMPRESSED_EVENT: EventType("UPDATE_ROWS_COMPRESSED_EVENT", Handling.DECODE),
    DELETE_ROWS_COMPRESSED_EVENT: EventType("DELETE_ROWS_COMPRESSED_EVENT", Handling.DECODE),
}


def type_name(code: int) -> str:
    known = EVENT_TYPES.get(code)
    return f"{known.name} ({code})" if known else f"unknown event type {code}"


# --- framing ---------------------------------------------------------------------------------------------


class Format:
    """What the current binlog file's FORMAT_DESCRIPTION_EVENT says: checksums on or off, post-header lengths.

    Before the first one arrives (the rotate event the server sends at connect), ``checksum`` is what the
    connection negotiated; post-header lengths default to the v4 format's.
    """

    __slots__ = ("checksum", "post_header", "server_version")

    def __init__(self, checksum: bool, post_header: bytes = b"", server_version: str = "") -> None:
        self.checksum = checksum
        self.post_header = post_header
        self.server_version = server_version

    def post_header_len(self, code: int, default: int) -> int:
        if 0 < code <= len(self.post_header):
            return self.post_header[code - 1]
        return default


_HEADER = struct.Struct("<IBIIIH")


def header(raw: bytes) -> tuple[int, int, int, int, int, int]:
    """(timestamp, type code, server id, event size, position after the event, flags)."""
    if len(raw) < HEADER_LEN:
        raise DecodeError(f"a binlog event of {len(raw)} bytes is shorter than the 19-byte event header")
    return _HEADER.unpack_from(raw)


def frame(raw: bytes, fmt: Format, where: str) -> int:
    """Check one event (its size; its CRC32 when the format has checksums) and return where its body ends
    (before the checksum). ``where`` names the event's position for the error."""
    size = int.from_bytes(raw[9:13], "little")
    if size != len(raw) or size < HEADER_LEN:
        raise DecodeError(
            f"binlog event at {where} says it is {size} bytes long but {len(raw)} bytes arrived: the stream is "
            "corrupt or not a binlog stream"
        )
    if not fmt.checksum:
        return size
    end = size - CHECKSUM_LEN
    if end < HEADER_LEN:
        raise DecodeError(f"binlog event at {where} is too short to carry its checksum ({size} bytes)")
    if zlib.crc32(memoryview(raw)[:end]) != int.from_bytes(raw[end:], "little"):
        raise DecodeError(
            f"binlog event {type_name(raw[4])} at {where} fails its CRC32 checksum: the binlog is corrupt (disk, "
            "copy or network). cdcstream stops rather than stream a damaged change; check the server's binlog "
            "with mysqlbinlog --verify-binlog-checksum"
        )
    return end


def with_checksum(event: bytes) -> bytes:
    """``event`` (header and body, its size field already right) followed by its CRC32."""
    return event + zlib.crc32(event).to_bytes(4, "little")


# --- packed integers and strings -------------------------------------------------------------------------


def packed_int(buf: bytes, pos: int) -> tuple[int, int]:
    """A length-encoded integer (net_field_length): the value and the position after it."""
    first = buf[pos]
    if first < 251:
        return first, pos + 1
    if first == 252:
        return int.from_bytes(buf[pos + 1 : pos + 3], "little"), pos + 3
    if first == 253:
        return int.from_bytes(buf[pos + 1 : pos + 4], "little"), pos + 4
    if first == 254:
        return int.from_bytes(buf[pos + 1 : pos + 9], "little"), pos + 9
    raise DecodeError(f"invalid length-encoded integer (first byte {first}) at offset {pos}")


# --- decoded events ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FormatDescription:
    """FORMAT_DESCRIPTION_EVENT: the binlog version, the writing server and the :class:`Format` it sets."""

    binlog_version: int
    server_version: str
    format: Format


def format_description(raw: bytes) -> FormatDescription:
    """Decode a FORMAT_DESCRIPTION_EVENT. It carries its own checksum setting (the algorithm byte before the
    last four bytes, which every 5.6+ / MariaDB 5.3+ server writes), so it is framed here, not by :func:`frame`."""
    size = len(raw)
    if size < HEADER_LEN + 57 + 5 or int.from_bytes(raw[9:13], "little") != size:
        raise DecodeError(f"FORMAT_DESCRIPTION_EVENT of {size} bytes is too short")
    binlog_version = int.from_bytes(raw[19:21], "little")
    if binlog_version != 4:
        raise DecodeError(
            f"binlog format version {binlog_version}: cdcstream reads version 4 (MySQL 5.0+ / MariaDB) only"
        )
    server_version = raw[21:71].split(b"\0", 1)[0].decode("ascii", "replace")
    if raw[75] != HEADER_LEN:
        raise DecodeError(f"binlog common header length {raw[75]}, expected 19")
    alg = raw[size - 5]
    if alg not in (0, 1):
        raise DecodeError(f"binlog checksum algorithm {alg} is not known (0 = NONE, 1 = CRC32)")
    checksum = alg == 1
    if checksum and zlib.crc32(memoryview(raw)[: size - 4]) != int.from_bytes(raw[size - 4 :], "little"):
        raise DecodeError(
            "FORMAT_DESCRIPTION_EVENT fails its CRC32 checksum: the binlog is corrupt (disk, copy or network)"
        )
    return FormatDescription(
        binlog_version, server_version, Format(checksum, bytes(raw[76 : size - 5]), server_version)
    )


@dataclass(frozen=True, slots=True)
class Rotate:
    """ROTATE_EVENT: the stream continues in ``file`` at ``position``."""

    file: str
    position: int


def rotate(raw: bytes, end: int) -> Rotate:
    if end < HEADER_LEN + 8:
        raise DecodeError("ROTATE_EVENT too short")
    position = int.from_bytes(raw[19:27], "little")
    return Rotate(raw[27:end].decode("utf-8", "replace"), position)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """HEARTBEAT_LOG_EVENT (v1 and v2): nothing to send; the server has sent everything up to (file, position)."""

    file: str
    position: int


def heartbeat(raw: bytes, end: int, log_pos: int) -> Heartbeat:
    """v1: the file name is the body; the position is the header's (MariaDB: a position past 4 GiB comes in an
    8-byte sub-header, with 0 in the header)."""
    if log_pos == 0 and end - HEADER_LEN >= 8:
        return Heartbeat(raw[27:end].decode("utf-8", "replace"), int.from_bytes(raw[19:27], "little"))
    return Heartbeat(raw[19:end].decode("utf-8", "replace"), log_pos)


def heartbeat_v2(raw: bytes, end: int) -> Heartbeat:
    """v2 (MySQL 8.0.26+): type-length-value fields (1 = file name, 2 = position), 0 ends the header."""
    file, position, pos = "", 0, HEADER_LEN
    while pos < end:
        kind, pos = packed_int(raw, pos)
        if kind == 0:
            break
        length, pos = packed_int(raw, pos)
        value = raw[pos : pos + length]
        pos += length
        if kind == 1:
            file = value.decode("utf-8", "replace")
        elif kind == 2:
            position = packed_int(value, 0)[0]
    return Heartbeat(file, position)


@dataclass(frozen=True, slots=True)
class Query:
    """QUERY_EVENT: the statement and its default database (``None`` when there is none)."""

    schema: str | None
    query: str


def query(raw: bytes, end: int, fmt: Format, code: int = QUERY_EVENT) -> Query:
    """Decode a QUERY_EVENT (or the query part of EXECUTE_LOAD_QUERY_EVENT, whose post-header is longer).

    The text is decoded as UTF-8, replacing what is not: the statement is only read for its keywords and the
    names it mentions (DDL, transaction control, statement-based DML), never turned into a value."""
    post = fmt.post_header_len(code, 13 if code == QUERY_EVENT else 26)
    base = HEADER_LEN
    if end < base + post:
        raise DecodeError("QUERY_EVENT too short")
    db_len = raw[base + 8]
    status_len = int.from_bytes(raw[base + 11 : base + 13], "little")
    pos = base + post + status_len
    schema = raw[pos : pos + db_len].decode("utf-8", "replace") or None
    pos += db_len + 1
    if pos > end:
        raise DecodeError("QUERY_EVENT lengths run past the end of the event")
    return Query(schema, raw[pos:end].decode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class Gtid:
    """A transaction's GTID event. ``gtid`` is ``domain-server-seq`` (MariaDB), ``uuid:n`` (MySQL) or None
    (MySQL's anonymous GTID, gtid_mode OFF); ``flags`` are MariaDB's flags2 (0 on MySQL)."""

    gtid: str | None
    flags: int


def mariadb_gtid(raw: bytes, end: int, server_id: int) -> Gtid:
    if end < HEADER_LEN + 13:
        raise DecodeError("MariaDB GTID_EVENT too short")
    seq, domain = struct.unpack_from("<QI", raw, HEADER_LEN)
    return Gtid(f"{domain}-{server_id}-{seq}", raw[HEADER_LEN + 12])


def mysql_gtid(raw: bytes, end: int) -> Gtid:
    if end < HEADER_LEN + 25:
        raise DecodeError("MySQL GTID event too short")
    sid = raw[HEADER_LEN + 1 : HEADER_LEN + 17]
    gno = int.from_bytes(raw[HEADER_LEN + 17 : HEADER_LEN + 25], "little")
    if gno == 0 or sid == bytes(16):
        return Gtid(None, 0)
    h = sid.hex()
    return Gtid(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}:{gno}", 0)


@dataclass(frozen=True, slots=True)
class XaPrepare:
    """XA_PREPARE_LOG_EVENT: ends the XA START ... XA PREPARE group (``one_phase``: XA COMMIT ONE PHASE)."""

    one_phase: bool


def xa_prepare(raw: bytes, end: int) -> XaPrepare:
    if end < HEADER_LEN + 1:
        raise DecodeError("XA_PREPARE_LOG_EVENT too short")
    return XaPrepare(bool(raw[HEADER_LEN]))
