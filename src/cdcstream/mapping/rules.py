"""The DMS table-mapping file (``{"rules": [...]}``), loaded and validated before anything connects.

Every problem is reported with the file, the rule's ``rule-id``, the JSON path and what is wrong. What this
version does not implement (``lob-settings``, tablespace targets, data masking, collection data types) is
rejected by name rather than silently ignored: a mapping that quietly does less than the user wrote is a data bug.

This module only parses and checks what can be checked without the database. Checks that need the tables'
columns (a ``${column}`` no selected table has, two tables renamed onto one target, ...) are in
:func:`validate_schema`, called by ``cdcstream check`` and, per table, when the mapper compiles a table's plan.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from cdcstream.changes import TableInfo
from cdcstream.errors import ConfigError
from cdcstream.mapping.datatypes import dms_type_name
from cdcstream.mapping.expressions import ExpressionError, compile_expression
from cdcstream.mapping.wildcards import (
    WildcardIndex,
    compile_pattern,
    is_wildcard,
    literal_sql_regex,
    matches,
    sql_regex,
)

PARTITION_KEY_TYPES = ("schema-table", "primary-key", "transaction-id", "constant", "attribute-name")
FILTER_OPERATORS = ("eq", "noteq", "lte", "ste", "gte", "between", "notbetween", "null", "notnull")
NEGATIVE_OPERATORS = ("noteq", "notbetween", "notnull")
NAME_ACTIONS = (
    "rename",
    "convert-lowercase",
    "convert-uppercase",
    "add-prefix",
    "remove-prefix",
    "replace-prefix",
    "add-suffix",
    "remove-suffix",
    "replace-suffix",
)
COLUMN_ACTIONS = (
    "remove-column",
    "include-column",
    "add-column",
    "change-data-type",
    "add-before-image-columns",
)
TRANSFORMATION_ACTIONS = (*NAME_ACTIONS, *COLUMN_ACTIONS, "define-primary-key")
UNSUPPORTED_ACTIONS = ("data-masking-digits-mask", "data-masking-digits-randomize", "data-masking-hash-mask")
DATA_TYPES = (
    "bytes",
    "date",
    "time",
    "datetime",
    "int1",
    "int2",
    "int4",
    "int8",
    "numeric",
    "real4",
    "real8",
    "string",
    "uint1",
    "uint2",
    "uint4",
    "uint8",
    "wstring",
    "blob",
    "nclob",
    "clob",
    "boolean",
)
UNSUPPORTED_DATA_TYPES = ("set", "list", "map", "tuple")
BEFORE_IMAGE_FILTERS = ("pk-only", "non-lob", "all")


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a rule came from, for messages: ``file: rule-id N ($.rules[i])``."""

    source: str
    rule_id: str
    index: int

    def __str__(self) -> str:
        return f"{self.source}: rule-id {self.rule_id} ($.rules[{self.index}])"

    def at(self, json_path: str) -> str:
        return f"{self.source}: rule-id {self.rule_id} ($.rules[{self.index}]{json_path})"


@dataclass(frozen=True, slots=True)
class FilterCondition:
    """One ``filter-conditions`` entry: an operator and its value(s), kept as the strings DMS takes."""

    operator: str
    value: str | None = None
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True, slots=True)
class SourceFilter:
    """One ``filters`` entry: a column and its conditions (OR-ed). A rule's filters are AND-ed."""

    column: str
    conditions: tuple[FilterCondition, ...]
    json_path: str


@dataclass(frozen=True, slots=True)
class SelectionRule:
    """A ``selection`` rule: include, exclude or explicit, by schema/table wildcard, with source filters."""

    rule_id: str
    action: str
    schema: str
    table: str
    table_type: str = "table"
    filters: tuple[SourceFilter, ...] = ()
    origin: Origin = field(default_factory=lambda: Origin("<rules>", "?", 0))

    def matches(self, schema: str, table: str) -> bool:
        if self.table_type == "view":
            return False  # pgoutput/binlogs carry no view changes: a view rule selects nothing in CDC
        if self.action == "explicit":
            return self.schema == schema and self.table == table
        return matches(self.schema, schema) and matches(self.table, table)


@dataclass(frozen=True, slots=True)
class DataType:
    """``data-type`` of ``change-data-type`` / ``add-column``."""

    type: str
    precision: int | None = None
    scale: int | None = None
    length: int | None = None


@dataclass(frozen=True, slots=True)
class TransformationRule:
    """A ``transformation`` rule. ``column`` is set for column targets; ``expression`` for add-column."""

    rule_id: str
    target: str  # schema | table | column
    action: str
    schema: str
    table: str
    column: str | None = None
    data_type_locator: str | None = None
    value: str | None = None
    old_value: str | None = None
    expression: str | None = None
    data_type: DataType | None = None
    key_columns: tuple[str, ...] = ()
    before_prefix: str = "BI_"
    before_suffix: str = ""
    before_filter: str = "pk-only"
    origin: Origin = field(default_factory=lambda: Origin("<rules>", "?", 0))

    def matches_table(self, schema: str, table: str) -> bool:
        if not matches(self.schema, schema):
            return False
        return self.target == "schema" or matches(self.table, table)

    def matches_column(self, name: str, type_names: tuple[str, ...]) -> bool:
        if self.column is not None and not matches(self.column, name):
            return False
        return self.data_type_locator is None or self.data_type_locator.lower() in type_names


