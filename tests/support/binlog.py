"""Binlog events without a server, for fuzzing the MySQL converter (tests/unit/test_fuzz_mysql.py and the
atheris harness scripts/fuzz_mysql_rows.py): python-mysql-replication's event classes with only the attributes
:class:`~cdcstream.sources.mysql.reader.EventConverter` reads, and a packet that hands out a given body."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pymysqlreplication.row_event import UpdateRowsEvent

from cdcstream.sources.mysql.reader import EventConverter

TABLE_ID = 7
LOG_POS = 4096  # the position after every fake event (errors must name it)


@dataclass
class Col:
    """The attributes of python-mysql-replication's Column that the converters and fastrows read."""

    type: int
    name: str = "c"
    unsigned: bool = False
    character_set_name: str | None = None
    fsp: int = 0
    set_values: list[str] | None = None
    enum_values: list[str] | None = None
    precision: int = 10
    decimals: int = 2
    size: int = 1
    max_length: int = 255
    length_size: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Table:
    """A table map entry."""

    schema: str
    table: str
    columns: list[Col]
    primary_key: Any = None


class Packet:
    """What the converter reads of a binlog packet: the position after the event and the event body."""

    def __init__(self, body: bytes, log_pos: int) -> None:
        self.body = body
        self.log_pos = log_pos
        self.read_bytes = 0

    def read(self, n: int) -> bytes:
        out = self.body[self.read_bytes : self.read_bytes + n]
        self.read_bytes += n
        return out


def converter() -> EventConverter:
    """A converter selecting every table, at ``bin.000001``."""
    return EventConverter(
        selector=lambda _s, _t: True, no_hex_prefix=False, mariadb=True, file="bin.000001", pos=4, gtid=None
    )


def row_event(cls: type, ncols: int, body: bytes) -> Any:
    """A row event of ``cls`` with a FULL image of ``ncols`` columns of table TABLE_ID and the row images ``body``."""
    ev = cls.__new__(cls)
    full = b"\xff" * ((ncols + 7) // 8)
    if ncols % 8:
        full = full[:-1] + bytes([(1 << (ncols % 8)) - 1])
    ev.table_id = TABLE_ID
    ev.number_of_columns = ncols
    ev.columns_present_bitmap = full
    ev.columns_present_bitmap2 = full if cls is UpdateRowsEvent else None
    ev.complete = True
    ev.timestamp = 1_700_000_000
    ev.event_size = len(body)
    ev.packet = Packet(body, LOG_POS)
    return ev
