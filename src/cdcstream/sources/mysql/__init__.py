"""MySQL / MariaDB source: the binary log (read by :mod:`.binlog`) on a dedicated reader thread, and the full load.

The package loads nothing until a name is asked for: ``import cdcstream.sources.mysql.binlog.events`` (a sans-IO
decoder) brings neither PyMySQL nor the source with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cdcstream.sources.mysql.source import MySQLSource

__all__ = ["MySQLSource"]


def __getattr__(name: str) -> Any:
    if name == "MySQLSource":
        from cdcstream.sources.mysql.source import MySQLSource

        return MySQLSource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
