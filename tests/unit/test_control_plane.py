"""The HTTP control plane without a database: POST /reload needs the control token and refuses browsers, the
token's sources (config, file, environment, the generated state-directory file) and that it is never shown,
and ``cdcstream reload`` sending it. The real daemon's side (a refused reload, a failed one) is in
tests/e2e/test_control_plane.py."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import cast

import pytest

from cdcstream.checkpoints.model import Checkpoint, PgCheckpoint
from cdcstream.config import load_config
from cdcstream.errors import ConfigError, SourceError
from cdcstream.sources.reload import PendingReloads
from cdcstream.telemetry import metrics
from cdcstream.telemetry.control import client_token, daemon_token, refusal, token_path
from cdcstream.telemetry.http import HttpServer
from tests.support import free_port

TOKEN = "t0ken-" + "x" * 40

CONFIG = """task_id = "t"
[source]
database = "app"
[target]
stream_name = "s"
[checkpoint]
state_dir = "{state}"
[http]
listen = "127.0.0.1:{port}"
{http}
"""


def write_config(tmp_path: Path, port: int = 9187, http: str = "") -> Path:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG.format(state=tmp_path / "state", port=port, http=http))
    return path


def test_refusal_rules() -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert refusal(auth, TOKEN) is None
    assert refusal({**auth, "Content-Type": "application/json"}, TOKEN) is None
    # Browsers: any Origin or Sec-Fetch-* header, whatever the token (DNS rebinding sends a same-site one).
    browsers = ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "same-origin"}, {"sec-fetch-mode": "no-cors"})
    for browser in browsers:
        answer = refusal({**auth, **browser}, TOKEN)
        assert answer is not None and answer[0] == 403, browser
    # What an HTML form can post across sites without a CORS preflight.
    for form in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/plain"):
        answer = refusal({**auth, "Content-Type": form}, TOKEN)
        assert answer is not None and answer[0] == 415, form
    for wrong in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"}):
        answer = refusal(wrong, TOKEN)
        assert answer is not None and answer[0] == 401, wrong
    answer = refusal(auth, None)
    assert answer is not None and answer[0] == 503


def test_generated_token_file(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    assert client_token(cfg) is None  # no daemon has run yet
    token = daemon_token(cfg)
    path = token_path(cfg)
    assert path == tmp_path / "state" / "control-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert daemon_token(cfg) == token == client_token(cfg)  # kept across restarts, read by the CLI
    # A damaged file (a crash while writing, an edit) is the daemon's own: replaced, never fatal.
    for damaged in ("", "short\n", "x" * 64 + " with space"):
        path.write_text(damaged)
        assert client_token(cfg) is None
        replaced = daemon_token(cfg)
        assert replaced != token and client_token(cfg) == replaced
        token = replaced
    assert not [p for p in path.parent.iterdir() if p.name != "control-token"]  # no temporary file left


def test_configured_token_file_and_environment(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    cfg = load_config(write_config(tmp_path, http=f'control_token_file = "{secret}"'))
    assert daemon_token(cfg) == TOKEN == client_token(cfg)
    assert not token_path(cfg).exists()  # nothing generated when one is configured
    env = {"CDCSTREAM_HTTP__CONTROL_TOKEN": "e" * 32}
    cfg = load_config(write_config(tmp_path), environ=env)
    assert daemon_token(cfg) == "e" * 32
    assert "e" * 32 not in repr(cfg) and "e" * 32 not in str(cfg.model_dump(mode="json"))


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ('control_token = "change-me"', "at least 32 characters"),
        (f'control_token = "{"a" * 31} b"', "printable ASCII without spaces"),
        (f'control_token = "{TOKEN}"\ncontrol_token_file = "/nope"', "either control_token or control_token_file"),
        ('control_token_file = "/nonexistent/token"', "cannot read control_token_file"),
    ],
)
def test_bad_tokens_are_config_errors(tmp_path: Path, http: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write_config(tmp_path, http=http))


def cli_reload(config: Path, table: str) -> subprocess.CompletedProcess[str]:
    """``cdcstream reload`` as its own process (it configures logging for the whole process)."""
    cmd = [sys.executable, "-m", "cdcstream", "reload", "--config", str(config), "--table", table]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _post(url: str, headers: dict[str, str], data: bytes | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_reload_endpoint_and_cli(tmp_path: Path) -> None:
    """Through a real HTTP server: nothing reaches the reload unless the token is right and no browser sent it;
    ``cdcstream reload`` finds the daemon's generated token and is accepted; refusals are counted."""
    port = free_port()
    cfg_path = write_config(tmp_path, port=port)
    cfg = load_config(cfg_path)
    token = daemon_token(cfg)
    requested: list[str] = []

    async def reload(table: str) -> str:
        if table == "s.nope":
            raise SourceError("reload: table s.nope does not exist")
        requested.append(table)
        return f"reload of {table} queued"

    server = HttpServer(f"127.0.0.1:{port}", dict, lambda: (True, "ready"), reload, token)
    await server.start()
    denied = metrics.CONTROL_REQUESTS.labels("denied")
    before = denied._value.get()
    try:
        url = f"http://127.0.0.1:{port}/reload?table=s.t"
        attempts = [
            {},  # an anonymous request: once a remote way to make every later start fail
            {"Authorization": "Bearer " + "0" * 64},
            {"Authorization": f"Bearer {token}", "Origin": "http://127.0.0.1:9187"},
            {"Authorization": f"Bearer {token}", "Sec-Fetch-Site": "cross-site"},
        ]
        codes = [(await asyncio.to_thread(_post, url, h))[0] for h in attempts]
        form = await asyncio.to_thread(
            _post, url, {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}, b"table=s.t"
        )
        assert codes == [401, 401, 403, 403] and form[0] == 415
        assert requested == []
        assert denied._value.get() - before == 5
        status, body = await asyncio.to_thread(_post, url, {"Authorization": f"Bearer {token}"})
        assert (status, body.strip()) == (202, "reload of s.t queued")
        # The CLI: the generated token from the state directory, the daemon's answers, exit codes.
        ok = await asyncio.to_thread(cli_reload, cfg_path, "s.u")
        assert (ok.returncode, ok.stdout.strip()) == (0, "reload of s.u queued"), ok.stderr
        bad = await asyncio.to_thread(cli_reload, cfg_path, "s.nope")
        assert bad.returncode == 1 and "s.nope does not exist" in bad.stderr
        assert requested == ["s.t", "s.u"]
        token_path(cfg).unlink()  # without the token the CLI says where it looked, and asks nothing
        none = await asyncio.to_thread(cli_reload, cfg_path, "s.v")
        assert none.returncode == 1 and "no control token" in none.stderr and str(token_path(cfg)) in none.stderr
        assert requested == ["s.t", "s.u"]
        assert token not in ok.stdout + ok.stderr + bad.stderr + none.stderr
    finally:
        await server.stop()


