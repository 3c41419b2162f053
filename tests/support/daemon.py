"""Running the real ``cdcstream`` process in tests: config files, start/stop/kill, reading the stream back."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import orjson

from tests.support import free_port
from tests.support.mysql import MyDb
from tests.support.postgres import PgDb

CDCSTREAM = [sys.executable, "-m", "cdcstream"]
AWS_ENV = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


def write_config(
    path: Path,
    *,
    pg_port: int = 0,
    database: str = "",
    endpoint_url: str,
    stream: str,
    task_id: str = "task1",
    extra_source: str = "",
    extra_target: str = "",
    extra: str = "",
    extra_http: str = "",
    source: str | None = None,
) -> Path:
    """A config for the private PostgreSQL (as the non-superuser ``cdc``) and a Kinesis endpoint.

    ``source`` replaces the PostgreSQL ``[source]`` section body (e.g. :func:`mysql_source`)."""
    http_port = free_port()
    if source is None:
        source = f"""engine = "postgres"
host = "127.0.0.1"
port = {pg_port}
user = "cdc"
password = "cdc"
database = "{database}"
sslmode = "disable"
status_interval = 1
heartbeat_interval = 1
reconnect_max_delay = 1
"""
    path.write_text(
        f"""task_id = "{task_id}"
{extra}
[source]
{source}
{extra_source}
[target]
stream_name = "{stream}"
endpoint_url = "{endpoint_url}"
message_format = "json-unformatted"
linger_ms = 5
retry_max_delay = 0.5
{extra_target}
[checkpoint]
state_dir = "{path.parent / "state"}"
interval = 0.05
[http]
listen = "127.0.0.1:{http_port}"
{extra_http}
[log]
format = "json"
level = "info"
"""
    )
    return path


def mysql_source(port: int, database: str, server_id: int = 4242) -> str:
    """The ``[source]`` body for the private MariaDB (as the least-privilege ``cdc`` user)."""
    return f"""engine = "mysql"
host = "127.0.0.1"
port = {port}
user = "cdc"
password = "cdc"
server_id = {server_id}
databases = ["{database}"]
heartbeat_interval = 1
reconnect_max_delay = 1
connect_timeout = 5
"""


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One ``cdcstream`` command to completion (``run`` only ends by itself on an error)."""
    return subprocess.run(
        [*CDCSTREAM, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **AWS_ENV}
    )


