"""Coverage-guided fuzzing of cdcstream's binlog decoder and DDL parsing with atheris (optional; not run in CI).

The hypothesis tests (tests/unit/test_fuzz_mysql.py) run a few hundred random cases on every ``make test``;
this harness runs for as long as you let it, guided by coverage, on the same contract: any event bytes (a
table map of random columns and a row event of random images, an event of any type code, a QUERY event of any
text) give change events and markers, or a ``SourceError`` (``DecodeError`` for bytes that cannot be decoded,
a refusal for what cannot be captured); nothing else is ever raised, and nothing hangs. A crash is saved by
libFuzzer as ``crash-<hash>`` for replay.

    .venv/bin/pip install atheris            # binary wheels for CPython 3.11 on Linux x86_64
    .venv/bin/python scripts/fuzz_mysql_rows.py -max_total_time=600 [corpus_dir]
    .venv/bin/python scripts/fuzz_mysql_rows.py crash-<hash>     # replay one input
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support from a source checkout

with atheris.instrument_imports():
    from cdcstream.changes import ChangeEvent, Marker
    from cdcstream.errors import SourceError
    from cdcstream.sources.mysql import rows as types
    from cdcstream.sources.mysql.binlog import events as ev
    from tests.support.binlog import Col, converter, event, rows_event, table_map

TYPES = (
    *(types.TINY, types.SHORT, types.INT24, types.LONG, types.LONGLONG, types.YEAR, types.FLOAT, types.DOUBLE),
    *(types.NEWDECIMAL, types.DATE, types.DATETIME2, types.TIMESTAMP2, types.TIME2, types.VARCHAR, types.STRING),
    *(types.BLOB, types.JSON, types.BIT, types.TIME, types.DATETIME, types.TIMESTAMP, types.GEOMETRY),
)
META_BYTES = {types.FLOAT: 1, types.DOUBLE: 1, types.BLOB: 1, types.JSON: 1, types.GEOMETRY: 1, types.TIME2: 1}
META_BYTES |= {types.DATETIME2: 1, types.TIMESTAMP2: 1, types.NEWDECIMAL: 2, types.VARCHAR: 2, types.STRING: 2}
META_BYTES |= {types.BIT: 2}
CODES = sorted(ev.ROWS_EVENTS)


def _column(fdp: Any, i: int) -> Col:
    t = fdp.PickValueInList(list(TYPES))
    return Col(
        t,
        fdp.ConsumeBytes(META_BYTES.get(t, 0)),
        name=f"c{i}",
        unsigned=fdp.ConsumeBool(),
        collation=fdp.PickValueInList([45, 8, 11, 63, 54]),
        members=["a", "b", "c"][: fdp.ConsumeIntInRange(1, 3)],
    )


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    out: list[Any] = []
    choice = fdp.ConsumeIntInRange(0, 2)
    try:
        if choice == 0:
            query = fdp.ConsumeUnicodeNoSurrogates(200).encode()
            body = struct.pack("<IIBHH", 1, 0, 2, 0, 0) + b"db\0" + query
            converter().handle(event(ev.QUERY_EVENT, body, log_pos=4096), out)
            assert out and isinstance(out[-1], Marker), out
            return
        if choice == 1:
            code, flags = fdp.ConsumeIntInRange(0, 255), fdp.ConsumeIntInRange(0, 0xFFFF)
            converter().handle(event(code, fdp.ConsumeBytes(300), log_pos=4096, flags=flags), out)
            return
        cols = [_column(fdp, i) for i in range(fdp.ConsumeIntInRange(1, 8))]
        conv = converter(mariadb=fdp.ConsumeBool())
        conv.handle(table_map(cols, key=[0]), out)
        conv.handle(rows_event(fdp.PickValueInList(CODES), len(cols), fdp.ConsumeBytes(400)), out)
    except SourceError:
        return
    assert all(isinstance(item, ChangeEvent | Marker) for item in out), out


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
