"""The optional capabilities each source declares, as the pipeline finds them (``isinstance`` with the Protocols
next to ``Source``): a method renamed in one engine would otherwise just switch its feature off."""

from __future__ import annotations

from cdcstream.config import MySQLSourceConfig, PostgresSourceConfig
from cdcstream.sources import SupportsAliveAt, SupportsLagProbe, SupportsReadLag, SupportsReload
from cdcstream.sources.mysql import MySQLSource
from cdcstream.sources.postgres import PostgresSource


def test_postgres_offers_every_capability() -> None:
    src = PostgresSource(PostgresSourceConfig(engine="postgres", host="127.0.0.1", user="u", database="d"))
    for capability in (SupportsReload, SupportsLagProbe, SupportsAliveAt, SupportsReadLag):
        assert isinstance(src, capability), capability.__name__


def test_mysql_offers_all_but_the_watchdog_stamp() -> None:
    src = MySQLSource(MySQLSourceConfig(engine="mysql", host="127.0.0.1", user="u", server_id=7))
    for capability in (SupportsReload, SupportsLagProbe, SupportsReadLag):
        assert isinstance(src, capability), capability.__name__
    assert not isinstance(src, SupportsAliveAt)  # its heartbeats arrive as batches, which stamp the read loop
