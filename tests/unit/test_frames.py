"""The mapping workers' compiled answers (workers/frames.py, _frames.c) against the pure path: the Records built
from a frame equal, field by field, those ``Record(key, data, label=..., entry=...)`` builds from the pickled
lists; a malformed frame is an error, never wrong Records; with ``CDCSTREAM_PURE=1`` the pool's workers answer
with pickles and the daemon builds the same Records."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcstream.changes import MappedRows
from cdcstream.records import Record
from cdcstream.workers import frames
from tests.unit.test_mapping_pool import INFO, ROWS, Rows, _pool

COMPILED = frames.available()
needs_compiled = pytest.mark.skipif(not COMPILED, reason="the compiled extension is not built (or CDCSTREAM_PURE)")

_KEYS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(st.tuples(_KEYS, st.binary(max_size=600), st.binary(max_size=900)), max_size=60),
    label=st.text(max_size=140),
)
def test_frame_records_equal_the_pure_records(records: list[tuple[str, bytes, bytes]], label: str) -> None:
    keys = [k for k, _, _ in records]
    datas = [d for _, d, _ in records]
    entries = [e for _, _, e in records]
    got = frames.decode(frames.encode(keys, datas, entries, label))
    assert got == [Record(k, d, 0, None, label, entry=e) for k, d, e in records]
    assert all(type(r) is Record for r in got)


@needs_compiled
def test_records_are_independent_objects() -> None:
    got = frames.decode(frames.encode(["a", "b"], [b"1", b"2"], [b"x", b"y"], "t"))
    got[0].seq = 7
    got[0].label = "changed"
    assert (got[1].seq, got[1].label) == (0, "t")


@needs_compiled
def test_malformed_frames_are_errors() -> None:
    frame = frames.encode(["k1", "k2"], [b"data", b""], [b"entry", b"e"], "public.t")
    for cut in range(3 + len("public.t"), len(frame)):
        with pytest.raises(ValueError, match="malformed"):
            frames.decode(frame[:cut])
    with pytest.raises(ValueError, match="malformed"):
        frames.decode(frame + b"\0")
    with pytest.raises(UnicodeDecodeError):
        frames.decode(frames.encode(["k"], [b""], [b""], "t").replace(b"k", b"\xff"))


@needs_compiled
def test_only_the_record_class_it_knows() -> None:
    from cdcstream.workers import _frames

    @dataclass(slots=True)
    class Other:
        partition_key: str
        data: bytes

    with pytest.raises(TypeError):
        _frames.records(_frames.pack(["k"], [b""], [b""]), Other("", b""))  # type: ignore[arg-type]


@pytest.mark.parametrize("pure", [False, True], ids=["as-built", "CDCSTREAM_PURE"])
async def test_pool_answers_the_same_records_either_way(pure: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if pure:
        monkeypatch.setenv("CDCSTREAM_PURE", "1")  # inherited by the spawned workers
    pool = _pool(1)
    try:
        mapped = await asyncio.wait_for(pool.map(INFO, Rows(ROWS)), 60)
    finally:
        await pool.close()
    assert isinstance(mapped, MappedRows)
    assert len(mapped.records) == len(ROWS)
    assert all(r.entry is not None and r.label == "public.t" and r.seq == 0 for r in mapped.records)
    assert [r.partition_key for r in mapped.records] == [str(r["id"]) for r in ROWS]
