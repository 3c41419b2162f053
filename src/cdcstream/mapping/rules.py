"""The DMS table-mapping rules as values: what each rule of the mapping file says, the whole rule set
(:class:`MappingRules`), and the rules that apply to one table version resolved once (:class:`TableRules`,
:class:`ColumnRules`).

The file itself is read and validated in :mod:`cdcstream.mapping.ruleparse`; checks that need the tables' columns
(a ``${column}`` the table lacks, two columns renamed onto one name, ...) are made when the plan of a table is
compiled (:mod:`cdcstream.mapping.plan`), at run time and by ``cdcstream check``.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any

from cdcstream.changes import TableInfo
from cdcstream.mapping.datatypes import dms_type_name
from cdcstream.mapping.wildcards import WildcardIndex, literal_sql_regex, matches, sql_regex

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


__all__ = [
    "NAME_ACTIONS",
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
]
