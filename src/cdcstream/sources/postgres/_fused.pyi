"""Type stub of the compiled fused row renderer (_fused.c; design in fused.py)."""

class RowPlan:
    """One relation's compiled row renderer: column kinds, key flags and JSON-encoded output names."""

    def __init__(self, kinds: bytes, keys: bytes, names: tuple[bytes | None, ...], drop_nulls: bool) -> None: ...
    def render(
        self, buf: bytes | bytearray | memoryview, pos: int, key_only: bool, /
    ) -> tuple[bytes, int, tuple[int, ...]] | None:
        """The data section of the TupleData at ``buf[pos:]``, where it ends and the indexes of its unchanged
        TOAST columns; None where the reference path must decode the message."""
