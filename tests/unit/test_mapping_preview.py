"""``cdcstream check``'s mapping preview without a server: per-table rules, sample records, unused rules."""

from __future__ import annotations

from typing import Any

import orjson

from cdcstream.changes import Column, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.mapping.preview import preview, unused_rules
from cdcstream.mapping.ruleparse import parse_rules

TABLES = [
    TableInfo(
        "public", "orders", (Column("id", "int4", is_key=True), Column("customer", "text"), Column("qty", "int4"))
    ),
    TableInfo("public", "audit", (Column("id", "int8", is_key=True),)),
    TableInfo("other", "x", (Column("id", "int4"),)),
]


def rules(*extra: dict[str, Any]) -> Any:
    base = {
        "rule-type": "selection",
        "rule-id": "1",
        "rule-action": "include",
        "object-locator": {"schema-name": "public", "table-name": "%"},
    }
    return parse_rules({"rules": [base, *extra]}, "m.json")


def test_preview_shows_rules_key_and_record_per_selected_table() -> None:
    r = rules(
        {"rule-type": "object-mapping", "rule-id": "2", "rule-action": "map-record-to-record",
         "object-locator": {"schema-name": "public", "table-name": "orders"},
         "mapping-parameters": {"partition-key-type": "primary-key", "attribute-mappings": [
             {"target-attribute-name": "Who", "value": "${CUSTOMER}/${qty}"}]}},
    )  # fmt: skip
    out = preview(r, TargetConfig(stream_name="s"), "task", TABLES)
    assert [p.table for p in out] == ["public.orders", "public.audit"]  # other.x is not selected
    orders, audit = out
    assert orders.partition_key == "42"
    assert "rule-id 2 object-mapping map-record-to-record, partition key primary-key" in orders.rules
    assert orjson.loads(orders.record)["data"] == {"id": 42, "customer": "customer", "qty": 42, "Who": "customer/42"}
    assert audit.rules == ["rule-id 1 selection include"] and audit.partition_key == "public.audit"


def test_preview_reports_per_table_errors_with_rule_id() -> None:
    r = rules(
        {"rule-type": "object-mapping", "rule-id": "2", "rule-action": "map-record-to-record",
         "object-locator": {"schema-name": "public", "table-name": "%"},
         "mapping-parameters": {"partition-key-type": "attribute-name", "partition-key-name": "customer"}},
    )  # fmt: skip
    orders, audit = preview(r, TargetConfig(stream_name="s"), "task", TABLES)
    assert not orders.error
    assert audit.error.startswith("m.json: rule-id 2 ($.rules[1].mapping-parameters.partition-key-name): public.audit")


def test_two_tables_renamed_onto_one_target_found_with_the_schema() -> None:
    r = rules(
        {"rule-type": "transformation", "rule-id": "2", "rule-target": "table", "rule-action": "rename",
         "object-locator": {"schema-name": "public", "table-name": "%"}, "value": "everything"},
    )  # fmt: skip
    errors = [p.error for p in preview(r, TargetConfig(stream_name="s"), "task", TABLES) if p.error]
    assert len(errors) == 1 and "would both be written as public.everything" in errors[0]
    assert "rule-id 2" in errors[0]


def test_unused_rules() -> None:
    r = rules(
        {"rule-type": "object-mapping", "rule-id": "2", "rule-action": "map-record-to-record",
         "object-locator": {"schema-name": "public", "table-name": "ordrs"}},
        {"rule-type": "transformation", "rule-id": "3", "rule-target": "column", "rule-action": "remove-column",
         "object-locator": {"schema-name": "public", "table-name": "orders", "column-name": "secret"}},
        {"rule-type": "transformation", "rule-id": "4", "rule-target": "column", "rule-action": "remove-column",
         "object-locator": {"schema-name": "public", "table-name": "orders", "column-name": "qty"}},
    )  # fmt: skip
    warnings = unused_rules(r, TABLES)
    assert warnings == [
        "m.json: rule-id 2 ($.rules[1]): object-mapping for public.ordrs matches no selected table",
        "m.json: rule-id 3 ($.rules[2]): remove-column matches no column named 'secret' in the selected tables",
    ]
