"""Helpers shared by the benchmarks: private servers and the benchmark table, daemon configs, running the daemon
and following its checkpoint, CPU time (best of repeated runs; of processes and threads), LSNs, stopping what a
benchmark started.

The benchmarks run from the repository (``python bench/...``) and put its root on ``sys.path`` before importing
this module, so ``tests.support`` (the private servers of the tests) is importable here.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson

from tests.support.daemon import AWS_ENV
from tests.support.mysql import CDC_PASSWORD as MY_CDC_PASSWORD
from tests.support.mysql import CDC_USER as MY_CDC_USER
from tests.support.mysql import MyServer, start_private_mariadb
from tests.support.postgres import CDC_PASSWORD as PG_CDC_PASSWORD
from tests.support.postgres import CDC_USER as PG_CDC_USER
from tests.support.postgres import PgServer, start_private_postgres


def best_of(repeat: int, fn: Callable[[], object], rows: int) -> float:
    """Best per-row CPU time of this process in µs over ``repeat`` runs of ``fn`` (CPU time, so that other load
    on the machine matters less)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best / rows * 1e6


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (or of its thread ``tid``), from /proc."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    """The live child processes of ``pid`` (e.g. the daemon's mapping workers), from /proc."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def lsn_int(text: str) -> int:
    """A PostgreSQL LSN ``X/Y`` as an integer."""
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def stop_all(procs: Iterable[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    """SIGTERM every process, then wait (SIGKILL the ones that do not exit in time)."""
    procs = list(procs)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()


# The benchmarks' private servers: larger WAL / buffer pool than the test servers, so the load is not throttled
# by checkpoints.
PG_CONF = "max_wal_size = 4GB\nshared_buffers = 512MB\n"
MARIADB_CNF = "innodb_buffer_pool_size=512M\n"

# The 10-column table of the end-to-end and full-load benchmarks, on each engine, and the statements that fill
# rows ``lo`` to ``hi`` of it server-side.
PG_TABLE = (
    "CREATE TABLE bench (id bigint PRIMARY KEY, name text, qty int, price numeric(12,2), "
    "created timestamptz DEFAULT now(), flag boolean, payload jsonb, c8 text, c9 double precision, c10 uuid)"
)
PG_INSERT = (
    "INSERT INTO bench SELECT g, 'name ' || g, g % 100, (g % 1000) / 7.0, now(), g % 2 = 0, "
    "jsonb_build_object('k', g), md5(g::text), g / 3.0, gen_random_uuid() FROM generate_series({lo}, {hi}) g"
)
MARIADB_TABLE = (
    "CREATE TABLE bench (id BIGINT PRIMARY KEY, name VARCHAR(64), qty INT, price DECIMAL(12,2), created DATETIME(6), "
    "flag TINYINT(1), payload JSON, c8 CHAR(32), c9 DOUBLE, c10 CHAR(36))"
)
MARIADB_INSERT = (
    "INSERT INTO bench SELECT seq, CONCAT('name ', seq), seq % 100, (seq % 1000) / 7, NOW(6), seq % 2, "
    "JSON_OBJECT('k', seq), MD5(seq), seq / 3, UUID() FROM seq_{lo}_to_{hi}"
)

# The [target] settings of the throughput benchmarks. fake_kinesis.py is not a real shard: measure the pipeline,
# not the 1,000 records/s per-shard budget.
FAST_TARGET = """message_format = "json-unformatted"
max_in_flight_requests = 8
max_buffered_records = 50000
shard_rate_limit = false"""


def machine_line() -> str:
    """The line every benchmark prints first among its results: host, cores, Python."""
    return f"machine: {platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}"


def work_dir(prefix: str) -> Path:
    """A fresh temporary directory the private servers (running as their own OS users) can reach."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    tmp.chmod(0o755)
    return tmp


def bench_postgres(stack: contextlib.ExitStack, tmp: Path) -> PgServer:
    """A private PostgreSQL under ``tmp / "pg"`` with the benchmark settings, stopped when ``stack`` closes."""
    pg = start_private_postgres(tmp / "pg", extra_conf=PG_CONF)
    stack.callback(pg.stop)
    return pg


def bench_mariadb(stack: contextlib.ExitStack, tmp: Path) -> MyServer:
    """A private MariaDB under ``tmp / "my"`` with the benchmark settings, stopped when ``stack`` closes."""
    my = start_private_mariadb(tmp / "my", extra_cnf=MARIADB_CNF)
    stack.callback(my.stop)
    return my


def postgres_source(pg: PgServer, db: str, extra: str = "") -> str:
    """The ``[source]`` body for database ``db`` of the private PostgreSQL, as the ``cdc`` user."""
    return f'''host = "127.0.0.1"
port = {pg.port}
user = "{PG_CDC_USER}"
password = "{PG_CDC_PASSWORD}"
database = "{db}"
sslmode = "disable"
{extra}'''


def mariadb_source(my: MyServer, server_id: int, extra: str = "") -> str:
    """The ``[source]`` body for the ``bench`` database of the private MariaDB, as the ``cdc`` user."""
    return f'''engine = "mysql"
host = "127.0.0.1"
port = {my.port}
user = "{MY_CDC_USER}"
password = "{MY_CDC_PASSWORD}"
server_id = {server_id}
databases = ["bench"]
{extra}'''


def write_config(
    path: Path,
    *,
    task_id: str,
    source: str,
    endpoint_url: str,
    state_dir: Path,
    stream: str = "bench",
    target: str = FAST_TARGET,
    interval: float = 0.2,
    top: str = "",
    sections: str = "",
) -> Path:
    """A benchmark's daemon config: ``top`` lines before ``[source]``, ``target`` settings after the stream and
    endpoint, ``sections`` (e.g. ``[full_load]``) between ``[target]`` and ``[checkpoint]``; a quiet daemon (warnings
    only, JSON) without the HTTP endpoints."""
    path.write_text(
        f"""task_id = "{task_id}"
{top}
[source]
{source}
[target]
stream_name = "{stream}"
endpoint_url = "{endpoint_url}"
{target}
{sections}
[checkpoint]
state_dir = "{state_dir}"
interval = {interval}
[http]
listen = ""
[log]
level = "warning"
format = "json"
"""
    )
    return path


@contextlib.contextmanager
def running_daemon(config: Path, *python_options: str) -> Iterator[subprocess.Popen[bytes]]:
    """``cdcstream run --config config`` (``python_options`` before ``-m``, e.g. cProfile's), its output on this
    terminal; stopped at the end."""
    daemon = subprocess.Popen(
        [sys.executable, *python_options, "-m", "cdcstream", "run", "--config", str(config)],
        env={**os.environ, **AWS_ENV},
    )
    try:
        yield daemon
    finally:
        stop_all([daemon])


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The position in the daemon's checkpoint file; None before the first one (or while it is replaced)."""
    try:
        return dict(orjson.loads(path.read_bytes())["body"]["checkpoint"])
    except (OSError, KeyError, ValueError):
        return None


def wait_checkpoint(daemon: subprocess.Popen[bytes], path: Path, reached: Callable[[dict[str, Any]], bool]) -> None:
    """Poll the checkpoint file until ``reached(position)``; exit if the daemon exits first."""
    while True:
        if daemon.poll() is not None:
            raise SystemExit(f"daemon exited with {daemon.returncode}")
        position = read_checkpoint(path)
        if position is not None and reached(position):
            return
        time.sleep(0.05)