def test_failed_reloads_leave_the_queue_and_are_counted() -> None:
    label = "postgres:unit-reloads"
    failed = metrics.RELOADS.labels(label, "failed")
    done = metrics.RELOADS.labels(label, "done")
    before = failed._value.get(), done._value.get()
    pending = PendingReloads({"lsn": "0/1", "reload": ["s.gone", "s.ok"]}, label=label)
    pending.pop(error=SourceError("reload: table s.gone does not exist"))
    assert pending.names == ["s.ok"] and pending.stamp(PgCheckpoint(lsn="0/2")) == {"lsn": "0/2", "reload": ["s.ok"]}
    pending.pop(rows=3)
    assert not pending and pending.stamp(PgCheckpoint(lsn="0/3", reload=["s.gone"])) == {"lsn": "0/3"}
    assert (failed._value.get() - before[0], done._value.get() - before[1]) == (1, 1)
    assert (
        PendingReloads(cast(Checkpoint, {"reload": 5})).names
        == PendingReloads(cast(Checkpoint, {"reload": "s.t"})).names
        == []
    )  # not a list
    status = pending.status(None)
    assert status["pending"] == [] and status["running"] is None
    assert [(f["table"], f["error"]) for f in status["failed"]] == [("s.gone", "reload: table s.gone does not exist")]


def test_token_file_is_not_world_readable_even_with_a_lax_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        cfg = load_config(write_config(tmp_path))
        daemon_token(cfg)
    finally:
        os.umask(old)
    assert stat.S_IMODE(token_path(cfg).stat().st_mode) == 0o600
