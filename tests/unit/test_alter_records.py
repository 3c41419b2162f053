"""Alter control records (include_table_alter_operations): names as the mapping writes them, no servers."""

from __future__ import annotations

from typing import Any

import orjson

from cdcstream.changes import ChangeEvent, Column, Op, SchemaChange, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.mapping.rules import MappingRules

V1 = TableInfo("public", "items", (Column("id", "int8", 20, False, True), Column("name", "text", 25)))
V2 = TableInfo("public", "items", (*V1.columns, Column("qty", "int4", 23)))


def control(op: Op, table: TableInfo, change: SchemaChange) -> ChangeEvent:
    return ChangeEvent(op, table, None, None, 7, "2026-11-27T12:00:00.000000Z", 1.0, "0/1.0000000001", 1, (), change)


def mapper(rules: MappingRules | None = None, **target: Any) -> Mapper:
    settings: dict[str, Any] = {"include_table_alter_operations": True, **target}
    return Mapper(rules or MappingRules(), TargetConfig(stream_name="s", **settings), "task1")


def docs(m: Mapper, *events: ChangeEvent) -> list[dict[str, Any]]:
    return [orjson.loads(r.data) for r in m.map(list(events))]


def rule(rid: str, rule_type: str, action: str, table: str = "items", **more: Any) -> dict[str, Any]:
    """One mapping rule on public.<table>; ``more`` keys use underscores for dashes."""
    doc = {
        "rule-type": rule_type,
        "rule-id": rid,
        "rule-name": rid,
        "rule-action": action,
        "object-locator": {"schema-name": "public", "table-name": table},
    }
    doc.update({k.replace("_", "-"): v for k, v in more.items()})
    return doc


def rename_rule(rid: str, target: str, old: str, new: str, table: str = "items") -> dict[str, Any]:
    doc = rule(rid, "transformation", "rename", table, rule_target=target, value=new)
    if target == "column":
        doc["object-locator"]["column-name"] = old
    return doc


def rules(*extra: dict[str, Any]) -> MappingRules:
    return parse_rules({"rules": [rule("1", "selection", "include", "%"), *extra]}, "m.json")


def test_off_by_default_and_drop_table_always() -> None:
    m = Mapper(MappingRules(), TargetConfig(stream_name="s"), "task1")
    assert m.map([control(Op.ADD_COLUMN, V2, SchemaChange(V1, column="qty"))]) == []
    ev = control(Op.DROP_TABLE, V1, SchemaChange(V1))
    [rec] = m.map([ev])
    assert orjson.loads(rec.data)["metadata"]["operation"] == "DropTable"


def test_column_operations_name_the_columns_and_are_barriers_keyed_by_table() -> None:
    m = mapper()
    renamed = TableInfo("public", "items", (V1.columns[0], Column("title", "text", 25)))
    retyped = TableInfo("public", "items", (V1.columns[0], Column("name", "varchar", 1043)))
    events = [
        control(Op.ADD_COLUMN, V2, SchemaChange(V1, column="qty")),
        control(Op.DROP_COLUMN, V1, SchemaChange(V2, old_column="qty")),
        control(Op.RENAME_COLUMN, renamed, SchemaChange(V1, column="title", old_column="name")),
        control(Op.COLUMN_TYPE_CHANGE, retyped, SchemaChange(V1, column="name", old_column="name")),
    ]
    recs = m.map(events)
    assert all(r.barrier and r.partition_key == "task1.public.items" for r in recs)
    out = [orjson.loads(r.data) for r in recs]
    assert [(d["metadata"]["operation"], d["control"]) for d in out] == [
        ("add-column", {"column-name": "qty"}),
        ("drop-column", {"old-column-name": "qty"}),
        ("rename-column", {"column-name": "title", "old-column-name": "name"}),
        ("column-type-change", {"column-name": "name"}),
    ]
    assert out[0]["metadata"]["record-type"] == "control"
    assert out[0]["metadata"]["stream-position"] == "0/1.0000000001"


def test_control_details_carry_column_and_table_definitions() -> None:
    m = mapper(include_control_details=True)
    retyped = TableInfo("public", "items", (V1.columns[0], Column("name", "int8", 20)))
    [add, retype] = docs(
        m,
        control(Op.ADD_COLUMN, V2, SchemaChange(V1, column="qty")),
        control(Op.COLUMN_TYPE_CHANGE, retyped, SchemaChange(V1, column="name", old_column="name")),
    )
    assert add["control"]["column-def"] == {"type": "INT32", "nullable": True}
    assert list(add["control"]["table-def"]["columns"]) == ["id", "name", "qty"]
    assert add["control"]["table-def"]["primary-key"] == ["id"]
    assert retype["control"]["column-def"]["type"] == "INT64"
    assert retype["control"]["old-column-def"]["type"] == "STRING"


