"""The watermark: the checkpoint never passes an unacknowledged record."""

from __future__ import annotations

import random
from typing import cast

from hypothesis import given
from hypothesis import strategies as st

from cdcstream.changes import Marker
from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.checkpoints.watermark import Watermark


def m(pos: int) -> Marker:
    return Marker(checkpoint={"pos": pos})


def pos(marker: Marker) -> int:
    """The position of a marker ``m`` made (the watermark never reads a checkpoint: any engine's will do)."""
    return cast(MySQLCheckpoint, marker.checkpoint)["pos"]


def test_marker_waits_for_every_record_before_it() -> None:
    wm = Watermark()
    a, b = wm.issue(), wm.issue()
    wm.issue_marker(m(1))
    c = wm.issue()
    wm.issue_marker(m(2))
    assert wm.take() is None
    wm.ack(b)
    assert wm.take() is None  # a still missing
    wm.ack(c)
    assert wm.take() is None
    wm.ack(a)
    taken = wm.take()
    assert taken is not None and taken[1].checkpoint == {"pos": 2}
    assert wm.take() is None
    assert wm.in_flight == 0


def test_marker_with_nothing_in_flight_is_immediately_safe() -> None:
    wm = Watermark()
    wm.issue_marker(m(7))
    taken = wm.take()
    assert taken is not None and taken[1].checkpoint == {"pos": 7}


def test_duplicate_and_stale_acks_are_harmless() -> None:
    wm = Watermark()
    a = wm.issue()
    wm.issue_marker(m(1))
    wm.ack(a)
    wm.ack(a)
    assert wm.take() == (1, m(1))
    assert wm.in_flight == 0


@given(st.lists(st.booleans(), min_size=1, max_size=200), st.randoms())
def test_checkpoint_never_ahead_of_acknowledgements(kinds: list[bool], rnd: random.Random) -> None:
    """Random interleaving of records and markers, acks in random order: every taken marker has all
    records issued before it acknowledged."""
    wm = Watermark()
    records: list[int] = []
    marker_after: dict[int, int] = {}  # marker lsn -> number of records issued before it
    for i, is_marker in enumerate(kinds):
        if is_marker:
            marker_after[i] = len(records)
            wm.issue_marker(m(i))
        else:
            records.append(wm.issue())
    order = records[:]
    rnd.shuffle(order)
    acked: set[int] = set()
    last = -1
    for seq in order:
        wm.ack(seq)
        acked.add(seq)
        taken = wm.take()
        if taken is not None:
            lsn = pos(taken[1])
            assert lsn > last
            last = lsn
            assert all(r in acked for r in records[: marker_after[lsn]])
    final = wm.take()
    if final is not None:
        last = pos(final[1])
    # once everything is acknowledged the checkpoint reaches the last marker
    assert last == max(marker_after, default=-1)
    assert wm.in_flight == 0


def test_taken_marker_carries_its_sequence_number() -> None:
    wm = Watermark()
    a = wm.issue()
    assert wm.next_seq == 1
    wm.issue_marker(m(1))
    wm.ack(a)
    assert wm.take() == (1, m(1)) and wm.take() is None


def test_oldest_unacknowledged_record_gives_the_delivery_lag() -> None:
    wm = Watermark()
    assert wm.oldest() is None
    wm.stamp(100.0, 1.0)
    a, b = wm.issue(), wm.issue()
    wm.issue_marker(m(1))
    wm.stamp(200.0, 2.0)
    c = wm.issue()
    assert wm.oldest() == (100.0, 1.0)
    wm.ack(b)
    assert wm.oldest() == (100.0, 1.0)  # a still waits
    wm.ack(a)
    assert wm.oldest() == (200.0, 2.0)
    wm.ack(c)
    assert wm.oldest() is None
    wm.issue_marker(m(2))
    assert wm.oldest() is None  # markers alone are never waiting


def test_stamps_of_acknowledged_runs_are_forgotten_as_records_flow() -> None:
    wm = Watermark()
    for i in range(10_000):
        wm.stamp(float(i), float(i))
        wm.ack(wm.issue())
    assert len(wm._stamps) <= 2
