"""Runs of compiled rows (``Decoder(runs=True)`` -> ``changes.FusedRows`` -> ``Mapper._fused_run``) against the
reference path and the compiled path one row at a time, record for record and marker for marker.

Each case feeds the same frames (in the same random chunks, as the reader's batches cut them) to three decoders:
the pure one (no fuse hook: the reference), the compiled one emitting a ``ChangeEvent`` per row, and the one
emitting runs; the items of each chunk are mapped as the pipeline maps them (the events between two markers in
one ``Mapper.map`` call). The records (partition key, bytes, commit time, label, barrier flag), the markers
(checkpoint, commit time, kind) in their places, the decoder's positions and per-table counts must all be the
same, or the same error raised. Frames mix relations the compiled path renders with ones it does not (a type
without a compiled kind, an unselected schema), rows it leaves to the reference path (unchanged TOAST, text
outside PostgreSQL's grammar, invalid UTF-8), Begin/Commit, Relation re-sends, Truncate, logical messages and
keepalives between the rows, and a truncated or padded message.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cdcstream.changes import ChangeEvent, Column, FusedRows, Marker, TableInfo
from cdcstream.config import TargetConfig
from cdcstream.errors import DecodeError, MappingError
from cdcstream.mapping import _splice, envelope
from cdcstream.mapping.envelope import Mapper
from cdcstream.sources.postgres import values
from cdcstream.sources.postgres.decoder import Decoder
from tests.unit.test_fused import MAPPINGS, TYPES, _tuple, _value, needs_compiled

# (relation id, schema, table, column types): 7 random types, 8 always compiled, 9 never (money), 10 unselected
_FIXED = {
    8: ("public", "fixed", [TYPES[2], TYPES[6], TYPES[0]]),
    9: ("public", "money", [TYPES[3], TYPES[-1]]),
    10: ("pg_catalog", "skipped", [TYPES[3], TYPES[6]]),
}


@pytest.fixture(autouse=True)
def _fixed_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envelope, "now_iso", lambda: "2026-12-07T10:00:00.000000Z")


def _w(msg: bytes, lsn: int) -> bytes:
    return b"w" + struct.pack("!QQq", lsn, lsn + len(msg), 0) + msg


def _relation(relid: int, schema: str, table: str, types: list[Any], keys: list[bool], identity: bytes) -> bytes:
    rel = b"R" + struct.pack("!I", relid) + schema.encode() + b"\0" + table.encode() + b"\0" + identity
    rel += struct.pack("!h", len(types))
    for i, ((oid, _), key) in enumerate(zip(types, keys, strict=True)):
        rel += bytes([key]) + f"c{i}".encode() + b"\0" + struct.pack("!Ii", oid, -1)
    return rel


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], list[int]]:
    """Frames of a few transactions over the four relations, and where the reader's batches end."""
    ncols = draw(st.integers(1, 5))
    relations = {7: ("public", "t", [draw(st.sampled_from(TYPES[:-1])) for _ in range(ncols)]), **_FIXED}
    keys = {relid: [i == 0 or draw(st.booleans()) for i in range(len(r[2]))] for relid, r in relations.items()}
    clean = draw(st.integers(0, 3)) > 0  # values only of their type (long runs), or sometimes anything
    lsn = 0x1000
    frames: list[bytes] = []

    def w(msg: bytes) -> None:
        nonlocal lsn
        frames.append(_w(msg, lsn))
        lsn += 0x40

    def row(relid: int) -> bytes:
        types = relations[relid][2]
        if clean:
            return _tuple([("t", draw(s).encode()) if draw(st.integers(0, 9)) else ("n", b"") for _, s in types])
        return _tuple([draw(_value(s)) for _, s in types])

    def keepalive(reply: bool) -> None:
        frames.append(b"k" + struct.pack("!Qq?", lsn + draw(st.integers(-0x80, 0x80)), 0, reply))

    for relid, (schema, table, types) in relations.items():
        w(_relation(relid, schema, table, types, keys[relid], draw(st.sampled_from([b"d", b"f"]))))
    for _ in range(draw(st.integers(1, 3))):
        final = lsn + 0x10000
        w(b"B" + struct.pack("!QqI", final, draw(st.integers(0, 2**40)), draw(st.integers(1, 2**32 - 1))))
        for _ in range(draw(st.integers(0, 40))):
            relid = draw(st.sampled_from([7, 7, 7, 8, 8, 9, 10]))
            what = draw(st.sampled_from("IIIUUUDD" + "kRTM"))
            if what == "k":
                keepalive(draw(st.booleans()))
            elif what == "R":
                schema, table, types = relations[relid]
                w(_relation(relid, schema, table, types, keys[relid], b"d"))
            else:
                w(_message(draw, what, relid, row, lsn))
        w(b"C" + struct.pack("!BQQq", 0, final, final + 0x10, draw(st.integers(0, 2**40))))
        if draw(st.booleans()):
            keepalive(False)
    if draw(st.booleans()):
        _malform(draw, frames)
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(frames) - 1)), max_size=4))))
    return frames, cuts


