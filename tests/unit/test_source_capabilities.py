"""The optional capabilities each source declares, as the pipeline finds them (``isinstance`` with the Protocols
next to ``Source``): a method renamed in one engine would otherwise just switch its feature off."""

from __future__ import annotations

from cdcstream.config import MySQLSourceConfig, PostgresSourceConfig
from cdcstream.sources import (
    SupportsAliveAt,
    SupportsLagProbe,
    SupportsReadLag,
    SupportsReload,
    SupportsStartCheckpoint,
)
from cdcstream.sources.mysql import MySQLSource
from cdcstream.sources.postgres import PostgresSource

EVERY_ENGINE = (SupportsReload, SupportsLagProbe, SupportsAliveAt, SupportsReadLag)


def test_postgres_offers_every_capability_but_the_start_checkpoint() -> None:
    src = PostgresSource(PostgresSourceConfig(engine="postgres", host="127.0.0.1", user="u", database="d"))
    for capability in EVERY_ENGINE:
        assert isinstance(src, capability), capability.__name__
    assert not isinstance(src, SupportsStartCheckpoint)  # its slot holds the start position


def test_mysql_offers_every_capability() -> None:
    src = MySQLSource(MySQLSourceConfig(engine="mysql", host="127.0.0.1", user="u", server_id=7))
    # the watchdog stamp too: an idle server's heartbeats yield no batch, so only the stamp shows the loop turning
    for capability in (*EVERY_ENGINE, SupportsStartCheckpoint):
        assert isinstance(src, capability), capability.__name__
