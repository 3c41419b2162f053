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
    def render_copy(
        self, text: bytes, tail: bytes, static_key: str | None, empty_key: str, /
    ) -> tuple[list[str], list[bytes], list[bytes | None]] | None:
        """A full load's records from a block of COPY text-format lines: per row the partition key (with
        ``key_columns``: as render() writes it, ``empty_key`` for an empty one; else ``static_key``), the record
        (``{"data":`` + the data section + ``tail``) and its PutRecords entry (None where the key is over 256
        characters: the sink sends its digest); None where the reference path must render the block."""
    def render_run(
        self, frames: list[bytes], start: int, relid: int, /
    ) -> tuple[int, bytes, list[bytes], list[str] | None, int]:
        """Consecutive row messages of relation ``relid`` from ``frames[start]``, as the decoder's fused path
        renders them one at a time: the index after the run, each row's operation (0 insert, 1 update,
        2 delete), data section and partition key (None without ``key_columns``), and the run's highest walEnd.
        Stops before the first frame the decoder must handle itself."""
