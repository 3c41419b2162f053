"""The binlog dump connection: a replica's handshake over PyMySQL, then raw events, one at a time.

:meth:`BinlogClient.connect` opens an ordinary PyMySQL connection with the source's ``connection_settings`` (TLS
and timeouts included) and, before asking for the binlog, sets what the server reads from the session:

* ``@master_binlog_checksum`` (and MySQL 8.0.26+'s ``@source_binlog_checksum``) to ``@@global.binlog_checksum``:
  the replica can check checksums, so the server sends every event with its CRC32 (when the binlog has them).
* ``@master_heartbeat_period`` / ``@source_heartbeat_period`` (nanoseconds): the server sends a heartbeat event
  after that much silence, so an idle stream is told apart from a dead one (at most half the read timeout).
* ``@mariadb_slave_capability = 4`` (MARIA_SLAVE_CAPABILITY_GTID, the highest there is): the server then sends
  MariaDB's GTID events as they are (a lower capability replaces them with BEGIN queries or dummy events, losing
  the GTIDs and the flags cdcstream reads), may leave out ANNOTATE_ROWS events it was not asked for, and sends
  BINLOG_CHECKPOINT and GTID_LIST events (ignored). Compressed events are sent as written whatever the
  capability: there is no capability that asks the server to decompress them, so the reader decompresses.
  MySQL ignores the variable.
* MariaDB, resuming by GTID: ``@slave_connect_state`` (the GTID position), strict mode on, duplicates not
  ignored.

It reads the server's collations (for :class:`.charsets.Charsets`) and the 256-byte tables of its single-byte
character sets on the same connection, registers as a replica (COM_REGISTER_SLAVE: the reader is listed in
``SHOW REPLICAS`` / ``SHOW SLAVE HOSTS`` under its ``server_id``), and sends the dump request: COM_BINLOG_DUMP
from a file and position, COM_BINLOG_DUMP with an empty file name after ``@slave_connect_state`` (MariaDB GTID),
or COM_BINLOG_DUMP_GTID with the GTID set (MySQL). :meth:`read` then returns one event per call (header to
checksum). A lost connection raises :class:`StreamLost`: nothing here reconnects, the source does (from the last
transaction end it yielded).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from dataclasses import dataclass
from typing import Any

import pymysql

from cdcstream.sources.mysql.binlog.gtid import GtidSet

COM_BINLOG_DUMP = 0x12
COM_REGISTER_SLAVE = 0x15
COM_BINLOG_DUMP_GTID = 0x1E
BINLOG_THROUGH_GTID = 0x04
MARIA_SLAVE_CAPABILITY_GTID = 4
MAX_HEARTBEAT_SECONDS = 4294967  # the servers' limit for the heartbeat period


class StreamLost(Exception):
    """The replication connection dropped, or the server ended the stream."""


class _StreamConnection(pymysql.connections.Connection):  # type: ignore[misc]
    """PyMySQL connection whose lost-connection errors (2006, 2013) become :class:`StreamLost`, so the source's
    reconnect logic (typed as a retriable connection error) handles them."""

    def _read_packet(self, packet_type: Any = pymysql.connections.MysqlPacket) -> Any:
        try:
            return super()._read_packet(packet_type)
        except pymysql.err.OperationalError as exc:
            if exc.args and exc.args[0] in (2006, 2013):
                raise StreamLost(str(exc.args[1] if len(exc.args) > 1 else exc)) from None
            raise


@dataclass(frozen=True, slots=True)
class DumpStart:
    """Where the dump starts: a file and position, or (``use_gtid``) a GTID position (MariaDB ``d-s-n`` list or
    MySQL GTID set), in which case the file and position are only the reader's idea of where that is."""

    file: str
    pos: int
    gtid: str | None
    use_gtid: bool