@dataclass(frozen=True, slots=True)
class AttributeMapping:
    """One ``attribute-mappings`` entry: a scalar ``${column}`` string template or a JSON document template."""

    name: str
    kind: str  # scalar | document
    value: Any
    json_path: str


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
    attribute_mappings: tuple[AttributeMapping, ...] = ()
    origin: Origin = field(default_factory=lambda: Origin("<rules>", "?", 0))

    def matches(self, schema: str, table: str) -> bool:
        return matches(self.schema, schema) and matches(self.table, table)


@dataclass(frozen=True, slots=True)
class ParallelLoad:
    """A ``table-settings`` rule's ``parallel-load`` for one table (exact names, as DMS requires).

    ``ranges``: ``boundaries`` are upper bounds (row comparison over ``columns``, as text the server casts);
    N boundaries make N+1 segments. Other types (``partitions-auto``, ``none``, ...) carry no boundaries and
    mean "no explicit ranges" here (docs/full-load.md, "Parallelism").
    """

    schema: str
    table: str
    type: str
    columns: tuple[str, ...] = ()
    boundaries: tuple[tuple[str, ...], ...] = ()
    origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class ColumnRules:
    """The transformation rules that decide one source column: for each kind the lowest rule-id matching it."""

    name: str
    keep: TransformationRule | None  # include-column / remove-column
    rename: TransformationRule | None  # a name action
    cast: TransformationRule | None  # change-data-type
    before_image: TransformationRule | None  # add-before-image-columns


@dataclass(frozen=True, slots=True)
class TableRules:
    """Every rule that applies to one table version, resolved once from :class:`MappingRules`.

    A table's plan is built from this value alone, so the rules are searched once per table version and the
    plan never goes back to the rule set. Each field keeps DMS's precedence: the lowest rule-id of a kind wins.
    """

    source: str
    #: The include/explicit rules selecting the table (their source filters are OR-ed); empty without selection
    #: rules or when an exclude rule matches.
    selecting: tuple[SelectionRule, ...]
    schema_name: TransformationRule | None
    table_name: TransformationRule | None
    primary_key: TransformationRule | None
    #: True when some include-column rule applies to the table: columns without one are then left out.
    include_columns: bool
    #: Per source column, in the table's column order.
    columns: tuple[ColumnRules, ...]
    add_columns: tuple[TransformationRule, ...]
    object_mapping: ObjectMapping | None


def _first(rules: Iterable[TransformationRule], actions: Container[str]) -> TransformationRule | None:
    return next((t for t in rules if t.action in actions), None)


def _rid(r: Any) -> int:
    return int(r.rule_id)


