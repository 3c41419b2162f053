"""Hostile conditions with the real daemon and a MariaDB source: TLS with host name verification, a GTID
position the server purged, another server behind the same address (failover), and a corrupted binlog event.

Each failure must be immediate, specific (what, where, how to recover), exit 3 without a traceback, and leave
the checkpoint alone: never a silent fresh start. The tests that break the server (certificates, server_id,
binlog bytes) use a private TLS-only MariaDB of this module, not the session's shared one; the tests that do
not set ssl_mode reach it with the default "preferred", which must therefore negotiate TLS.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cdcstream.checkpoints.model import MySQLCheckpoint
from cdcstream.checkpoints.store import FileCheckpointStore
from tests.support import running
from tests.support.checkpoints import mysql
from tests.support.daemon import create_stream, mysql_source, run_cli, stream_rows_then_stop, wait_for, write_config
from tests.support.mysql import MyDb, MyServer, ServerStartError, start_private_mariadb
from tests.support.tls import make_ca_and_server_cert


@pytest.fixture(scope="module")
def tls_mariadb() -> Iterator[MyServer]:
    """A private MariaDB serving TLS with a certificate for ``localhost`` only, refusing plaintext."""
    yield from running(lambda: start_private_mariadb(tls_name="localhost"), ServerStartError)


def _config(tmp_path: Path, port: int, database: str, url: str, stream: str, extra_source: str = "") -> Path:
    return write_config(
        tmp_path / "c.toml",
        endpoint_url=url,
        stream=stream,
        source=mysql_source(port, database),
        extra_source=extra_source,
    )


def _checkpoint(tmp_path: Path) -> MySQLCheckpoint:
    return mysql(FileCheckpointStore(tmp_path / "state", "task1").load())


def _stream_one_row(config: Path, tmp_path: Path, insert: Any, url: str, stream: str, table: str, n: int) -> str:
    """Run the daemon until rows 1..``n`` of ``table`` are in the stream, stop it cleanly; its log."""
    return stream_rows_then_stop(config, tmp_path / "daemon.log", insert, url, stream, table, n).log_tail(200)


def _fails_clearly(config: Path, *needles: str) -> str:
    res = run_cli("run", "--config", str(config))
    assert res.returncode == 3, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in res.stderr, res.stderr
    return res.stderr


def test_mysql_tls_verify_identity(tls_mariadb: MyServer, moto_url: str, tmp_path: Path) -> None:
    db = tls_mariadb.create_database()
    tls_mariadb.execute("CREATE TABLE t (id int PRIMARY KEY)", db)
    stream = create_stream(moto_url, f"mytls-{uuid.uuid4().hex[:8]}")
    tls = f'ssl_mode = "verify_identity"\nssl_ca = "{tls_mariadb.ca}"\n'
    config = _config(tmp_path, tls_mariadb.port, db, moto_url, stream, tls)
    # 127.0.0.1 is not the name on the certificate: an immediate, clear failure, not endless retries.
    _fails_clearly(config, "host name verification failed", "verify_ca", "IP address mismatch")
    # Plaintext is refused by the server (require_secure_transport), with a hint at ssl_mode.
    plain = config.read_text().replace(tls, 'ssl_mode = "disabled"\n')
    (tmp_path / "plain.toml").write_text(plain)
    _fails_clearly(tmp_path / "plain.toml", "Access denied", "ssl_mode")
    # A CA that did not sign the server certificate: the fix names ssl_ca.
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other-ca", "localhost")
    (tmp_path / "other.toml").write_text(
        config.read_text().replace(str(tls_mariadb.ca), str(other_ca)).replace("127.0.0.1", "localhost")
    )
    _fails_clearly(tmp_path / "other.toml", "could not be verified", "ssl_ca must hold the CA")
    # "required" encrypts without verifying: the same wrong name is accepted (check connects and passes).
    (tmp_path / "required.toml").write_text(config.read_text().replace('"verify_identity"', '"required"'))
    check = run_cli("check", "--config", str(tmp_path / "required.toml"))
    assert check.returncode == 0 and "OK   connect" in check.stdout, check.stdout + check.stderr
    # The certificate's own name works, over TLS (the server accepts nothing else).
    config.write_text(config.read_text().replace('host = "127.0.0.1"', 'host = "localhost"'))
    _stream_one_row(
        config, tmp_path, lambda: tls_mariadb.execute("INSERT INTO t VALUES (1)", db), moto_url, stream, "t", 1
    )


def test_mysql_tls_missing_ca_is_a_config_error(tmp_path: Path) -> None:
    config = _config(
        tmp_path, 3306, "db", "http://127.0.0.1:1", "s", f'ssl_mode = "verify_ca"\nssl_ca = "{tmp_path}/nope.pem"\n'
    )
    for command in ("run", "check"):
        res = run_cli(command, "--config", str(config))
        assert res.returncode == 2, res.stderr
        assert "ssl_ca" in res.stderr and "nope.pem" in res.stderr and "No such file" in res.stderr, res.stderr
        assert "Traceback" not in res.stderr


def _purge_binlogs(server: MyServer) -> None:
    """Rotate and purge every binlog but the new one."""
    server.execute("FLUSH BINARY LOGS")
    server.purge_binlogs_to(server.master_status()[0])


def test_mysql_purged_gtid_is_a_clear_error_not_a_fresh_start(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    my_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"mygtid-{uuid.uuid4().hex[:8]}")
    config = _config(tmp_path, my_db.server.port, my_db.name, moto_url, stream, 'gtid_mode = "on"\n')
    _stream_one_row(config, tmp_path, lambda: my_db.execute("INSERT INTO t VALUES (1)"), moto_url, stream, "t", 1)
    before = _checkpoint(tmp_path)
    assert before["gtid"], before
    # While the daemon is down: a change it has not read, then its binlog is purged.
    my_db.execute("INSERT INTO t VALUES (2)")
    _purge_binlogs(my_db.server)
    stderr = _fails_clearly(config, f"GTID position {before['gtid']}", "purged", "full load", "retention")
    assert "is no longer on the server" in stderr
    check = run_cli("check", "--config", str(config))
    assert check.returncode == 1 and "FAIL binlog position" in check.stdout, check.stdout
    assert f"GTID position {before['gtid']} is no longer on the server" in check.stdout  # run's own words
    assert _checkpoint(tmp_path) == before  # nothing was overwritten by a fresh start


def test_mysql_another_server_behind_the_address(tls_mariadb: MyServer, moto_url: str, tmp_path: Path) -> None:
    """Failover signal: the same host and port now answer with another server_id. By file/position that is
    an error (the position means nothing there); by GTID, a warning and streaming goes on."""
    server = tls_mariadb
    db = server.create_database()
    server.execute("CREATE TABLE t (id int PRIMARY KEY)", db)
    stream = create_stream(moto_url, f"myid-{uuid.uuid4().hex[:8]}")
    config = _config(tmp_path, server.port, db, moto_url, stream, 'gtid_mode = "off"\n')
    _stream_one_row(config, tmp_path, lambda: server.execute("INSERT INTO t VALUES (1)", db), moto_url, stream, "t", 1)
    before = _checkpoint(tmp_path)
    assert before["server_id"] == 1, before
    cnf = server.cnf.read_text()
    server.cnf.write_text(cnf.replace("server_id=1\n", "server_id=2\n"))
    server.restart()
    try:
        _fails_clearly(config, "server_id 2", "server_id 1", "failover", "gtid_mode = 'auto'", "full load")
        check = run_cli("check", "--config", str(config))
        assert check.returncode == 1 and "FAIL server identity" in check.stdout, check.stdout
        assert _checkpoint(tmp_path) == before
        config.write_text(config.read_text().replace('gtid_mode = "off"', 'gtid_mode = "auto"'))
        log = _stream_one_row(
            config, tmp_path, lambda: server.execute("INSERT INTO t VALUES (2)", db), moto_url, stream, "t", 2
        )
        assert "server identity changed" in log
        assert _checkpoint(tmp_path)["server_id"] == 2
    finally:
        server.cnf.write_text(cnf)
        server.restart()


def test_mysql_corrupt_binlog_event_stops_with_its_position(
    tls_mariadb: MyServer, moto_url: str, tmp_path: Path
) -> None:
    """A row event whose bytes were damaged on disk (the server sends binlogs without verifying them by
    default): a DecodeError naming the position, never a wrong value in the stream."""
    server = tls_mariadb
    db = server.create_database()
    server.execute("CREATE TABLE t (id int PRIMARY KEY, v varchar(40))", db)
    stream = create_stream(moto_url, f"mycrc-{uuid.uuid4().hex[:8]}")
    config = _config(tmp_path, server.port, db, moto_url, stream)
    _stream_one_row(
        config, tmp_path, lambda: server.execute("INSERT INTO t VALUES (1, 'ok')", db), moto_url, stream, "t", 1
    )
    marker = f"corrupt-me-{uuid.uuid4().hex[:8]}".encode()
    server.execute("INSERT INTO t VALUES (2, %s)", db, params=(marker.decode(),))
    file, _ = server.master_status()
    path = server.root / "binlog" / file
    data = path.read_bytes()
    at = data.rindex(marker)
    path.write_bytes(data[:at] + b"X" + data[at + 1 :])
    stderr = _fails_clearly(config, "CRC32", f"{file}:", "corrupt")
    assert marker.decode() not in str(wait_for(moto_url, stream, lambda rs: True))
    assert "WRITE_ROWS_EVENT" in stderr  # the event type, for the bug report
