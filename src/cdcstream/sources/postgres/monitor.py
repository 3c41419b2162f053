"""Watching, while CDC runs, for selected tables whose changes cannot reach the stream (``publication.py``):
tables created since the start that nothing adds to the publication, tables that lost their replica identity."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import psycopg
from structlog.typing import FilteringBoundLogger

from cdcstream.errors import SourceError
from cdcstream.sources.postgres.connection import Session
from cdcstream.sources.postgres.publication import Uncaptured, uncaptured_tables
from cdcstream.telemetry import metrics


class UncapturedTables:
    """The selected tables the publication does not cover, by name: each is named once when it is found (log,
    ``/status``) and again when it is captured; ``cdcstream_source_uncaptured_tables`` holds how many there are."""

    def __init__(
        self,
        session: Session,
        publication: str,
        selector: Callable[[str, str], bool] | None,
        *,
        label: str,
        log: FilteringBoundLogger,
    ) -> None:
        self.found: dict[str, Uncaptured] = {}
        #: DDL capture adds new selected tables to the publication (set at start, ``setup.check_ddl_capture``).
        self.ddl_capture = False
        self._session = session
        self._publication = publication
        self._selector = selector
        self._log = log
        self._gauge = metrics.SOURCE_UNCAPTURED_TABLES.labels(label)

    async def check(self) -> None:
        """One check. Best effort, like the heartbeat: a failure is logged and the next interval tries again."""
        try:
            conn = await self._session.get()
            found = {
                u.name: u
                for u in await uncaptured_tables(conn, self._publication, self._selector, ddl_capture=self.ddl_capture)
            }
        except (psycopg.Error, SourceError) as exc:
            self._log.warning("table check failed", reason=str(exc).splitlines()[0] if str(exc) else repr(exc))
            if not isinstance(exc, SourceError):
                await self._session.reset()
            return
        for name, u in found.items():
            if name not in self.found:
                self._log.warning(
                    "selected table is not captured: its changes cannot reach the stream",
                    table=name,
                    reason=u.reason,
                    fix=u.fix,
                )
        for name in self.found.keys() - found.keys():
            self._log.info(
                "table is captured now (changes made before are not in the stream: cdcstream reload --table)",
                table=name,
            )
        self.found = found
        self._gauge.set(len(found))

    async def loop(self, interval: float) -> None:
        """A check every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            await self.check()
