"""The engine-neutral ``reload --table`` state machine (sources/reload.py) over a fake engine: requests are
validated before they are queued, every marker yielded while a reload is pending names it, the stream is cut at
the consistent point with the table's rows in between, and a copy that cannot start or fails is marked failed
while the stream goes on. Both sources drive this machine; their own halves are in the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from cdcstream.changes import ChangeEvent, Column, Item, Marker, Op, TableInfo
from cdcstream.checkpoints.model import Checkpoint, PgCheckpoint
from cdcstream.config import FullLoadConfig
from cdcstream.errors import SourceError
from cdcstream.sources.fullload import FullLoad
from cdcstream.sources.loadengine import Chunk, LoadEngine, Segment, TableSpec
from cdcstream.sources.reload import Copy, NewCopy, TableReloads

INFO = TableInfo("s", "t", (Column("id", "int4", 23, False, True),))


class OneTable:
    """A load engine over one keyless table of ``rows`` rows, read in one chunk."""

    def __init__(self, rows: int, *, fail_read: bool = False) -> None:
        self.rows = rows
        self.fail_read = fail_read
        self.closed = False

    async def open(self, sessions: int, *, fresh: bool) -> Checkpoint:
        return {"lsn": "0/10"}

    async def tables(self) -> list[TableSpec]:
        return [TableSpec(INFO, (), self.rows)]

    async def split_points(self, spec: TableSpec, parts: int) -> list[tuple[str, ...]]:
        return []

    async def read(
        self, session: int, spec: TableSpec, segment: Segment, after: Any, *, raw: bool = False
    ) -> AsyncIterator[Chunk]:
        if self.fail_read:
            raise SourceError("the copy's session was killed")
        yield Chunk([{"id": i} for i in range(self.rows)], None)

    async def decode(self, spec: TableSpec, raw: Any) -> list[dict[str, Any]]:
        raise AssertionError("not read raw")

    async def close(self) -> None:
        self.closed = True


class FakeEngine:
    """A :class:`~cdcstream.sources.reload.ReloadEngine` whose consistent point is 10."""

    def __init__(self, *, cannot_open: bool = False, fail_read: bool = False) -> None:
        self.cannot_open = cannot_open
        self.fail_read = fail_read
        self.opened: list[OneTable] = []

    async def unreadable(self, schema: str, table: str) -> str | None:
        return f"user u may not SELECT {schema}.{table}" if table == "secret" else None

    async def open_copy(self, name: str, schema: str, table: str, new_copy: NewCopy, last: PgCheckpoint) -> Copy[int]:
        if self.cannot_open:
            raise SourceError(f"reload: table {name} disappeared before its snapshot was taken")
        engine = OneTable(3, fail_read=self.fail_read)
        self.opened.append(engine)
        load = new_copy(engine, None)
        await load.open()
        return Copy(load, 10)

    def marker_base(self, last: PgCheckpoint) -> PgCheckpoint:
        return last | {"system_id": "7"}


def machine(engine: FakeEngine) -> TableReloads[PgCheckpoint, int]:
    def new_copy(engine: LoadEngine, base: Any, sessions: int | None) -> FullLoad:
        return FullLoad.for_reload(
            engine, FullLoadConfig(), label="unit", base_checkpoint=base, ranges=lambda s, t: None, sessions=sessions
        )

    return TableReloads(
        engine,
        label="unit",
        migration_type="cdc",
        selector=lambda schema, table: table != "unselected",
        initial_load=lambda: None,
        new_copy=new_copy,
    )


def change(position: str) -> ChangeEvent:
    return ChangeEvent(Op.INSERT, INFO, {"id": 9}, None, 1, "", 0.0, position, 1)


async def collect(batches: AsyncIterator[Sequence[Item]]) -> list[Item]:
    return [item async for batch in batches for item in batch]


def test_requests_are_validated_before_they_are_queued() -> None:
    reloads = machine(FakeEngine())
    assert asyncio.run(reloads.request("s.t")) == "reload of s.t queued"
    assert asyncio.run(reloads.request("s.t")) == "reload of s.t already pending"
    for name, why in [
        ("t", "expected schema.table"),
        ("s.unselected", "not selected by the table mapping"),
        ("s.secret", "may not SELECT s.secret"),
    ]:
        with pytest.raises(SourceError, match=why):
            asyncio.run(reloads.request(name))
    assert reloads.pending.names == ["s.t"]


def test_the_stream_is_cut_at_the_point_with_the_rows_in_between() -> None:
    reloads = machine(FakeEngine())
    reloads.last = {"lsn": "0/5"}
    asyncio.run(reloads.request("s.t"))
    before = reloads.out([change("0/6"), Marker({"lsn": "0/6"})])
    assert before[1].checkpoint == {"lsn": "0/6", "reload": ["s.t"]}  # type: ignore[union-attr]
    assert reloads.due(reloads.at_boundary) and not reloads.due(False)
    assert asyncio.run(reloads.begin()) and reloads.point == 10 and not reloads.due(True)

    batch: list[Item] = [change("0/8"), Marker({"lsn": "0/9"}), change("0/11"), Marker({"lsn": "0/12"})]
    out = asyncio.run(collect(reloads.split(batch, 2)))
    assert out[:2] == [batch[0], Marker({"lsn": "0/9", "reload": ["s.t"]})]  # before P, still naming it
    rows = [i for i in out if isinstance(i, ChangeEvent) and i.op is Op.LOAD]
    assert [r.after for r in rows] == [{"id": 0}, {"id": 1}, {"id": 2}]
    markers = [i for i in out[2:] if isinstance(i, Marker)]
    # Markers among the rows are the position before P, naming the reload; the last one no longer names it.
    assert all(m.checkpoint == {"lsn": "0/9", "system_id": "7", "reload": ["s.t"]} for m in markers[:-1])
    assert markers[-1].checkpoint == {"lsn": "0/9", "system_id": "7"}
    assert not reloads.pending and reloads.point is None
    after = reloads.out(batch[2:])
    assert after == batch[2:] and reloads.last == {"lsn": "0/12"}  # the changes from P on, as they came


def test_a_copy_that_cannot_start_or_fails_is_marked_failed_and_the_stream_goes_on() -> None:
    reloads = machine(FakeEngine(cannot_open=True))
    reloads.last = {"lsn": "0/5", "reload": ["s.t"]}
    asyncio.run(reloads.request("s.t"))
    assert not asyncio.run(reloads.begin())
    assert not reloads.pending and "disappeared" in reloads.status()["failed"][0]["error"]
    assert reloads.marker().checkpoint == {"lsn": "0/5", "system_id": "7"}  # the checkpoint drops it at once

    reloads = machine(FakeEngine(fail_read=True))
    reloads.last = {"lsn": "0/5"}
    asyncio.run(reloads.request("s.t"))
    assert asyncio.run(reloads.begin())
    out = asyncio.run(collect(reloads.split([change("0/11")], 0)))
    assert not reloads.pending and "killed" in reloads.status()["failed"][0]["error"]
    assert isinstance(out[-1], Marker) and "reload" not in out[-1].checkpoint


def test_close_releases_a_copy_opened_and_not_run() -> None:
    engine = FakeEngine()
    reloads = machine(engine)
    asyncio.run(reloads.request("s.t"))
    assert asyncio.run(reloads.begin())
    asyncio.run(reloads.close())
    assert engine.opened[0].closed and reloads.copy is None
