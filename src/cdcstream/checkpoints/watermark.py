"""The ordered acknowledgement watermark.

Every record gets a sequence number in source order; markers (transaction ends, idle positions) get one too.
Kinesis acknowledges records in any order. The watermark is the longest prefix of sequence numbers that are all
acknowledged, and the checkpoint is the last marker inside that prefix: only then is every record at or before
the marker's position in the stream. That is the whole at-least-once argument, so this class is small and pure.

It also knows how old the oldest unacknowledged record is (:meth:`Watermark.stamp`, :meth:`Watermark.oldest`):
the delivery lag, which keeps growing while Kinesis accepts nothing even when the source is fully read.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from cdcstream.changes import Marker


class Watermark:
    """Tracks issued and acknowledged sequence numbers; yields the newest safe :class:`Marker`."""

    __slots__ = ("_acked", "_low", "_markers", "_next", "_pending_marker", "_stamps")

    def __init__(self) -> None:
        self._next = 0  # next sequence number to issue
        self._low = 0  # every seq < _low is acknowledged
        self._acked: set[int] = set()  # acknowledged seqs >= _low
        self._markers: dict[int, Marker] = {}
        self._pending_marker: tuple[int, Marker] | None = None  # newest marker passed by _low, not yet taken
        # (first seq, commit epoch, read at) of each run of records stamped; only those not wholly acknowledged.
        self._stamps: deque[tuple[int, float, float]] = deque()

    def issue(self) -> int:
        """A sequence number for the next record, in source order."""
        seq = self._next
        self._next += 1
        return seq

    def issue_many(self, n: int) -> int:
        """``n`` consecutive sequence numbers for the next records; returns the first."""
        seq = self._next
        self._next += n
        return seq

    def issue_marker(self, marker: Marker) -> None:
        """Place a marker after every record issued so far; it is acknowledged by construction."""
        seq = self._next
        self._next += 1
        self._markers[seq] = marker
        self.ack(seq)

    def ack(self, seq: int) -> None:
        """Record that ``seq`` was accepted downstream and advance the prefix as far as it goes."""
        if seq != self._low:
            if seq > self._low:
                self._acked.add(seq)
            return
        low = seq + 1
        acked = self._acked
        markers = self._markers
        if seq in markers:
            self._pending_marker = seq, markers.pop(seq)
        while low in acked:
            acked.remove(low)
            if low in markers:
                self._pending_marker = low, markers.pop(low)
            low += 1
        self._low = low

    def stamp(self, epoch: float, read_at: float) -> None:
        """The records issued from now on (until the next stamp) were committed at ``epoch`` (wall clock; for
        load rows, when they were read) and read at ``read_at`` (monotonic). Stamp once per run of records in
        commit order: the stamp's epoch, its first record's, is then the oldest of the run."""
        stamps = self._stamps
        low = self._low
        while len(stamps) > 1 and stamps[1][0] <= low:  # runs wholly acknowledged: forgotten as we go
            stamps.popleft()
        stamps.append((self._next, epoch, read_at))

    def oldest(self) -> tuple[float, float] | None:
        """``(commit epoch, read at)`` of the oldest record not yet acknowledged (of its run: at most that
        old), or None when every record issued is acknowledged."""
        low = self._low
        if low >= self._next:
            return None
        stamps = self._stamps
        while len(stamps) > 1 and stamps[1][0] <= low:
            stamps.popleft()
        if not stamps or stamps[0][0] > low:
            return None  # not stamped (markers only)
        return stamps[0][1], stamps[0][2]

    def take(self) -> tuple[int, Marker] | None:
        """The newest marker whose every predecessor is acknowledged, with its sequence number (where it stands
        among the records), once; None if nothing new."""
        taken, self._pending_marker = self._pending_marker, None
        return taken

    @property
    def next_seq(self) -> int:
        """The sequence number the next record or marker will get."""
        return self._next

    @property
    def in_flight(self) -> int:
        """Issued records (and markers) not yet covered by the watermark."""
        return self._next - self._low

    def status(self) -> dict[str, Any]:
        return {"issued": self._next, "acknowledged_prefix": self._low, "in_flight": self.in_flight}
