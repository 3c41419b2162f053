"""The source engines behind one interface, for test suites that run over both (the ``engine`` fixture).

What differs between PostgreSQL and MariaDB (the SQL dialect, the connection, the daemon's ``[source]``
config, how a session is killed) lives here and nothing else: a suite taking ``engine`` states its logic and its
assertions once, and runs once per engine, as Vector's sink compliance suite serves every sink. Where the engines
behave differently on purpose, the test says so with :meth:`Engine.pick`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pymysql
import pymysql.cursors
import pytest

from tests.support.daemon import Daemon, db_config
from tests.support.mysql import CDC_GRANTS, MyDb
from tests.support.postgres import PgDb

T = TypeVar("T")

#: Runs ``(query, params)`` statements in one transaction; returns the rows each statement affected.
Commit = Callable[..., list[int]]


def keyed(rows: list[dict[str, Any]], key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Source rows (NULLs left out, as the records leave them out) by key, to compare with a replayed stream."""
    out = {}
    for row in rows:
        row = {k: v for k, v in row.items() if v is not None}
        out[tuple(row[c] for c in key)] = row
    return out


class Engine:
    """A source engine with a fresh database of the session's private server (the ``engine`` fixture)."""

    name: str
    schema: str  # the schema part of partition keys and mapping rules
    db: PgDb | MyDb

    def pick(self, *, postgres: T, mariadb: T) -> T:
        """This engine's one of two (its SQL dialect, a size, a behaviour that differs on purpose)."""
        return postgres if self.name == "postgres" else mariadb

    def execute(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.db.execute(query, params=params)

    def run(self, *queries: str) -> None:
        for query in queries:
            self.execute(query)

    def analyze(self, *tables: str) -> None:
        raise NotImplementedError

    def source_rows(self, table: str, key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
        """The table's rows by key, to compare with a replayed stream."""
        raise NotImplementedError

    def transactions(self) -> contextlib.AbstractContextManager[Commit]:
        """A connection for a writer thread; yields ``commit((query, params), ...)``."""
        raise NotImplementedError

    def config(self, tmp_path: Path, endpoint_url: str, stream: str, **config: Any) -> Path:
        """``tmp_path/c.toml`` for this database and ``stream`` (:func:`tests.support.daemon.write_config`'s
        keywords), as the least-privileged ``cdc`` user."""
        return db_config(self.db, tmp_path / "c.toml", endpoint_url, stream, **config)

    def start_daemon(self, endpoint_url: str, stream: str, tmp_path: Path, **config: Any) -> Daemon:
        """The daemon on :meth:`config`, started (not yet ready: :meth:`Daemon.wait_ready`)."""
        daemon = Daemon(self.config(tmp_path, endpoint_url, stream, **config), tmp_path / "daemon.log")
        daemon.start()
        return daemon

    def create_login(self, user: str, password: str) -> None:
        """A user the daemon can stream as, owning (PostgreSQL) or reading (MariaDB) the database's tables."""
        raise NotImplementedError

    def set_password(self, user: str, password: str) -> None:
        raise NotImplementedError

    def drop_login(self, user: str) -> None:
        raise NotImplementedError

    def kill_sessions(self, user: str) -> None:
        """End every session of ``user`` (the daemon's connections drop and it reconnects)."""
        raise NotImplementedError

    def drop_source_connection(self) -> None:
        """End the daemon's replication (binlog dump) connection."""
        raise NotImplementedError


class Postgres(Engine):
    name = "postgres"
    schema = "public"
    db: PgDb

    def __init__(self, db: PgDb) -> None:
        self.db = db

    def analyze(self, *tables: str) -> None:
        self.execute(f"ANALYZE {', '.join(tables)}")

    def source_rows(self, table: str, key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
        rows = self.execute(f"SELECT row_to_json(r_)::text FROM {table} r_")
        return keyed([json.loads(text) for (text,) in rows], key)

    @contextlib.contextmanager
    def transactions(self) -> Iterator[Commit]:
        with psycopg.connect(self.db.dsn, autocommit=True) as conn:

            def commit(*statements: tuple[str, tuple[Any, ...]]) -> list[int]:
                with conn.transaction():
                    return [conn.execute(query, params).rowcount for query, params in statements]

            yield commit

    def create_login(self, user: str, password: str) -> None:
        db = self.db
        db.execute(f"CREATE ROLE {user} LOGIN REPLICATION PASSWORD '{password}'", superuser=True)
        db.execute(f'GRANT ALL ON DATABASE "{db.name}" TO {user}', superuser=True)
        for (table,) in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
            # The owner may add it to the publication; cdc (execute()) keeps writing to it.
            db.execute(f"ALTER TABLE {table} OWNER TO {user}", superuser=True)
            db.execute(f"GRANT ALL ON {table} TO cdc", superuser=True)

    def set_password(self, user: str, password: str) -> None:
        self.db.execute(f"ALTER ROLE {user} PASSWORD '{password}'", superuser=True)

    def drop_login(self, user: str) -> None:
        self.db.execute(f"DROP OWNED BY {user}", superuser=True)
        self.db.server.execute("postgres", f"DROP ROLE {user}", superuser=True)

    def kill_sessions(self, user: str) -> None:
        self.db.execute(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{user}'", superuser=True
        )

    def drop_source_connection(self) -> None:
        self.db.terminate_walsender()


class MariaDb(Engine):
    name = "mariadb"
    db: MyDb

    def __init__(self, db: MyDb) -> None:
        self.db = db
        self.schema = db.name

    def analyze(self, *tables: str) -> None:
        self.execute(f"ANALYZE TABLE {', '.join(tables)}")

    def source_rows(self, table: str, key: tuple[str, ...]) -> dict[tuple[Any, ...], dict[str, Any]]:
        conn = self.db.connect()
        try:
            with conn.cursor(pymysql.cursors.DictCursor) as cur:
                cur.execute(f"SELECT * FROM `{table}`")
                return keyed(list(cur.fetchall()), key)
        finally:
            conn.close()

    @contextlib.contextmanager
    def transactions(self) -> Iterator[Commit]:
        conn = self.db.connect(autocommit=False)
        try:
            with conn.cursor() as cur:

                def commit(*statements: tuple[str, tuple[Any, ...]]) -> list[int]:
                    counts = [cur.execute(query, params) for query, params in statements]
                    conn.commit()
                    return counts

                yield commit
        finally:
            conn.close()

    def create_login(self, user: str, password: str) -> None:
        self.db.server.execute(f"CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")
        self.db.server.execute(f"GRANT {CDC_GRANTS} ON *.* TO '{user}'@'127.0.0.1'")

    def set_password(self, user: str, password: str) -> None:
        self.db.server.execute(f"ALTER USER '{user}'@'127.0.0.1' IDENTIFIED BY '{password}'")

    def drop_login(self, user: str) -> None:
        self.db.server.execute(f"DROP USER '{user}'@'127.0.0.1'")

    def kill_sessions(self, user: str) -> None:
        self._kill(f"user = '{user}'")

    def drop_source_connection(self) -> None:
        self._kill("user = 'cdc' AND command LIKE 'Binlog Dump%'")

    def _kill(self, where: str) -> None:
        for (pid,) in self.db.server.execute(f"SELECT id FROM information_schema.processlist WHERE {where}"):
            with contextlib.suppress(pymysql.err.MySQLError):  # gone meanwhile
                self.db.server.execute(f"KILL {pid}")


@pytest.fixture(params=["postgres", "mariadb"])
def engine(request: pytest.FixtureRequest, pg_version: int) -> Engine:
    """Each test taking it runs over a fresh PostgreSQL database and a fresh MariaDB database (``pg_version`` is
    named so that ``--pg-versions`` parametrizes these tests too; the MariaDB ones are then deselected)."""
    del pg_version
    if request.param == "postgres":
        return Postgres(request.getfixturevalue("pg_db"))
    return MariaDb(request.getfixturevalue("my_db"))