def test_mapping_renames_and_removed_columns() -> None:
    remove = rule("3", "transformation", "remove-column", rule_target="column")
    remove["object-locator"]["column-name"] = "secret%"
    m = mapper(rules(rename_rule("2", "column", "qty", "quantity"), remove))
    secret = TableInfo("public", "items", (*V1.columns, Column("secret", "text", 25)))
    exposed = TableInfo("public", "items", (*V1.columns, Column("visible", "text", 25)))
    out = docs(
        m,
        control(Op.ADD_COLUMN, V2, SchemaChange(V1, column="qty")),
        control(Op.ADD_COLUMN, secret, SchemaChange(V1, column="secret")),  # removed by the mapping: no record
        control(Op.RENAME_COLUMN, exposed, SchemaChange(secret, column="visible", old_column="secret")),
    )
    assert [(d["metadata"]["operation"], d["control"]) for d in out] == [
        ("add-column", {"column-name": "quantity"}),
        ("add-column", {"column-name": "visible"}),  # renamed into the records: an add for consumers
    ]


def test_rename_table_uses_the_new_names_rules_and_tells_the_old_name() -> None:
    new = TableInfo("public", "goods", V1.columns)
    m = mapper(rules(rename_rule("2", "table", "", "ITEMS_OUT"), rename_rule("3", "table", "", "GOODS_OUT", "goods")))
    [doc] = docs(m, control(Op.RENAME_TABLE, new, SchemaChange(V1)))
    assert doc["metadata"]["operation"] == "rename-table"
    assert (doc["metadata"]["schema-name"], doc["metadata"]["table-name"]) == ("public", "GOODS_OUT")
    assert doc["control"] == {"old-schema-name": "public", "old-table-name": "ITEMS_OUT"}


def test_rename_table_out_of_the_selection_is_written_under_the_old_name() -> None:
    only_items = parse_rules({"rules": [rule("1", "selection", "include")]}, "m.json")
    m = mapper(only_items)
    recs = m.map([control(Op.RENAME_TABLE, TableInfo("public", "gone", V1.columns), SchemaChange(V1))])
    [doc] = [orjson.loads(r.data) for r in recs]
    assert recs[0].partition_key == "task1.public.items"
    assert doc["metadata"]["table-name"] == "items"
    assert doc["control"] == {
        "old-schema-name": "public",
        "old-table-name": "items",
        "new-schema-name": "public",
        "new-table-name": "gone",
    }
    # neither name selected: nothing
    other = TableInfo("x", "y", ())
    assert m.map([control(Op.RENAME_TABLE, TableInfo("x", "z", ()), SchemaChange(other))]) == []


def test_a_rule_for_the_new_name_may_keep_the_old_target() -> None:
    goods = TableInfo("public", "goods", V1.columns)
    keep = rename_rule("2", "table", "", "items", "goods")  # consumers keep seeing "items" after the rename
    for alter_records in (True, False):
        m = mapper(rules(keep), include_table_alter_operations=alter_records)
        before = ChangeEvent(Op.INSERT, V1, {"id": 1}, None, 1, "t", 1.0, "0/1.1", 1)
        after = ChangeEvent(Op.INSERT, goods, {"id": 2}, None, 2, "t", 1.0, "0/2.2", 1)
        recs = m.map([before, control(Op.RENAME_TABLE, goods, SchemaChange(V1)), after])
        tables = [orjson.loads(r.data)["metadata"]["table-name"] for r in recs]
        assert tables == (["items", "items", "items"] if alter_records else ["items", "items"])


def test_control_records_of_tables_whose_columns_the_source_does_not_know() -> None:
    om = rule("5", "object-mapping", "map-record-to-record", mapping_parameters={"partition-key-type": "primary-key"})
    m = mapper(rules(rename_rule("2", "table", "", "ITEMS"), om))
    unknown = TableInfo("public", "items", ())  # e.g. MySQL: no row event of the table since the start
    added = TableInfo("public", "items", (Column("x", "int"),))
    recs = m.map([control(Op.DROP_TABLE, unknown, SchemaChange(unknown))])
    recs += m.map([control(Op.ADD_COLUMN, added, SchemaChange(unknown, column="x"))])
    assert [r.partition_key for r in recs] == ["task1.public.ITEMS", "task1.public.ITEMS"]
    assert [orjson.loads(r.data)["control"] for r in recs] == [{}, {"column-name": "x"}]
