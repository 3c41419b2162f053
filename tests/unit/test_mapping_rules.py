"""Each DMS rule kind and each endpoint setting, one behaviour per test, plus the validator's messages."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from cdcstream.changes import ChangeEvent, Column, Op, TableInfo
from cdcstream.config import BeforeImageConfig, TargetConfig
from cdcstream.errors import ConfigError, MappingError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules
from cdcstream.mapping.rules import MappingRules

ITEMS = TableInfo(
    "public",
    "items",
    (
        Column("id", "int8", 20, False, True),
        Column("name", "text", 25),
        Column("qty", "int4", 23),
        Column("price", "numeric", 1700),
        Column("created", "timestamptz", 1184),
    ),
)
ROW = {"id": 7, "name": "Widget", "qty": 3, "price": "2.50", "created": "2026-11-27T12:00:00.5Z"}


def ev(
    op: Op = Op.INSERT,
    after: dict[str, Any] | None = None,
    before: dict[str, Any] | None = None,
    table: TableInfo = ITEMS,
    txn: int = 1140,
    rid: int = 1,
) -> ChangeEvent:
    if after is None and op in (Op.INSERT, Op.UPDATE):
        after = dict(ROW)
    return ChangeEvent(op, table, after, before, txn, "2026-11-27T12:00:00.120000Z", 1.0, f"pos{txn}.{rid}", rid)


def rules(*rs: dict[str, Any]) -> MappingRules:
    return parse_rules({"rules": [sel("1", "include", "%", "%"), *rs]}, "m.json")


def sel(rid: str, action: str, schema: str, table: str, **extra: Any) -> dict[str, Any]:
    return {
        "rule-type": "selection",
        "rule-id": rid,
        "rule-name": rid,
        "rule-action": action,
        "object-locator": {"schema-name": schema, "table-name": table},
        **extra,
    }


def tr(rid: str, target: str, action: str, locator: dict[str, str] | None = None, /, **extra: Any) -> dict[str, Any]:
    loc = {"schema-name": "public", "table-name": "items", **(locator or {})}
    if target == "schema":
        loc.pop("table-name", None)
    return {
        "rule-type": "transformation",
        "rule-id": rid,
        "rule-name": rid,
        "rule-target": target,
        "rule-action": action,
        "object-locator": loc,
        **extra,
    }


def om(rid: str, action: str = "map-record-to-record", /, **params: Any) -> dict[str, Any]:
    """An object-mapping rule for ``table`` (keyword, default ``items``); the other keywords are its
    mapping-parameters."""
    table = params.pop("table", "items")
    rule: dict[str, Any] = {
        "rule-type": "object-mapping",
        "rule-id": rid,
        "rule-name": rid,
        "rule-action": action,
        "object-locator": {"schema-name": "public", "table-name": table},
        "mapping-parameters": params,
    }
    return rule


def mapper(r: MappingRules | None = None, /, **target: Any) -> Mapper:
    return Mapper(r or MappingRules(), TargetConfig(stream_name="s", **target), "task1")


def one(m: Mapper, e: ChangeEvent) -> tuple[str, dict[str, Any]]:
    recs = m.map([e])
    assert len(recs) == 1, recs
    return recs[0].partition_key, orjson.loads(recs[0].data)


# --- selection ----------------------------------------------------------------------------------------------


def test_selection_explicit_and_exclude() -> None:
    r = parse_rules(
        {
            "rules": [
                sel("1", "explicit", "public", "items"),
                sel("2", "include", "s%", "%"),
                sel("3", "exclude", "s1", "x"),
            ]
        },
        "m.json",
    )
    assert r.selects("public", "items") and not r.selects("public", "items2")
    assert r.selects("s1", "y") and not r.selects("s1", "x")


def test_view_rules_select_nothing_in_cdc() -> None:
    r = parse_rules({"rules": [sel("1", "include", "%", "%", **{})]}, "m.json")
    view = sel("2", "include", "v", "%")
    view["object-locator"]["table-type"] = "view"
    r = parse_rules({"rules": [view]}, "m.json")
    assert not r.selects("v", "t")


def _filtered(*conditions: dict[str, Any], column: str = "qty") -> Mapper:
    f = {"filter-type": "source", "column-name": column, "filter-conditions": list(conditions)}
    return mapper(parse_rules({"rules": [sel("1", "include", "public", "items", filters=[f])]}, "m.json"))


@pytest.mark.parametrize(
    ("cond", "qty", "kept"),
    [
        ({"filter-operator": "eq", "value": "3"}, 3, True),
        ({"filter-operator": "eq", "value": "3"}, 4, False),
        ({"filter-operator": "noteq", "value": "3"}, 4, True),
        ({"filter-operator": "noteq", "value": "3"}, 3, False),
        ({"filter-operator": "lte", "value": "3"}, 3, True),
        ({"filter-operator": "ste", "value": "3"}, 4, False),
        ({"filter-operator": "gte", "value": "10"}, 9, False),  # numerically, not as text
        ({"filter-operator": "gte", "value": 10}, 11, True),
        ({"filter-operator": "between", "start-value": "2", "end-value": "4"}, 4, True),
        ({"filter-operator": "between", "start-value": "2", "end-value": "4"}, 5, False),
        ({"filter-operator": "notbetween", "start-value": "2", "end-value": "4"}, 5, True),
        ({"filter-operator": "null"}, None, True),
        ({"filter-operator": "null"}, 1, False),
        ({"filter-operator": "notnull"}, 1, True),
        ({"filter-operator": "eq", "value": "3"}, None, False),
    ],
)
def test_filter_operators(cond: dict[str, Any], qty: Any, kept: bool) -> None:
    assert len(_filtered(cond).map([ev(after={**ROW, "qty": qty})])) == int(kept)


def test_filter_conditions_or_filters_and() -> None:
    f1 = {
        "column-name": "qty",
        "filter-conditions": [{"filter-operator": "eq", "value": "1"}, {"filter-operator": "eq", "value": "3"}],
    }
    f2 = {"column-name": "name", "filter-conditions": [{"filter-operator": "eq", "value": "Widget"}]}
    m = mapper(parse_rules({"rules": [sel("1", "include", "public", "items", filters=[f1, f2])]}, "m.json"))
    assert len(m.map([ev(after={**ROW, "qty": 1})])) == 1
    assert len(m.map([ev(after={**ROW, "qty": 2})])) == 0
    assert len(m.map([ev(after={**ROW, "name": "Other"})])) == 0


def test_filter_on_text_numeric_and_timestamp_columns() -> None:
    m = _filtered({"filter-operator": "gte", "value": "10.00"}, column="price")
    assert len(m.map([ev(after={**ROW, "price": "9.99"})])) == 0
    assert len(m.map([ev(after={**ROW, "price": "10.5"})])) == 1
    m = _filtered({"filter-operator": "lte", "value": "2026-11-27 12:00:00"}, column="created")
    assert len(m.map([ev(after={**ROW, "created": "2026-11-27T11:59:59Z"})])) == 1
    assert len(m.map([ev(after={**ROW, "created": "2026-11-27T12:00:01Z"})])) == 0


def test_filter_uses_old_image_for_delete_and_keeps_delete_when_column_unknown() -> None:
    m = _filtered({"filter-operator": "eq", "value": "3"})
    assert len(m.map([ev(Op.DELETE, before={"id": 7, "qty": 4})])) == 0
    assert len(m.map([ev(Op.DELETE, before={"id": 7, "qty": 3})])) == 1
    # Default replica identity: only the key in the old image; the delete is kept (documented choice).
    assert len(m.map([ev(Op.DELETE, before={"id": 7})])) == 1


def test_filter_column_must_exist() -> None:
    m = _filtered({"filter-operator": "eq", "value": "3"}, column="nope")
    with pytest.raises(
        MappingError, match=r"rule-id 1 \(\$\.rules\[0\]\.filters\[0\]\.column-name\).*no column 'nope'"
    ):
        m.map([ev()])


# --- transformations ----------------------------------------------------------------------------------------


def test_rename_schema_table_column_and_lower_rule_id_wins() -> None:
    m = mapper(
        rules(
            tr("20", "schema", "rename", value="sales"),
            tr("21", "table", "rename", value="products"),
            tr("23", "column", "rename", {"column-name": "name"}, value="title"),
            tr("22", "column", "rename", {"column-name": "name"}, value="label"),  # lower id: wins
        )
    )
    key, doc = one(m, ev())
    assert key == "sales.products"
    assert (doc["metadata"]["schema-name"], doc["metadata"]["table-name"]) == ("sales", "products")
    assert list(doc["data"]) == ["id", "label", "qty", "price", "created"]


@pytest.mark.parametrize(
    ("action", "extra", "column", "expected"),
    [
        ("convert-uppercase", {}, "name", "NAME"),
        ("convert-lowercase", {}, "name", "name"),
        ("add-prefix", {"value": "c_"}, "name", "c_name"),
        ("add-suffix", {"value": "_x"}, "name", "name_x"),
        ("remove-prefix", {"value": "na"}, "name", "me"),
        ("remove-suffix", {"value": "me"}, "name", "na"),
        ("replace-prefix", {"value": "N", "old-value": "n"}, "name", "Name"),
        ("replace-suffix", {"value": "ME", "old-value": "me"}, "name", "naME"),
        ("remove-prefix", {"value": "zz"}, "name", "name"),
    ],
)
def test_name_actions_on_columns(action: str, extra: dict[str, Any], column: str, expected: str) -> None:
    _, doc = one(mapper(rules(tr("2", "column", action, {"column-name": column}, **extra))), ev())
    assert expected in doc["data"] and doc["data"][expected] == "Widget"


def test_name_actions_with_wildcards_on_tables_and_columns() -> None:
    m = mapper(
        rules(
            tr("2", "table", "add-prefix", {"table-name": "%"}, value="dw_"),
            tr("3", "column", "convert-uppercase", {"column-name": "%"}),
        )
    )
    key, doc = one(m, ev())
    assert key == "public.dw_items"
    assert list(doc["data"]) == ["ID", "NAME", "QTY", "PRICE", "CREATED"]


def test_remove_and_include_column() -> None:
    _, doc = one(mapper(rules(tr("2", "column", "remove-column", {"column-name": "p%"}))), ev())
    assert "price" not in doc["data"] and "name" in doc["data"]
    m = mapper(
        rules(
            tr("2", "column", "include-column", {"column-name": "id"}),
            tr("3", "column", "include-column", {"column-name": "qty"}),
        )
    )
    _, doc = one(m, ev())
    assert doc["data"] == {"id": 7, "qty": 3}


def test_remove_column_by_data_type_locator() -> None:
    _, doc = one(mapper(rules(tr("2", "column", "remove-column", {"data-type": "int4"}))), ev())
    assert "qty" not in doc["data"] and "id" in doc["data"]


def test_add_column_expression_and_value_name() -> None:
    m = mapper(
        rules(
            tr("2", "column", "add-column", value="label", expression="upper($name) || '#' || $id"),
            tr(
                "3",
                "column",
                "add-column",
                value="total",
                expression="$qty * $price",
                **{"data-type": {"type": "numeric", "precision": 10, "scale": 2}},
            ),
            tr("4", "column", "add-column", value="empty"),
        ),
        include_null_and_empty=True,
    )
    _, doc = one(m, ev())
    assert doc["data"]["label"] == "WIDGET#7"
    assert doc["data"]["total"] == "7.50"
    assert doc["data"]["empty"] is None


def test_add_column_expression_unknown_column_names_rule_and_position() -> None:
    m = mapper(rules(tr("2", "column", "add-column", value="x", expression="$name || $nope")))
    with pytest.raises(
        MappingError,
        match=r"rule-id 2 \(\$\.rules\[1\]\.expression\): bad expression at position 9: .*no column 'nope'",
    ):
        m.map([ev()])


def test_change_data_type() -> None:
    m = mapper(
        rules(
            tr("2", "column", "change-data-type", {"column-name": "qty"}, **{"data-type": {"type": "string"}}),
            tr("3", "column", "change-data-type", {"column-name": "price"}, **{"data-type": {"type": "real8"}}),
            tr("4", "column", "change-data-type", {"column-name": "id"}, **{"data-type": {"type": "boolean"}}),
        )
    )
    _, doc = one(m, ev())
    assert doc["data"]["qty"] == "3" and doc["data"]["price"] == 2.5 and doc["data"]["id"] is True


def test_change_data_type_failure_is_an_error_not_a_silent_skip() -> None:
    m = mapper(rules(tr("2", "column", "change-data-type", {"column-name": "name"}, **{"data-type": {"type": "int4"}})))
    with pytest.raises(MappingError, match=r"rule-id 2 .*public\.items\.name: cannot convert 'Widget' to int4"):
        m.map([ev()])


def test_define_primary_key_drives_primary_key_partitioning() -> None:
    m = mapper(
        rules(
            tr("2", "table", "define-primary-key", **{"primary-key-def": {"name": "pk", "columns": ["name", "qty"]}}),
            om("3", **{"partition-key-type": "primary-key"}),
        )
    )
    key, _ = one(m, ev())
    assert key == "Widget.3"


def test_add_before_image_columns() -> None:
    m = mapper(
        rules(
            tr(
                "2",
                "column",
                "add-before-image-columns",
                {"column-name": "%"},
                **{"before-image-def": {"column-prefix": "BI_", "column-filter": "non-lob"}},
            )
        )
    )
    _, doc = one(m, ev(Op.UPDATE, before={"id": 6, "name": "Old", "qty": 1}))
    assert doc["data"]["BI_id"] == 6 and doc["data"]["BI_qty"] == 1
    assert "BI_name" not in doc["data"]  # text is a LOB to DMS


def test_transformation_conflicting_names_are_an_error() -> None:
    m = mapper(rules(tr("2", "column", "rename", {"column-name": "name"}, value="qty")))
    with pytest.raises(
        MappingError, match=r"^m\.json: rule-id 2 \(\$\.rules\[1\]\.rule-action\): .*would both be written as 'qty'"
    ):
        m.map([ev()])


# --- object mapping -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({}, "public.items"),
        ({"partition-key-type": "schema-table"}, "public.items"),
        ({"partition-key-type": "primary-key"}, "7"),
        ({"partition-key-type": "transaction-id"}, "1140"),
        ({"partition-key": {"value": "K"}}, "K"),
        ({"partition-key-type": "constant", "partition-key": {"value": "K"}}, "K"),
        ({"partition-key-type": "attribute-name", "partition-key-name": "name"}, "Widget"),
        ({"partition-key-type": "attribute-name", "partition-key-name": "NAME"}, "Widget"),
    ],
)
def test_partition_key_types(params: dict[str, Any], key: str) -> None:
    got, _ = one(mapper(rules(om("2", **params))), ev())
    assert got == key


def test_primary_key_partition_uses_old_image_for_delete() -> None:
    got, _ = one(mapper(rules(om("2", **{"partition-key-type": "primary-key"}))), ev(Op.DELETE, before={"id": 9}))
    assert got == "9"


def test_attribute_name_partition_key_may_be_an_excluded_column() -> None:
    m = mapper(
        rules(
            om(
                "2",
                **{"partition-key-type": "attribute-name", "partition-key-name": "name", "exclude-columns": ["name"]},
            )
        )
    )
    got, doc = one(m, ev())
    assert got == "Widget" and "name" not in doc["data"]


def test_map_record_to_document_and_nested_templates() -> None:
    m = mapper(
        rules(
            om(
                "2",
                "map-record-to-document",
                **{
                    "exclude-columns": ["price", "created"],
                    "attribute-mappings": [
                        {"target-attribute-name": "summary", "attribute-type": "scalar", "value": "${name} x${qty}"},
                        {
                            "target-attribute-name": "nested",
                            "attribute-type": "document",
                            "attribute-sub-type": "json",
                            "value": {"a": {"b": ["${qty}", "lit", 5]}, "c": "${price}"},
                        },
                    ],
                },
            )
        )
    )
    _, doc = one(m, ev())
    assert doc["data"] == {
        "_doc": {"id": 7, "name": "Widget", "qty": 3},
        "summary": "Widget x3",
        "nested": {"a": {"b": [3, "lit", 5]}, "c": "2.50"},
    }


def test_template_with_unknown_column_names_rule_and_path() -> None:
    m = mapper(rules(om("2", **{"attribute-mappings": [{"target-attribute-name": "x", "value": "${nope}"}]})))
    with pytest.raises(
        MappingError,
        match=r"rule-id 2 \(\$\.rules\[1\]\.mapping-parameters\.attribute-mappings\[0\]\.value\): "
        r"public\.items has no column 'nope'",
    ):
        m.map([ev()])


def test_target_table_name_and_two_tables_onto_one_target() -> None:
    m = mapper(rules(om("2", **{}) | {"target-table-name": "things"}))
    key, doc = one(m, ev())
    assert key == "public.things" and doc["metadata"]["table-name"] == "things"
    other = TableInfo("public", "things", ITEMS.columns)
    with pytest.raises(MappingError, match=r"would both be written as public\.things"):
        m.map([ev(table=other)])


# --- endpoint settings --------------------------------------------------------------------------------------


def test_transaction_details_chain_prev_transaction() -> None:
    m = mapper(include_transaction_details=True)
    recs = m.map([ev(txn=10, rid=1), ev(txn=10, rid=2), ev(txn=11, rid=1)])
    recs += m.map([ev(txn=12, rid=1)])  # a later batch still chains
    mds = [orjson.loads(r.data)["metadata"] for r in recs]
    assert "prev-transaction-id" not in mds[0]  # the first transaction after a start has none (DMS)
    assert mds[1]["transaction-record-id"] == 2
    assert (mds[2]["prev-transaction-id"], mds[2]["prev-transaction-record-id"]) == (10, 2)
    assert (mds[3]["prev-transaction-id"], mds[3]["prev-transaction-record-id"]) == (11, 1)
    assert mds[2]["commit-timestamp"] == "2026-11-27T12:00:00.120000Z"
    keys = list(mds[2])
    assert keys[keys.index("transaction-id") :] == [
        "transaction-id",
        "transaction-record-id",
        "prev-transaction-id",
        "prev-transaction-record-id",
        "commit-timestamp",
        "stream-position",
    ]


def test_without_transaction_details_only_id_and_position() -> None:
    _, doc = one(mapper(), ev())
    md = doc["metadata"]
    assert md["transaction-id"] == 1140 and md["stream-position"] == "pos1140.1"
    assert not {"transaction-record-id", "prev-transaction-id", "commit-timestamp"} & set(md)


def test_partition_value_and_schema_table_prefix() -> None:
    r = rules(om("2", **{"partition-key-type": "primary-key"}))
    key, doc = one(mapper(r, include_partition_value=True, partition_include_schema_table=True), ev())
    assert key == "public.items.7" and doc["metadata"]["partition-key-value"] == "public.items.7"
    _, doc = one(mapper(include_partition_value=True), ev())
    assert "partition-key-value" not in doc["metadata"]  # never for schema-table (DMS)


def test_control_details_and_operation_names() -> None:
    m = mapper(
        rules(tr("2", "column", "rename", {"column-name": "name"}, value="title")),
        include_control_details=True,
        control_operation_names="dms",
    )
    key, doc = one(m, ev(Op.TRUNCATE, after=None))
    assert key == "task1.public.items"
    assert doc["metadata"]["operation"] == "truncate-table"
    assert doc["control"]["table-def"] == {
        "columns": {
            "id": {"type": "INT64", "nullable": False},
            "title": {"type": "STRING", "nullable": True},
            "qty": {"type": "INT32", "nullable": True},
            "price": {"type": "NUMERIC", "nullable": True},
            "created": {"type": "DATETIME", "nullable": True},
        },
        "primary-key": ["id"],
    }
    _, doc = one(mapper(), ev(Op.DROP_TABLE, after=None))
    assert doc["metadata"]["operation"] == "DropTable" and doc["control"] == {}
    assert (
        orjson.loads(mapper(control_operation_names="dms").restart_record().data)["metadata"]["operation"]
        == "restart-task"
    )


@pytest.mark.parametrize(
    ("column_filter", "expected"),
    [("pk-only", {"id": 6}), ("non-lob", {"id": 6, "qty": 1}), ("all", {"id": 6, "name": "Old", "qty": 1})],
)
def test_before_image(column_filter: str, expected: dict[str, Any]) -> None:
    m = mapper(before_image=BeforeImageConfig(enabled=True, field_name="BI", column_filter=column_filter))  # type: ignore[arg-type]
    _, doc = one(m, ev(Op.UPDATE, before={"id": 6, "name": "Old", "qty": 1}))
    assert doc["BI"] == expected
    assert list(doc) == ["data", "BI", "metadata"]
    _, doc = one(m, ev(Op.UPDATE))  # PostgreSQL sent no old tuple: key unchanged
    assert doc["BI"] == {}
    _, doc = one(m, ev(Op.INSERT))
    assert "BI" not in doc  # updates only, as DMS


def test_before_image_setting_and_rule_are_exclusive() -> None:
    with pytest.raises(ConfigError, match=r"rule-id 2 .*cannot be combined"):
        mapper(
            rules(tr("2", "column", "add-before-image-columns", {"column-name": "%"})),
            before_image=BeforeImageConfig(enabled=True),
        )


def test_include_null_and_empty_applies_to_doc() -> None:
    r = rules(om("2", "map-record-to-document"))
    _, doc = one(mapper(r), ev(after={**ROW, "qty": None}))
    assert "qty" not in doc["data"]["_doc"]
    _, doc = one(mapper(r, include_null_and_empty=True), ev(after={**ROW, "qty": None}))
    assert doc["data"]["_doc"]["qty"] is None


# --- the validator's messages -------------------------------------------------------------------------------


def _err(*rs: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse_rules({"rules": [sel("100", "include", "%", "%"), *rs]}, "m.json")
    return str(info.value)


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            {
                "rule-type": "transformation",
                "rule-id": "5",
                "rule-action": "rename",
                "rule-target": "column",
                "object-locator": {"schema-name": "s", "table-name": "t", "column-name": "c"},
            },
            'rule-id 5 ($.rules[1]): missing "value"',
        ),
        (
            tr("6", "column", "explode", {"column-name": "c"}),
            "rule-id 6 ($.rules[1].rule-action): unknown transformation rule-action 'explode'",
        ),
        (
            tr("7", "column", "data-masking-hash-mask", {"column-name": "c"}),
            "rule-id 7 ($.rules[1].rule-action): data-masking-hash-mask is not supported",
        ),
        (
            tr("8", "table-tablespace", "rename", value="x"),
            "rule-id 8 ($.rules[1].rule-target): table-tablespace rules only apply to Oracle",
        ),
        (
            tr("9", "column", "add-column", value="x", expression="upper($a"),
            "rule-id 9 ($.rules[1].expression): bad expression at position 8: expected ')'",
        ),
        (
            tr("10", "column", "change-data-type", {"column-name": "c"}, **{"data-type": {"type": "varchar"}}),
            "rule-id 10 ($.rules[1].data-type.type): unknown data type 'varchar'",
        ),
        (
            tr("11", "column", "change-data-type", {"column-name": "c"}, **{"data-type": {"type": "map"}}),
            "rule-id 11 ($.rules[1].data-type.type): data type 'map' is not supported",
        ),
        (
            tr("12", "table", "define-primary-key", {"table-name": "t%"}, **{"primary-key-def": {"columns": ["a"]}}),
            "rule-id 12 ($.rules[1].object-locator): define-primary-key names one table exactly",
        ),
        (
            tr("13", "table", "remove-column"),
            "rule-id 13 ($.rules[1].rule-target): remove-column applies to rule-target column",
        ),
        (
            sel(
                "14",
                "include",
                "s",
                "t",
                filters=[{"column-name": "c", "filter-conditions": [{"filter-operator": "like", "value": "x"}]}],
            ),
            "rule-id 14 ($.rules[1].filters[0].filter-conditions[0].filter-operator): unknown filter-operator 'like'",
        ),
        (
            sel(
                "15",
                "include",
                "s",
                "t",
                filters=[{"column-name": "c", "filter-conditions": [{"filter-operator": "between", "value": "1"}]}],
            ),
            'rule-id 15 ($.rules[1].filters[0].filter-conditions[0].value): between takes "start-value"',
        ),
        (
            sel(
                "16",
                "include",
                "s",
                "t",
                filters=[
                    {
                        "column-name": "c",
                        "filter-conditions": [
                            {"filter-operator": "noteq", "value": "1"},
                            {"filter-operator": "eq", "value": "2"},
                        ],
                    }
                ],
            ),
            "rule-id 16 ($.rules[1].filters[0].filter-conditions): a filter with a negative operator",
        ),
        (
            sel(
                "17",
                "exclude",
                "s",
                "t",
                filters=[{"column-name": "c", "filter-conditions": [{"filter-operator": "null"}]}],
            ),
            "rule-id 17 ($.rules[1].filters): source filters are only allowed on include",
        ),
        (
            sel(
                "18",
                "include",
                "s",
                "t",
                filters=[{"column-name": "c", "filter-conditions": [{"filter-operator": "eq"}]}],
            ),
            "rule-id 18 ($.rules[1].filters[0].filter-conditions[0]): filter-operator 'eq' needs \"value\"",
        ),
        (
            sel("19", "include", "s", "t[a-"),
            "rule-id 19 ($.rules[1].object-locator.table-name): bad wildcard: unclosed '['",
        ),
        (
            sel("20", "explicit", "s", "t%"),
            "rule-id 20 ($.rules[1].object-locator): explicit rules name one table exactly",
        ),
        (
            om("21", **{"partition-key-type": "attribute-name"}),
            'rule-id 21 ($.rules[1].mapping-parameters): partition-key-type "attribute-name" needs',
        ),
        (
            om("22", **{"partition-key-type": "constant"}),
            'rule-id 22 ($.rules[1].mapping-parameters): partition-key-type "constant" needs "partition-key"',
        ),
        (
            om("23", **{"attribute-mappings": [{"target-attribute-name": "a", "value": "${x"}]}),
            "rule-id 23 ($.rules[1].mapping-parameters.attribute-mappings[0].value): unclosed '${'",
        ),
        (
            om(
                "24",
                **{
                    "attribute-mappings": [
                        {"target-attribute-name": "a", "attribute-type": "scalar", "value": {"x": 1}}
                    ]
                },
            ),
            "rule-id 24 ($.rules[1].mapping-parameters.attribute-mappings[0].value): a scalar attribute's value",
        ),
        (
            om("25", **{"attribute-mappings": [{"value": "x"}]}),
            'rule-id 25 ($.rules[1].mapping-parameters.attribute-mappings[0]): missing "target-attribute-name"',
        ),
        (
            om("26", table="t%") | {"target-table-name": "x"},
            "rule-id 26 ($.rules[1].target-table-name): a rule with a wildcard object-locator would map several tables",
        ),
        (
            om("27", **{"partition-keyy": 1}),
            "rule-id 27 ($.rules[1].mapping-parameters): unknown key(s) ['partition-keyy']",
        ),
        (
            {
                "rule-type": "table-settings",
                "rule-id": "28",
                "object-locator": {"schema-name": "s", "table-name": "t"},
                "lob-settings": {"mode": "limited"},
            },
            "rule-id 28 ($.rules[1].lob-settings): lob-settings are not supported by this version",
        ),
        (
            {
                "rule-type": "table-settings",
                "rule-id": "30",
                "object-locator": {"schema-name": "s", "table-name": "t"},
                "parallel-load": {"type": "ranges", "columns": ["a", "b"], "boundaries": [["1"]]},
            },
            "rule-id 30 ($.rules[1].parallel-load.boundaries): must be a list of lists of 2 value(s)",
        ),
        (
            {
                "rule-type": "table-settings",
                "rule-id": "31",
                "object-locator": {"schema-name": "s", "table-name": "t"},
                "parallel-load": {"type": "magic"},
            },
            "rule-id 31 ($.rules[1].parallel-load.type): must be one of partitions-auto",
        ),
        ({"rule-type": "nonsense", "rule-id": "29"}, "rule-id 29 ($.rules[1].rule-type): unknown rule-type 'nonsense'"),
        (sel("100", "include", "a", "b"), "rule-id 100 ($.rules[1].rule-id): duplicate rule-id among selection rules"),
    ],
)
def test_validator_messages(rule: dict[str, Any], expected: str) -> None:
    msg = _err(rule)
    assert msg.startswith("m.json: "), msg
    assert expected in msg, msg


def test_two_rules_mapping_two_tables_onto_one_target() -> None:
    msg = _err(
        tr("2", "table", "rename", {"table-name": "a"}, value="x"),
        tr("3", "table", "rename", {"table-name": "b"}, value="x"),
    )
    assert (
        "m.json: rule-id 3 ($.rules[2].value): renames public.b to 'x', which rule-id 2 already maps public.a to" in msg
    )
    msg = _err(om("4", table="a") | {"target-table-name": "x"}, om("5", table="b") | {"target-table-name": "x"})
    assert (
        "rule-id 5 ($.rules[2].target-table-name): maps public.b to 'x', which rule-id 4 already maps public.a to"
        in msg
    )


def test_seed_example3_shape_rule_ids_shared_across_types() -> None:
    parse_rules({"rules": [sel("1", "include", "%", "%"), om("1")]}, "m.json")


def test_integers_beyond_64_bits_stay_exact() -> None:
    m = mapper(
        rules(tr("2", "column", "add-column", value="big", expression="$price * 2")), message_format="json-unformatted"
    )
    [rec] = m.map([ev(after={**ROW, "price": "123456789012345678901234"})])
    assert json.loads(rec.data)["data"]["big"] == 246913578024691357802468  # orjson.loads would read a float


def test_empty_partition_key_is_replaced_not_sent() -> None:
    key, _ = one(
        mapper(rules(om("2", **{"partition-key-type": "attribute-name", "partition-key-name": "name"}))),
        ev(after={**ROW, "name": ""}),
    )
    assert key == "<empty>"


def test_dms_console_export_with_null_parameters_is_accepted() -> None:
    # What the DMS console's JSON editor exports: null value/old-value on every transformation, empty filters.
    doc = {
        "rules": [
            {
                "rule-type": "selection",
                "rule-id": "1",
                "rule-name": "1",
                "object-locator": {"schema-name": "public", "table-name": "%"},
                "rule-action": "include",
                "filters": [],
            },
            {
                "rule-type": "transformation",
                "rule-id": "2",
                "rule-name": "2",
                "rule-target": "table",
                "object-locator": {"schema-name": "public", "table-name": "%"},
                "rule-action": "convert-uppercase",
                "value": None,
                "old-value": None,
            },
        ]
    }
    key, _ = one(mapper(parse_rules(doc, "m.json")), ev())
    assert key == "public.ITEMS"


def test_parallel_load_table_settings_are_accepted_and_change_nothing() -> None:
    ts = {"rule-type": "table-settings", "rule-id": "2", "rule-name": "2",
          "object-locator": {"schema-name": "public", "table-name": "items"},
          "parallel-load": {"type": "ranges", "columns": ["id"], "boundaries": [["100"], ["200"]]}}  # fmt: skip
    _, doc = one(mapper(rules(ts)), ev())
    assert doc["data"] == ROW


def test_wide_integer_next_to_infinity_still_valid_json() -> None:
    m = mapper(
        rules(tr("2", "column", "add-column", value="big", expression="$price * 2")), message_format="json-unformatted"
    )
    [rec] = m.map([ev(after={**ROW, "price": "123456789012345678901234", "qty": float("inf")})])
    doc = json.loads(rec.data)
    assert doc["data"]["qty"] is None and doc["data"]["big"] == 246913578024691357802468
