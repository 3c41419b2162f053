"""``reload --table``: re-copying one table while CDC runs, the same way on every engine.

:class:`TableReloads` is the state machine; the source's read loop drives it, and the engine
(:class:`ReloadEngine`: PostgreSQL ``sources/postgres/reload.py``, MySQL ``sources/mysql/reload.py``) says only
what differs between servers: why a table cannot be copied, how a copy's snapshot is opened and where its
consistent point P falls in the change stream.

1. **request** (:meth:`TableReloads.request`): the table must be selected and readable (:func:`validate_reload`);
   it is queued in :class:`PendingReloads`, and every checkpoint yielded from then on names it
   (``{"reload": [...]}``) until its rows are out, so a crash in between redoes it at the next start.
2. **begin** (:meth:`TableReloads.begin`, at a transaction boundary of the yielded stream): the engine opens the
   copy's sessions at one snapshot, whose point P in the change stream it returns. A copy that cannot start is
   marked failed and CDC goes on.
3. **split** (:meth:`TableReloads.split`): the stream goes on up to the last transaction committed before P; the
   engine finds where P falls in a batch, and the batch is cut there.
4. **finish**: the table's rows follow as ``load`` records, then a marker that no longer names the table, then
   the changes from P on. A copy that fails half-way is marked failed the same way (its rows so far are in the
   stream, harmlessly).

Failed reloads leave the queue like finished ones: logged, counted, listed in ``/status``, and named by no later
checkpoint, so a restart does not run into them again (``PendingReloads``).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, cast

import structlog

from cdcstream.changes import Item, Marker
from cdcstream.checkpoints.model import RELOAD_FIELD, Checkpoint, MySQLCheckpoint, PgCheckpoint
from cdcstream.errors import SourceError
from cdcstream.sources.fullload import FullLoad
from cdcstream.sources.loadengine import LoadEngine
from cdcstream.telemetry import metrics

log = structlog.get_logger(__name__)

C = TypeVar("C", PgCheckpoint, MySQLCheckpoint)
"""An engine's checkpoint type."""
P = TypeVar("P")
"""An engine's consistent point: an LSN, a binlog position."""


async def validate_reload(
    name: str,
    *,
    migration_type: str,
    initial_load: FullLoad | None,
    selector: Callable[[str, str], bool] | None,
    unreadable: Callable[[str, str], Awaitable[str | None]],
) -> tuple[str, str]:
    """``(schema, table)`` of a reload request, or a SourceError saying why it is refused (the HTTP endpoint
    answers 400 with it, ``cdcstream reload`` exits 1). ``unreadable`` asks the engine why the copy could not
    read the table (it does not exist, or the user may not SELECT it: with the GRANT to run), or None.

    Checked when the request arrives and again before the copy starts (a request stored in the checkpoint may
    meet a changed mapping or database at the next start), so a reload that cannot work is refused or fails
    instead of stopping the daemon."""
    schema, dot, table = name.partition(".")
    if not dot or not schema or not table:
        raise SourceError(f"reload: expected schema.table, got {name!r}")
    if migration_type == "full-load":
        raise SourceError("reload: migration_type full-load has no change stream to reload into")
    if initial_load is not None and not initial_load.finished:
        raise SourceError("reload: the initial full load is still running")
    if selector is not None and not selector(schema, table):
        raise SourceError(f"reload: {name} is not selected by the table mapping")
    problem = await unreadable(schema, table)
    if problem:
        raise SourceError(f"reload: {problem}")
    return schema, table


def stamp_requested_reloads(
    checkpoint: Checkpoint, seq: int, requests: list[tuple[str, int]]
) -> tuple[Checkpoint, list[tuple[str, int]]]:
    """``checkpoint``, of the marker numbered ``seq``, naming every reload requested after that marker was
    issued (``requests``: the table and the first sequence number issued after the request), and the requests
    later markers still need. A source names a reload only in the markers it issues after the request, yet
    markers issued before it may be checkpointed after the daemon answered "queued"; from a request's number
    on, the source's own stamp is the truth (it drops the name once the rows are all out)."""
    remaining = [(name, cut) for name, cut in requests if seq < cut]
    have = list(checkpoint.get(RELOAD_FIELD) or ())
    missing = [name for name, _ in remaining if name not in have]
    if not missing:
        return checkpoint, remaining
    stamped = checkpoint.copy()
    stamped[RELOAD_FIELD] = have + missing
    return stamped, remaining


#: Failed reloads /status keeps (the newest).
FAILED_KEPT = 10


