"""Row packets of an unbuffered PyMySQL result, read as bytes: what PyMySQL's ``_read_packet`` does, minus the
packet objects and the row parsing (``textrows.parse_row_packets`` parses them, in a mapping worker process
where there is one). The load session's thread then holds the GIL the event loop needs for less time.
"""

from __future__ import annotations

from typing import Any

import pymysql
import pymysql.cursors
from pymysql.protocol import MysqlPacket

#: Packet reads use PyMySQL's private packet reading, checked against this release (pinned in pyproject.toml);
#: with any other, PyMySQL parses the rows (``fetchmany``) and no chunk is handed over raw.
RAW_READS = pymysql.VERSION[:3] == (1, 2, 4)


def _bad_sequence(conn: pymysql.Connection[Any], got: int, expected: int) -> None:
    """What PyMySQL's ``_read_packet`` does on a packet out of sequence."""
    conn._force_close()
    if got == 0:  # MariaDB sends an error with sequence number 0 when it shuts down
        raise pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")
    raise pymysql.err.InternalError(f"Packet sequence number wrong - got {got} expected {expected}")


def read_row_packets(cur: pymysql.cursors.SSCursor, limit: int) -> list[bytes]:
    """Up to ``limit`` row packet payloads of the cursor's unbuffered result, as bytes: what PyMySQL's
    ``_read_packet`` does, minus the packet objects and row parsing (the reader thread shares the GIL with the
    event loop). The result's closing EOF packet (or an error) ends it as PyMySQL would, so the cursor closes
    and the connection takes the next query as usual."""
    result = cur._result
    if result is None or not result.unbuffered_active:
        return []
    conn = cur.connection
    assert conn is not None
    read = conn._read_bytes
    seq = conn._next_seq_id
    payloads: list[bytes] = []
    try:
        while len(payloads) < limit:
            header = read(4)
            length = header[0] | header[1] << 8 | header[2] << 16
            if header[3] != seq:
                _bad_sequence(conn, header[3], seq)
            seq = (seq + 1) % 256
            data = read(length)
            if length == 0xFFFFFF:  # a payload of 16 MiB or more continues in the next packets
                parts = [data]
                while length == 0xFFFFFF:
                    header = read(4)
                    length = header[0] | header[1] << 8 | header[2] << 16
                    if header[3] != seq:
                        _bad_sequence(conn, header[3], seq)
                    seq = (seq + 1) % 256
                    parts.append(read(length))
                data = b"".join(parts)
            first = data[0] if data else -1
            if first == 0xFF:  # an error (a killed query): what _read_packet raises
                result.unbuffered_active = False
                conn._next_seq_id = seq
                MysqlPacket(data, conn.encoding).raise_for_error()
            if first == 0xFE and len(data) < 9:  # EOF (a row starting with 0xFE is at least 9 bytes long)
                result._check_packet_is_eof(MysqlPacket(data, conn.encoding))
                result.unbuffered_active = False
                result.connection = None
                result.rows = None
                break
            payloads.append(data)
    finally:
        conn._next_seq_id = seq
    return payloads
