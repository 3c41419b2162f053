"""Pure parts of capturing tables created while CDC runs (the server side is tests/integration/
test_pg_new_tables.py): the publication cdcstream creates, and the selection handed to DDL capture."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cdcstream.mapping.ruleparse import load_rules
from cdcstream.mapping.rules import MappingRules
from cdcstream.sources.postgres.publication import publication_sql


def test_publications_publish_partitions_under_their_root() -> None:
    via_root = " WITH (publish_via_partition_root = true);"
    assert publication_sql("p", None) == 'CREATE PUBLICATION "p" FOR ALL TABLES' + via_root
    assert publication_sql("p", []) == 'CREATE PUBLICATION "p"' + via_root
    assert publication_sql("p", [("s", "t"), ("s", 'o"dd')]) == (
        'CREATE PUBLICATION "p" FOR TABLE "s"."t", "s"."o""dd"' + via_root
    )


def _rules(tmp_path: Path, *locators: tuple[str, str, str, str]) -> MappingRules:
    doc = {
        "rules": [
            {
                "rule-type": "selection",
                "rule-id": str(i),
                "rule-name": str(i),
                "rule-action": action,
                "object-locator": {"schema-name": schema, "table-name": table, "table-type": kind},
            }
            for i, (action, schema, table, kind) in enumerate(locators, 1)
        ]
    }
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    return load_rules(path)


def test_selection_regexes(tmp_path: Path) -> None:
    assert MappingRules().selection_regexes() == [{"include": True, "schema": "^.*$", "table": "^.*$"}]
    rules = _rules(
        tmp_path,
        ("include", "public", "acc_%", "table"),
        ("exclude", "public", "acc[_]tmp%", "table"),
        ("explicit", "x.y", "a_b", "table"),
        ("include", "public", "%", "view"),  # views produce no changes: left out
    )
    regexes = rules.selection_regexes()
    assert regexes == [
        {"include": True, "schema": "^public$", "table": "^acc..*$"},
        {"include": False, "schema": "^public$", "table": "^acc[_]tmp.*$"},
        {"include": True, "schema": r"^x\.y$", "table": "^a_b$"},  # explicit: the name itself, _ included
    ]

    def selects(schema: str, table: str) -> bool:  # the SQL function's semantics (cdcstream.selects)
        hits = [r["include"] for r in regexes if re.search(r["schema"], schema) and re.search(r["table"], table)]
        return bool(hits) and all(hits)

    for name in [("public", "acc_1"), ("public", "acc_tmp1"), ("public", "accXtmp1"), ("x.y", "a_b"), ("x.y", "aXb")]:
        assert selects(*name) is rules.selects(*name), name
    only_views = _rules(tmp_path, ("include", "public", "%", "view"))
    assert only_views.selection_regexes() == []  # selects nothing, in SQL too
