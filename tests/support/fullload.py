"""Helpers of the full-load end-to-end tests, shared by PostgreSQL and MySQL/MariaDB.

The stream is replayed like a consumer would (one shard, so arrival order is stream order): ``load``, ``insert``
and ``update`` set a row, ``delete`` removes it; the result must equal the source tables.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import free_port
from tests.support.daemon import Daemon, table_records

ROOT = Path(__file__).resolve().parents[2]
FULL_LOAD_AND_CDC = 'migration_type = "full-load-and-cdc"'
FULL_LOAD = 'migration_type = "full-load"'
# Local Kinesis servers are not limited per shard; the default 1,000 records/s budget would only slow tests.
FAST = "shard_rate_limit = false"
# Small pages and two segments per table in three sessions: many markers, parallel reads.
PARALLEL = "[full_load]\nmax_full_load_subtasks = 3\nparallel_load_threads = 2\nchunk_rows = 1000"


def replay(records: list[dict[str, Any]], table: str, key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """A table's final state from its records, in stream order."""
    state: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in records:
        doc = r["data"]
        meta = doc["metadata"]
        if meta.get("table-name") != table or meta["record-type"] != "data":
            continue
        row = doc["data"]
        k = tuple(row[c] for c in key)
        if meta["operation"] == "delete":
            state.pop(k, None)
        else:
            state[k] = row
    return state