@dataclass(frozen=True, slots=True)
class MappingRules:
    """All rules of one mapping file, each kind in rule-id order (lower rule-id wins, as DMS documents)."""

    selections: tuple[SelectionRule, ...] = ()
    object_mappings: tuple[ObjectMapping, ...] = ()
    source: str = "<default: every table>"
    transformations: tuple[TransformationRule, ...] = ()
    table_settings: tuple[ParallelLoad, ...] = ()
    # Per kind, which rules can match a table name: with a rule per table (tens of thousands), testing every
    # rule against every table made start-up quadratic.
    _index: dict[str, WildcardIndex] = field(init=False, repr=False, compare=False)
    _settings: dict[tuple[str, str], ParallelLoad] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {
            "selection": WildcardIndex([r.table for r in self.selections]),
            "object-mapping": WildcardIndex([r.table for r in self.object_mappings]),
            "transformation": WildcardIndex([None if r.target == "schema" else r.table for r in self.transformations]),
        }
        object.__setattr__(self, "_index", index)
        settings: dict[tuple[str, str], ParallelLoad] = {}
        for rule in self.table_settings:
            settings.setdefault((rule.schema, rule.table), rule)  # the lowest rule-id wins
        object.__setattr__(self, "_settings", settings)

    def parallel_load(self, schema: str, table: str) -> ParallelLoad | None:
        """The table-settings ``parallel-load`` of this table (the lowest rule-id wins), or None."""
        return self._settings.get((schema, table))

    def matching_selections(self, schema: str, table: str) -> list[SelectionRule]:
        """Every selection rule (include, explicit or exclude) matching the table, in rule-id order."""
        rules = self.selections
        return [rules[i] for i in self._index["selection"].candidates(table) if rules[i].matches(schema, table)]

    def selects(self, schema: str, table: str) -> bool:
        """DMS semantics: selected when an include/explicit rule matches and no exclude rule does.

        With no selection rules at all every table is selected (cdcstream's default without a mapping file).
        """
        if not self.selections:
            return True
        hits = self.matching_selections(schema, table)
        return bool(hits) and all(r.action != "exclude" for r in hits)

    def selection_regexes(self) -> list[dict[str, Any]]:
        """The selection as PostgreSQL regular expressions, for DDL capture to select new tables in SQL with
        :meth:`selects`' semantics: ``[{"include": bool, "schema": regex, "table": regex}, ...]``. View rules
        select nothing and are left out; no rules at all select everything."""
        if not self.selections:
            return [{"include": True, "schema": "^.*$", "table": "^.*$"}]
        out: list[dict[str, Any]] = []
        for rule in self.selections:
            if rule.table_type == "view":
                continue
            exact = rule.action == "explicit"
            to_regex = literal_sql_regex if exact else sql_regex
            include = rule.action != "exclude"
            out.append({"include": include, "schema": to_regex(rule.schema), "table": to_regex(rule.table)})
        return out

    def selecting_rules(self, schema: str, table: str) -> tuple[SelectionRule, ...]:
        """The include/explicit rules that select the table (empty when it is not selected)."""
        hits = self.matching_selections(schema, table)
        if any(r.action == "exclude" for r in hits):
            return ()
        return tuple(hits)

    def transformations_for(self, schema: str, table: str) -> tuple[TransformationRule, ...]:
        rules = self.transformations
        return tuple(
            rules[i] for i in self._index["transformation"].candidates(table) if rules[i].matches_table(schema, table)
        )

    def object_mappings_for(self, schema: str, table: str) -> list[ObjectMapping]:
        """Every object-mapping rule matching the table, in rule-id order (the first one applies)."""
        rules = self.object_mappings
        return [rules[i] for i in self._index["object-mapping"].candidates(table) if rules[i].matches(schema, table)]

    def object_mapping(self, schema: str, table: str) -> ObjectMapping | None:
        return next(iter(self.object_mappings_for(schema, table)), None)

    def for_table(self, info: TableInfo) -> TableRules:
        """The rules of one table version, resolved (see :class:`TableRules`)."""
        schema, table = info.schema, info.table
        trans = self.transformations_for(schema, table)
        column_rules = [t for t in trans if t.target == "column"]
        columns = []
        for col in info.columns:
            types = (col.type_name.lower(), dms_type_name(col.type_name).lower())
            matching = [t for t in column_rules if t.matches_column(col.name, types)]
            columns.append(
                ColumnRules(
                    col.name,
                    _first(matching, ("include-column", "remove-column")),
                    _first(matching, NAME_ACTIONS),
                    _first(matching, ("change-data-type",)),
                    _first(matching, ("add-before-image-columns",)),
                )
            )
        return TableRules(
            source=self.source,
            selecting=self.selecting_rules(schema, table) if self.selections else (),
            schema_name=_first((t for t in trans if t.target == "schema"), NAME_ACTIONS),
            table_name=_first((t for t in trans if t.target == "table"), NAME_ACTIONS),
            primary_key=_first(trans, ("define-primary-key",)),
            include_columns=any(t.action == "include-column" for t in column_rules),
            columns=tuple(columns),
            add_columns=tuple(t for t in column_rules if t.action == "add-column"),
            object_mapping=self.object_mapping(schema, table),
        )


# --- parsing ------------------------------------------------------------------------------------------------


class _Ctx:
    def __init__(self, path: str, rule_id: str, index: int) -> None:
        self.origin = Origin(path, rule_id, index)
        self.path, self.rule_id, self.index = path, rule_id, index

    def error(self, json_path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.origin.at(json_path)}: {problem}")


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
    if "[" not in value:  # only a [...] set can be malformed
        return value
    try:
        compile_pattern(value)
    except ValueError as exc:
        raise ctx.error(json_path, f"bad wildcard: {exc}") from None
    return value


