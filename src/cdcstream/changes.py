"""The neutral change model every source produces and the mapping consumes.

A source yields, in commit order, :class:`ChangeEvent` (a row change or a table-scoped control event) and
:class:`Marker` (a position that may be checkpointed once everything before it is acknowledged: a transaction end,
or an idle keepalive position). Values in ``after``/``before`` are already JSON-ready Python objects
(int, str, float, bool, None, dict, list) rendered by the source's type plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from cdcstream.checkpoints.model import Checkpoint

if TYPE_CHECKING:
    from cdcstream.records import Record


class Op(StrEnum):
    """Kinds of change. The first four are data records; the rest become control records.

    The values of the schema-change kinds are the DMS control operation names (as DMS's
    IncludeTableAlterOperations writes them).
    """

    LOAD = "load"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    TRUNCATE = "truncate"
    DROP_TABLE = "drop-table"
    ADD_COLUMN = "add-column"
    DROP_COLUMN = "drop-column"
    RENAME_COLUMN = "rename-column"
    COLUMN_TYPE_CHANGE = "column-type-change"
    CHANGE_COLUMNS = "change-columns"
    RENAME_TABLE = "rename-table"


DATA_OPS = frozenset({Op.LOAD, Op.INSERT, Op.UPDATE, Op.DELETE})
ALTER_OPS = frozenset(
    {Op.ADD_COLUMN, Op.DROP_COLUMN, Op.RENAME_COLUMN, Op.COLUMN_TYPE_CHANGE, Op.CHANGE_COLUMNS, Op.RENAME_TABLE}
)
"""Control operations written only with ``include_table_alter_operations`` (DMS ``IncludeTableAlterOperations``)."""


class Described:
    """A description many chunks of a full load share (a table's columns, the types a chunk's text needs): a
    mapping worker process receives each once, then by reference (workers/pool.py)."""

    __slots__ = ()


@dataclass(slots=True, frozen=True)
class Column:
    """One column of a captured table as the source describes it."""

    name: str
    type_name: str
    type_id: int = 0
    nullable: bool = True
    is_key: bool = False


@dataclass(slots=True, frozen=True)
class TableInfo(Described):
    """Schema of a captured table. One instance per table version, shared by all its events."""

    schema: str
    table: str
    columns: tuple[Column, ...]

    @property
    def key_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.is_key)


@dataclass(slots=True, frozen=True)
class SchemaChange:
    """What one ALTER/RENAME did to a table, carried by an :data:`ALTER_OPS` event.

    ``old_table`` is the table before the change (its columns may be empty when the source never saw them);
    the event's ``table`` is the table after it. ``column`` is the column's name after the change (add, rename,
    type change), ``old_column`` before it (drop, rename, type change); both are source names, the mapping
    renames them.
    """

    old_table: TableInfo
    column: str | None = None
    old_column: str | None = None


@dataclass(slots=True)
class ChangeEvent:
    """One committed change of one row (or one table-scoped control event such as TRUNCATE)."""

    op: Op
    table: TableInfo
    after: dict[str, Any] | None
    before: dict[str, Any] | None
    transaction_id: int | str | None
    commit_time: str  # ISO 8601 UTC with microseconds and "Z", formatted once per transaction
    commit_epoch: float  # the same instant as seconds since the epoch, for lag metrics
    stream_position: str  # opaque, sorts in commit order (fixed width)
    transaction_record_id: int  # 1-based offset within the transaction
    unchanged_columns: tuple[str, ...] = field(default=())  # values the source did not send (PG unchanged TOAST)
    change: SchemaChange | None = None  # for ALTER_OPS events only
    #: The record's ``data`` section already rendered as JSON by a source's compiled fused path
    #: (sources/postgres/fused.py); ``after`` and ``before`` are then None. Only a mapping that said it writes
    #: the table's rows unchanged but for names gets such events.
    fused: bytes | None = None
    #: With ``fused``, the record's partition key when the source rendered that too (a ``primary-key`` key).
    fused_key: str | None = None


RUN_OPS = (Op.INSERT, Op.UPDATE, Op.DELETE)
"""A :class:`FusedRows` run's operations, by their index in ``FusedRows.ops``."""


