"""Every Prometheus metric cdcstream exports, defined in one place.

Conventions (Prometheus naming practice): prefix ``cdcstream_``, base units, counters end in ``_total``
(prometheus-client adds the suffix), timestamps rather than ages, bounded labels only.
"""

from __future__ import annotations

import platform

from prometheus_client import Counter, Gauge, Histogram, Info

from cdcstream import __version__

BUILD_INFO = Info("cdcstream_build", "Build metadata.")
BUILD_INFO.info({"version": __version__, "python": platform.python_version()})

# --- source -------------------------------------------------------------------------------------------------
SOURCE_CONNECTED = Gauge("cdcstream_source_connected", "1 while the replication connection is up.", ["source"])
SOURCE_RECONNECTS = Counter(
    "cdcstream_source_reconnects", "Reconnect attempts after a dropped source connection.", ["source"]
)
SOURCE_EVENTS = Counter(
    "cdcstream_source_events", "Change events read from the source.", ["source", "table", "operation"]
)
SOURCE_TRANSACTIONS = Counter("cdcstream_source_transactions", "Committed transactions read.", ["source"])
SOURCE_LAG_SECONDS = Gauge(
    "cdcstream_source_lag_seconds",
    "Now minus the commit time of the newest change or heartbeat read (about 0 when idle with heartbeats).",
    ["source"],
)
SOURCE_LAST_EVENT_TIMESTAMP = Gauge(
    "cdcstream_source_last_event_timestamp_seconds",
    "Wall-clock time the last change, heartbeat or keepalive was read.",
    ["source"],
)
SOURCE_LAG_BYTES = Gauge(
    "cdcstream_source_lag_bytes",
    "Bytes of source log between the confirmed position and the log end.",
    ["source"],
)

# --- sink ---------------------------------------------------------------------------------------------------
RECORDS_SENT = Counter("cdcstream_records_sent", "Records accepted by Kinesis.", ["stream"])
RECORD_BYTES_SENT = Counter(
    "cdcstream_record_bytes_sent", "Payload bytes (data + partition key) accepted by Kinesis.", ["stream"]
)
PUT_LATENCY = Histogram(
    "cdcstream_sink_request_duration_seconds",
    "PutRecords request latency by outcome (ok, partial, error).",
    ["stream", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
BATCH_RECORDS = Histogram(
    "cdcstream_sink_batch_records",
    "Records per PutRecords request.",
    ["stream"],
    buckets=(1, 5, 10, 25, 50, 100, 250, 500),
)
THROTTLED_RECORDS = Counter(
    "cdcstream_sink_throttled_records",
    "Entries rejected for throughput (to be retried).",
    ["stream", "error_code"],
)
SHARD_THROTTLED_RECORDS = Counter(
    "cdcstream_sink_shard_throttled_records",
    "Entries rejected for throughput, by the shard the partition key maps to.",
    ["stream", "shard"],
)
FAILED_RECORDS = Counter(
    "cdcstream_sink_failed_records",
    "Entries rejected for other reasons (to be retried).",
    ["stream", "error_code"],
)
RETRIES = Counter("cdcstream_sink_retries", "Records resent, by reason.", ["stream", "reason"])
INFLIGHT_RECORDS = Gauge("cdcstream_inflight_records", "Records in PutRecords requests awaiting an answer.", ["stream"])
DEAD_LETTER_RECORDS = Counter(
    "cdcstream_dead_letter_records",
    "Oversize records written to the dead-letter file (oversize_policy = dead-letter) instead of the stream.",
    ["stream"],
)
END_TO_END_LAG = Histogram(
    "cdcstream_end_to_end_lag_seconds",
    "Source commit to Kinesis acknowledgement, per request (oldest record in it).",
    ["stream"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)

# --- checkpoints and pipeline -------------------------------------------------------------------------------
CHECKPOINT_TIMESTAMP = Gauge(
    "cdcstream_checkpoint_commit_timestamp_seconds",
    "Wall-clock time the last checkpoint was persisted.",
    ["source"],
)
CHECKPOINT_POSITION_TIMESTAMP = Gauge(
    "cdcstream_checkpoint_position_commit_timestamp_seconds",
    "Source commit time of the transaction at the checkpointed position.",
    ["source"],
)
CHECKPOINT_WRITES = Counter("cdcstream_checkpoint_writes", "Checkpoint writes by outcome.", ["source", "outcome"])
QUEUE_DEPTH = Gauge("cdcstream_queue_depth", "Items waiting in a pipeline queue.", ["stage"])
QUEUE_CAPACITY = Gauge("cdcstream_queue_capacity", "Capacity of a pipeline queue.", ["stage"])
ERRORS = Counter("cdcstream_errors", "Errors by pipeline stage and error type.", ["stage", "error_type"])
