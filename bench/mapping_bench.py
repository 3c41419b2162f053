"""Records/s of the mapper + JSON serialiser alone, on synthetic change events (no server, one core).

Two mappings over the same 10-column table (the layout of hotpath_bench.py): the default (no mapping file:
schema-table key, no transformation) and a rich one (a source filter, a schema rename, column renames, an
add-column expression, a cast, an object mapping with a scalar and a nested document template, a primary-key
partition key, and every endpoint flag: transaction details, partition value, before image).

    python bench/mapping_bench.py [--rows 20000] [--repeat 10]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from cdcstream.changes import ChangeEvent, Column, Op, TableInfo  # noqa: E402
from cdcstream.config import BeforeImageConfig, TargetConfig  # noqa: E402
from cdcstream.mapping.envelope import Mapper  # noqa: E402
from cdcstream.mapping.ruleparse import parse_rules  # noqa: E402
from cdcstream.mapping.rules import MappingRules  # noqa: E402

TABLE = TableInfo(
    "public",
    "bench",
    (
        Column("id", "int8", 20, False, True),
        Column("k", "int4", 23),
        Column("c", "varchar", 1043),
        Column("pad", "varchar", 1043),
        Column("price", "numeric", 1700),
        Column("qty", "int4", 23),
        Column("flag", "bool", 16),
        Column("created", "timestamptz", 1184),
        Column("note", "text", 25),
        Column("score", "float8", 701),
    ),
)

RICH: dict[str, Any] = {
    "rules": [
        {"rule-type": "selection", "rule-id": "1", "rule-action": "include",
         "object-locator": {"schema-name": "public", "table-name": "%"},
         "filters": [{"filter-type": "source", "column-name": "qty",
                      "filter-conditions": [{"filter-operator": "gte", "value": "0"}]}]},
        {"rule-type": "transformation", "rule-id": "2", "rule-target": "schema", "rule-action": "rename",
         "object-locator": {"schema-name": "public"}, "value": "sales"},
        {"rule-type": "transformation", "rule-id": "3", "rule-target": "column", "rule-action": "convert-uppercase",
         "object-locator": {"schema-name": "public", "table-name": "bench", "column-name": "%"}},
        {"rule-type": "transformation", "rule-id": "4", "rule-target": "column", "rule-action": "add-column",
         "object-locator": {"schema-name": "public", "table-name": "bench"}, "value": "LABEL",
         "expression": "upper($c) || '-' || $id"},
        {"rule-type": "transformation", "rule-id": "5", "rule-target": "column", "rule-action": "change-data-type",
         "object-locator": {"schema-name": "public", "table-name": "bench", "column-name": "k"},
         "data-type": {"type": "string"}},
        {"rule-type": "object-mapping", "rule-id": "6", "rule-action": "map-record-to-record",
         "object-locator": {"schema-name": "public", "table-name": "bench"},
         "mapping-parameters": {
             "partition-key-type": "primary-key",
             "exclude-columns": ["pad"],
             "attribute-mappings": [
                 {"target-attribute-name": "Summary", "attribute-type": "scalar", "value": "${C} x${QTY}"},
                 {"target-attribute-name": "Doc", "attribute-type": "document",
                  "value": {"a": {"price": "${PRICE}", "flag": "${FLAG}"}, "n": "${NOTE}"}},
             ]}},
    ]
}  # fmt: skip


def events(n: int) -> list[ChangeEvent]:
    out = []
    for i in range(n):
        row = {
            "id": i,
            "k": i % 1000,
            "c": f"customer-{i % 977:05d}-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "pad": "p" * 40,
            "price": f"{i % 10000}.25",
            "qty": i % 17,
            "flag": i % 2 == 0,
            "created": "2026-11-27T12:00:00.123456Z",
            "note": None if i % 3 else "a note",
            "score": i / 7,
        }
        if i % 2:
            out.append(ChangeEvent(Op.UPDATE, TABLE, row, {"id": i}, 1000 + i // 100, "2026-11-27T12:00:00.120000Z",
                                   0.0, f"00000000/{i:08X}.{i % 100 + 1:010d}", i % 100 + 1))  # fmt: skip
        else:
            out.append(ChangeEvent(Op.INSERT, TABLE, row, None, 1000 + i // 100, "2026-11-27T12:00:00.120000Z",
                                   0.0, f"00000000/{i:08X}.{i % 100 + 1:010d}", i % 100 + 1))  # fmt: skip
    return out


def best_of(repeat: int, mapper: Mapper, evs: list[ChangeEvent]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        for start in range(0, len(evs), 500):  # the pipeline maps what one source read returns
            mapper.map(evs[start : start + 500])
        best = min(best, time.process_time() - t0)
    return len(evs) / best


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    evs = events(args.rows)
    rich_rules = parse_rules(RICH, "rich")
    cases = {
        "default, json-unformatted": (MappingRules(), TargetConfig(stream_name="s", message_format="json-unformatted")),
        "default, json (indented)": (MappingRules(), TargetConfig(stream_name="s")),
        "rich, json-unformatted": (
            rich_rules,
            TargetConfig(
                stream_name="s",
                message_format="json-unformatted",
                include_transaction_details=True,
                include_partition_value=True,
                partition_include_schema_table=True,
                before_image=BeforeImageConfig(enabled=True, column_filter="all"),
            ),
        ),
    }
    print(f"{platform.node()}, {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{args.rows} synthetic row changes (half INSERT, half UPDATE), best of {args.repeat}")
    for name, (rules, target) in cases.items():
        rate = best_of(args.repeat, Mapper(rules, target, "bench"), evs)
        print(f"  {name:30s} {1e6 / rate:6.2f} µs/record {rate:>12,.0f} records/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