class PendingReloads:
    """The queue of requested reloads, carried in every checkpoint (``{"reload": [...]}``) until the table's
    rows are all out, so a crash in between redoes the reload from the start; and how the last ones ended.

    A reload that fails (the table was dropped, SELECT revoked, a session lost) leaves the queue like a finished
    one: it is logged, counted (``cdcstream_reloads_total{outcome="failed"}``) and listed in ``/status``, CDC of
    every table goes on, and no later checkpoint names it, so a restart does not run into it again."""

    def __init__(self, checkpoint: Checkpoint | None = None, *, label: str = "") -> None:
        stored = (checkpoint or {}).get(RELOAD_FIELD) or []
        self.names: list[str] = [str(t) for t in stored] if isinstance(stored, list) else []
        self.failed: deque[dict[str, Any]] = deque(maxlen=FAILED_KEPT)
        self._label = label
        if not isinstance(stored, list):
            log.warning("checkpoint field 'reload' is not a list of tables; ignored", value=repr(stored)[:200])
        if self.names:
            log.info("reload pending from the last run: redoing it", tables=self.names)

    def __bool__(self) -> bool:
        return bool(self.names)

    @property
    def current(self) -> str:
        return self.names[0]

    def add(self, name: str) -> tuple[bool, str]:
        """Queue ``name``; (whether it was new, the answer for the caller)."""
        if name in self.names:
            return False, f"reload of {name} already pending"
        self.names.append(name)
        log.info("reload requested", table=name)
        return True, f"reload of {name} queued"

    def pop(self, *, rows: int | None = None, error: BaseException | None = None) -> None:
        """The current reload ended: its rows are all yielded (the next marker no longer names it), or it
        failed with ``error`` before they were."""
        name = self.names.pop(0)
        if error is None:
            metrics.RELOADS.labels(self._label, "done").inc()
            log.info("reload done", table=name, rows=rows)
            return
        reason = str(error).strip() or type(error).__name__
        metrics.RELOADS.labels(self._label, "failed").inc()
        self.failed.append({"table": name, "error": reason, "at": time.time()})
        log.error(
            "reload failed: the table was not re-copied; CDC goes on. Request it again once the cause is fixed",
            table=name,
            rows_sent=rows,
            error=reason,
            error_type=type(error).__name__,
        )

    def stamp(self, checkpoint: C) -> C:
        """``checkpoint`` with the pending reloads as they are now (the field removed when none are)."""
        out = checkpoint.copy()
        if self.names:
            out[RELOAD_FIELD] = list(self.names)
        elif RELOAD_FIELD in out:
            del out[RELOAD_FIELD]
        return out

    def status(self, running: FullLoad | None) -> dict[str, Any]:
        """``/status`` → ``source.reload``: the queue, the running copy's progress, the recent failures."""
        return {
            "pending": list(self.names),
            "running": None if running is None else running.status(),
            "failed": list(self.failed),
        }


NewCopy = Callable[[LoadEngine, "int | None"], FullLoad]
"""The load of one reload over an engine's sessions (``FullLoad.for_reload``, its markers set), with that many
sessions (None: as many as the table can have segments)."""


@dataclass(slots=True)
class Copy(Generic[P]):
    """A reload's copy, opened at its snapshot: the load, P, and what /status shows about it (``about``)."""

    load: FullLoad
    point: P
    about: dict[str, Any] = field(default_factory=dict)


class ReloadEngine(Protocol[C, P]):
    """What one engine provides for ``reload --table``."""

    async def unreadable(self, schema: str, table: str) -> str | None:
        """Why the copy could not read the table (it does not exist, the user may not SELECT it: with the GRANT
        to run), or None."""
        ...

    async def open_copy(self, name: str, schema: str, table: str, new_copy: NewCopy, last: C) -> Copy[P]:
        """Open the copy of ``name`` (its load made by ``new_copy`` and opened) at a snapshot whose point P
        follows every change yielded so far (``last``: the checkpoint of the last marker yielded). Raises when it
        cannot, with nothing left open."""
        ...

    def marker_base(self, last: C) -> C:
        """The checkpoint of the last marker yielded as a marker now carries it (fields the source adds to every
        checkpoint, brought up to date); the markers of a reload and those around it carry it."""
        ...


