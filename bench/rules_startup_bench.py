"""Start-up cost of a large mapping file: one selection rule per table, as generated mapping files often are.

What the daemon does with the rules before streaming: parse them, decide for every table of the database whether
it is selected (the publication, the MySQL schema filter), compile each selected table's plan with one sample
record (the start-up mapping check) and find the rules that match no table (the start-up warning). Before rules
were looked up by name this was rules x tables (60,000 of each: hours).

    python bench/rules_startup_bench.py [--rules 60000]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from cdcstream.changes import Column, TableInfo  # noqa: E402
from cdcstream.config import TargetConfig  # noqa: E402
from cdcstream.mapping.preview import preview, unused_rules  # noqa: E402
from cdcstream.mapping.ruleparse import load_rules  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rules", type=int, default=60_000)
    args = parser.parse_args()
    n = args.rules
    rules = [
        {
            "rule-type": "selection",
            "rule-id": str(i + 1),
            "rule-action": "include",
            "object-locator": {"schema-name": "public", "table-name": f"orders_{i:06d}"},
        }
        for i in range(n)
    ]
    tables = [TableInfo("public", f"orders_{i:06d}", (Column("id", "int8", 20, False, True),)) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        path.write_text(json.dumps({"rules": rules}))
        timings = {}
        t = time.perf_counter()
        parsed = load_rules(path)
        timings["parse"] = time.perf_counter() - t
        t = time.perf_counter()
        selected = sum(parsed.selects(x.schema, x.table) for x in tables)
        timings["select every table"] = time.perf_counter() - t
        t = time.perf_counter()
        plans = preview(parsed, TargetConfig(stream_name="s"), "bench", tables)
        timings["plan + sample record per table"] = time.perf_counter() - t
        t = time.perf_counter()
        unused = unused_rules(parsed, tables[: n - 1])
        timings["rules matching no table"] = time.perf_counter() - t
    assert selected == n and len(plans) == n and len(unused) == 1
    print(f"{n} rules, {n} tables; Python {platform.python_version()}, {platform.machine()}")
    for what, seconds in timings.items():
        print(f"  {what:32s} {seconds:7.2f} s")


if __name__ == "__main__":
    main()
