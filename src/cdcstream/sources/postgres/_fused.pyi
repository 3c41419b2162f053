"""Type stub of the compiled extension (_fused.c): the fused row renderer (design in fused.py)."""

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
