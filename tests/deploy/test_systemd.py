"""The systemd units and the notify protocol.

``systemd-analyze verify`` exits 0 on unknown keys and unparseable values (measured with systemd 252), so the test
asserts that it prints nothing at all. ExecStart must exist on the machine: the test verifies copies whose
ExecStart points at this environment's ``cdcstream`` script. The protocol test plays the service manager:
it binds the ``NOTIFY_SOCKET`` datagram socket, sets ``WATCHDOG_USEC`` and runs the real daemon.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.support.daemon import Daemon, create_stream, write_config
from tests.support.faultproxy import FaultProxy
from tests.support.postgres import PgDb
from tests.support.tools import tool

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
SHIPPED_EXEC = "/opt/cdcstream/venv/bin/cdcstream"


def _verify(unit_dir: Path, *names: str) -> str:
    res = subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", *names],
        capture_output=True,
        text=True,
        cwd=unit_dir,
        timeout=60,
    )
    return (res.stdout + res.stderr).strip() + ("" if res.returncode == 0 else f"\n(rc {res.returncode})")


def _installed_copies(tmp_path: Path) -> Path:
    cdcstream = shutil.which("cdcstream", path=str(Path(sys.executable).parent))
    assert cdcstream, "the cdcstream entry point is not installed in this environment"
    out = tmp_path / "units"
    out.mkdir()
    for unit in ("cdcstream.service", "cdcstream@.service"):
        text = (UNITS / unit).read_text()
        assert SHIPPED_EXEC in text
        (out / unit).write_text(text.replace(SHIPPED_EXEC, cdcstream))
    return out


def test_units_verify_without_any_output(tmp_path: Path) -> None:
    units = _installed_copies(tmp_path)
    assert _verify(units, str(units / "cdcstream.service")) == ""
    assert _verify(units, str(units / "cdcstream@.service")) == ""
    assert _verify(units, "cdcstream@orders.service") == ""


def test_units_hardening_score(tmp_path: Path) -> None:
    """`systemd-analyze security --offline` exposure at most 2.0 ("OK"; the units score 1.4): a dropped
    hardening line fails here."""
    units = _installed_copies(tmp_path)
    for unit in ("cdcstream.service", "cdcstream@.service"):
        res = subprocess.run(
            [tool("systemd-analyze"), "security", "--offline=yes", "--threshold=20", "--no-pager", str(units / unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr


def test_verify_check_is_not_vacuous(tmp_path: Path) -> None:
    """The assertion above can fail: a misspelt key only warns (rc 0) and is caught by the empty-output rule."""
    units = _installed_copies(tmp_path)
    bad = units / "cdcstream.service"
    bad.write_text(bad.read_text().replace("RestartSec=5s", "RestartSecc=5s"))
    assert "Unknown key" in _verify(units, str(bad))


def test_units_declare_the_operational_contract() -> None:
    for unit in ("cdcstream.service", "cdcstream@.service"):
        lines = set((UNITS / unit).read_text().splitlines())
        for line in (
            "Type=notify",
            "WatchdogSec=60s",
            "Restart=on-failure",
            "DynamicUser=yes",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "PrivateTmp=yes",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "SystemCallFilter=@system-service",
        ):
            assert line in lines, f"{unit}: {line}"
        assert any(line.startswith("LoadCredential=source_password:") for line in lines), unit
        assert any(line.startswith("StateDirectory=cdcstream") for line in lines), unit


class NotifyListener:
    """The service manager's side of sd_notify: a datagram socket collecting (time, message) pairs."""

    def __init__(self) -> None:
        # AF_UNIX paths are limited to 108 bytes: keep it short.
        self.dir = tempfile.mkdtemp(prefix="sdn", dir="/tmp")
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, field: str, timeout: float = 60, after: float = 0.0) -> tuple[float, str]:
        """The first message at or after ``after`` with a line starting with ``field``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, msg in list(self.messages):
                if t >= after and any(line.startswith(field) for line in msg.splitlines()):
                    return t, msg
            time.sleep(0.05)
        raise AssertionError(f"no {field} within {timeout}s; got {self.messages}")

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def notify() -> Iterator[NotifyListener]:
    listener = NotifyListener()
    try:
        yield listener
    finally:
        listener.close()


def test_notify_protocol_ready_status_watchdog_stopping(
    pg_db: PgDb, moto_server: str, tmp_path: Path, notify: NotifyListener
) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_server, f"n-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "c.toml", pg_port=pg_db.server.port, database=pg_db.name, endpoint_url=moto_server, stream=stream
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    # the service manager's environment, set before the process starts
    daemon.env = {**daemon.env, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"}
    daemon.start()
    try:
        t_ready, ready = notify.wait_for("READY=1")
        # READY=1 only once the source and the sink are connected: both said so before it was sent.
        log = daemon.log_tail(200)
        assert "kinesis sink started" in log and "replication started" in log, log
        with urllib.request.urlopen(daemon.http + "/metrics", timeout=5) as resp:
            scrape = resp.read().decode()
        assert f'cdcstream_source_connected{{source="postgres:{pg_db.name}"}} 1.0' in scrape
        assert any(line.startswith("STATUS=streaming") for line in ready.splitlines()), ready
        assert not [m for t, m in notify.messages if t < t_ready and "WATCHDOG=1" in m], "watchdog before ready"
        # WATCHDOG=1 at about half of WATCHDOG_USEC (1 s here), while the pipeline is idle but healthy...
        pg_db.execute("INSERT INTO t SELECT generate_series(1, 100)")
        time.sleep(4.5)
        pings = [t for t, m in notify.messages if "WATCHDOG=1" in m.splitlines()]
        assert len(pings) >= 3, notify.messages
        assert max(b - a for a, b in itertools.pairwise(pings)) < 2.0, pings
        # ... and periodic STATUS= lines saying what it is doing
        statuses = [m for t, m in notify.messages if t > t_ready and m.startswith("STATUS=")]
        assert statuses and "in flight" in statuses[-1], notify.messages
        t_term = time.monotonic()
        assert daemon.proc is not None
        daemon.proc.terminate()
        _, stopping = notify.wait_for("STOPPING=1", timeout=10, after=t_term)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log_tail()
        assert any(line.startswith("STATUS=") for line in stopping.splitlines())
        # JSON log lines (not a TTY), one per lifecycle event
        events = [orjson.loads(line)["event"] for line in daemon.log_path.read_text().splitlines()]
        for event in ("starting", "kinesis sink started", "replication started", "ready", "stopped"):
            assert event in events, events
    finally:
        daemon.kill()


def test_watchdog_withheld_while_the_sink_hangs_and_resumed_after(
    pg_db: PgDb, moto_server: str, tmp_path: Path, notify: NotifyListener
) -> None:
    """A PutRecords request that hangs (no answer, no error) with records outstanding is a wedged sink: the
    pings stop, so systemd would restart the daemon; they resume once requests finish again. (A sink that
    keeps *failing* fast, as in an outage, stays alive: see test_metrics' /readyz test.)"""
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_server, f"w-{uuid.uuid4().hex[:8]}")
    with FaultProxy(moto_server) as proxy:
        config = write_config(
            tmp_path / "c.toml",
            pg_port=pg_db.server.port,
            database=pg_db.name,
            endpoint_url=proxy.url,
            stream=stream,
            extra_target="request_timeout = 60",
        )
        daemon = Daemon(config, tmp_path / "daemon.log")
        daemon.env = {**daemon.env, "NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000"}
        daemon.start()
        try:
            notify.wait_for("READY=1")
            time.sleep(2)
            proxy.latency = 8.0  # the next requests hang for 8 s: four watchdog windows
            t_hang = time.monotonic()
            pg_db.execute("INSERT INTO t SELECT generate_series(1, 10)")
            time.sleep(1.0)
            proxy.latency = 0.0  # later requests are answered at once again
            _, stalled = notify.wait_for("STATUS=stalled: sink", timeout=15, after=t_hang)
            notify.wait_for("WATCHDOG=1", timeout=20, after=t_hang + 8)
            time.sleep(2)
            pings = [t for t, m in notify.messages if "WATCHDOG=1" in m.splitlines() and t > t_hang - 2]
            gaps = [b - a for a, b in itertools.pairwise(pings)]
            assert max(gaps) > 4.0, f"pings kept coming while the sink hung: {gaps}"
            assert pings[-1] - pings[-2] < 2.0, "pings resumed once requests finished"
            assert "records outstanding" in stalled
            log = daemon.log_tail(300)
            assert "watchdog ping withheld" in log and "pipeline alive again" in log, log
            assert daemon.stop() == 0, daemon.log_tail()
        finally:
            daemon.kill()
