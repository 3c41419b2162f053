"""The DMS table-mapping file (``{"rules": [...]}``), loaded and validated before anything connects.

Every problem is reported with the file, the rule's ``rule-id``, the JSON path and what is wrong. Rule types and
actions this version does not implement are rejected by name rather than silently ignored: a mapping that
quietly does less than the user wrote is a data bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from cdcstream.errors import ConfigError
from cdcstream.mapping.wildcards import compile_pattern, matches

PARTITION_KEY_TYPES = ("schema-table", "primary-key", "transaction-id", "constant", "attribute-name")


@dataclass(frozen=True, slots=True)
class SelectionRule:
    """A ``selection`` rule: include, exclude or explicit, by schema/table wildcard."""

    rule_id: str
    action: str
    schema: str
    table: str

    def matches(self, schema: str, table: str) -> bool:
        if self.action == "explicit":
            return self.schema == schema and self.table == table
        return matches(self.schema, schema) and matches(self.table, table)


@dataclass(frozen=True, slots=True)
class ObjectMapping:
    """An ``object-mapping`` rule (``map-record-to-record`` / ``map-record-to-document``)."""

    rule_id: str
    action: str
    schema: str
    table: str
    partition_key_type: str = "schema-table"
    partition_key_name: str | None = None
    partition_key_value: str | None = None
    exclude_columns: frozenset[str] = field(default_factory=frozenset)
    target_table_name: str | None = None

    def matches(self, schema: str, table: str) -> bool:
        return matches(self.schema, schema) and matches(self.table, table)


@dataclass(frozen=True, slots=True)
class MappingRules:
    """All rules of one mapping file, in rule-id order (lower rule-id wins, as DMS documents)."""

    selections: tuple[SelectionRule, ...] = ()
    object_mappings: tuple[ObjectMapping, ...] = ()
    source: str = "<default: every table>"

    def selects(self, schema: str, table: str) -> bool:
        """DMS semantics: selected when an include/explicit rule matches and no exclude rule does.

        With no selection rules at all every table is selected (cdcstream's default without a mapping file).
        """
        if not self.selections:
            return True
        included = False
        for rule in self.selections:
            if rule.matches(schema, table):
                if rule.action == "exclude":
                    return False
                included = True
        return included

    def object_mapping(self, schema: str, table: str) -> ObjectMapping | None:
        for rule in self.object_mappings:
            if rule.matches(schema, table):
                return rule
        return None


class _Ctx:
    def __init__(self, path: str, rule_id: str, index: int) -> None:
        self.path, self.rule_id, self.index = path, rule_id, index

    def error(self, json_path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: rule-id {self.rule_id} ($.rules[{self.index}]{json_path}): {problem}")


def _string(ctx: _Ctx, obj: dict[str, Any], key: str, json_path: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ctx.error(f"{json_path}", f'missing "{key}"')
        return None
    if not isinstance(value, str) or value == "":
        raise ctx.error(f"{json_path}.{key}", f'"{key}" must be a non-empty string, got {value!r}')
    return value


def _pattern(ctx: _Ctx, value: str, json_path: str) -> str:
    try:
        compile_pattern(value)
    except ValueError as exc:
        raise ctx.error(json_path, f"bad wildcard: {exc}") from None
    return value


def _locator(ctx: _Ctx, rule: dict[str, Any]) -> tuple[str, str]:
    loc = rule.get("object-locator")
    if not isinstance(loc, dict):
        raise ctx.error("", 'missing "object-locator" object')
    schema = _string(ctx, loc, "schema-name", ".object-locator")
    table = _string(ctx, loc, "table-name", ".object-locator")
    assert schema is not None and table is not None
    unknown = set(loc) - {"schema-name", "table-name", "table-type"}
    if unknown:
        raise ctx.error(".object-locator", f"unknown key(s) {sorted(unknown)}")
    if loc.get("table-type", "table") not in ("table", "view", "all"):
        raise ctx.error(".object-locator.table-type", 'must be "table", "view" or "all"')
    return _pattern(ctx, schema, ".object-locator.schema-name"), _pattern(ctx, table, ".object-locator.table-name")


def _selection(ctx: _Ctx, rule: dict[str, Any]) -> SelectionRule:
    action = rule.get("rule-action")
    if action not in ("include", "exclude", "explicit"):
        raise ctx.error(".rule-action", f"selection rule-action must be include, exclude or explicit, got {action!r}")
    if rule.get("filters"):
        raise ctx.error(".filters", "source filters are not supported by this version of cdcstream")
    schema, table = _locator(ctx, rule)
    return SelectionRule(ctx.rule_id, action, schema, table)


def _object_mapping(ctx: _Ctx, rule: dict[str, Any]) -> ObjectMapping:
    action = rule.get("rule-action")
    if action not in ("map-record-to-record", "map-record-to-document"):
        raise ctx.error(
            ".rule-action",
            f"object-mapping rule-action must be map-record-to-record or map-record-to-document, got {action!r}",
        )
    if action == "map-record-to-document":
        raise ctx.error(".rule-action", "map-record-to-document is not supported by this version of cdcstream")
    schema, table = _locator(ctx, rule)
    params = rule.get("mapping-parameters", {})
    if not isinstance(params, dict):
        raise ctx.error(".mapping-parameters", "must be an object")
    if params.get("attribute-mappings"):
        raise ctx.error(
            ".mapping-parameters.attribute-mappings", "attribute-mappings are not supported by this version"
        )
    pk_value = None
    if "partition-key" in params:
        pk = params["partition-key"]
        if not isinstance(pk, dict) or not isinstance(pk.get("value"), str) or not pk["value"]:
            raise ctx.error(".mapping-parameters.partition-key", 'expected {"value": "<constant key>"}')
        pk_value = pk["value"]
    pk_type = params.get("partition-key-type", "constant" if pk_value is not None else "schema-table")
    if pk_type not in PARTITION_KEY_TYPES:
        raise ctx.error(
            ".mapping-parameters.partition-key-type",
            f"must be one of {', '.join(PARTITION_KEY_TYPES)}; got {pk_type!r}",
        )
    pk_name = params.get("partition-key-name")
    if pk_type == "attribute-name" and not (isinstance(pk_name, str) and pk_name):
        raise ctx.error(".mapping-parameters", 'partition-key-type "attribute-name" needs "partition-key-name"')
    if pk_type == "constant" and pk_value is None:
        raise ctx.error(".mapping-parameters", 'partition-key-type "constant" needs "partition-key": {"value": ...}')
    excl = params.get("exclude-columns", [])
    if not isinstance(excl, list) or not all(isinstance(c, str) for c in excl):
        raise ctx.error(".mapping-parameters.exclude-columns", "must be a list of column names")
    target = _string(ctx, rule, "target-table-name", "", required=False)
    # DMS examples write exclude-columns in lower case for mixed-case columns; compare case-insensitively.
    return ObjectMapping(
        ctx.rule_id,
        action,
        schema,
        table,
        pk_type,
        pk_name,
        pk_value,
        frozenset(c.lower() for c in excl),
        target,
    )


def parse_rules(doc: Any, source: str) -> MappingRules:
    """Validate a parsed mapping document; raise :class:`ConfigError` on the first problem."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise ConfigError(f'{source}: expected a JSON object with a "rules" array')
    selections: list[tuple[int, SelectionRule]] = []
    mappings: list[tuple[int, ObjectMapping]] = []
    seen: set[str] = set()
    for index, rule in enumerate(doc["rules"]):
        if not isinstance(rule, dict):
            raise ConfigError(f"{source}: $.rules[{index}]: each rule must be a JSON object")
        raw_id = rule.get("rule-id")
        if not isinstance(raw_id, (str, int)) or not str(raw_id).strip().isdigit():
            raise ConfigError(f"{source}: $.rules[{index}].rule-id: must be a number (as a string), got {raw_id!r}")
        rule_id = str(raw_id).strip()
        ctx = _Ctx(source, rule_id, index)
        kind = rule.get("rule-type")
        if kind == "selection":
            if rule_id in seen:
                raise ctx.error(".rule-id", "duplicate rule-id among selection rules")
            seen.add(rule_id)
            selections.append((int(rule_id), _selection(ctx, rule)))
        elif kind == "object-mapping":
            mappings.append((int(rule_id), _object_mapping(ctx, rule)))
        elif kind in ("transformation", "table-settings"):
            raise ctx.error(".rule-type", f"{kind} rules are not supported by this version of cdcstream")
        else:
            raise ctx.error(
                ".rule-type",
                f"unknown rule-type {kind!r} (expected selection, transformation, object-mapping, table-settings)",
            )
    selections.sort(key=lambda p: p[0])
    mappings.sort(key=lambda p: p[0])
    if doc["rules"] and not selections:
        raise ConfigError(f"{source}: no selection rule: DMS needs at least one include rule to capture anything")
    return MappingRules(tuple(r for _, r in selections), tuple(r for _, r in mappings), source)


def load_rules(path: Path | None) -> MappingRules:
    """Load a mapping file, or the default (every table, schema-table keys) when ``path`` is None."""
    if path is None:
        return MappingRules()
    try:
        doc = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read table mapping file: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return parse_rules(doc, str(path))
