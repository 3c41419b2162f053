"""PostgreSQL failover and standbys, end to end with a primary and a streaming physical standby of private servers.

* PostgreSQL 17: the daemon creates a failover slot, the standby keeps it synchronised; the primary is stopped
  at a random instant while a writer commits and the standby is promoted. The daemon, configured with both hosts
  and ``target_session_attrs = "read-write"``, follows it; the promoted standby inherited
  ``synchronized_standby_slots`` naming a slot it does not have, so the stream waits: the daemon says so
  (log, ``cdcstream_source_stalled_seconds``, ``check``) and goes on once the setting is fixed. Nothing the new
  primary holds is missing from the stream, and the stream holds nothing it lacks.
* PostgreSQL 16 without failover slots: the same switch stops the daemon (exit 3) with the missing-slot error.
* PostgreSQL 16 decoding on a hot standby: the daemon reads the standby and goes on when it is promoted.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.support import running
from tests.support.daemon import Daemon, create_stream, ids, read_stream, run_cli, table_records, wait_for, write_config
from tests.support.pg_standby import STANDBY_SLOT, crash, promote, start_standby, wait_until
from tests.support.postgres import PgServer, ServerStartError, start_private_postgres

#: Ids the writer uses after the promotion: never one the old primary may have committed.
AFTER = 1_000_000


class Pair:
    """A primary, its standby and a database (with table ``t``) on both."""

    def __init__(self, primary: PgServer, standby: PgServer, db: str) -> None:
        self.primary, self.standby, self.db = primary, standby, db

    def stop(self) -> None:
        self.primary.stop()
        self.standby.stop()


def _pair(version: int, *, failover: bool) -> Pair:
    primary = start_private_postgres(version=version)
    try:
        db = primary.create_database()
        primary.execute(db, "CREATE TABLE t (id int PRIMARY KEY)")
        if failover:
            # Set before the copy, so the standby inherits it, as a real one does (its pitfall after promotion).
            primary.execute("postgres", f"SELECT pg_create_physical_replication_slot('{STANDBY_SLOT}')", superuser=True)
            primary.execute(
                "postgres", f"ALTER SYSTEM SET synchronized_standby_slots = '{STANDBY_SLOT}'", superuser=True
            )
            primary.execute("postgres", "SELECT pg_reload_conf()", superuser=True)
        standby = start_standby(primary, sync_slots=failover)
    except BaseException:
        primary.stop()
        raise
    return Pair(primary, standby, db)


@pytest.fixture
def pair17() -> Iterator[Pair]:
    yield from running(lambda: _pair(17, failover=True), ServerStartError)


@pytest.fixture
def pair16() -> Iterator[Pair]:
    yield from running(lambda: _pair(16, failover=False), ServerStartError)


class Writer(threading.Thread):
    """Commits one row per transaction to ``t`` on ``dsn`` until stopped or the server goes away."""

    def __init__(self, dsn: str, first: int = 1) -> None:
        super().__init__(daemon=True)
        self.dsn, self.next = dsn, first
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                while not self.done.is_set():
                    conn.execute("INSERT INTO t VALUES (%s)", (self.next,))
                    self.next += 1
                    time.sleep(0.005)
        except psycopg.Error:
            pass  # the primary is gone


def _config(tmp_path: Path, servers: list[PgServer], db: str, url: str, stream: str, extra: str = "") -> Path:
    hosts = ",".join(s.host for s in servers)
    ports = ",".join(str(s.port) for s in servers)
    source = f"""engine = "postgres"
