"""Sources read committed changes from a database, in commit order.

A :class:`Source` yields lists of :class:`~cdcstream.changes.ChangeEvent` and
:class:`~cdcstream.changes.Marker` items (lists, so the hot path hands over many rows per await).
The pipeline calls :meth:`Source.ack` with a marker's checkpoint only after every record before that marker has
been accepted by Kinesis and the checkpoint file has been written; the source may then release the position
upstream (PostgreSQL ``flush_lsn``). A source reconnects by itself after retriable errors (resuming from the
last position it yielded) and raises non-retriable :class:`~cdcstream.errors.SourceError` subclasses.

Optional, found with ``getattr`` so a source without them still works: ``async def lag_probe() -> dict[str,
float | None]`` (byte lag and retained log, keys from ``telemetry.metrics.PROBE_GAUGES``, polled by
``telemetry/probe.py``) and an ``alive_at`` attribute (``time.monotonic()`` of the last pass through the read
or reconnect loop, which the systemd watchdog uses to tell an idle source from a hung one).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol

from cdcstream.changes import Item


class Source(Protocol):
    """What the pipeline needs from a source."""

    async def start(self, checkpoint: dict[str, Any] | None, *, owned: bool = True) -> None:
        """Verify settings and privileges, create what is missing and permitted, position at ``checkpoint``.

        ``owned``: the checkpoint file records this task as its owner (``checkpoints/store.py``); False for a
        file written before owners were recorded, which the source adopts only when the server proves it fits.
        A checkpoint that does not belong to the server (or slot) raises :class:`SourceError`, never a skip."""

    def changes(self) -> AsyncGenerator[Sequence[Item], None]:
        """Batches of changes and markers in commit order, forever (until :meth:`close`)."""

    async def ack(self, checkpoint: dict[str, Any]) -> None:
        """Everything up to ``checkpoint`` is durable downstream; the source may release it upstream."""

    def status(self) -> dict[str, Any]:
        """JSON-ready state for ``/status`` and logs (positions, connected, ...). Never secrets."""

    async def close(self) -> None:
        """Stop reading and release connections (sending a last acknowledgement if it has one)."""