@dataclass
class Daemon:
    """One ``cdcstream run`` process at a time, restartable; logs accumulate in ``log_path``."""

    config: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    env: dict[str, str] = field(default_factory=lambda: {**os.environ, **AWS_ENV})

    @property
    def http(self) -> str:
        text = self.config.read_text()
        listen = text.split('listen = "', 1)[1].split('"', 1)[0]
        return f"http://{listen}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*CDCSTREAM, "run", "--config", str(self.config)], stdout=log, stderr=log, env=self.env
        )
        log.close()
        self.starts += 1

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.http + "/readyz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"daemon not ready after {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM and wait: the daemon drains and checkpoints, then exits 0."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def metrics(self) -> str:
        with urllib.request.urlopen(self.http + "/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    def readyz(self) -> tuple[int, str]:
        """``/readyz``: its status and reason (OSError while nothing listens yet)."""
        try:
            with urllib.request.urlopen(self.http + "/readyz", timeout=5) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()


def db_config(db: PgDb | MyDb, path: Path, endpoint_url: str, stream: str, **config: Any) -> Path:
    """:func:`write_config` for the test database ``db`` (PostgreSQL or MariaDB), as its ``cdc`` user."""
    if isinstance(db, MyDb):
        source = mysql_source(db.server.port, db.name)
        return write_config(path, endpoint_url=endpoint_url, stream=stream, source=source, **config)
    return write_config(
        path, pg_port=db.server.port, database=db.name, endpoint_url=endpoint_url, stream=stream, **config
    )


def start_daemon(db: PgDb | MyDb, endpoint_url: str, stream: str, tmp_path: Path, **config: Any) -> Daemon:
    """Write ``tmp_path/c.toml`` for ``db`` and ``stream`` (:func:`db_config`) and start the daemon (not yet
    ready: call :meth:`Daemon.wait_ready`)."""
    daemon = Daemon(db_config(db, tmp_path / "c.toml", endpoint_url, stream, **config), tmp_path / "daemon.log")
    daemon.start()
    return daemon


def read_stream(endpoint_url: str, stream: str) -> list[dict[str, Any]]:
    """Every record in the stream, shard by shard in order: partition key, shard, sequence, parsed data."""
    client = boto3.client("kinesis", endpoint_url=endpoint_url, region_name="us-east-1", **_creds())
    out: list[dict[str, Any]] = []
    shards = client.list_shards(StreamName=stream)["Shards"]
    for shard in shards:
        it = client.get_shard_iterator(StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")[
            "ShardIterator"
        ]
        while it:
            resp = client.get_records(ShardIterator=it, Limit=10000)
            for r in resp["Records"]:
                out.append(
                    {
                        "shard": shard["ShardId"],
                        "sequence": r["SequenceNumber"],
                        "partition_key": r["PartitionKey"],
                        "data": orjson.loads(r["Data"]),
                    }
                )
            if not resp["Records"] and resp.get("MillisBehindLatest", 0) == 0:
                break
            it = resp.get("NextShardIterator")
    return out


def _creds() -> dict[str, str]:
    return {"aws_access_key_id": "test", "aws_secret_access_key": "test"}


def create_stream(endpoint_url: str, name: str, shards: int = 1) -> str:
    client = boto3.client("kinesis", endpoint_url=endpoint_url, region_name="us-east-1", **_creds())
    client.create_stream(StreamName=name, ShardCount=shards)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100})
    return name


def last_occurrence_order(records: list[dict[str, Any]]) -> list[str]:
    """Stream positions in the order a consumer ends up with after keeping each position's last occurrence."""
    last: dict[str, int] = {}
    for i, r in enumerate(records):
        pos = r["data"].get("metadata", {}).get("stream-position")
        if pos is not None:
            last[pos] = i
    return [pos for pos, _ in sorted(last.items(), key=lambda kv: kv[1])]


