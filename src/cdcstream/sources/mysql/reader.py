"""The binlog reader thread: runs the dump connection (:mod:`.binlog.client`), turns its events into items with the
source's :class:`~cdcstream.sources.mysql.converter.EventConverter` and hands them to the asyncio loop in batches.

Batches go through a **bounded** ``asyncio.Queue`` (``run_coroutine_threadsafe(queue.put(...))`` blocks the thread
while the queue is full), so a slow Kinesis stalls the binlog reader instead of growing memory. Any failure ends
the thread and is queued *after* the items read before it; the source decides (:func:`classify`) whether to
reconnect (from the last marker it yielded) or stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any

import pymysql

from cdcstream.changes import Item, Marker
from cdcstream.errors import DecodeError, SourceConnectionError, SourceError
from cdcstream.sources.mysql.binlog.charsets import Charsets
from cdcstream.sources.mysql.binlog.client import BinlogClient, DumpStart, StreamLost
from cdcstream.sources.mysql.converter import EventConverter
from cdcstream.sources.mysql.tableplans import TablePlan
from cdcstream.sources.mysql.tls import tls_failure

BATCH_MAX = 500  # items per hand-over: large enough to amortise the thread hop, small enough for low latency


@dataclass(slots=True)
class Batch:
    """What the thread hands over: items plus the counters the source turns into metrics."""

    items: list[Item]
    transactions: int = 0
    last_commit_epoch: float | None = None
    touched: list[TablePlan] = field(default_factory=list)
    heartbeat: bool = False
    ddl_skipped: int = 0
    # With a heartbeat: the binlog position (file, pos) the server had sent everything up to. The server sends
    # one only when nothing is left to send, and the binlog holds whole transactions, so everything before it
    # is in this batch or earlier ones (reload --table splits the stream there on an idle server).
    heard: tuple[str, int] | None = None


@dataclass(slots=True)
class Failure:
    """The thread ended: the error, queued after everything read before it, and the binlog position of the
    event it failed on (``file:pos`` of the event's start)."""

    error: BaseException
    position: str | None = None


class ReaderThread:
    """One replication connection: a thread feeding ``queue`` until it fails or is stopped."""

    def __init__(
        self,
        *,
        settings: dict[str, Any],
        server_id: int,
        heartbeat: float,
        mariadb: bool,
        start: DumpStart,
        converter: EventConverter,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Batch | Failure],
    ) -> None:
        self._settings = settings
        self._server_id = server_id
        self._heartbeat = heartbeat
        self._mariadb = mariadb
        self._start = start
        self._conv = converter
        self._loop = loop
        self._queue = queue
        self._stop = threading.Event()
        self._client: BinlogClient | None = None
        self.connected = False
        self.thread = threading.Thread(target=self._run, name="mysql-binlog", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        from cdcstream.sources.mysql.catalog import FixedBinaryTypes

        conv = self._conv
        out: list[Item] = []
        catalog = FixedBinaryTypes(lambda: pymysql.connect(**self._settings))
        try:
            client = self._client = BinlogClient(
                self._settings, server_id=self._server_id, heartbeat=self._heartbeat, mariadb=self._mariadb
            )
            client.connect(self._start)
            charsets = Charsets(client.collations, lambda name: client.single_byte.get(name, ""))
            conv.connected(client.checksum, charsets, catalog.lookup)
            while True:
                raw = client.read()
                if self._stop.is_set():
                    return
                self.connected = True
                conv.handle(raw, out)
                if conv.heard is not None:
                    heard, conv.heard = conv.heard, None
                    self._flush(out, heartbeat=True, heard=heard)
                    out = []
                elif out and (isinstance(out[-1], Marker) or len(out) >= BATCH_MAX):
                    self._flush(out)
                    out = []
        except BaseException as exc:
            if self._stop.is_set():
                return
            # _put raises StreamLost once the event loop is gone (a shutdown without stop()): nobody is left
            # to tell, and an exception escaping the thread would only be noise.
            with contextlib.suppress(StreamLost):
                if out:
                    self._flush(out)
                self._put(Failure(exc, conv.at))
        finally:
            self.connected = False
            catalog.close()
            if self._client is not None:
                self._client.close()

    def _flush(self, items: list[Item], heartbeat: bool = False, heard: tuple[str, int] | None = None) -> None:
        conv = self._conv
        batch = Batch(
            items, conv.transactions, conv.last_commit_epoch, list(conv.touched), heartbeat, conv.ddl_skipped, heard
        )
        conv.transactions = 0
        conv.ddl_skipped = 0
        conv.touched.clear()
        self._put(batch)

    def _put(self, msg: Batch | Failure) -> None:
        """Block until the loop's bounded queue takes ``msg`` (backpressure) or the reader is stopped."""
        coro = self._queue.put(msg)
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        except RuntimeError:  # the loop is closed: the process is shutting down without close()
            coro.close()
            raise StreamLost("event loop closed") from None
        while True:
            try:
                fut.result(timeout=0.5)
                return
            except TimeoutError:
                if self._stop.is_set():
                    fut.cancel()
                    raise StreamLost("stopped") from None

    def stop(self) -> None:
        """Ask the thread to end and unblock its socket read; the caller joins."""
        self._stop.set()
        client = self._client
        if client is not None:
            client.shutdown()


def classify(exc: BaseException, where: str, position: str | None = None) -> SourceError:
    """A reader failure as a typed error: retriable (reconnect) or not (stop with the fix). ``position`` is the
    binlog position of the event the reader failed on, for errors about the binlog's content."""
    if isinstance(exc, SourceError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):  # an OSError, but no retry makes the certificate valid
        fix = tls_failure(str(exc)) or "the server certificate could not be verified. Fix: check ssl_ca and ssl_mode"
        return SourceError(f"binlog connection to {where}: {fix}. ({exc})")
    if isinstance(exc, StreamLost | ConnectionError | OSError | TimeoutError):
        return SourceConnectionError(f"binlog connection to {where} lost: {exc}")
    if isinstance(exc, pymysql.err.MySQLError):
        code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
        msg = exc.args[1] if len(exc.args) > 1 else str(exc)
        tls = tls_failure(str(msg))
        if tls is not None:
            return SourceError(f"binlog connection to {where}: {tls}. ({msg})")
        if code == 1236:
            return SourceError(
                f"the server cannot send the binlog from the checkpointed position ({where}): {msg}. The binlog "
                "file (or GTID) cdcstream needs was purged, so changes since the checkpoint are lost. Recovery: "
                "raise binlog retention (expire_logs_days / binlog_expire_logs_seconds), delete the checkpoint "
                "file and re-sync the target with a full load."
            )
        if code in (1045, 1044, 1227, 1142, 1698):
            return SourceError(
                f"MySQL/MariaDB refused {where}: {msg}. Fix: GRANT REPLICATION SLAVE, BINLOG MONITOR, SELECT ON *.* "
                "(MySQL 8: REPLICATION SLAVE, REPLICATION CLIENT, SELECT) to the configured user, and check the "
                "password."
            )
        return SourceConnectionError(f"binlog connection to {where} failed: [{code}] {msg}")
    # Anything else is the binlog's content defeating the decoder. Skipping the event would lose a change
    # silently, so stop, with what is needed for a bug report.
    at = f" at binlog position {position}" if position else ""
    start = f" --start-position={position.rpartition(':')[2]}" if position else ""
    return DecodeError(
        f"cannot decode the binlog event{at} from {where}: {exc!r}. cdcstream stops rather than skip it; nothing "
        "after the last checkpoint is acknowledged. Please report it with the server version and the output of "
        f"mysqlbinlog --base64-output=decode-rows -vv{start} on that binlog file."
    )
