"""Sources read committed changes from a database, in commit order.

A :class:`Source` yields lists of :class:`~cdcstream.changes.ChangeEvent` and
:class:`~cdcstream.changes.Marker` items (lists, so the hot path hands over many rows per await).
The pipeline calls :meth:`Source.ack` with a marker's checkpoint only after every record before that marker has
been accepted by Kinesis and the checkpoint file has been written; the source may then release the position
upstream (PostgreSQL ``flush_lsn``). A source reconnects by itself after retriable errors (resuming from the
last position it yielded) and raises non-retriable :class:`~cdcstream.errors.SourceError` subclasses.

What a source may offer besides, each a Protocol of its own that the pipeline tests with ``isinstance`` (a source
without it still works): :class:`SupportsReload` (``reload --table``), :class:`SupportsLagProbe` (byte lag and
retained log), :class:`SupportsAliveAt` (the watchdog's sign of life) and :class:`SupportsReadLag`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from typing import Any, Protocol, runtime_checkable

from cdcstream.changes import Item
from cdcstream.checkpoints.model import Checkpoint


class Source(Protocol):
    """What the pipeline needs from a source."""

    async def start(self, checkpoint: Checkpoint | None, *, owned: bool = True) -> None:
        """Verify settings and privileges, create what is missing and permitted, position at ``checkpoint``.

        ``owned``: the checkpoint file records this task as its owner (``checkpoints/store.py``); False for a
        file written before owners were recorded, which the source adopts only when the server proves it fits.
        A checkpoint that does not belong to the server (or slot) raises :class:`SourceError`, never a skip."""

    def changes(self) -> AsyncGenerator[Sequence[Item], None]:
        """Batches of changes and markers in commit order, forever (until :meth:`close`)."""

    async def ack(self, checkpoint: Checkpoint) -> None:
        """Everything up to ``checkpoint`` is durable downstream; the source may release it upstream."""

    def status(self) -> dict[str, Any]:
        """JSON-ready state for ``/status`` and logs (positions, connected, ...). Never secrets."""

    async def close(self) -> None:
        """Stop reading and release connections (sending a last acknowledgement if it has one)."""


@runtime_checkable
class SupportsReload(Protocol):
    """A source that can re-copy one table while CDC runs (``POST /reload``, ``cdcstream reload``)."""

    async def request_reload(self, name: str) -> str:
        """Queue a re-copy of ``schema.table``; the answer for the caller. A refused request raises
        :class:`~cdcstream.errors.SourceError` saying why."""
        ...


@runtime_checkable
class SupportsLagProbe(Protocol):
    """A source that can measure how far behind the server it is, in bytes (polled by ``telemetry/probe.py``)."""

    async def lag_probe(self) -> dict[str, float | None]:
        """Values keyed as ``telemetry.metrics.PROBE_GAUGES`` (None: unknown, the gauge is removed)."""
        ...


@runtime_checkable
class SupportsAliveAt(Protocol):
    """A source whose read loop stamps each pass, so the systemd watchdog tells an idle source from a hung one."""

    #: ``time.monotonic()`` of the last pass through the read or reconnect loop.
    alive_at: float


@runtime_checkable
class SupportsReadLag(Protocol):
    """A source that knows how old the newest change it read was when it read it."""

    #: Seconds from the commit of the newest change read to reading it (0 when caught up).
    read_lag: float


@runtime_checkable
class SupportsStartCheckpoint(Protocol):
    """A source whose start position is held by nothing on the server (a MySQL binlog position, unlike a
    PostgreSQL slot): a fresh CDC task must write it down before it reports ready."""

    def start_checkpoint(self) -> Checkpoint | None:
        """After :meth:`Source.start` without a checkpoint: the position streaming starts from (None: nothing to
        write, e.g. a full load's)."""
        ...
