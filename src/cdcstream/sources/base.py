"""What both sources keep and do alike: the full load's bookkeeping, reconnect backoff, per-source metrics.

The engines differ in everything they read and how; this is only what :class:`PostgresSource` and
:class:`MySQLSource` would otherwise each set up and do the same way: make a full load (or a reload's copy) over
their load engine, run the initial load and say in every later checkpoint that it is done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Generic, TypeVar

from cdcstream.changes import Item
from cdcstream.checkpoints.model import (
    Checkpoint,
    MySQLCheckpoint,
    PgCheckpoint,
    SharedFields,
    completed_load,
    load_completed,
)
from cdcstream.config import FullLoadConfig
from cdcstream.runtime.retry import Backoff
from cdcstream.sources.fullload import FullLoad, KeyRangesOf
from cdcstream.sources.loadengine import LoadEngine, Offload
from cdcstream.telemetry import metrics

C = TypeVar("C", PgCheckpoint, MySQLCheckpoint)


class SourceBase(Generic[C]):
    """The common part of a source (the module docstring says what); ``C``: its checkpoint type."""

    def __init__(
        self,
        label: str,
        *,
        reconnect_max_delay: float,
        migration_type: str,
        full_load: FullLoadConfig | None,
        key_ranges: KeyRangesOf | None,
        offload: Offload | None,
    ) -> None:
        self.migration_type = migration_type
        self._full_load_cfg = full_load or FullLoadConfig()
        self._key_ranges = key_ranges or (lambda schema, table: None)
        self._offload = offload  # full-load chunks to the pipeline's mapping worker processes
        self._load: FullLoad | None = None
        # Extra checkpoint fields kept across reconnects: {"load": {"done": true, ...}} after a full load.
        self._load_extra: SharedFields = {}
        self._label = label
        self._started = False
        self._closed = False
        self._backoff = Backoff(base=0.2, maximum=reconnect_max_delay)
        self._m_connected = metrics.SOURCE_CONNECTED.labels(label)
        self._m_reconnects = metrics.SOURCE_RECONNECTS.labels(label)
        self._m_transactions = metrics.SOURCE_TRANSACTIONS.labels(label)
        self._m_ddl_skipped = metrics.SOURCE_DDL_SKIPPED.labels(label)
        self._m_lag = metrics.SOURCE_LAG_SECONDS.labels(label)
        #: Now minus the commit time of the newest change read, when it was read (0 after a heartbeat or an idle
        #: position: caught up); the pipeline's delivery lag is never below it.
        self.read_lag = 0.0
        self._m_last_event = metrics.SOURCE_LAST_EVENT_TIMESTAMP.labels(label)
        self._m_commit_ts = metrics.SOURCE_COMMIT_TIMESTAMP.labels(label)

    def _set_read_lag(self, seconds: float) -> None:
        self.read_lag = seconds
        self._m_lag.set(seconds)

    def _restore_load(self, checkpoint: C | None) -> None:
        """After a full load, every checkpoint says so (a restart neither reloads nor forgets it)."""
        if checkpoint is not None and load_completed(checkpoint):
            self._load_extra = {"load": checkpoint["load"]}

    async def _open_load(self, engine: LoadEngine, checkpoint: C | None, base: Callable[[], Checkpoint]) -> None:
        """Open the initial full load over ``engine`` (a fresh snapshot, or the load ``checkpoint`` stopped in)
        and plan its tables; :meth:`_run_load` reads the rows."""
        self._load = FullLoad(
            engine,
            self._full_load_cfg,
            label=self._label,
            checkpoint=checkpoint,
            base_checkpoint=base,
            ranges=self._key_ranges,
            offload=self._offload,
        )
        await self._load.open()

    async def _run_load(self, load: FullLoad) -> AsyncIterator[Sequence[Item]]:
        """The initial load's rows and markers; then every later checkpoint says the load is done."""
        async for items in load.run():
            yield items
        self._load_extra = {"load": completed_load(len(load.status()["tables"]), load.rows)}

    def _new_copy(self, engine: LoadEngine, base: Callable[[], Checkpoint], sessions: int | None) -> FullLoad:
        """The load of a ``reload --table`` copy over ``engine`` (``reload.TableReloads`` asks for it)."""
        return FullLoad.for_reload(
            engine,
            self._full_load_cfg,
            label=self._label,
            base_checkpoint=base,
            ranges=self._key_ranges,
            offload=self._offload,
            sessions=sessions,
        )
