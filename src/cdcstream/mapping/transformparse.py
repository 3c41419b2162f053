"""The ``transformation`` rules of the mapping file: the action, the rule-target and object-locator it applies
to, then the action's own parameters, each action with a reader of its own (:data:`_ACTION_PARAMETERS`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cdcstream.mapping.expressions import ExpressionError, compile_expression
from cdcstream.mapping.rulecontext import RuleContext, integer, locator, string, unknown_keys
from cdcstream.mapping.rules import NAME_ACTIONS, DataType, TransformationRule
from cdcstream.mapping.wildcards import is_wildcard

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


def _data_type(ctx: RuleContext, raw: Any, path: str) -> DataType:
    if not isinstance(raw, dict):
        raise ctx.error(path, 'must be an object like {"type": "string", "length": 50}')
    unknown_keys(ctx, raw, {"type", "precision", "scale", "length"}, path)
    t = raw.get("type")
    if t in UNSUPPORTED_DATA_TYPES:
        raise ctx.error(f"{path}.type", f"data type {t!r} is not supported by this version of cdcstream")
    if not isinstance(t, str) or t.lower() not in DATA_TYPES:
        raise ctx.error(f"{path}.type", f"unknown data type {t!r} (one of {', '.join(DATA_TYPES)})")
    return DataType(
        t.lower(),
        integer(ctx, raw, "precision", path),
        integer(ctx, raw, "scale", path),
        integer(ctx, raw, "length", path),
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


def transformation(ctx: RuleContext, rule: dict[str, Any]) -> TransformationRule:
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


def _transformation_action(ctx: RuleContext, rule: dict[str, Any]) -> str:
    unknown_keys(ctx, rule, _TRANSFORMATION_KEYS, "")
    action = rule.get("rule-action")
    if action in UNSUPPORTED_ACTIONS:
        raise ctx.error(".rule-action", f"{action} is not supported by this version of cdcstream")
    if action not in TRANSFORMATION_ACTIONS:
        raise ctx.error(
            ".rule-action",
            f"unknown transformation rule-action {action!r} (one of {', '.join(TRANSFORMATION_ACTIONS)})",
        )
    return str(action)


def _drop_unused_nulls(ctx: RuleContext, rule: dict[str, Any], action: str) -> dict[str, Any]:
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


def _transformation_target(ctx: RuleContext, rule: dict[str, Any], action: str) -> str:
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
    ctx: RuleContext, rule: dict[str, Any], action: str, target: str
) -> tuple[dict[str, str], str | None]:
    """The rule's object-locator and the column pattern it applies to (None: no column of its own)."""
    extra: tuple[str, ...] = ("column-name", "data-type") if target == "column" else ()
    loc = locator(ctx, rule, extra=extra, table_required=target != "schema")
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


def _no_parameters(ctx: RuleContext, rule: dict[str, Any]) -> dict[str, Any]:
    return {}


def _name_parameters(ctx: RuleContext, rule: dict[str, Any]) -> dict[str, Any]:
    return {"value": string(ctx, rule, "value", "")}


def _replace_parameters(ctx: RuleContext, rule: dict[str, Any]) -> dict[str, Any]:
    return {"value": string(ctx, rule, "value", ""), "old_value": string(ctx, rule, "old-value", "")}


def _add_column_parameters(ctx: RuleContext, rule: dict[str, Any]) -> dict[str, Any]:
    # add-column's "value" is the new column's name (DMS); its content comes from "expression".
    params: dict[str, Any] = {"value": string(ctx, rule, "value", "")}
    if "expression" in rule:
        expression = string(ctx, rule, "expression", "")
        assert expression is not None
        try:
            compile_expression(expression)
        except ExpressionError as exc:
            raise ctx.error(".expression", f"bad expression {exc}: {expression!r}") from None
        params["expression"] = expression
    if "data-type" in rule:
        params["data_type"] = _data_type(ctx, rule["data-type"], ".data-type")
    return params


def _change_data_type_parameters(ctx: RuleContext, rule: dict[str, Any]) -> dict[str, Any]:
    if "data-type" not in rule:
        raise ctx.error("", 'change-data-type needs "data-type"')
    return {"data_type": _data_type(ctx, rule["data-type"], ".data-type")}


def _primary_key_parameters(ctx: RuleContext, rule: dict[str, Any]) -> dict[str, Any]:
    pk = rule.get("primary-key-def")
    if not isinstance(pk, dict):
        raise ctx.error("", 'define-primary-key needs "primary-key-def": {"name": ..., "columns": [...]}')
    unknown_keys(ctx, pk, {"name", "origin", "columns"}, ".primary-key-def")
    if pk.get("origin", "primary-key") not in ("primary-key", "unique-index"):
        raise ctx.error(".primary-key-def.origin", 'must be "primary-key" or "unique-index"')
    cols = pk.get("columns")
    if not isinstance(cols, list) or not cols or not all(isinstance(c, str) and c for c in cols):
        raise ctx.error(".primary-key-def.columns", "must be a non-empty list of column names")
    return {"key_columns": tuple(cols)}


def _before_image_parameters(ctx: RuleContext, rule: dict[str, Any]) -> dict[str, Any]:
    bdef = rule.get("before-image-def", {})
    if not isinstance(bdef, dict):
        raise ctx.error(".before-image-def", "must be an object")
    unknown_keys(ctx, bdef, {"column-prefix", "column-suffix", "column-filter"}, ".before-image-def")
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


_ACTION_PARAMETERS: dict[str, Callable[[RuleContext, dict[str, Any]], dict[str, Any]]] = {
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
