"""Hostile conditions with the real daemon and a PostgreSQL source: TLS verification, an invalidated slot, a
checkpoint from another cluster. (Both engines: test_hostile.py; MariaDB's own: test_mysql_hostile.py.)"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import running
from tests.support.checkpoints import pg
from tests.support.daemon import Daemon, create_stream, read_stream, run_cli, write_config
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
    checkpoint = pg(store.load())
    assert checkpoint["system_id"] and checkpoint["timeline"] == 1
    store.save({**checkpoint, "system_id": "7000000000000000001"})
    res = run_cli("run", "--config", str(config))
    assert res.returncode == 3, res.stderr
    assert "7000000000000000001" in res.stderr and "different cluster" in res.stderr
