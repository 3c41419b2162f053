"""The source lag probe: polls ``Source.lag_probe()`` every ``[http] lag_probe_interval`` seconds and sets the
byte gauges (:data:`cdcstream.telemetry.metrics.PROBE_GAUGES`).

Engine-neutral: a source that can measure its distance to the log end is a
:class:`~cdcstream.sources.SupportsLagProbe`, with keys from ``PROBE_GAUGES`` (PostgreSQL: slot lag,
retained WAL, safe_wal_size; MySQL: bytes to the end of the binlog). A key the source reports as None (e.g.
``safe_wal_size`` with an unlimited ``max_slot_wal_keep_size``) removes the series instead of exporting a
misleading 0. A failing probe is logged, counted under ``errors_total{stage="probing"}`` and retried at the
next interval: it never stops the pipeline, and the gauges keep their last value (their age is
``time() - cdcstream_source_probe_timestamp_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import structlog

from cdcstream.sources import SupportsLagProbe
from cdcstream.telemetry import metrics

log = structlog.get_logger(__name__)

ProbeFn = Callable[[], Awaitable[dict[str, float | None]]]


class LagProbe:
    """Runs one source's ``lag_probe`` periodically; :attr:`last` holds the latest values for ``/status``."""

    def __init__(self, probe: ProbeFn, label: str, interval: float) -> None:
        self._probe = probe
        self._label = label
        self.interval = interval
        self.last: dict[str, float | None] = {}
        self.last_at: float | None = None
        self._failures = 0

    @classmethod
    def for_source(cls, source: object, label: str, interval: float) -> LagProbe | None:
        """A probe for ``source``, or None if it has no ``lag_probe`` or probing is off."""
        if not isinstance(source, SupportsLagProbe) or interval <= 0:
            return None
        return cls(source.lag_probe, label, interval)

    async def probe_once(self) -> None:
        """One measurement; errors are logged and counted, never raised."""
        try:
            async with asyncio.timeout(max(5.0, self.interval)):  # not wait_for: see runtime/stopping.py
                values = await self._probe()
        except Exception as exc:  # a probe is best effort: the pipeline keeps streaming without it
            self._failures += 1
            metrics.ERRORS.labels("probing", type(exc).__name__).inc()
            if self._failures == 1 or self._failures % 20 == 0:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("lag probe failed", source=self._label, error=first, failures=self._failures)
            return
        self._failures = 0
        for key, value in values.items():
            gauge = metrics.PROBE_GAUGES.get(key)
            if gauge is None:
                continue
            if value is None:
                with contextlib.suppress(KeyError):
                    gauge.remove(self._label)
            else:
                gauge.labels(self._label).set(value)
        self.last = values
        self.last_at = time.time()
        metrics.SOURCE_PROBE_TIMESTAMP.labels(self._label).set(self.last_at)

    async def run(self) -> None:
        while True:
            await self.probe_once()
            await asyncio.sleep(self.interval)