def _message(draw: st.DrawFn, what: str, relid: int, row: Callable[[int], bytes], lsn: int) -> bytes:
    """A row, Truncate or logical message of relation ``relid``."""
    rel = struct.pack("!I", relid)
    if what == "I":
        return b"I" + rel + b"N" + row(relid)
    if what == "U":
        old = draw(st.sampled_from([b"", b"", b"K", b"O"]))
        return b"U" + rel + (old + row(relid) if old else b"") + b"N" + row(relid)
    if what == "D":
        return b"D" + rel + draw(st.sampled_from([b"K", b"O"])) + row(relid)
    if what == "T":
        return b"T" + struct.pack("!IB", 1, 0) + rel
    return b"M" + b"\x01" + struct.pack("!Q", lsn) + b"heartbeat\0" + struct.pack("!I", 1) + b"x"


def _malform(draw: st.DrawFn, frames: list[bytes]) -> None:
    """A row message cut short or padded."""
    i = draw(st.integers(0, len(frames) - 1))
    if frames[i][:1] == b"w" and frames[i][25:26] in (b"I", b"U", b"D"):
        cut = draw(st.integers(0, 12))
        frames[i] = frames[i][: max(26, len(frames[i]) - cut)] + draw(st.binary(max_size=2))


def _decode(
    frames: list[bytes], cuts: list[int], mapping: tuple[Any, dict[str, Any]], include_nulls: bool, path: str
) -> tuple[Any, Any, int]:
    """(the records and markers in order, or the error; the decoder's positions and counts; the rows rendered)."""
    rules, extra = mapping
    target = TargetConfig(
        stream_name="s", message_format="json-unformatted", include_null_and_empty=include_nulls, **extra
    )
    mapper = Mapper(rules, target, "task")
    decoder = Decoder(
        fuse=None if path == "pure" else mapper.fused_columns, types=values.TypeRegistry(), runs=path == "runs"
    )
    out: list[Any] = []
    rendered = 0
    try:
        for lo, hi in zip([0, *cuts], [*cuts, len(frames)], strict=True):
            pending: list[ChangeEvent | FusedRows] = []
            for item in decoder.feed(frames[lo:hi]):
                if isinstance(item, Marker):
                    out.extend(_records(mapper, pending))
                    out.append(("marker", item.checkpoint, item.commit_epoch, item.transaction))
                    continue
                assert isinstance(item, ChangeEvent | FusedRows)
                if isinstance(item, FusedRows):
                    rendered += len(item.ops)
                    assert item.events() == [item.event(i) for i in range(len(item.ops))]
                elif item.fused is not None:
                    rendered += 1
                pending.append(item)
            out.extend(_records(mapper, pending))
    except (DecodeError, MappingError) as exc:
        return ("error", type(exc).__name__, str(exc)), None, rendered
    counts = {relid: plan.counts for relid, plan in decoder.plans.items()}
    state = (decoder.received_lsn, decoder.last_position, decoder.transactions, decoder.reply_requested, counts)
    return out, state, rendered


def _records(mapper: Mapper, events: list[ChangeEvent | FusedRows]) -> list[Any]:
    return [(r.partition_key, r.data, r.commit_epoch, r.label, r.barrier) for r in mapper.map(events)]


@needs_compiled
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=streams(), mapping=st.sampled_from(list(MAPPINGS)), include_nulls=st.booleans())
def test_runs_identical(stream: tuple[list[bytes], list[int]], mapping: str, include_nulls: bool) -> None:
    """Records, markers, positions and counts the same on all three paths, whatever the frames."""
    frames, cuts = stream
    pure = _decode(frames, cuts, MAPPINGS[mapping], include_nulls, "pure")
    rows = _decode(frames, cuts, MAPPINGS[mapping], include_nulls, "rows")
    runs = _decode(frames, cuts, MAPPINGS[mapping], include_nulls, "runs")
    assert pure[2] == 0
    assert rows[:2] == pure[:2]
    assert runs[:2] == pure[:2]
    assert runs[2] == rows[2]  # a run renders exactly the rows the row-at-a-time path renders


