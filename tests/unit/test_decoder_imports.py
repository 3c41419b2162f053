"""The sans-IO decoders load without their engine's driver or source: a tool or a test that only decodes (a
binlog file, pgoutput frames) needs neither psycopg nor PyMySQL, nor a connection's worth of modules."""

from __future__ import annotations

import subprocess
import sys

DECODERS = (
    "cdcstream.sources.postgres.pgoutput",
    "cdcstream.sources.postgres.decoder",
    "cdcstream.sources.mysql.binlog.events",
    "cdcstream.sources.mysql.binlog.tablemap",
    "cdcstream.sources.mysql.binlog.rowevents",
    "cdcstream.sources.mysql.binlog.compression",
)
HEAVY = ("psycopg", "pymysql", "cdcstream.sources.postgres.source", "cdcstream.sources.mysql.source")


def test_decoders_load_no_driver_and_no_source() -> None:
    code = (
        "import importlib, sys\n"
        f"for name in {DECODERS!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_sources_are_still_found_by_their_package() -> None:
    from cdcstream.sources.mysql import MySQLSource
    from cdcstream.sources.postgres import PostgresSource

    assert MySQLSource.__module__ == "cdcstream.sources.mysql.source"
    assert PostgresSource.__module__ == "cdcstream.sources.postgres.source"
