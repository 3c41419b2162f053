"""PostgreSQL source: logical decoding (pgoutput proto v1) over the streaming replication protocol.

The package loads nothing until a name is asked for: ``import cdcstream.sources.postgres.pgoutput`` (a sans-IO
decoder) brings neither psycopg nor the source with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdcstream.sources.postgres.source import PostgresSource

__all__ = ["PostgresSource"]


def __getattr__(name: str) -> Any:
    if name == "PostgresSource":
        from cdcstream.sources.postgres.source import PostgresSource

        return PostgresSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
