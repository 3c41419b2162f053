"""Full load end to end (real ``cdcstream`` process, a private database server, a Kinesis server).

The tests that check the same over both sources take the ``engine`` fixture and run once with PostgreSQL and
once with MariaDB; the SQL dialect, connections and daemon config differ only behind
:class:`tests.support.fullload.Engine`. The rest here is PostgreSQL's (mapping workers killed or signalled,
load rows against inserted rows, reload); MariaDB's own are in ``test_mysql_full_load.py``.

The stream is replayed like a consumer would (one shard, so arrival order is stream order): ``load``, ``insert``
and ``update`` set a row, ``delete`` removes it. The result must equal the source tables.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import pg_types as m
from tests.support.daemon import (
    Daemon,
    create_stream,
    kill_at_random_moments,
    read_stream,
    start_daemon,
    table_records,
    wait_for,
)
from tests.support.engines import Engine, Postgres
from tests.support.fullload import (
    FAST,
    FULL_LOAD,
    FULL_LOAD_AND_CDC,
    PARALLEL,
    completed_rows,
    endpoint_stats,
    fake_kinesis,
    kill_mid_load,
    load_runs,
    loads_of,
    ranges_mapping,
    reload_cli,
    replay,
    run_to_exit,
    schema_table_key_mapping,
    wait_exited,
    wait_load_complete,
    wait_load_progress,
    wait_logged,
    worker_pids,
)
from tests.support.postgres import PgDb


def _writer(engine: Engine, stop: threading.Event, done: threading.Event) -> None:
    """Inserts, updates and deletes in several tables until told to stop."""
    insert_a = engine.pick(
        postgres="INSERT INTO a (id, v) VALUES (%s, 0) ON CONFLICT DO NOTHING",
        mariadb="INSERT IGNORE INTO a (id, v) VALUES (%s, 0)",
    )
    upsert_b = engine.pick(
        postgres="INSERT INTO b (x, y, s) VALUES (%s, %s, 'w') ON CONFLICT (x, y) DO UPDATE SET s = 'u'",
        mariadb="INSERT INTO b (x, y, s) VALUES (%s, %s, 'w') ON DUPLICATE KEY UPDATE s = 'u'",
    )
    n = 0
    try:
        with engine.transactions() as commit:
            while not stop.is_set():
                n += 1
                commit(
                    ("UPDATE a SET v = v + 1 WHERE id = %s", (n * 7 % 5000 + 1,)),
                    (insert_a, (100_000 + n,)),
                    ("DELETE FROM b WHERE x = %s AND y = %s", (n % 40, n % 3)),
                    (upsert_b, (n % 50 + 40, n % 3)),
                )
                time.sleep(0.002)
    finally:
        done.set()


def _tables(engine: Engine) -> None:
    """a: 5,000 rows; b: 120 rows under a two-column key; c: 8,000 rows."""
    engine.run(
        "CREATE TABLE a (id int PRIMARY KEY, v int NOT NULL)",
        *engine.pick(
            postgres=[
                "INSERT INTO a SELECT g, g FROM generate_series(1, 5000) g",
                "CREATE TABLE b (x int, y int, s text NOT NULL, PRIMARY KEY (x, y))",
                "INSERT INTO b SELECT g % 40, g / 40, 's' || g FROM generate_series(0, 119) g",
                "CREATE TABLE c (id bigint PRIMARY KEY, t text NOT NULL)",
                "INSERT INTO c SELECT g, md5(g::text) FROM generate_series(1, 8000) g",
            ],
            mariadb=[
                "INSERT INTO a SELECT seq, seq FROM seq_1_to_5000",
                "CREATE TABLE b (x int, y int, s varchar(20) NOT NULL, PRIMARY KEY (x, y))",
                "INSERT INTO b SELECT seq % 40, seq DIV 40, CONCAT('s', seq) FROM seq_0_to_119",
                "CREATE TABLE c (id bigint PRIMARY KEY, t varchar(40) NOT NULL)",
                "INSERT INTO c SELECT seq, md5(seq) FROM seq_1_to_8000",
            ],
        ),
    )
    engine.analyze("a", "b", "c")


@pytest.mark.pg_core
def test_full_load_and_cdc_with_writer_converges(engine: Engine, moto_url: str, tmp_path: Path) -> None:
    _tables(engine)
    stream = create_stream(moto_url, f"flc-{uuid.uuid4().hex[:8]}")
    stop, done = threading.Event(), threading.Event()
    writer = threading.Thread(target=_writer, args=(engine, stop, done), daemon=True)
    writer.start()
    time.sleep(0.3)
    daemon = engine.start_daemon(
        moto_url,
        stream,
        tmp_path,
        extra=f"{FULL_LOAD_AND_CDC}\n{PARALLEL}",
        extra_target=f"{FAST}\npartition_include_schema_table = true\ninclude_partition_value = true",
    )
    try:
        daemon.wait_ready()
        time.sleep(3)
        stop.set()
        writer.join()
        for table, key in (("a", ("id",)), ("b", ("x", "y")), ("c", ("id",))):
            expected = engine.source_rows(table, key)
            wait_for(moto_url, stream, lambda recs, t=table, k=key, e=expected: replay(recs, t, k) == e, timeout=120)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        stop.set()
        daemon.kill()
    records = read_stream(moto_url, stream)
    a_loads = loads_of(records, "a")
    assert len({r["data"]["id"] for r in a_loads}) >= 5000
    meta = a_loads[0]["metadata"]
    assert meta["partition-key-type"] == "primary-key"
    assert meta["partition-key-value"] == f"{engine.schema}.a.{a_loads[0]['data']['id']}"
    assert "transaction-id" not in meta and "stream-position" not in meta
    b_load = next(r for r in records if r["data"]["metadata"].get("table-name") == "b")
    assert b_load["partition_key"] == f"{engine.schema}.b." + "{x}.{y}".format(**b_load["data"]["data"])
    # Every load row precedes every CDC row (CDC starts at the snapshot's consistent point / binlog position).
    ops = [r["data"]["metadata"]["operation"] for r in records if r["data"]["metadata"]["record-type"] == "data"]
    first_cdc = next(i for i, op in enumerate(ops) if op != "load")
    assert "load" not in ops[first_cdc:]
    if engine.name == "mariadb":
        # The daemon's cdc user has RELOAD: the snapshot is taken under FLUSH TABLES WITH READ LOCK (the fallback
        # without it is in tests/integration/test_mysql_full_load.py).
        log = daemon.log_path.read_text()
        assert "FLUSH TABLES WITH READ LOCK" in log and "lock_seconds" in log
    # The checkpoint says the load is done: a restart streams on without loading again.
    daemon.start()
    daemon.wait_ready()
    engine.execute("INSERT INTO c VALUES (999999, 'after restart')")
    wait_for(moto_url, stream, lambda recs: any(r["data"].get("data", {}).get("id") == 999999 for r in recs))
    assert daemon.stop() == 0
    assert len(loads_of(read_stream(moto_url, stream), "a")) == len(a_loads)


def test_full_load_only_exits_and_covers_special_tables(engine: Engine, moto_url: str, tmp_path: Path) -> None:
    engine.run(
        *engine.pick(
            postgres=[
                "CREATE TABLE comp (a int, b text, n int NOT NULL, PRIMARY KEY (a, b))",
                "INSERT INTO comp SELECT g % 7, 'k' || g, g FROM generate_series(1, 3000) g",
                "CREATE TABLE nopk (n int NOT NULL, s text NOT NULL)",
                "INSERT INTO nopk SELECT g, 'r' || g FROM generate_series(1, 2500) g",
                "CREATE TABLE ranged (id int PRIMARY KEY, grp int, s text NOT NULL)",
                "INSERT INTO ranged SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 100 END, 'x' || g "
                "FROM generate_series(1, 5000) g",
            ],
            mariadb=[
                "CREATE TABLE comp (a int, b varchar(20), n int NOT NULL, PRIMARY KEY (a, b))",
                "INSERT INTO comp SELECT seq % 7, CONCAT('k', seq), seq FROM seq_1_to_3000",
                "CREATE TABLE nopk (n int NOT NULL, s varchar(20) NOT NULL)",
                "INSERT INTO nopk SELECT seq, CONCAT('r', seq) FROM seq_1_to_2500",
                "CREATE TABLE ranged (id int PRIMARY KEY, grp int, s varchar(20) NOT NULL)",
                "INSERT INTO ranged SELECT seq, CASE WHEN seq % 10 = 0 THEN NULL ELSE seq % 100 END, CONCAT('x', seq) "
                "FROM seq_1_to_5000",
            ],
        ),
        "INSERT INTO nopk VALUES (1, 'r1')",  # an exact duplicate row: both must arrive
        "CREATE TABLE empty (id int PRIMARY KEY)",
    )
    mapping = ranges_mapping(
        tmp_path / "mapping.json",
        engine.schema,
        "ranged",
        ["grp", "id"],
        [["20", "1000"], ["50", "50"], ["80", "4000"]],
    )
    stream = create_stream(moto_url, f"fl-{uuid.uuid4().hex[:8]}")
    daemon = engine.start_daemon(
        moto_url,
        stream,
        tmp_path,
        extra=f'{FULL_LOAD}\ntable_mappings = "{mapping}"\n[full_load]\nchunk_rows = 500\n'
        "parallel_load_buffer_size = 100",
        extra_target=FAST,
    )
    try:
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=120) == 0, daemon.log_tail()
    finally:
        daemon.kill()
    assert "full load complete" in daemon.log_path.read_text()
    records = read_stream(moto_url, stream)
    assert replay(records, "comp", ("a", "b")) == engine.source_rows("comp", ("a", "b"))
    assert replay(records, "ranged", ("id",)) == engine.source_rows("ranged", ("id",))
    assert len(loads_of(records, "ranged")) == 5000  # no segment overlap, NULL range values included
    nopk = sorted((r["data"]["n"], r["data"]["s"]) for r in loads_of(records, "nopk"))
    assert nopk == sorted(engine.execute("SELECT n, s FROM nopk"))
    assert loads_of(records, "nopk")[0]["metadata"]["partition-key-type"] == "schema-table"
    assert loads_of(records, "empty") == []
    if engine.name == "postgres":
        # No slot: full-load alone needs none.
        slots = engine.execute("SELECT count(*) FROM pg_replication_slots WHERE database = current_database()")
        assert slots == [(0,)]
    # A second run finds the completed load in the checkpoint and exits at once without loading again.
    daemon.start()
    assert daemon.proc.wait(timeout=60) == 0, daemon.log_tail()
    assert "full load already completed" in daemon.log_path.read_text()
    assert len(read_stream(moto_url, stream)) == len(records)


def _start_load(
    engine: Engine, moto_url: str, tmp_path: Path, tables: dict[str, int], processes: int
) -> tuple[str, Daemon]:
    """Tables of ``n`` rows each and a daemon starting a parallel full-load-and-cdc of them."""
    for name, n in tables.items():
        engine.run(
            *engine.pick(
                postgres=[
                    f"CREATE TABLE {name} (id int PRIMARY KEY, s text NOT NULL)",
                    f"INSERT INTO {name} SELECT g, repeat('x', 50) || g FROM generate_series(1, {n}) g",
                ],
                mariadb=[
                    f"CREATE TABLE {name} (id int PRIMARY KEY, s varchar(80) NOT NULL)",
                    f"INSERT INTO {name} SELECT seq, CONCAT(REPEAT('x', 50), seq) FROM seq_1_to_{n}",
                ],
            )
        )
    engine.analyze(*tables)
    stream = create_stream(moto_url, f"flk-{uuid.uuid4().hex[:8]}")
    daemon = engine.start_daemon(
        moto_url,
        stream,
        tmp_path,
        extra=f"{FULL_LOAD_AND_CDC}\n{PARALLEL}\nprocesses = {processes}",
        extra_target=f"{FAST}\nmax_buffered_records = 500",
    )
    return stream, daemon


def _mid_worker_load(pg_db: PgDb, moto_url: str, tmp_path: Path, table: str, processes: int) -> tuple[str, Daemon]:
    """A 20,000-row table being loaded through ``processes`` mapping workers, with some progress checkpointed."""
    stream, daemon = _start_load(Postgres(pg_db), moto_url, tmp_path, {table: 20000}, processes)
    if not wait_load_progress(daemon):
        daemon.kill()
        raise AssertionError("the load finished before its first checkpoint")
    return stream, daemon


@pytest.mark.parametrize("processes", [0, 2], ids=["in-process", "mapping-workers"])
def test_sigkill_during_parallel_load_resumes_without_loss(
    engine: Engine, moto_url: str, tmp_path: Path, processes: int
) -> None:
    """SIGKILL at random moments of a multi-table parallel load: after the restarts nothing is missing, and the
    duplicates stay within what was in flight at each kill (finished segments are not copied again). With mapping
    worker processes, none outlives the daemon that was killed."""
    tables = {"k1": 12000, "k2": 9000, "k3": 6000, "k4": 3000}
    stream, daemon = _start_load(engine, moto_url, tmp_path, tables, processes)
    kills = 4
    already = threading.Event()
    already.set()
    try:
        # One kill surely lands mid-load (the random ones may all land before or after it on a fast run).
        assert kill_mid_load(daemon), "the load finished before its first checkpoint"
        kill_at_random_moments(daemon, already, kills - 1, seed=7)
        wait_load_complete(daemon)
        engine.execute("UPDATE k4 SET s = 'after' WHERE id = 1")
        wait_for(moto_url, stream, lambda recs: any(r["data"].get("data", {}).get("s") == "after" for r in recs))
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    records = read_stream(moto_url, stream)
    log = daemon.log_path.read_text()
    assert log.count("full load resuming from the checkpoint") >= 1, "no kill landed during the load"
    workers = worker_pids(log)
    assert bool(workers) == bool(processes), log
    alive = wait_exited(workers)
    assert not alive, f"mapping worker processes outlived their daemon: {alive}"
    for name, n in tables.items():
        assert replay(records, name, ("id",)) == engine.source_rows(name, ("id",))
        loads = loads_of(records, name)
        assert {r["data"]["id"] for r in loads} == set(range(1, n + 1))
    total = sum(len(loads_of(records, name)) for name in tables)
    # Per kill at most what was buffered for Kinesis (500), queued in the load (2 x 3 sessions x 50) and not yet
    # checkpointed is copied again; re-copying finished tables would add thousands.
    assert total - sum(tables.values()) <= kills * 2500, total


def test_large_table(engine: Engine, tmp_path: Path) -> None:
    """A large table in parallel segments into the fast fake endpoint (bench/fake_kinesis.py, which counts
    entries): every row is sent, the process exits 0, and its peak RSS stays bounded by the queues, not the table.
    PostgreSQL loads 1M rows; MariaDB 300,000 (its 1M-row run is bench/fullload_bench.py)."""
    rows = engine.pick(postgres=1_000_000, mariadb=300_000)
    engine.run(
        *engine.pick(
            postgres=[
                "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, s text NOT NULL)",
                f"INSERT INTO big SELECT g, g % 1000, md5(g::text) FROM generate_series(1, {rows}) g",
            ],
            mariadb=[
                "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, s varchar(32) NOT NULL)",
                f"INSERT INTO big SELECT seq, seq % 1000, md5(seq) FROM seq_1_to_{rows}",
            ],
        )
    )
    engine.analyze("big")
    settings = "[full_load]\nparallel_load_threads = 4\nchunk_rows = 50000"
    if engine.name == "postgres":
        # One partition key for the whole table: the sink's per-key bookkeeping for a million distinct primary
        # keys would double this test's run time; primary-key load keys are tested above.
        mapping = schema_table_key_mapping(tmp_path / "mapping.json", engine.schema, "big")
        settings = f'table_mappings = "{mapping}"\n{settings}\nparallel_load_buffer_size = 1000'
    with fake_kinesis() as url:
        daemon = engine.start_daemon(
            url, "big", tmp_path, extra=f"{FULL_LOAD}\n{settings}", extra_target=f"{FAST}\nmax_in_flight_requests = 8"
        )
        try:
            peak_kib = run_to_exit(daemon)
        finally:
            daemon.kill()
        stats = endpoint_stats(url)
    assert stats["entries"] == rows + 1  # every row, and the RestartTask record
    assert peak_kib < 400 * 1024, f"peak RSS {peak_kib} KiB"
    assert completed_rows(daemon) == rows


def _resume_to_the_end(daemon: Daemon) -> None:
    """Start the stopped daemon again: it resumes the load from the checkpoint, finishes it and stops cleanly."""
    daemon.start()
    wait_load_complete(daemon)
    assert daemon.stop() == 0, daemon.log_tail()
    assert "full load resuming from the checkpoint" in daemon.log_path.read_text()


def test_a_killed_mapping_worker_stops_the_daemon_and_the_restart_loses_nothing(
    pg_db: PgDb, moto_url: str, tmp_path: Path
) -> None:
    """SIGKILL of a mapping worker process mid-load: the daemon exits with an error naming it (it cannot know
    what the worker had not answered yet), and the next start resumes the load with every row."""
    stream, daemon = _mid_worker_load(pg_db, moto_url, tmp_path, "w", processes=1)
    try:
        (pid,) = worker_pids(daemon.log_path.read_text())
        os.kill(pid, signal.SIGKILL)
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=60) == 4, daemon.log_tail()
        assert re.search(r"mapping worker process \S+ died", daemon.log_path.read_text()), daemon.log_tail()
        _resume_to_the_end(daemon)
    finally:
        daemon.kill()
    records = read_stream(moto_url, stream)
    assert {r["data"]["id"] for r in loads_of(records, "w")} == set(range(1, 20001))
    assert replay(records, "w", ("id",)) == Postgres(pg_db).source_rows("w", ("id",))


def test_stop_signal_to_daemon_and_workers_mid_load_is_a_clean_stop(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    """systemd's stop signals every process of the unit: the workers ignore it and the daemon drains and exits 0
    (a worker dying first would fail the drain); the next start resumes the load with every row."""
    stream, daemon = _mid_worker_load(pg_db, moto_url, tmp_path, "st", processes=2)
    try:
        assert daemon.proc is not None
        workers = worker_pids(daemon.log_path.read_text())
        # The order systemd's signals arrive in is not defined: the workers' first is the one that can go wrong.
        for pid in workers:
            os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        os.kill(daemon.proc.pid, signal.SIGTERM)
        assert daemon.proc.wait(timeout=60) == 0, daemon.log_tail()
        assert not wait_exited(workers)
        _resume_to_the_end(daemon)
    finally:
        daemon.kill()
    records = read_stream(moto_url, stream)
    assert {r["data"]["id"] for r in loads_of(records, "st")} == set(range(1, 20001))


@pytest.mark.parametrize("processes", [0, 1], ids=["in-process", "mapping-workers"])
@pytest.mark.pg_core
def test_load_rows_render_like_inserted_rows(pg_db: PgDb, moto_url: str, tmp_path: Path, processes: int) -> None:
    """The same values arriving as a load row and as a CDC insert have identical ``data`` (type matrix), also
    when a mapping worker process renders the load rows."""
    m.prepare(pg_db)
    for row in range(m.ROWS):
        pg_db.execute(m.insert_sql(row))
    pg_db.execute("INSERT INTO types (id) VALUES (5)")
    stream = create_stream(moto_url, f"flr-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(
        pg_db,
        moto_url,
        stream,
        tmp_path,
        extra=f"{FULL_LOAD_AND_CDC}\n[full_load]\nprocesses = {processes}",
        extra_source='json_as = "object"\nhstore_as = "object"',
        extra_target="include_null_and_empty = true",
    )
    try:
        daemon.wait_ready()
        cols = ", ".join(m.COLUMNS)
        pg_db.execute(f"INSERT INTO types (id, {cols}) SELECT id + 100, {cols} FROM types WHERE id < 100")
        records = wait_for(
            moto_url,
            stream,
            lambda recs: len([r for r in recs if r["data"]["metadata"].get("table-name") == "types"]) >= 10,
        )
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    by_op: dict[str, dict[int, dict[str, Any]]] = {"load": {}, "insert": {}}
    for r in records:
        meta = r["data"]["metadata"]
        if meta.get("table-name") == "types" and meta["operation"] in by_op:
            data = dict(r["data"]["data"])
            by_op[meta["operation"]][data.pop("id") % 100] = data
    assert bool(worker_pids(daemon.log_path.read_text())) == bool(processes)
    assert set(by_op["load"]) == set(by_op["insert"]) == {1, 2, 3, 4, 5}
    for i in range(1, 6):
        assert by_op["load"][i] == by_op["insert"][i], i


@pytest.mark.parametrize("processes", [0, 1], ids=["in-process", "mapping-workers"])
def test_reload_table_while_cdc_runs(pg_db: PgDb, moto_url: str, tmp_path: Path, processes: int) -> None:
    """``cdcstream reload --table`` re-copies one table consistently while a writer keeps changing it: rows that
    existed before the daemon started arrive only through the reload, yet the replayed stream equals the table."""
    pg_db.execute("CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL)")
    pg_db.execute("INSERT INTO r SELECT g, 0 FROM generate_series(1, 3000) g")
    stream = create_stream(moto_url, f"flt-{uuid.uuid4().hex[:8]}")
    daemon = start_daemon(
        pg_db, moto_url, stream, tmp_path, extra=f"[full_load]\nprocesses = {processes}", extra_target=FAST
    )
    stop, done = threading.Event(), threading.Event()

    def writer() -> None:
        n = 0
        try:
            with psycopg.connect(pg_db.dsn, autocommit=True) as conn:
                while not stop.is_set():
                    n += 1
                    conn.execute("UPDATE r SET v = v + 1 WHERE id = %s", (n * 13 % 3000 + 1,))
                    conn.execute("INSERT INTO r VALUES (%s, -1)", (10_000 + n,))
                    conn.execute("DELETE FROM r WHERE id = %s", (n * 7 % 3000 + 1,))
                    time.sleep(0.003)
        finally:
            done.set()

    thread = threading.Thread(target=writer, daemon=True)
    try:
        daemon.wait_ready()
        thread.start()
        time.sleep(1)
        bad = reload_cli(daemon, "public.nope")
        assert bad.returncode == 1 and "does not exist" in bad.stderr, bad
        ok = reload_cli(daemon, "public.r")
        assert ok.returncode == 0 and "queued" in ok.stdout, ok
        wait_logged(daemon, '"reload done"', timeout=60)
        time.sleep(1)
        stop.set()
        thread.join()
        expected = Postgres(pg_db).source_rows("r", ("id",))
        wait_for(moto_url, stream, lambda recs: replay(recs, "r", ("id",)) == expected, timeout=120)
        status = json.loads(urllib.request.urlopen(daemon.http + "/status", timeout=5).read())
        assert status["source"]["reload"]["pending"] == []
        assert len(status["full_load"]["mapping_workers"]["pids"]) == processes
        assert daemon.stop() == 0, daemon.log_tail()
        assert bool(worker_pids(daemon.log_path.read_text())) == bool(processes)
    finally:
        stop.set()
        daemon.kill()
    # The checkpoint of this cdc task records no full load: switching it to full-load-and-cdc is refused.
    text = daemon.config.read_text()
    daemon.config.write_text(text.replace('task_id = "task1"', 'task_id = "task1"\n' + FULL_LOAD_AND_CDC))
    daemon.start()
    assert daemon.proc is not None
    assert daemon.proc.wait(timeout=60) == 3  # SourceError
    assert "no full load is recorded" in daemon.log_tail()
    records = read_stream(moto_url, stream)
    [(first, last)] = load_runs(records, "r")  # one contiguous copy, changes around it
    assert first > 0 and last < len(table_records(records, "r")) - 1
