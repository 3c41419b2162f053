"""Change data capture mapped in worker processes: the event loop reads and decodes, workers map and serialise.

With ``[cdc] processes`` > 0 the pipeline hands the source's batches to :meth:`CdcWorkers.run` instead of mapping
them itself ("auto" does not, for now: with the default mapping the hand-off costs the event loop what the mapping
does; bench/README.md). Runs of data changes (at most :data:`BATCH_EVENTS`) go to a worker as compact tuples; the
worker maps and serialises them; the answers are handed to the sink strictly in source order, each marker
(transaction end) after the records before it, so per-key order and the checkpoint rule (a position is acknowledged
only once every record at or before it is) are exactly as in process. Everything else stays in the event loop, in
its place in the order: markers, control events (TRUNCATE, DROP, ALTER: rare barriers, mapped by the daemon's own
mapper, which also plans every table first so that a mapping error is the same error, at the same change), full-load
chunks mapped by the load's pool, and the sink drains at a switch between load rows and changes.

A worker is a spawned process on a socket pair, as the full load's (workers/pool.py, whose plumbing this
reuses); it exits when its socket closes. A worker's death fails every answer it owes with a
:class:`~cdcstream.errors.MappingError`: the daemon exits (4), nothing after the last checkpoint was released, and
the restart replays from it. Nothing here is durable.

Not with ``include_transaction_details``: its ``prev-transaction-id`` chains every record to the one before,
which a worker seeing only some batches cannot know (wiring.py keeps such a task in process).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from cdcstream.changes import ChangeEvent, FusedRows, Item, MappedRows, Marker, Op, TableInfo
from cdcstream.config import Config
from cdcstream.errors import CdcstreamError, MappingError
from cdcstream.mapping.envelope import Mapper, now_iso
from cdcstream.records import Record
from cdcstream.runtime.stopping import cancel_and_wait
from cdcstream.workers.pool import (
    FRAME_HEADER,
    SerialNumbers,
    Worker,
    WorkerInit,
    keep_serial,
    start_workers,
    stop_workers,
    worker_mapper,
)

log = structlog.get_logger(__name__)

#: Data changes per request at most: ~100 µs of fixed cost per request (pickling, two socket writes, a future)
#: is then well under a microsecond per change, and a request is a few milliseconds of a worker's time.
BATCH_EVENTS = 256

#: Requests (and other items in order: markers, control records) queued per worker before the reader waits:
#: enough that a worker has its next request while the event loop hands the last answer to the sink.
DEPTH = 4

_OPS = {op.value: op for op in Op}


Compact = tuple[Any, ...]
"""A data change as it travels to a worker: its fields in :class:`ChangeEvent` order, the operation by its value
and the table as a serial number (its description travels once per worker, see :class:`_Open`). Plain values
only, so the standard pickler runs at C speed: a ``persistent_id`` hook (the full load's way of sending a
description once) is a Python call per pickled object, several per column of every row."""


def compact(ev: ChangeEvent, table: int) -> Compact:
    """``ev`` (a data change: no ``change``) for a worker, its table numbered ``table``."""
    return (
        ev.op._value_,  # a plain str: an Op pickles by reference and hashes in Python
        table,
        ev.after,
        ev.before,
        ev.transaction_id,
        ev.commit_time,
        ev.commit_epoch,
        ev.stream_position,
        ev.transaction_record_id,
        ev.unchanged_columns,
        ev.fused,
        ev.fused_key,
    )


def expand(c: Compact, tables: dict[int, TableInfo]) -> ChangeEvent:
    """The worker's side of :func:`compact`."""
    return ChangeEvent(_OPS[c[0]], tables[c[1]], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], None, c[10], c[11])


Request = tuple[list[tuple[int, TableInfo]], list[list[Compact]]]
"""What a worker is sent: the table descriptions it does not hold yet (serial, description), and the runs of
changes (a run: the changes between two markers)."""


Answer = list[tuple[list[str], list[bytes], list[float | None], list[str]]]
"""Per run of a request: partition keys, record bodies, commit epochs and labels of its records. Not their
PutRecords entries, though the full load's workers send those: an entry (base64) is more bytes than the record,
and the event loop spent more receiving them than the sink spends building them (bench/README.md)."""


