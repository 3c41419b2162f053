"""A stop signal always stops: SIGTERM at random instants, in every state, ends the real ``cdcstream`` process
cleanly (exit 0) within the documented bound (``drain_timeout`` + 10 s), and nothing is lost: after all the
stops a last run delivers every committed row, so no checkpoint ever passed a record Kinesis had not
acknowledged.

States covered, on PostgreSQL and on MariaDB, under load (a full load of a preloaded table, then big
transactions and a steady stream of smaller ones while it streams): starting (a random instant right after the
start, and with Kinesis unreachable, where the daemon waits for it forever), loading, streaming, and backing off
(a Kinesis outage with records in flight; the source connection dropped and the reader reconnecting). The
instants come from a seeded RNG: a failure names the cycle and its scenario, and re-runs the same way.
"""

from __future__ import annotations

import contextlib
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import orjson

from tests.support.daemon import Daemon, create_stream, read_stream
from tests.support.engines import Engine, Postgres
from tests.support.faultproxy import FaultProxy
from tests.support.fullload import FULL_LOAD_AND_CDC

DRAIN_TIMEOUT = 2.0
#: docs/operations.md, "Stopping": a stop ends the process at most drain_timeout + 10 s after the signal.
BOUND = DRAIN_TIMEOUT + 10.0
PRELOADED = 30_000  # more than max_buffered_records: the load is still reading while records wait
# Per-row partition keys: the records spread over the stream's two shards and several requests are in flight.
MAPPING = (
    '{"rules": [{"rule-type": "selection", "rule-id": "1", "rule-name": "1", "rule-action": "include",'
    ' "object-locator": {"schema-name": "%", "table-name": "kv"}},'
    ' {"rule-type": "object-mapping", "rule-id": "2", "rule-name": "2", "rule-action": "map-record-to-record",'
    ' "object-locator": {"schema-name": "%", "table-name": "kv"},'
    ' "mapping-parameters": {"partition-key-type": "primary-key"}}]}'
)
#: One stop each, in this order: right after the start, in the middle of the full load, then (after a run that
#: completes the load) while streaming the writer's transactions, while waiting for an unreachable Kinesis,
#: during a Kinesis outage, while the source reconnects, and once more at a random instant.
CYCLES = ("instant", "loading", "streaming", "unreachable", "outage", "source-lost", "instant")


