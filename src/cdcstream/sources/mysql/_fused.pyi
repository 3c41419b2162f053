"""Type stub of the compiled fused row-image renderer (_fused.c; design in fused.py)."""

class ImagePlan:
    """One table version's compiled row-image renderer: column kinds and JSON-encoded output names."""

    def __init__(
        self,
        columns: tuple[tuple[int, int, int], ...],
        names: tuple[bytes | None, ...],
        drop_nulls: bool,
        key_columns: tuple[int, ...] = ...,
        key_prefix: bytes = ...,
    ) -> None: ...
    def render(
        self, buf: bytes | bytearray | memoryview, pos: int, end: int, update: bool, /
    ) -> tuple[list[tuple[bytes, str | None]], int]:
        """The data sections (and partition keys, with ``key_columns``) of the rows of ``buf[pos:end]``, up to the
        end or the first row not rendered here, and where it stopped (that row's start)."""
