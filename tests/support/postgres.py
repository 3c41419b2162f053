"""pytest plugin: a private PostgreSQL server for integration tests, PostgreSQL 15 unless asked otherwise.

The server runs from the binaries of :mod:`tests.support.pg_binaries` (Debian's for 15, the pinned npm builds
for 14, 16, 17 and 18) as the ``postgres`` OS user (initdb refuses root) in a
temporary directory, on a free port, with ``wal_level=logical``. Authentication mirrors a production setup:
``trust`` for the superuser over the private unix socket only, ``scram-sha-256`` for everyone over 127.0.0.1.
The role ``cdc`` (password ``cdc``) has LOGIN REPLICATION CREATEDB but is *not* a superuser, so tests see the
privilege errors a real deployment would see. Each test gets its own database (``pg_db``), hence its own
publication namespace (slot names are cluster-wide: tests use distinct names or one slot per database).

``--pg-versions 14,16`` runs every selected test that uses ``pg_server`` once per listed version (test ids get
``[pg14]``...); ``pg_version`` is the major version of the server a test runs against.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cdcstream.config import PostgresSourceConfig
from tests.support import free_port, running
from tests.support.pg_binaries import DEBIAN_BIN, DEBIAN_MAJOR, MAJORS, BinariesError, bin_dir

#: Client tools (psql, pg_recvlogical): PostgreSQL 15's talk to every server version tested.
PG_BIN = DEBIAN_BIN
SUPERUSER = "postgres"
CDC_USER = "cdc"
CDC_PASSWORD = "cdc"

_CONF = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{sockdir}'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 64MB
wal_sender_timeout = 60s
log_min_messages = warning
logging_collector = off
"""

_HBA = """
local all {superuser} trust
local replication {superuser} trust
host all all 127.0.0.1/32 scram-sha-256
"""


