"""The command line without servers: exit codes and messages for bad input, redaction."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CONFIG = """task_id = "t"
table_mappings = "m.json"
[source]
database = "app"
password = "hunter2-secret"
[target]
stream_name = "s"
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cdcstream", *args], capture_output=True, text=True, timeout=60)


def test_invalid_config_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG + "colour = 'blue'\n")
    res = run("run", "--config", str(cfg))
    assert res.returncode == 2
    assert str(cfg) in res.stderr and "target.colour: unknown key" in res.stderr
    assert "Traceback" not in res.stderr


def test_invalid_mapping_exits_2_naming_rule(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    (tmp_path / "m.json").write_text('{"rules": [{"rule-type": "selection", "rule-id": "7", "rule-action": "nope"}]}')
    res = run("run", "--config", str(cfg))
    assert res.returncode == 2
    assert "m.json: rule-id 7 ($.rules[0].rule-action)" in res.stderr
    assert "Traceback" not in res.stderr


def test_missing_config_file(tmp_path: Path) -> None:
    res = run("run", "--config", str(tmp_path / "nope.toml"))
    assert res.returncode == 2 and "cannot read config file" in res.stderr


def test_print_config_redacts_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.replace('table_mappings = "m.json"\n', ""))
    res = run("print-config", "--config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "hunter2-secret" not in res.stdout and "**********" in res.stdout


def test_setup_postgres_ddl_prints_the_script(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.replace('table_mappings = "m.json"\n', ""))
    res = run("setup", "postgres-ddl", "--config", str(cfg), "--print-sql")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("BEGIN;") and out.rstrip().endswith("COMMIT;")
    for needle in ("CREATE EVENT TRIGGER cdcstream_ddl_command_end", "ON sql_drop", "SECURITY DEFINER"):
        assert needle in out
    assert "hunter2" not in out
    res = run("setup", "postgres-ddl", "--config", str(cfg), "--print-sql", "--uninstall")
    assert "DROP SCHEMA IF EXISTS cdcstream CASCADE" in res.stdout


def _task(tmp_path: Path, slot: str, stream: str = "s") -> Path:
    cfg = tmp_path / f"{slot}.toml"
    body = CONFIG.replace('table_mappings = "m.json"\n', "").replace('stream_name = "s"', f'stream_name = "{stream}"')
    cfg.write_text(
        body.replace('database = "app"', f'database = "app"\nslot_name = "{slot}"\nport = 1\nconnect_timeout = 1')
        + 'endpoint_url = "http://127.0.0.1:1"\n'
        + f'[checkpoint]\nstate_dir = "{tmp_path / "state"}"\n[http]\nlisten = ""\n'
    )
    return cfg


def test_a_copied_config_is_refused_before_it_connects_and_the_owner_can_be_adopted(tmp_path: Path) -> None:
    """Two tasks that differ only in slot_name share <state_dir>/<task_id>.checkpoint.json: the second is refused
    with exit 6 (naming the file and the slot) before it touches anything; status says the same; a deliberate
    change is adopted with one command, keeping the position."""
    from cdcstream.checkpoints.store import FileCheckpointStore
    from cdcstream.config import load_config

    first, second = _task(tmp_path, "a"), _task(tmp_path, "b")
    FileCheckpointStore.for_task(load_config(first)).save({"lsn": "0/16B3F28", "system_id": "7", "timeline": 1})
    res = run("run", "--config", str(second))
    ckpt = tmp_path / "state" / "t.checkpoint.json"
    assert res.returncode == 6, res.stderr
    assert f"{ckpt} was written for another task: slot 'a' (this config: 'b')" in res.stderr
    assert f"cdcstream adopt-checkpoint --config {second}" in res.stderr and "Traceback" not in res.stderr
    status = json.loads(run("status", "--config", str(second)).stdout)
    assert status["checkpoint"]["lsn"] == "0/16B3F28" and status["written_for"]["slot"] == "a"
    assert "slot 'a' (this config: 'b')" in status["checkpoint_problem"]
    adopted = run("adopt-checkpoint", "--config", str(second))
    assert adopted.returncode == 0, adopted.stderr
    assert "slot 'b'" in adopted.stdout and "slot 'a'" in adopted.stdout and "0/16B3F28" in adopted.stdout
    status = json.loads(run("status", "--config", str(second)).stdout)
    assert status["written_for"]["slot"] == "b" and "checkpoint_problem" not in status
    assert status["checkpoint"] == {"lsn": "0/16B3F28", "system_id": "7", "timeline": 1}


def test_a_second_daemon_of_the_same_task_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    from cdcstream.checkpoints.store import FileCheckpointStore
    from cdcstream.config import load_config

    cfg = _task(tmp_path, "a")
    store = FileCheckpointStore.for_task(load_config(cfg))
    store.lock()  # as the running daemon does, for its whole life
    try:
        for command in ("run", "adopt-checkpoint"):
            res = run(command, "--config", str(cfg))
            assert res.returncode == 6, res.stderr
            assert f"another cdcstream process (pid {os.getpid()})" in res.stderr and "Traceback" not in res.stderr
    finally:
        store.unlock()
