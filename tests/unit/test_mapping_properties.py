"""Property tests: random valid rule sets never crash the mapper; random invalid ones are rejected by rule-id."""

from __future__ import annotations

import re
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcstream.changes import ChangeEvent, Column, Op, TableInfo
from cdcstream.config import BeforeImageConfig, TargetConfig
from cdcstream.errors import ConfigError, MappingError
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import parse_rules

COLUMNS = (
    Column("id", "int8", 20, False, True),
    Column("Name", "text", 25),
    Column("qty", "int4", 23),
    Column("price", "numeric", 1700),
    Column("flag", "bool", 16),
)
TABLES = [
    TableInfo("public", "items", COLUMNS),
    TableInfo("public", "order_lines", COLUMNS),
    TableInfo("app", "t1", COLUMNS),
]
NAMES = [c.name for c in COLUMNS]

values = st.one_of(
    st.none(), st.integers(-(10**20), 10**20), st.text(max_size=8), st.booleans(), st.floats(allow_nan=False)
)
rows = st.fixed_dictionaries({n: values for n in NAMES})
patterns = st.sampled_from(["%", "public", "app", "p%", "items", "order[_]lines", "t_", "[a-p]%", "x%"])
columns = st.sampled_from([*NAMES, "%", "name", "q%"])
strings = st.text(alphabet="abcXYZ_", min_size=1, max_size=5)


@st.composite
def selection(draw: Any, rid: int) -> dict[str, Any]:
    action = draw(st.sampled_from(["include", "include", "exclude"]))
    rule: dict[str, Any] = {
        "rule-type": "selection",
        "rule-id": str(rid),
        "rule-action": action,
        "object-locator": {"schema-name": draw(patterns), "table-name": draw(patterns)},
    }
    if action == "include" and draw(st.booleans()):
        op = draw(st.sampled_from(["eq", "noteq", "lte", "ste", "gte", "between", "notbetween", "null", "notnull"]))
        num = st.integers(-5, 5).map(str)
        cond: dict[str, Any] = {"filter-operator": op}
        if op in ("between", "notbetween"):
            cond |= {"start-value": draw(num), "end-value": draw(num)}
        elif op not in ("null", "notnull"):
            cond["value"] = draw(num)
        rule["filters"] = [
            {
                "filter-type": "source",
                "column-name": draw(st.sampled_from(["id", "qty", "price"])),
                "filter-conditions": [cond],
            }
        ]
    return rule


EXPRESSIONS = [
    "$Name || '_' || $id",
    "upper($Name)",
    "$qty * $price + 1",
    "CASE WHEN $qty > 1 THEN 'big' ELSE 'small' END",
    "coalesce($Name, 'none')",
    "substr($Name, 2, 2)",
    "round($price / 3, 2)",
    "length($Name) - abs($qty)",
]


@st.composite
def transformation(draw: Any, rid: int) -> dict[str, Any]:
    action = draw(
        st.sampled_from(
            [
                "rename",
                "convert-lowercase",
                "convert-uppercase",
                "add-prefix",
                "remove-prefix",
                "replace-suffix",
                "remove-column",
                "include-column",
                "add-column",
                "change-data-type",
                "add-before-image-columns",
                "define-primary-key",
            ]
        )
    )
    if action == "define-primary-key":
        target = "table"
    elif action in ("remove-column", "include-column", "add-column", "change-data-type", "add-before-image-columns"):
        target = "column"
    else:
        target = draw(st.sampled_from(["schema", "table", "column"]))
    loc: dict[str, str] = {"schema-name": draw(patterns)}
    if target != "schema":
        loc["table-name"] = draw(patterns)
    if action == "define-primary-key":
        loc = {"schema-name": "public", "table-name": "items"}
    if target == "column" and action != "add-column":
        loc["column-name"] = draw(columns)
    rule: dict[str, Any] = {
        "rule-type": "transformation",
        "rule-id": str(rid),
        "rule-target": target,
        "rule-action": action,
        "object-locator": loc,
    }
    if action in ("rename", "add-prefix", "remove-prefix", "replace-suffix", "add-column"):
        rule["value"] = draw(strings)
    if action == "replace-suffix":
        rule["old-value"] = draw(strings)
    if action == "add-column" and draw(st.booleans()):
        rule["expression"] = draw(st.sampled_from(EXPRESSIONS))
    if action == "change-data-type":
        rule["data-type"] = {
            "type": draw(st.sampled_from(["string", "int8", "real8", "numeric", "boolean"])),
            "scale": 2,
        }
    if action == "define-primary-key":
        rule["primary-key-def"] = {
            "name": "pk",
            "columns": draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=2)),
        }
    if action == "add-before-image-columns":
        rule["before-image-def"] = {"column-filter": draw(st.sampled_from(["pk-only", "non-lob", "all"]))}
    return rule


