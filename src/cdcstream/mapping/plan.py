"""Per-table compilation of the mapping rules into a :class:`TablePlan`.

Everything that depends only on the table's schema and the rules — which columns survive and under which
names, type casts, computed columns, source filters, object-mapping templates, the partition-key function,
``control.table-def`` — is decided once per table version here (the column phase in :mod:`.columns`, source
filters in :mod:`.filters`). The per-row work left for :class:`~cdcstream.mapping.envelope.Mapper` is a few
closure calls; with the default mapping it is none at all.

Errors found while compiling (a ``${column}`` the table lacks, a partition-key column that does not exist, two
columns renamed to one name, ...) raise :class:`MappingError` naming the file, the rule-id, the JSON path and the
table: at run time when the table's first change arrives, and in ``cdcstream check`` for every selected table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from cdcstream.changes import ChangeEvent, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.errors import MappingError
from cdcstream.mapping.columns import Columns, apply_name, resolver
from cdcstream.mapping.datatypes import is_lob
from cdcstream.mapping.filters import compile_filter
from cdcstream.mapping.rules import (
    AttributeMapping,
    MappingRules,
    ObjectMapping,
    Origin,
    TableRules,
    TransformationRule,
)

Row = dict[str, Any]


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
        "fused_key",
        "fused_load_key",
        "fused_names",
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
        plan.fused_names = None
        plan.fused_key = None
        plan.fused_load_key = None
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

        columns = Columns(self.label, tr.source, self.applied)
        for col, cr in zip(info.columns, tr.columns, strict=True):
            columns.source_column(col, cr, tr.include_columns, key_columns)
        if columns.bis:
            self.applied.append(f"add-before-image-columns: {', '.join(o for _, o in columns.bis)}")
        resolve_src = resolver([c.name for c in info.columns])
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
        self.fused_names = self._fused_names(info, columns, om)
        # The partition key a source renders with a row it renders itself (sources/postgres/fused.py): a load
        # row's is the primary key also without an object mapping (load_key_of); None where the key needs no
        # value of the row (schema-table, a table without a key).
        self.fused_load_key: tuple[tuple[int, ...], str] | None = None
        if self.fused_names is not None and self.load_key_type == "primary-key":
            index = {c.name: i for i, c in enumerate(info.columns)}
            prefix = f"{self.schema_out}.{self.table_name}." if target.partition_include_schema_table else ""
            self.fused_load_key = (tuple(index[k] for k in key_columns), prefix)
        # A change's key is the primary key only by an object mapping, which keys load rows the same way.
        self.fused_key = self.fused_load_key if self.key_type == "primary-key" else None
        self.table_def: dict[str, Any] | None = None
        if target.include_control_details:
            self.table_def = {
                "columns": columns.table_def,
                "primary-key": [columns.renamed.get(k, k) for k in key_columns],
            }

    def _fused_names(
        self, info: TableInfo, columns: Columns, om: ObjectMapping | None
    ) -> tuple[str | None, ...] | None:
        """Each source column's name in the records (None: left out) when a row's data section is the source row
        with only names changed, so that a source may render it itself (sources/postgres/fused.py); else None.
        The partition key is then ``schema-table`` (no object mapping, needs no value of the row) or
        ``primary-key`` from an object mapping that reshapes nothing (the source renders it: ``fused_key``)."""
        if self.filter is not None or self.before_image is not None:
            return None
        if om is not None and (
            om.partition_key_type != "primary-key"
            or om.action != "map-record-to-record"
            or om.attribute_mappings
            or self.excluded
        ):
            return None
        if columns.adds or columns.bis or any(conv is not None for _, _, conv in columns.cols):
            return None
        out = {s: o for s, o, _ in columns.cols}
        return tuple(out.get(c.name) for c in info.columns)

    def _key_columns(self, info: TableInfo, tr: TableRules) -> tuple[str, ...]:
        """The table's key: its own, or the columns a define-primary-key rule names."""
        pk_rule = tr.primary_key
        if pk_rule is None:
            return info.key_columns
        resolve_src = resolver([c.name for c in info.columns])
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
        columns: Columns,
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
            resolve_out = resolver(out_cols)
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
        attr = resolver(attr_names)(name)
        if attr is not None:
            return lambda ev, src, data: key_text(data.get(attr))
        col = resolver(out_cols)(name)
        if col is not None and col not in excluded:
            if document:
                return lambda ev, src, data: key_text(data["_doc"].get(col))
            return lambda ev, src, data: key_text(data.get(col))
        source_of = {o: s for s, o, _ in cols}
        src_name = source_of.get(col) if col is not None else resolver([c.name for c in info.columns])(name)
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