def map_runs(mapper: Mapper, request: Request, tables: dict[int, TableInfo]) -> Answer:
    """A request's records, run by run, all built at one time; ``tables``: the descriptions the worker holds
    (the request's new ones are added, the oldest dropped past :data:`KEPT`, as the daemon's account does)."""
    new, runs = request
    for serial, info in new:
        keep_serial(tables, serial, info)
    stamp = now_iso()
    out: Answer = []
    for run in runs:
        records = mapper.map([expand(c, tables) for c in run], stamp)
        keys = [r.partition_key for r in records]
        datas = [r.data for r in records]
        out.append((keys, datas, [r.commit_epoch for r in records], [r.label for r in records]))
    return out


def records_of(answer: Answer) -> list[list[Record]]:
    """The records of each run of an :data:`Answer`, as the in-process mapper would have built them."""
    out: list[list[Record]] = []
    for keys, datas, epochs, labels in answer:
        out.append(
            [Record(k, d, 0, epoch, label) for k, d, epoch, label in zip(keys, datas, epochs, labels, strict=True)]
        )
    return out


def _answer(mapper: Mapper, frame: bytes, tables: dict[int, TableInfo]) -> bytes:
    """One request answered: ``(True, Answer)``, or ``(False, the exception)`` (as text if it does not unpickle)."""
    try:
        return pickle.dumps((True, map_runs(mapper, pickle.loads(frame), tables)), pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        try:
            payload = pickle.dumps((False, exc), pickle.HIGHEST_PROTOCOL)
            pickle.loads(payload)  # some exceptions pickle but do not unpickle (other __init__ arguments)
            return payload
        except Exception:
            return pickle.dumps((False, MappingError(f"{type(exc).__name__}: {exc}")))


def _serve(sock: socket.socket, init: WorkerInit) -> None:
    """A CDC worker process: answer requests in order until the daemon closes the socket (or dies)."""
    mapper = worker_mapper(init)
    mapper.check_targets = False  # the daemon's mapper checks, in source order (Mapper.check_targets)
    stream = sock.makefile("rb")
    tables: dict[int, TableInfo] = {}
    with contextlib.suppress(OSError):  # the daemon is gone (killed): nothing to answer, nothing to say
        while (header := stream.read(FRAME_HEADER)) and len(header) == FRAME_HEADER:
            payload = _answer(mapper, stream.read(int.from_bytes(header, "big")), tables)
            sock.sendall(len(payload).to_bytes(FRAME_HEADER, "big") + payload)


@dataclass(slots=True)
class _Request:
    """Data changes in flight to a worker: ``markers[i]`` follow the records of run ``i``."""

    answer: asyncio.Future[tuple[bool, Any]]
    markers: list[list[Marker]]


@dataclass(slots=True)
class _Open:
    """The request being gathered by the reader."""

    runs: list[list[Compact]] = field(default_factory=lambda: [[]])
    markers: list[list[Marker]] = field(default_factory=lambda: [[]])
    size: int = 0
    #: The tables of its changes by serial number, in the order first met (fewer than KEPT: at most
    #: BATCH_EVENTS), so that the chosen worker is sent those it does not hold.
    tables: dict[int, TableInfo] = field(default_factory=dict)


class _Drain:
    """A switch between load rows and changes: drain the sink before what follows."""


_DRAIN = _Drain()


@dataclass(slots=True)
class _Settled:
    """Everything queued before this has been handed to the sink and the watermark."""

    done: asyncio.Future[None]


_Segment = _Request | list[Record] | Marker | _Drain | _Settled | CdcstreamError


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the pipeline does with what comes back, in source order (the same calls its in-process path makes)."""

    #: Number and hand records to the sink (draining around barriers, diverting oversize ones).
    emit: Callable[[list[Record]], Awaitable[None]]
    #: Place a marker in the watermark after every record handed over so far.
    marker: Callable[[Marker], None]
    #: Wait until the sink has every record handed over acknowledged.
    drain: Callable[[], Awaitable[object]]
    #: Called with True when the reader starts on a source batch, False once it is queued (liveness stamps).
    handling: Callable[[bool], None]


class CdcWorkers:
    """The CDC mapping worker processes and the in-order hand-off of their answers (started by the pipeline before
    it says ready; stopped by :meth:`close`)."""

    def __init__(self, cfg: Config, mapper: Mapper, processes: int) -> None:
        self._cfg = cfg
        self._mapper = mapper
        self.processes = processes
        self._workers: list[Worker] = []
        self._next = 0  # round robin: answers come back in order, so any fair rotation keeps them all busy
        self._queue: asyncio.Queue[_Segment | None] | None = None
        self._deliverer: asyncio.Task[None] | None = None
        self._serials = SerialNumbers()
        self._after_load: bool | None = None
        self._last_table: TableInfo | None = None
        self._last_serial = 0  # the last table's serial number; 0: the mapping does not select it

    # --- the worker processes ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the workers (the pipeline does before it says ready; else the first change to map does)."""
        if self._workers:
            return
        workers = await start_workers(_serve, self._cfg, self._mapper, self.processes, "cdc")
        try:
            # Answered once each has started Python and imported the mapping (~0.5-1 s): until then the first
            # changes would wait for them, and a daemon stopped meanwhile would not have checkpointed them.
            for answer in [await _request(worker, ([], [])) for worker in workers]:
                await answer
        except BaseException:
            await stop_workers(workers)
            raise
        self._workers = workers
        log.info("CDC mapping worker processes started", pids=[w.process.pid for w in workers])

    async def _send(self, open_: _Open) -> asyncio.Future[tuple[bool, Any]]:
        """Send one request to the next worker; the future is its answer."""
        if not self._workers:
            await self.start()
        worker = self._workers[self._next % len(self._workers)]
        self._next += 1
        new = [(serial, info) for serial, info in open_.tables.items() if serial not in worker.known]
        for serial, _ in new:
            keep_serial(worker.known, serial, None)
        return await _request(worker, (new, open_.runs))

    def status(self) -> dict[str, Any]:
        """For ``/status``: how many workers, and their process ids once started."""
        return {"processes": self.processes, "pids": [w.process.pid for w in self._workers]}

    async def close(self) -> None:
        """Stop the workers: closing their sockets ends them; joined together, 5 s at most (the stop's bound)."""
        workers, self._workers = self._workers, []
        await stop_workers(workers)
        if workers:
            log.info("CDC mapping worker processes stopped", pids=[w.process.pid for w in workers])

    # --- reading and handing over, in order --------------------------------------------------------------

    async def run(self, changes: AsyncIterator[Sequence[Item]], stop: asyncio.Event, out: Delivery) -> None:
        """Map the source's batches until it ends (returns once everything read is handed over) or a stop is
        requested (returns at once; what is still queued is dropped, and replayed after the restart as nothing
        past it was checkpointed). An error, a mapping error included, ends it where in-process mapping would."""
        queue: asyncio.Queue[_Segment | None] = asyncio.Queue(DEPTH * max(1, self.processes))
        self._queue = queue
        deliver = self._deliverer = asyncio.create_task(self._deliver(queue, out), name="cdc-deliver")
        try:
            async for batch in changes:
                if stop.is_set() or deliver.done():
                    break
                out.handling(True)
                ended = await self._read(batch, queue, deliver)
                out.handling(False)
                if ended:
                    break
            else:
                await self._put(queue, None, deliver)  # the source ended (a full load): hand over everything
            if deliver.done() or not stop.is_set():
                await deliver  # raises its error, if any
        finally:
            self._queue = self._deliverer = None
            await cancel_and_wait(deliver)

    async def settled(self) -> None:
        """Wait until every change read so far is handed to the sink (``reload --table`` numbers its cut after
        the markers read before the request, as the in-process path does). Raises :class:`MappingError` when
        the hand-off ended first (a failed worker or sink): the daemon is stopping, and the request must not wait
        for it forever."""
        queue, deliver = self._queue, self._deliverer
        if queue is None or deliver is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._put(queue, _Settled(done), deliver)
        await asyncio.wait({done, deliver}, return_when=asyncio.FIRST_COMPLETED)
        if not done.done():
            raise MappingError("CDC hand-off ended before the changes read so far were handed to the sink")

    async def _put(
        self, queue: asyncio.Queue[_Segment | None], seg: _Segment | None, deliver: asyncio.Task[None]
    ) -> None:
        """Queue ``seg``, waiting while the queue is full (backpressure) unless the deliverer has ended."""
        if queue.full():
            put = asyncio.create_task(queue.put(seg))
            await asyncio.wait({put, deliver}, return_when=asyncio.FIRST_COMPLETED)
            if not put.done():
                await cancel_and_wait(put)
                return
        else:
            queue.put_nowait(seg)

    async def _read(
        self, batch: Sequence[Item], queue: asyncio.Queue[_Segment | None], deliver: asyncio.Task[None]
    ) -> bool:
        """Queue one source batch in order; True when an error ended the reading (queued, to surface in order)."""
        open_ = _Open()

        async def flush() -> None:
            nonlocal open_
            if open_.size:
                seg: _Segment = _Request(await self._send(open_), open_.markers)
                open_ = _Open()
                await self._put(queue, seg, deliver)
            else:
                for marker in (m for ms in open_.markers for m in ms):
                    await self._put(queue, marker, deliver)
                open_ = _Open()

        try:
            # A source that renders runs of rows (FusedRows) is asked not to when workers map (wiring.py);
            # should one come anyway it is mapped as the events it stands for.
            for item in _expanded(batch):
                if isinstance(item, Marker):
                    if open_.size:
                        open_.markers[-1].append(item)
                        open_.runs.append([])
                        open_.markers.append([])
                    else:
                        await self._put(queue, item, deliver)
                    continue
                is_load = isinstance(item, MappedRows) or item.op is Op.LOAD
                if is_load is not self._after_load and self._after_load is not None:
                    await flush()
                    await self._put(queue, _DRAIN, deliver)
                self._after_load = is_load
                if isinstance(item, MappedRows):
                    await flush()
                    await self._put(queue, item.records, deliver)
                elif item.change is not None or item.op is Op.TRUNCATE or item.op is Op.DROP_TABLE:
                    # Control events (ALTER_OPS carry their change; one without is refused by the mapper, in a
                    # worker as here): in order, by the daemon's own mapper, which forgets renamed tables.
                    await flush()
                    await self._put(queue, self._mapper.map([item]), deliver)
                    self._last_table = None  # planned again: a rename or drop may have changed what it maps to
                else:
                    table = item.table
                    if table is not self._last_table or open_.size == 0:
                        serial = self._selected(table)
                        if serial:
                            open_.tables[serial] = table
                    if self._last_serial:
                        open_.runs[-1].append(compact(item, self._last_serial))
                        open_.size += 1
                        if open_.size >= BATCH_EVENTS:
                            await flush()
            await flush()
        except CdcstreamError as exc:  # a mapping error: after the records before it, as in process
            await flush()
            await self._put(queue, exc, deliver)
            await self._put(queue, None, deliver)
            return True
        return False

    def _selected(self, table: TableInfo) -> int:
        """The table's serial number when the mapping writes its rows, else 0; planned by the daemon's mapper
        (which raises the mapping errors a plan can have, and checks the target names in source order)."""
        if table is not self._last_table:
            self._last_serial = self._serials.of(table) if self._mapper.plan(table) is not None else 0
            self._last_table = table
        return self._last_serial

    async def _deliver(self, queue: asyncio.Queue[_Segment | None], out: Delivery) -> None:
        """Hand each queued item to the sink and the watermark, in the order it was read."""
        while (seg := await queue.get()) is not None:
            if isinstance(seg, _Request):
                ok, answer = await seg.answer
                if not ok:
                    if isinstance(answer, CdcstreamError):
                        raise answer
                    raise MappingError(f"CDC mapping worker process failed: {type(answer).__name__}: {answer}")
                for records, markers in zip(records_of(answer), seg.markers, strict=True):
                    await out.emit(records)
                    for marker in markers:
                        out.marker(marker)
            elif isinstance(seg, list):
                await out.emit(seg)
            elif isinstance(seg, Marker):
                out.marker(seg)
            elif isinstance(seg, _Drain):
                await out.drain()
            elif isinstance(seg, _Settled):
                seg.done.set_result(None)
            else:
                raise seg


async def _request(worker: Worker, request: Request) -> asyncio.Future[tuple[bool, Any]]:
    """Send ``request`` to ``worker``; the future is its answer (a dead worker's: a MappingError)."""
    if worker.task is not None and worker.task.done():
        raise MappingError(
            f"CDC mapping worker process {worker.process.name} died; changes resume from the last checkpoint "
            "after a restart"
        )
    frame = pickle.dumps(request, pickle.HIGHEST_PROTOCOL)
    fut: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
    worker.pending.append(fut)  # and the frame written without an await in between: same order
    worker.writer.write(len(frame).to_bytes(FRAME_HEADER, "big") + frame)
    with contextlib.suppress(ConnectionError):  # the worker is gone: its reader task fails ``fut``
        await worker.writer.drain()
    return fut


def _expanded(batch: Sequence[Item]) -> Sequence[ChangeEvent | Marker | MappedRows]:
    """``batch`` with each :class:`FusedRows` replaced by the change events it stands for."""
    if not any(isinstance(item, FusedRows) for item in batch):
        return cast("Sequence[ChangeEvent | Marker | MappedRows]", batch)
    out: list[ChangeEvent | Marker | MappedRows] = []
    for item in batch:
        if isinstance(item, FusedRows):
            out.extend(item.events())
        else:
            out.append(item)
    return out
