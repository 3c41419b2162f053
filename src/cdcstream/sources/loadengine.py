"""What an engine provides for a full load (:class:`LoadEngine`), and the values it exchanges with the runner.

:class:`~cdcstream.sources.fullload.FullLoad` plans tables into :class:`Segment` s and asks an engine for their
rows; PostgreSQL's engine is ``sources/postgres/snapshot.py``, MySQL/MariaDB's ``sources/mysql/snapshot.py``.

Segments are ranges of a row comparison over ``columns``: segment ``i`` of boundaries ``b0 < b1 < ...`` holds the
rows where ``(columns) <= b_i`` is TRUE and ``(columns) <= b_{i-1}`` is not TRUE, so every row (also rows with
NULL in a range column) falls into a segment. Inside a segment rows are read in key order by keyset pagination
(``key > after ORDER BY key LIMIT chunk_rows``), never OFFSET. A table without a usable key is one segment read
in one pass (not resumable mid-table: a restart re-copies it).

For MySQL/MariaDB, for instance: :meth:`LoadEngine.open` takes a brief global read lock, opens the sessions with
``START TRANSACTION WITH CONSISTENT SNAPSHOT``, reads the binlog position (the CDC start, returned), unlocks;
:meth:`LoadEngine.tables` lists the selected tables with ``TableInfo`` built exactly as the binlog path builds it,
their key columns and row estimates; :meth:`LoadEngine.split_points` proposes boundaries over the first key
column; :meth:`LoadEngine.read` returns a segment's rows after a key in key order, rendered exactly as CDC renders
the same values (the load-vs-insert test holds PostgreSQL to that); keys in ``Chunk.last_key`` are any JSON-ready
list the same engine accepts back as ``after``.

With mapping worker processes (:data:`Offload`) an engine reads chunks raw (:class:`~cdcstream.changes.RawRows`)
and describes their columns once per :class:`RawSpec`, which a worker process caches (:func:`per_spec`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from cdcstream.changes import MappedRows, RawRows, TableInfo
from cdcstream.checkpoints.model import Checkpoint, SegmentState

Key = list[Any]
"""A row key as the engine renders it (JSON-ready; PostgreSQL: the columns' text). Opaque to this module."""


@dataclass(slots=True, frozen=True)
class TableSpec:
    """One selected table as the engine describes it for a load."""

    info: TableInfo  # columns exactly as the CDC path describes them (so the mapping plan is the same)
    key_columns: tuple[str, ...]  # keyset order; empty: no usable key (one pass, not resumable mid-table)
    estimated_rows: int | None  # catalog estimate (None: unknown)

    @property
    def name(self) -> str:
        return f"{self.info.schema}.{self.info.table}"


@dataclass(slots=True)
class Segment:
    """A key range of one table and how far it was copied (the module docstring has the predicate)."""

    table: str
    columns: tuple[str, ...] = ()
    lo: tuple[str, ...] | None = None  # rows with (columns) <= lo belong to an earlier segment
    hi: tuple[str, ...] | None = None  # rows with (columns) <= hi (TRUE) belong here or earlier
    after: Key | None = None
    done: bool = False
    rows: int = 0

    def to_json(self) -> SegmentState:
        return {
            "columns": list(self.columns),
            "lo": None if self.lo is None else list(self.lo),
            "hi": None if self.hi is None else list(self.hi),
            "after": self.after,
            "done": self.done,
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, table: str, d: SegmentState) -> Segment:
        lo, hi = d.get("lo"), d.get("hi")
        return cls(
            table,
            tuple(d.get("columns") or ()),
            None if lo is None else tuple(lo),
            None if hi is None else tuple(hi),
            d.get("after"),
            bool(d.get("done")),
            int(d.get("rows") or 0),
        )


#: Rows a raw read may hand over as one :class:`Chunk` of several parts (DMS's maximum
#: ``parallel_load_buffer_size``): one worker request, one answer and one queue hand-off for the rows a session
#: read at once, instead of one per ``parallel_load_buffer_size`` rows, which cost the event loop ~100 µs each
#: (~2 µs per row at DMS's default 50-row chunks; bench/README.md).
GROUP_ROWS = 1000


@dataclass(slots=True)
class Chunk:
    """Rows an engine hands over at once and the key of the last: decoded in ``rows``, or (read with ``raw=True``)
    not yet decoded in ``raw``.

    At most ``parallel_load_buffer_size`` rows, unless ``parts`` is set: then (raw reads only) the chunk is that
    many consecutive chunks of at most ``parallel_load_buffer_size`` rows read at once, up to :data:`GROUP_ROWS`
    in all, each as its row count and last key; ``last_key`` is the last part's. The load state still moves (and
    a marker follows) part by part, so resuming after a crash repeats no more than it did for single chunks. An
    engine that reads chunks of parts says so with a class attribute ``reads_parts = True`` (the load's queue then
    holds fewer chunks: fullload.FullLoad._queue_depth)."""

    rows: list[dict[str, Any]]
    last_key: Key | None
    raw: RawRows | None = None
    parts: list[tuple[int, Key | None]] | None = None

    def __len__(self) -> int:
        return len(self.raw) if self.raw is not None else len(self.rows)


Offload = Callable[[TableInfo, RawRows], Awaitable[MappedRows | None]]
"""Decodes and maps a raw chunk in another process (the pipeline's mapping pool); None: the chunk's column
descriptions are stale, the engine decodes it itself."""


class RawSpec(Protocol):
    """What an engine's raw chunks carry to be decoded anywhere (column descriptions), named by a key."""

    @property
    def key(self) -> str: ...


_S = TypeVar("_S", bound=RawSpec)
_T = TypeVar("_T")
_spec_keys = itertools.count()


def new_spec_key() -> str:
    """A key for one :class:`RawSpec`, unique across the daemon's processes (its pid and a counter)."""
    return f"{os.getpid()}.{next(_spec_keys)}"


def per_spec(build: Callable[[_S], _T]) -> Callable[[_S], _T]:
    """``build(spec)`` once per spec key in the process that decodes (a mapping worker decodes chunk after chunk
    of a segment with one spec); bounded, since engines make a spec per segment read."""
    cache: dict[str, _T] = {}

    def get(spec: _S) -> _T:
        try:
            return cache[spec.key]
        except KeyError:
            if len(cache) >= 256:
                cache.clear()
            value = cache[spec.key] = build(spec)
            return value

    return get


class LoadEngine(Protocol):
    """What a source provides for a full load (one instance per load; sessions are numbered 0..n-1)."""

    async def open(self, sessions: int, *, fresh: bool) -> Checkpoint:
        """Open ``sessions`` read sessions. ``fresh``: all in one consistent snapshot, and return the CDC start
        position matching it (merged into every load checkpoint; e.g. ``{"lsn": ...}``). Not fresh (a resumed
        load): each session in a snapshot of its own, returns ``{}`` (the stored start position is kept)."""
        ...

    async def tables(self) -> list[TableSpec]:
        """The selected tables, in load order."""
        ...

    async def split_points(self, spec: TableSpec, parts: int) -> list[tuple[str, ...]]:
        """Up to ``parts - 1`` increasing boundaries over ``spec.key_columns[0]`` (as 1-tuples of text)."""
        ...

    def read(
        self, session: int, spec: TableSpec, segment: Segment, after: Key | None, *, raw: bool = False
    ) -> AsyncIterator[Chunk]:
        """The segment's rows with key > ``after`` in key order (all rows, one pass, without a key); ``raw``:
        as :class:`~cdcstream.changes.RawRows` (``Chunk.raw``) for a mapping worker process to decode."""
        ...

    async def decode(self, spec: TableSpec, raw: RawRows) -> list[dict[str, Any]]:
        """Decode a raw chunk here, refreshing stale column descriptions (its ``rows()`` returned None)."""
        ...

    async def close(self) -> None:
        """End the sessions (and anything holding the snapshot)."""
        ...