class BinlogClient:
    """One dump connection. Not thread-safe, except :meth:`shutdown` (from another thread, to unblock a read)."""

    def __init__(self, settings: dict[str, Any], *, server_id: int, heartbeat: float, mariadb: bool) -> None:
        self._settings = settings
        self._server_id = server_id
        self._heartbeat = heartbeat
        self._mariadb = mariadb
        self._conn: Any = None
        self.checksum = False
        self.collations: dict[int, str] = {}
        self.single_byte: dict[str, str] = {}

    def connect(self, start: DumpStart) -> None:
        conn = self._conn = _StreamConnection(**self._settings)
        with conn.cursor() as cur:
            cur.execute("SELECT @@global.binlog_checksum")
            row = cur.fetchone()
            self.checksum = bool(row and str(row[0]).upper() not in ("NONE", ""))
            cur.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            cur.execute("SET @source_binlog_checksum = @@global.binlog_checksum")
            read_timeout = float(self._settings.get("read_timeout") or MAX_HEARTBEAT_SECONDS)
            period = int(min(self._heartbeat, read_timeout / 2, MAX_HEARTBEAT_SECONDS) * 1_000_000_000)
            cur.execute("SET @master_heartbeat_period = %s", (period,))
            cur.execute("SET @source_heartbeat_period = %s", (period,))
            cur.execute(f"SET @mariadb_slave_capability = {MARIA_SLAVE_CAPABILITY_GTID}")
            self._read_charsets(cur)
            if start.use_gtid and self._mariadb:
                cur.execute("SET @slave_connect_state = %s", (start.gtid or "",))
                cur.execute("SET @slave_gtid_strict_mode = 1")
                cur.execute("SET @slave_gtid_ignore_duplicates = 0")
        self._register()
        self._command(self._dump_request(start))

    def _read_charsets(self, cur: Any) -> None:
        cur.execute("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
        self.collations = {int(i): str(cs) for i, cs in cur.fetchall()}
        if self._mariadb:
            # MariaDB 10.10+ lists its UCA 14.0.0 collations (ids from 2048) only here.
            with contextlib.suppress(pymysql.err.MySQLError):
                cur.execute(
                    "SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY "
                    "WHERE ID IS NOT NULL"
                )
                self.collations.update({int(i): str(cs) for i, cs in cur.fetchall()})
        cur.execute("SELECT CHARACTER_SET_NAME FROM information_schema.CHARACTER_SETS WHERE MAXLEN = 1")
        names = sorted(str(r[0]) for r in cur.fetchall() if str(r[0]) not in ("binary", "latin1", "ascii"))
        if names:
            every_byte = "UNHEX('" + bytes(range(256)).hex() + "')"
            cur.execute("SELECT " + ", ".join(f"CONVERT(CONVERT({every_byte} USING {n}) USING utf8mb4)" for n in names))
            row = cur.fetchone()
            self.single_byte = {n: str(t) for n, t in zip(names, row, strict=True) if t is not None}

    def _command(self, payload: bytes) -> None:
        conn = self._conn
        conn._write_bytes(struct.pack("<i", len(payload))[:3] + b"\x00" + payload)
        conn._next_seq_id = 1

    def _register(self) -> None:
        host = b"cdcstream"
        payload = (
            bytes([COM_REGISTER_SLAVE])
            + struct.pack("<I", self._server_id)
            + bytes([len(host)])
            + host
            + b"\x00"  # user
            + b"\x00"  # password
            + struct.pack("<H", 0)  # port
            + struct.pack("<I", 0)  # replication rank
            + struct.pack("<I", 0)  # master id
        )
        self._command(payload)
        self._conn._read_packet()  # OK, or an error raised by PyMySQL

    def _dump_request(self, start: DumpStart) -> bytes:
        flags = 0  # blocking: the server waits for new events instead of ending the stream
        if start.use_gtid and not self._mariadb:
            gtids = GtidSet(start.gtid).encode()
            name = b""
            return (
                bytes([COM_BINLOG_DUMP_GTID])
                + struct.pack("<HI", flags | BINLOG_THROUGH_GTID, self._server_id)
                + struct.pack("<I", len(name))
                + name
                + struct.pack("<Q", 4)
                + struct.pack("<I", len(gtids))
                + gtids
            )
        if start.use_gtid:  # MariaDB: the position is @slave_connect_state; the file name stays empty
            return bytes([COM_BINLOG_DUMP]) + struct.pack("<IHI", 4, flags, self._server_id)
        return bytes([COM_BINLOG_DUMP]) + struct.pack("<IHI", start.pos, flags, self._server_id) + start.file.encode()

    def read(self) -> bytes:
        """The next event, header to checksum. Raises :class:`StreamLost` when the stream ends or drops, and
        PyMySQL's error when the server refuses the request (e.g. 1236: the position is purged)."""
        packet = self._conn._read_packet()
        data: bytes = packet.get_all_data()
        first = data[0]
        if first == 0x00:
            return data[1:]
        if first == 0xFE and len(data) < 9:
            raise StreamLost("the server ended the binlog stream")
        raise StreamLost(f"unexpected packet in the binlog stream (first byte {first:#04x})")

    def shutdown(self) -> None:
        """Unblock a :meth:`read` waiting in another thread (the read then fails with StreamLost)."""
        sock = getattr(self._conn, "_sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
