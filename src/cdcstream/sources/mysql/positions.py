"""Binlog coordinates (file, offset) and the order the binlog gives them.

File names do not sort as text once their sequence number outgrows six digits (``.999999`` is followed by
``.1000000``), so every comparison of positions goes through :class:`BinlogPos`.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class BinlogPos(NamedTuple):
    """A binlog coordinate that orders as the binlog does: by the file's sequence number, then the offset."""

    number: int
    pos: int
    file: str

    def __str__(self) -> str:
        return f"{self.file}:{self.pos}"


def binlog_pos(file: str, pos: int) -> BinlogPos:
    """The :class:`BinlogPos` of ``file`` (``base.000042``) and offset ``pos``."""
    suffix = file.rpartition(".")[2]
    return BinlogPos(int(suffix) if suffix.isdigit() else -1, pos, file)


def position_of(checkpoint: dict[str, Any]) -> BinlogPos:
    """The binlog position of a checkpoint, or of a snapshot's position (``file`` and ``pos`` keys)."""
    return binlog_pos(str(checkpoint["file"]), int(checkpoint["pos"]))
