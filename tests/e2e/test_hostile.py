"""Hostile conditions with the real daemon, the same on every source engine (the ``engine`` fixture): secrets
that must never show up in any output, and a corrupt checkpoint. Each engine's own cases: test_pg_hostile.py,
test_mysql_hostile.py."""

from __future__ import annotations

import time
import urllib.request
import uuid
from pathlib import Path

from tests.support.daemon import Daemon, create_stream, run_cli
from tests.support.engines import Engine


def test_corrupt_checkpoint_is_refused_with_a_clear_error(engine: Engine, moto_url: str, tmp_path: Path) -> None:
    engine.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"ck-{uuid.uuid4().hex[:8]}")
    daemon = engine.start_daemon(moto_url, stream, tmp_path)
    try:
        daemon.wait_ready()
        engine.execute("INSERT INTO t VALUES (1)")
        time.sleep(1.5)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    ckpt = tmp_path / "state" / "task1.checkpoint.json"
    ckpt.write_bytes(ckpt.read_bytes()[:40])  # truncated, as a full disk or a bad copy would leave it
    res = run_cli("run", "--config", str(daemon.config))
    assert res.returncode == 6
    assert str(ckpt) in res.stderr and "corrupt or truncated" in res.stderr and "Traceback" not in res.stderr


SECRET = "Zq7-not-in-any-output-9xK"


def test_a_known_password_never_appears_in_any_output(engine: Engine, moto_url: str, tmp_path: Path) -> None:
    user = f"cdc_secret{uuid.uuid4().hex[:6]}"
    engine.execute("CREATE TABLE t (id int PRIMARY KEY)")
    engine.create_login(user, SECRET)
    stream = create_stream(moto_url, f"sec-{uuid.uuid4().hex[:8]}")
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    config = engine.config(tmp_path, moto_url, stream)
    text = config.read_text().replace('user = "cdc"', f'user = "{user}"').replace('level = "info"', 'level = "debug"')
    config.write_text(text.replace('password = "cdc"', f'password_file = "{secret_file}"'))
    outputs = _cli_outputs(config)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        daemon.wait_ready()
        engine.execute("INSERT INTO t VALUES (1)")
        time.sleep(1)
        outputs += _live_outputs(daemon, config)
        # a failure that carries connection details: the server refuses the password the daemon reconnects with
        engine.set_password(user, f"{SECRET}-changed")
        engine.kill_sessions(user)
        if engine.name == "postgres":  # the reconnection is retried until the stop
            time.sleep(3)
            assert daemon.stop() in (0, 3)
        else:  # the refused password stops the daemon
            assert daemon.proc is not None and daemon.proc.wait(timeout=60) == 3
    finally:
        daemon.kill()
        engine.drop_login(user)
    outputs += _cli_outputs(config)  # check with the refused password
    daemon_log = _assert_no_secret(outputs, tmp_path)
    # the failure path ran and was logged (without the password)
    assert engine.pick(postgres="reconnect", mariadb="Access denied") in daemon_log
    if engine.name == "mariadb":
        assert "Traceback" not in daemon_log


def _cli_outputs(config: Path) -> list[str]:
    outputs: list[str] = []
    for command in ("check", "print-config"):
        res = run_cli(command, "--config", str(config))
        outputs += [res.stdout, res.stderr]
    return outputs


def _live_outputs(daemon: Daemon, config: Path) -> list[str]:
    """Every HTTP endpoint of the running daemon and the ``status`` command."""
    outputs = []
    for path in ("/status", "/metrics", "/readyz", "/healthz"):
        with urllib.request.urlopen(daemon.http + path, timeout=5) as resp:
            outputs.append(resp.read().decode())
    res = run_cli("status", "--config", str(config))
    return [*outputs, res.stdout, res.stderr]


def _assert_no_secret(outputs: list[str], tmp_path: Path) -> str:
    """Add the daemon log and the state files to ``outputs``, assert none holds SECRET; return the log."""
    daemon_log = (tmp_path / "daemon.log").read_text()
    outputs = [*outputs, daemon_log, *(p.read_text(errors="replace") for p in (tmp_path / "state").glob("*"))]
    leaked = [o for o in outputs if SECRET in o]
    assert not leaked, leaked[0][:2000]
    return daemon_log
