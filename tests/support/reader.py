"""Reading a real source in process (the integration tests of PostgresSource and MySQLSource): ``changes()``
consumed by a background task, the test polling what arrived with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from cdcstream.changes import ChangeEvent, Item, Marker
from cdcstream.checkpoints.model import Checkpoint
from cdcstream.config import MySQLSourceConfig, PostgresSourceConfig
from cdcstream.sources.mysql import MySQLSource
from cdcstream.sources.postgres import PostgresSource


class Reader:
    """Consumes ``source.changes()`` in a background task; tests poll ``items`` with deadlines."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.items: list[Item] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for batch in self.source.changes():
            self.items.extend(batch)

    @property
    def events(self) -> list[ChangeEvent]:
        return [i for i in self.items if isinstance(i, ChangeEvent)]

    @property
    def markers(self) -> list[Marker]:
        return [i for i in self.items if isinstance(i, Marker)]

    async def wait_for(self, pred: Callable[[Reader], object], within: float = 20, what: str = "") -> None:
        """Until ``pred(self)`` holds (a hang guard: fails after ``within`` seconds, or re-raises the source's
        error if ``changes()`` ended)."""
        deadline = time.monotonic() + within
        while not pred(self):
            if self.task.done():
                self.task.result()  # re-raise the source's error
                raise AssertionError("changes() ended")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or pred}; got {self.items!r}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Close the source; ``changes()`` must then end within 5 s. (A MySQL source's ``changes()`` waits for its
        reader thread, so its task is cancelled too, as the pipeline cancels its read task at every stop.)"""
        await self.source.close()
        if isinstance(self.source, MySQLSource):
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            async with asyncio.timeout(5):
                await self.task


def source_for(cfg: PostgresSourceConfig | MySQLSourceConfig, **kw: Any) -> Any:
    """The source engine ``cfg`` configures, built with ``kw`` (selector, migration_type, ...)."""
    if isinstance(cfg, MySQLSourceConfig):
        return MySQLSource(cfg, **kw)
    return PostgresSource(cfg, **kw)


async def open_reader(
    cfg: PostgresSourceConfig | MySQLSourceConfig, checkpoint: Checkpoint | None = None, **kw: Any
) -> Reader:
    """The source ``cfg`` configures (:func:`source_for`), started at ``checkpoint`` and read by a
    :class:`Reader` (the test stops it)."""
    source = source_for(cfg, **kw)
    await source.start(checkpoint)
    return Reader(source)


def n_events(n: int) -> Callable[[Reader], bool]:
    return lambda r: len(r.events) >= n
