"""The command line without servers: exit codes and messages for bad input, redaction."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cdcstream.cli import DOCS, _parser
from tests.support.markdown import headings

ROOT = Path(__file__).resolve().parents[2]

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


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = _parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_subcommand_and_option_is_explained_and_points_to_the_docs() -> None:
    commands = _subcommands()
    assert set(commands) == {
        "run",
        "check",
        "status",
        "print-config",
        "reload",
        "healthcheck",
        "setup",
        "tail",
        "adopt-checkpoint",
    }
    for name, sp in commands.items():
        assert sp.description and len(sp.description) > 40, name
        assert sp.epilog is not None, name
        # 'Documentation: docs/<page>, "<section>" (<DOCS>/blob/HEAD/docs/<page>#<anchor>). Exit codes: ...'
        m = re.match(
            rf'Documentation: docs/([\w-]+\.md), "([^"]+)" \({re.escape(DOCS)}/blob/HEAD/docs/\1#([\w-]+)\)', sp.epilog
        )
        assert m, f"{name}: {sp.epilog!r}"
        page, section, fragment = m.groups()
        assert headings(ROOT / "docs" / page).get(fragment) == section, f"{name}: no {section!r} at {page}#{fragment}"
        assert f"cdcstream {name}" in (ROOT / "docs" / page).read_text(), (
            f"docs/{page} does not show `cdcstream {name}`"
        )
        for action in sp._actions:
            assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings or action.dest}"


def _offline_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDCSTREAM_"))}
    return {
        **env,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def test_no_aws_credentials_is_said_the_same_way_by_run_check_and_tail(tmp_path: Path) -> None:
    """A local Kinesis server needs dummy credentials: every command says so (tail printed a 52-line
    traceback, check said "check endpoint_url/region/network")."""
    cfg = tmp_path / "c.toml"
    endpoint = "http://127.0.0.1:1"
    cfg.write_text(
        f"""[source]
database = "app"
port = 1
[target]
stream_name = "s"
endpoint_url = "{endpoint}"
[checkpoint]
state_dir = "state"
[http]
listen = ""
"""
    )
    env = _offline_env(tmp_path)
    hint = "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
    cmd = [sys.executable, "-m", "cdcstream"]
    for args, code, stream in (
        (["run", "--config", str(cfg)], 5, "stderr"),
        (["check", "--config", str(cfg)], 1, "stdout"),
        (["tail", "--stream", "s", "--endpoint-url", endpoint, "--no-follow"], 5, "stderr"),
    ):
        res = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=60, env=env)
        out = getattr(res, stream)
        assert res.returncode == code, res.stdout + res.stderr
        assert "no AWS credentials found" in out and hint in out and endpoint in out, out
        assert "Traceback" not in res.stdout + res.stderr
    # Against AWS itself there is no dummy-credentials hint, only the chain.
    res = subprocess.run([*cmd, "tail", "--stream", "s"], capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 5 and "AWS_PROFILE" in res.stderr and hint not in res.stderr, res.stderr


def test_unexpected_errors_are_one_line_with_what_to_report(tmp_path: Path) -> None:
    res = run("healthcheck", "--url", "notaurl")
    assert res.returncode == 1 and "unknown url type" in res.stderr and "Traceback" not in res.stderr
    res = run("healthcheck", "--timeout", "nan")
    assert res.returncode == 2 and "--timeout: must be more than 0" in res.stderr
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.replace('table_mappings = "m.json"\n', ""))
    res = run("setup", "postgres-ddl", "--config", str(cfg), "--dsn", "not a dsn")
    assert res.returncode == 2 and "--dsn is not a libpq connection string" in res.stderr, res.stderr
