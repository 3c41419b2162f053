"""The column phase of a table's plan: which source columns records carry, under which names and types, the
columns ``add-column`` rules compute and the before-image columns; with the name helpers every phase uses (the
name a rule gives, a name written in a rule resolved to a column).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cdcstream.changes import ChangeEvent, Column
from cdcstream.errors import MappingError
from cdcstream.mapping.datatypes import converter, data_type_name, dms_type_name, is_lob
from cdcstream.mapping.expressions import ExpressionError, compile_expression
from cdcstream.mapping.rules import ColumnRules, Origin, TransformationRule

Row = dict[str, Any]


def resolver(names: Sequence[str]) -> Callable[[str], str | None]:
    """Exact match first, then a unique case-insensitive one (DMS examples write ``${lastname}`` for LastName)."""
    exact = set(names)
    folded: dict[str, list[str]] = {}
    for n in names:
        folded.setdefault(n.casefold(), []).append(n)

    def resolve(name: str) -> str | None:
        if name in exact:
            return name
        found = folded.get(name.casefold(), [])
        return found[0] if len(found) == 1 else None

    return resolve


def apply_name(rule: TransformationRule, name: str) -> str:
    """The new name one name-changing transformation gives ``name``."""
    a, v, old = rule.action, rule.value or "", rule.old_value or ""
    if a == "rename":
        return v
    if a == "convert-lowercase":
        return name.lower()
    if a == "convert-uppercase":
        return name.upper()
    if a == "add-prefix":
        return v + name
    if a == "add-suffix":
        return name + v
    if a == "remove-prefix":
        return name[len(v) :] if name.startswith(v) else name
    if a == "remove-suffix":
        return name[: -len(v)] if v and name.endswith(v) else name
    if a == "replace-prefix":
        return v + name[len(old) :] if name.startswith(old) else name
    if a == "replace-suffix":
        return name[: -len(old)] + v if old and name.endswith(old) else name
    raise AssertionError(a)


class Columns:
    """The column phase of a plan: which source columns are written, under which names and types, the added and
    before-image columns, and every output name (for collision messages)."""

    def __init__(self, label: str, source: str, applied: list[str]) -> None:
        self.label, self.source, self.applied = label, source, applied
        self.cols: list[tuple[str, str, Callable[[Any], Any] | None]] = []  # (source, out, cast)
        self.table_def: dict[str, dict[str, Any]] = {}
        self.renamed: dict[str, str] = {}
        self.out_names: dict[str, str] = {}  # out name -> what produced it
        self.out_origin: dict[str, Origin | None] = {}  # out name -> the rule that renamed a column to it
        self.bis: list[tuple[str, str]] = []  # (source column, before-image column)
        self.bi_origin: dict[str, Origin] = {}
        self.adds: list[tuple[str, Callable[[Any], Any], Callable[[Any], Any] | None]] = []

    def source_column(self, col: Column, cr: ColumnRules, include_columns: bool, key_columns: tuple[str, ...]) -> None:
        keep = not include_columns
        if cr.keep is not None:
            keep = cr.keep.action == "include-column"
            self.applied.append(f"rule-id {cr.keep.rule_id} {cr.keep.action} {col.name}")
        out = col.name
        name_rule: Origin | None = None
        if cr.rename is not None:
            out, name_rule = apply_name(cr.rename, col.name), cr.rename.origin
            if out != col.name:
                self.applied.append(f"rule-id {cr.rename.rule_id} {cr.rename.action} column {col.name} -> {out}")
        conv: Callable[[Any], Any] | None = None
        type_name = dms_type_name(col.type_name)
        if cr.cast is not None:
            t = cr.cast
            assert t.data_type is not None
            conv = guarded(converter(t.data_type), f"{t.origin}: {self.label}.{col.name}")
            type_name = data_type_name(t.data_type)
            self.applied.append(f"rule-id {t.rule_id} change-data-type {col.name} -> {t.data_type.type}")
        if cr.before_image is not None:
            t = cr.before_image
            if t.before_filter == "all" or (
                (t.before_filter == "pk-only" and col.name in key_columns)
                or (t.before_filter == "non-lob" and not is_lob(col.type_name))
            ):
                self.bis.append((col.name, f"{t.before_prefix}{out}{t.before_suffix}"))
                self.bi_origin[col.name] = t.origin
        if not keep:
            return
        if out in self.out_names:
            culprit = name_rule or self.out_origin.get(out)
            where = f"{culprit.at('.rule-action')}: " if culprit else f"{self.source}: "
            raise MappingError(
                f"{where}{self.label}: columns {self.out_names[out]!r} and {col.name!r} would both be written as "
                f"{out!r}: one key per column"
            )
        self.out_names[out] = col.name
        self.out_origin[out] = name_rule
        if out != col.name:
            self.renamed[col.name] = out
        self.cols.append((col.name, out, conv))
        self.table_def[out] = {"type": type_name, "nullable": col.nullable and col.name not in key_columns}

    def added_column(self, t: TransformationRule, resolve_src: Callable[[str], str | None]) -> None:
        label = self.label
        assert t.value is not None
        if t.value in self.out_names:
            raise MappingError(f"{t.origin.at('.value')}: {label} already has a column {t.value!r}")
        self.out_names[t.value] = f"rule-id {t.rule_id}"

        def res(name: str, pos: int) -> str:
            found = resolve_src(name)
            if found is None:
                raise ExpressionError(f"{label} has no column {name!r}", pos)
            return found

        if t.expression is not None:
            try:
                expr = compile_expression(t.expression, res)
            except ExpressionError as exc:
                raise MappingError(f"{t.origin.at('.expression')}: bad expression {exc}") from None
            ev_fn = guarded_expression(expr.evaluate_env, f"{t.origin.at('.expression')}: {label}")
        else:
            ev_fn = lambda env: None  # noqa: E731
        conv = guarded(converter(t.data_type), f"{t.origin}: {label}.{t.value}") if t.data_type else None
        self.adds.append((t.value, ev_fn, conv))
        tdef: dict[str, Any] = {"type": data_type_name(t.data_type) if t.data_type else "STRING", "nullable": True}
        if t.data_type and t.data_type.length is not None:
            tdef["length"] = t.data_type.length
        self.table_def[t.value] = tdef
        self.applied.append(f"rule-id {t.rule_id} add-column {t.value}")

    def before_image_names(self) -> None:
        for src_col, o in self.bis:
            if o in self.out_names:
                raise MappingError(
                    f"{self.bi_origin[src_col].at('.before-image-def')}: {self.label}: before-image column {o!r} "
                    "collides with a column of the same name"
                )
            self.out_names[o] = "add-before-image-columns"

    def transform(self, ncolumns: int) -> Callable[[ChangeEvent, Row], Row] | None:
        """The row transformation, or None when records carry the source row as it is."""
        cols, adds, bis = tuple(self.cols), tuple(self.adds), tuple(self.bis)
        if not adds and not bis and all(s == o and c is None for s, o, c in cols) and len(cols) == ncolumns:
            return None

        def transform(ev: ChangeEvent, src: Row) -> Row:
            out: Row = {}
            for s, o, c in cols:
                if s in src:
                    v = src[s]
                    out[o] = c(v) if c is not None else v
            env = (src, ev)
            for o, fn, c in adds:
                v = fn(env)
                out[o] = c(v) if c is not None else v
            if bis:
                before = ev.before or {}
                for s, o in bis:
                    if s in before:
                        out[o] = before[s]
            return out

        return transform


def guarded(conv: Callable[[Any], Any], where: str) -> Callable[[Any], Any]:
    def guarded(v: Any) -> Any:
        try:
            return conv(v)
        except ValueError as exc:
            raise MappingError(f"{where}: {exc}") from None

    return guarded


def guarded_expression(fn: Callable[[Any], Any], where: str) -> Callable[[Any], Any]:
    """Arithmetic on extreme values (a float overflow, ...) becomes an error naming the rule, not a crash."""

    def guarded(env: Any) -> Any:
        try:
            return fn(env)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise MappingError(f"{where}: cannot evaluate for this row: {exc}") from None

    return guarded
