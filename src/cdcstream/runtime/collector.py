"""The cyclic garbage collector's settings for a streaming daemon, applied once start-up is over.

Why: CPython's collector runs a young-generation pass every 700 net container allocations and, every so often, a
full pass over every tracked object. A started daemon holds ~140k of them that never die (modules, botocore's
service models, pydantic's validators, the configuration), and each row in flight allocates a few more (the
change event, the record, its PutRecords entry). Measured on ``pg_e2e_bench.py`` (bench/README.md), the
collector took ~15 % of the daemon's CPU: full passes rescanning the start-up heap, and young passes rescanning
the records of a batch still in flight. The rows themselves make no reference cycles (they are freed by reference
counting), so collecting less often loses no memory that matters.

What: :func:`settle` collects once (start-up's garbage is freed, not kept), freezes what survives (those objects
are never scanned again; they live as long as the process anyway) and raises the young generation's threshold
from 700 to :data:`YOUNG` allocations, so a batch of a few thousand rows is not rescanned several times while it
is mapped and sent. Cycles are still collected, only later; the collector stays on.
"""

from __future__ import annotations

import gc

#: Net container allocations between two young-generation passes (CPython's default: 700).
YOUNG = 50_000
#: Young passes per middle-generation pass, middle passes per full pass (CPython's defaults: 10, 10).
MIDDLE = 20
OLD = 100


def settle() -> None:
    """Collect start-up's garbage, freeze the start-up heap and space out the passes (see the module's doc)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
