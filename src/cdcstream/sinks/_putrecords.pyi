"""Type stub of the sink's optional compiled extension (_putrecords.c): the PutRecords body builder."""

from cdcstream.records import Record

def put_records_body(head: bytes, records: list[Record], keys: list[str], counts: list[int], /) -> bytes:
    """A PutRecords request body: ``head``, each record's entry (``keys[i]`` owns the next ``counts[i]``
    records), ``]}``; what sinks/putrecords.py's build_plain_body writes, byte for byte."""
