"""The command line against real servers, as an operator meets it: `check` says what `run` will do, the same
hints (and fix commands) come from `run`, `check` and `tail`, and a selection rule that matches no table is
named by `check` and at start rather than capturing nothing in silence."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import boto3

from cdcstream.checkpoints.store import FileCheckpointStore
from tests.support import free_port
from tests.support.daemon import AWS_ENV, CDCSTREAM, Daemon, create_stream, mysql_source, run_cli, write_config
from tests.support.mysql import MyDb
from tests.support.postgres import PgDb


def test_a_missing_stream_gets_the_same_create_stream_command_from_run_check_and_tail(
    moto_server: str, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "c.toml", pg_port=free_port(), database="app", endpoint_url=moto_server, stream="nope"
    )
    command = (
        f"aws kinesis create-stream --stream-name nope --shard-count 1 --region us-east-1 --endpoint-url {moto_server}"
    )
    run = run_cli("run", "--config", str(config))
    assert run.returncode == 5, run.stderr
    assert f"Kinesis stream nope does not exist in us-east-1 at {moto_server}" in run.stderr
    assert command in run.stderr and "fix target.stream_name" in run.stderr
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 1, check.stdout + check.stderr
    (line,) = [x for x in check.stdout.splitlines() if x.startswith("FAIL kinesis stream")]
    assert "does not exist" in line and command in check.stdout, check.stdout
    tail = run_cli("tail", "--stream", "nope", "--endpoint-url", moto_server, "--no-follow")
    assert tail.returncode == 5 and command in tail.stderr and "fix --stream" in tail.stderr, tail.stderr
    for res in (run, check, tail):
        assert "Traceback" not in res.stdout + res.stderr


def test_check_and_run_agree_on_a_checkpoint_whose_slot_is_gone(pg_db: PgDb, moto_server: str, tmp_path: Path) -> None:
    """`check` said "will be created" where `run` refuses (a fresh slot would silently skip the changes
    after the checkpoint): both now say the same, from one function."""
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_server, f"agree-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "c.toml", pg_port=pg_db.server.port, database=pg_db.name, endpoint_url=moto_server, stream=stream
    )
    store = FileCheckpointStore(tmp_path / "state", "task1")
    store.save({"lsn": "0/1000000"})
    refusal = "replication slot 'cdcstream' does not exist, but a checkpoint at LSN 0/1000000 does"
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 1, check.stdout
    (line,) = [x for x in check.stdout.splitlines() if x[5:].startswith("slot ")]
    assert line.startswith("FAIL slot") and refusal in line, check.stdout
    assert "slot cdcstream does not exist; it will be created" not in check.stdout
    run = run_cli("run", "--config", str(config))
    assert run.returncode == 3 and refusal in run.stderr, run.stderr
    # Without the checkpoint both say the slot will be made.
    store.path.unlink()
    check = run_cli("check", "--config", str(config))
    assert "OK   slot" in check.stdout and "it will be created at start" in check.stdout, check.stdout


def _mapping(path: Path, schema: str) -> Path:
    """Rule 1 selects the table; rule 2 has a typo in its name, so it selects nothing."""
    path.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "rule-type": "selection",
                        "rule-id": str(i),
                        "rule-action": "include",
                        "object-locator": {"schema-name": schema, "table-name": name},
                    }
                    for i, name in ((1, "orders"), (2, "ordres"))
                ]
            }
        )
    )
    return path


def _warned_in_check_and_at_start(config: Path, tmp_path: Path, schema: str) -> None:
    warning = f"rule-id 2 ($.rules[1]): selection rule (include {schema}.ordres) matches no table"
    check = run_cli("check", "--config", str(config))
    (line,) = [x for x in check.stdout.splitlines() if "unused rule" in x]
    assert line.startswith("WARN") and warning in line, check.stdout
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        daemon.wait_ready()
        deadline = time.monotonic() + 10
        while warning not in daemon.log_tail(400):
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.2)
        (line,) = [x for x in daemon.log_tail(400).splitlines() if warning in x]
        record = json.loads(line)
        assert record["level"] == "warning" and record["event"] == "mapping rule matches nothing", record
        assert "table names" in record["fix"]
        assert daemon.stop() == 0, daemon.log_tail()
    finally:
        daemon.kill()


def test_a_selection_rule_matching_no_table_is_warned_postgres(pg_db: PgDb, moto_server: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE orders (id int PRIMARY KEY)")
    stream = create_stream(moto_server, f"typo-{uuid.uuid4().hex[:8]}")
    _mapping(tmp_path / "m.json", "public")
    config = write_config(
        tmp_path / "c.toml",
        pg_port=pg_db.server.port,
        database=pg_db.name,
        endpoint_url=moto_server,
        stream=stream,
        extra='table_mappings = "m.json"',
    )
    _warned_in_check_and_at_start(config, tmp_path, "public")


def test_a_selection_rule_matching_no_table_is_warned_mysql(my_db: MyDb, moto_server: str, tmp_path: Path) -> None:
    my_db.server.execute("CREATE TABLE orders (id int PRIMARY KEY)", my_db.name)
    stream = create_stream(moto_server, f"mytypo-{uuid.uuid4().hex[:8]}")
    _mapping(tmp_path / "m.json", my_db.name)
    config = write_config(
        tmp_path / "c.toml",
        endpoint_url=moto_server,
        stream=stream,
        source=mysql_source(my_db.server.port, my_db.name),
        extra='table_mappings = "m.json"',
    )
    _warned_in_check_and_at_start(config, tmp_path, my_db.name)


def test_tail_into_a_pipe_that_closes_ends_quietly(moto_server: str) -> None:
    """`cdcstream tail | head -1`: the reader goes away while tail writes; that ends tail, without a traceback."""
    stream = create_stream(moto_server, f"pipe-{uuid.uuid4().hex[:8]}")
    client = boto3.client(
        "kinesis", endpoint_url=moto_server, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    for _ in range(2):  # ~1 MB of output: far more than a pipe buffers
        client.put_records(StreamName=stream, Records=[{"Data": b"x" * 1000, "PartitionKey": "k"}] * 500)
    proc = subprocess.Popen(
        [*CDCSTREAM, "tail", "--stream", stream, "--endpoint-url", moto_server, "--no-follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **AWS_ENV},
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert b'"partition_key":"k"' in proc.stdout.readline()
    proc.stdout.close()
    assert proc.wait(timeout=60) == 0
    err = proc.stderr.read().decode()
    assert "Traceback" not in err and "BrokenPipe" not in err, err
