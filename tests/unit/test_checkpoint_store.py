"""The checkpoint file: atomic, checksummed, refuses to guess when damaged or written for another task, one
process at a time, in a private directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cdcstream.checkpoints.model import Owner
from cdcstream.checkpoints.store import FileCheckpointStore, append_durably
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


# --- owner, lock, state directory -------------------------------------------------------------------------------

PG_A: Owner = {"engine": "postgres", "database": "app", "slot": "a", "stream": "cdc", "region": "us-east-1"}


def test_a_checkpoint_written_for_another_task_is_refused_naming_what_differs(tmp_path: Path) -> None:
    FileCheckpointStore(tmp_path, "task", PG_A).save({"lsn": "0/16B3F28"})
    other = FileCheckpointStore(tmp_path, "task", {**PG_A, "slot": "b", "stream": "other"})
    with pytest.raises(CheckpointError) as info:
        other.load()
    text = str(info.value)
    assert str(other.path) in text and "slot 'a' (this config: 'b')" in text
    assert "stream 'cdc' (this config: 'other')" in text and "database 'app'" not in text
    assert "own task_id or state_dir" in text and "cdcstream adopt-checkpoint" in text
    mine = FileCheckpointStore(tmp_path, "task", PG_A)
    assert mine.load() == {"lsn": "0/16B3F28"} and mine.owned


def test_a_legacy_file_loads_unowned_and_is_owned_after_the_next_write(tmp_path: Path) -> None:
    FileCheckpointStore(tmp_path, "task").save({"lsn": "0/10"})  # as cdcstream before owners wrote it
    store = FileCheckpointStore(tmp_path, "task", PG_A)
    assert store.read() == ({"lsn": "0/10"}, None)
    assert store.load() == {"lsn": "0/10"} and not store.owned  # for the source to verify against the server
    store.save({"lsn": "0/20"})
    assert store.load() == {"lsn": "0/20"} and store.owned and store.read() == ({"lsn": "0/20"}, PG_A)


def test_adopt_rewrites_the_owner_and_keeps_the_position(tmp_path: Path) -> None:
    FileCheckpointStore(tmp_path, "task", PG_A).save({"lsn": "0/30", "load": {"done": True}})
    renamed = FileCheckpointStore(tmp_path, "task", {**PG_A, "stream": "cdc-v2"})
    assert renamed.adopt() == ({"lsn": "0/30", "load": {"done": True}}, PG_A)
    assert renamed.load() == {"lsn": "0/30", "load": {"done": True}} and renamed.owned
    mysql = FileCheckpointStore(tmp_path, "task", {"engine": "mysql", "stream": "cdc-v2", "region": "us-east-1"})
    with pytest.raises(CheckpointError, match="holds a postgres position"):
        mysql.adopt()
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        FileCheckpointStore(tmp_path, "nothing", PG_A).adopt()


def test_task_owner_comes_from_the_config(tmp_path: Path) -> None:
    from cdcstream.checkpoints.store import task_owner
    from cdcstream.config import load_config

    pg = tmp_path / "pg.toml"
    pg.write_text('[source]\ndatabase = "app"\nslot_name = "s1"\n[target]\nstream_name = "cdc"\nregion = "eu-west-1"\n')
    assert task_owner(load_config(pg)) == {
        "engine": "postgres",
        "database": "app",
        "slot": "s1",
        "stream": "cdc",
        "region": "eu-west-1",
    }
    my = tmp_path / "my.toml"
    my.write_text('[source]\nengine = "mysql"\nserver_id = 7\n[target]\nstream_name = "cdc"\n')
    assert task_owner(load_config(my)) == {"engine": "mysql", "stream": "cdc", "region": "us-east-1"}
    store = FileCheckpointStore.for_task(load_config(my))
    assert store.path.name == "cdcstream.checkpoint.json"  # the name every version used: found after an upgrade
    assert store.adopt_command == f"cdcstream adopt-checkpoint --config {my.resolve()}"


def test_the_lock_admits_one_process_and_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from cdcstream.checkpoints.store import FileCheckpointStore as S; "
            f"S({str(tmp_path)!r}, 'task').lock(); print('locked', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        second = FileCheckpointStore(tmp_path, "task")
        with pytest.raises(CheckpointError) as info:
            second.lock()
        assert f"pid {holder.pid}" in str(info.value) and "own task_id or state_dir" in str(info.value)
        FileCheckpointStore(tmp_path, "another-task").lock()  # other tasks in the same state_dir are not blocked
    finally:
        holder.kill()  # SIGKILL: no clean-up runs, the kernel releases the lock
        holder.wait()
    second.lock()
    third = FileCheckpointStore(tmp_path, "task")
    with pytest.raises(CheckpointError, match=f"pid {os.getpid()}"):
        third.lock()  # a second descriptor in the same process is refused too
    second.unlock()
    third.lock()
    third.unlock()


def test_the_state_dir_is_private_whatever_the_umask(tmp_path: Path) -> None:
    state = tmp_path / "a" / "b" / "state"
    old = os.umask(0)
    try:
        store = FileCheckpointStore(state, "task", PG_A)
        store.lock()
        store.save({"lsn": "0/1"})
        append_durably(state / "task.dead-letter.jsonl", b"{}\n")
        store.unlock()
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", state):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for file in state.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
