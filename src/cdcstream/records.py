"""What the mapping hands to a sink: one Kinesis record, already serialised."""

from __future__ import annotations

from binascii import b2a_base64
from dataclasses import dataclass

import orjson


@dataclass(slots=True)
class Record:
    """A serialised Kinesis record.

    ``seq`` is the pipeline's sequence number (strictly increasing in source order); the sink acknowledges
    records by it and the checkpoint watermark only moves over contiguous acknowledged sequence numbers.
    ``commit_epoch`` is the source commit time (None for control records), for end-to-end lag.
    ``label`` names the table for error messages (e.g. an oversize record).
    ``barrier`` marks a record (a table's TruncateTable/DropTable control record) that must reach the stream
    after every record before it and before any record after it, whatever their partition keys: the pipeline
    drains the sink around it, so a consumer sees it between the rows before and after.
    """

    partition_key: str
    data: bytes
    seq: int = 0
    commit_epoch: float | None = None
    label: str = ""
    barrier: bool = False
    #: This record as a PutRecords entry (``{"Data": base64, "PartitionKey": key}``) when a mapping worker
    #: process built it already; the sink builds it otherwise.
    entry: bytes | None = None


def put_records_entry(data: bytes, partition_key: str) -> bytes:
    """A record as one entry of a PutRecords request body: ``{"Data": base64, "PartitionKey": key}``."""
    # One join: one copy of a ~1 KB entry instead of one per concatenation.
    return b"".join(
        (b'{"Data":"', b2a_base64(data, newline=False), b'","PartitionKey":', orjson.dumps(partition_key), b"}")
    )