@dataclass(slots=True)
class FusedRows:
    """A run of consecutive pre-rendered row changes of one table within one transaction (a source's compiled
    fused path, sources/postgres/fused.py): what :meth:`events` returns, row for row, without a
    :class:`ChangeEvent` per row. Rows with unchanged columns are never in a run.

    ``ops`` holds each row's operation (0 insert, 1 update, 2 delete), ``data`` its ``fused`` data section,
    ``keys`` its ``fused_key`` (None: the rows carry none); the rows' record ids count up from
    ``first_record_id`` and their stream positions are ``position_prefix`` + the record id in 10 digits."""

    table: TableInfo
    ops: bytes
    data: list[bytes]
    keys: list[str] | None
    transaction_id: int
    commit_time: str
    commit_epoch: float
    position_prefix: str
    first_record_id: int

    #: Read by the pipeline's load/CDC switch like a ChangeEvent's operation: a run holds CDC changes only.
    op = Op.INSERT

    def event(self, i: int) -> ChangeEvent:
        """The run's ``i``-th row as a change event."""
        rid = self.first_record_id + i
        key = None if self.keys is None else self.keys[i]
        return ChangeEvent(
            RUN_OPS[self.ops[i]],
            self.table,
            None,
            None,
            self.transaction_id,
            self.commit_time,
            self.commit_epoch,
            f"{self.position_prefix}{rid:010d}",
            rid,
            (),
            None,
            self.data[i],
            key,
        )

    def events(self) -> list[ChangeEvent]:
        """The run as the change events it stands for (the reference form)."""
        return [self.event(i) for i in range(len(self.ops))]


@dataclass(slots=True, frozen=True)
class Marker:
    """A checkpointable position: safe to persist once every record before it has been acknowledged.

    ``checkpoint`` is source-specific and JSON-ready (``checkpoints/model.py``); only the source that produced it
    interprets its position.
    ``commit_epoch`` is the commit time of the transaction it ends (None for idle/keepalive positions).
    """

    checkpoint: Checkpoint
    commit_epoch: float | None = None
    transaction: bool = True


class RawRows(Protocol):
    """Full-load rows as a source read them, not decoded yet (a COPY block, MySQL row packets).

    Picklable and self-contained (it carries the column descriptions it needs), so that a mapping worker
    process can decode it: the expensive per-row work then runs beside the event loop, not on its core.
    """

    def __len__(self) -> int:
        """The number of rows."""
        ...

    def rows(self) -> list[dict[str, Any]] | None:
        """The rows, rendered exactly as the source's in-process path renders them; None when the column
        descriptions carried are stale (the source decodes it again itself, after refreshing them)."""
        ...


@dataclass(slots=True)
class MappedRows:
    """Full-load rows that a mapping worker process already turned into records, in row order.

    The pipeline numbers and sends them as it would have mapped the rows itself. ``counts``: for a chunk of parts
    (loadengine.Chunk.parts) whose rows did not each give one record, the records of each part."""

    records: list[Record]
    counts: list[int] | None = None


@dataclass(slots=True, frozen=True)
class LoadLayout:
    """What a raw chunk needs to write one table's load records itself, as the mapping would (a compiled renderer,
    sources/postgres/fused.py): the mapping only renames or leaves out columns (:meth:`Mapper.load_layout
    <cdcstream.mapping.envelope.Mapper.load_layout>` says when).

    ``names``: each source column's name in the records, None where it is left out;
    ``key``: a ``primary-key`` partition key's source columns (key order) and prefix, or None and ``static_key``
    for every row; ``empty_key`` stands in for an empty key; ``tail``: the record's bytes after the data section
    (the metadata, serialised once per chunk)."""

    names: tuple[str | None, ...]
    include_nulls: bool
    key: tuple[tuple[int, ...], str] | None
    static_key: str | None
    empty_key: str
    tail: bytes
    label: str


class RendersRecords(Protocol):
    """:class:`RawRows` that can write their load records themselves for a :class:`LoadLayout`."""

    def render_records(self, layout: LoadLayout) -> tuple[list[str], list[bytes], list[bytes | None]] | None:
        """(partition keys, records, PutRecords entries: None where the caller must build one, a key the sink
        sends as its digest), byte for byte what the mapping writes; None where the mapping must do it."""
        ...


Item = ChangeEvent | Marker | MappedRows | FusedRows