def _as_postgres(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command as the postgres OS user (root cannot run initdb/postgres)."""
    line = " ".join(shlex.quote(c) for c in cmd)
    if os.geteuid() == 0:
        argv = ["runuser", "-u", SUPERUSER, "--", "/bin/sh", "-c", line]
    else:
        argv = ["/bin/sh", "-c", line]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass
class PgServer:
    """Handle on the private server: DSNs, per-test databases and a sync SQL helper."""

    root: Path
    port: int
    bin_dir: Path = DEBIAN_BIN
    version: int = DEBIAN_MAJOR
    host: str = "127.0.0.1"
    _counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root

    def superuser_dsn(self, db: str = "postgres") -> str:
        return psycopg.conninfo.make_conninfo(host=str(self.sockdir), port=self.port, user=SUPERUSER, dbname=db)

    def dsn(self, db: str) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=CDC_USER, password=CDC_PASSWORD, dbname=db
        )

    def execute(self, db: str, query: str, *, superuser: bool = False, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit mode and return its rows (empty list when it returns none)."""
        dsn = self.superuser_dsn(db) if superuser else self.dsn(db)
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(query.encode() if params is None else query, params)
            return list(cur.fetchall()) if cur.description is not None else []

    def create_database(self, prefix: str = "t") -> str:
        """A fresh, uniquely named database owned by ``cdc``."""
        name = f"{prefix}{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(CDC_USER)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a test database, its replication slots first (a slot pins its database)."""
        with psycopg.connect(self.superuser_dsn(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                "WHERE database = %s AND active_pid IS NOT NULL",
                (name,),
            )
            for _ in range(50):
                try:
                    conn.execute(
                        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s",
                        (name,),
                    )
                    break
                except psycopg.errors.ObjectInUse:
                    time.sleep(0.1)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return _as_postgres(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.root / "server.log"), *args],
            timeout=timeout,
        )

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection (walsenders included) is dropped."""
        res = self.pg_ctl("restart", "-m", "fast", "-w")
        if res.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {res.stderr or res.stdout}")

    def stop(self) -> None:
        """Stop the server at once and remove its directory."""
        self.pg_ctl("stop", "-m", "immediate", "-w", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join((self.root / "server.log").read_text().splitlines()[-n:])
        except OSError:
            return ""


class ServerStartError(RuntimeError):
    """The private server could not be started (binaries missing, initdb or start failed)."""


def start_private_postgres(
    root: Path | None = None, *, extra_conf: str = "", version: int = DEBIAN_MAJOR, bindir: Path | None = None
) -> PgServer:
    """Start a private PostgreSQL ``version`` (from ``bindir`` when given) in ``root`` (a new temp dir by
    default); also used by the demo and bench."""
    if bindir is None:
        try:
            bindir = bin_dir(version)
        except BinariesError as exc:
            raise ServerStartError(str(exc)) from None
    if not (bindir / "initdb").exists():
        raise ServerStartError(f"PostgreSQL binaries not found in {bindir}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        raise ServerStartError("runuser is needed to run PostgreSQL as the postgres user")
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="cdcstream-pg-"))
    else:
        root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    if os.geteuid() == 0:
        shutil.chown(root, SUPERUSER, SUPERUSER)
    server = PgServer(root=root, port=free_port(), bin_dir=bindir, version=version)
    res = _as_postgres(
        [
            str(bindir / "initdb"),
            "-D",
            str(server.datadir),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
    )
    if res.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ServerStartError(f"initdb failed: {res.stderr.strip()[-500:]}")
    with open(server.datadir / "postgresql.conf", "a") as fh:
        fh.write(_CONF.format(port=server.port, sockdir=server.sockdir))
        fh.write(extra_conf)
    (server.datadir / "pg_hba.conf").write_text(_HBA.format(superuser=SUPERUSER))
    res = server.pg_ctl("start", "-w", "-t", "30")
    if res.returncode != 0:
        tail = server.log_tail()
        shutil.rmtree(root, ignore_errors=True)
        raise ServerStartError(f"PostgreSQL did not start: {res.stderr.strip()[-300:]} {tail[-500:]}")
    server.execute(
        "postgres",
        f"CREATE ROLE {CDC_USER} LOGIN REPLICATION CREATEDB PASSWORD '{CDC_PASSWORD}'",
        superuser=True,
    )
    return server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--pg-versions",
        default=str(DEBIAN_MAJOR),
        help=f"comma-separated PostgreSQL major versions to run the pg_server tests on (of {MAJORS})",
    )


def _versions(config: pytest.Config) -> list[int]:
    raw = str(config.getoption("--pg-versions"))
    try:
        versions = [int(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise pytest.UsageError(f"--pg-versions: {raw!r} is not a list of major versions") from None
    unknown = [v for v in versions if v not in MAJORS]
    if unknown or not versions:
        raise pytest.UsageError(f"--pg-versions: {raw!r}; known versions are {MAJORS}")
    return versions


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    versions = _versions(metafunc.config)
    if "pg_version" in metafunc.fixturenames and versions != [DEBIAN_MAJOR]:
        metafunc.parametrize("pg_version", versions, indirect=True, scope="session", ids=[f"pg{v}" for v in versions])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With other versions than the default, a test over the ``engine`` fixture's MariaDB runs no PostgreSQL
    and would only repeat itself once per version: deselected."""
    if _versions(config) == [DEBIAN_MAJOR]:
        return
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        (drop if callspec is not None and callspec.params.get("engine") == "mariadb" else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def pg_version(request: pytest.FixtureRequest) -> int:
    """The major version of the session's server (``--pg-versions``; 15 by default)."""
    return int(getattr(request, "param", DEBIAN_MAJOR))


@pytest.fixture(scope="session")
def pg_server(pg_version: int) -> Iterator[PgServer]:
    """The session's private PostgreSQL server (one per version with ``--pg-versions``)."""
    yield from running(lambda: start_private_postgres(version=pg_version), ServerStartError)


@dataclass
class PgDb:
    """A fresh database of the private server plus a config factory pointing at it."""

    server: PgServer
    name: str

    def config(self, **overrides: Any) -> PostgresSourceConfig:
        values: dict[str, Any] = {
            "host": self.server.host,
            "port": self.server.port,
            "user": CDC_USER,
            "password": CDC_PASSWORD,
            "database": self.name,
            "slot_name": "cdc_slot",
            "publication": "cdc_pub",
            "sslmode": "disable",
            "heartbeat_interval": 0,
            "status_interval": 1,
            "reconnect_max_delay": 1,
            "connect_timeout": 5,
        }
        values.update(overrides)
        return PostgresSourceConfig(**values)

    def execute(self, query: str, *, superuser: bool = False, params: Any = None) -> list[tuple[Any, ...]]:
        return self.server.execute(self.name, query, superuser=superuser, params=params)

    @property
    def dsn(self) -> str:
        return self.server.dsn(self.name)

    def terminate_walsender(self) -> int:
        """Kill the daemon's replication connection (a dropped connection); returns how many were found."""
        return len(
            self.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'cdcstream'",
                superuser=True,
            )
        )


def fresh_db(server: PgServer) -> Iterator[PgDb]:
    """Body of a database fixture (``yield from fresh_db(server)``): a fresh database of ``server`` owned by
    ``cdc``, dropped (with its slots) after the test."""
    name = server.create_database()
    try:
        yield PgDb(server, name)
    finally:
        # A test that restarted the server may leave it briefly unavailable; the dir is removed anyway.
        with contextlib.suppress(psycopg.Error):
            server.drop_database(name)


@pytest.fixture
def pg_db(pg_server: PgServer) -> Iterator[PgDb]:
    """A fresh database of the session's server, owned by ``cdc``, dropped (with its slots) after the test."""
    yield from fresh_db(pg_server)


PgConfigFactory = Callable[..., PostgresSourceConfig]