def in_key_order(records: list[dict[str, Any]]) -> bool:
    """Whether, for every partition key, the stream positions are in order at their last occurrence.

    Only the settled stream has this property: while a resend is under way (the rest of a key's records after a
    failed entry, or a restarted daemon replaying from its checkpoint) a reader sees the older records again before
    the newer ones follow. Tests therefore wait for it, with a timeout, instead of checking one snapshot; a real
    reordering never settles and still fails."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_key.setdefault(r["partition_key"], []).append(r)
    for recs in by_key.values():
        positions = last_occurrence_order(recs)
        if positions != sorted(positions):
            return False
    return True


def wait_for(endpoint_url: str, stream: str, pred: Any, timeout: float = 60) -> list[dict[str, Any]]:
    """Read the stream until ``pred(records)`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_stream(endpoint_url, stream)
        if pred(records):
            return records
        assert time.monotonic() < deadline, f"stream never satisfied the condition; have {len(records)} records"
        time.sleep(0.3)


def ids(records: list[dict[str, Any]]) -> set[Any]:
    """The ``id`` column of the data records among ``records``."""
    return {r["data"].get("data", {}).get("id") for r in records}


def table_records(records: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    """The records of one table (data and table-scoped control records)."""
    return [r for r in records if r["data"]["metadata"].get("table-name") == table]


def kill_at_random_moments(daemon: Daemon, writer_done: Any, kills: int, seed: int = 20261127) -> None:
    """SIGKILL and restart the daemon at random moments (mostly while streaming, sometimes during start-up)
    until the writer is done and at least ``kills`` kills happened; leaves it running and ready."""
    rnd = random.Random(seed)
    done = 0
    while not writer_done.is_set() or done < kills:
        if rnd.random() < 0.7:
            daemon.wait_ready()
        time.sleep(rnd.uniform(0.05, 1.5))
        daemon.kill()
        done += 1
        daemon.start()
    daemon.wait_ready()


def check_numbered_changes(
    endpoint_url: str, stream: str, table: str, committed: list[tuple[str, int, int]], partition_key: str
) -> list[dict[str, Any]]:
    """Every committed change ``(kind, id, n)`` of ``table`` is in the stream with the right operation and row
    (kind "delete": an update stamping n, then the delete; "upsert": insert or update), and once the stream has
    settled (:func:`in_key_order`), after keeping each stream position's last occurrence the changes are in commit
    order (n increasing)."""
    expected = {n for _, _, n in committed}
    deadline = time.monotonic() + 180
    while True:
        records = table_records(read_stream(endpoint_url, stream), table)
        missing = expected - {r["data"]["data"].get("n") for r in records}
        if not missing and in_key_order(records):
            break
        assert time.monotonic() < deadline, (
            f"{len(missing)} committed changes missing, e.g. {sorted(missing)[:10]}"
            if missing
            else "changes out of commit order after de-duplication, and the order never settled"
        )
        time.sleep(1)
    by_n: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        by_n.setdefault(r["data"]["data"]["n"], []).append(r["data"])
    for kind, key, n in committed:
        assert all(doc["data"]["id"] == key for doc in by_n[n])
        ops = {doc["metadata"]["operation"] for doc in by_n[n]}
        assert ops == ({"update", "delete"} if kind == "delete" else ops & {"insert", "update"}), (kind, n, ops)
    positions = last_occurrence_order(records)
    assert positions == sorted(positions)
    first_n_at: dict[str, int] = {}
    for r in records:
        first_n_at.setdefault(r["data"]["metadata"]["stream-position"], r["data"]["data"]["n"])
    numbers = [first_n_at[p] for p in positions]
    assert numbers == sorted(numbers), "changes out of commit order after de-duplication"
    assert {r["partition_key"] for r in records} == {partition_key}
    return records


def stream_rows_then_stop(
    config: Path, log_path: Path, write: Callable[[], object], endpoint_url: str, stream: str, table: str, n: int
) -> Daemon:
    """Start the daemon on ``config``, ``write()`` once it is ready, wait until rows 1..``n`` of ``table`` (by
    ``id``) are in the stream, then stop it cleanly: its checkpoint covers them."""
    daemon = Daemon(config, log_path)
    daemon.start()
    try:
        daemon.wait_ready()
        write()
        expected = set(range(1, n + 1))
        wait_for(endpoint_url, stream, lambda rs: ids(table_records(rs, table)) >= expected)
        time.sleep(0.5)  # a checkpoint interval, and the confirmation that follows it
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    return daemon


def run_refused(config: Path, code: int, *needles: str) -> str:
    """``run`` refuses to start with exit ``code``, naming the checkpoint file and each of ``needles``, before
    streaming anything and without a traceback; its stderr."""
    from cdcstream.checkpoints.store import FileCheckpointStore
    from cdcstream.config import load_config

    res = run_cli("run", "--config", str(config), timeout=40)
    assert res.returncode == code, res.stderr
    assert "Traceback" not in res.stderr and '"event": "ready"' not in res.stderr
    assert str(FileCheckpointStore.for_task(load_config(config)).path) in res.stderr  # which file
    for needle in needles:
        assert needle in res.stderr, res.stderr
    return res.stderr


def check_fails(config: Path, line: str, *needles: str) -> None:
    """``check`` exits 1 with ``FAIL <line>``, and says each of ``needles``."""
    res = run_cli("check", "--config", str(config))
    assert res.returncode == 1 and f"FAIL {line}" in res.stdout, res.stdout
    for needle in needles:
        assert needle in res.stdout, res.stdout
