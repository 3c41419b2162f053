"""Mapping files through the real daemon: private PostgreSQL -> cdcstream -> Kinesis server, records compared.

The seed's three examples use the golden files of tests/unit/golden (the same expected data and partition keys
as the unit tests); a richer mapping exercises filters, transformations, the before image and the endpoint
settings on real pgoutput changes. The seed examples also run from a private MariaDB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.daemon import AWS_ENV, Daemon, create_stream, mysql_source, read_stream, start_daemon, write_config
from tests.support.mysql import MyServer
from tests.support.postgres import PgDb

GOLDEN = Path(__file__).parent.parent / "unit" / "golden"
ROW: dict[str, Any] = orjson.loads((GOLDEN / "seed_customers_row.json").read_bytes())


def _wait_for(endpoint: str, stream: str, pred: Any, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        records = [r for r in read_stream(endpoint, stream) if r["data"]["metadata"]["record-type"] == "data"]
        if pred(records):
            return records
        assert time.monotonic() < deadline, f"stream never satisfied the condition; have {records}"
        time.sleep(0.3)


def _run(
    pg_db: PgDb, url: str, tmp_path: Path, mapping: Path, *, slot: str, extra_target: str = ""
) -> tuple[Daemon, str]:
    stream = create_stream(url, f"s-{uuid.uuid4().hex[:8]}")
    tmp_path.mkdir(parents=True, exist_ok=True)
    daemon = start_daemon(
        pg_db,
        url,
        stream,
        tmp_path,
        extra=f'table_mappings = "{mapping}"',
        extra_source=f'slot_name = "{slot}"',
        extra_target=extra_target,
    )
    daemon.wait_ready()
    return daemon, stream


def _customers_table(pg_db: PgDb, table: str) -> None:
    cols = ", ".join(f'"{name}" varchar(40)' for name in ROW)
    pg_db.execute(f'CREATE TABLE IF NOT EXISTS "Test"."{table}" ({cols})')


def _insert_customer(pg_db: PgDb, table: str) -> None:
    names = ", ".join(f'"{n}"' for n in ROW)
    marks = ", ".join(["%s"] * len(ROW))
    pg_db.execute(f'INSERT INTO "Test"."{table}" ({names}) VALUES ({marks})', params=tuple(ROW.values()))


@pytest.mark.parametrize("example", [1, 2, 3])
def test_seed_examples_through_postgres_and_kinesis(
    example: int, pg_db: PgDb, kinesis_url: str, tmp_path: Path
) -> None:
    expected = orjson.loads((GOLDEN / f"seed_example{example}.expected.json").read_bytes())
    pg_db.execute('CREATE SCHEMA "Test"')
    _customers_table(pg_db, expected["table"])
    daemon, stream = _run(
        pg_db, kinesis_url, tmp_path, GOLDEN / f"seed_example{example}.mapping.json", slot=f"seed{example}"
    )
    try:
        _insert_customer(pg_db, expected["table"])
        [record] = _wait_for(kinesis_url, stream, lambda rs: len(rs) >= 1)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert record["partition_key"] == expected["partition_key"]
    assert orjson.dumps(record["data"]["data"]) == orjson.dumps(expected["data"])
    for key, value in expected["metadata"].items():
        assert record["data"]["metadata"][key] == value, key


RICH: dict[str, Any] = {
    "rules": [
        {
            "rule-type": "selection",
            "rule-id": "1",
            "rule-name": "orders with qty >= 2 or status 'rush'",
            "rule-action": "include",
            "object-locator": {"schema-name": "public", "table-name": "orders"},
            "filters": [
                {"filter-type": "source", "column-name": "qty",
                 "filter-conditions": [{"filter-operator": "gte", "value": "2"}]}
            ],
        },
        {"rule-type": "selection", "rule-id": "2", "rule-action": "include",
         "object-locator": {"schema-name": "public", "table-name": "tmp%"}},
        {"rule-type": "selection", "rule-id": "3", "rule-action": "exclude",
         "object-locator": {"schema-name": "public", "table-name": "tmp[_]skip"}},
        {"rule-type": "transformation", "rule-id": "10", "rule-target": "schema", "rule-action": "rename",
         "object-locator": {"schema-name": "public"}, "value": "sales"},
        {"rule-type": "transformation", "rule-id": "11", "rule-target": "column", "rule-action": "convert-uppercase",
         "object-locator": {"schema-name": "public", "table-name": "orders", "column-name": "%"}},
        {"rule-type": "transformation", "rule-id": "12", "rule-target": "column", "rule-action": "remove-column",
         "object-locator": {"schema-name": "public", "table-name": "orders", "column-name": "secret"}},
        {"rule-type": "transformation", "rule-id": "13", "rule-target": "column", "rule-action": "add-column",
         "object-locator": {"schema-name": "public", "table-name": "orders"}, "value": "LABEL",
         "expression": "upper($customer) || '-' || $id"},
        {"rule-type": "object-mapping", "rule-id": "20", "rule-action": "map-record-to-record",
         "object-locator": {"schema-name": "public", "table-name": "orders"},
         "mapping-parameters": {"partition-key-type": "primary-key"}},
    ]
}  # fmt: skip


def test_rich_mapping_and_endpoint_settings(pg_db: PgDb, kinesis_url: str, tmp_path: Path) -> None:
    pg_db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, customer text, qty int, secret text); "
        "ALTER TABLE orders REPLICA IDENTITY FULL; "
        "CREATE TABLE tmp_keep (k int PRIMARY KEY); CREATE TABLE tmp_skip (k int PRIMARY KEY); "
        "CREATE TABLE other (k int PRIMARY KEY)"
    )
    mapping = tmp_path / "mapping.json"
    mapping.write_bytes(orjson.dumps(RICH))
    extra_target = """include_transaction_details = true