def loads_of(records: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    return [
        r["data"]
        for r in records
        if r["data"]["metadata"].get("table-name") == table and r["data"]["metadata"]["operation"] == "load"
    ]


def _mapping_with(path: Path, schema: str, table: str, rule: dict[str, Any]) -> Path:
    """A mapping file selecting every table of ``schema``, plus ``rule`` for ``table``."""
    rules = [
        {
            "rule-type": "selection",
            "rule-id": "1",
            "rule-name": "1",
            "object-locator": {"schema-name": schema, "table-name": "%"},
            "rule-action": "include",
        },
        {"rule-id": "2", "rule-name": "2", "object-locator": {"schema-name": schema, "table-name": table}, **rule},
    ]
    path.write_text(json.dumps({"rules": rules}))
    return path


def ranges_mapping(path: Path, schema: str, table: str, columns: list[str], boundaries: list[list[str]]) -> Path:
    """A mapping file selecting every table of ``schema`` with a table-settings ``ranges`` rule for ``table``."""
    ranges = {"type": "ranges", "columns": columns, "boundaries": boundaries}
    return _mapping_with(path, schema, table, {"rule-type": "table-settings", "parallel-load": ranges})


def schema_table_key_mapping(path: Path, schema: str, table: str) -> Path:
    """A mapping file selecting every table of ``schema``, with one partition key for all of ``table``'s records
    (an object-mapping rule with partition-key-type schema-table)."""
    rule = {
        "rule-type": "object-mapping",
        "rule-action": "map-record-to-record",
        "mapping-parameters": {"partition-key-type": "schema-table"},
    }
    return _mapping_with(path, schema, table, rule)


def wait_load_complete(daemon: Daemon, timeout: float = 180) -> None:
    """Until the daemon logged the end of the load; fails if it exits first."""
    deadline = time.monotonic() + timeout
    while "full load complete" not in daemon.log_path.read_text():
        assert time.monotonic() < deadline, daemon.log_tail()
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise AssertionError(daemon.log_tail())
        time.sleep(0.5)


def reload_cli(daemon: Daemon, table: str) -> subprocess.CompletedProcess[str]:
    """``cdcstream reload --table`` against the running daemon."""
    cli = [sys.executable, "-m", "cdcstream", "reload", "--config", str(daemon.config), "--table", table]
    return subprocess.run(cli, capture_output=True, text=True, env=daemon.env, timeout=60)


def wait_logged(daemon: Daemon, text: str, count: int = 1, timeout: float = 120) -> None:
    """Until ``text`` is in the daemon's log ``count`` times; fails if the daemon exits first."""
    deadline = time.monotonic() + timeout
    while daemon.log_path.read_text().count(text) < count:
        assert time.monotonic() < deadline, daemon.log_tail()
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise AssertionError(daemon.log_tail())
        time.sleep(0.3)


def load_runs(records: list[dict[str, Any]], table: str) -> list[tuple[int, int]]:
    """(first, last) indices of each contiguous run of ``load`` records among the table's records
    (:func:`~tests.support.daemon.table_records`): one per copy (a reload redone after a crash makes two)."""
    ops = [r["data"]["metadata"].get("operation") for r in table_records(records, table)]
    runs: list[tuple[int, int]] = []
    for i, op in enumerate(ops):
        if op != "load":
            continue
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def worker_pids(log: str) -> list[int]:
    """The mapping worker processes the daemon logged starting (``json`` log lines)."""
    pids: list[int] = []
    for line in log.splitlines():
        if "mapping worker processes started" in line and line.startswith("{"):
            pids.extend(json.loads(line)["pids"])
    return pids


def wait_exited(pids: list[int], timeout: float = 10) -> list[int]:
    """Wait for processes (a killed or stopped daemon's mapping workers) to be gone; the ones still alive."""
    deadline = time.monotonic() + timeout
    while (alive := [p for p in pids if Path(f"/proc/{p}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def peak_rss_kib(pid: int) -> int:
    """The process's peak RSS so far (VmHWM), in KiB; 0 once it is gone or a zombie (no memory lines left)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    if "VmHWM:" not in status:
        return 0
    return int(status.split("VmHWM:")[1].split()[0])


def run_to_exit(daemon: Daemon, timeout: float = 300) -> int:
    """Wait for the daemon to exit 0 (a full-load run); returns its peak RSS in KiB."""
    peak_kib = 0
    assert daemon.proc is not None
    deadline = time.monotonic() + timeout
    while daemon.proc.poll() is None:
        assert time.monotonic() < deadline, daemon.log_tail()
        # The daemon may exit between poll() and the read: VmHWM only grows, so the last sample stands.
        peak_kib = max(peak_kib, peak_rss_kib(daemon.proc.pid))
        time.sleep(0.5)
    assert daemon.proc.returncode == 0, daemon.log_tail()
    return peak_kib


def wait_load_progress(daemon: Daemon, timeout: float = 60) -> bool:
    """Wait until the daemon's checkpoint holds some load progress; False when the load completed first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for path in (daemon.config.parent / "state").glob("*.json"):
            try:
                load = json.loads(path.read_text())["body"]["checkpoint"].get("load") or {}
            except (OSError, ValueError, KeyError):
                continue  # being replaced
            if load.get("done"):
                return False
            if load.get("rows"):
                return True
        time.sleep(0.02)
    raise AssertionError(f"no load progress in the checkpoint after {timeout}s:\n{daemon.log_tail()}")


def kill_mid_load(daemon: Daemon) -> bool:
    """SIGKILL (and restart) the daemon once its checkpoint holds some load progress; False when the load
    completed before that could happen."""
    if not wait_load_progress(daemon):
        return False
    daemon.kill()
    daemon.start()
    return True


def completed_rows(daemon: Daemon) -> int:
    """Rows of the last "full load complete" log line."""
    done = [json.loads(line) for line in daemon.log_path.read_text().splitlines() if '"full load complete"' in line]
    assert done, daemon.log_tail()
    return int(done[-1]["rows"])


@contextlib.contextmanager
def fake_kinesis(*options: str) -> Iterator[str]:
    """The fast fake endpoint (bench/fake_kinesis.py, which counts entries), with extra command-line
    ``options`` (e.g. ``--fail-rate 0.1``); yields its URL once it listens."""
    with fake_kinesis_process(*options) as (url, _):
        yield url


@contextlib.contextmanager
def fake_kinesis_process(*options: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """:func:`fake_kinesis`, yielding its process too (a benchmark reads its CPU time)."""
    port = free_port()
    fake = subprocess.Popen([sys.executable, str(ROOT / "bench" / "fake_kinesis.py"), "--port", str(port), *options])
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}", fake
    finally:
        fake.terminate()
        fake.wait(timeout=10)


def endpoint_stats(url: str) -> dict[str, int]:
    """The fake endpoint's counters (its non-Kinesis ``Stats`` call)."""
    req = urllib.request.Request(url, data=b"{}", headers={"X-Amz-Target": "Kinesis_20131202.Stats"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "fake Kinesis endpoint did not start"
        time.sleep(0.1)
