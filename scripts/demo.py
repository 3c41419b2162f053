"""Local demo: a private PostgreSQL, a local Kinesis-API server (moto) and the daemon, with records printed as
they arrive in the stream. Run with ``make demo``; Ctrl-C stops everything it started (also when its output goes
through a pipe that Ctrl-C closed first, as in ``make demo | tee log``).

Everything lives under ``.demo/`` in the repository (removed at the next start, and by ``make clean``, which first
stops a server an earlier demo left running).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import free_port  # noqa: E402
from tests.support.postgres import PgServer, start_private_postgres  # noqa: E402

BIN = Path(sys.executable).parent
DEMO = ROOT / ".demo"
STREAM = "cdc-demo"
WORKLOAD = [
    "INSERT INTO customers (first_name, last_name, store_id, balance) VALUES "
    "('Randy', 'Marsh', 5, 12.50), ('Stan', 'Marsh', 5, 0), ('Kyle', 'Broflovski', 7, 99.99)",
    "UPDATE customers SET balance = balance + 10 WHERE last_name = 'Marsh'",
    "DELETE FROM customers WHERE first_name = 'Stan'",
    "INSERT INTO customers (first_name, last_name, store_id, balance) VALUES ('Eric', 'Cartman', 7, -3.00)",
    "TRUNCATE customers",
    "INSERT INTO customers (first_name, last_name, store_id, balance) VALUES ('Butters', 'Stotch', 5, 1.00)",
]


def say(text: str) -> None:
    try:
        print(f"\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"== {text}", flush=True)
    except BrokenPipeError:
        # `make demo | tee log` and Ctrl-C: tee is gone. Nobody reads any more, but the servers must still be
        # stopped, so carry on with stdout pointed at /dev/null (the final flush would fail again otherwise).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def stop_leftover() -> None:
    """Stop a demo PostgreSQL an earlier run left behind (killed with SIGKILL, say): removing .demo/ under a
    running server would leave it running with no data directory to stop it by."""
    pg = PgServer(root=DEMO / "pg", port=0)
    if (pg.datadir / "postmaster.pid").exists():
        say("stopping the PostgreSQL an earlier demo left running")
        pg.stop()


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not become ready within {timeout:.0f}s (see .demo/cdcstream.log)")
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exit-after", type=float, default=None, help="stop by itself after N seconds")
    parser.add_argument("--stop", action="store_true", help="only stop what an earlier demo left running (make clean)")
    args = parser.parse_args()

    stop_leftover()
    if args.stop:
        return 0
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    # Local servers only: dummy credentials, for this process (boto3) and the ones it starts.
    os.environ.update({"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo", "AWS_DEFAULT_REGION": "us-east-1"})
    env = dict(os.environ)
    procs: list[subprocess.Popen[bytes]] = []
    pg = None
    try:
        say("starting a private PostgreSQL 15 (wal_level=logical)")
        pg = start_private_postgres(DEMO / "pg")
        db = pg.create_database("demo")
        pg.execute(
            db,
            "CREATE TABLE customers (id serial PRIMARY KEY, first_name text, last_name text, store_id int, "
            "balance numeric(12,2), updated timestamptz NOT NULL DEFAULT now())",
        )

        say("starting a local Kinesis-API server (moto) and creating the stream")
        kport = free_port()
        endpoint = f"http://127.0.0.1:{kport}"
        procs.append(
            subprocess.Popen(
                [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(kport)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
        wait_http(f"{endpoint}/moto-api/", 20)
        import boto3

        kinesis = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1")
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        kinesis.get_waiter("stream_exists").wait(StreamName=STREAM)

        hport = free_port()
        config = DEMO / "cdcstream.toml"
        config.write_text(
            f"""task_id = "demo"
[source]
engine = "postgres"
host = "127.0.0.1"
port = {pg.port}
user = "cdc"
password = "cdc"
database = "{db}"
sslmode = "disable"
[target]
stream_name = "{STREAM}"
endpoint_url = "{endpoint}"
message_format = "json-unformatted"
[checkpoint]
state_dir = "state"
[http]
listen = "127.0.0.1:{hport}"
[log]
format = "console"
"""
        )
        say(f"starting cdcstream run --config {config.relative_to(ROOT)} (log: .demo/cdcstream.log)")
        log = (DEMO / "cdcstream.log").open("wb")
        procs.append(
            subprocess.Popen([str(BIN / "cdcstream"), "run", "--config", str(config)], stdout=log, stderr=log, env=env)
        )
        wait_http(f"http://127.0.0.1:{hport}/readyz", 60)

        say(f"cdcstream tail --stream {STREAM}: records as they arrive")
        procs.append(
            subprocess.Popen([str(BIN / "cdcstream"), "tail", "--stream", STREAM, "--endpoint-url", endpoint], env=env)
        )
        time.sleep(1.5)
        for statement in WORKLOAD:
            say(f"SQL: {statement}")
            pg.execute(db, statement)
            time.sleep(1.5)
        say(
            f"Try it yourself: psql '{pg.dsn(db)}' and change table customers; metrics at "
            f"http://127.0.0.1:{hport}/metrics. Ctrl-C stops everything."
        )
        deadline = None if args.exit_after is None else time.monotonic() + args.exit_after
        while deadline is None or time.monotonic() < deadline:
            if procs[1].poll() is not None:
                say(f"cdcstream exited with code {procs[1].returncode}; see .demo/cdcstream.log")
                return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping")
        try:
            for proc in reversed(procs):
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
            for proc in reversed(procs):
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
        finally:
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    raise SystemExit(main())
