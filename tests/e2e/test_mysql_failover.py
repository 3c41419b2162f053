"""MariaDB failover by GTID, end to end: a primary and a replica (``log_slave_updates``, GTID replication).

The daemon streams from the primary (``gtid_mode = "on"``) while a writer commits numbered rows; the primary is
SIGKILLed at a random instant, the replica promoted, the daemon stopped and restarted with the replica's address.
Resuming by file/position there is refused (exit 3, naming the checkpoint's server and the fix, ``check`` the
same); by GTID it resumes, and the stream then holds exactly the rows the surviving server has: every row the
replica applied (including rows the writer never heard the commit of) and the rows written on it after the
promotion, nothing it lacks. Should the daemon have read a transaction the replica never received (the two read
the primary's binlog independently, so at the kill either may be ahead), the resume is refused naming those GTIDs
instead, and the test checks the replica indeed lacks them. The metrics name the server read, before and after.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from pathlib import Path

import pymysql

from cdcstream.checkpoints.store import FileCheckpointStore
from cdcstream.config import load_config
from tests.support.checkpoints import mysql
from tests.support.daemon import (
    Daemon,
    check_fails,
    create_stream,
    mysql_source,
    read_stream,
    run_cli,
    run_refused,
    table_records,
    write_config,
)
from tests.support.mysql import MyPair, MyServer

AFTER_PROMOTION = 1_000_000  # numbers of the rows written on the promoted replica


def _writer(server: MyServer, db: str, committed: list[int], stop: threading.Event) -> None:
    """Numbered single-row transactions until stopped or the server dies; ``committed``: those acknowledged."""
    conn = server.connect(db)
    try:
        with conn.cursor() as cur:
            for n in range(1, 1_000_000):
                if stop.is_set():
                    return
                cur.execute("INSERT INTO events (n, note) VALUES (%s, %s)", (n, f"row {n}"))
                committed.append(n)
                time.sleep(0.003)
    except pymysql.Error:
        return  # the primary was killed
    finally:
        conn.close()


def _numbers(server: MyServer, db: str) -> set[int]:
    return {int(r[0]) for r in server.execute("SELECT n FROM events", db)}


def _streamed(moto_url: str, stream: str) -> list[int]:
    return [r["data"]["data"]["n"] for r in table_records(read_stream(moto_url, stream), "events")]


def _server_info(daemon: Daemon) -> list[str]:
    return re.findall(r"^cdcstream_source_server_info\{(.*)\} 1\.0$", daemon.metrics(), re.M)


def _start_reading(config: Path, log: Path, *, server_id: int) -> Daemon:
    """A ready daemon whose metrics name the server it reads (one series, MariaDB's default GTID domain)."""
    daemon = Daemon(config, log)
    daemon.start()
    try:
        daemon.wait_ready()
        info = _server_info(daemon)
        assert len(info) == 1 and f'server_id="{server_id}"' in info[0] and 'gtid_domain="0"' in info[0], info
    except BaseException:
        daemon.kill()
        raise
    return daemon


def _config(path: Path, server: MyServer, db: str, moto_url: str, stream: str, gtid_mode: str) -> Path:
    source = mysql_source(server.port, db) + f'gtid_mode = "{gtid_mode}"\n'
    return write_config(path, endpoint_url=moto_url, stream=stream, source=source)


def test_mariadb_failover_resumes_by_gtid_with_nothing_missing(my_pair: MyPair, moto_url: str, tmp_path: Path) -> None:
    primary, replica = my_pair.primary, my_pair.replica
    db = primary.create_database("fo")
    primary.execute("CREATE TABLE events (n int PRIMARY KEY, note varchar(40) NOT NULL)", db)
    my_pair.wait_replicated()
    stream = create_stream(moto_url, f"myfo-{uuid.uuid4().hex[:8]}")
    config = _config(tmp_path / "c.toml", primary, db, moto_url, stream, "on")
    daemon = _start_reading(config, tmp_path / "daemon.log", server_id=1)
    try:
        committed: list[int] = []
        stop = threading.Event()
        writer = threading.Thread(target=_writer, args=(primary, db, committed, stop), daemon=True)
        writer.start()
        delay = random.uniform(1.5, 4.0)
        time.sleep(delay)
        my_pair.kill_primary()
        writer.join(timeout=30)
        stop.set()
        assert len(committed) > 50, f"the writer committed only {len(committed)} rows in {delay:.2f}s"
        # The daemon retries the dead address; a clean stop checkpoints everything Kinesis acknowledged, so the
        # checkpoint covers every row it streamed.
        time.sleep(1)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()

    my_pair.promote()
    survived = _numbers(replica, db)
    # The survivor is the oracle, not the writer: with asynchronous replication a commit the writer heard may
    # never have reached the replica, and one whose answer the kill cut off may have.
    assert survived, "nothing replicated"
    store = FileCheckpointStore.for_task(load_config(config))
    checkpoint = mysql(store.load())
    assert checkpoint["server_id"] == 1 and checkpoint["gtid"], checkpoint

    # File/position on the promoted replica: refused, naming both servers and the ways on.
    off = _config(tmp_path / "off.toml", replica, db, moto_url, stream, "off")
    stderr = run_refused(off, 3, "server_id 2", "written for server_id 1", "resume by GTID", "full load")
    assert f"{checkpoint['file']}:{checkpoint['pos']}" in stderr
    check_fails(off, "server identity", "server_id 2", "server_id 1")
    assert mysql(store.load()) == checkpoint  # nothing moved

    # By GTID. The oracle: the replica's binlog state holds the last sequence number it applied of each
    # domain and server id; the checkpoint's GTID of the old primary's domain must be within it.
    state = str(replica.execute("SELECT @@GLOBAL.gtid_binlog_state")[0][0])
    applied = {_domain_server(g): int(g.split("-")[2]) for g in state.split(",") if g}
    lacking = [g for g in checkpoint["gtid"].split(",") if applied.get(_domain_server(g), -1) < int(g.split("-")[2])]
    on = _config(tmp_path / "on.toml", replica, db, moto_url, stream, "on")
    lost: set[int] = set()
    if lacking:
        # The daemon read (and streamed) transactions the replica never received: they are gone from the
        # database, and resuming would skip the new primary's transactions of the same sequence numbers.
        run_refused(on, 3, "written for server_id 1", "never applied them", *lacking)
        lost = set(_streamed(moto_url, stream)) - survived
        assert lost and survived <= set(_streamed(moto_url, stream)), (sorted(survived)[-5:], sorted(lost))
        # The way on the refusal names: start over with a full load from the new primary.
        store.path.rename(store.path.with_suffix(".old"))
        on.write_text(
            on.read_text().replace('task_id = "task1"', 'task_id = "task1"\nmigration_type = "full-load-and-cdc"')
        )
    else:
        assert "(failover?)" in run_cli("check", "--config", str(on)).stdout
    daemon = _start_reading(on, tmp_path / "daemon.log", server_id=2)
    try:
        new = set(range(AFTER_PROMOTION, AFTER_PROMOTION + 20))
        for n in sorted(new):
            replica.execute("INSERT INTO events (n, note) VALUES (%s, 'after failover')", db, params=(n,))
        expected = survived | new
        deadline = time.monotonic() + 60
        while not expected <= set(streamed := _streamed(moto_url, stream)):
            assert time.monotonic() < deadline, f"missing after the failover: {sorted(expected - set(streamed))[:20]}"
            time.sleep(0.3)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    # Nothing the surviving server lacks, but for the transactions the refusal named: the checkpoint covered every
    # row streamed from the old primary, and a resume requires it to be contained in the replica's binlog.
    assert set(_streamed(moto_url, stream)) == expected | lost
    assert mysql(store.load())["server_id"] == 2
    log = (tmp_path / "daemon.log").read_text()
    assert '"event": "source server"' in log
    assert lacking or "server identity changed (failover?)" in log


def _domain_server(gtid: str) -> tuple[str, str]:
    domain, server, _seq = gtid.split("-")
    return domain, server
