"""What the mapping does to each selected table, before anything streams (``cdcstream check``).

Given the tables' columns (read from the source's catalog by the caller), every selected table's plan is compiled
exactly as the running daemon would, so the schema-dependent errors (a ``${column}`` or partition-key-name no
table has, a filter on a missing column, two tables written as one target, ...) surface here with their rule-id.
One synthetic row per table shows the record the daemon would write.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cdcstream.changes import ChangeEvent, Op, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.errors import CdcstreamError
from cdcstream.mapping.datatypes import dms_type_name
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.rules import MappingRules

_SAMPLES: dict[str, Any] = {
    "bool": True,
    "int2": 1,
    "int4": 42,
    "int8": 1234567890123,
    "oid": 1,
    "float4": 1.5,
    "float8": 2.25,
    "numeric": "12.50",
    "money": "12.50",
    "date": "2026-11-27",
    "time": "12:00:00",
    "timetz": "12:00:00+00",
    "timestamp": "2026-11-27T12:00:00.5",
    "timestamptz": "2026-11-27T12:00:00.5Z",
    "json": '{"k": 1}',
    "jsonb": '{"k": 1}',
    "bytea": "0x00ff",
    "uuid": "6f1c2a52-8f62-4c61-9d64-1f0b4e1d2c3a",
}


def sample_value(type_name: str, column: str) -> Any:
    """A plausible value of a source type (the column name for text-like types, so templates read well)."""
    return _SAMPLES.get(type_name.lower(), column)


def sample_event(info: TableInfo) -> ChangeEvent:
    row = {c.name: sample_value(c.type_name, c.name) for c in info.columns}
    return ChangeEvent(
        Op.INSERT, info, row, None, 1, "2026-11-27T12:00:00.000000Z", 0.0, "0000000000000000.0000000001", 1
    )


@dataclass
class TablePreview:
    """One selected table: the rules that apply, and one sample record (or the error compiling its plan)."""

    table: str
    rules: list[str] = field(default_factory=list)
    partition_key: str = ""
    record: str = ""
    error: str = ""


def preview(rules: MappingRules, target: TargetConfig, task_id: str, tables: list[TableInfo]) -> list[TablePreview]:
    """A preview of every selected table, in order; errors are per table (one bad table hides no other)."""
    out: list[TablePreview] = []
    # One-line records whatever message_format says: this is for reading in a terminal.
    mapper = Mapper(rules, target.model_copy(update={"message_format": "json-unformatted"}), task_id)
    for info in tables:
        if not rules.selects(info.schema, info.table):
            continue
        p = TablePreview(f"{info.schema}.{info.table}")
        try:
            plan = mapper.plan(info)
            assert plan is not None
            p.rules = list(plan.applied) or ["default mapping (no rule changes this table)"]
            records = mapper.map([sample_event(info)])
        except CdcstreamError as exc:
            p.error = str(exc)
            out.append(p)
            continue
        if records:
            p.partition_key = records[0].partition_key
            p.record = records[0].data.decode().rstrip("\n")
        else:
            p.record = "(the sample row does not pass the source filters)"
        out.append(p)
    return out


def unused_rules(rules: MappingRules, tables: list[TableInfo]) -> list[str]:
    """Rules that match nothing, usually a typo in a name: selection rules matching no table, transformation
    and object-mapping rules matching no selected table, column rules matching no column. Proportional to
    tables + rules (each table looks its rules up; no rule is tested against every table)."""
    matched: set[int] = set()  # id() of each rule that matched
    tables_of: dict[int, list[TableInfo]] = {}  # id() of a transformation -> the selected tables it matches
    for t in tables:
        matched.update(id(r) for r in rules.matching_selections(t.schema, t.table))
        if rules.selects(t.schema, t.table):
            matched.update(id(r) for r in rules.object_mappings_for(t.schema, t.table))
            for tr in rules.transformations_for(t.schema, t.table):
                tables_of.setdefault(id(tr), []).append(t)
    out = []
    for sel in rules.selections:
        if id(sel) not in matched and sel.table_type != "view":
            out.append(f"{sel.origin}: selection rule ({sel.action} {sel.schema}.{sel.table}) matches no table")
    for om in rules.object_mappings:
        if id(om) not in matched:
            out.append(f"{om.origin}: object-mapping for {om.schema}.{om.table} matches no selected table")
    for tr in rules.transformations:
        hit = tables_of.get(id(tr))
        if not hit:
            out.append(f"{tr.origin}: {tr.action} matches no selected table")
        elif (
            tr.target == "column"
            and tr.column is not None
            and tr.action != "add-column"
            and any(t.columns for t in hit)  # (columns unknown: MySQL tables are listed by name only)
            and not any(
                tr.matches_column(c.name, (c.type_name.lower(), dms_type_name(c.type_name).lower()))
                for t in hit
                for c in t.columns
            )
        ):
            out.append(f"{tr.origin}: {tr.action} matches no column named {tr.column!r} in the selected tables")
    return out
