"""Reading one rule of the mapping file: where it is (for every message: file, rule-id, JSON path) and the
readers of the fields every rule type shares (strings, wildcards, object-locators, integers, unknown keys).
"""

from __future__ import annotations

from typing import Any

from cdcstream.errors import ConfigError
from cdcstream.mapping.rules import Origin
from cdcstream.mapping.wildcards import compile_pattern


class RuleContext:
    """The rule being read: its :class:`Origin`, and errors that name it and the JSON path inside it."""

    def __init__(self, path: str, rule_id: str, index: int) -> None:
        self.origin = Origin(path, rule_id, index)
        self.path, self.rule_id, self.index = path, rule_id, index

    def error(self, json_path: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.origin.at(json_path)}: {problem}")


def string(ctx: RuleContext, obj: dict[str, Any], key: str, json_path: str, *, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ctx.error(f"{json_path}", f'missing "{key}"')
        return None
    if not isinstance(value, str) or value == "":
        raise ctx.error(f"{json_path}.{key}", f'"{key}" must be a non-empty string, got {value!r}')
    return value


def pattern(ctx: RuleContext, value: str, json_path: str) -> str:
    if "[" not in value:  # only a [...] set can be malformed
        return value
    try:
        compile_pattern(value)
    except ValueError as exc:
        raise ctx.error(json_path, f"bad wildcard: {exc}") from None
    return value


def unknown_keys(ctx: RuleContext, obj: dict[str, Any], allowed: set[str], json_path: str) -> None:
    unknown = set(obj) - allowed
    if unknown:
        raise ctx.error(json_path, f"unknown key(s) {sorted(unknown)} (allowed: {', '.join(sorted(allowed))})")


def locator(
    ctx: RuleContext, rule: dict[str, Any], *, extra: tuple[str, ...] = (), table_required: bool = True
) -> dict[str, str]:
    loc = rule.get("object-locator")
    if not isinstance(loc, dict):
        raise ctx.error("", 'missing "object-locator" object')
    unknown_keys(ctx, loc, {"schema-name", "table-name", *extra}, ".object-locator")
    out: dict[str, str] = {}
    schema = string(ctx, loc, "schema-name", ".object-locator")
    assert schema is not None
    out["schema-name"] = pattern(ctx, schema, ".object-locator.schema-name")
    table = string(ctx, loc, "table-name", ".object-locator", required=table_required)
    out["table-name"] = pattern(ctx, table, ".object-locator.table-name") if table is not None else "%"
    for key in extra:
        v = string(ctx, loc, key, ".object-locator", required=False)
        if v is not None:
            out[key] = pattern(ctx, v, f".object-locator.{key}") if key == "column-name" else v
    return out


def integer(ctx: RuleContext, obj: dict[str, Any], key: str, path: str) -> int | None:
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
