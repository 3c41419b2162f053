"""`make demo` keeps working: the demo script brings everything up and records flow (README quick start), and
Ctrl-C stops everything it started, also when its output pipe was closed first (`make demo | tee log`)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEMO_PG = ROOT / ".demo" / "pg" / "data"


def test_demo_shows_records_flowing_and_ctrl_c_behind_a_closed_pipe_stops_postgres() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        # The demo runs its workload, then prints how to try it yourself (with the server's port).
        while not any(line.startswith("== Try it yourself") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines[-50:])
            lines.append(proc.stdout.readline())
        out = "".join(lines)
        port = int(re.search(r"port=(\d+)", out).group(1))  # type: ignore[union-attr]
        assert (DEMO_PG / "postmaster.pid").exists()
        # tee killed by the same Ctrl-C: the pipe closes first, then the demo gets SIGINT.
        proc.stdout.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=90) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Records as `cdcstream tail` printed them, in the demo's output, in order.
    for needle in (
        '"RestartTask"',
        '"operation":"insert"',
        '"operation":"update"',
        '"operation":"delete"',
        '"TruncateTable"',
    ):
        assert needle in out, f"{needle} not in demo output:\n{out[-3000:]}"
    assert out.index('"TruncateTable"') < out.rindex('"operation":"insert"')
    # Everything it started is stopped: PostgreSQL too (its data directory is gone with .demo/pg).
    assert not DEMO_PG.exists(), "the demo's PostgreSQL was left running"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"something still listens on the demo's port {port}"
