"""Plain-Python stand-ins for a pipeline's parts, for running :class:`cdcstream.pipeline.Pipeline` in process.

They implement the protocols (:class:`cdcstream.sources.Source`, :class:`cdcstream.sinks.Sink`) and nothing
more, and record what the pipeline did to them, in order: these are unit tests of the pipeline, not stand-ins
for a database or for Kinesis (those are tested against real servers, tests/integration).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, cast

import orjson

from cdcstream.changes import ChangeEvent, Column, Item, Marker, Op, TableInfo
from cdcstream.checkpoints.model import Checkpoint, MySQLCheckpoint
from cdcstream.checkpoints.store import FileCheckpointStore
from cdcstream.errors import CdcstreamError, OversizeRecordError
from cdcstream.records import Record
from cdcstream.runtime.stopping import Deadline
from cdcstream.runtime.systemd import Notifier
from cdcstream.sinks import AckCallback

TABLE = TableInfo("public", "t", (Column("id", "int4", is_key=True), Column("tx", "int4"), Column("pad", "text")))

#: What happened, in order, across the fakes of one test: ("save", checkpoint), ("ack", checkpoint). The fakes'
#: checkpoints are ``{"pos": tx}``: the pipeline never reads a checkpoint, so any engine's shape will do.
Journal = list[tuple[str, MySQLCheckpoint]]


def transaction(tx: int, rows: int = 1, pad: str = "", first_id: int | None = None) -> list[Item]:
    """``rows`` inserts into :data:`TABLE` committed together as transaction ``tx``, and its end marker
    (checkpoint ``{"pos": tx}``). Row ids are ``tx * 1000 + i`` unless ``first_id`` is given."""
    start = tx * 1000 if first_id is None else first_id
    items: list[Item] = [
        ChangeEvent(
            Op.INSERT,
            TABLE,
            {"id": start + i, "tx": tx, "pad": pad},
            None,
            tx,
            "2026-11-27T12:00:00.000000Z",
            1_795_780_800.0,
            f"{tx:010d}.{i:04d}",
            i + 1,
        )
        for i in range(rows)
    ]
    items.append(Marker({"pos": tx}, commit_epoch=1_795_780_800.0))
    return items


def tx_of(record: Record) -> int:
    """The transaction a record of :func:`transaction` belongs to; 0 for control records (RestartTask)."""
    doc = orjson.loads(record.data)
    return int(doc.get("data", {}).get("tx", 0))


_END = object()


class FakeSource:
    """A :class:`~cdcstream.sources.Source` the test feeds batch by batch (:meth:`feed`), or that makes batches
    on demand (``produce(n)``, the n-th batch, for as long as the pipeline pulls)."""

    def __init__(
        self,
        journal: Journal | None = None,
        produce: Callable[[int], list[Item]] | None = None,
    ) -> None:
        self.journal = journal if journal is not None else []
        self.produce = produce
        self.started: list[tuple[Checkpoint | None, bool]] = []
        self.acks: list[MySQLCheckpoint] = []
        self.pulled = 0  # batches the pipeline took
        self.closed = False
        self._queue: asyncio.Queue[object] = asyncio.Queue()

    def feed(self, *batches: Iterable[Item]) -> None:
        for batch in batches:
            self._queue.put_nowait(list(batch))

    def fail(self, exc: CdcstreamError) -> None:
        """``changes()`` raises ``exc`` after the batches fed so far."""
        self._queue.put_nowait(exc)

    def end(self) -> None:
        """``changes()`` ends after the batches fed so far (a full load read to its end)."""
        self._queue.put_nowait(_END)

    async def start(self, checkpoint: Checkpoint | None, *, owned: bool = True) -> None:
        self.started.append((checkpoint, owned))

    async def changes(self) -> AsyncGenerator[Sequence[Item], None]:
        while True:
            if self.produce is not None:
                batch: object = self.produce(self.pulled)
                await asyncio.sleep(0)
            else:
                batch = await self._queue.get()
            if batch is _END:
                return
            if isinstance(batch, CdcstreamError):
                raise batch
            assert isinstance(batch, list)
            self.pulled += 1
            yield batch

    async def ack(self, checkpoint: Checkpoint) -> None:
        self.acks.append(cast(MySQLCheckpoint, checkpoint))
        self.journal.append(("ack", cast(MySQLCheckpoint, checkpoint)))

    def status(self) -> dict[str, Any]:
        return {"connected": not self.closed}

    async def close(self) -> None:
        self.closed = True


class FakeSink:
    """A :class:`~cdcstream.sinks.Sink` holding every record until the test acknowledges it (:meth:`ack`, in any
    order), with the buffer bounds of the real one: ``put`` waits while ``max_records`` records or
    ``max_bytes`` bytes (data + partition key) are unacknowledged, and refuses records over
    ``max_record_bytes`` (OversizeRecordError)."""

    def __init__(
        self,
        on_ack: AckCallback,
        *,
        max_records: int = 20_000,
        max_bytes: int = 1 << 30,
        max_record_bytes: int = 1 << 20,
        start_errors: Iterable[CdcstreamError] = (),
    ) -> None:
        self.on_ack = on_ack
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.max_record_bytes = max_record_bytes
        self.start_errors = list(start_errors)
        self.starts = 0
        self.records: list[Record] = []  # every record queued, in order
        self.pending: dict[int, Record] = {}  # by sequence number, not yet acknowledged
        self.acked: list[Record] = []  # in the order acknowledged
        self.acknowledged_bytes = 0
        self._bytes = 0
        self.waiting = 0  # puts waiting for buffer space now
        self.drains: list[float | None] = []  # the timeout of every drain() call
        self.closed = False
        self._changed = asyncio.Event()
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @staticmethod
    def size(record: Record) -> int:
        return len(record.data) + len(record.partition_key.encode())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- the protocol --------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.starts += 1
        if self.start_errors:
            raise self.start_errors.pop(0)

    @property
    def room(self) -> int:
        if self._bytes >= self.max_bytes:
            return 0
        return max(0, self.max_records - len(self.pending))

    @property
    def outstanding_bytes(self) -> int:
        return self._bytes

    async def put_many(self, records: Sequence[Record], start: int, stop: int) -> int:
        i = start
        while i < stop:
            while len(self.pending) >= self.max_records or self._bytes >= self.max_bytes:
                self.waiting += 1
                try:
                    await self._changed.wait()
                finally:
                    self.waiting -= 1
            record = records[i]
            if self.size(record) > self.max_record_bytes:
                break
            self.records.append(record)
            self.pending[record.seq] = record
            self._bytes += self.size(record)
            i += 1
        self._notify()
        return i - start

    async def put(self, record: Record) -> None:
        if not await self.put_many((record,), 0, 1):
            size = self.size(record)
            raise OversizeRecordError(
                f"{size} bytes over {self.max_record_bytes}", size=size, limit=self.max_record_bytes
            )

    async def run(self) -> None:
        await self._failure

    async def drain(self, timeout: float | None = None) -> bool:
        self.drains.append(timeout)
        self._notify()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.pending:
                    await self._changed.wait()
        return not self.pending

    async def close(self) -> None:
        self.closed = True
        if not self._failure.done():
            self._failure.set_result(None)

    # --- driven by the test --------------------------------------------------------------------------------

    def ack(self, select: Callable[[Record], bool] = lambda r: True, order: Sequence[int] | None = None) -> int:
        """Acknowledge the pending records ``select`` picks, in the order of their sequence numbers or as
        ``order`` (positions in that sorted selection) says; how many."""
        chosen = [r for _, r in sorted(self.pending.items()) if select(r)]
        if order is not None:
            chosen = [chosen[i] for i in order]
        for record in chosen:
            del self.pending[record.seq]
            self.acked.append(record)
            self._bytes -= self.size(record)
            self.acknowledged_bytes += self.size(record)
            self.on_ack([record])
        self._notify()
        return len(chosen)

    def fail(self, exc: CdcstreamError) -> None:
        """``run()`` raises ``exc`` (a non-retriable delivery error)."""
        self._failure.set_exception(exc)
        self._notify()


class RecordingStore(FileCheckpointStore):
    """The real checkpoint file, with every save noted in the journal (when it is durable) and, if given,
    ``check(checkpoint)`` called at that moment (from the saving thread)."""

    def __init__(
        self, state_dir: Path, journal: Journal, check: Callable[[MySQLCheckpoint], None] | None = None
    ) -> None:
        super().__init__(state_dir, "task")
        self.journal = journal
        self.check = check

    def save(self, checkpoint: Checkpoint) -> None:
        if self.check is not None:
            self.check(cast(MySQLCheckpoint, checkpoint))
        super().save(checkpoint)
        self.journal.append(("save", cast(MySQLCheckpoint, checkpoint)))


class RecordingDeadline(Deadline):
    """Counts arming instead of starting the timer that ends the process (it would end pytest)."""

    def __init__(self, seconds: float = 30.0, exit_code: int = 130) -> None:
        super().__init__(seconds, exit_code)
        self.armed = 0

    def arm(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.armed += 1


class RecordingNotifier(Notifier):
    """Notes every sd_notify message instead of sending it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[str] = []

    def notify(self, *lines: str) -> None:
        self.sent.extend(lines)