@st.composite
def object_mapping(draw: Any, rid: int) -> dict[str, Any]:
    kt = draw(st.sampled_from(["schema-table", "primary-key", "transaction-id", "constant", "attribute-name"]))
    params: dict[str, Any] = {"partition-key-type": kt}
    if kt == "constant":
        params["partition-key"] = {"value": "K"}
    if kt == "attribute-name":
        params["partition-key-name"] = draw(st.sampled_from([*NAMES, "attr"]))
    params["exclude-columns"] = draw(st.lists(st.sampled_from([n.lower() for n in NAMES]), max_size=3))
    template = st.sampled_from(["${id}", "${name}, ${qty}", "x", "${Name}${price}"])
    params["attribute-mappings"] = draw(
        st.lists(
            st.one_of(
                template.map(lambda v: {"target-attribute-name": "attr", "attribute-type": "scalar", "value": v}),
                template.map(lambda v: {"target-attribute-name": "doc", "value": {"a": {"b": v}, "c": [v, 1]}}),
            ),
            max_size=2,
            unique_by=lambda a: str(a["target-attribute-name"]),
        )
    )
    return {
        "rule-type": "object-mapping",
        "rule-id": str(rid),
        "rule-action": draw(st.sampled_from(["map-record-to-record", "map-record-to-document"])),
        "object-locator": {"schema-name": draw(patterns), "table-name": draw(patterns)},
        "mapping-parameters": params,
    }


@st.composite
def rule_sets(draw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "rule-type": "selection",
            "rule-id": "1",
            "rule-action": "include",
            "object-locator": {"schema-name": "%", "table-name": "%"},
        }
    ]
    n = draw(st.integers(0, 6))
    for i in range(n):
        kind = draw(st.sampled_from([selection, transformation, object_mapping]))
        out.append(draw(kind(i + 2)))
    return out


targets = st.builds(
    TargetConfig,
    stream_name=st.just("s"),
    message_format=st.sampled_from(["json", "json-unformatted"]),
    include_null_and_empty=st.booleans(),
    include_transaction_details=st.booleans(),
    include_partition_value=st.booleans(),
    partition_include_schema_table=st.booleans(),
    include_control_details=st.booleans(),
    control_operation_names=st.sampled_from(["seed", "dms"]),
    before_image=st.builds(
        BeforeImageConfig, enabled=st.booleans(), column_filter=st.sampled_from(["pk-only", "non-lob", "all"])
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rule_sets(),
    targets,
    st.lists(st.tuples(st.sampled_from(list(Op)), st.sampled_from(TABLES), rows, rows), max_size=6),
)
def test_valid_rule_sets_never_crash_the_mapper(
    rules: list[dict[str, Any]], target: TargetConfig, evs: list[Any]
) -> None:
    try:
        mapper = Mapper(parse_rules({"rules": rules}, "m.json"), target, "task")
    except ConfigError as exc:
        # Only a schema-independent conflict the generator can produce (two tables renamed onto one name,
        # before-image setting plus rule) is allowed here; it must still name a rule.
        assert re.search(r"rule-id \d+", str(exc)), exc
        return
    events = [
        ChangeEvent(op, table, after if op is not Op.DELETE else None, before, i, "t", 0.0, f"p{i}", i + 1)
        for i, (op, table, after, before) in enumerate(evs)
    ]
    try:
        records = mapper.map(events)
    except MappingError as exc:
        # Schema-dependent problems (a template column a table lacks, a bad cast, two tables onto one target)
        # are errors by design; they say which table and, where a rule is to blame, which rule.
        assert "public." in str(exc) or "app." in str(exc) or "rule-id" in str(exc), exc
        return
    for r in records:
        doc = orjson.loads(r.data)
        assert r.partition_key
        assert "metadata" in doc


MUTATIONS: list[tuple[str, Any]] = [
    ("rule-action", "frobnicate"),
    ("rule-action", None),
    ("object-locator", "public.items"),
    ("object-locator", {"table-name": "t"}),
    ("object-locator", {"schema-name": "s", "table-name": "t", "colour": "red"}),
    ("object-locator", {"schema-name": "[", "table-name": "t"}),
    ("rule-type", "selektion"),
    ("surprise", 1),
    ("mapping-parameters", {"partition-key-type": "nope"}),
    ("filters", [{"column-name": "id", "filter-conditions": [{"filter-operator": "approx", "value": "1"}]}]),
    ("rule-target", "database"),
    ("value", ""),
    ("data-type", {"type": "uuid"}),
]


@settings(max_examples=300, deadline=None)
@given(rule_sets(), st.data())
def test_invalid_rule_sets_are_rejected_naming_a_rule(rules: list[dict[str, Any]], data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(rules) - 1))
    key, value = data.draw(st.sampled_from(MUTATIONS))
    bad = dict(rules[index])
    if value is None:
        bad.pop(key, None)
    else:
        bad[key] = value
    rules = [*rules[:index], bad, *rules[index + 1 :]]
    try:
        parse_rules({"rules": rules}, "m.json")
    except ConfigError as exc:
        assert str(exc).startswith("m.json: "), exc
        assert re.search(r"rule-id \d+ \(\$\.rules\[\d+\]", str(exc)), exc
        return
    # Every mutation is invalid for every rule kind (unknown keys are rejected too), so acceptance is a bug.
    raise AssertionError(f"accepted an invalid rule: {bad}")
