"""Per-table compilation of the mapping rules into a :class:`TablePlan`.

Everything that depends only on the table's schema and the rules — which columns survive and under which
names, type casts, computed columns, source filters, object-mapping templates, the partition-key function,
``control.table-def`` — is decided once per table version here. The per-row work left for
:class:`~cdcstream.mapping.envelope.Mapper` is a few closure calls; with the default mapping it is none at all.

Errors found while compiling (a ``${column}`` the table lacks, a partition-key column that does not exist, two
columns renamed to one name, ...) raise :class:`MappingError` naming the file, the rule-id, the JSON path and the
table: at run time when the table's first change arrives, and in ``cdcstream check`` for every selected table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from cdcstream.changes import ChangeEvent, Column, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.errors import MappingError
from cdcstream.mapping.datatypes import converter, data_type_name, dms_type_name, is_lob
from cdcstream.mapping.expressions import ExpressionError, compile_expression
from cdcstream.mapping.rules import (
    AttributeMapping,
    ColumnRules,
    FilterCondition,
    MappingRules,
    ObjectMapping,
    Origin,
    SelectionRule,
    TableRules,
    TransformationRule,
)

Row = dict[str, Any]
_NUMERIC_TYPES = frozenset(
    {"int2", "int4", "int8", "oid", "float4", "float8", "numeric", "money", "smallint", "integer", "int", "bigint",
     "tinyint", "mediumint", "decimal", "float", "double", "real"}
)  # fmt: skip
_TIME_TYPES = frozenset({"timestamp", "timestamptz", "datetime", "time", "timetz"})


def key_text(v: Any) -> str:
    """A partition-key component as text (NULL as ``null``: Kinesis refuses empty keys)."""
    if isinstance(v, str):
        return v
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return orjson.dumps(v).decode()
    return str(v)


def value_text(v: Any) -> str:
    """A value inside a scalar ``${column}`` template (NULL as the empty string)."""
    return "" if v is None else key_text(v)


def _resolver(names: Sequence[str]) -> Callable[[str], str | None]:
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


# --- source filters -----------------------------------------------------------------------------------------


def _condition(c: FilterCondition, column: Column, where: str) -> Callable[[Any], bool]:
    """A predicate on one (non-missing) value. Numeric columns compare as numbers, others as text (SQLite)."""
    tname = column.type_name.lower()
    numeric = tname in _NUMERIC_TYPES
    if c.operator == "null":
        return lambda v: v is None
    if c.operator == "notnull":
        return lambda v: v is not None

    def parse(s: str | None) -> Any:
        assert s is not None
        if numeric:
            try:
                return Decimal(s.strip())
            except InvalidOperation:
                raise MappingError(f"{where}: {s!r} is not a number, but column {column.name!r} is {tname}") from None
        return s

    safe = _safe_predicate(numeric, tname)
    op = c.operator
    if op in ("between", "notbetween"):
        lo, hi = parse(c.start), parse(c.end)
        if op == "between":
            return safe(lambda x: bool(lo <= x <= hi))
        return safe(lambda x: not (lo <= x <= hi))
    val = parse(c.value)
    tests: dict[str, Callable[[Any], bool]] = {
        "eq": lambda x: bool(x == val),
        "noteq": lambda x: bool(x != val),
        "lte": lambda x: bool(x <= val),
        "ste": lambda x: bool(x <= val),
        "gte": lambda x: bool(x >= val),
    }
    return safe(tests[op])


def _safe_predicate(numeric: bool, tname: str) -> Callable[[Callable[[Any], bool]], Callable[[Any], bool]]:
    """Wraps a comparison of normalised values into a predicate on raw values (NULL and NaN match nothing)."""

    def norm(v: Any) -> Any:
        if numeric:
            if isinstance(v, bool):
                return Decimal(int(v))
            try:
                return Decimal(str(v)) if not isinstance(v, int) else v
            except InvalidOperation:
                return None
        if isinstance(v, bool):
            return "true" if v else "false"
        s = v if isinstance(v, str) else str(v)
        if tname in _TIME_TYPES:
            # The source renders 2026-11-27T12:00:00.5Z; DMS filters are written 2026-11-27 12:00:00.
            s = s.replace("T", " ", 1).removesuffix("Z")
        return s

    def safe(test: Callable[[Any], bool]) -> Callable[[Any], bool]:
        def pred(v: Any) -> bool:
            if v is None:
                return False  # SQLite: a comparison with NULL is not true
            x = norm(v)
            if x is None:
                return False
            try:
                return test(x)
            except (InvalidOperation, TypeError):
                return False  # NaN and friends match nothing

        return pred

    return safe


def compile_filter(rules: Sequence[SelectionRule], info: TableInfo) -> Callable[[Row], bool] | None:
    """The row filter of a table: OR over its selecting rules, AND over a rule's filters, OR over conditions.

    A rule without filters selects every row, so then there is no filter at all. A filter column missing from
    the row (a PostgreSQL DELETE carries only the key unless REPLICA IDENTITY FULL; an unchanged TOASTed value)
    does not reject it: the value is unknown, and dropping a DELETE would leave a consumer's copy of the row
    forever (DMS drops such DELETEs; docs/table-mappings.md, "Source filters").
    """
    if not rules or any(not r.filters for r in rules):
        return None
    by_name = {c.name: c for c in info.columns}
    resolve = _resolver([c.name for c in info.columns])
    compiled: list[list[tuple[str, list[Callable[[Any], bool]]]]] = []
    for rule in rules:
        preds: list[tuple[str, list[Callable[[Any], bool]]]] = []
        for f in rule.filters:
            name = resolve(f.column)
            if name is None:
                raise MappingError(
                    f"{rule.origin.at(f.json_path + '.column-name')}: {info.schema}.{info.table} has no column "
                    f"{f.column!r} (columns: {', '.join(by_name)})"
                )
            where = rule.origin.at(f.json_path)
            preds.append((name, [_condition(c, by_name[name], where) for c in f.conditions]))
        compiled.append(preds)

    def passes(row: Row) -> bool:
        for preds in compiled:
            for name, conds in preds:
                if name in row:
                    v = row[name]
                    for cond in conds:
                        if cond(v):
                            break
                    else:
                        break
            else:
                return True
        return False

    return passes


# --- object-mapping templates -------------------------------------------------------------------------------


def _compile_template(
    value: Any, scalar: bool, resolve: Callable[[str], str | None], fail: Callable[[str], MappingError]
) -> Callable[[Row], Any]:
    if isinstance(value, str):
        parts: list[tuple[bool, str]] = []  # (is_column, text or key)
        i = 0
        while (start := value.find("${", i)) != -1:
            end = value.find("}", start)
            if start > i:
                parts.append((False, value[i:start]))
            name = value[start + 2 : end]
            key = resolve(name)
            if key is None:
                raise fail(name)
            parts.append((True, key))
            i = end + 1
        if i < len(value):
            parts.append((False, value[i:]))
        if len(parts) == 1 and parts[0][0]:
            key = parts[0][1]
            if scalar:
                return lambda row: None if row.get(key) is None else value_text(row.get(key))
            return lambda row: row.get(key)  # a whole-value placeholder in a document keeps the JSON type
        if not any(is_col for is_col, _ in parts):
            const = value
            return lambda row: const
        frozen = tuple(parts)
        return lambda row: "".join(value_text(row.get(t)) if is_col else t for is_col, t in frozen)
    if isinstance(value, dict):
        items = [(k, _compile_template(v, False, resolve, fail)) for k, v in value.items()]
        return lambda row: {k: fn(row) for k, fn in items}
    if isinstance(value, list):
        elems = [_compile_template(v, False, resolve, fail) for v in value]
        return lambda row: [fn(row) for fn in elems]
    const_v = value
    return lambda row: const_v


# --- the plan -----------------------------------------------------------------------------------------------


def _drop_nulls(d: Row) -> Row:
    return {k: v for k, v in d.items() if v is not None} if None in d.values() else d


def _target_names(info: TableInfo, tr: TableRules) -> tuple[str, str, list[tuple[TransformationRule, str, str]]]:
    """The schema and table names records of ``info`` are written under, and the rules that decided them."""
    schema_out, table_out = info.schema, info.table
    named: list[tuple[TransformationRule, str, str]] = []
    if tr.schema_name is not None:
        schema_out = apply_name(tr.schema_name, info.schema)
        named.append((tr.schema_name, "schema", schema_out))
    if tr.table_name is not None:
        table_out = apply_name(tr.table_name, info.table)
        named.append((tr.table_name, "table", table_out))
    return schema_out, table_out, named


class _Columns:
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
            conv = _guarded(converter(t.data_type), f"{t.origin}: {self.label}.{col.name}")
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
            ev_fn = _guarded_expression(expr.evaluate_env, f"{t.origin.at('.expression')}: {label}")
        else:
            ev_fn = lambda env: None  # noqa: E731
        conv = _guarded(converter(t.data_type), f"{t.origin}: {label}.{t.value}") if t.data_type else None
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


class TablePlan:
    """Everything needed to turn one table version's events into records, decided once.

    Built from the table's resolved rules (:meth:`MappingRules.for_table`), phase by phase: selection and source
    filters, target names, key columns, columns, object mapping, partition keys, endpoint before image.
    """

    __slots__ = (
        "applied",
        "before_image",
        "excluded",
        "filter",
        "key_of",
        "key_type",
        "label",
        "load_key_of",
        "load_key_type",
        "name_origins",
        "outputs",
        "renamed",
        "schema",
        "schema_out",
        "shape",
        "table",
        "table_def",
        "table_name",
    )

    @classmethod
    def names_only(cls, info: TableInfo, rules: MappingRules) -> TablePlan:
        """A plan that can only name the table (for control records): when the source does not know the table's
        columns (MySQL before its first row event), rules about columns cannot be applied, but a DROP or ALTER
        must still be written under the right name."""
        tr = rules.for_table(info)
        plan = cls.__new__(cls)
        plan.schema, plan.table = info.schema, info.table
        plan.label = f"{info.schema}.{info.table}"
        plan.schema_out, plan.table_name, _ = _target_names(info, tr)
        om = tr.object_mapping
        if om is not None and om.target_table_name:
            plan.table_name = om.target_table_name
        plan.table_def = None
        plan.outputs = {c.name: c.name for c in info.columns}  # column rules unknown here: source names
        return plan

    def __init__(self, info: TableInfo, rules: MappingRules, target: TargetConfig) -> None:
        tr = rules.for_table(info)
        self.schema, self.table = info.schema, info.table
        self.label = f"{info.schema}.{info.table}"
        self.applied: list[str] = []  # "rule-id N: what it does here", for cdcstream check
        self.name_origins: list[Origin] = []

        self.filter = compile_filter(tr.selecting, info)
        for r in tr.selecting:
            self.applied.append(
                f"rule-id {r.rule_id} selection {r.action}" + (f" with {len(r.filters)} filter(s)" if r.filters else "")
            )
        schema_out, table_out, named = _target_names(info, tr)
        for t, what, value in named:
            self.applied.append(f"rule-id {t.rule_id} {t.action} {what} -> {value}")
            self.name_origins.append(t.origin)
        key_columns = self._key_columns(info, tr)

        columns = _Columns(self.label, tr.source, self.applied)
        for col, cr in zip(info.columns, tr.columns, strict=True):
            columns.source_column(col, cr, tr.include_columns, key_columns)
        if columns.bis:
            self.applied.append(f"add-before-image-columns: {', '.join(o for _, o in columns.bis)}")
        resolve_src = _resolver([c.name for c in info.columns])
        for t in tr.add_columns:
            columns.added_column(t, resolve_src)
        columns.before_image_names()
        self.renamed = columns.renamed
        transform = columns.transform(len(info.columns))
        out_cols = list(columns.out_names)  # transformed row's names, in order

        om = tr.object_mapping
        self.key_type = om.partition_key_type if om else "schema-table"
        if om is not None and om.target_table_name:
            table_out = om.target_table_name
            self.name_origins.append(om.origin)
        self.schema_out, self.table_name = schema_out, table_out
        attr_names, document = self._object_mapping(om, columns, out_cols, transform, target)

        self.key_of = self._partition_key(
            info, om, key_columns, target, out_cols, attr_names, self.excluded, document, columns.cols
        )
        # Full-load rows: DMS partitions them by primary key when no object-mapping rule says otherwise
        # (schema.table.pk with partition_include_schema_table); a table without a key keeps schema-table.
        self.load_key_type = self.key_type
        self.load_key_of = self.key_of
        if om is None and key_columns:
            self.load_key_type = "primary-key"
            self.load_key_of = _primary_key_function(self, key_columns, target)
        self.before_image = _endpoint_before_image(info, columns.cols, key_columns, target)
        self.table_def: dict[str, Any] | None = None
        if target.include_control_details:
            self.table_def = {
                "columns": columns.table_def,
                "primary-key": [columns.renamed.get(k, k) for k in key_columns],
            }

    def _key_columns(self, info: TableInfo, tr: TableRules) -> tuple[str, ...]:
        """The table's key: its own, or the columns a define-primary-key rule names."""
        pk_rule = tr.primary_key
        if pk_rule is None:
            return info.key_columns
        resolve_src = _resolver([c.name for c in info.columns])
        keys = []
        for k in pk_rule.key_columns:
            src = resolve_src(k)
            if src is None:
                raise MappingError(f"{pk_rule.origin.at('.primary-key-def.columns')}: {self.label} has no column {k!r}")
            keys.append(src)
        self.applied.append(f"rule-id {pk_rule.rule_id} define-primary-key {keys}")
        return tuple(keys)

    def _object_mapping(
        self,
        om: ObjectMapping | None,
        columns: _Columns,
        out_cols: list[str],
        transform: Callable[[ChangeEvent, Row], Row] | None,
        target: TargetConfig,
    ) -> tuple[list[str], bool]:
        """Sets the record shape, the excluded columns and the columns records carry; returns the object
        mapping's attribute names and whether records are documents."""
        excluded: frozenset[str] = frozenset()
        shape: Callable[[ChangeEvent, Row], Row] | None = transform
        attr_names: list[str] = []
        document = False
        cols = columns.cols
        if om is not None:
            self.applied.append(
                f"rule-id {om.rule_id} object-mapping {om.action}, partition key {om.partition_key_type}"
                + (f", target table {om.target_table_name}" if om.target_table_name else "")
            )
            source_of = {o: s for s, o, _ in cols}
            excluded = frozenset(
                o
                for o in out_cols
                if o.lower() in om.exclude_columns or source_of.get(o, o).lower() in om.exclude_columns
            )
            resolve_out = _resolver(out_cols)
            attrs = [(a.name, _compile_attr(a, om, resolve_out, self.label)) for a in om.attribute_mappings]
            attr_names = [a.name for a in om.attribute_mappings]
            document = om.action == "map-record-to-document"
            shape = _object_shape(transform, excluded, tuple(attrs), document, target.include_null_and_empty)
        self.excluded = excluded
        # Source column -> its name in the records, for the columns records carry (alter control records name
        # columns as consumers see them, and say nothing about columns the mapping leaves out).
        self.outputs = {s: o for s, o, _ in cols if o not in excluded}
        self.shape = shape
        return attr_names, document

    def _partition_key(
        self,
        info: TableInfo,
        om: ObjectMapping | None,
        key_columns: tuple[str, ...],
        target: TargetConfig,
        out_cols: list[str],
        attr_names: list[str],
        excluded: frozenset[str],
        document: bool,
        cols: list[tuple[str, str, Any]],
    ) -> Callable[[ChangeEvent, Row, Row], str]:
        kt = self.key_type
        if kt == "schema-table":
            static = f"{self.schema_out}.{self.table_name}"
            return lambda ev, src, data: static
        assert om is not None
        if kt == "constant":
            assert om.partition_key_value is not None
            constant = om.partition_key_value
            return lambda ev, src, data: constant
        if kt == "transaction-id":
            return lambda ev, src, data: key_text(ev.transaction_id)
        if kt == "primary-key":
            if not key_columns:
                raise MappingError(
                    f"{om.origin.at('.mapping-parameters.partition-key-type')}: {self.label}: partition-key-type "
                    "primary-key but the table has no primary key / replica identity columns (add one, or a "
                    "define-primary-key transformation)"
                )
            return _primary_key_function(self, key_columns, target)
        # attribute-name: an attribute of the output first, then a (transformed or source) column.
        assert om.partition_key_name is not None
        name = om.partition_key_name
        path = om.origin.at(".mapping-parameters.partition-key-name")
        attr = _resolver(attr_names)(name)
        if attr is not None:
            return lambda ev, src, data: key_text(data.get(attr))
        col = _resolver(out_cols)(name)
        if col is not None and col not in excluded:
            if document:
                return lambda ev, src, data: key_text(data["_doc"].get(col))
            return lambda ev, src, data: key_text(data.get(col))
        source_of = {o: s for s, o, _ in cols}
        src_name = source_of.get(col) if col is not None else _resolver([c.name for c in info.columns])(name)
        if src_name is None:
            raise MappingError(
                f"{path}: {self.label}: partition-key-name {name!r} is neither an attribute of the rule nor a column "
                f"of the table (columns: {', '.join(c.name for c in info.columns)})"
            )
        return lambda ev, src, data: key_text(src.get(src_name))


