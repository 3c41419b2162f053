"""Sinks deliver records and report, per record, when the destination has accepted it.

A sink never acknowledges anything upstream itself: it calls the ``on_ack`` callback it was built with, passing
the records the destination accepted; the pipeline's watermark turns those into checkpoints.

Optional: an ``alive_at`` attribute (``time.monotonic()`` of the last finished request, successful or not) lets
the systemd watchdog tell a sink retrying through an outage (alive) from a hung one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from cdcstream.records import Record

AckCallback = Callable[[Sequence[Record]], None]


class Sink(Protocol):
    """What the pipeline needs from a sink."""

    async def start(self) -> None:
        """Connect and check the destination (e.g. DescribeStreamSummary); raise a typed error if unusable."""

    async def put(self, record: Record) -> None:
        """Queue a record for delivery in order; waits (backpressure) while the sink's buffer is full."""

    async def put_many(self, records: Sequence[Record], start: int, stop: int) -> int:
        """Queue ``records[start:stop]`` in order, as :meth:`put` would one by one, but with one await for the
        run (it still waits for buffer space record by record). Stops before a record :meth:`put` would refuse
        (oversize) and returns how many it queued; the caller puts that record itself."""

    @property
    def room(self) -> int:
        """How many records :meth:`put_many` would queue now without waiting for buffer space."""

    @property
    def outstanding_bytes(self) -> int:
        """Size of the records queued and not yet acknowledged, as counted against the buffer's byte bound."""

    acknowledged_bytes: int
    """Size of every record acknowledged so far, counted the same way."""

    async def run(self) -> None:
        """Deliver queued records until :meth:`close`; raises a non-retriable error if delivery cannot go on."""

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued record is acknowledged; False if ``timeout`` passed first."""

    async def close(self) -> None:
        """Stop delivering and release connections. Unacknowledged records are simply not acknowledged."""
