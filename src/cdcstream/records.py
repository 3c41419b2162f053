"""What the mapping hands to a sink: one Kinesis record, already serialised."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Record:
    """A serialised Kinesis record.

    ``seq`` is the pipeline's sequence number (strictly increasing in source order); the sink acknowledges
    records by it and the checkpoint watermark only moves over contiguous acknowledged sequence numbers.
    ``commit_epoch`` is the source commit time (None for control records), for end-to-end lag.
    ``label`` names the table for error messages (e.g. an oversize record).
    ``order_key`` groups records whose relative order must survive retries; it defaults to the partition key.
    A table's control records (TruncateTable, DropTable) share the order key of the table's data records
    when those use one key per table, so a consumer sees them between the rows before and after.
    """

    partition_key: str
    data: bytes
    seq: int = 0
    commit_epoch: float | None = None
    label: str = ""
    order_key: str | None = None