def _wait_started(daemon: Daemon, timeout: float = 30) -> None:
    """Until the HTTP endpoint answers (the daemon is up, ready or not)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            daemon.readyz()
            return
        except OSError:
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.1)


def _readies(log: Path) -> int:
    """How many runs logged "ready" so far (the log file holds every run's lines)."""
    return log.read_text().count('"event": "ready"') if log.exists() else 0


def _wait_ready_again(daemon: Daemon, before: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while _readies(daemon.log_path) == before:
        assert time.monotonic() < deadline, daemon.log_tail()
        time.sleep(0.05)


def _terminate(daemon: Daemon, what: str) -> None:
    """SIGTERM; the daemon must exit 0 within the bound (the stop deadline would exit 130 at the bound)."""
    assert daemon.proc is not None
    if daemon.proc.poll() is not None:
        raise AssertionError(f"{what}: the daemon exited before the signal:\n{daemon.log_tail()}")
    daemon.proc.send_signal(signal.SIGTERM)
    try:
        code = daemon.proc.wait(timeout=BOUND + 15)
    except subprocess.TimeoutExpired:
        daemon.kill()
        raise AssertionError(f"{what}: still running {BOUND + 15:.0f}s after SIGTERM:\n{daemon.log_tail()}") from None
    assert code == 0, f"{what}: exit {code} after SIGTERM (0 expected within {BOUND:.0f}s):\n{daemon.log_tail()}"


class _Writer(threading.Thread):
    """Commits 250-row transactions every half second while ``on`` is set: the daemon is always reading.
    :meth:`burst` commits big ones at once (while ``on`` is clear)."""

    def __init__(self, engine: Engine, first: int) -> None:
        super().__init__(name="writer", daemon=True)
        self.engine = engine
        self.committed = first - 1  # rows 1..committed are committed
        self.on = threading.Event()
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        postgres = isinstance(self.engine, Postgres)
        try:
            with self.engine.transactions() as commit:
                while not self.done.is_set():
                    if not self.on.wait(0.1):
                        continue
                    lo, hi = self.committed + 1, self.committed + 250
                    if postgres:
                        query = "INSERT INTO kv SELECT g, 1, repeat('c', 150) FROM generate_series(%s::bigint, %s) g"
                        commit((query, (lo, hi)))
                    else:
                        commit((f"INSERT INTO kv SELECT seq, 1, REPEAT('c', 150) FROM seq_{lo}_to_{hi}", ()))
                    self.committed = hi
                    time.sleep(0.5)
        except BaseException as exc:
            self.error = exc

    def burst(self, transactions: int, rows: int) -> None:
        assert not self.on.is_set()
        for _ in range(transactions):
            lo, hi = self.committed + 1, self.committed + rows
            self.engine.execute(
                self.engine.pick(
                    postgres=f"INSERT INTO kv SELECT g, 2, repeat('b', 150) FROM generate_series({lo}, {hi}) g",
                    mariadb=f"INSERT INTO kv SELECT seq, 2, REPEAT('b', 150) FROM seq_{lo}_to_{hi}",
                )
            )
            self.committed = hi


def _wait_load_checkpointed(daemon: Daemon, timeout: float = 120) -> None:
    """Until the checkpoint says the full load is done (later runs stream from the slot/binlog only)."""
    deadline = time.monotonic() + timeout
    while True:
        for path in (daemon.config.parent / "state").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):  # being replaced
                if (orjson.loads(path.read_bytes())["body"]["checkpoint"].get("load") or {}).get("done"):
                    return
        assert time.monotonic() < deadline, daemon.log_tail()
        time.sleep(0.1)


def _wait_delivered(daemon: Daemon, url: str, stream: str, rows: int) -> None:
    """Until rows 1..``rows`` are all in the stream (read whole only once the daemon has nothing in flight)."""
    deadline = time.monotonic() + 180
    while True:
        assert time.monotonic() < deadline, f"rows missing after 180 s:\n{daemon.log_tail()}"
        with urllib.request.urlopen(daemon.http + "/status", timeout=5) as resp:
            status = orjson.loads(resp.read())
        if status["watermark"]["in_flight"] or (status["source"].get("full_load") or {}).get("finished") is False:
            time.sleep(0.5)
            continue
        seen = {r["data"].get("data", {}).get("id") for r in read_stream(url, stream)}
        missing = set(range(1, rows + 1)) - seen
        if not missing:
            return
        assert time.monotonic() < deadline, f"{len(missing)} rows missing, e.g. {sorted(missing)[:10]}"
        time.sleep(1)


def test_sigterm_at_random_instants_stops_within_the_bound_and_loses_nothing(
    engine: Engine, kinesalite_server: str, tmp_path: Path
) -> None:
    engine.run(
        "CREATE TABLE kv (id bigint PRIMARY KEY, n int NOT NULL, pad varchar(200) NOT NULL)",
        engine.pick(
            postgres=f"INSERT INTO kv SELECT g, 0, repeat('p', 150) FROM generate_series(1, {PRELOADED}) g",
            mariadb=f"INSERT INTO kv SELECT seq, 0, REPEAT('p', 150) FROM seq_1_to_{PRELOADED}",
        ),
    )
    stream = create_stream(kinesalite_server, f"stop-{uuid.uuid4().hex[:8]}", shards=2)
    (tmp_path / "m.json").write_text(MAPPING)
    rnd = random.Random(20261128)
    writer = _Writer(engine, PRELOADED + 1)
    writer.start()
    daemon: Daemon | None = None
    with FaultProxy(kinesalite_server) as proxy:
        try:
            for cycle, scenario in enumerate(CYCLES):
                what = f"cycle {cycle} ({scenario})"
                readies = _readies(tmp_path / "daemon.log")
                if scenario == "unreachable":
                    proxy.outage(600, "reset", every_call=True)
                if daemon is None:
                    daemon = engine.start_daemon(
                        proxy.url,
                        stream,
                        tmp_path,
                        extra=f'{FULL_LOAD_AND_CDC}\ntable_mappings = "m.json"',
                        extra_target=f"drain_timeout = {DRAIN_TIMEOUT}\nrequest_timeout = 5",
                    )
                else:
                    daemon.start()
                if scenario == "instant":
                    # From 0.5 s: in its first ~0.1 s the interpreter runs none of cdcstream's code yet, and a
                    # signal then ends it by its default action before anything was opened (docs/operations.md,
                    # "Stopping"); the rest of start-up (imports, config, connecting) is in range.
                    time.sleep(rnd.uniform(0.5, 3.0))
                elif scenario == "loading":
                    _wait_ready_again(daemon, readies)  # the load runs from here
                    time.sleep(rnd.uniform(0.0, 1.0))
                elif scenario == "streaming":
                    _wait_load_checkpointed(daemon)
                    writer.burst(3, 5_000)  # the reader is busy with these when the signal comes
                    writer.on.set()  # and from now on, changes arrive all the time
                    time.sleep(rnd.uniform(0.5, 2.0))
                elif scenario == "unreachable":
                    _wait_started(daemon)
                    time.sleep(rnd.uniform(1.0, 3.0))
                    status, reason = daemon.readyz()
                    assert status == 503 and "waiting for sink" in reason, (status, reason)
                elif scenario == "outage":
                    daemon.wait_ready()
                    proxy.outage(600)
                    time.sleep(rnd.uniform(0.5, 2.0))
                else:  # source-lost
                    daemon.wait_ready()
                    time.sleep(rnd.uniform(0.2, 1.0))
                    lost = daemon.log_path.read_text().count("connection lost")
                    engine.drop_source_connection()
                    deadline = time.monotonic() + 30
                    while daemon.log_path.read_text().count("connection lost") == lost:  # noticed: reconnecting
                        assert time.monotonic() < deadline, daemon.log_tail()
                        time.sleep(0.05)
                    time.sleep(rnd.uniform(0.0, 1.0))
                _terminate(daemon, what)
                proxy.outage(0)
                assert "stop did not complete" not in daemon.log_path.read_text()
            writer.done.set()
            writer.join(10)
            assert writer.error is None, writer.error
            # Resume once more: every committed row must reach the stream.
            assert daemon is not None
            daemon.start()
            daemon.wait_ready()
            _wait_delivered(daemon, kinesalite_server, stream, writer.committed)
            _terminate(daemon, "final run")
        finally:
            writer.done.set()
            if daemon is not None:
                daemon.kill()