class TableReloads(Generic[C, P]):
    """The reload state machine of one source (the module docstring has the steps).

    ``last`` is the checkpoint of the last marker the source yielded (:meth:`out` keeps it), ``point`` the
    running copy's P (None while none runs)."""

    def __init__(
        self,
        engine: ReloadEngine[C, P],
        *,
        label: str,
        migration_type: str,
        selector: Callable[[str, str], bool] | None,
        initial_load: Callable[[], FullLoad | None],
        new_copy: Callable[[LoadEngine, Callable[[], Checkpoint], int | None], FullLoad],
    ) -> None:
        self.pending = PendingReloads(label=label)
        self.copy: Copy[P] | None = None
        self.last: C = cast(C, {})
        self.at_boundary = True  # the last item yielded ended a transaction (or nothing was yielded yet)
        #: The last copy begun, for /status (with its rows once it ended).
        self.last_copy: dict[str, Any] | None = None
        self._engine: ReloadEngine[C, P] = engine
        self._label = label
        self._migration_type = migration_type
        self._selector = selector
        self._initial_load = initial_load
        self._new_copy = new_copy

    def restore(self, checkpoint: C | None) -> None:
        """The reloads requested and not finished before the last stop, from its checkpoint: done again."""
        self.pending = PendingReloads(checkpoint, label=self._label)

    @property
    def point(self) -> P | None:
        return None if self.copy is None else self.copy.point

    # -- 1. request --------------------------------------------------------------------------------------
    async def request(self, name: str) -> str:
        """Validate and queue a reload of ``schema.table``; the answer for the caller."""
        await self.validate(name)
        return self.pending.add(name)[1]

    async def validate(self, name: str) -> tuple[str, str]:
        return await validate_reload(
            name,
            migration_type=self._migration_type,
            initial_load=self._initial_load(),
            selector=self._selector,
            unreadable=self._engine.unreadable,
        )

    # -- 2. begin ----------------------------------------------------------------------------------------
    def due(self, at_boundary: bool) -> bool:
        """Whether a reload is waiting and may begin here (at a transaction boundary of the yielded stream)."""
        return bool(self.pending) and self.copy is None and at_boundary

    async def begin(self) -> bool:
        """Open the copy of the first pending reload. False when it cannot start: it is then marked failed, CDC
        goes on, and the caller yields :meth:`marker` so the checkpoint drops it promptly."""
        name = self.pending.current
        try:
            schema, table = await self.validate(name)
            self.copy = await self._engine.open_copy(name, schema, table, self._copy_load, self.last)
        except Exception as exc:  # whatever stops this copy must not stop the stream (or every later start)
            self.pending.pop(error=exc)
            return False
        self.last_copy = self.copy.about or None
        return True

    def _copy_load(self, engine: LoadEngine, sessions: int | None) -> FullLoad:
        # Markers inside the copy are CDC checkpoints at the last position yielded before it (never past the
        # changes held back for after the rows), still naming the pending reload.
        return self._new_copy(engine, lambda: self.pending.stamp(self._engine.marker_base(self.last)), sessions)

    # -- 3. split, 4. finish -----------------------------------------------------------------------------
    async def split(self, items: list[Item], at: int) -> AsyncIterator[Sequence[Item]]:
        """``items[:at]`` (before P), the copy's rows, then a marker that no longer names the table. The caller
        yields ``items[at:]`` after them, through :meth:`out`."""
        if at:
            yield self.out(items[:at])
        copy = self.copy
        assert copy is not None
        load = copy.load
        try:
            async for batch in load.run():
                yield batch
        except Exception as exc:  # the copy only: the held-back changes after P are still to be yielded
            self.pending.pop(rows=load.rows, error=exc)
        else:
            self.pending.pop(rows=load.rows)
        self.copy = None
        if self.last_copy is not None:
            self.last_copy = {**self.last_copy, "rows": load.rows}
        # The first checkpoint no longer naming the table: acknowledged only after every row before it.
        yield self.out([self.marker()])

    # -- what the source yields --------------------------------------------------------------------------
    def marker(self) -> Marker:
        """A checkpoint at the last position yielded, naming exactly the reloads pending now."""
        return Marker(self.pending.stamp(self._engine.marker_base(self.last)), None, False)

    def out(self, items: list[Item]) -> list[Item]:
        """``items`` as the source yields them: while reloads are pending their markers name them; remembers the
        last marker's checkpoint and whether the batch ends a transaction (a reload begins only there)."""
        pending = self.pending
        if pending:
            items = [
                Marker(pending.stamp(self._ours(i)), i.commit_epoch, i.transaction) if isinstance(i, Marker) else i
                for i in items
            ]
        for item in reversed(items):
            if isinstance(item, Marker):
                self.last = self._ours(item)
                break
        if items:
            self.at_boundary = isinstance(items[-1], Marker)
        return items

    def _ours(self, marker: Marker) -> C:
        return cast(C, marker.checkpoint)  # the source's own marker: its checkpoint type

    def status(self) -> dict[str, Any]:
        """``/status`` → ``source.reload``: the queue, the running copy's progress, the recent failures."""
        return self.pending.status(None if self.copy is None else self.copy.load)

    async def close(self) -> None:
        """Release a copy opened and not run (running, it closes itself)."""
        copy, self.copy = self.copy, None
        if copy is not None:
            await copy.load.engine.close()
