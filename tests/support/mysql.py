"""pytest plugin: a private MariaDB server (10.11 here) for integration and end-to-end tests.

``mariadbd --defaults-file=<tmp>/my.cnf`` (``--defaults-file`` must be the first option; it also keeps the
system ``/etc/mysql`` config out) runs as the ``mysql`` OS user with its own datadir, port, socket and binlogs
under a temporary directory, with the settings the source requires: ``log_bin``, ``binlog_format=ROW``,
``binlog_row_image=FULL``, ``binlog_row_metadata=FULL``. Root logs in over the private socket only.

The daemon connects as ``cdc`` (password ``cdc``) with the least privileges the source needs on MariaDB 10.11
(docs/mysql.md, "Privileges"): ``REPLICATION SLAVE`` (read the binlog), ``BINLOG MONITOR`` (SHOW BINARY LOGS /
BINLOG STATUS, what MySQL calls REPLICATION CLIENT), ``SELECT`` (the full load's reads and the ``check``
command's catalogue reads) and ``RELOAD`` (the full load's brief ``FLUSH TABLES WITH READ LOCK``; the fallback
without it is tested with a second user).
Each test gets its own database (``my_db``).

``my_pair``: two more such servers for one test, a primary (server_id 1) and a ``read_only`` replica (server_id 2)
replicating from it by GTID with ``log_slave_updates``, for failover tests (the primary can be SIGKILLed and the
replica promoted).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pymysql.cursors
import pytest

from cdcstream.config import MySQLSourceConfig
from tests.support import free_port, running
from tests.support.tls import make_ca_and_server_cert

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db") or "/usr/bin/mariadb-install-db"
OS_USER = "mysql"
CDC_USER = "cdc"
CDC_PASSWORD = "cdc"
CDC_GRANTS = "REPLICATION SLAVE, BINLOG MONITOR, SELECT, RELOAD"

_CNF = """[mariadbd]
datadir={root}/data
socket={root}/mariadb.sock
pid-file={root}/mariadb.pid
log-error={root}/error.log
tmpdir={root}/tmp
bind-address=127.0.0.1
port={port}
user={user}
server_id={server_id}
log_bin={root}/binlog/mariadb-bin
binlog_format=ROW
binlog_row_image=FULL
binlog_row_metadata=FULL
max_binlog_size=256M
innodb_buffer_pool_size=128M
innodb_log_file_size=64M
innodb_flush_log_at_trx_commit=2
sync_binlog=0
skip-name-resolve
character-set-server=utf8mb4
collation-server=utf8mb4_general_ci
{extra}
[client]
socket={root}/mariadb.sock
user=root
"""


class ServerStartError(RuntimeError):
    """The private MariaDB server could not be started."""


@dataclass
class MyServer:
    """Handle on the private server: root over the socket, ``cdc`` over TCP, restart and binlog helpers."""

    root: Path
    port: int
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    ca: Path | None = None  # the test CA, when started with tls_name (plaintext is then refused)
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def cnf(self) -> Path:
        return self.root / "my.cnf"

    @property
    def socket(self) -> Path:
        return self.root / "mariadb.sock"

    def connect(self, db: str | None = None, *, root: bool = True, autocommit: bool = True) -> pymysql.Connection[Any]:
        if root:
            return pymysql.connect(
                unix_socket=str(self.socket), user="root", database=db, autocommit=autocommit, charset="utf8mb4"
            )
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=CDC_USER,
            password=CDC_PASSWORD,
            database=db,
            autocommit=autocommit,
            charset="utf8mb4",
        )

    def execute(self, query: str, db: str | None = None, *, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as root in autocommit mode; its rows (empty list when none)."""
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def create_database(self, prefix: str = "t") -> str:
        name = f"{prefix}{os.getpid()}_{next(self._counter)}"
        self.execute(f"CREATE DATABASE `{name}`")
        return name

    def master_status(self) -> tuple[str, int]:
        """The binlog's current file and position (MariaDB's SHOW BINLOG STATUS, once SHOW MASTER STATUS)."""
        row = self.execute("SHOW BINLOG STATUS")[0]
        return str(row[0]), int(row[1])

    def purge_binlogs_to(self, file: str) -> None:
        """``PURGE BINARY LOGS TO file``, for certain. The server keeps a file a binlog dump thread is still
        reading (a reader an earlier test left behind on this shared server): those threads are killed first.
        MariaDB also keeps a binlog until InnoDB has checkpointed past it (Binlog_checkpoint): so retry."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for row in self.execute("SHOW PROCESSLIST"):
                if row[4] == "Binlog Dump":
                    with contextlib.suppress(pymysql.err.MySQLError):
                        self.execute(f"KILL {int(row[0])}")
            self.execute(f"PURGE BINARY LOGS TO '{file}'")
            if self.execute("SHOW BINARY LOGS")[0][0] == file:
                return
            time.sleep(0.2)
        raise AssertionError(f"binlogs before {file} are still on the server after PURGE")

    def start(self, timeout: float = 60) -> None:
        log = (self.root / "mariadbd.out").open("ab")
        argv = [MARIADBD, f"--defaults-file={self.cnf}"]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"mariadbd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.execute("SELECT 1")
                return
            except pymysql.Error:
                time.sleep(0.1)
        raise ServerStartError(f"mariadbd not ready after {timeout}s: {self.log_tail()}")

    def shutdown(self, timeout: float = 60) -> None:
        """Clean shutdown (SIGTERM): every connection, the replication stream included, is dropped."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.shutdown()
        self.start()

    def stop(self) -> None:
        self.shutdown(timeout=20)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.root / "error.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def start_private_mariadb(
    root: Path | None = None, *, extra_cnf: str = "", tls_name: str | None = None, server_id: int = 1
) -> MyServer:
    """Install and start a private MariaDB in ``root`` (a new temp dir by default); also used by the bench.

    ``tls_name``: serve TLS with a certificate for that DNS name from a CA generated for the test
    (``server.ca``), and refuse plaintext connections (``require_secure_transport``). ``server_id``: 1 (MariaDB's
    default) unless the server is one of a replication pair."""
    if not Path(MARIADBD).exists() or not Path(INSTALL_DB).exists():
        raise ServerStartError("mariadbd / mariadb-install-db not found (apt-get install mariadb-server)")
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="cdcstream-my-"))
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "tmp", "binlog"):
        (root / sub).mkdir(exist_ok=True)
    server = MyServer(root=root, port=free_port())
    if tls_name is not None:
        server.ca, crt, key = make_ca_and_server_cert(root / "certs", tls_name)
        extra_cnf += f"\nssl_ca={server.ca}\nssl_cert={crt}\nssl_key={key}\nrequire_secure_transport=ON\n"
    user = OS_USER if os.geteuid() == 0 else os.environ.get("USER", "")
    server.cnf.write_text(_CNF.format(root=root, port=server.port, user=user, server_id=server_id, extra=extra_cnf))
    if os.geteuid() == 0:
        os.chmod(root, 0o755)
        for path in [root, *root.rglob("*")]:
            shutil.chown(path, OS_USER, OS_USER)
    res = subprocess.run(
        [INSTALL_DB, f"--defaults-file={server.cnf}", "--auth-root-authentication-method=normal", "--skip-test-db"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if res.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ServerStartError(f"mariadb-install-db failed: {(res.stderr or res.stdout).strip()[-500:]}")
    try:
        server.start()
    except ServerStartError:
        server.stop()
        raise
    server.execute(f"CREATE USER '{CDC_USER}'@'127.0.0.1' IDENTIFIED BY '{CDC_PASSWORD}'")
    server.execute(f"GRANT {CDC_GRANTS} ON *.* TO '{CDC_USER}'@'127.0.0.1'")
    return server


@pytest.fixture(scope="session")
def my_server() -> Iterator[MyServer]:
    """The session's private MariaDB server."""
    yield from running(start_private_mariadb, ServerStartError)


@dataclass
class MyDb:
    """A fresh database of the private server plus a source-config factory pointing at it."""

    server: MyServer
    name: str

    def config(self, **overrides: Any) -> MySQLSourceConfig:
        values: dict[str, Any] = {
            "engine": "mysql",
            "host": self.server.host,
            "port": self.server.port,
            "user": CDC_USER,
            "password": CDC_PASSWORD,
            "server_id": 1000 + next(self.server._counter),
            "databases": [self.name],
            "heartbeat_interval": 1,
            "reconnect_max_delay": 1,
            "connect_timeout": 5,
        }
        values.update(overrides)
        return MySQLSourceConfig(**values)

    def execute(self, query: str, *, params: Any = None) -> list[tuple[Any, ...]]:
        return self.server.execute(query, self.name, params=params)

    def connect(self, *, autocommit: bool = True) -> pymysql.Connection[Any]:
        return self.server.connect(self.name, autocommit=autocommit)


@pytest.fixture
def my_db(my_server: MyServer) -> Iterator[MyDb]:
    """A fresh database, dropped after the test."""
    if my_server.proc is None or my_server.proc.poll() is not None:
        my_server.start()  # a test that restarted the server and failed half-way
    name = my_server.create_database()
    try:
        yield MyDb(my_server, name)
    finally:
        with contextlib.suppress(pymysql.Error):
            my_server.execute(f"DROP DATABASE IF EXISTS `{name}`")


# A replication pair. log_slave_updates: the replica writes what it applies to its own binlog under the original
# GTIDs, so once promoted its binlog holds every transaction the old primary shipped to it (what a reader resuming
# by GTID needs). gtid_strict_mode: a transaction written on the replica itself breaks replication instead of
# silently making the two histories differ.
_PAIR_CNF = """log_slave_updates=ON
gtid_strict_mode=ON
"""


@dataclass
class MyPair:
    """A primary (server_id 1) and a replica (server_id 2, ``read_only``) replicating from it by GTID
    (``MASTER_USE_GTID = slave_pos``), as the least-privilege ``cdc`` user (it has ``REPLICATION SLAVE``)."""

    primary: MyServer
    replica: MyServer

    def slave_status(self) -> dict[str, Any]:
        conn = self.replica.connect()
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute("SHOW SLAVE STATUS")
                return dict(cur.fetchone() or {})
        finally:
            conn.close()

    def wait_replicated(self, timeout: float = 60) -> None:
        """Until the replica has applied everything the primary has written so far."""
        pos = self.primary.execute("SELECT @@GLOBAL.gtid_binlog_pos")[0][0]
        waited = self.replica.execute("SELECT MASTER_GTID_WAIT(%s, %s)", params=(pos, timeout))[0][0]
        assert waited == 0, f"replica not at {pos} after {timeout}s: {self.slave_status()}"

    def kill_primary(self) -> None:
        """SIGKILL the primary: no clean shutdown, whatever was not sent to the replica yet stays behind."""
        proc = self.primary.proc
        assert proc is not None and proc.poll() is None
        proc.kill()
        proc.wait(timeout=10)

    def promote(self, timeout: float = 60) -> None:
        """What a failover tool does with the replica: apply every transaction it received (a transaction the
        primary died before shipping completely is not applied), stop replicating, forget the old primary,
        accept writes."""
        received = str(self.slave_status().get("Gtid_IO_Pos") or "")
        self.replica.execute("STOP SLAVE IO_THREAD")
        waited = self.replica.execute("SELECT MASTER_GTID_WAIT(%s, %s)", params=(received, timeout))[0][0]
        assert waited == 0, f"replica did not apply what it received ({received}): {self.slave_status()}"
        self.replica.execute("STOP SLAVE")
        self.replica.execute("RESET SLAVE ALL")
        self.replica.execute("SET GLOBAL read_only = OFF")

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()


def start_mariadb_pair() -> MyPair:
    """Two private MariaDB servers, each with its own datadir, port, socket and binlog, the replica replicating
    from the primary by GTID from the primary's current state on."""
    primary = start_private_mariadb(extra_cnf=_PAIR_CNF, server_id=1)
    try:
        replica = start_private_mariadb(extra_cnf=_PAIR_CNF + "read_only=ON\n", server_id=2)
    except ServerStartError:
        primary.stop()
        raise
    pair = MyPair(primary, replica)
    try:
        # The replica's own set-up (the cdc user, created on both servers) leaves its binlog: until it is
        # promoted, its binlog holds replicated transactions only, as on a replica made from a backup.
        replica.execute("RESET MASTER")
        replica.execute(
            "SET GLOBAL gtid_slave_pos = %s", params=(primary.execute("SELECT @@GLOBAL.gtid_binlog_pos")[0][0],)
        )
        replica.execute(
            f"CHANGE MASTER TO MASTER_HOST = '{primary.host}', MASTER_PORT = {primary.port}, "
            f"MASTER_USER = '{CDC_USER}', MASTER_PASSWORD = '{CDC_PASSWORD}', MASTER_USE_GTID = slave_pos, "
            "MASTER_CONNECT_RETRY = 1"
        )
        replica.execute("START SLAVE")
        deadline = time.monotonic() + 30
        while (status := pair.slave_status()).get("Slave_IO_Running") != "Yes":
            if time.monotonic() > deadline or status.get("Last_IO_Error") or status.get("Last_SQL_Error"):
                raise ServerStartError(f"the replica does not replicate: {status}")
            time.sleep(0.1)
    except (pymysql.Error, ServerStartError) as exc:
        pair.stop()
        raise ServerStartError(f"MariaDB replication pair: {exc}") from None
    return pair


@pytest.fixture
def my_pair() -> Iterator[MyPair]:
    """A fresh primary/replica pair for one test (a failover test kills the primary)."""
    yield from running(start_mariadb_pair, ServerStartError)
