"""What a checkpoint holds, as types: the engine's position, the server it belongs to, the fields every engine
shares (the full load's state, the pending reloads), and the owner a checkpoint file records.

A checkpoint is the JSON the store writes, and these are TypedDicts of that JSON. At run time a checkpoint stays
a plain dict: a marker carries one per transaction, so nothing is converted on the hot path, and a file holds
exactly what earlier versions wrote and read (a field they did not write is simply absent: every field is
optional, and the engine that reads a position checks it). mypy checks every field a module reads or writes.
Only the engine that wrote a position interprets it (``sources/postgres``, ``sources/mysql``); what the shared
fields mean is defined here::

    PostgreSQL  {"lsn": "0/16B3F28", "system_id": "7301...", "timeline": 1, <shared>}
    MySQL       {"file": "binlog.000042", "pos": 1234, "gtid": "0-1-77" | null, "server_id": 1,
                 "server_uuid": "3e11fa47-..." (MySQL only), <shared>}
    shared      "phase": "full-load" and "load": {"started": true, ...} while a full load runs,
                "load": {"done": true, "tables": n, "rows": n} after it,
                "reload": ["schema.table", ...] while reloads are requested and not yet out

The load state during a load (``sources/fullload.py``)::

    {"phase": "full-load", <CDC start position, e.g. "lsn": consistent point>, ...,
     "load": {"started": true, "loaded": ["s.t", ...],
              "tables": {"s.u": {"segments": [{"columns": [...], "lo": [...]|null, "hi": [...]|null,
                                               "after": <last key copied>|null, "done": bool, "rows": n}]}},
              "rows": total}}

Tables neither ``loaded`` nor in ``tables`` are pending (planned on the next start). Completed tables are only
named, so the checkpoint grows with the number of tables, not rows or segments.
"""

from __future__ import annotations

from typing import Any, Final, Literal, TypedDict, cast

PHASE: Final = "full-load"
"""The ``phase`` of a checkpoint written while a full load runs."""

RELOAD_FIELD: Final = "reload"
"""The field naming the tables whose reload is requested and not yet out (``["s.t", ...]``)."""


class SegmentState(TypedDict, total=False):
    """One segment of a table being loaded (``sources.loadengine.Segment``): its key range and how far it got."""

    columns: list[str]
    lo: list[str] | None
    hi: list[str] | None
    after: list[Any] | None
    done: bool
    rows: int


class TableLoadState(TypedDict, total=False):
    """A table being loaded: its segments."""

    segments: list[SegmentState]


class LoadProgress(TypedDict, total=False):
    """``load`` while a full load runs (``started`` False: the intent written before its snapshot was taken)."""

    started: bool
    loaded: list[str]
    tables: dict[str, TableLoadState]
    rows: int


class LoadDone(TypedDict, total=False):
    """``load`` after the full load, in every later checkpoint: a restart neither reloads nor forgets it."""

    done: Literal[True]
    tables: int
    rows: int


class SharedFields(TypedDict, total=False):
    """What every engine's checkpoint may carry besides its position."""

    phase: Literal["full-load"]
    load: LoadProgress | LoadDone
    reload: list[str]


class PgServer(TypedDict, total=False):
    """The PostgreSQL server a position belongs to (``IDENTIFY_SYSTEM``)."""

    system_id: str
    timeline: int


class PgCheckpoint(SharedFields, PgServer, total=False):
    """A PostgreSQL checkpoint: ``lsn`` ("X/Y"), the end of the last transaction every record of which is out."""

    lsn: str


class MySQLServer(TypedDict, total=False):
    """The MySQL/MariaDB server a binlog position belongs to (``server_uuid``: MySQL only)."""

    server_id: int
    server_uuid: str


class MySQLCheckpoint(SharedFields, MySQLServer, total=False):
    """A MySQL/MariaDB checkpoint: the binlog ``file`` and the offset ``pos`` after the last transaction, and the
    server's GTID state after it (MariaDB ``domain-server-seq`` list, MySQL GTID set; None without GTIDs)."""

    file: str
    pos: int
    gtid: str | None


Checkpoint = PgCheckpoint | MySQLCheckpoint
"""A checkpoint of either engine, as the pipeline, the watermark and the store pass it along unread."""


class Owner(TypedDict, total=False):
    """What a checkpoint file was written for (``checkpoints/store.task_owner``)."""

    engine: str
    database: str
    slot: str
    stream: str
    region: str


def position(checkpoint: Checkpoint) -> dict[str, Any]:
    """The engine position in ``checkpoint`` (PostgreSQL ``lsn``, MySQL ``file``/``pos``/``gtid``), for messages."""
    return {key: value for key, value in checkpoint.items() if key in _POSITION_FIELDS}


_POSITION_FIELDS = frozenset({"lsn", "file", "pos", "gtid"})


def is_loading(checkpoint: Checkpoint | None) -> bool:
    """True for a checkpoint written in the middle of a full load."""
    return checkpoint is not None and checkpoint.get("phase") == PHASE


def load_started(checkpoint: Checkpoint | None) -> bool:
    """True for a checkpoint of a load whose snapshot was taken (so its CDC start position is stored)."""
    load = (checkpoint or {}).get("load")
    return is_loading(checkpoint) and isinstance(load, dict) and bool(load.get("started"))


def stored_load(checkpoint: Checkpoint | None) -> LoadProgress:
    """The progress a checkpoint of a started load stored (empty for any other checkpoint)."""
    load = (checkpoint or {}).get("load") if load_started(checkpoint) else None
    return cast(LoadProgress, load) if isinstance(load, dict) else {}  # "started": only a LoadProgress says so


def intent_checkpoint() -> Checkpoint:
    """Written by the pipeline before a fresh load's source starts: a crash between creating the snapshot (a
    PostgreSQL slot) and the first load checkpoint then restarts the load instead of finding an unexplained
    slot. Nothing was acknowledged under it, so starting over loses nothing."""
    return {"phase": PHASE, "load": {"started": False}}


def load_completed(checkpoint: Checkpoint | None) -> bool:
    """True for a checkpoint written after the full load finished."""
    load = (checkpoint or {}).get("load")
    return isinstance(load, dict) and bool(load.get("done"))


def completed_load(tables: int, rows: int) -> LoadDone:
    """The ``load`` entry of every checkpoint after the load."""
    return {"done": True, "tables": tables, "rows": rows}
