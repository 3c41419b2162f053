"""Differential golden test of the mapper: a corpus of mapping rule sets x table shapes x endpoint settings x
changes, whose records (exact bytes, partition keys, barrier flags) and per-table rule summaries (what
``cdcstream check`` prints) were recorded from the code as it was, and must stay byte for byte the same.

It is the safety net for reshaping the mapping code (rules -> per-table plan -> records): any change in what a
rule does to a record, however small, fails here with the case that shows it. The corpus covers every rule kind
and transformation action the rules support (selection with source filters of every operator, renames of
schema/table/column by every name action, include/remove-column by name and by data type, add-column with
expressions and casts, change-data-type, define-primary-key, add-before-image-columns, object mappings to
record and to document with every partition-key type), over a keyed table, a composite-key mixed-case table and
a table without a key, through insert/update/delete/load/truncate/drop and the schema-change control records,
and the mapping errors a table's rules can raise.

The fixture holds a SHA-256 digest of each case's output (the outputs themselves are 1.6 MB of JSON); a failing
case prints what the code makes of it now. To see what changed, print the case at both commits and compare::

    .venv/bin/python -m tests.unit.test_mapping_differential --show default/compact/items

When a change of output is intended, record the digests again (``tests/unit/golden/mapping_differential.json``)::

    .venv/bin/python -m tests.unit.test_mapping_differential --update
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdcstream.changes import ChangeEvent, Column, Op, SchemaChange, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.errors import CdcstreamError
from cdcstream.mapping import envelope
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.mapping.rules import MappingRules

FIXTURE = Path(__file__).parent / "golden" / "mapping_differential.json"
STAMP = "2026-12-07T10:00:00.000000Z"

# --- table shapes ---------------------------------------------------------------------------------------------

ITEMS = TableInfo(
    "public",
    "items",
    (
        Column("id", "int8", 20, False, True),
        Column("name", "text", 25),
        Column("qty", "int4", 23),
        Column("price", "numeric", 1700),
        Column("created", "timestamptz", 1184),
        Column("note", "varchar", 1043),
        Column("flag", "bool", 16),
        Column("doc", "jsonb", 3802),
    ),
)
LINES = TableInfo(
    "sales",
    "OrderLines",
    (
        Column("order_id", "int4", 23, False, True),
        Column("line", "int4", 23, False, True),
        Column("Sku", "varchar", 1043),
        Column("Amount", "numeric", 1700),
        Column("LastName", "text", 25),
        Column("shipped", "date", 1082),
    ),
)
LOG = TableInfo(
    "audit",
    "log",
    (Column("msg", "text", 25), Column("level", "int2", 21), Column("at", "timestamp", 1114)),
)
TABLES = (ITEMS, LINES, LOG)

ROWS: dict[str, list[dict[str, Any]]] = {
    "items": [
        {
            "id": 1,
            "name": "apple",
            "qty": 5,
            "price": "1.50",
            "created": "2026-11-27T12:00:00.500000Z",
            "note": "",
            "flag": True,
            "doc": {"a": [1, 2], "b": None},
        },
        {
            "id": 2,
            "name": None,
            "qty": -3,
            "price": "1000000.001",
            "created": "2026-01-01T00:00:00Z",
            "note": "x",
            "flag": False,
            "doc": None,
        },
        {
            "id": 30,
            "name": "zebra ü",
            "qty": None,
            "price": None,
            "created": None,
            "note": None,
            "flag": None,
            "doc": [1, "two"],
        },
    ],
    "OrderLines": [
        {"order_id": 7, "line": 1, "Sku": "AB-1", "Amount": "19.99", "LastName": "Smith", "shipped": "2026-11-30"},
        {"order_id": 7, "line": 2, "Sku": "", "Amount": "0", "LastName": None, "shipped": None},
        {"order_id": 8, "line": 1, "Sku": "ZZ", "Amount": "-5.5", "LastName": "O'Neil", "shipped": "2025-02-28"},
    ],
    "log": [
        {"msg": "started", "level": 1, "at": "2026-11-27T12:00:00"},
        {"msg": None, "level": 5, "at": "2026-11-28T00:00:01"},
        {"msg": "", "level": None, "at": None},
    ],
}


def _events(info: TableInfo) -> list[ChangeEvent]:
    """Every kind of change of one table, two transactions, in commit order."""
    rows = ROWS[info.table]
    keys = info.key_columns
    out: list[ChangeEvent] = []

    def ev(
        op: Op,
        after: dict[str, Any] | None,
        before: dict[str, Any] | None,
        txn: int,
        unchanged: tuple[str, ...] = (),
        change: SchemaChange | None = None,
        table: TableInfo = info,
    ) -> None:
        n = len(out) + 1
        out.append(
            ChangeEvent(
                op,
                table,
                after,
                before,
                txn,
                f"2026-11-27T12:00:{n:02d}.120000Z",
                1_796_000_000.0 + n,
                f"00000000/016B3F28.{n:010d}",
                n,
                unchanged,
                change,
            )
        )

    for row in rows:
        ev(Op.LOAD, dict(row), None, 0)
    for row in rows:
        ev(Op.INSERT, dict(row), None, 1140)
    first, second, third = rows
    changed = {**first, **{k: second[k] for k in list(second)[-2:]}}
    ev(Op.UPDATE, changed, dict(first), 1140)  # REPLICA IDENTITY FULL: the whole old row
    key_before = {k: first[k] for k in keys} if keys else None
    ev(Op.UPDATE, dict(second), key_before, 1141)  # key-only before (a key change), or none
    toast = {k: v for k, v in third.items() if k != list(third)[1]}
    ev(Op.UPDATE, toast, None, 1141, unchanged=(list(third)[1],))  # an unchanged TOASTed value
    ev(Op.DELETE, None, {k: second[k] for k in keys} if keys else dict(second), 1141)  # key only
    ev(Op.DELETE, None, dict(third), 1141)  # REPLICA IDENTITY FULL
    ev(Op.TRUNCATE, None, None, 1142)
    first_col, last_col = info.columns[0].name, info.columns[-1].name
    fewer = TableInfo(info.schema, info.table, info.columns[:-1])
    renamed_col = TableInfo(
        info.schema, info.table, (*info.columns[:-1], Column("renamed", info.columns[-1].type_name, 25))
    )
    retyped = TableInfo(info.schema, info.table, (Column(first_col, "text", 25), *info.columns[1:]))
    ev(Op.ADD_COLUMN, None, None, 1143, change=SchemaChange(fewer, column=last_col))
    ev(Op.DROP_COLUMN, None, None, 1143, change=SchemaChange(info, old_column=last_col), table=fewer)
    ev(
        Op.RENAME_COLUMN,
        None,
        None,
        1143,
        change=SchemaChange(info, column="renamed", old_column=last_col),
        table=renamed_col,
    )
    ev(
        Op.COLUMN_TYPE_CHANGE,
        None,
        None,
        1143,
        change=SchemaChange(info, column=first_col, old_column=first_col),
        table=retyped,
    )
    moved = TableInfo(info.schema, info.table + "_old", info.columns)
    ev(Op.RENAME_TABLE, None, None, 1144, change=SchemaChange(moved))
    ev(Op.INSERT, dict(first), None, 1144)  # after the rename: the table's new (current) name
    ev(Op.DROP_TABLE, None, None, 1145)
    return out


# --- endpoint settings ----------------------------------------------------------------------------------------

TARGETS: dict[str, dict[str, Any]] = {
    "default": {},  # message_format "json" (indented), NULLs dropped, seed control names
    "detailed": {
        "message_format": "json-unformatted",
        "include_null_and_empty": True,
        "include_transaction_details": True,
        "include_partition_value": True,
        "partition_include_schema_table": True,
        "include_control_details": True,
        "include_table_alter_operations": True,
        "control_operation_names": "dms",
    },
    "before-image": {
        "message_format": "json-unformatted",
        "include_table_alter_operations": True,
        "before_image": {"enabled": True, "field_name": "BI", "column_filter": "all"},
    },
    "before-image-pk": {
        "message_format": "json-unformatted",
        "include_control_details": True,
        "before_image": {"enabled": True, "column_filter": "pk-only"},
    },
    "before-image-non-lob": {
        "message_format": "json-unformatted",
        "before_image": {"enabled": True, "column_filter": "non-lob"},
    },
}

# --- mapping rule sets ----------------------------------------------------------------------------------------


def _sel(rid: int, schema: str = "%", table: str = "%", action: str = "include", /, **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "rule-type": "selection",
        "rule-id": str(rid),
        "rule-name": f"s{rid}",
        "object-locator": {"schema-name": schema, "table-name": table},
        "rule-action": action,
    }
    rule.update(extra)
    return rule


def _tr(rid: int, action: str, target: str, locator: dict[str, str], /, **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "rule-type": "transformation",
        "rule-id": str(rid),
        "rule-name": f"t{rid}",
        "rule-action": action,
        "rule-target": target,
        "object-locator": locator,
    }
    rule.update(extra)
    return rule


def _om(rid: int, schema: str, table: str, action: str = "map-record-to-record", /, **params: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "rule-type": "object-mapping",
        "rule-id": str(rid),
        "rule-name": f"o{rid}",
        "rule-action": action,
        "object-locator": {"schema-name": schema, "table-name": table},
    }
    target = params.pop("target_table_name", None)
    if target is not None:
        rule["target-table-name"] = target
    if params:
        rule["mapping-parameters"] = params
    return rule


def _flt(column: str, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {"filter-type": "source", "column-name": column, "filter-conditions": list(conditions)}


def _cond(op: str, value: Any = None, start: Any = None, end: Any = None) -> dict[str, Any]:
    c: dict[str, Any] = {"filter-operator": op}
    if value is not None:
        c["value"] = value
    if start is not None:
        c["start-value"], c["end-value"] = start, end
    return c


ALL = {"schema-name": "%", "table-name": "%"}
COLS = {"schema-name": "%", "table-name": "%", "column-name": "%"}

RULE_SETS: dict[str, list[dict[str, Any]] | None] = {
    "none": None,  # no mapping file: every table, schema-table keys
    "select-exclude": [
        _sel(1),
        _sel(2, "audit", "%", "exclude"),
        _sel(3, "sales", "OrderLines", "explicit"),
        _sel(4, "public", "it_ms"),
        _sel(5, "public", "[a-h]%", "exclude"),
        _sel(6, "%", "%", **{"object-locator": {"schema-name": "%", "table-name": "%", "table-type": "view"}}),
    ],
    "filters-numeric": [
        _sel(
            1,
            "public",
            "items",
            filters=[
                _flt("qty", _cond("gte", 0), _cond("null")),
                _flt("price", _cond("between", start="1", end="2000000")),
                _flt("id", _cond("noteq", "2")),
            ],
        ),
        _sel(2, "sales", "%", filters=[_flt("amount", _cond("notbetween", start=-1, end=1))]),
        _sel(3, "audit", "log", filters=[_flt("level", _cond("lte", 1), _cond("ste", "2"), _cond("eq", 5))]),
    ],
    "filters-text-time": [
        _sel(1, "public", "items", filters=[_flt("name", _cond("gte", "b"), _cond("eq", "apple"))]),
        _sel(
            2,
            "sales",
            "OrderLines",
            filters=[_flt("shipped", _cond("between", start="2026-01-01", end="2026-12-31"))],
        ),
        _sel(3, "audit", "log", filters=[_flt("at", _cond("lte", "2026-11-27 12:00:00"))]),
        _sel(4, "audit", "log", filters=[_flt("msg", _cond("notnull"))]),
    ],
    "names-rename": [
        _sel(1),
        _tr(10, "rename", "schema", {"schema-name": "public"}, value="pub"),
        _tr(11, "rename", "table", {"schema-name": "public", "table-name": "items"}, value="Items2"),
        _tr(12, "rename", "column", {**ALL, "column-name": "name"}, value="title"),
        _tr(13, "rename", "column", {**ALL, "column-name": "LastName"}, value="surname"),
        _tr(14, "convert-lowercase", "table", {"schema-name": "sales", "table-name": "%"}),
        _tr(15, "convert-uppercase", "schema", {"schema-name": "s%"}),
        _tr(16, "convert-uppercase", "column", {"schema-name": "audit", "table-name": "log", "column-name": "%"}),
        _tr(17, "rename", "table", {"schema-name": "public", "table-name": "items"}, value="never"),  # 11 wins
    ],
    "names-affixes": [
        _sel(1),
        _tr(20, "add-prefix", "schema", {"schema-name": "%"}, value="src_"),
        _tr(21, "add-suffix", "table", {"schema-name": "public", "table-name": "%"}, value="_v1"),
        _tr(22, "remove-prefix", "table", {"schema-name": "sales", "table-name": "Order%"}, value="Order"),
        _tr(
            23,
            "replace-suffix",
            "table",
            {"schema-name": "audit", "table-name": "%"},
            value="book",
            **{"old-value": "log"},
        ),
        _tr(24, "add-prefix", "column", {**ALL, "column-name": "n%"}, value="c_"),
        _tr(25, "remove-suffix", "column", {**ALL, "column-name": "%_id"}, value="_id"),
        _tr(26, "replace-prefix", "column", {**ALL, "column-name": "Last%"}, value="First", **{"old-value": "Last"}),
        _tr(27, "add-suffix", "column", {**ALL, "column-name": "%"}, value="_x"),
        _tr(28, "convert-lowercase", "column", {**ALL, "column-name": "S%"}),
        _tr(29, "remove-prefix", "column", {**ALL, "column-name": "%"}, value="zz"),  # matches, changes nothing
    ],
    "columns-select": [
        _sel(1),
        _tr(30, "remove-column", "column", {"schema-name": "public", "table-name": "items", "column-name": "doc"}),
        _tr(31, "remove-column", "column", {"schema-name": "%", "table-name": "%", "data-type": "numeric"}),
        _tr(32, "include-column", "column", {"schema-name": "sales", "table-name": "%", "column-name": "Sku"}),
        _tr(33, "include-column", "column", {"schema-name": "sales", "table-name": "%", "column-name": "order_id"}),
        _tr(34, "include-column", "column", {"schema-name": "sales", "table-name": "%", "column-name": "line"}),
        _tr(35, "remove-column", "column", {"schema-name": "audit", "table-name": "log", "column-name": "l%"}),
        _tr(36, "include-column", "column", {"schema-name": "audit", "table-name": "log", "column-name": "level"}),
    ],
    "add-column-expressions": [
        _sel(1),
        _tr(
            40,
            "add-column",
            "column",
            ALL,
            value="source",
            expression="$AR_M_SOURCE_SCHEMA || '.' || $AR_M_SOURCE_TABLE_NAME",
        ),
        _tr(41, "add-column", "column", ALL, value="op", expression="operation_indicator('D', 'U', 'I')"),
        _tr(42, "add-column", "column", ALL, value="hdr", expression="$AR_H_OPERATION || ':' || $AR_H_TRANSACTION_ID"),
        _tr(
            43,
            "add-column",
            "column",
            {"schema-name": "public", "table-name": "items"},
            value="total",
            expression="$qty * $price",
            **{"data-type": {"type": "numeric", "precision": 12, "scale": 2}},
        ),
        _tr(
            44,
            "add-column",
            "column",
            {"schema-name": "public", "table-name": "items"},
            value="label",
            expression="CASE WHEN $qty IS NULL THEN 'none' WHEN $qty < 0 THEN 'neg' "
            "ELSE upper(substr($name, 1, 3)) END",
            **{"data-type": {"type": "string", "length": 20}},
        ),
        _tr(
            45,
            "add-column",
            "column",
            {"schema-name": "sales", "table-name": "%"},
            value="who",
            expression="coalesce($lastname, 'n/a') || '#' || length($Sku) || round($Amount, 1)",
        ),
        _tr(46, "add-column", "column", {"schema-name": "audit", "table-name": "%"}, value="empty"),
        _tr(
            47,
            "add-column",
            "column",
            {"schema-name": "audit", "table-name": "%"},
            value="lvl",
            expression="ifnull($level, -1) + 0.5",
            **{"data-type": {"type": "int4"}},
        ),
        _tr(
            48,
            "add-column",
            "column",
            ALL,
            value="pos",
            expression="$AR_H_STREAM_POSITION",
            **{"data-type": {"type": "wstring"}},
        ),
        _tr(49, "add-column", "column", ALL, value="at_commit", expression="$AR_H_COMMIT_TIMESTAMP"),
    ],
    "change-data-type": [
        _sel(1),
        _tr(50, "change-data-type", "column", {**ALL, "column-name": "qty"}, **{"data-type": {"type": "string"}}),
        _tr(51, "change-data-type", "column", {**ALL, "column-name": "price"}, **{"data-type": {"type": "real8"}}),
        _tr(52, "change-data-type", "column", {**ALL, "column-name": "id"}, **{"data-type": {"type": "string"}}),
        _tr(
            53,
            "change-data-type",
            "column",
            {"schema-name": "%", "table-name": "%", "data-type": "int4"},
            **{"data-type": {"type": "int8"}},
        ),
        _tr(54, "change-data-type", "column", {**ALL, "column-name": "flag"}, **{"data-type": {"type": "int1"}}),
        _tr(
            55,
            "change-data-type",
            "column",
            {**ALL, "column-name": "Amount"},
            **{"data-type": {"type": "numeric", "precision": 10, "scale": 1}},
        ),
        _tr(56, "change-data-type", "column", {**ALL, "column-name": "level"}, **{"data-type": {"type": "boolean"}}),
        _tr(57, "change-data-type", "column", {**ALL, "column-name": "qty"}, **{"data-type": {"type": "int2"}}),
    ],
    "keys-define-primary-key": [
        _sel(1),
        _tr(
            60,
            "define-primary-key",
            "table",
            {"schema-name": "audit", "table-name": "log"},
            **{"primary-key-def": {"name": "pk", "columns": ["MSG", "level"]}},
        ),
        _tr(
            61,
            "define-primary-key",
            "table",
            {"schema-name": "public", "table-name": "items"},
            **{"primary-key-def": {"name": "pk", "origin": "unique-index", "columns": ["name"]}},
        ),
        _om(1, "%", "%", **{"partition-key-type": "primary-key"}),
    ],
    "before-image-columns": [
        _sel(1),
        _tr(
            70,
            "add-before-image-columns",
            "column",
            {"schema-name": "public", "table-name": "%"},
            **{"before-image-def": {"column-prefix": "old_", "column-suffix": "", "column-filter": "all"}},
        ),
        _tr(71, "add-before-image-columns", "column", {"schema-name": "sales", "table-name": "%"}),
        _tr(
            72,
            "add-before-image-columns",
            "column",
            {"schema-name": "audit", "table-name": "%"},
            **{"before-image-def": {"column-prefix": "", "column-suffix": "_was", "column-filter": "non-lob"}},
        ),
        _tr(73, "rename", "column", {**ALL, "column-name": "qty"}, value="quantity"),
    ],
    "object-record": [
        _sel(1),
        _tr(80, "rename", "column", {**ALL, "column-name": "note"}, value="remark"),
        _om(
            2,
            "public",
            "items",
            exclude_columns=["FLAG", "remark"],
            target_table_name="goods",
            **{
                "partition-key-type": "attribute-name",
                "partition-key-name": "key",
                "attribute-mappings": [
                    {
                        "target-attribute-name": "key",
                        "attribute-type": "scalar",
                        "attribute-sub-type": "string",
                        "value": "${id}-${NAME}",
                    },
                    {"target-attribute-name": "name_only", "attribute-type": "scalar", "value": "${name}"},
                    {"attribute-name": "fixed", "value": "const"},
                    {
                        "target-attribute-name": "nested",
                        "attribute-type": "document",
                        "attribute-sub-type": "json",
                        "value": {"q": "${qty}", "both": "${qty}/${price}", "list": ["${flag}", 3, None, "${doc}"]},
                    },
                ],
            },
        ),
        _om(3, "sales", "%", **{"partition-key-type": "attribute-name", "partition-key-name": "sku"}),
        _om(
            4,
            "audit",
            "log",
            **{"partition-key-type": "attribute-name", "partition-key-name": "level", "exclude-columns": ["level"]},
        ),
    ],
    "object-document": [
        _sel(1),
        _om(
            2,
            "public",
            "items",
            "map-record-to-document",
            **{
                "partition-key-type": "attribute-name",
                "partition-key-name": "name",
                "exclude-columns": ["doc"],
                "attribute-mappings": [{"target-attribute-name": "ref", "value": {"id": "${id}", "k": "v"}}],
            },
        ),
        _om(3, "sales", "%", "map-record-to-document", **{"partition-key-type": "transaction-id"}),
        _om(4, "audit", "%", "map-record-to-document", **{"partition-key": {"value": "fixed-key"}}),
    ],
    "object-keys": [
        _sel(1),
        _om(2, "public", "%", **{"partition-key-type": "schema-table"}),
        _om(3, "sales", "%", **{"partition-key-type": "constant", "partition-key": {"value": "k"}}),
        _om(4, "audit", "%", **{"partition-key-type": "primary-key"}),  # no key: an error at the table's plan
        _om(5, "%", "%", **{"partition-key-type": "transaction-id"}),  # 2-4 win
    ],
    "everything": [
        _sel(1, "public", "%", filters=[_flt("qty", _cond("gte", "-10"))]),
        _sel(2, "sales", "%"),
        _sel(3, "audit", "%"),
        _tr(90, "rename", "schema", {"schema-name": "sales"}, value="s"),
        _tr(91, "convert-uppercase", "table", {"schema-name": "%", "table-name": "%"}),
        _tr(92, "rename", "column", {**ALL, "column-name": "id"}, value="ID"),
        _tr(93, "remove-column", "column", {**ALL, "column-name": "doc"}),
        _tr(94, "change-data-type", "column", {**ALL, "column-name": "price"}, **{"data-type": {"type": "string"}}),
        _tr(
            95, "add-column", "column", {"schema-name": "public", "table-name": "%"}, value="n2", expression="$qty * 2"
        ),
        _tr(96, "add-before-image-columns", "column", {"schema-name": "public", "table-name": "%"}),
        _tr(
            97,
            "define-primary-key",
            "table",
            {"schema-name": "audit", "table-name": "log"},
            **{"primary-key-def": {"name": "pk", "columns": ["at"]}},
        ),
        _om(4, "public", "%", **{"partition-key-type": "primary-key"}),
        _om(
            5,
            "sales",
            "%",
            **{"partition-key-type": "attribute-name", "partition-key-name": "line", "exclude-columns": ["amount"]},
        ),
    ],
    "errors": [
        _sel(1, "public", "items", filters=[_flt("missing", _cond("eq", "1"))]),
        _sel(2, "sales", "%"),
        _sel(3, "audit", "%"),
        _tr(100, "rename", "column", {"schema-name": "sales", "table-name": "%", "column-name": "line"}, value="Sku"),
        _tr(101, "add-column", "column", {"schema-name": "audit", "table-name": "%"}, value="msg"),
    ],
    "errors-keys": [
        _sel(1),
        _om(2, "public", "items", **{"partition-key-type": "attribute-name", "partition-key-name": "nope"}),
        _om(3, "sales", "%", attribute_mappings=[{"target-attribute-name": "a", "value": "${nope}"}]),
        _tr(
            111,
            "define-primary-key",
            "table",
            {"schema-name": "audit", "table-name": "log"},
            **{"primary-key-def": {"name": "pk", "columns": ["nope"]}},
        ),
    ],
    "errors-values": [
        _sel(1),
        _tr(120, "change-data-type", "column", {**ALL, "column-name": "name"}, **{"data-type": {"type": "int4"}}),
        _tr(
            121,
            "add-column",
            "column",
            {"schema-name": "sales", "table-name": "%"},
            value="bad",
            expression="$Amount / 0 + abs($line) * 1e308 * 1e308",
        ),
        _tr(122, "change-data-type", "column", {**ALL, "column-name": "msg"}, **{"data-type": {"type": "date"}}),
    ],
    "errors-before-image": [
        _sel(1),
        _tr(130, "add-column", "column", {"schema-name": "audit", "table-name": "%"}, value="BI_at"),
        _tr(
            131,
            "add-before-image-columns",
            "column",
            {"schema-name": "audit", "table-name": "%"},
            **{"before-image-def": {"column-filter": "all"}},
        ),
        _tr(
            132,
            "add-before-image-columns",
            "column",
            {"schema-name": "sales", "table-name": "%", "column-name": "L%"},
            **{"before-image-def": {"column-prefix": "", "column-suffix": "_b", "column-filter": "all"}},
        ),
        _tr(133, "rename", "column", {"schema-name": "public", "table-name": "%", "column-name": "%e"}, value="same"),
    ],
}

# Transformation rules the parser must refuse, each with its own message (the rule's validation, action by action).
_LOC = {"schema-name": "s", "table-name": "t"}
_CLOC = {**_LOC, "column-name": "c"}
BAD_TRANSFORMATIONS: list[dict[str, Any]] = [
    _tr(1, "data-masking-hash-mask", "column", _CLOC),
    _tr(1, "explode", "column", _CLOC),
    _tr(1, "remove-column", "column", _CLOC, value="x"),
    _tr(1, "rename", "column", _CLOC, **{"old-value": "x"}),
    _tr(1, "rename", "column", _CLOC, expression="1"),
    _tr(1, "convert-lowercase", "column", _CLOC, **{"data-type": {"type": "string"}}),
    _tr(1, "rename", "table", _LOC, **{"primary-key-def": {"columns": ["a"]}}),
    _tr(1, "rename", "table", _LOC, **{"before-image-def": {}}),
    _tr(1, "rename", "table-tablespace", _LOC, value="x"),
    _tr(1, "rename", "index", _LOC, value="x"),
    _tr(1, "remove-column", "table", _LOC),
    _tr(1, "define-primary-key", "column", _CLOC, **{"primary-key-def": {"columns": ["a"]}}),
    _tr(1, "add-column", "table", _LOC, value="x"),
    _tr(1, "remove-column", "column", _LOC),
    _tr(1, "convert-uppercase", "column", _LOC),
    _tr(1, "change-data-type", "column", _LOC, **{"data-type": {"type": "string"}}),
    _tr(
        1,
        "define-primary-key",
        "table",
        {"schema-name": "s", "table-name": "t%"},
        **{"primary-key-def": {"columns": ["a"]}},
    ),
    _tr(1, "rename", "table", _LOC),
    _tr(1, "rename", "table", _LOC, value=""),
    _tr(1, "add-prefix", "table", _LOC, value=3),
    _tr(1, "replace-prefix", "table", _LOC, value="a"),
    _tr(1, "replace-suffix", "table", _LOC, value="a", **{"old-value": 1}),
    _tr(1, "add-column", "column", _LOC),
    _tr(1, "add-column", "column", _LOC, value="x", expression="$a +"),
    _tr(1, "add-column", "column", _LOC, value="x", expression=""),
    _tr(1, "add-column", "column", _LOC, value="x", **{"data-type": "string"}),
    _tr(1, "add-column", "column", _LOC, value="x", **{"data-type": {"type": "list"}}),
    _tr(1, "add-column", "column", _LOC, value="x", **{"data-type": {"type": "varchar"}}),
    _tr(1, "add-column", "column", _LOC, value="x", **{"data-type": {"type": "string", "length": -1}}),
    _tr(1, "add-column", "column", _LOC, value="x", **{"data-type": {"type": "string", "width": 1}}),
    _tr(1, "add-column", "column", _LOC, value="x", **{"data-type": {"type": "numeric", "scale": "a"}}),
    _tr(1, "change-data-type", "column", _CLOC),
    _tr(1, "define-primary-key", "table", _LOC),
    _tr(1, "define-primary-key", "table", _LOC, **{"primary-key-def": {"columns": []}}),
    _tr(1, "define-primary-key", "table", _LOC, **{"primary-key-def": {"columns": ["a"], "origin": "x"}}),
    _tr(1, "define-primary-key", "table", _LOC, **{"primary-key-def": {"columns": ["a"], "extra": 1}}),
    _tr(1, "add-before-image-columns", "column", _LOC, **{"before-image-def": []}),
    _tr(1, "add-before-image-columns", "column", _LOC, **{"before-image-def": {"column-prefix": 1}}),
    _tr(1, "add-before-image-columns", "column", _LOC, **{"before-image-def": {"column-filter": "some"}}),
    _tr(1, "add-before-image-columns", "column", _LOC, **{"before-image-def": {"x": 1}}),
    _tr(1, "rename", "column", {"schema-name": "s", "table-name": "t", "column-name": "[a"}, value="x"),
    _tr(1, "rename", "schema", {"table-name": "t"}, value="x"),
    _tr(1, "rename", "table", {"schema-name": "s"}, value="x"),
    _tr(1, "rename", "table", {**_LOC, "column-name": "c"}, value="x"),
    _tr(1, "rename", "table", _LOC, value="x", unknown=1),
    {**_tr(1, "rename", "table", _LOC, value="x"), "object-locator": "s.t"},
]
# And ones it takes: null parameters (as the DMS console exports them) and defaults.
GOOD_TRANSFORMATIONS: list[dict[str, Any]] = [
    _tr(1, "rename", "table", _LOC, value="x", **{"old-value": None, "expression": None}),
    _tr(1, "rename", "schema", {"schema-name": "s%"}, value="x"),
    _tr(1, "replace-prefix", "column", {**_LOC, "data-type": "int4"}, value="a", **{"old-value": "b"}),
    _tr(1, "add-column", "column", _LOC, value="x"),
    _tr(
        1,
        "add-column",
        "column",
        {**_LOC, "column-name": "c%"},
        value="x",
        expression="upper($c)",
        **{"data-type": {"type": "numeric", "precision": 5, "scale": 2, "length": 9}},
    ),
    _tr(1, "change-data-type", "column", {**_LOC, "data-type": "text"}, **{"data-type": {"type": "STRING"}}),
    _tr(1, "define-primary-key", "table", _LOC, **{"primary-key-def": {"name": "n", "columns": ["a", "b"]}}),
    _tr(1, "add-before-image-columns", "column", _LOC),
    _tr(
        1,
        "add-before-image-columns",
        "column",
        _CLOC,
        **{"before-image-def": {"column-prefix": "", "column-suffix": "_o", "column-filter": "non-lob"}},
    ),
    _tr(1, "include-column", "column", {**_LOC, "data-type": "int4"}),
    _tr(1, "remove-suffix", "schema", {"schema-name": "s"}, value="_x"),
]


def _fix(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The helpers above spell mapping parameters as Python names; the file's keys have dashes."""
    out = []
    for rule in rules:
        rule = dict(rule)
        params = rule.get("mapping-parameters")
        if params is not None:
            rule["mapping-parameters"] = {k.replace("_", "-"): v for k, v in params.items()}
        out.append(rule)
    return out


