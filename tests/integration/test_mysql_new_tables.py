"""Tables created while CDC runs on MySQL/MariaDB: the binlog carries every table, so a new
table the mapping selects (a wildcard, or no mapping file: every table) is captured from its first row with no
setup; one it does not select is not. Against the private MariaDB, as the least-privilege ``cdc`` user."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cdcstream.changes import Op
from cdcstream.mapping.ruleparse import load_rules
from tests.integration.test_mysql_source import run
from tests.support.mysql import MyDb
from tests.support.reader import Reader, open_reader

pytestmark = pytest.mark.timeout(120)


def inserted(reader: Reader) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for e in reader.events:
        if e.op is Op.INSERT:
            out.setdefault(e.table.table, []).append(int((e.after or {})["id"]))
    return out


async def test_new_tables_are_captured_from_their_first_row(my_db: MyDb, tmp_path: Path) -> None:
    path = tmp_path / "mapping.json"
    locator = {"schema-name": my_db.name, "table-name": "acc_%"}
    rule = {"rule-type": "selection", "rule-id": "1", "rule-name": "1", "rule-action": "include"}
    path.write_text(json.dumps({"rules": [{**rule, "object-locator": locator}]}))
    rules = load_rules(path)
    await run(my_db, "CREATE TABLE acc_old (id int PRIMARY KEY)")
    wildcard = await open_reader(my_db.config(), selector=rules.selects)
    every = await open_reader(my_db.config())  # no mapping file: every table
    try:
        await run(
            my_db,
            "CREATE TABLE acc_new (id int PRIMARY KEY, v varchar(5))",
            "INSERT INTO acc_new VALUES (1, 'a'), (2, 'b')",
            "CREATE TABLE acc_nokey (id int)",  # no key needed: rows are in the binlog either way
            "INSERT INTO acc_nokey VALUES (7)",
            "CREATE TABLE acc_copy AS SELECT id FROM acc_new",  # its rows, written by the CREATE itself
            "CREATE TABLE other_new (id int PRIMARY KEY)",
            "INSERT INTO other_new VALUES (3)",
            "INSERT INTO acc_old VALUES (9)",
        )
        await every.wait_for(lambda r: "acc_old" in inserted(r))
        await wildcard.wait_for(lambda r: "acc_old" in inserted(r))
    finally:
        await wildcard.stop()
        await every.stop()
    expected = {"acc_new": [1, 2], "acc_nokey": [7], "acc_copy": [1, 2], "acc_old": [9]}
    assert inserted(wildcard) == expected
    assert inserted(every) == {**expected, "other_new": [3]}
