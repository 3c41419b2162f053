"""Mapping in worker processes: full-load chunks decoded, mapped and serialised beside the event loop.

One event loop on one core tops out at ~50k load rows/s (bench/README.md): decoding, mapping and JSON are
more than half of a load row's CPU. With ``full_load.processes`` > 0 a source hands raw chunks
(:class:`~cdcstream.changes.RawRows`) to this pool, and the pipeline only numbers and sends the records that
come back, in the order the chunks were read. Nothing here is durable: a chunk's records reach the watermark
exactly as in-process ones would, so checkpoints and at-least-once are unchanged.

Each worker is a spawned process (the daemon has threads; forking them is unsafe) connected by a socket pair:
pickled requests (a few queued, see ``DEPTH``) answered in order, read by the event loop itself (no helper threads
competing for the GIL). A worker exits when its socket closes, so a daemon killed with SIGKILL leaves none
behind. Each builds its own :class:`Mapper` from the daemon's mapping rules and target settings (pickled); the
daemon's own mapper still plans every table first (:meth:`MappingPool.map`), so checks that need all tables (two
source tables written as one target) see the tables the workers map.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import multiprocessing
import os
import pickle
import signal
import socket
from collections import deque
from collections.abc import Callable
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any, cast

import structlog

from cdcstream.changes import ChangeEvent, Described, MappedRows, Op, RawRows, RendersRecords, TableInfo
from cdcstream.config import Config, TargetConfig
from cdcstream.errors import CdcstreamError, MappingError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.rules import MappingRules
from cdcstream.records import Record, put_records_entry
from cdcstream.workers import frames

log = structlog.get_logger(__name__)

FRAME_HEADER = 8  # frame length, big-endian


#: ``processes = "auto"`` starts at most this many: the event loop numbering and sending the records (~10 µs
#: per load row) is the limit once two or three workers (~10-18 µs per row each) feed it, and each worker
#: holds ~70 MiB.
AUTO_MAX = 4


def cgroup_cpu_limit(root: Path = Path("/")) -> float | None:
    """CPUs this process's cgroup may use (a container's CPU limit, systemd's ``CPUQuota=``), None when there is
    no limit or no cgroup to read: CPU affinity alone counts a node's cores in a container limited to one."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        try:
            if controllers == "":  # cgroup v2: "0::/path", limit "quota period" or "max period"
                quota, period = (root / "sys/fs/cgroup" / rel / "cpu.max").read_text().split()[:2]
                return None if quota == "max" else int(quota) / int(period)
            if "cpu" in controllers.split(","):  # cgroup v1, mounted as cpu or cpu,cpuacct
                for mount in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                    base = root / "sys/fs/cgroup" / mount
                    if base.is_dir():
                        q = int((base / rel / "cpu.cfs_quota_us").read_text())
                        return None if q <= 0 else q / int((base / rel / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue  # e.g. a hybrid host's unified hierarchy without the cpu controller: try the next line
    return None


def default_processes() -> int:
    """``processes = "auto"``: a worker per core available beside the event loop's (none on a single core),
    at most :data:`AUTO_MAX`. Available: CPU affinity, and the cgroup's CPU limit where there is one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        cores = min(cores, max(1, math.ceil(limit)))
    return max(0, min(AUTO_MAX, cores - 1))


Mapped = tuple[list[str], list[bytes], list[bytes], str]
"""A chunk as a worker answers it: partition keys, record bodies, PutRecords entries, the table's label."""


def map_chunk(mapper: Mapper, info: TableInfo, raw: RawRows) -> Mapped | None:
    """A chunk's records (None: the source must decode it, see RawRows.rows), with their PutRecords entries
    (``{"Data": base64, "PartitionKey": key}``): base64 and the JSON around it are a tenth of a load row's CPU in
    the event loop otherwise. A chunk that can write its records itself (a compiled renderer, byte for byte the
    same) does, where the mapping allows it (:meth:`Mapper.load_layout`)."""
    mapped = map_parts(mapper, info, raw)
    return None if mapped is None else mapped[0]


def map_parts(mapper: Mapper, info: TableInfo, raw: RawRows) -> tuple[Mapped, list[int] | None] | None:
    """:func:`map_chunk`, and for a chunk of parts (``raw.sizes``, rows per part: loadengine.Chunk.parts) whose
    rows did not each give one record (a filter left some out) the records of each part; None for the counts: one
    record per row. Each part is mapped as a chunk of its own was (its own construction time)."""
    sizes: tuple[int, ...] = getattr(raw, "sizes", ())
    if hasattr(raw, "render_records"):
        rendered = _rendered(mapper, info, cast(RendersRecords, raw))
        if rendered is not None:
            return rendered, None  # one record per row
        if len(sizes) > 1 and hasattr(raw, "split") and mapper.load_layout(info) is not None:
            # One value the renderer leaves to the reference path: only its part goes there, not all of them.
            # The layout is the mapping's: one record per row either way (it has no filter).
            answers = [map_chunk(mapper, info, part) for part in raw.split()]
            if any(a is None for a in answers):
                return None
            done = cast(list[Mapped], answers)
            label = next((a[3] for a in done if a[3]), "")
            return (
                [k for a in done for k in a[0]],
                [d for a in done for d in a[1]],
                [e for a in done for e in a[2]],
                label,
            ), None
    rows = raw.rows()
    if rows is None:
        return None
    events = [ChangeEvent(Op.LOAD, info, row, None, None, "", 0.0, "", 0) for row in rows]
    counts: list[int] | None = None
    if len(sizes) > 1 and sum(sizes) == len(events):
        records, counts, start = [], [], 0
        for n in sizes:
            part = mapper.map(events[start : start + n])
            records.extend(part)
            counts.append(len(part))
            start += n
        if len(records) == len(events):
            counts = None  # the parts' row counts say it
    else:
        records = mapper.map(events)
    return _mapped(records), counts


def _mapped(records: list[Record]) -> Mapped:
    keys = [r.partition_key for r in records]
    datas = [r.data for r in records]
    entries = [_entry(d, k) for k, d in zip(keys, datas, strict=True)]
    return keys, datas, entries, records[0].label if records else ""


def _rendered(mapper: Mapper, info: TableInfo, raw: RendersRecords) -> Mapped | None:
    """The chunk's records as it writes them itself, or None where the mapping must."""
    layout = mapper.load_layout(info)
    rendered = raw.render_records(layout) if layout is not None else None
    if layout is None or rendered is None:
        return None
    keys, datas, some = rendered
    if None not in some:
        return keys, datas, cast(list[bytes], some), layout.label
    entries = [e if e is not None else _entry(d, k) for k, d, e in zip(keys, datas, some, strict=True)]
    return keys, datas, entries, layout.label


#: Kinesis' limit (sinks/kinesis.py MAX_PARTITION_KEY_CHARS): the sink sends a longer key as its digest.
_MAX_KEY_CHARS = 256


def _entry(data: bytes, key: str) -> bytes:
    """The PutRecords entry with the partition key the sink sends (a key over 256 characters as its digest:
    the entry must carry the same key, or Kinesis refuses the whole request)."""
    if 0 < len(key) <= _MAX_KEY_CHARS:
        return put_records_entry(data, key)
    from cdcstream.sinks.kinesis import effective_partition_key  # rare: not loaded by every worker

    return put_records_entry(data, effective_partition_key(key))


#: Descriptions (:class:`~cdcstream.changes.Described`) a worker keeps, oldest dropped first; the daemon keeps
#: the same account of what each worker holds (requests arrive in order, so both drop the same ones).
KEPT = 512


def keep_serial(kept: dict[int, Any], serial: int, obj: Any) -> None:
    """Note ``obj`` under ``serial`` in ``kept``, dropping the oldest past :data:`KEPT` (both sides of a worker's
    socket keep the same account, so a serial number never names a description the worker dropped)."""
    kept[serial] = obj
    if len(kept) > KEPT:
        del kept[next(iter(kept))]


class _RequestPickler(pickle.Pickler):
    """Pickles a request for one worker, each description in it only the first time (then its serial number):
    a table's columns and types pickled again with every chunk cost ~75 µs in the event loop and as much to
    unpickle in the worker, ~3 µs per row at DMS's default 50-row chunks."""

    def __init__(self, file: io.BytesIO, serial_of: Callable[[Described], int], known: dict[int, None]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self._serial_of = serial_of
        self._known = known

    def persistent_id(self, obj: Any) -> Any:
        if not isinstance(obj, Described):
            return None
        serial = self._serial_of(obj)
        if serial in self._known:
            return serial
        keep_serial(self._known, serial, None)
        return (serial, pickle.dumps(obj, pickle.HIGHEST_PROTOCOL))


class _RequestUnpickler(pickle.Unpickler):
    """The worker's side of :class:`_RequestPickler`."""

    def __init__(self, frame: bytes, kept: dict[int, Any]) -> None:
        super().__init__(io.BytesIO(frame))
        self._kept = kept

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, int):
            return self._kept[pid]
        serial, data = pid
        obj = pickle.loads(data)
        keep_serial(self._kept, serial, obj)
        return obj


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _spawn(process: Any) -> None:
    """Start ``process`` with the stop signals blocked (a thread's signal mask survives fork and exec), so that
    one sent while it is still starting Python (~0.5 s) waits for :func:`_serve` to ignore it instead of
    killing it: systemd's stop signal to a daemon whose load has just begun would otherwise end as exit 4."""
    # multiprocessing's resource tracker, started by the first spawn, unblocks these two signals in the calling
    # thread after starting itself (it blocks them for its own start): start it before blocking them.
    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


WorkerInit = tuple[MappingRules, TargetConfig, str, str, Any]
"""What a worker process starts from: the daemon's mapping rules, target settings, task id, log level and format."""


def worker_mapper(init: WorkerInit) -> Mapper:
    """A worker process's start (this pool's and workers/cdc.py's): stop signals ignored, logging, its mapper."""
    from cdcstream.telemetry.logging import configure

    # A stop is the daemon's to handle: systemd signals the whole control group and Ctrl-C the whole process
    # group, and a worker dying first would fail the daemon's drain with an error. The closed socket ends it.
    # The signals came blocked from birth (_spawn); ignoring them discards any that arrived while starting.
    for sig in _STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    rules, target, task_id, log_level, log_format = init
    configure(log_level, log_format)
    return Mapper(rules, target, task_id)


def _serve(sock: socket.socket, init: WorkerInit) -> None:
    """A worker process: answer requests until the daemon closes the socket (or dies)."""
    mapper = worker_mapper(init)
    stream = sock.makefile("rb")
    kept: dict[int, Any] = {}
    while True:
        header = stream.read(FRAME_HEADER)
        if len(header) < FRAME_HEADER:
            return  # the daemon is gone
        info, raw = _RequestUnpickler(stream.read(int.from_bytes(header, "big")), kept).load()
        try:
            parted = map_parts(mapper, info, raw)
            if parted is not None and parted[1] is None and frames.available():
                payload = frames.encode(*parted[0])
            else:
                payload = pickle.dumps((True, parted), pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            try:
                payload = pickle.dumps((False, exc), pickle.HIGHEST_PROTOCOL)
                pickle.loads(payload)  # some exceptions pickle but do not unpickle (other __init__ arguments)
            except Exception:  # its text still says what went wrong
                payload = pickle.dumps((False, MappingError(f"{type(exc).__name__}: {exc}")))
        sock.sendall(len(payload).to_bytes(FRAME_HEADER, "big") + payload)


#: Workers stop after this many seconds without a chunk to map: a ``full-load-and-cdc`` daemon streams changes
#: for months after its load, and each idle worker would hold ~70 MiB all that time. The next load (``reload
#: --table``) starts them again (~0.5-1 s); a load stalled this long (a Kinesis outage) pays that once more.
IDLE_STOP = 60.0

#: Requests queued per worker: the next chunk is already in its socket when it sends an answer, so it does not
#: idle while the event loop is busy sending records (with one request at a time it did, half the time).
DEPTH = 2

#: ...and, for small chunks (DMS's default ``parallel_load_buffer_size`` is 50 rows), as many as hold this many
#: rows: two 50-row chunks last a worker ~1 ms, less than the event loop can be busy sending.
DEPTH_ROWS = 2000


class Worker:
    """One worker process and the answers it owes, in request order (it answers in that order)."""

    def __init__(
        self,
        process: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        resumes: str = "the load resumes",
    ) -> None:
        self.process = process
        self.resumes = resumes  # what a restart after its death does, for the error (workers/cdc.py: changes)
        self.reader = reader
        self.writer = writer
        self.pending: deque[asyncio.Future[tuple[bool, Any]]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.known: dict[int, None] = {}  # serials of the descriptions it holds (_RequestPickler)

    async def read_answers(self) -> None:
        try:
            while True:
                size = int.from_bytes(await self.reader.readexactly(FRAME_HEADER), "big")
                frame = await self.reader.readexactly(size)
                fut = self.pending.popleft()
                if fut.done():  # a cancelled request's answer is read and dropped: the stream stays in step
                    continue
                try:
                    fut.set_result((True, frames.decode(frame)) if frame[:1] == frames.TAG else pickle.loads(frame))
                except Exception as exc:  # never leave the request waiting for ever
                    fut.set_exception(MappingError(f"unreadable answer from a mapping worker process: {exc!r}"))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            error = MappingError(
                f"mapping worker process {self.process.name} died (exit code {self.process.exitcode}): {exc}; "
                f"{self.resumes} from the last checkpoint after a restart"
            )
            while self.pending:
                fut = self.pending.popleft()
                if not fut.done():
                    fut.set_exception(error)


async def start_workers(
    serve: Callable[[socket.socket, WorkerInit], None], cfg: Config, mapper: Mapper, processes: int, kind: str
) -> list[Worker]:
    """``processes`` spawned worker processes running ``serve``, named ``cdcstream-<kind>-<i>``, each building its
    mapper from the daemon's own rules (not the mapping file read again: it may hold edits meant for the next
    restart)."""
    init = (mapper.rules, mapper.target, mapper.task_id, cfg.log.level, cfg.log.format)
    ctx = multiprocessing.get_context("spawn")
    workers: list[Worker] = []
    for i in range(processes):
        ours, theirs = socket.socketpair()
        process = ctx.Process(target=serve, args=(theirs, init), name=f"cdcstream-{kind}-{i}", daemon=True)
        await asyncio.to_thread(_spawn, process)  # a thread of its own: the loop's mask stays
        theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=2**20)
        worker = Worker(process, reader, writer, resumes="the load resumes" if kind == "mapping" else "changes resume")
        worker.task = asyncio.create_task(worker.read_answers(), name=f"{kind}-worker-{i}")
        workers.append(worker)
    return workers


async def stop_workers(workers: list[Worker]) -> None:
    """End ``workers``: closing their sockets ends them; joined together, so a stop waits 5 s at most for all of
    them, not 5 s each (runtime/stopping.py's bound); one still alive then is killed."""
    for worker in workers:
        worker.writer.close()
    await asyncio.gather(*(asyncio.to_thread(worker.process.join, 5.0) for worker in workers))
    for worker in workers:
        if worker.process.is_alive():
            worker.process.kill()
        if worker.task is not None:
            worker.task.cancel()


class SerialNumbers:
    """Serial numbers for the descriptions sent to workers, by identity (the newest :data:`KEPT`)."""

    def __init__(self) -> None:
        self._serials: dict[int, tuple[Any, int]] = {}  # id() -> (the object, kept alive; its serial)
        self._next = 0

    def of(self, obj: Any) -> int:
        entry = self._serials.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        self._next += 1
        self._serials[id(obj)] = (obj, self._next)  # kept alive: its id() is not reused meanwhile
        if len(self._serials) > KEPT:
            del self._serials[next(iter(self._serials))]
        return self._next


class MappingPool:
    """Worker processes that decode and map full-load chunks; started at a load's first chunk (a run without a
    load never starts them) and stopped ``idle_stop`` seconds after the last one."""

    def __init__(self, cfg: Config, mapper: Mapper, processes: int, idle_stop: float = IDLE_STOP) -> None:
        self._cfg = cfg
        self._mapper = mapper
        self.processes = processes
        self._idle_stop = idle_stop
        self._workers: list[Worker] = []
        self._slots: asyncio.Semaphore | None = None
        self._starting: asyncio.Lock | None = None
        self._busy = 0  # map() calls under way
        self._last_used = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self._stopping: set[asyncio.Task[None]] = set()
        self._serials = SerialNumbers()

    async def _start(self) -> asyncio.Semaphore:
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._slots is not None:
                return self._slots
            cfg = self._cfg
            # The daemon's own rules, not the mapping file read again: workers start at a load's first chunk,
            # possibly hours later (reload --table), when the file may hold edits meant for the next restart.
            self._workers = await start_workers(_serve, cfg, self._mapper, self.processes, "mapping")
            log.info("mapping worker processes started", pids=[w.process.pid for w in self._workers])
            depth = max(DEPTH, DEPTH_ROWS // cfg.full_load.parallel_load_buffer_size)
            self._slots = asyncio.Semaphore(depth * self.processes)
            return self._slots

    async def map(self, info: TableInfo, raw: RawRows) -> MappedRows | None:
        """The chunk's records, in row order (None: the source must decode it itself, see RawRows.rows)."""
        if self._mapper.plan(info) is None:
            return MappedRows([])
        self._busy += 1
        try:
            return await self._map(info, raw)
        finally:
            self._busy -= 1
            loop = asyncio.get_running_loop()
            self._last_used = loop.time()
            if self._idle is None and self._workers:  # one timer, not one per chunk
                self._idle = loop.call_later(self._idle_stop, self._stop_idle)

    def _stop_idle(self) -> None:
        loop = asyncio.get_running_loop()
        left = self._last_used + self._idle_stop - loop.time()
        if self._busy or left > 0:
            self._idle = loop.call_later(max(left, 0.1), self._stop_idle)
            return
        self._idle = None
        task = asyncio.create_task(self.close(), name="mapping-workers-idle-stop")
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _map(self, info: TableInfo, raw: RawRows) -> MappedRows | None:
        slots = self._slots or await self._start()
        async with slots:
            worker = min(self._workers, key=lambda w: len(w.pending))
            if worker.task is not None and worker.task.done():
                raise MappingError(f"mapping worker process {worker.process.name} died earlier in this load")
            # Pickled for this worker (what it holds already goes by reference) and sent without an await in
            # between. A pickling error leaves ``known`` ahead of the worker, but it also ends the load.
            buf = io.BytesIO()
            _RequestPickler(buf, self._serials.of, worker.known).dump((info, raw))
            frame = buf.getvalue()
            fut: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
            worker.pending.append(fut)  # and the frame written without an await in between: same order
            worker.writer.write(len(frame).to_bytes(FRAME_HEADER, "big") + frame)
            with contextlib.suppress(ConnectionError):  # the worker is gone: its reader task fails ``fut``
                await worker.writer.drain()
            ok, answer = await fut
        if not ok:
            if isinstance(answer, CdcstreamError):
                raise answer
            raise MappingError(f"mapping worker process failed: {type(answer).__name__}: {answer}") from answer
        if answer is None:
            return None
        if isinstance(answer, list):  # a compiled answer frame, already Records (frames.py)
            return MappedRows(answer)
        (keys, datas, entries, label), counts = answer
        records = [Record(k, d, 0, None, label, entry=e) for k, d, e in zip(keys, datas, entries, strict=True)]
        return MappedRows(records, counts)

    def status(self) -> dict[str, Any]:
        """For ``/status``: how many workers, and their process ids once started."""
        return {"processes": self.processes, "pids": [w.process.pid for w in self._workers]}

    async def close(self) -> None:
        """Stop the workers (closing their sockets ends them); a later chunk starts new ones."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        # Detached before the first await: a chunk arriving meanwhile starts workers of its own.
        workers, self._workers, self._slots = self._workers, [], None
        await stop_workers(workers)
        if workers:
            log.info("mapping worker processes stopped", pids=[w.process.pid for w in workers])
        # The daemon's own stop also waits for an idle stop under way, so no worker outlives it.
        others = [t for t in self._stopping if t is not asyncio.current_task()]
        await asyncio.gather(*others, return_exceptions=True)