# --- running the corpus ---------------------------------------------------------------------------------------


# The indented format and the endpoint before image are one code path each whatever the rules: a few rule sets
# suffice for them (and keep the fixture file to a reviewable size).
_FEW_RULE_SETS = {
    "default": ("none", "names-rename", "object-record", "object-document", "everything", "errors"),
    "before-image-pk": ("none", "everything", "before-image-columns", "object-document"),
    "before-image-non-lob": ("none", "everything", "before-image-columns", "object-document"),
}


def _cases() -> Iterator[tuple[str, str, str]]:
    for rules_name in RULE_SETS:
        for target_name in TARGETS:
            if target_name in _FEW_RULE_SETS and rules_name not in _FEW_RULE_SETS[target_name]:
                continue
            for info in TABLES:
                yield rules_name, target_name, info.table


def run_case(rules_name: str, target_name: str, table: str) -> dict[str, Any]:
    """What the mapper produces for one case, as JSON-ready data: the rule summary and every record (or the error
    of the first event that failed, with the records before it)."""
    raw = RULE_SETS[rules_name]
    try:
        rules = MappingRules() if raw is None else parse_rules({"rules": _fix(raw)}, f"{rules_name}.json")
    except CdcstreamError as exc:
        return {"rules-error": str(exc)}
    info = next(t for t in TABLES if t.table == table)
    try:
        mapper = Mapper(rules, TargetConfig(stream_name="s", **TARGETS[target_name]), "task1")
    except CdcstreamError as exc:
        return {"mapper-error": str(exc)}
    result: dict[str, Any] = {}
    try:
        plan = mapper.plan(info)
        result["applied"] = None if plan is None else list(plan.applied)
    except CdcstreamError as exc:
        result["plan-error"] = str(exc)
    records: list[dict[str, Any]] = []
    result["records"] = records
    for ev in _events(info):
        try:
            out = mapper.map([ev])
        except CdcstreamError as exc:
            records.append({"event": ev.transaction_record_id, "error": str(exc)})
            continue
        for rec in out:
            entry: dict[str, Any] = {"event": ev.transaction_record_id, "key": rec.partition_key}
            if rec.barrier:
                entry["barrier"] = True
            entry["label"] = rec.label
            entry["data"] = rec.data.decode()
            records.append(entry)
    if target_name != "before-image":
        return result
    # The whole batch in one call too: a batch shares plans and load-row metadata across events (compact format
    # without partition values: the load rows' spliced metadata).
    mapper = Mapper(rules, TargetConfig(stream_name="s", **TARGETS[target_name]), "task1")
    try:
        batch = mapper.map([ev for ev in _events(info) if ev.op in (Op.LOAD, Op.INSERT, Op.UPDATE, Op.DELETE)])
        result["batch"] = [[rec.partition_key, rec.data.decode()] for rec in batch]
    except CdcstreamError as exc:
        result["batch-error"] = str(exc)
    return result


