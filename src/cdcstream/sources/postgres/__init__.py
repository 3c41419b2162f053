"""PostgreSQL source: logical decoding (pgoutput proto v1) over the streaming replication protocol."""

from __future__ import annotations

from cdcstream.sources.postgres.source import PostgresSource

__all__ = ["PostgresSource"]
