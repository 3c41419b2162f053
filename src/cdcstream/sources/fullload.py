"""Full load, engine-neutral: planning tables into segments, parallel sessions, load state, progress.

A source whose ``migration_type`` includes a full load runs a :class:`FullLoad` before (or instead of) CDC and
yields its items through the same ``Source.changes()`` stream: ``ChangeEvent(op=Op.LOAD)`` rows followed by a
:class:`~cdcstream.changes.Marker` after every chunk. Workers read in parallel, but their chunks are merged into
one sequence by a bounded queue (at most ``2 x max_full_load_subtasks`` chunks of at most
``parallel_load_buffer_size`` rows, or chunks of parts of at most ``loadengine.GROUP_ROWS``: memory does not depend
on table size), and the load state carried by a
marker is exactly "everything before this marker". The pipeline's watermark -> checkpoint file -> ``ack``
machinery therefore makes the load resumable and at-least-once without anything load-specific. With mapping
worker processes (``offload``, the pipeline's ``workers/pool.py``) engines read chunks raw and a chunk arrives
as one :class:`~cdcstream.changes.MappedRows` item instead of its rows, in the same place of the sequence; a
session then reads on while its chunks are mapped (up to ``READ_AHEAD_ROWS``) and hands them over in read order.
An engine may read several chunks at once as one chunk of parts (``Chunk.parts``, up to ``loadengine.GROUP_ROWS``
rows: PostgreSQL does): one worker request and one queue hand-off for all of them, but still each part's records
followed by its own marker, so the load state moves as it would chunk by chunk.

The checkpoint during a load (its ``load`` field) and after it is described in ``checkpoints/model.py``.

Tables are planned into segments (:class:`~cdcstream.sources.loadengine.Segment`): the explicit ranges the
mapping gives (:class:`KeyRanges`), else even splits of large tables over their first key column, else one
segment. The engines read them (:class:`~cdcstream.sources.loadengine.LoadEngine`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import structlog

from cdcstream.changes import ChangeEvent, Item, MappedRows, Marker, Op
from cdcstream.checkpoints.model import (
    PHASE,
    Checkpoint,
    LoadProgress,
    SegmentState,
    TableLoadState,
    load_started,
    stored_load,
)
from cdcstream.config import FullLoadConfig
from cdcstream.errors import CdcstreamError, SourceError
from cdcstream.runtime.stopping import cancel_and_wait
from cdcstream.sources.loadengine import GROUP_ROWS, Chunk, LoadEngine, Offload, Segment, TableSpec
from cdcstream.telemetry import metrics

log = structlog.get_logger(__name__)


@dataclass(slots=True, frozen=True)
class KeyRanges:
    """Explicit segments of one table: the mapping's table-settings ``parallel-load`` of type ``ranges``, as the
    wiring code hands it to the sources (which read no mapping rules). The ``boundaries`` are upper bounds of a
    row comparison over ``columns``, as text the server casts; ``origin`` names the rule in errors."""

    columns: tuple[str, ...]
    boundaries: tuple[tuple[str, ...], ...]
    origin: str = "table-settings"


KeyRangesOf = Callable[[str, str], KeyRanges | None]
"""A table's :class:`KeyRanges` by schema and table name, None without explicit ranges."""


