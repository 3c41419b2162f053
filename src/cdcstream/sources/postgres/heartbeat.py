"""Keeping the slot moving: standby status updates (the acknowledged position, and nothing beyond it) and heartbeat
messages into the WAL.

* :class:`StandbyStatus` sends a standby status update every ``status_interval`` seconds (wal_sender_timeout
  never fires, even when nobody reads) and promptly after an acknowledgement. The flush position sent is only ever
  an LSN the pipeline acknowledged (``PostgresSource.ack``), never what was merely received: that is what makes a
  crash lose nothing.
* :func:`heartbeat_loop` writes ``pg_logical_emit_message`` every ``heartbeat_interval`` seconds: an idle slot
  advances even when only uncaptured tables change.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from structlog.typing import FilteringBoundLogger

from cdcstream.errors import SourceConnectionError, SourceError
from cdcstream.sources.postgres.connection import Session
from cdcstream.sources.postgres.replication import ReplicationConnection

HEARTBEAT_PREFIX = "cdcstream.heartbeat"
PROMPT_ACK_INTERVAL = 0.5  # an ack is sent at once if the last status update is older than this


class StandbyStatus:
    """The flush position reported to the server: the highest LSN acknowledged, sent on time and never moved
    backwards. ``stream`` is the replication connection now (None between connections), ``received`` the
    highest LSN received (the write position sent)."""

    def __init__(
        self,
        stream: Callable[[], ReplicationConnection | None],
        received: Callable[[], int],
        *,
        interval: float,
        log: FilteringBoundLogger,
    ) -> None:
        self.acked = 0
        self._sent_flush = -1
        self._last = 0.0
        self._stream = stream
        self._received = received
        self._interval = interval
        self._log = log

    async def ack(self, lsn: int) -> None:
        """Everything up to ``lsn`` is out; sent at once unless a status update went out a moment ago."""
        if lsn <= self.acked:
            return  # monotonic: an older (or repeated) ack never moves flush_lsn backwards
        self.acked = lsn
        if time.monotonic() - self._last >= PROMPT_ACK_INTERVAL:
            await self.send()

    async def send(self, *, reply: bool = False) -> None:
        repl = self._stream()
        if repl is None or not repl.streaming:
            return
        flush = self.acked
        write = max(flush, self._received())
        try:
            await repl.send_status(write, flush, flush, reply=reply)
        except SourceConnectionError as exc:
            # The reader notices the broken connection too and reconnects; nothing to do here.
            self._log.debug("status update failed", reason=str(exc))
            return
        self._last = time.monotonic()
        self._sent_flush = flush

    async def loop(self) -> None:
        """Status updates every interval and shortly after an ack that could not be sent at once, until
        cancelled."""
        self._last = time.monotonic()
        tick = min(0.25, self._interval)
        while True:
            await asyncio.sleep(tick)
            since = time.monotonic() - self._last
            if since >= self._interval or (self.acked > self._sent_flush and since >= PROMPT_ACK_INTERVAL):
                await self.send()


async def heartbeat_loop(session: Session, interval: float, log: FilteringBoundLogger) -> None:
    """A heartbeat message every ``interval`` seconds, until cancelled. Best effort: a failure is logged and
    retried at the next interval."""
    while True:
        await asyncio.sleep(interval)
        try:
            conn = await session.get()
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            await conn.execute(
                # A hot standby cannot write WAL: the primary's heartbeats reach its slot instead, if it has them.
                sql.SQL("SELECT pg_logical_emit_message(true, {}, {}) WHERE NOT pg_is_in_recovery()").format(
                    sql.Literal(HEARTBEAT_PREFIX), sql.Literal(now)
                )
            )
        except (psycopg.Error, SourceError) as exc:
            log.warning("heartbeat failed", reason=str(exc).splitlines()[0] if str(exc) else repr(exc))
            await session.reset()
