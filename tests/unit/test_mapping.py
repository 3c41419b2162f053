"""Mapping rules and the DMS envelope (no servers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from cdcstream.changes import ChangeEvent, Column, Op, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.errors import ConfigError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import load_rules, parse_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.mapping.wildcards import matches

TABLE = TableInfo(
    "public",
    "items",
    (Column("id", "int8", 20, False, True), Column("name", "text", 25), Column("qty", "int4", 23)),
)


def event(op: Op, after: dict[str, Any] | None, before: dict[str, Any] | None = None) -> ChangeEvent:
    return ChangeEvent(
        op=op,
        table=TABLE,
        after=after,
        before=before,
        transaction_id=1140,
        commit_time="2026-11-27T12:00:00.120000Z",
        commit_epoch=1.0,
        stream_position="00000000/016B3F28.0000000001",
        transaction_record_id=1,
    )


def mapper(rules: MappingRules | None = None, /, **target: Any) -> Mapper:
    return Mapper(rules or MappingRules(), TargetConfig(stream_name="s", **target), "task1")


def test_insert_envelope_default_key() -> None:
    [rec] = mapper(message_format="json-unformatted").map([event(Op.INSERT, {"id": 1, "name": "a", "qty": None})])
    assert rec.partition_key == "public.items"
    assert rec.data.endswith(b"\n") and rec.data.count(b"\n") == 1
    doc = orjson.loads(rec.data)
    assert doc["data"] == {"id": 1, "name": "a"}  # NULL omitted without include_null_and_empty
    md = doc["metadata"]
    assert md["record-type"] == "data" and md["operation"] == "insert"
    assert md["partition-key-type"] == "schema-table"
    assert (md["schema-name"], md["table-name"]) == ("public", "items")
    assert md["transaction-id"] == 1140
    assert "commit-timestamp" not in md  # only with include_transaction_details, as DMS
    assert md["stream-position"] == "00000000/016B3F28.0000000001"
    assert md["timestamp"].endswith("Z")


def test_delete_uses_before_image_and_nulls_kept_when_asked() -> None:
    [rec] = mapper(include_null_and_empty=True).map([event(Op.DELETE, None, {"id": 1, "name": None, "qty": None})])
    doc = orjson.loads(rec.data)
    assert doc["data"] == {"id": 1, "name": None, "qty": None}
    assert doc["metadata"]["operation"] == "delete"
    assert b"\n  " in rec.data  # message_format "json" (DMS default) is indented


def test_truncate_is_a_barrier_control_record_with_task_key() -> None:
    [rec] = mapper().map([event(Op.TRUNCATE, None)])
    doc = orjson.loads(rec.data)
    assert doc["control"] == {}
    assert doc["metadata"]["record-type"] == "control"
    assert doc["metadata"]["operation"] == "TruncateTable"
    assert rec.partition_key == "task1.public.items"
    assert rec.barrier


def test_restart_record() -> None:
    rec = mapper().restart_record()
    doc = orjson.loads(rec.data)
    assert rec.partition_key == "task1"
    assert doc["metadata"]["operation"] == "RestartTask"
    assert doc["metadata"]["record-type"] == "control"


@pytest.mark.parametrize(
    ("pattern", "name", "ok"),
    [
        ("%", "anything", True),
        ("ord%", "orders", True),
        ("ord%", "xorders", False),
        ("t_b", "tab", True),
        ("t_b", "t_bb", False),
        ("a[_]b", "a_b", True),
        ("a[_]b", "axb", False),
        ("[ab]x", "bx", True),
        ("[a-c]x", "cx", True),
        ("[a-c]x", "dx", False),
        ("Test", "test", False),
    ],
)
def test_wildcards(pattern: str, name: str, ok: bool) -> None:
    assert matches(pattern, name) is ok


def rules(*rs: dict[str, Any]) -> MappingRules:
    return parse_rules({"rules": list(rs)}, "m.json")


def sel(rid: str, action: str, schema: str, table: str) -> dict[str, Any]:
    return {
        "rule-type": "selection",
        "rule-id": rid,
        "rule-name": rid,
        "rule-action": action,
        "object-locator": {"schema-name": schema, "table-name": table},
    }


def test_selection_include_exclude() -> None:
    r = rules(sel("1", "include", "public", "%"), sel("2", "exclude", "public", "tmp%"))
    assert r.selects("public", "items")
    assert not r.selects("public", "tmp_x")
    assert not r.selects("other", "items")


def test_object_mapping_partition_keys() -> None:
    om = {
        "rule-type": "object-mapping",
        "rule-id": "2",
        "rule-name": "2",
        "rule-action": "map-record-to-record",
        "object-locator": {"schema-name": "public", "table-name": "items"},
        "mapping-parameters": {"partition-key-type": "primary-key", "exclude-columns": ["QTY"]},
    }
    [rec] = mapper(rules(sel("1", "include", "%", "%"), om)).map([event(Op.INSERT, {"id": 7, "name": "a", "qty": 3})])
    assert rec.partition_key == "7"
    assert not rec.barrier
    assert orjson.loads(rec.data)["data"] == {"id": 7, "name": "a"}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"rule-type": "selection", "rule-id": "1", "rule-action": "include"}, r"rule-id 1 .*object-locator"),
        ({**sel("3", "include", "public", "a[b"), "rule-id": "3"}, r"rule-id 3 .*bad wildcard"),
        ({**sel("4", "maybe", "s", "t")}, r"rule-id 4 .*rule-action"),
        ({"rule-type": "nonsense", "rule-id": "5"}, r"rule-id 5 .*unknown rule-type"),
        ({"rule-type": "selection", "rule-id": "x"}, r"rule-id: must be a number"),
        (
            {
                "rule-type": "object-mapping",
                "rule-id": "6",
                "rule-action": "map-record-to-record",
                "object-locator": {"schema-name": "s", "table-name": "t"},
                "mapping-parameters": {"partition-key-type": "attribute-name"},
            },
            r"rule-id 6 .*partition-key-name",
        ),
    ],
)
def test_validation_names_file_rule_and_problem(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=r"^m\.json: .*" + message):
        parse_rules({"rules": [sel("100", "include", "%", "%"), rule]}, "m.json")


def test_load_rules_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_rules(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_rules(tmp_path / "missing.json")


def test_load_rows_fast_path_writes_exactly_the_general_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    """Load rows skip the per-row metadata dict (serialised once per table and batch); the bytes must be what the
    general path writes, for several tables, NULLs, a >64-bit integer (orjson refuses it) and both key settings."""
    monkeypatch.setattr("cdcstream.mapping.envelope.now_iso", lambda: "2026-11-27T12:00:00.000000Z")
    other = TableInfo("public", "other", (Column("k", "text", 25, False, True), Column("v", "numeric", 1700)))
    events = [
        event(Op.LOAD, {"id": 1, "name": "a", "qty": None}),
        ChangeEvent(Op.LOAD, other, {"k": "x", "v": 2**70}, None, None, "", 0.0, "", 0),
        event(Op.LOAD, {"id": 2, "name": 'é\n"', "qty": 3}),
        event(Op.INSERT, {"id": 3, "name": "c", "qty": 4}),
        ChangeEvent(Op.LOAD, other, {"k": "", "v": None}, None, None, "", 0.0, "", 0),
    ]
    for target in ({}, {"partition_include_schema_table": True}, {"include_null_and_empty": True}):
        fast = mapper(message_format="json-unformatted", **target).map(events)
        with monkeypatch.context() as m:
            m.setattr(Mapper, "_load_data", lambda *a: None)
            general = mapper(message_format="json-unformatted", **target).map(events)
        assert [(r.partition_key, r.data, r.label, r.commit_epoch) for r in fast] == [
            (r.partition_key, r.data, r.label, r.commit_epoch) for r in general
        ]
    assert orjson.loads(fast[0].data)["metadata"]["operation"] == "load"
