"""Golden-file tests: the seed document's three table-mapping examples on its Customers row.

The mapping files under ``golden/`` are the seed's JSON verbatim; the expected files were written by hand from the
seed (example 1 shows its output; for examples 2 and 3 the expected files spell out what the rules mean). The same
files drive the end-to-end run through PostgreSQL and Kinesis (tests/e2e/test_mapping_e2e.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from cdcstream.changes import ChangeEvent, Column, Op, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.mapping.envelope import Mapper
from cdcstream.mapping.ruleparse import load_rules

GOLDEN = Path(__file__).parent / "golden"
ROW: dict[str, Any] = orjson.loads((GOLDEN / "seed_customers_row.json").read_bytes())


def customers(table: str) -> TableInfo:
    return TableInfo("Test", table, tuple(Column(name, "varchar", 1043) for name in ROW))


@pytest.mark.parametrize("example", [1, 2, 3])
@pytest.mark.parametrize("fmt", ["json", "json-unformatted"])
def test_seed_example(example: int, fmt: Literal["json", "json-unformatted"]) -> None:
    expected = orjson.loads((GOLDEN / f"seed_example{example}.expected.json").read_bytes())
    rules = load_rules(GOLDEN / f"seed_example{example}.mapping.json")
    mapper = Mapper(rules, TargetConfig(stream_name="s", message_format=fmt), "task")
    ev = ChangeEvent(Op.INSERT, customers(expected["table"]), dict(ROW), None, 7, "t", 0.0, "p", 1)
    [rec] = mapper.map([ev])
    assert rec.partition_key == expected["partition_key"]
    doc = orjson.loads(rec.data)
    # Exactly: same keys, same values, same order.
    assert orjson.dumps(doc["data"]) == orjson.dumps(expected["data"])
    for key, value in expected["metadata"].items():
        assert doc["metadata"][key] == value, key