def _primary_key_function(
    plan: TablePlan, key_columns: tuple[str, ...], target: TargetConfig
) -> Callable[[ChangeEvent, Row, Row], str]:
    """``pk`` (or ``schema.table.pk`` with partition_include_schema_table); composite keys joined by dots."""
    prefix = f"{plan.schema_out}.{plan.table_name}." if target.partition_include_schema_table else ""
    if len(key_columns) == 1:
        (k,) = key_columns
        return lambda ev, src, data: prefix + key_text(src.get(k))
    keys = key_columns
    return lambda ev, src, data: prefix + ".".join(key_text(src.get(k)) for k in keys)


def _endpoint_before_image(
    info: TableInfo, cols: list[tuple[str, str, Any]], key_columns: tuple[str, ...], target: TargetConfig
) -> Callable[[ChangeEvent], Row] | None:
    """The endpoint's before image of an update (``[target.before_image]``, updates only, as DMS), or None."""
    bi_cfg = target.before_image
    if not bi_cfg.enabled:
        return None
    include_nulls = target.include_null_and_empty
    flt = bi_cfg.column_filter
    chosen = tuple(
        (s, o)
        for s, o, _ in cols
        if flt == "all"
        or (flt == "pk-only" and s in key_columns)
        or (flt == "non-lob" and not is_lob(next(c.type_name for c in info.columns if c.name == s)))
    )

    def before_image(ev: ChangeEvent) -> Row:
        b = ev.before
        if not b:
            return {}
        out = {o: b[s] for s, o in chosen if s in b}
        return out if include_nulls else _drop_nulls(out)

    return before_image