def parse_case(name: str) -> str:
    """What the parser makes of a rule set, or its error: the parsed rules' repr (every field of every rule)."""
    if name.startswith("bad-transformation-"):
        raw = [_sel(1), BAD_TRANSFORMATIONS[int(name.rsplit("-", 1)[1])]]
    elif name.startswith("good-transformation-"):
        raw = [_sel(1), GOOD_TRANSFORMATIONS[int(name.rsplit("-", 1)[1])]]
    else:
        found = RULE_SETS[name]
        assert found is not None
        raw = found
    try:
        rules = parse_rules({"rules": _fix(raw)}, f"{name}.json")
    except CdcstreamError as exc:
        return f"error: {exc}"
    return _describe((rules.selections, rules.transformations, rules.object_mappings, rules.table_settings))


def _describe(value: Any) -> str:
    """repr, with sets in sorted order (a frozenset's repr follows string hashing, which differs per process)."""
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(map(repr, value))) + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_describe(v) for v in value) + ")"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = (f"{f.name}={_describe(getattr(value, f.name))}" for f in dataclasses.fields(value) if f.repr)
        return f"{type(value).__name__}({', '.join(fields)})"
    return repr(value)


def _parse_cases() -> list[str]:
    return [
        *(name for name, raw in RULE_SETS.items() if raw is not None),
        *(f"bad-transformation-{i}" for i in range(len(BAD_TRANSFORMATIONS))),
        *(f"good-transformation-{i}" for i in range(len(GOOD_TRANSFORMATIONS))),
    ]