include_partition_value = true
partition_include_schema_table = true
include_control_details = true
control_operation_names = "dms"
[target.before_image]
enabled = true
field_name = "BI"
column_filter = "all"
"""
    daemon, stream = _run(pg_db, kinesis_url, tmp_path, mapping, slot="rich", extra_target=extra_target)
    try:
        pg_db.execute(
            "BEGIN; INSERT INTO orders VALUES (1, 'ann', 5, 's1'), (2, 'bob', 1, 's2'); "
            "INSERT INTO tmp_keep VALUES (1); INSERT INTO tmp_skip VALUES (1); INSERT INTO other VALUES (1); COMMIT"
        )
        pg_db.execute("UPDATE orders SET qty = 6 WHERE id = 1")
        pg_db.execute("DELETE FROM orders WHERE id = 1")
        pg_db.execute("TRUNCATE tmp_keep")
        records = _wait_for(kinesis_url, stream, lambda rs: len(rs) >= 4)
        everything = read_stream(kinesis_url, stream)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()

    # Order across partition keys is not promised; stream-position sorts in commit order.
    records.sort(key=lambda r: r["data"]["metadata"]["stream-position"])
    tables = [(r["data"]["metadata"]["table-name"], r["data"]["metadata"]["operation"]) for r in records]
    assert tables == [("orders", "insert"), ("tmp_keep", "insert"), ("orders", "update"), ("orders", "delete")]
    ins, keep, upd, dele = records
    assert ins["partition_key"] == "sales.orders.1"
    assert ins["data"]["data"] == {"ID": 1, "CUSTOMER": "ann", "QTY": 5, "LABEL": "ANN-1"}
    md = ins["data"]["metadata"]
    assert md["schema-name"] == "sales" and md["partition-key-value"] == "sales.orders.1"
    assert md["transaction-record-id"] == 1 and "commit-timestamp" in md and "prev-transaction-id" not in md
    assert keep["partition_key"] == "sales.tmp_keep"
    assert keep["data"]["metadata"]["transaction-id"] == md["transaction-id"]
    assert upd["data"]["BI"] == {"ID": 1, "CUSTOMER": "ann", "QTY": 5}  # REPLICA IDENTITY FULL: every column
    assert upd["data"]["metadata"]["prev-transaction-id"] == md["transaction-id"]
    assert upd["data"]["metadata"]["prev-transaction-record-id"] == keep["data"]["metadata"]["transaction-record-id"]
    assert dele["data"]["data"]["QTY"] == 6  # the old image, filtered on it
    truncate = [r for r in everything if r["data"]["metadata"]["operation"] == "truncate-table"]
    assert len(truncate) == 1 and truncate[0]["partition_key"] == "task1.sales.tmp_keep"
    assert truncate[0]["data"]["control"]["table-def"] == {
        "columns": {"k": {"type": "INT32", "nullable": False}},
        "primary-key": ["k"],
    }
    restart = [
        r for r in everything if r["data"]["metadata"]["record-type"] == "control" and r["partition_key"] == "task1"
    ]
    assert restart and restart[0]["data"]["metadata"]["operation"] == "restart-task"


def test_check_previews_each_table_and_names_bad_rules(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, qty int)")
    mapping = tmp_path / "mapping.json"
    mapping.write_bytes(orjson.dumps(RICH))
    stream = create_stream(moto_url, f"s-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "c.toml",
        pg_port=pg_db.server.port,
        database=pg_db.name,
        endpoint_url=moto_url,
        stream=stream,
        extra=f'table_mappings = "{mapping}"',
    )
    env = {**os.environ, **AWS_ENV}

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cdcstream", "check", "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
        )

    # RICH removes a column "secret" this table lacks: harmless; the rules and the sample record are shown.
    res = check()
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK   mapping public.orders" in res.stdout
    assert "rule-id 13 add-column LABEL" in res.stdout and "partition key: 42" in res.stdout, res.stdout
    assert '"LABEL":"CUSTOMER-42"' in res.stdout
    bad = dict(RICH)
    bad["rules"] = [*RICH["rules"][:-1], {**RICH["rules"][-1], "mapping-parameters": {
        "partition-key-type": "attribute-name", "partition-key-name": "nope"}}]  # fmt: skip
    mapping.write_bytes(orjson.dumps(bad))
    res = check()
    assert res.returncode == 1, res.stdout
    assert "FAIL mapping public.orders" in res.stdout
    assert f"{mapping}: rule-id 20 ($.rules[7].mapping-parameters.partition-key-name)" in res.stdout
    assert "partition-key-name 'nope'" in res.stdout


def test_daemon_refuses_to_start_on_a_rule_a_table_cannot_satisfy(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE orders (id int PRIMARY KEY, customer text)")
    mapping = tmp_path / "mapping.json"
    mapping.write_bytes(
        orjson.dumps(
            {
                "rules": [
                    {"rule-type": "selection", "rule-id": "1", "rule-action": "include",
                     "object-locator": {"schema-name": "public", "table-name": "%"}},
                    {"rule-type": "object-mapping", "rule-id": "2", "rule-action": "map-record-to-record",
                     "object-locator": {"schema-name": "public", "table-name": "orders"},
                     "mapping-parameters": {"attribute-mappings": [
                         {"target-attribute-name": "Who", "attribute-type": "scalar", "value": "${custmer}"}]}},
                ]
            }
        )
    )  # fmt: skip
    stream = create_stream(moto_url, f"s-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "c.toml",
        pg_port=pg_db.server.port,
        database=pg_db.name,
        endpoint_url=moto_url,
        stream=stream,
        extra=f'table_mappings = "{mapping}"',
    )
    res = subprocess.run(
        [sys.executable, "-m", "cdcstream", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, **AWS_ENV},
        timeout=60,
    )
    assert res.returncode == 4, res.stdout + res.stderr
    assert f"{mapping}: rule-id 2 ($.rules[1].mapping-parameters.attribute-mappings[0].value)" in res.stderr
    assert "public.orders has no column 'custmer'" in res.stderr


async def test_catalog_columns_match_what_the_source_reports(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    from cdcstream.checks import postgres_tables
    from cdcstream.config import load_config

    pg_db.execute(
        "CREATE TABLE pk (id int PRIMARY KEY, t text NOT NULL, n int); "
        "CREATE TABLE full_nopk (a int, b text); ALTER TABLE full_nopk REPLICA IDENTITY FULL; "
        "CREATE TABLE idx (a int NOT NULL, b int NOT NULL, c int); CREATE UNIQUE INDEX idx_ab ON idx (a, b); "
        "ALTER TABLE idx REPLICA IDENTITY USING INDEX idx_ab"
    )
    config = write_config(
        tmp_path / "c.toml", pg_port=pg_db.server.port, database=pg_db.name, endpoint_url=moto_url, stream="s"
    )
    tables = {t.table: t for t in await postgres_tables(load_config(config))}
    assert tables["pk"].key_columns == ("id",)
    assert [c.nullable for c in tables["pk"].columns] == [False, False, True]
    assert tables["full_nopk"].key_columns == ("a", "b")  # every column, as pgoutput flags them
    assert tables["idx"].key_columns == ("a", "b")
    assert [c.type_name for c in tables["pk"].columns] == ["int4", "text", "int4"]


@pytest.mark.parametrize("example", [1, 2, 3])
def test_seed_examples_through_mariadb_and_kinesis(
    example: int, my_server: MyServer, moto_url: str, tmp_path: Path
) -> None:
    """The same golden records from a MariaDB source: in MySQL the seed's schema "Test" is a database."""
    expected = orjson.loads((GOLDEN / f"seed_example{example}.expected.json").read_bytes())
    table = expected["table"]
    my_server.execute("DROP DATABASE IF EXISTS `Test`")
    my_server.execute("CREATE DATABASE `Test`")
    cols = ", ".join(f"`{name}` varchar(40)" for name in ROW)
    my_server.execute(f"CREATE TABLE `Test`.`{table}` ({cols})")
    stream = create_stream(moto_url, f"my-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "cdcstream.toml",
        endpoint_url=moto_url,
        stream=stream,
        source=mysql_source(my_server.port, "Test", server_id=5100 + example),
        extra=f'table_mappings = "{GOLDEN / f"seed_example{example}.mapping.json"}"',
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    daemon.wait_ready()
    try:
        names = ", ".join(f"`{n}`" for n in ROW)
        marks = ", ".join(["%s"] * len(ROW))
        my_server.execute(f"INSERT INTO `Test`.`{table}` ({names}) VALUES ({marks})", params=tuple(ROW.values()))
        [record] = _wait_for(moto_url, stream, lambda rs: len(rs) >= 1)
    finally:
        assert daemon.stop() == 0, daemon.log_tail()
    assert record["partition_key"] == expected["partition_key"]
    assert orjson.dumps(record["data"]["data"]) == orjson.dumps(expected["data"])
    for key, value in expected["metadata"].items():
        assert record["data"]["metadata"][key] == value, key
