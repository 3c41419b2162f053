"""Type stub of the compiled extension (_fused.c): the fused row renderer (design in fused.py) and the PutRecords
body builder (sinks/putrecords.py)."""

from cdcstream.records import Record

class RowPlan:
    """One relation's compiled row renderer: column kinds, key flags and JSON-encoded output names."""

    def __init__(
        self,
        kinds: bytes,
        keys: bytes,
        names: tuple[bytes | None, ...],
        drop_nulls: bool,
        key_columns: tuple[int, ...] = ...,
        key_prefix: bytes = ...,
    ) -> None: ...
    def render(
        self, buf: bytes | bytearray | memoryview, pos: int, key_only: bool, /
    ) -> tuple[bytes, int, tuple[int, ...], str | None] | None:
        """The data section of the TupleData at ``buf[pos:]``, where it ends, the indexes of its unchanged
        TOAST columns and the partition key (with ``key_columns``: the prefix and the key parts joined by
        dots); None where the reference path must decode the message."""

def put_records_body(head: bytes, records: list[Record], keys: list[str], counts: list[int], /) -> bytes:
    """A PutRecords request body: ``head``, each record's entry (``keys[i]`` owns the next ``counts[i]``
    records), ``]}``; what sinks/putrecords.py's build_plain_body writes, byte for byte."""