@needs_compiled
def test_a_run_is_one_item() -> None:
    """Consecutive compiled rows of one relation come out as one FusedRows, broken by what is not one."""
    rel = struct.pack("!I", 8)
    frames = [_w(_relation(8, "public", "fixed", _FIXED[8][2], [True, False, False], b"d"), 0x100)]
    frames.append(_w(b"B" + struct.pack("!QqI", 0x9000, 0, 5), 0x140))
    for i in range(5):
        frames.append(_w(b"I" + rel + b"N" + _tuple([("t", str(i).encode()), ("t", b"x"), ("n", b"")]), 0x200 + i))
    frames.append(_w(b"U" + rel + b"N" + _tuple([("t", b"1"), ("u", b""), ("t", b"t")]), 0x300))  # unchanged TOAST
    frames.append(_w(b"D" + rel + b"K" + _tuple([("t", b"2"), ("n", b""), ("n", b"")]), 0x310))
    frames.append(_w(b"C" + struct.pack("!BQQq", 0, 0x9000, 0x9010, 0), 0x320))
    mapper = Mapper(MAPPINGS["default"][0], TargetConfig(stream_name="s", message_format="json-unformatted"), "task")
    decoder = Decoder(fuse=mapper.fused_columns, types=values.TypeRegistry(), runs=True)
    items = decoder.feed(frames)
    assert [type(i).__name__ for i in items] == ["FusedRows", "ChangeEvent", "FusedRows", "Marker"]
    first = items[0]
    assert isinstance(first, FusedRows)
    assert first.ops == b"\0" * 5
    assert first.first_record_id == 1
    assert first.event(4).stream_position == "00000000/00009000.0000000005"
    rows = Decoder(fuse=mapper.fused_columns, types=values.TypeRegistry())
    events = [i for i in rows.feed(frames) if isinstance(i, ChangeEvent)]
    assert [e for i in items for e in (i.events() if isinstance(i, FusedRows) else [i])][:-1] == events
    assert (decoder.received_lsn, decoder._record_id) == (rows.received_lsn, rows._record_id) == (0x320 + 26, 7)


def test_no_runs_on_the_pure_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCSTREAM_PURE", "1")
    mapper = Mapper(MAPPINGS["default"][0], TargetConfig(stream_name="s", message_format="json-unformatted"), "task")
    decoder = Decoder(fuse=mapper.fused_columns, types=values.TypeRegistry(), runs=True)
    assert decoder._runs is False


@needs_compiled
def test_records_built_by_the_compiled_code() -> None:
    """A run's Record objects come from one compiled call (the class's own __init__ per row otherwise), checked
    at import against the class; here against a run's records built one by one."""
    assert envelope._CLONE
    with pytest.raises(TypeError):
        _splice.clone_records(object(), "k", [b"x"])  # no slots: refused, never guessed
    rows = [(b'{"a":1}', "k1"), (b"{}", ""), (b'{"a":2}', "k2")]
    run = FusedRows(
        TableInfo("public", "t", (Column("a", "int4", is_key=True),)),
        b"\0\1\2",
        [d for d, _ in rows],
        [k for _, k in rows],
        7,
        "2026-12-07T10:00:00.000000Z",
        1.5,
        "00000000/00009000.",
        3,
    )
    mapper = Mapper(MAPPINGS["primary-key"][0], TargetConfig(stream_name="s", message_format="json-unformatted"), "t")
    assert mapper.map([run]) == mapper.map(run.events())
    assert [r.partition_key for r in mapper.map([run])] == ["k1", "<empty>", "k2"]


@needs_compiled
@pytest.mark.parametrize("missing", ["_CLONE", "_splice"])
def test_runs_mapped_without_the_compiled_helpers(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    """A mapper without the compiled record builders (as if the class had changed, or no extension was built)
    writes a run's records as it writes its events'."""
    frames, cuts = _long_run()
    want = _decode(frames, cuts, MAPPINGS["default"], True, "pure")
    monkeypatch.setattr(envelope, missing, False if missing == "_CLONE" else None)
    assert _decode(frames, cuts, MAPPINGS["default"], True, "runs") == (*want[:2], 50)


def _long_run() -> tuple[list[bytes], list[int]]:
    rel = struct.pack("!I", 8)
    frames = [_w(_relation(8, "public", "fixed", _FIXED[8][2], [True, False, False], b"d"), 0x100)]
    frames.append(_w(b"B" + struct.pack("!QqI", 0x9000, 0, 5), 0x140))
    for i in range(50):
        frames.append(_w(b"I" + rel + b"N" + _tuple([("t", str(i).encode()), ("t", b"x"), ("n", b"")]), 0x200 + i))
    frames.append(_w(b"C" + struct.pack("!BQQq", 0, 0x9000, 0x9010, 0), 0x320))
    return frames, [20]
