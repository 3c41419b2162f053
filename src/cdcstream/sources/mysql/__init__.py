"""MySQL / MariaDB source: the binary log through python-mysql-replication, on a dedicated reader thread."""

from __future__ import annotations

from cdcstream.sources.mysql.source import MySQLSource

__all__ = ["MySQLSource"]
