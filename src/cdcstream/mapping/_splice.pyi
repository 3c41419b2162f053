"""Type stub of the compiled extension (_splice.c): a run's records (Mapper._fused_run, mapping/envelope.py)."""

from typing import TypeVar

_T = TypeVar("_T")

def splice_records(datas: list[bytes], ops: bytes, mids: tuple[bytes, bytes, bytes], first_rid: int, /) -> list[bytes]:
    """A run's records: ``{"data":`` + data + ``mids[op]`` + the record id (10 digits at least) + ``"}}`` and a
    newline per row, record ids counting up from ``first_rid``."""

def clone_records(prototype: _T, keys: list[str] | str, datas: list[bytes], /) -> list[_T]:
    """One object like ``prototype`` (of a class with ``__slots__`` only, such as ``records.Record``) per data
    section, with that data section and its key (``keys[i]``, or ``keys`` for every one) in its ``data`` and
    ``partition_key`` slots and the prototype's other values."""
