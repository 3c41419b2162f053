"""Type stub of the sink's optional compiled extension (_putrecords.c): the PutRecords body builder and the
batcher's run of records."""

from collections import deque

from cdcstream.records import Record

def put_records_body(head: bytes, records: list[Record], keys: list[str], counts: list[int], /) -> bytes:
    """A PutRecords request body: ``head``, each record's entry (``keys[i]`` owns the next ``counts[i]``
    records), ``]}``; what sinks/putrecords.py's build_plain_body writes, byte for byte."""

def add_run(
    records: list[Record],
    start: int,
    stop: int,
    max_size: int,
    room: int,
    overhead: int,
    queues: dict[str, deque[Record]],
    fresh: dict[str, Record],
    in_flight: set[str],
    /,
) -> tuple[int, int, int, int, int]:
    """The common cases of sinks/batching.py's Batcher.add_run in C: ``(end, nbytes, fresh_bytes, new_key, rare)``."""
