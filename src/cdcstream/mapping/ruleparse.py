"""The DMS table-mapping file (``{"rules": [...]}``), loaded and validated before anything connects.

Every problem is reported with the file, the rule's ``rule-id``, the JSON path and what is wrong. What this
version does not implement (``lob-settings``, tablespace targets, data masking, collection data types) is
rejected by name rather than silently ignored: a mapping that quietly does less than the user wrote is a data bug.

Here the document and the selection, object-mapping and table-settings rules are read; transformation rules in
:mod:`cdcstream.mapping.transformparse`. Only what can be checked without the database is checked: what needs the
tables' columns is checked when a table's plan is compiled (:mod:`cdcstream.mapping.plan`), at run time and by
``cdcstream check``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from cdcstream.errors import ConfigError
from cdcstream.mapping.rulecontext import RuleContext, locator, string, unknown_keys
from cdcstream.mapping.rules import (
    AttributeMapping,
    FilterCondition,
    MappingRules,
    ObjectMapping,
    Origin,
    ParallelLoad,
    SelectionRule,
    SourceFilter,
    TransformationRule,
)
from cdcstream.mapping.transformparse import transformation
from cdcstream.mapping.wildcards import is_wildcard

PARTITION_KEY_TYPES = ("schema-table", "primary-key", "transaction-id", "constant", "attribute-name")
FILTER_OPERATORS = ("eq", "noteq", "lte", "ste", "gte", "between", "notbetween", "null", "notnull")
NEGATIVE_OPERATORS = ("noteq", "notbetween", "notnull")


def _rid(r: Any) -> int:
    return int(r.rule_id)


def _filters(ctx: RuleContext, raw: Any) -> tuple[SourceFilter, ...]:
    if not isinstance(raw, list):
        raise ctx.error(".filters", "must be a list of filter objects")
    out: list[SourceFilter] = []
    for fi, f in enumerate(raw):
        path = f".filters[{fi}]"
        if not isinstance(f, dict):
            raise ctx.error(path, "each filter must be an object")
        unknown_keys(ctx, f, {"filter-type", "column-name", "filter-conditions"}, path)
        if f.get("filter-type", "source") != "source":
            raise ctx.error(f"{path}.filter-type", f'only "source" filters exist, got {f.get("filter-type")!r}')
        column = string(ctx, f, "column-name", path)
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


def _filter_condition(ctx: RuleContext, c: Any, cpath: str) -> FilterCondition:
    if not isinstance(c, dict):
        raise ctx.error(cpath, "each condition must be an object")
    unknown_keys(ctx, c, {"filter-operator", "value", "start-value", "end-value"}, cpath)
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


def _selection(ctx: RuleContext, rule: dict[str, Any]) -> SelectionRule:
    unknown_keys(
        ctx, rule, {"rule-type", "rule-id", "rule-name", "rule-action", "object-locator", "filters", "load-order"}, ""
    )
    action = rule.get("rule-action")
    if action not in ("include", "exclude", "explicit"):
        raise ctx.error(".rule-action", f"selection rule-action must be include, exclude or explicit, got {action!r}")
    loc = locator(ctx, rule, extra=("table-type",))
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


def _attribute_mappings(ctx: RuleContext, raw: Any) -> tuple[AttributeMapping, ...]:
    base = ".mapping-parameters.attribute-mappings"
    if not isinstance(raw, list):
        raise ctx.error(base, "must be a list")
    out: list[AttributeMapping] = []
    names: set[str] = set()
    for i, am in enumerate(raw):
        path = f"{base}[{i}]"
        if not isinstance(am, dict):
            raise ctx.error(path, "each attribute mapping must be an object")
        unknown_keys(
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


def _object_mapping(ctx: RuleContext, rule: dict[str, Any]) -> ObjectMapping:
    unknown_keys(
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
    loc = locator(ctx, rule)
    params = rule.get("mapping-parameters", {})
    if not isinstance(params, dict):
        raise ctx.error(".mapping-parameters", "must be an object")
    unknown_keys(
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
    target = string(ctx, rule, "target-table-name", "", required=False)
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


def _table_settings(ctx: RuleContext, rule: dict[str, Any]) -> ParallelLoad:
    """Validate a ``table-settings`` rule. ``parallel-load`` only shapes a full load (a ``cdc`` task ignores
    it, as DMS does); ``lob-settings`` would change CDC records and is rejected until implemented."""
    unknown_keys(
        ctx, rule, {"rule-type", "rule-id", "rule-name", "object-locator", "parallel-load", "lob-settings"}, ""
    )
    if "lob-settings" in rule:
        raise ctx.error(".lob-settings", "lob-settings are not supported by this version of cdcstream")
    loc = locator(ctx, rule)
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
        ctx = RuleContext(source, rule_id, index)
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
            transformations.append(transformation(ctx, rule))
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


__all__ = ["check_template", "load_rules", "parse_rules"]