def digest(output: object) -> str:
    """The SHA-256 of ``output`` as canonical JSON (sorted keys): what the fixture stores for a case."""
    return hashlib.sha256(orjson.dumps(output, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _stamped() -> Iterator[None]:
    saved = envelope.now_iso
    envelope.now_iso = lambda: STAMP
    try:
        yield
    finally:
        envelope.now_iso = saved


def record_all() -> dict[str, Any]:
    for _ in _stamped():
        return {
            "parsed": {name: digest(parse_case(name)) for name in _parse_cases()},
            "mapped": {"/".join(case): digest(run_case(*case)) for case in _cases()},
        }
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    if not FIXTURE.exists():
        pytest.fail(f"{FIXTURE} is missing: record it with `python -m tests.unit.test_mapping_differential --update`")
    data: dict[str, Any] = orjson.loads(FIXTURE.read_bytes())
    return data


def test_corpus_covers_every_case(recorded: dict[str, Any]) -> None:
    assert sorted(recorded["parsed"]) == sorted(_parse_cases())
    assert sorted(recorded["mapped"]) == sorted("/".join(c) for c in _cases())


@pytest.mark.parametrize("name", _parse_cases())
def test_parsing_unchanged(name: str, recorded: dict[str, Any]) -> None:
    got = parse_case(name)
    assert digest(got) == recorded["parsed"][name], f"{name}: the parsed rules differ from the recording; now:\n{got}"


@pytest.mark.parametrize("case", ["/".join(c) for c in _cases()])
def test_mapping_unchanged(case: str, recorded: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope, "now_iso", lambda: STAMP)
    got = run_case(*case.split("/"))
    now = orjson.dumps(got, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
    assert digest(got) == recorded["mapped"][case], f"{case}: the output differs from the recording; now:\n{now}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["--show"] and len(argv) == 2:
        for _ in _stamped():
            case = argv[1]
            output = parse_case(case) if case in _parse_cases() else run_case(*case.split("/"))
            print(orjson.dumps(output, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode())
        return 0
    if argv != ["--update"]:
        print(f"usage: python -m tests.unit.test_mapping_differential --update | --show CASE  (fixture: {FIXTURE})")
        return 2
    data = record_all()
    FIXTURE.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    print(f"{FIXTURE}: {len(data['parsed'])} parsed rule sets, {len(data['mapped'])} mapped cases")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
