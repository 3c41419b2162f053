"""MySQL/MariaDB full load end to end (real ``cdcstream`` process, private MariaDB, a Kinesis server): the
PostgreSQL tests of ``test_full_load.py`` over the binlog source, with the helpers they share
(``tests/support/fullload.py``). The daemon connects as the fixture's least-privileged ``cdc`` user (with RELOAD:
the FLUSH TABLES WITH READ LOCK path; the fallback without it is in tests/integration/test_mysql_full_load.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors

from tests.integration.test_mysql_reload import reload_writer
from tests.support.daemon import (
    create_stream,
    kill_at_random_moments,
    read_stream,
    start_mysql_daemon,
    table_records,
    wait_for,
)
from tests.support.fullload import (
    FAST,
    FULL_LOAD,
    FULL_LOAD_AND_CDC,
    PARALLEL,
    boto3_stats,
    completed_rows,
    fake_kinesis,
    keyed,
    load_runs,
    loads_of,
    ranges_mapping,
    reload_cli,
    replay,
    run_to_exit,
    wait_load_complete,
    wait_logged,
    worker_pids,
)
from tests.support.mysql import MyDb


def source_rows(my_db: MyDb, table: str, key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    conn = my_db.connect()
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute(f"SELECT * FROM `{table}`")
            return keyed(list(cur.fetchall()), key)
    finally:
        conn.close()


def _writer(my_db: MyDb, stop: threading.Event, done: threading.Event) -> None:
    """Inserts, updates and deletes in several tables until told to stop."""
    n = 0
    conn = my_db.connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            while not stop.is_set():
                n += 1
                cur.execute("UPDATE a SET v = v + 1 WHERE id = %s", (n * 7 % 5000 + 1,))
                cur.execute("INSERT IGNORE INTO a (id, v) VALUES (%s, 0)", (100_000 + n,))
                cur.execute("DELETE FROM b WHERE x = %s AND y = %s", (n % 40, n % 3))
                cur.execute(
                    "INSERT INTO b (x, y, s) VALUES (%s, %s, 'w') ON DUPLICATE KEY UPDATE s = 'u'", (n % 50 + 40, n % 3)
                )
                conn.commit()
                time.sleep(0.002)
    finally:
        conn.close()
        done.set()


def _tables(my_db: MyDb) -> None:
    my_db.execute("CREATE TABLE a (id int PRIMARY KEY, v int NOT NULL)")
    my_db.execute("INSERT INTO a SELECT seq, seq FROM seq_1_to_5000")
    my_db.execute("CREATE TABLE b (x int, y int, s varchar(20) NOT NULL, PRIMARY KEY (x, y))")
    my_db.execute("INSERT INTO b SELECT seq % 40, seq DIV 40, CONCAT('s', seq) FROM seq_0_to_119")
    my_db.execute("CREATE TABLE c (id bigint PRIMARY KEY, t varchar(40) NOT NULL)")
    my_db.execute("INSERT INTO c SELECT seq, md5(seq) FROM seq_1_to_8000")
    my_db.execute("ANALYZE TABLE a, b, c")


def test_mysql_full_load_and_cdc_with_writer_converges(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    _tables(my_db)
    stream = create_stream(moto_url, f"mflc-{uuid.uuid4().hex[:8]}")
    stop, done = threading.Event(), threading.Event()
    writer = threading.Thread(target=_writer, args=(my_db, stop, done), daemon=True)
    writer.start()
    time.sleep(0.3)
    daemon = start_mysql_daemon(
        my_db,
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
            expected = source_rows(my_db, table, key)
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
    assert meta["partition-key-value"] == f"{my_db.name}.a.{a_loads[0]['data']['id']}"
    assert "transaction-id" not in meta and "stream-position" not in meta
    b_load = next(r for r in records if r["data"]["metadata"].get("table-name") == "b")
    assert b_load["partition_key"] == f"{my_db.name}.b." + "{x}.{y}".format(**b_load["data"]["data"])
    # Every load row precedes every CDC row (CDC starts at the snapshot's binlog position).
    ops = [r["data"]["metadata"]["operation"] for r in records if r["data"]["metadata"]["record-type"] == "data"]
    first_cdc = next(i for i, op in enumerate(ops) if op != "load")
    assert "load" not in ops[first_cdc:]
    log = daemon.log_path.read_text()
    assert "FLUSH TABLES WITH READ LOCK" in log and "lock_seconds" in log
    # The checkpoint says the load is done: a restart streams on without loading again.
    daemon.start()
    daemon.wait_ready()
    my_db.execute("INSERT INTO c VALUES (999999, 'after restart')")
    wait_for(moto_url, stream, lambda recs: any(r["data"].get("data", {}).get("id") == 999999 for r in recs))
    assert daemon.stop() == 0
    assert len(loads_of(read_stream(moto_url, stream), "a")) == len(a_loads)


def test_mysql_full_load_only_exits_and_covers_special_tables(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    my_db.execute("CREATE TABLE comp (a int, b varchar(20), n int NOT NULL, PRIMARY KEY (a, b))")
    my_db.execute("INSERT INTO comp SELECT seq % 7, CONCAT('k', seq), seq FROM seq_1_to_3000")
    my_db.execute("CREATE TABLE nopk (n int NOT NULL, s varchar(20) NOT NULL)")
    my_db.execute("INSERT INTO nopk SELECT seq, CONCAT('r', seq) FROM seq_1_to_2500")
    my_db.execute("INSERT INTO nopk VALUES (1, 'r1')")  # an exact duplicate row: both must arrive
    my_db.execute("CREATE TABLE empty (id int PRIMARY KEY)")
    my_db.execute("CREATE TABLE ranged (id int PRIMARY KEY, grp int, s varchar(20) NOT NULL)")
    my_db.execute(
        "INSERT INTO ranged SELECT seq, CASE WHEN seq % 10 = 0 THEN NULL ELSE seq % 100 END, CONCAT('x', seq) "
        "FROM seq_1_to_5000"
    )
    mapping = ranges_mapping(
        tmp_path / "mapping.json", my_db.name, "ranged", ["grp", "id"], [["20", "1000"], ["50", "50"], ["80", "4000"]]
    )
    stream = create_stream(moto_url, f"mfl-{uuid.uuid4().hex[:8]}")
    daemon = start_mysql_daemon(
        my_db,
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
    assert replay(records, "comp", ("a", "b")) == source_rows(my_db, "comp", ("a", "b"))
    assert replay(records, "ranged", ("id",)) == source_rows(my_db, "ranged", ("id",))
    assert len(loads_of(records, "ranged")) == 5000  # no segment overlap, NULL range values included
    nopk = sorted((r["data"]["n"], r["data"]["s"]) for r in loads_of(records, "nopk"))
    assert nopk == sorted(my_db.execute("SELECT n, s FROM nopk"))
    assert loads_of(records, "nopk")[0]["metadata"]["partition-key-type"] == "schema-table"
    assert loads_of(records, "empty") == []
    # A second run finds the completed load in the checkpoint and exits at once without loading again.
    daemon.start()
    assert daemon.proc.wait(timeout=60) == 0, daemon.log_tail()
    assert "full load already completed" in daemon.log_path.read_text()
    assert len(read_stream(moto_url, stream)) == len(records)


def test_mysql_sigkill_during_parallel_load_resumes_without_loss(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    """SIGKILL at random moments of a multi-table parallel load: after the restarts nothing is missing, and the
    duplicates stay within what was in flight at each kill (finished segments are not copied again)."""
    tables = {"k1": 12000, "k2": 9000, "k3": 6000, "k4": 3000}
    for name, n in tables.items():
        my_db.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, s varchar(80) NOT NULL)")
        my_db.execute(f"INSERT INTO {name} SELECT seq, CONCAT(REPEAT('x', 50), seq) FROM seq_1_to_{n}")
    my_db.execute("ANALYZE TABLE k1, k2, k3, k4")
    stream = create_stream(moto_url, f"mflk-{uuid.uuid4().hex[:8]}")
    daemon = start_mysql_daemon(
        my_db,
        moto_url,
        stream,
        tmp_path,
        extra=f"{FULL_LOAD_AND_CDC}\n{PARALLEL}",
        extra_target=f"{FAST}\nmax_buffered_records = 500",
    )
    kills = 4
    already = threading.Event()
    already.set()
    try:
        kill_at_random_moments(daemon, already, kills, seed=7)
        wait_load_complete(daemon)
        my_db.execute("UPDATE k4 SET s = 'after' WHERE id = 1")
        wait_for(moto_url, stream, lambda recs: any(r["data"].get("data", {}).get("s") == "after" for r in recs))
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    records = read_stream(moto_url, stream)
    log = daemon.log_path.read_text()
    assert log.count("full load resuming from the checkpoint") >= 1, "no kill landed during the load"
    for name, n in tables.items():
        assert replay(records, name, ("id",)) == source_rows(my_db, name, ("id",))
        loads = loads_of(records, name)
        assert {r["data"]["id"] for r in loads} == set(range(1, n + 1))
    total = sum(len(loads_of(records, name)) for name in tables)
    # Per kill at most what was buffered for Kinesis (500), queued in the load (2 x 3 sessions x 50) and not yet
    # checkpointed is copied again; re-copying finished tables would add thousands.
    assert total - sum(tables.values()) <= kills * 2500, total


def test_mysql_large_table(my_db: MyDb, tmp_path: Path) -> None:
    """A large table in parallel segments into the fast fake endpoint: every row is sent, the process exits 0,
    and its peak RSS stays bounded by the queues, not the table (the 1M-row run is bench/fullload_bench.py)."""
    rows = 300_000
    my_db.execute("CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, s varchar(32) NOT NULL)")
    my_db.execute(f"INSERT INTO big SELECT seq, seq % 1000, md5(seq) FROM seq_1_to_{rows}")
    my_db.execute("ANALYZE TABLE big")
    with fake_kinesis() as url:
        daemon = start_mysql_daemon(
            my_db,
            url,
            "big",
            tmp_path,
            extra=f"{FULL_LOAD}\n[full_load]\nparallel_load_threads = 4\nchunk_rows = 50000",
            extra_target=f"{FAST}\nmax_in_flight_requests = 8",
        )
        try:
            peak_kib = run_to_exit(daemon)
        finally:
            daemon.kill()
        stats = boto3_stats(url)
    assert stats["entries"] == rows + 1  # every row, and the RestartTask record
    assert peak_kib < 400 * 1024, f"peak RSS {peak_kib} KiB"
    assert completed_rows(daemon) == rows


def _reload_tables(my_db: MyDb, rows: int) -> None:
    my_db.execute("CREATE TABLE r (id int PRIMARY KEY, v int NOT NULL)")
    my_db.execute(f"INSERT INTO r SELECT seq, 0 FROM seq_1_to_{rows}")
    my_db.execute("CREATE TABLE o (id int PRIMARY KEY)")
    my_db.execute("ANALYZE TABLE r")


def _stop_and_converge(
    my_db: MyDb, moto_url: str, stream: str, stop: threading.Event, writer: threading.Thread
) -> None:
    """Let the writer run a moment longer (changes after the reload), stop it, and wait until the replayed
    stream equals both tables."""
    time.sleep(1)
    stop.set()
    writer.join()
    for table in ("r", "o"):
        expected = source_rows(my_db, table, ("id",))
        wait_for(moto_url, stream, lambda recs, t=table, e=expected: replay(recs, t, ("id",)) == e, timeout=120)


def _checkpoint(tmp_path: Path) -> dict[str, Any]:
    """The position the daemon last checkpointed."""
    doc = json.loads(next((tmp_path / "state").glob("*.checkpoint.json")).read_text())
    return dict(doc["body"]["checkpoint"])


def test_mysql_reload_table_while_cdc_runs(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    """``cdcstream reload --table`` on MariaDB while a writer keeps changing the table: rows that existed before
    the daemon started arrive only through the reload, yet the replayed stream equals the table; the other
    table keeps streaming; wrong names are refused."""
    _reload_tables(my_db, 3000)
    stream = create_stream(moto_url, f"mflt-{uuid.uuid4().hex[:8]}")
    daemon = start_mysql_daemon(my_db, moto_url, stream, tmp_path, extra=PARALLEL, extra_target=FAST)
    stop = threading.Event()
    writer = threading.Thread(target=reload_writer, args=(my_db, stop, 0.003), daemon=True)
    try:
        daemon.wait_ready()
        writer.start()
        time.sleep(1)
        bad = reload_cli(daemon, f"{my_db.name}.nope")
        assert bad.returncode == 1 and "does not exist" in bad.stderr, bad
        unselected = reload_cli(daemon, "mysql.user")
        assert unselected.returncode == 1 and "not selected by the table mapping" in unselected.stderr, unselected
        ok = reload_cli(daemon, f"{my_db.name}.r")
        assert ok.returncode == 0 and "queued" in ok.stdout, ok
        wait_logged(daemon, '"reload done"', timeout=60)
        _stop_and_converge(my_db, moto_url, stream, stop, writer)
        status = json.loads(urllib.request.urlopen(daemon.http + "/status", timeout=5).read())
        assert status["source"]["reload"]["pending"] == []
        assert status["source"]["reload"]["last"]["path"] == "lock"
        assert status["source"]["reload"]["last"]["sessions"] == 2
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        stop.set()
        daemon.kill()
    records = read_stream(moto_url, stream)
    [(first, last)] = load_runs(records, "r")  # one contiguous copy, changes around it
    assert first > 0 and last < len(table_records(records, "r")) - 1
    loaded = [r["data"]["id"] for r in loads_of(records, "r")]
    assert len(loaded) == len(set(loaded)) > 2000  # each row once (the writer deleted some before the snapshot)


def test_mysql_sigkill_during_reload_redoes_it(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    """SIGKILL after the reload was requested and before its rows are all out: the checkpoint still names it,
    the restarted daemon copies the table again, and the replayed stream still equals the table."""
    _reload_tables(my_db, 20_000)
    stream = create_stream(moto_url, f"mflk-{uuid.uuid4().hex[:8]}")
    daemon = start_mysql_daemon(
        my_db, moto_url, stream, tmp_path, extra=PARALLEL, extra_target=f"{FAST}\nmax_buffered_records = 500"
    )
    stop = threading.Event()
    writer = threading.Thread(target=reload_writer, args=(my_db, stop, 0.003), daemon=True)
    table = f"{my_db.name}.r"
    try:
        daemon.wait_ready()
        writer.start()
        ok = reload_cli(daemon, table)
        assert ok.returncode == 0 and "queued" in ok.stdout, ok
        wait_logged(daemon, "reload: snapshot taken", timeout=60)
        time.sleep(1)  # part of the rows are out (a copy of this size takes several seconds)
        daemon.kill()
        assert '"reload done"' not in daemon.log_path.read_text(), "the kill came after the reload"
        checkpoint = _checkpoint(tmp_path)
        assert checkpoint["reload"] == [table]
        daemon.start()
        wait_logged(daemon, "reload pending from the last run: redoing it")
        wait_logged(daemon, '"reload done"', timeout=120)
        _stop_and_converge(my_db, moto_url, stream, stop, writer)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        stop.set()
        daemon.kill()
    checkpoint = _checkpoint(tmp_path)
    assert "reload" not in checkpoint
    records = read_stream(moto_url, stream)
    runs = load_runs(records, "r")
    assert len(runs) >= 1
    first, last = runs[-1]  # the redone copy: every row the table had at its snapshot
    assert last - first + 1 >= 20_000 - 3000


def test_mysql_reload_request_is_durable_before_the_answer(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    """Killed right after answering "queued", on a quiet server: the checkpoint already names the reload (the
    source stamps only the markers after the request, and none may be checkpointed before the kill), and the
    restarted daemon does it."""
    _reload_tables(my_db, 100)
    stream = create_stream(moto_url, f"mflk-{uuid.uuid4().hex[:8]}")
    daemon = start_mysql_daemon(my_db, moto_url, stream, tmp_path, extra=PARALLEL, extra_target=FAST)
    table = f"{my_db.name}.r"
    try:
        daemon.wait_ready()
        my_db.execute("INSERT INTO o VALUES (1)")
        wait_for(moto_url, stream, lambda rs: len(table_records(rs, "o")) == 1)
        deadline = time.monotonic() + 30
        while "file" not in _checkpoint_or_empty(tmp_path):
            assert time.monotonic() < deadline, "no checkpoint written"
            time.sleep(0.1)
        ok = reload_cli(daemon, table)
        daemon.kill()
        assert ok.returncode == 0 and "queued" in ok.stdout, ok
        assert _checkpoint(tmp_path)["reload"] == [table]
        daemon.start()
        wait_logged(daemon, '"reload done"', timeout=120)
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()
    assert "reload" not in _checkpoint(tmp_path)
    assert len(loads_of(read_stream(moto_url, stream), "r")) >= 100


def _checkpoint_or_empty(tmp_path: Path) -> dict[str, Any]:
    try:
        return _checkpoint(tmp_path)
    except (StopIteration, OSError, ValueError, KeyError):
        return {}


def test_mysql_full_load_in_a_mapping_process_finds_every_row(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    """``[full_load] processes = 1``: the reader threads hand raw row packets to a worker process, which decodes
    and maps them; every row arrives, rendered as the source has it."""
    my_db.execute(
        "CREATE TABLE p (id int PRIMARY KEY, s varchar(40) CHARACTER SET utf8mb4, b varbinary(8), d decimal(9,2),"
        " t datetime(3), z date)"
    )
    my_db.execute(
        "INSERT INTO p SELECT seq, IF(seq % 9 = 0, NULL, CONCAT('é😀', seq)), UNHEX(HEX(seq)), seq / 4,"
        " '2026-11-27 10:00:00.125' + INTERVAL seq SECOND, NULL FROM seq_1_to_3000"
    )
    my_db.execute("CREATE TABLE q (x int, y varchar(10), n int NOT NULL, PRIMARY KEY (x, y))")
    my_db.execute("INSERT INTO q SELECT seq % 7, CONCAT('k', seq), seq FROM seq_1_to_1000")
    stream = create_stream(moto_url, f"mflp-{uuid.uuid4().hex[:8]}")
    daemon = start_mysql_daemon(
        my_db,
        moto_url,
        stream,
        tmp_path,
        extra=f"{FULL_LOAD}\n[full_load]\nprocesses = 1\nchunk_rows = 700\nparallel_load_buffer_size = 100",
        extra_target=FAST,
    )
    try:
        run_to_exit(daemon, timeout=120)
    finally:
        daemon.kill()
    records = read_stream(moto_url, stream)
    assert len(loads_of(records, "p")) == 3000 and len(loads_of(records, "q")) == 1000
    assert replay(records, "q", ("x", "y")) == source_rows(my_db, "q", ("x", "y"))
    p = {r["data"]["id"]: r["data"] for r in loads_of(records, "p")}
    assert set(p) == set(range(1, 3001))
    # NULL columns are left out of the record (the default target settings)
    assert p[10] == {"id": 10, "s": "é😀10", "b": "0x0a", "d": "2.50", "t": "2026-11-27T10:00:10.125"}
    assert p[9] == {"id": 9, "b": "0x09", "d": "2.25", "t": "2026-11-27T10:00:09.125"}
    log = daemon.log_path.read_text()
    assert len(worker_pids(log)) == 1 and "died" not in log
