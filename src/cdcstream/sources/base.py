"""State both sources keep alike: full-load and reload bookkeeping, reconnect backoff, per-source metrics.

The engines differ in everything they read and how; this is only what :class:`PostgresSource` and
:class:`MySQLSource` would otherwise each set up the same way in their constructors.
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

from cdcstream.checkpoints.model import Checkpoint, SharedFields
from cdcstream.config import FullLoadConfig
from cdcstream.runtime.retry import Backoff
from cdcstream.sources.fullload import FullLoad, KeyRangesOf, Offload, PendingReloads
from cdcstream.telemetry import metrics

C = TypeVar("C", bound=Checkpoint)


class SourceBase(Generic[C]):
    """The common part of a source's state (see the module docstring); ``C``: its checkpoint type."""

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
        # Extra checkpoint fields kept across reconnects: {"load": {"done": true, ...}} after a full load
        # (PostgreSQL keeps its pending reloads, {"reload": ["s.t", ...]}, here too).
        self._load_extra: SharedFields = {}
        # reload --table: the tables waiting to be re-copied, and the running one's load.
        self._reloads = PendingReloads(label=label)
        self._reload: FullLoad | None = None
        self._last_checkpoint: C = cast(C, {})  # checkpoint of the last marker yielded
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
