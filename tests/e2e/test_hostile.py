"""Hostile conditions with the real daemon: TLS verification, a corrupt checkpoint, an invalidated slot, and
secrets that must never show up in any output (PostgreSQL and MySQL sources; the other MySQL cases are in
test_mysql_hostile.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from tests.support import running
from tests.support.daemon import Daemon, create_stream, mysql_source, read_stream, run_cli, write_config
from tests.support.mysql import CDC_GRANTS, MyDb
from tests.support.postgres import PgDb, PgServer, ServerStartError, start_private_postgres
from tests.support.tls import make_ca_and_server_cert


@pytest.fixture
def private_pg() -> Iterator[PgServer]:
    """A server of the test's own, for settings the shared one must not have (TLS, tiny WAL retention)."""
    yield from running(start_private_postgres, ServerStartError)


def _enable_tls(server: PgServer, certs: Path) -> Path:
    ca, crt, key = make_ca_and_server_cert(certs)
    for src in (crt, key):
        dst = server.datadir / src.name
        shutil.copy(src, dst)
        shutil.chown(dst, "postgres", "postgres") if os.geteuid() == 0 else None
        dst.chmod(0o600)
    with open(server.datadir / "postgresql.conf", "a") as fh:
        fh.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    server.restart()
    return ca


def test_tls_verify_full_accepts_the_right_name_and_refuses_a_wrong_one(
    private_pg: PgServer, moto_url: str, tmp_path: Path
) -> None:
    ca = _enable_tls(private_pg, tmp_path / "certs")
    db = private_pg.create_database()
    private_pg.execute(db, "CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"tls-{uuid.uuid4().hex[:8]}")
    tls = f'sslmode = "verify-full"\nsslrootcert = "{ca}"'
    config = write_config(
        tmp_path / "c.toml",
        pg_port=private_pg.port,
        database=db,
        endpoint_url=moto_url,
        stream=stream,
        extra_source=tls,
    )
    config.write_text(config.read_text().replace('sslmode = "disable"\n', ""))
    # 127.0.0.1 is not the name on the certificate: a clear, immediate failure, not endless retries.
    res = run_cli("run", "--config", str(config))
    assert res.returncode == 3, res.stderr
    assert "does not match host name" in res.stderr and "verify-ca" in res.stderr
    # The certificate's own name works, over TLS.
    config.write_text(config.read_text().replace('host = "127.0.0.1"', 'host = "localhost"'))
    # A CA of the same name with another key (libpq: "provider signature failure") stops too, naming the fix.
    other_ca, _, _ = make_ca_and_server_cert(tmp_path / "other-ca")
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace(str(ca), str(other_ca)))
    res = run_cli("run", "--config", str(other))
    assert res.returncode == 3, res.stderr
    assert "signature failure" in res.stderr and "sslrootcert" in res.stderr and "Traceback" not in res.stderr
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        daemon.wait_ready()
        private_pg.execute(db, "INSERT INTO t VALUES (1)")
        deadline = time.monotonic() + 30
        while not any(r["data"].get("data", {}).get("id") == 1 for r in read_stream(moto_url, stream)):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        rows = private_pg.execute("postgres", "SELECT count(*) FROM pg_stat_ssl WHERE ssl", superuser=True)
        assert rows[0][0] >= 1
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_corrupt_checkpoint_is_refused_with_a_clear_error(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"ck-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "c.toml", pg_port=pg_db.server.port, database=pg_db.name, endpoint_url=moto_url, stream=stream
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    daemon.wait_ready()
    pg_db.execute("INSERT INTO t VALUES (1)")
    time.sleep(1.5)
    assert daemon.stop() == 0
    ckpt = tmp_path / "state" / "task1.checkpoint.json"
    ckpt.write_bytes(ckpt.read_bytes()[:40])  # truncated, as a full disk or a bad copy would leave it
    res = run_cli("run", "--config", str(config))
    assert res.returncode == 6
    assert str(ckpt) in res.stderr and "corrupt or truncated" in res.stderr and "Traceback" not in res.stderr


def test_invalidated_slot_is_a_clear_error_not_a_fresh_start(
    private_pg: PgServer, moto_url: str, tmp_path: Path
) -> None:
    with open(private_pg.datadir / "postgresql.conf", "a") as fh:
        fh.write("max_slot_wal_keep_size = 1MB\nwal_keep_size = 0\nmax_wal_size = 32MB\nmin_wal_size = 32MB\n")
    private_pg.restart()
    db = private_pg.create_database()
    private_pg.execute(db, "CREATE TABLE t (id int PRIMARY KEY, pad text)")
    stream = create_stream(moto_url, f"lost-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "c.toml", pg_port=private_pg.port, database=db, endpoint_url=moto_url, stream=stream
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    daemon.wait_ready()
    assert daemon.stop() == 0
    # While the daemon is down: far more WAL than max_slot_wal_keep_size, and checkpoints to remove it.
    for _ in range(4):
        private_pg.execute(
            db, "INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 20000) g ON CONFLICT DO NOTHING"
        )
        private_pg.execute(db, "DELETE FROM t")
        private_pg.execute("postgres", "SELECT pg_switch_wal()", superuser=True)
        private_pg.execute("postgres", "CHECKPOINT", superuser=True)
    status = private_pg.execute("postgres", "SELECT wal_status FROM pg_replication_slots", superuser=True)
    assert status == [("lost",)], status
    res = run_cli("run", "--config", str(config))
    assert res.returncode == 3, res.stderr
    assert "cdcstream" in res.stderr and "wal_status 'lost'" in res.stderr and "full load" in res.stderr


SECRET = "Zq7-not-in-any-output-9xK"


def test_a_known_password_never_appears_in_any_output(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    pg_db.execute(f"CREATE ROLE cdc_secret LOGIN REPLICATION PASSWORD '{SECRET}'", superuser=True)
    pg_db.execute(f'GRANT ALL ON DATABASE "{pg_db.name}" TO cdc_secret', superuser=True)
    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    pg_db.execute("ALTER TABLE t OWNER TO cdc_secret", superuser=True)
    stream = create_stream(moto_url, f"sec-{uuid.uuid4().hex[:8]}")
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    config = write_config(
        tmp_path / "c.toml", pg_port=pg_db.server.port, database=pg_db.name, endpoint_url=moto_url, stream=stream
    )
    text = config.read_text().replace('user = "cdc"', 'user = "cdc_secret"')
    config.write_text(text.replace('password = "cdc"', f'password_file = "{secret_file}"'))
    outputs = _cli_outputs(config)
    daemon = Daemon(config, tmp_path / "daemon.log")
    config.write_text(config.read_text().replace('level = "info"', 'level = "debug"'))
    daemon.start()
    try:
        daemon.wait_ready()
        pg_db.execute("INSERT INTO t VALUES (1)", superuser=True)
        time.sleep(1)
        outputs += _live_outputs(daemon, config)
        # a failure that carries connection details: the server refuses the password it was given
        pg_db.execute(f"ALTER ROLE cdc_secret PASSWORD '{SECRET}-changed'", superuser=True)
        pg_db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'cdc_secret'", superuser=True
        )
        time.sleep(3)
        assert daemon.stop() in (0, 3)
    finally:
        daemon.kill()
    daemon_log = _assert_no_secret(outputs, tmp_path)
    assert "reconnect" in daemon_log  # the failure path ran and was logged (without the password)


def _cli_outputs(config: Path) -> list[str]:
    outputs: list[str] = []
    for command in ("check", "print-config"):
        res = run_cli(command, "--config", str(config))
        outputs += [res.stdout, res.stderr]
    return outputs


def _live_outputs(daemon: Daemon, config: Path) -> list[str]:
    """Every HTTP endpoint of the running daemon and the ``status`` command."""
    outputs = []
    for path in ("/status", "/metrics", "/readyz", "/healthz"):
        with urllib.request.urlopen(daemon.http + path, timeout=5) as resp:
            outputs.append(resp.read().decode())
    res = run_cli("status", "--config", str(config))
    return [*outputs, res.stdout, res.stderr]


def _assert_no_secret(outputs: list[str], tmp_path: Path) -> str:
    """Add the daemon log and the state files to ``outputs``, assert none holds SECRET; return the log."""
    daemon_log = (tmp_path / "daemon.log").read_text()
    outputs = [*outputs, daemon_log, *(p.read_text(errors="replace") for p in (tmp_path / "state").glob("*"))]
    leaked = [o for o in outputs if SECRET in o]
    assert not leaked, leaked[0][:2000]
    return daemon_log


def test_a_known_mysql_password_never_appears_in_any_output(my_db: MyDb, moto_url: str, tmp_path: Path) -> None:
    user = f"cdc_secret{uuid.uuid4().hex[:6]}"
    my_db.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{SECRET}'")
    my_db.execute(f"GRANT {CDC_GRANTS} ON *.* TO '{user}'@'127.0.0.1'")
    my_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"mysec-{uuid.uuid4().hex[:8]}")
    secret_file = tmp_path / "pw"
    secret_file.write_text(SECRET + "\n")
    source = mysql_source(my_db.server.port, my_db.name).replace('user = "cdc"', f'user = "{user}"')
    source = source.replace('password = "cdc"', f'password_file = "{secret_file}"')
    config = write_config(tmp_path / "c.toml", endpoint_url=moto_url, stream=stream, source=source)
    config.write_text(config.read_text().replace('level = "info"', 'level = "debug"'))
    outputs = _cli_outputs(config)
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    try:
        daemon.wait_ready()
        my_db.execute("INSERT INTO t VALUES (1)")
        time.sleep(1)
        outputs += _live_outputs(daemon, config)
        # a failure that carries connection details: the server refuses the password the daemon reconnects with
        my_db.execute(f"ALTER USER '{user}'@'127.0.0.1' IDENTIFIED BY '{SECRET}-changed'")
        for (pid,) in my_db.execute(f"SELECT id FROM information_schema.processlist WHERE user = '{user}'"):
            with contextlib.suppress(pymysql.Error):
                my_db.execute(f"KILL {pid}")
        assert daemon.proc is not None and daemon.proc.wait(timeout=60) == 3
    finally:
        daemon.kill()
        my_db.execute(f"DROP USER '{user}'@'127.0.0.1'")
    outputs += _cli_outputs(config)  # check with the refused password
    daemon_log = _assert_no_secret(outputs, tmp_path)
    assert "Access denied" in daemon_log and "Traceback" not in daemon_log


def test_a_checkpoint_from_another_cluster_is_refused(pg_db: PgDb, moto_url: str, tmp_path: Path) -> None:
    """Failover signal: the server behind the address is a different database system than the one the
    checkpoint was written for (a restore, a new server): its LSNs mean nothing here."""
    from cdcstream.checkpoints.store import FileCheckpointStore

    pg_db.execute("CREATE TABLE t (id int PRIMARY KEY)")
    stream = create_stream(moto_url, f"id-{uuid.uuid4().hex[:8]}")
    config = write_config(
        tmp_path / "c.toml", pg_port=pg_db.server.port, database=pg_db.name, endpoint_url=moto_url, stream=stream
    )
    daemon = Daemon(config, tmp_path / "daemon.log")
    daemon.start()
    daemon.wait_ready()
    pg_db.execute("INSERT INTO t VALUES (1)")
    time.sleep(1.5)
    assert daemon.stop() == 0
    store = FileCheckpointStore(tmp_path / "state", "task1")
    checkpoint = store.load()
    assert checkpoint is not None and checkpoint["system_id"] and checkpoint["timeline"] == 1
    store.save({**checkpoint, "system_id": "7000000000000000001"})
    res = run_cli("run", "--config", str(config))
    assert res.returncode == 3, res.stderr
    assert "7000000000000000001" in res.stderr and "different cluster" in res.stderr
