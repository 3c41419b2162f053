"""MySQL / MariaDB source: the binary log (read by :mod:`.binlog`) on a dedicated reader thread, and the full load."""

from __future__ import annotations

from cdcstream.sources.mysql.source import MySQLSource

__all__ = ["MySQLSource"]