host = "{hosts}"
port = "{ports}"
user = "cdc"
password = "cdc"
database = "{db}"
sslmode = "disable"
slot_name = "failover_slot"
status_interval = 1
heartbeat_interval = 1
reconnect_max_delay = 1
connect_timeout = 3
stall_timeout = 2
table_check_interval = 1
{extra}
"""
    return write_config(tmp_path / "c.toml", endpoint_url=url, stream=stream, source=source)


def _both_hosts(pair: Pair, url: str, tmp_path: Path) -> tuple[str, Path, Daemon]:
    """A stream and a started daemon configured with both servers and target_session_attrs = "read-write"."""
    stream = create_stream(url, f"fo{pair.primary.version}-{uuid.uuid4().hex[:8]}")
    servers = [pair.primary, pair.standby]
    config = _config(tmp_path, servers, pair.db, url, stream, 'target_session_attrs = "read-write"')
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    return stream, config, daemon


def _stream_ids(url: str, stream: str) -> set[int]:
    return {int(i) for i in ids(table_records(read_stream(url, stream), "t"))}


def _table_ids(server: PgServer, db: str) -> set[int]:
    return {int(r[0]) for r in server.execute(db, "SELECT id FROM t")}


def _slot(server: PgServer, name: str = "failover_slot") -> tuple[bool, bool, bool] | None:
    rows = server.execute(
        "postgres",
        "SELECT failover, synced, temporary FROM pg_replication_slots WHERE slot_name = %s",
        superuser=True,
        params=(name,),
    )
    return None if not rows else (bool(rows[0][0]), bool(rows[0][1]), bool(rows[0][2]))


def _metric(daemon: Daemon, name: str) -> float | None:
    found = re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", daemon.metrics(), re.M)
    return float(found[0]) if found else None


def test_a_failover_slot_follows_a_promotion_with_nothing_missing(pair17: Pair, moto_url: str, tmp_path: Path) -> None:
    primary, standby, db = pair17.primary, pair17.standby, pair17.db
    stream, config, daemon = _both_hosts(pair17, moto_url, tmp_path)
    writer = Writer(primary.dsn(db))
    try:
        daemon.wait_ready()
        assert _slot(primary) == (True, False, False)  # created as a failover slot
        writer.start()
        wait_for(moto_url, stream, lambda rs: len(table_records(rs, "t")) >= 50)
        wait_until(lambda: _slot(standby) == (True, True, False), "the slot to be synced and sync-ready", 60)
        res = run_cli("check", "--config", str(config))
        assert "standby: slot failover_slot synced and sync-ready" in res.stdout, res.stdout
        # ... and the metric says so (a promotion of it now keeps capture going)
        ready = f'server="{standby.host}:{standby.port}"'
        wait_until(
            lambda: any(
                x.startswith("cdcstream_source_standby_slot_ready{") and ready in x and x.endswith(" 1.0")
                for x in daemon.metrics().splitlines()
            ),
            "cdcstream_source_standby_slot_ready to be 1 for the standby",
            30,
        )
        assert "slot failover_slot is a failover slot" in res.stdout, res.stdout
        time.sleep(random.Random().uniform(0, 1.5))  # a random instant of the writer's stream
        crash(primary)
        writer.done.set()
        writer.join(10)
        promote(standby)
        # The promoted standby inherited synchronized_standby_slots = 'standby1', a slot it does not have: the
        # walsender waits for it. The daemon names it and the stall.
        wait_until(lambda: "replication stream stalled" in daemon.log_tail(400), "the stall to be reported", 60)
        log = daemon.log_tail(400)
        assert "synchronized_standby_slots names slots no standby confirms WAL through" in log, log
        assert f"{STANDBY_SLOT} does not exist on this server" in log
        assert (_metric(daemon, "cdcstream_source_stalled_seconds") or 0) > 0
        res = run_cli("check", "--config", str(config))
        assert "FAIL synchronized_standby_slots" in res.stdout and f"{STANDBY_SLOT} does not exist" in res.stdout
        standby.execute("postgres", "ALTER SYSTEM SET synchronized_standby_slots = ''", superuser=True)
        standby.execute("postgres", "SELECT pg_reload_conf()", superuser=True)
        after = Writer(standby.dsn(db), first=AFTER)
        after.start()
        time.sleep(1)
        after.done.set()
        after.join(10)
        survived = _table_ids(standby, db)  # the surviving timeline: the server is the oracle
        assert max(survived) >= AFTER
        wait_for(moto_url, stream, lambda rs: {int(i) for i in ids(table_records(rs, "t"))} >= survived, 90)
        streamed = _stream_ids(moto_url, stream)
        # Nothing extra: synchronized_standby_slots kept the walsender from sending what the standby lacked.
        assert streamed <= survived, sorted(streamed - survived)[:10]
        assert _metric(daemon, "cdcstream_source_timeline") == 2
        assert _metric(daemon, "cdcstream_source_stalled_seconds") == 0
        assert "timeline changed" in daemon.log_tail(400)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        writer.done.set()
        daemon.kill()
    # Commits the old primary acknowledged but never shipped are gone with it (asynchronous replication): not
    # in the new primary, and not in the stream either.
    print(f"old primary's commits lost with it: {writer.next - 1 - len(survived & set(range(1, AFTER)))}")


def test_without_failover_slots_a_switch_stops_with_exit_3(pair16: Pair, moto_url: str, tmp_path: Path) -> None:
    """PostgreSQL 16: the slot lives on the primary only. After the promotion the daemon finds no slot on the new
    primary and stops (exit 3) with the missing-slot error and the ways on, instead of creating one and skipping
    the changes in between."""
    primary, standby, db = pair16.primary, pair16.standby, pair16.db
    stream, _config_file, daemon = _both_hosts(pair16, moto_url, tmp_path)
    writer = Writer(primary.dsn(db))
    try:
        daemon.wait_ready()
        writer.start()
        wait_for(moto_url, stream, lambda rs: len(table_records(rs, "t")) >= 20)
        crash(primary)
        writer.done.set()
        promote(standby)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=90) == 3, daemon.log_tail()
    finally:
        writer.done.set()
        daemon.kill()
    log = daemon.log_tail(100)
    assert "replication slot 'failover_slot' does not exist, but a checkpoint at LSN" in log, log
    assert "failover slot needs PostgreSQL 17" in log and "full-load-and-cdc" in log
    assert not standby.execute("postgres", "SELECT 1 FROM pg_replication_slots", superuser=True)  # none created


def test_decoding_on_a_standby_goes_on_after_its_promotion(pair16: Pair, moto_url: str, tmp_path: Path) -> None:
    """PostgreSQL 16: the daemon reads a hot standby (its own slot there, made fast by pg_log_standby_snapshot()
    on the primary) while the writer commits on the primary; the standby is promoted and the daemon goes on from
    the same slot, which is local to it: every row the promoted standby holds is in the stream."""
    primary, standby, db = pair16.primary, pair16.standby, pair16.db
    primary.execute(db, "CREATE PUBLICATION cdcstream FOR TABLE t")  # the standby cannot create it
    wait_until(lambda: standby.execute(db, "SELECT 1 FROM pg_publication"), "the publication on the standby")
    stream = create_stream(moto_url, f"sb16-{uuid.uuid4().hex[:8]}")
    config = _config(tmp_path, [standby], db, moto_url, stream)
    daemon = Daemon(config, tmp_path / "daemon.log")
    writer = Writer(primary.dsn(db))
    daemon.start()
    try:
        # Slot creation on a standby waits for the primary to log its running transactions.
        wait_until(
            lambda: (
                primary.execute("postgres", "SELECT pg_log_standby_snapshot()", superuser=True)
                and standby.execute("postgres", "SELECT 1 FROM pg_replication_slots", superuser=True)
            ),
            "the slot on the standby",
        )
        daemon.wait_ready()
        writer.start()
        wait_for(moto_url, stream, lambda rs: len(table_records(rs, "t")) >= 30)
        writer.done.set()
        writer.join(10)
        promote(standby)
        after = Writer(standby.dsn(db), first=AFTER)
        after.start()
        time.sleep(1)
        after.done.set()
        after.join(10)
        survived = _table_ids(standby, db)
        assert max(survived) >= AFTER
        wait_for(moto_url, stream, lambda rs: {int(i) for i in ids(table_records(rs, "t"))} >= survived, 90)
        assert _stream_ids(moto_url, stream) <= survived
        assert _metric(daemon, "cdcstream_source_timeline") == 2
        assert daemon.stop() == 0, daemon.log_tail()
        # The checkpoints after the promotion carry timeline 2: a restart resumes (with timeline 1 a position
        # past the switch would be refused as another branch of the cluster).
        daemon.start()
        daemon.wait_ready()
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        writer.done.set()
        daemon.kill()
    assert '"standby": true' in daemon.log_tail(400)
    assert "the standby read was promoted" in daemon.log_tail(400)
