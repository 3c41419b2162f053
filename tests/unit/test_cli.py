"""The command line without servers: exit codes and messages for bad input, redaction."""

from __future__ import annotations

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
