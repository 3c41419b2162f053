"""reload --table on the binlog source without a server: where the stream is split at the reload point P, and
the pending-reload field every yielded checkpoint carries."""

from __future__ import annotations

from collections.abc import Callable

from cdcstream.changes import ChangeEvent, Item, Marker, Op, TableInfo
from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.config import MySQLSourceConfig
from cdcstream.sources.mysql.positions import binlog_pos
from cdcstream.sources.mysql.reload import reload_split
from cdcstream.sources.mysql.source import MySQLSource
from cdcstream.sources.reload import PendingReloads

INFO = TableInfo("s", "t", ())


def _source() -> MySQLSource:
    return MySQLSource(MySQLSourceConfig(engine="mysql", host="127.0.0.1", user="u", server_id=7))


def _split(point: tuple[str, int]) -> Callable[[list[Item], tuple[str, int] | None], int | None]:
    """Where the stream is cut for a reload whose point P is ``point``."""
    p = binlog_pos(*point)
    return lambda items, heard: reload_split(items, p, heard)


def _event(file: str, start: int, record: int = 1) -> ChangeEvent:
    return ChangeEvent(Op.UPDATE, INFO, {"id": 1}, {"id": 1}, "tx", "", 0.0, f"{file}:{start:012d}.{record:010d}", 1)


def _marker(file: str, pos: int) -> Marker:
    return Marker({"file": file, "pos": pos, "gtid": None}, 0.0, True)


def test_split_after_the_transaction_ending_at_p() -> None:
    split = _split(("bin.000002", 500))
    items: list[Item] = [_event("bin.000002", 300), _marker("bin.000002", 500), _event("bin.000002", 500)]
    assert split(items, None) == 2


def test_split_before_the_first_transaction_after_p() -> None:
    # P is not a selected transaction's end (a transaction of another schema, a rotate): split by position.
    split = _split(("bin.000002", 500))
    items: list[Item] = [_event("bin.000002", 100), _marker("bin.000002", 400), _event("bin.000002", 620)]
    assert split(items, None) == 2
    assert split([_marker("bin.000002", 700)], None) == 0
    # after a rotation: a later file sorts after P's file
    assert split([_event("bin.000001", 900), _marker("bin.000003", 4000)], None) == 1


def test_binlog_files_order_by_number_past_six_digits() -> None:
    split = _split(("bin.999999", 500))
    assert split([_event("bin.999999", 100), _event("bin.1000000", 4)], None) == 1
    assert binlog_pos("bin.1000000", 4) > binlog_pos("bin.999999", 10**9)
    assert str(binlog_pos("bin.000002", 500)) == "bin.000002:500"


def test_no_split_until_the_reader_is_past_p() -> None:
    split = _split(("bin.000002", 500))
    before: list[Item] = [_event("bin.000002", 100), _marker("bin.000002", 400)]
    assert split(before, None) is None
    assert split(before, ("bin.000002", 400)) is None  # heartbeat: the server has sent up to 400
    # an idle server: its heartbeat says everything up to P (and beyond) is in
    assert split(before, ("bin.000002", 500)) == 2
    assert split([], ("bin.000003", 4)) == 0


def test_pending_reloads_stamp_markers() -> None:
    pending = PendingReloads({"file": "f", "pos": 4, "reload": ["s.a"]})
    assert pending and pending.current == "s.a"
    assert pending.add("s.b") == (True, "reload of s.b queued")
    assert pending.add("s.a") == (False, "reload of s.a already pending")
    assert pending.stamp(MySQLCheckpoint(file="f", pos=9)) == {"file": "f", "pos": 9, "reload": ["s.a", "s.b"]}
    pending.pop()
    pending.pop()
    assert not pending and pending.stamp(MySQLCheckpoint(pos=9, reload=["s.a"])) == {"pos": 9}


def test_yielded_markers_name_the_pending_reloads() -> None:
    reloads = _source()._reloads
    reloads.pending.add("s.t")
    out = reloads.out([_event("bin.000002", 100), _marker("bin.000002", 400)])
    assert isinstance(out[1], Marker) and out[1].checkpoint["reload"] == ["s.t"]
    assert reloads.last == out[1].checkpoint and reloads.at_boundary
    reloads.out([_event("bin.000002", 400)])  # a batch cut inside a transaction: no reload may start here
    assert not reloads.at_boundary