def _unknown_keys(ctx: _Ctx, obj: dict[str, Any], allowed: set[str], json_path: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise ctx.error(json_path, f"unknown key(s) {sorted(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _locator(
    ctx: _Ctx, rule: dict[str, Any], *, extra: tuple[str, ...] = (), table_required: bool = True
) -> dict[str, str]:
    loc = rule.get("object-locator")
    if not isinstance(loc, dict):
        raise ctx.error("", 'missing "object-locator" object')
    _unknown_keys(ctx, loc, {"schema-name", "table-name", *extra}, ".object-locator")
    out: dict[str, str] = {}
    schema = _string(ctx, loc, "schema-name", ".object-locator")
    assert schema is not None
    out["schema-name"] = _pattern(ctx, schema, ".object-locator.schema-name")
    table = _string(ctx, loc, "table-name", ".object-locator", required=table_required)
    out["table-name"] = _pattern(ctx, table, ".object-locator.table-name") if table is not None else "%"
    for key in extra:
        v = _string(ctx, loc, key, ".object-locator", required=False)
        if v is not None:
            out[key] = _pattern(ctx, v, f".object-locator.{key}") if key == "column-name" else v
    return out


def _filters(ctx: _Ctx, raw: Any) -> tuple[SourceFilter, ...]:
    if not isinstance(raw, list):
        raise ctx.error(".filters", "must be a list of filter objects")
    out: list[SourceFilter] = []
    for fi, f in enumerate(raw):
        path = f".filters[{fi}]"
        if not isinstance(f, dict):
            raise ctx.error(path, "each filter must be an object")
        _unknown_keys(ctx, f, {"filter-type", "column-name", "filter-conditions"}, path)
        if f.get("filter-type", "source") != "source":
            raise ctx.error(f"{path}.filter-type", f'only "source" filters exist, got {f.get("filter-type")!r}')
        column = _string(ctx, f, "column-name", path)
        assert column is not None
        conds = f.get("filter-conditions")
        if not isinstance(conds, list) or not conds:
            raise ctx.error(f"{path}.filter-conditions", "must be a non-empty list of conditions")
        parsed = [_filter_condition(ctx, c, f"{path}.filter-conditions[{ci}]") for ci, c in enumerate(conds)]
        if any(c.operator in NEGATIVE_OPERATORS for c in parsed) and len(parsed) > 1:
            raise ctx.error(
                f"{path}.filter-conditions",
                "a filter with a negative operator (noteq, notbetween, notnull) takes exactly one condition (DMS)",
            )
        out.append(SourceFilter(column, tuple(parsed), path))
    return tuple(out)


def _filter_condition(ctx: _Ctx, c: Any, cpath: str) -> FilterCondition:
    if not isinstance(c, dict):
        raise ctx.error(cpath, "each condition must be an object")
    _unknown_keys(ctx, c, {"filter-operator", "value", "start-value", "end-value"}, cpath)
    op = c.get("filter-operator")
    if op not in FILTER_OPERATORS:
        raise ctx.error(
            f"{cpath}.filter-operator", f"unknown filter-operator {op!r} (one of {', '.join(FILTER_OPERATORS)})"
        )

    def val(key: str) -> str:
        v = c.get(key)
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ctx.error(f"{cpath}", f'filter-operator {op!r} needs "{key}" (a string or number)')
        return str(v)

    if op in ("between", "notbetween"):
        if "value" in c:
            raise ctx.error(f"{cpath}.value", f'{op} takes "start-value" and "end-value", not "value"')
        return FilterCondition(op, start=val("start-value"), end=val("end-value"))
    if op in ("null", "notnull"):
        if set(c) - {"filter-operator"}:
            raise ctx.error(cpath, f"{op} takes no value")
        return FilterCondition(op)
    if "start-value" in c or "end-value" in c:
        raise ctx.error(cpath, f'{op} takes "value", not "start-value"/"end-value"')
    return FilterCondition(op, value=val("value"))


def _selection(ctx: _Ctx, rule: dict[str, Any]) -> SelectionRule:
    _unknown_keys(
        ctx, rule, {"rule-type", "rule-id", "rule-name", "rule-action", "object-locator", "filters", "load-order"}, ""
    )
    action = rule.get("rule-action")
    if action not in ("include", "exclude", "explicit"):
        raise ctx.error(".rule-action", f"selection rule-action must be include, exclude or explicit, got {action!r}")
    loc = _locator(ctx, rule, extra=("table-type",))
    table_type = loc.get("table-type", "table")
    if table_type not in ("table", "view", "all"):
        raise ctx.error(".object-locator.table-type", f'must be "table", "view" or "all", got {table_type!r}')
    if action == "explicit" and ("%" in loc["schema-name"] or "%" in loc["table-name"]):
        raise ctx.error(".object-locator", "explicit rules name one table exactly: no % wildcard")
    filters: tuple[SourceFilter, ...] = ()
    if "filters" in rule:
        filters = _filters(ctx, rule["filters"])
        if filters and action == "exclude":
            raise ctx.error(".filters", "source filters are only allowed on include/explicit rules")
    return SelectionRule(ctx.rule_id, action, loc["schema-name"], loc["table-name"], table_type, filters, ctx.origin)


def _int(ctx: _Ctx, obj: dict[str, Any], key: str, path: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ctx.error(f"{path}.{key}", f"must be an integer, got {v!r}") from None
    if n < 0 or isinstance(v, bool):
        raise ctx.error(f"{path}.{key}", f"must be a non-negative integer, got {v!r}")
    return n


def _data_type(ctx: _Ctx, raw: Any, path: str) -> DataType:
    if not isinstance(raw, dict):
        raise ctx.error(path, 'must be an object like {"type": "string", "length": 50}')
    _unknown_keys(ctx, raw, {"type", "precision", "scale", "length"}, path)
    t = raw.get("type")
    if t in UNSUPPORTED_DATA_TYPES:
        raise ctx.error(f"{path}.type", f"data type {t!r} is not supported by this version of cdcstream")
    if not isinstance(t, str) or t.lower() not in DATA_TYPES:
        raise ctx.error(f"{path}.type", f"unknown data type {t!r} (one of {', '.join(DATA_TYPES)})")
    return DataType(
        t.lower(), _int(ctx, raw, "precision", path), _int(ctx, raw, "scale", path), _int(ctx, raw, "length", path)
    )


_TRANSFORMATION_KEYS = {
    "rule-type",
    "rule-id",
    "rule-name",
    "rule-action",
    "rule-target",
    "object-locator",
    "value",
    "old-value",
    "expression",
    "data-type",
    "primary-key-def",
    "before-image-def",
}
# The rule-targets an action applies to (the name actions: all three).
_ACTION_TARGETS = {
    "remove-column": ("column",),
    "include-column": ("column",),
    "add-column": ("column",),
    "change-data-type": ("column",),
    "add-before-image-columns": ("column",),
    "define-primary-key": ("table",),
}


def _transformation(ctx: _Ctx, rule: dict[str, Any]) -> TransformationRule:
    """Validate a ``transformation`` rule: its action, its target and locator, then the action's parameters."""
    action = _transformation_action(ctx, rule)
    rule = _drop_unused_nulls(ctx, rule, action)
    target = _transformation_target(ctx, rule, action)
    loc, column = _transformation_locator(ctx, rule, action, target)
    params = _ACTION_PARAMETERS.get(action, _no_parameters)(ctx, rule)
    return TransformationRule(
        rule_id=ctx.rule_id,
        target=target,
        action=action,
        schema=loc["schema-name"],
        table=loc["table-name"],
        column=column,
        data_type_locator=loc.get("data-type"),
        origin=ctx.origin,
        **params,
    )


def _transformation_action(ctx: _Ctx, rule: dict[str, Any]) -> str:
    _unknown_keys(ctx, rule, _TRANSFORMATION_KEYS, "")
    action = rule.get("rule-action")
    if action in UNSUPPORTED_ACTIONS:
        raise ctx.error(".rule-action", f"{action} is not supported by this version of cdcstream")
    if action not in TRANSFORMATION_ACTIONS:
        raise ctx.error(
            ".rule-action",
            f"unknown transformation rule-action {action!r} (one of {', '.join(TRANSFORMATION_ACTIONS)})",
        )
    return str(action)


def _drop_unused_nulls(ctx: _Ctx, rule: dict[str, Any], action: str) -> dict[str, Any]:
    """The rule without its null parameters; a parameter the action does not use would be silently ignored, so it
    is rejected instead."""
    uses = {
        "value": action in ("rename", "add-column") or action.endswith(("-prefix", "-suffix")),
        "old-value": action in ("replace-prefix", "replace-suffix"),
        "expression": action == "add-column",
        "data-type": action in ("add-column", "change-data-type"),
        "primary-key-def": action == "define-primary-key",
        "before-image-def": action == "add-before-image-columns",
    }
    # The DMS console writes "value": null and "old-value": null into every transformation rule it exports:
    # null means absent.
    rule = {k: v for k, v in rule.items() if v is not None or k not in uses}
    for key, used in uses.items():
        if key in rule and not used:
            raise ctx.error(f".{key}", f'"{key}" does not apply to {action}')
    return rule


def _transformation_target(ctx: _Ctx, rule: dict[str, Any], action: str) -> str:
    target = rule.get("rule-target")
    if target in ("table-tablespace", "index-tablespace"):
        raise ctx.error(".rule-target", f"{target} rules only apply to Oracle targets; not supported by cdcstream")
    if target not in ("schema", "table", "column"):
        raise ctx.error(".rule-target", f'rule-target must be "schema", "table" or "column", got {target!r}')
    allowed_targets = _ACTION_TARGETS.get(action, ("schema", "table", "column"))
    if target not in allowed_targets:
        raise ctx.error(".rule-target", f"{action} applies to rule-target {' or '.join(allowed_targets)}, not {target}")
    return str(target)


def _transformation_locator(
    ctx: _Ctx, rule: dict[str, Any], action: str, target: str
) -> tuple[dict[str, str], str | None]:
    """The rule's object-locator and the column pattern it applies to (None: no column of its own)."""
    extra: tuple[str, ...] = ("column-name", "data-type") if target == "column" else ()
    loc = _locator(ctx, rule, extra=extra, table_required=target != "schema")
    column = loc.get("column-name")
    needs_column = action in ("remove-column", "include-column", "change-data-type") or (
        target == "column" and action in NAME_ACTIONS
    )
    if needs_column and column is None and "data-type" not in loc:
        raise ctx.error(".object-locator", f'{action} on a column needs "column-name" (wildcards allowed)')
    if action == "add-before-image-columns" and column is None:
        column = "%"
    if action == "define-primary-key" and (is_wildcard(loc["schema-name"]) or is_wildcard(loc["table-name"])):
        raise ctx.error(".object-locator", "define-primary-key names one table exactly: no wildcards (DMS)")
    return loc, column


# --- the parameters of each action, as TransformationRule fields ---


def _no_parameters(ctx: _Ctx, rule: dict[str, Any]) -> dict[str, Any]:
    return {}


def _name_parameters(ctx: _Ctx, rule: dict[str, Any]) -> dict[str, Any]:
    return {"value": _string(ctx, rule, "value", "")}


def _replace_parameters(ctx: _Ctx, rule: dict[str, Any]) -> dict[str, Any]:
    return {"value": _string(ctx, rule, "value", ""), "old_value": _string(ctx, rule, "old-value", "")}


def _add_column_parameters(ctx: _Ctx, rule: dict[str, Any]) -> dict[str, Any]:
    # add-column's "value" is the new column's name (DMS); its content comes from "expression".
    params: dict[str, Any] = {"value": _string(ctx, rule, "value", "")}
    if "expression" in rule:
        expression = _string(ctx, rule, "expression", "")
        assert expression is not None
        try:
            compile_expression(expression)
        except ExpressionError as exc:
            raise ctx.error(".expression", f"bad expression {exc}: {expression!r}") from None
        params["expression"] = expression
    if "data-type" in rule:
        params["data_type"] = _data_type(ctx, rule["data-type"], ".data-type")
    return params


def _change_data_type_parameters(ctx: _Ctx, rule: dict[str, Any]) -> dict[str, Any]:
    if "data-type" not in rule:
        raise ctx.error("", 'change-data-type needs "data-type"')
    return {"data_type": _data_type(ctx, rule["data-type"], ".data-type")}


def _primary_key_parameters(ctx: _Ctx, rule: dict[str, Any]) -> dict[str, Any]:
    pk = rule.get("primary-key-def")
    if not isinstance(pk, dict):
        raise ctx.error("", 'define-primary-key needs "primary-key-def": {"name": ..., "columns": [...]}')
    _unknown_keys(ctx, pk, {"name", "origin", "columns"}, ".primary-key-def")
    if pk.get("origin", "primary-key") not in ("primary-key", "unique-index"):
        raise ctx.error(".primary-key-def.origin", 'must be "primary-key" or "unique-index"')
    cols = pk.get("columns")
    if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
        raise ctx.error(".primary-key-def.columns", "must be a non-empty list of column names")
    return {"key_columns": tuple(cols)}


def _before_image_parameters(ctx: _Ctx, rule: dict[str, Any]) -> dict[str, Any]:
    bdef = rule.get("before-image-def", {})
    if not isinstance(bdef, dict):
        raise ctx.error(".before-image-def", "must be an object")
    _unknown_keys(ctx, bdef, {"column-prefix", "column-suffix", "column-filter"}, ".before-image-def")
    prefix, suffix, flt = (
        bdef.get("column-prefix", "BI_"),
        bdef.get("column-suffix", ""),
        bdef.get("column-filter", "pk-only"),
    )
    if not isinstance(prefix, str) or not isinstance(suffix, str) or not (prefix or suffix):
        raise ctx.error(".before-image-def", "column-prefix/column-suffix must be strings, not both empty")
    if flt not in BEFORE_IMAGE_FILTERS:
        raise ctx.error(".before-image-def.column-filter", f"must be one of {', '.join(BEFORE_IMAGE_FILTERS)}")
    return {"before_prefix": prefix, "before_suffix": suffix, "before_filter": flt}


_ACTION_PARAMETERS: dict[str, Callable[[_Ctx, dict[str, Any]], dict[str, Any]]] = {
    **dict.fromkeys(NAME_ACTIONS, _name_parameters),
    "convert-lowercase": _no_parameters,
    "convert-uppercase": _no_parameters,
    "replace-prefix": _replace_parameters,
    "replace-suffix": _replace_parameters,
    "add-column": _add_column_parameters,
    "change-data-type": _change_data_type_parameters,
    "define-primary-key": _primary_key_parameters,
    "add-before-image-columns": _before_image_parameters,
}


def _attribute_mappings(ctx: _Ctx, raw: Any) -> tuple[AttributeMapping, ...]:
    base = ".mapping-parameters.attribute-mappings"
    if not isinstance(raw, list):
        raise ctx.error(base, "must be a list")
    out: list[AttributeMapping] = []
    names: set[str] = set()
    for i, am in enumerate(raw):
        path = f"{base}[{i}]"
        if not isinstance(am, dict):
            raise ctx.error(path, "each attribute mapping must be an object")
        _unknown_keys(
            ctx, am, {"target-attribute-name", "attribute-name", "attribute-type", "attribute-sub-type", "value"}, path
        )
        # The seed's constant-key example spells it "attribute-name"; both are accepted.
        name = am.get("target-attribute-name", am.get("attribute-name"))
        if not isinstance(name, str) or not name:
            raise ctx.error(path, 'missing "target-attribute-name" (or "attribute-name")')
        if name in names:
            raise ctx.error(path, f"attribute {name!r} is mapped twice")
        names.add(name)
        if "value" not in am:
            raise ctx.error(path, 'missing "value"')
        value = am["value"]
        kind = am.get("attribute-type", "document" if isinstance(value, (dict, list)) else "scalar")
        if kind not in ("scalar", "document"):
            raise ctx.error(f"{path}.attribute-type", f'must be "scalar" or "document", got {kind!r}')
        sub = am.get("attribute-sub-type", "string" if kind == "scalar" else "json")
        if (kind, sub) not in (("scalar", "string"), ("document", "json"), ("document", "dynamodb-map")):
            raise ctx.error(
                f"{path}.attribute-sub-type",
                f"{kind} attributes take sub-type " + ('"string"' if kind == "scalar" else '"json"') + f", got {sub!r}",
            )
        if sub == "dynamodb-map":
            raise ctx.error(f"{path}.attribute-sub-type", "dynamodb-map is for DynamoDB targets, not Kinesis")
        if kind == "scalar" and not isinstance(value, str):
            raise ctx.error(f"{path}.value", 'a scalar attribute\'s value must be a string template like "${col}"')
        try:
            check_template(value)
        except ValueError as exc:
            raise ctx.error(f"{path}.value", str(exc)) from None
        out.append(AttributeMapping(name, kind, value, path))
    return tuple(out)


def template_columns(value: Any) -> list[str]:
    """Every ``${name}`` in a (possibly nested) template."""
    out: list[str] = []
    if isinstance(value, str):
        i = 0
        while (start := value.find("${", i)) != -1:
            end = value.find("}", start)
            if end == -1:
                break
            out.append(value[start + 2 : end])
            i = end + 1
    elif isinstance(value, dict):
        for v in value.values():
            out += template_columns(v)
    elif isinstance(value, list):
        for v in value:
            out += template_columns(v)
    return out


def check_template(value: Any) -> None:
    """ValueError naming the problem for an unclosed ``${`` or an empty ``${}``."""
    if isinstance(value, str):
        i = 0
        while (start := value.find("${", i)) != -1:
            end = value.find("}", start)
            if end == -1:
                raise ValueError(f"unclosed '${{' at position {start} in {value!r}")
            if end == start + 2:
                raise ValueError(f"empty '${{}}' at position {start} in {value!r}")
            i = end + 1
    elif isinstance(value, dict):
        for k, v in value.items():
            if not k:
                raise ValueError("empty key in document template")
            check_template(v)
    elif isinstance(value, list):
        for v in value:
            check_template(v)


def _object_mapping(ctx: _Ctx, rule: dict[str, Any]) -> ObjectMapping:
    _unknown_keys(
        ctx,
        rule,
        {
            "rule-type",
            "rule-id",
            "rule-name",
            "rule-action",
            "object-locator",
            "mapping-parameters",
            "target-table-name",
        },
        "",
    )
    action = rule.get("rule-action")
    if action not in ("map-record-to-record", "map-record-to-document"):
        raise ctx.error(
            ".rule-action",
            f"object-mapping rule-action must be map-record-to-record or map-record-to-document, got {action!r}",
        )
    loc = _locator(ctx, rule)
    params = rule.get("mapping-parameters", {})
    if not isinstance(params, dict):
        raise ctx.error(".mapping-parameters", "must be an object")
    _unknown_keys(
        ctx,
        params,
        {"partition-key-type", "partition-key-name", "partition-key", "exclude-columns", "attribute-mappings"},
        ".mapping-parameters",
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
    if pk_type != "attribute-name" and pk_name is not None:
        raise ctx.error(
            ".mapping-parameters.partition-key-name",
            f'only used with partition-key-type "attribute-name", not {pk_type!r}',
        )
    if pk_type == "constant" and pk_value is None:
        raise ctx.error(".mapping-parameters", 'partition-key-type "constant" needs "partition-key": {"value": ...}')
    if pk_type != "constant" and pk_value is not None:
        raise ctx.error(".mapping-parameters.partition-key", f"only used with a constant key, not {pk_type!r}")
    excl = params.get("exclude-columns", [])
    if not isinstance(excl, list) or not all(isinstance(c, str) and c for c in excl):
        raise ctx.error(".mapping-parameters.exclude-columns", "must be a list of column names")
    attrs = _attribute_mappings(ctx, params.get("attribute-mappings", []))
    target = _string(ctx, rule, "target-table-name", "", required=False)
    if target is not None and (is_wildcard(loc["schema-name"]) or is_wildcard(loc["table-name"])):
        raise ctx.error(
            ".target-table-name", "a rule with a wildcard object-locator would map several tables to one target name"
        )
    # DMS examples write exclude-columns in lower case for mixed-case columns; compare case-insensitively.
    return ObjectMapping(
        ctx.rule_id,
        str(action),
        loc["schema-name"],
        loc["table-name"],
        pk_type,
        pk_name,
        pk_value,
        frozenset(c.lower() for c in excl),
        target,
        attrs,
        ctx.origin,
    )


PARALLEL_LOAD_TYPES = ("partitions-auto", "subpartitions-auto", "partitions-list", "ranges", "none")


def _table_settings(ctx: _Ctx, rule: dict[str, Any]) -> ParallelLoad:
    """Validate a ``table-settings`` rule. ``parallel-load`` only shapes a full load (a ``cdc`` task ignores
    it, as DMS does); ``lob-settings`` would change CDC records and is rejected until implemented."""
    _unknown_keys(
        ctx, rule, {"rule-type", "rule-id", "rule-name", "object-locator", "parallel-load", "lob-settings"}, ""
    )
    if "lob-settings" in rule:
        raise ctx.error(".lob-settings", "lob-settings are not supported by this version of cdcstream")
    loc = _locator(ctx, rule)
    if is_wildcard(loc["schema-name"]) or is_wildcard(loc["table-name"]):
        raise ctx.error(".object-locator", "table-settings name one table exactly: no wildcards (DMS)")
    pl = rule.get("parallel-load")
    if not isinstance(pl, dict):
        raise ctx.error("", 'table-settings needs a "parallel-load" object')
    if pl.get("type") not in PARALLEL_LOAD_TYPES:
        raise ctx.error(
            ".parallel-load.type", f"must be one of {', '.join(PARALLEL_LOAD_TYPES)}, got {pl.get('type')!r}"
        )
    if pl["type"] == "ranges":
        cols, bounds = pl.get("columns"), pl.get("boundaries")
        if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
            raise ctx.error(".parallel-load.columns", "ranges needs a non-empty list of column names")
        if len(cols) > 10:
            raise ctx.error(".parallel-load.columns", "at most 10 columns (DMS)")
        if not isinstance(bounds, list) or not all(isinstance(b, list) and len(b) == len(cols) for b in bounds):
            raise ctx.error(
                ".parallel-load.boundaries", f"must be a list of lists of {len(cols)} value(s), one per column"
            )
        if not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for b in bounds for v in b):
            raise ctx.error(".parallel-load.boundaries", "boundary values must be strings or numbers")
        return ParallelLoad(
            loc["schema-name"],
            loc["table-name"],
            "ranges",
            tuple(cols),
            tuple(tuple(str(v) for v in b) for b in bounds),
            ctx.origin,
        )
    return ParallelLoad(loc["schema-name"], loc["table-name"], str(pl["type"]), origin=ctx.origin)


def _static_conflicts(rules: MappingRules) -> None:
    """Two rules that map two named tables onto one target name: DMS forbids it, so do we."""
    seen: dict[tuple[str, str], tuple[str, Origin]] = {}
    for t in rules.transformations:
        if t.action == "rename" and t.target == "table" and not is_wildcard(t.schema + t.table):
            assert t.value is not None
            key = (t.schema, t.value)
            if key in seen and seen[key][0] != t.table:
                first = seen[key][1]
                raise ConfigError(
                    f"{t.origin.at('.value')}: renames {t.schema}.{t.table} to {t.value!r}, which "
                    f"rule-id {first.rule_id} already maps {t.schema}.{seen[key][0]} to: two source tables cannot "
                    "share one target"
                )
            seen.setdefault(key, (t.table, t.origin))
    targets: dict[tuple[str, str], ObjectMapping] = {}
    for om in rules.object_mappings:
        if om.target_table_name is not None:
            key = (om.schema, om.target_table_name)
            other = targets.get(key)
            if other is not None and other.table != om.table:
                raise ConfigError(
                    f"{om.origin.at('.target-table-name')}: maps {om.schema}.{om.table} to {om.target_table_name!r}, "
                    f"which rule-id {other.rule_id} already maps {other.schema}.{other.table} to: two source tables "
                    "cannot share one target"
                )
            targets[key] = om


def parse_rules(doc: Any, source: str) -> MappingRules:
    """Validate a parsed mapping document; raise :class:`ConfigError` on the first problem."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise ConfigError(f'{source}: expected a JSON object with a "rules" array')
    selections: list[SelectionRule] = []
    transformations: list[TransformationRule] = []
    mappings: list[ObjectMapping] = []
    settings: list[tuple[int, ParallelLoad]] = []
    seen: dict[str, set[str]] = {}
    for index, rule in enumerate(doc["rules"]):
        if not isinstance(rule, dict):
            raise ConfigError(f"{source}: $.rules[{index}]: each rule must be a JSON object")
        raw_id = rule.get("rule-id")
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip().isdigit():
            raise ConfigError(f"{source}: $.rules[{index}].rule-id: must be a number (as a string), got {raw_id!r}")
        rule_id = str(int(str(raw_id).strip()))
        ctx = _Ctx(source, rule_id, index)
        kind = rule.get("rule-type")
        # The seed's third example reuses rule-id 1 for a selection and an object-mapping rule, so ids only
        # need to be unique within one rule type (where "lower rule-id wins" has to be well defined).
        if isinstance(kind, str) and rule_id in seen.setdefault(kind, set()):
            raise ctx.error(".rule-id", f"duplicate rule-id among {kind} rules")
        if isinstance(kind, str):
            seen[kind].add(rule_id)
        if kind == "selection":
            selections.append(_selection(ctx, rule))
        elif kind == "transformation":
            transformations.append(_transformation(ctx, rule))
        elif kind == "object-mapping":
            mappings.append(_object_mapping(ctx, rule))
        elif kind == "table-settings":
            settings.append((int(rule_id), _table_settings(ctx, rule)))
        else:
            raise ctx.error(
                ".rule-type",
                f"unknown rule-type {kind!r} (expected selection, transformation, object-mapping, table-settings)",
            )
    if doc["rules"] and not any(s.action != "exclude" for s in selections):
        raise ConfigError(f"{source}: no include selection rule: DMS needs at least one to capture anything")
    rules = MappingRules(
        tuple(sorted(selections, key=_rid)),
        tuple(sorted(mappings, key=_rid)),
        source,
        tuple(sorted(transformations, key=_rid)),
        tuple(pl for _, pl in sorted(settings, key=lambda s: s[0])),
    )
    _static_conflicts(rules)
    return rules


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


__all__ = [
    "AttributeMapping",
    "ColumnRules",
    "DataType",
    "FilterCondition",
    "MappingRules",
    "ObjectMapping",
    "Origin",
    "ParallelLoad",
    "SelectionRule",
    "SourceFilter",
    "TableRules",
    "TransformationRule",
    "load_rules",
    "parse_rules",
]
