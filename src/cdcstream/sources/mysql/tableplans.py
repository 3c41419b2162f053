"""Table versions as the binlog's table maps describe them: which tables are selected, and for each selected
version its :class:`~cdcstream.changes.TableInfo` and the decoder of its row images.

A table map precedes a transaction's row events and says what the table looked like when they were written: its
columns' types, names (``binlog_row_metadata = FULL``), character sets, key. The same map body means the same
version, so its plan is built once and reused across transactions and reconnects; rows of tables no rule selects
are never decoded. MariaDB's UUID/INET4/INET6 columns look like BINARY(16)/BINARY(4) in the map: the catalogue
says which they are (:mod:`.catalog`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from cdcstream.changes import Column, Op, TableInfo
from cdcstream.errors import DecodeError, SourceError
from cdcstream.sources.mysql import fused, rows
from cdcstream.sources.mysql.binlog import events as ev
from cdcstream.sources.mysql.binlog import tablemap
from cdcstream.sources.mysql.binlog.charsets import Charsets
from cdcstream.sources.mysql.binlog.rowevents import RowPlan, json_column_indexes
from cdcstream.sources.mysql.binlog.values import FIXED_BINARY_LENGTH, ValueOptions, column_decoder

log = structlog.get_logger(__name__)

OPS = (Op.INSERT, Op.UPDATE, Op.DELETE, Op.TRUNCATE, Op.DROP_TABLE)
"""The operations counted per table (``TablePlan.counts``) for ``cdcstream_source_events_total``."""

# Which table ids a fixed-binary lookup needs: (schema, table, column names) -> {column: uuid|inet4|inet6} or None.
FixedBinaryLookup = Callable[[str, str, list[str]], "dict[str, str] | None"]

FuseHook = Callable[[TableInfo], "fused.FusedColumns | None"]
"""The mapping's half of the fused path's eligibility (Mapper.fused_columns), asked once per table version."""


@dataclass(slots=True, eq=False)  # hashed by identity (kept in a set of touched plans)
class TablePlan:
    """One version of a table (as its table map describes it): the shared TableInfo and its row decoder."""

    info: TableInfo
    rows: RowPlan
    label: str
    keys: tuple[str, ...]
    counts: list[int] = field(default_factory=lambda: [0] * len(OPS))
    #: The compiled renderer of this version's FULL row images (fused.py), None where the reference renders them.
    fused: Any = None


class TablePlans:
    """The plans of the table versions seen, by table map body; what is selected; the last known shape of each
    table (for the control events of DDL)."""

    def __init__(
        self,
        selector: Callable[[str, str], bool],
        *,
        no_hex_prefix: bool,
        invalid_dates: str,
        mariadb: bool,
        fuse: FuseHook | None = None,
    ) -> None:
        self._selector = selector
        self._fuse = fuse if fuse is not None and fused.available() else None
        self._no_hex_prefix = no_hex_prefix
        self._invalid_dates = invalid_dates
        self._mariadb = mariadb
        self.charsets = Charsets()
        self.fixed_binary: FixedBinaryLookup | None = None
        self._selected: dict[tuple[str, str], bool] = {}
        # table map body (without the id) -> plan (None: not selected), per table version.
        self._plans: dict[bytes, TablePlan | None] = {}
        self._by_label: dict[str, TablePlan] = {}
        #: The last known shape of each table: what the next control event of DDL on it says it was.
        self.infos: dict[tuple[str, str], TableInfo] = {}
        self._interned: dict[TableInfo, TableInfo] = {}
        self._warned: set[tuple[str, str, tuple[str, ...]]] = set()

    def connected(self, charsets: Charsets, fixed_binary: FixedBinaryLookup | None) -> None:
        """A new dump connection: the server's character sets and catalogue; table versions are read afresh."""
        self.charsets = charsets
        self.fixed_binary = fixed_binary
        self.forget()

    def forget(self) -> None:
        """After DDL (or a reconnect): table versions, and what the catalogue said about them, are read afresh."""
        self._plans.clear()

    def selected(self, schema: str, table: str) -> bool:
        key = (schema, table)
        hit = self._selected.get(key)
        if hit is None:
            hit = self._selected[key] = self._selector(schema, table)
        return hit

    def plan(self, raw: bytes, end: int, post: int, at: str) -> TablePlan | None:
        """The plan of the table map event ``raw`` (body up to ``end``, post-header ``post`` bytes; ``at``: its
        position, for errors), None when the table is not selected."""
        key = raw[ev.HEADER_LEN + post - 2 : end]  # flags and body: the same for every map of a version
        if key in self._plans:
            return self._plans[key]
        tm = tablemap.decode(raw, end, post, mariadb=self._mariadb)
        plan = self._build(tm, at) if self.selected(tm.schema, tm.table) else None
        self._plans[key] = plan
        return plan

    def _build(self, tm: tablemap.TableMap, at: str) -> TablePlan:
        schema, name = tm.schema, tm.table
        if not tm.has_names:
            raise SourceError(
                f"the binlog has no column names for {schema}.{name}: the server's binlog_row_metadata is not FULL "
                "(the table map then carries only types). Fix: SET GLOBAL binlog_row_metadata = FULL; (and in "
                "the server config, so it survives a restart), then restart cdcstream."
            )
        names = [c.name for c in tm.columns]
        fixed = self._fixed_binary_types(tm, names, at)
        opts = ValueOptions(self.charsets, self._no_hex_prefix, self._invalid_dates)
        try:
            decoders = [column_decoder(c, opts, fixed.get(c.name)) for c in tm.columns]
        except DecodeError as exc:
            raise DecodeError(f"{schema}.{name} at {at}: {exc}") from None
        keys = tuple(names[i] for i in tm.primary_key)
        info = rows.table_info(schema, name, tm.columns, set(keys))
        if fixed:
            info = TableInfo(
                schema,
                name,
                tuple(
                    Column(c.name, fixed[c.name], c.type_id, c.nullable, c.is_key) if c.name in fixed else c
                    for c in info.columns
                ),
            )
        info = self._interned.setdefault(info, info)  # one TableInfo per table version, across DDL and reconnects
        label = f"{schema}.{name}"
        plan = TablePlan(info, RowPlan(names, decoders, json_column_indexes([c.type for c in tm.columns])), label, keys)
        plan.fused = self._fused_plan(tm, info, fixed)
        old = self._by_label.get(label)
        if old is not None:
            plan.counts = old.counts  # a new version of the same table: keep the metric counters together
        self._by_label[label] = plan
        self.infos[(schema, name)] = info
        return plan

    def _fused_plan(self, tm: tablemap.TableMap, info: TableInfo, fixed: dict[str, str]) -> Any:
        """The version's compiled renderer when both the mapping and the column types allow it (fused.py)."""
        if self._fuse is None:
            return None
        kinds = [
            None if c.name in fixed else fused.column_kind(c, self.charsets, self._no_hex_prefix, self._invalid_dates)
            for c in tm.columns
        ]
        if None in kinds:
            return None  # the mapping is not asked about a table the compiled code cannot render anyway
        return fused.image_plan(kinds, self._fuse(info))

    def _fixed_binary_types(self, tm: tablemap.TableMap, names: list[str], at: str) -> dict[str, str]:
        """MariaDB's UUID/INET4/INET6 columns of the table (the table map shows them as BINARY(16)/BINARY(4))."""
        candidates = [
            c
            for c in tm.columns
            if c.type == rows.STRING
            and c.max_length in (4, 16)
            and c.collation is not None
            and self.charsets.name(c.collation) == "binary"
        ]
        if not self._mariadb or not candidates or self.fixed_binary is None:
            return {}
        found = self.fixed_binary(tm.schema, tm.table, names)
        if found is None:
            self._warn_undescribed(tm, names, [c.name for c in candidates], at)
            return {}
        return {
            c.name: found[c.name]
            for c in candidates
            if c.name in found and FIXED_BINARY_LENGTH[found[c.name]] == c.max_length
        }

    def _warn_undescribed(self, tm: tablemap.TableMap, names: list[str], columns: list[str], at: str) -> None:
        key = (tm.schema, tm.table, tuple(names))
        if key in self._warned:
            return
        self._warned.add(key)
        log.warning(
            "the catalogue does not describe this version of the table (dropped, renamed or altered "
            "since, or not visible to the user): its BINARY(16)/BINARY(4) columns are sent as binary, "
            "even if they were UUID/INET6/INET4 when written",
            table=f"{tm.schema}.{tm.table}",
            columns=columns,
            position=at,
        )
