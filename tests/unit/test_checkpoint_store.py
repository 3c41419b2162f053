"""The checkpoint file: atomic, checksummed, and refuses to guess when damaged."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdcstream.checkpoints.store import FileCheckpointStore
from cdcstream.errors import CheckpointError


def test_roundtrip_and_missing(tmp_path: Path) -> None:
    store = FileCheckpointStore(tmp_path / "state", "task")
    assert store.load() is None
    store.save({"lsn": "0/16B3F28"})
    assert store.load() == {"lsn": "0/16B3F28"}
    store.save({"lsn": "0/16B4000"})
    assert store.load() == {"lsn": "0/16B4000"}
    assert not list((tmp_path / "state").glob("*.tmp"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[: len(b) // 2],  # truncated
        lambda b: b.replace(b"16B3F28", b"16B3F29"),  # edited
        lambda b: b"",  # empty
        lambda b: b"\x00\xff garbage",
    ],
)
def test_damaged_file_is_refused(tmp_path: Path, damage: object) -> None:
    store = FileCheckpointStore(tmp_path, "task")
    store.save({"lsn": "0/16B3F28"})
    assert callable(damage)
    store.path.write_bytes(damage(store.path.read_bytes()))
    with pytest.raises(CheckpointError, match=str(store.path)):
        store.load()
