"""MySQL/MariaDB full load end to end (real ``cdcstream`` process, private MariaDB, a Kinesis server): what
only the binlog source has (reload through the read lock, a reload redone after a crash, load rows decoded in a
mapping process). The full-load tests that check the same over PostgreSQL and MariaDB are in
``test_full_load.py`` (the ``engine`` fixture), with the helpers both files share (``tests/support/fullload.py``).
The daemon connects as the fixture's least-privileged ``cdc`` user (with RELOAD: the FLUSH TABLES WITH READ LOCK
path; the fallback without it is in tests/integration/test_mysql_full_load.py).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from tests.integration.test_mysql_reload import reload_writer
from tests.support.daemon import (
    create_stream,
    read_stream,
    start_daemon,
    table_records,
    wait_for,
)
from tests.support.engines import MariaDb
from tests.support.fullload import (
    FAST,
    FULL_LOAD,
    PARALLEL,
    load_runs,
    loads_of,
    reload_cli,
    replay,
    run_to_exit,
    wait_logged,
    worker_pids,
)
from tests.support.mysql import MyDb


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
        expected = MariaDb(my_db).source_rows(table, ("id",))
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
    daemon = start_daemon(my_db, moto_url, stream, tmp_path, extra=PARALLEL, extra_target=FAST)
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
    daemon = start_daemon(
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
    daemon = start_daemon(my_db, moto_url, stream, tmp_path, extra=PARALLEL, extra_target=FAST)
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
    daemon = start_daemon(
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
    assert replay(records, "q", ("x", "y")) == MariaDb(my_db).source_rows("q", ("x", "y"))
    p = {r["data"]["id"]: r["data"] for r in loads_of(records, "p")}
    assert set(p) == set(range(1, 3001))
    # NULL columns are left out of the record (the default target settings)
    assert p[10] == {"id": 10, "s": "é😀10", "b": "0x0a", "d": "2.50", "t": "2026-11-27T10:00:10.125"}
    assert p[9] == {"id": 9, "b": "0x09", "d": "2.25", "t": "2026-11-27T10:00:09.125"}
    log = daemon.log_path.read_text()
    assert len(worker_pids(log)) == 1 and "died" not in log