def _guarded(conv: Callable[[Any], Any], where: str) -> Callable[[Any], Any]:
    def guarded(v: Any) -> Any:
        try:
            return conv(v)
        except ValueError as exc:
            raise MappingError(f"{where}: {exc}") from None

    return guarded


def _guarded_expression(fn: Callable[[Any], Any], where: str) -> Callable[[Any], Any]:
    """Arithmetic on extreme values (a float overflow, ...) becomes an error naming the rule, not a crash."""

    def guarded(env: Any) -> Any:
        try:
            return fn(env)
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise MappingError(f"{where}: cannot evaluate for this row: {exc}") from None

    return guarded


def _compile_attr(
    a: AttributeMapping, om: ObjectMapping, resolve: Callable[[str], str | None], label: str
) -> Callable[[Row], Any]:
    def fail(name: str) -> MappingError:
        return MappingError(
            f"{om.origin.at(a.json_path + '.value')}: {label} has no column {name!r} for ${{{name}}} "
            f"in attribute {a.name!r}"
        )

    return _compile_template(a.value, a.kind == "scalar", resolve, fail)


def _object_shape(
    transform: Callable[[ChangeEvent, Row], Row] | None,
    excluded: frozenset[str],
    attrs: tuple[tuple[str, Callable[[Row], Any]], ...],
    document: bool,
    include_nulls: bool,
) -> Callable[[ChangeEvent, Row], Row]:
    def shape(ev: ChangeEvent, src: Row) -> Row:
        row = transform(ev, src) if transform is not None else src
        base = {k: v for k, v in row.items() if k not in excluded} if excluded else dict(row)
        if document:
            data: Row = {"_doc": base if include_nulls else _drop_nulls(base)}
        else:
            data = base
        for name, fn in attrs:
            data[name] = fn(row)
        return data

    return shape