def plan_ranges(name: str, ranges: KeyRanges) -> list[Segment]:
    """Segments from explicit ranges: N boundaries -> N+1 segments."""
    cols = ranges.columns
    bounds: list[tuple[str, ...] | None] = [None, *ranges.boundaries, None]
    return [Segment(name, cols, bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def plan_split(name: str, column: str, points: Sequence[tuple[str, ...]]) -> list[Segment]:
    """Segments over one column from increasing split points (duplicates dropped)."""
    unique: list[tuple[str, ...]] = []
    for p in points:
        if not unique or unique[-1] != p:
            unique.append(p)
    if not unique:
        return [Segment(name)]
    bounds: list[tuple[str, ...] | None] = [None, *unique, None]
    return [Segment(name, (column,), bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


#: Rows a session reads ahead of the consumer while mapping worker processes map its chunks (DMS's maximum
#: ``parallel_load_buffer_size``, and loadengine.GROUP_ROWS: one chunk of parts mapped while the next is read):
#: memory stays bounded by sessions x (this many rows + a chunk).
READ_AHEAD_ROWS = 1000

# Fields of a stored load checkpoint that are not its CDC start position (the server identity comes back through
# ``base_checkpoint``, measured anew).
_NOT_POSITION = frozenset({"phase", "load", "system_id", "timeline"})

_Handed = tuple[Segment, Chunk | None, MappedRows | None, BaseException | None]
"""What a session hands the consumer: a chunk (and its records when a worker process mapped it), the segment's
end (no chunk), or the error that stops the load."""


@dataclass(slots=True)
class _TableProgress:
    spec: TableSpec
    segments: list[Segment]
    state: str = "pending"  # pending | loading | loaded | errored
    rows: int = 0
    started: float | None = None
    last_log_rows: int = 0
    snapshot: TableLoadState = field(default_factory=TableLoadState)  # immutable once built: markers share it
    _jsons: list[SegmentState] = field(default_factory=list)  # the snapshot's segments (never changed in place)
    _index: dict[int, int] = field(default_factory=dict)  # id(segment) -> its place in segments

    def rebuild(self, changed: Segment | None = None) -> None:
        """A new snapshot after ``changed`` (None: any segment) moved on. Only that segment is serialised again:
        with DMS's 50-row chunks this runs every 50 rows, and a table has up to 32 segments."""
        i = -1 if changed is None else self._index.get(id(changed), -1)
        if i < 0 or len(self._jsons) != len(self.segments) or self.segments[i] is not changed:
            self._index = {id(s): i for i, s in enumerate(self.segments)}
            jsons = [s.to_json() for s in self.segments]
        else:
            jsons = self._jsons.copy()  # earlier markers keep theirs
            jsons[i] = changed.to_json()
        self._jsons = jsons
        self.snapshot = {"segments": jsons}


class FullLoad:
    """Runs one full load over a :class:`LoadEngine` and yields its rows and markers (see module docstring).

    ``base_checkpoint`` returns the source's checkpoint fields to merge into every marker (identity and the
    like); ``ranges`` returns a table's explicit segments, if any. With ``phase_markers`` off (``reload --table``
    of one table during CDC) markers carry ``base_checkpoint()`` alone.
    """

    def __init__(
        self,
        engine: LoadEngine,
        cfg: FullLoadConfig,
        *,
        label: str,
        checkpoint: Checkpoint | None,
        base_checkpoint: Callable[[], Checkpoint],
        ranges: KeyRangesOf,
        phase_markers: bool = True,
        offload: Offload | None = None,
    ) -> None:
        self.engine = engine
        self._offload = offload
        # False (reload of one table while CDC runs): markers are base_checkpoint() alone, a CDC position.
        self._phase_markers = phase_markers
        self.cfg = cfg
        self._label = label
        self._base = base_checkpoint
        self._ranges = ranges
        resumed = checkpoint if load_started(checkpoint) else None
        self.resumed = resumed is not None
        load = stored_load(resumed)
        self._loaded: list[str] = list(load.get("loaded") or [])
        self._stored: dict[str, list[Segment]] = {
            name: [Segment.from_json(name, s) for s in t.get("segments", [])]
            for name, t in (load.get("tables") or {}).items()
        }
        self.rows = int(load.get("rows") or 0)
        # The CDC start position of this load (stored across restarts: a resumed load streams from it too).
        self.start_position = cast(  # whichever engine's position: only that engine reads it
            Checkpoint, {k: v for k, v in (resumed or {}).items() if k not in _NOT_POSITION}
        )
        self._tables: dict[str, _TableProgress] = {}
        self._work: deque[tuple[TableSpec, Segment]] = deque()
        self._loaded_snapshot: list[str] = list(self._loaded)
        self._started = time.monotonic()
        self.finished = False
        self._m_rows = metrics.FULL_LOAD_ROWS.labels(label)
        self._m_progress = metrics.FULL_LOAD_PROGRESS.labels(label)

    @classmethod
    def for_reload(
        cls,
        engine: LoadEngine,
        cfg: FullLoadConfig,
        *,
        label: str,
        base_checkpoint: Callable[[], Checkpoint],
        ranges: KeyRangesOf,
        sessions: int | None = None,
        offload: Offload | None = None,
    ) -> FullLoad:
        """The load of ``reload --table``: one table, no load state in the markers (they are CDC positions
        before the reload point, still naming the pending reload), as many sessions as the table can have
        segments (not ``max_full_load_subtasks``) unless ``sessions`` says otherwise."""
        if sessions is None:
            sessions = max(1, min(cfg.max_full_load_subtasks, cfg.parallel_load_threads))
        return cls(
            engine,
            cfg.model_copy(update={"max_full_load_subtasks": sessions}),
            label=label,
            checkpoint=None,
            base_checkpoint=base_checkpoint,
            ranges=ranges,
            phase_markers=False,
            offload=offload,
        )

    # -- planning ----------------------------------------------------------------------------------------
    async def _plan(self, spec: TableSpec) -> list[Segment]:
        name = spec.name
        stored = self._stored.get(name)
        if stored:
            return stored
        ranges = self._ranges(spec.info.schema, spec.info.table)
        if spec.key_columns and ranges is not None:
            known = {c.name for c in spec.info.columns}
            missing = [c for c in ranges.columns if c not in known]
            if missing:
                raise SourceError(f"{ranges.origin}: {name} has no column(s) {', '.join(missing)}")
            return plan_ranges(name, ranges)
        threads = self.cfg.parallel_load_threads
        if spec.key_columns and threads > 1 and (spec.estimated_rows or 0) >= 2 * self.cfg.chunk_rows:
            points = await self.engine.split_points(spec, threads)
            return plan_split(name, spec.key_columns[0], points)
        return [Segment(name)]

    # -- state in markers --------------------------------------------------------------------------------
    def _marker(self) -> Marker:
        if not self._phase_markers:
            return Marker(self._base(), None, False)
        tables = {n: p.snapshot for n, p in self._tables.items() if p.state == "loading"}
        load: LoadProgress = {"started": True, "loaded": self._loaded_snapshot, "tables": tables, "rows": self.rows}
        # One engine's fields in both: a merge of its own checkpoint type.
        checkpoint = cast(Checkpoint, {**self._base(), **self.start_position, "phase": PHASE, "load": load})
        return Marker(checkpoint, None, False)

    def _set_table_metrics(self) -> None:
        counts = dict.fromkeys(metrics.FULL_LOAD_STATES, 0)
        counts["loaded"] = len(self._loaded)
        for p in self._tables.values():
            if p.state != "loaded":
                counts[p.state] += 1
        for state, n in counts.items():
            metrics.FULL_LOAD_TABLES.labels(self._label, state).set(n)
        estimated = sum((p.spec.estimated_rows or 0) for p in self._tables.values() if p.state != "loaded")
        remaining_done = sum(p.rows for p in self._tables.values() if p.state != "loaded")
        total_tables = len(self._tables) + len([n for n in self._loaded if n not in self._tables])
        if self.finished or total_tables == 0:
            self._m_progress.set(1.0)
        else:
            done_tables = counts["loaded"]
            # Loaded tables count fully; loading ones by rows over their estimate (capped: estimates lag).
            partial = min(1.0, remaining_done / estimated) if estimated else 0.0
            pending = total_tables - done_tables
            self._m_progress.set((done_tables + partial * pending) / total_tables)

    # -- running -----------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Open the engine's sessions (the snapshot) and plan every table not loaded yet."""
        fresh = not self.resumed
        sessions = self.cfg.max_full_load_subtasks
        position = await self.engine.open(sessions, fresh=fresh)
        if fresh:
            self.start_position = position.copy()
        try:
            specs = await self.engine.tables()
            for spec in specs:
                if spec.name in self._loaded:
                    continue
                segments = await self._plan(spec)
                progress = _TableProgress(spec, segments, rows=sum(s.rows for s in segments))
                if spec.name in self._stored:
                    progress.state = "loading"  # keeps its stored progress in every marker
                    progress.started = time.monotonic()
                progress.rebuild()
                self._tables[spec.name] = progress
                self._work.extend((spec, s) for s in segments if not s.done)
        except BaseException:
            await self.engine.close()
            raise
        log.info(
            "full load starting" if fresh else "full load resuming from the checkpoint",
            tables=len(self._tables),
            already_loaded=len(self._loaded),
            segments=len(self._work),
            sessions=sessions,
            start=self.start_position,
        )
        self._set_table_metrics()

    async def run(self) -> AsyncIterator[Sequence[Item]]:
        """Copy; yields batches of load rows each followed by a marker. Ends after the last one."""
        sessions = self.cfg.max_full_load_subtasks
        work = self._work
        # Tables whose segments were all done before a crash (or that have no rows) complete at once.
        done_now = [p for p in self._tables.values() if all(s.done for s in p.segments)]
        for p in done_now:
            self._table_loaded(p)
        if done_now:
            yield [self._marker()]
        remaining = len(work)
        queue: asyncio.Queue[_Handed] = asyncio.Queue(self._queue_depth(sessions))
        sessions_used = max(1, min(sessions, len(work)))
        workers = [
            asyncio.create_task(self._worker(i, work, queue), name=f"full-load-{i}") for i in range(sessions_used)
        ]
        progress_task = asyncio.create_task(self._progress_loop(), name="full-load-progress")
        try:
            while remaining:
                seg, chunk, mapped, error = await queue.get()
                progress = self._tables[seg.table]
                if error is not None:
                    progress.state = "errored"
                    self._set_table_metrics()
                    if isinstance(error, CdcstreamError):
                        raise error
                    raise SourceError(f"full load of {seg.table} failed: {error}") from error
                if progress.state == "pending":
                    progress.state = "loading"
                    progress.started = time.monotonic()
                    log.info("table load started", table=seg.table, estimated_rows=progress.spec.estimated_rows)
                    self._set_table_metrics()
                items: list[Item] = []
                if chunk is None:  # the segment is complete
                    seg.done = True
                    remaining -= 1
                    if all(s.done for s in progress.segments):
                        self._table_loaded(progress)
                    else:
                        progress.rebuild(seg)
                else:
                    items = self._chunk_items(progress, seg, chunk, mapped)
                    yield items
                    continue
                items.append(self._marker())
                yield items
            self.finished = True
            self._set_table_metrics()
            log.info(
                "full load complete",
                tables=len(self._loaded),
                rows=self.rows,
                seconds=round(time.monotonic() - self._started, 1),
            )
        finally:
            await cancel_and_wait([*workers, progress_task])
            await self.engine.close()

    def _chunk_items(
        self, progress: _TableProgress, seg: Segment, chunk: Chunk, mapped: MappedRows | None
    ) -> list[Item]:
        """A chunk's rows (or records) each followed by its marker; a chunk of parts as each part and its marker,
        the load state moved part by part (a marker's state is exactly "everything before this marker")."""
        parts = chunk.parts if chunk.parts is not None else [(len(chunk), chunk.last_key)]
        # Records (or rows) of each part: one per row, unless the worker counted them (a filter left some out).
        counts = [n for n, _ in parts]
        if mapped is not None:
            rows: list[Any] = mapped.records
            if mapped.counts is not None:
                counts = mapped.counts
            elif len(parts) == 1:
                counts = [len(rows)]
            elif not rows:
                counts = [0] * len(parts)  # a table the mapping leaves out
            if len(counts) != len(parts) or sum(counts) != len(rows):
                raise SourceError(
                    f"full load of {seg.table}: {len(rows)} records do not divide into {len(parts)} chunks"
                )
        else:
            info = progress.spec.info
            rows = [ChangeEvent(Op.LOAD, info, row, None, None, "", 0.0, "", 0) for row in chunk.rows]
        items: list[Item] = []
        start = 0
        total = 0
        for (n, last_key), count in zip(parts, counts, strict=True):
            if mapped is None:
                items.extend(rows[start : start + count])
            elif len(parts) == 1:
                items.append(mapped)
            else:
                items.append(MappedRows(rows[start : start + count]))
            start += count
            total += n
            seg.rows += n
            progress.rows += n
            self.rows += n
            if last_key is not None:
                seg.after = last_key
            progress.rebuild(seg)
            items.append(self._marker())
        self._m_rows.inc(total)
        return items

    def _queue_depth(self, sessions: int) -> int:
        """Chunks the queue holds: two per session, or, for an engine handing over chunks of parts (up to
        GROUP_ROWS rows each instead of parallel_load_buffer_size), as many rows as those would be and at least
        two chunks (one taken while the next waits): the memory bound of DMS's 50-row default stays that small."""
        depth = 2 * sessions
        size = self.cfg.parallel_load_buffer_size
        if self._offload is not None and getattr(self.engine, "reads_parts", False) and size < GROUP_ROWS:
            depth = max(2, depth * size // GROUP_ROWS)
        return depth

    def _table_loaded(self, progress: _TableProgress) -> None:
        progress.state = "loaded"
        name = progress.spec.name
        if name not in self._loaded:
            self._loaded.append(name)
        self._loaded_snapshot = list(self._loaded)  # a new list: earlier markers keep theirs
        elapsed = time.monotonic() - (progress.started or time.monotonic())
        log.info("table loaded", table=name, rows=progress.rows, seconds=round(elapsed, 1))
        self._set_table_metrics()

    async def _worker(
        self, session: int, work: deque[tuple[TableSpec, Segment]], queue: asyncio.Queue[_Handed]
    ) -> None:
        offload = self._offload
        # With mapping workers a session reads on while its chunks are mapped, up to READ_AHEAD_ROWS: with
        # DMS's default 50-row chunks, waiting for each one left the workers idle between them.
        ahead = READ_AHEAD_ROWS if offload is not None else 0
        while work:
            spec, seg = work.popleft()
            mapping: deque[tuple[Chunk, asyncio.Future[MappedRows | None] | None]] = deque()
            queued = 0  # rows in ``mapping``
            try:
                async for chunk in self.engine.read(session, spec, seg, seg.after, raw=offload is not None):
                    mapped = None
                    if chunk.raw is not None and offload is not None:
                        mapped = asyncio.ensure_future(offload(spec.info, chunk.raw))
                    mapping.append((chunk, mapped))
                    queued += len(chunk)
                    while queued > ahead:
                        queued -= len(mapping[0][0])
                        await self._hand(spec, seg, *mapping.popleft(), queue)
                while mapping:
                    await self._hand(spec, seg, *mapping.popleft(), queue)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:  # handed to the consumer, which stops the load with it
                await queue.put((seg, None, None, exc))
                return
            finally:  # chunks read ahead of a failure: never handed over, their outcome not wanted
                for _, pending in mapping:
                    if pending is not None:
                        pending.cancel()
                        if pending.done() and not pending.cancelled():
                            pending.exception()  # retrieved: asyncio would log it as lost
            await queue.put((seg, None, None, None))

    async def _hand(
        self,
        spec: TableSpec,
        seg: Segment,
        chunk: Chunk,
        mapped_later: asyncio.Future[MappedRows | None] | None,
        queue: asyncio.Queue[_Handed],
    ) -> None:
        """One chunk to the consumer, in read order: mapped by a worker, or decoded here."""
        mapped = await mapped_later if mapped_later is not None else None
        if chunk.raw is not None and mapped is None:
            chunk.rows = await self.engine.decode(spec, chunk.raw)
        await queue.put((seg, chunk, mapped, None))

    async def _progress_loop(self) -> None:
        interval = self.cfg.progress_interval
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for p in self._tables.values():
                if p.state != "loading":
                    continue
                rate = (p.rows - p.last_log_rows) / interval
                p.last_log_rows = p.rows
                est = p.spec.estimated_rows
                eta = (max(0, est - p.rows) / rate) if est and rate > 0 else None
                log.info(
                    "full load progress",
                    table=p.spec.name,
                    rows=p.rows,
                    estimated_rows=est,
                    rows_per_second=round(rate),
                    eta_seconds=None if eta is None else round(eta),
                    elapsed_seconds=round(now - (p.started or now)),
                )
            self._set_table_metrics()

    def covers(self, name: str) -> bool:
        """Whether ``name`` (schema.table) was found and planned by :meth:`open` (or loaded before)."""
        return name in self._tables or name in self._loaded

    def status(self) -> dict[str, Any]:
        """Per-table state for ``/status`` and ``cdcstream status``."""
        tables: dict[str, Any] = {n: {"state": "loaded"} for n in self._loaded if n not in self._tables}
        for n, p in self._tables.items():
            tables[n] = {
                "state": p.state,
                "rows": p.rows,
                "estimated_rows": p.spec.estimated_rows,
                "segments": len(p.segments),
                "segments_done": sum(1 for s in p.segments if s.done),
            }
        return {"finished": self.finished, "rows": self.rows, "tables": tables}
