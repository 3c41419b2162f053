"""Type stub of the mapping workers' compiled answers (_frames.c; design in frames.py)."""

from typing_extensions import Buffer

from cdcstream.records import Record

def pack(keys: list[str], datas: list[bytes], entries: list[bytes], /) -> bytes:
    """One frame of a chunk's records: each partition key, data and PutRecords entry with its length."""

def records(frame: Buffer, prototype: Record, /) -> list[Record]:
    """The frame's records: copies of ``prototype`` with each packed key, data and entry."""
