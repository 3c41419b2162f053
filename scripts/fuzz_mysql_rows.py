"""Coverage-guided fuzzing of the MySQL row decoding and DDL parsing with atheris (optional; not run in CI).

The hypothesis tests (tests/unit/test_fuzz_mysql.py) run a few hundred random cases on every ``make test``;
this harness runs for as long as you let it, guided by coverage, on the same contract: a row event gives change
events or a ``DecodeError``, a QueryEvent's text gives a transaction end (DDL that cannot be parsed is logged
and skipped), and nothing else is ever raised. A crash is saved by libFuzzer as ``crash-<hash>`` for replay.

    .venv/bin/pip install atheris            # binary wheels for CPython 3.11 on Linux x86_64
    .venv/bin/python scripts/fuzz_mysql_rows.py -max_total_time=600 [corpus_dir]
    .venv/bin/python scripts/fuzz_mysql_rows.py crash-<hash>     # replay one input
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support from a source checkout

with atheris.instrument_imports():
    from pymysqlreplication.event import QueryEvent
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    from cdcstream.changes import ChangeEvent, Marker
    from cdcstream.errors import DecodeError
    from cdcstream.sources.mysql import rows
    from tests.support.binlog import LOG_POS, TABLE_ID, Col, Packet, Table, converter, row_event

TYPES = (
    *(rows.TINY, rows.SHORT, rows.INT24, rows.LONG, rows.LONGLONG, rows.YEAR, rows.FLOAT, rows.DOUBLE),
    *(rows.NEWDECIMAL, rows.DATE, rows.DATETIME2, rows.TIMESTAMP2, rows.ENUM, rows.VARCHAR, rows.STRING, rows.BLOB),
)
CHARSETS = ("utf8mb4", "latin1", "ascii", "binary")
EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)


def _column(fdp: Any, i: int) -> Col:
    col = Col(type=fdp.PickValueInList(list(TYPES)), name=f"c{i}", unsigned=fdp.ConsumeBool())
    col.fsp = fdp.ConsumeIntInRange(0, 6)
    col.precision = fdp.ConsumeIntInRange(1, 65)
    col.decimals = fdp.ConsumeIntInRange(0, min(30, col.precision))
    col.enum_values = ["a", "b", "c"][: fdp.ConsumeIntInRange(1, 3)]
    col.size = fdp.ConsumeIntInRange(1, 2)
    col.character_set_name = fdp.PickValueInList(list(CHARSETS))
    col.max_length = fdp.PickValueInList([10, 255, 1000])
    col.length_size = fdp.ConsumeIntInRange(1, 4)
    return col


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    out: list[Any] = []
    if fdp.ConsumeBool():
        ev = QueryEvent.__new__(QueryEvent)
        ev.query = fdp.ConsumeUnicodeNoSurrogates(200)
        ev.schema, ev.timestamp, ev.event_size, ev.packet = b"db", 0, 40, Packet(b"", LOG_POS)
        converter().handle(ev, {}, out)
        assert out and isinstance(out[-1], Marker), out
        return
    cols = [_column(fdp, i) for i in range(fdp.ConsumeIntInRange(1, 8))]
    ev = row_event(fdp.PickValueInList(list(EVENTS)), len(cols), fdp.ConsumeBytes(400))
    try:
        converter().handle(ev, {TABLE_ID: Table("db", "t", cols, "c0")}, out)
    except DecodeError:
        return
    assert all(isinstance(item, ChangeEvent) for item in out), out


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
