"""Every Prometheus metric cdcstream exports, defined in one place.

Conventions (Prometheus naming practice): prefix ``cdcstream_``, base units,
counters end in ``_total`` (prometheus-client adds the suffix), timestamps rather than ages (ages are
``time() - x`` in PromQL), bounded labels only, and known label combinations pre-created (:func:`precreate`) so
a series exists at 0 before its first event instead of being missing.

Hot-path rule: code that runs per row or per record keeps the labelled child (``METRIC.labels(...)``) it needs
in an attribute and calls ``inc``/``observe`` on it; it never calls ``.labels()`` per row. Values the pipeline
already tracks as plain integers (queue depth, pushed/popped records) are read at scrape time through
:class:`CallbackCollector` instead of being updated on every record.

Labels: ``source`` is ``<engine>:<database>``; ``stream`` the Kinesis stream name; ``table`` is
``schema.table`` (empty when ``[http] metrics_table_label = false``, for databases with very many tables).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from cdcstream import __version__

# --- build ---------------------------------------------------------------------------------------------------
BUILD_INFO = Gauge("cdcstream_build_info", "Build metadata (always 1).", ["version", "python", "source_kind"])

# --- source -------------------------------------------------------------------------------------------------
SOURCE_CONNECTED = Gauge("cdcstream_source_connected", "1 while the replication connection is up.", ["source"])
SOURCE_RECONNECTS = Counter(
    "cdcstream_source_reconnects", "Reconnect attempts after a dropped source connection.", ["source"]
)
SOURCE_EVENTS = Counter(
    "cdcstream_source_events", "Change events read from the source.", ["source", "table", "operation"]
)
SOURCE_TRANSACTIONS = Counter("cdcstream_source_transactions", "Committed transactions read.", ["source"])
# DDL the source could not turn into control records (logged with the statement); the rows around it are still
# captured, only the control record is missing, so an increase deserves a look rather than a page.
SOURCE_DDL_SKIPPED = Counter(
    "cdcstream_source_ddl_skipped",
    "DDL statements (MySQL) or DDL capture messages (PostgreSQL) not understood and skipped.",
    ["source"],
)
SOURCE_LAG_SECONDS = Gauge(
    "cdcstream_source_lag_seconds",
    "Read lag: now minus the commit time of the newest change read, when it was read (0 after a heartbeat). "
    "It says nothing about delivery: see cdcstream_delivery_lag_seconds.",
    ["source"],
)
# Read at scrape time from the pipeline's watermark (Pipeline._delivery_lag): what the lag alerts and /readyz use.
DELIVERY_LAG_SECONDS = Gauge(
    "cdcstream_delivery_lag_seconds",
    "Delivery lag: now minus the commit time of the oldest change read and not yet acknowledged by Kinesis "
    "(for full-load rows, the time they were read); the read lag when every change read is acknowledged.",
    ["source"],
)
SOURCE_LAST_EVENT_TIMESTAMP = Gauge(
    "cdcstream_source_last_event_timestamp_seconds",
    "Wall-clock time the last change, heartbeat or keepalive was read.",
    ["source"],
)
SOURCE_COMMIT_TIMESTAMP = Gauge(
    "cdcstream_source_commit_timestamp_seconds",
    "Source commit time of the newest transaction read.",
    ["source"],
)
# Filled by the lag probe (telemetry/probe.py) from Source.lag_probe(); a source that cannot measure one
# leaves it absent rather than 0, so alerts do not mistake "unknown" for "fine".
SOURCE_LAG_BYTES = Gauge(
    "cdcstream_source_lag_bytes",
    "Bytes of source log between the confirmed (acknowledged) position and the log end.",
    ["source"],
)
SOURCE_RETAINED_WAL_BYTES = Gauge(
    "cdcstream_source_retained_wal_bytes",
    "PostgreSQL: WAL the replication slot pins on the server's disk (current LSN minus restart_lsn).",
    ["source"],
)
SOURCE_SLOT_SAFE_WAL_BYTES = Gauge(
    "cdcstream_source_slot_safe_wal_bytes",
    "PostgreSQL: WAL that can still be written before the slot is invalidated (safe_wal_size; absent when "
    "max_slot_wal_keep_size is unlimited).",
    ["source"],
)
SOURCE_PROBE_TIMESTAMP = Gauge(
    "cdcstream_source_probe_timestamp_seconds",
    "Wall-clock time of the last successful lag probe (the byte gauges are as old as this).",
    ["source"],
)

# Which server the source reads: one series at 1, replaced when the server changes (a failover followed by GTID,
# or another server behind the same address), so a dashboard shows the switch. Labels are bounded: one set per
# source at a time.
SOURCE_SERVER_INFO = Gauge(
    "cdcstream_source_server_info",
    "The server the source reads (always 1): MySQL/MariaDB server_id, MySQL server_uuid, MariaDB gtid_domain_id; "
    "PostgreSQL's system identifier as server_id.",
    ["source", "server_id", "server_uuid", "gtid_domain"],
)
# PostgreSQL: the timeline of the server read (its system identifier is server_id above). A promotion moves it up,
# so a step in this series is a failover (or a point-in-time restore).
SOURCE_TIMELINE = Gauge(
    "cdcstream_source_timeline",
    "PostgreSQL: the timeline of the server the source reads; it grows by one at each promotion.",
    ["source"],
)
# PostgreSQL: the replication connection is up but has received nothing while the server's WAL grew (e.g. a
# walsender waiting for synchronized_standby_slots that no standby confirms); 0 while the stream moves.
SOURCE_STALLED_SECONDS = Gauge(
    "cdcstream_source_stalled_seconds",
    "PostgreSQL: seconds the connected replication stream has received nothing while the server's WAL grew "
    "(0: it moves).",
    ["source"],
)

# PostgreSQL 17+ with a failover slot and a multi-host ``host``: per other server of the list that is a standby,
# whether it holds the slot synced and sync-ready. A slot not sync-ready is dropped when that standby is promoted,
# and capture then ends (exit 3): 0 says a failover now would end it. Labels are bounded by the host list.
SOURCE_STANDBY_SLOT_READY = Gauge(
    "cdcstream_source_standby_slot_ready",
    "PostgreSQL 17+: 1 when this standby of the host list holds the failover slot synced and sync-ready, 0 when a "
    "promotion of it now would end capture.",
    ["source", "server"],
)

# Selected tables whose changes cannot reach the stream (PostgreSQL: not in the publication, e.g. created while
# CDC runs without DDL capture; unlogged; partitions published under names the mapping does not select). Each
# one is named in the log and in /status; always 0 for MySQL/MariaDB, whose binlog carries every table.
SOURCE_UNCAPTURED_TABLES = Gauge(
    "cdcstream_source_uncaptured_tables",
    "Selected tables whose changes cannot reach the stream (named in the log and /status).",
    ["source"],
)

#: Keys of ``Source.lag_probe()`` results and the gauge each one sets.
PROBE_GAUGES: dict[str, Gauge] = {
    "lag_bytes": SOURCE_LAG_BYTES,
    "retained_wal_bytes": SOURCE_RETAINED_WAL_BYTES,
    "safe_wal_bytes": SOURCE_SLOT_SAFE_WAL_BYTES,
}

# --- full load (sources/fullload.py) --------------------------------------------------------------------------
FULL_LOAD_ROWS = Counter("cdcstream_full_load_rows", "Rows read by the full load (handed to the pipeline).", ["source"])
FULL_LOAD_TABLES = Gauge("cdcstream_full_load_tables", "Tables of the full load, by state.", ["source", "state"])
FULL_LOAD_STATES = ("pending", "loading", "loaded", "errored")
FULL_LOAD_PROGRESS = Gauge(
    "cdcstream_full_load_progress_ratio",
    "Full-load progress: rows copied / estimated rows over all tables (0..1; 1 once every table is loaded).",
    ["source"],
)
# reload --table (a re-copy of one table while CDC runs): finished copies by outcome. A failed one is logged and
# shown in /status; CDC of every table goes on, and it is not retried by itself (request it again).
RELOADS = Counter(
    "cdcstream_reloads", "reload --table copies finished, by outcome (done, failed).", ["source", "outcome"]
)
RELOAD_OUTCOMES = ("done", "failed")

# --- control plane (telemetry/control.py) -----------------------------------------------------------------
CONTROL_REQUESTS = Counter(
    "cdcstream_control_requests",
    "Control requests (POST /reload) by outcome: accepted, refused (invalid request), denied (no or wrong token, "
    "or from a web browser).",
    ["outcome"],
)
CONTROL_OUTCOMES = ("accepted", "refused", "denied")

# --- sink ---------------------------------------------------------------------------------------------------
SINK_CONNECTED = Gauge(
    "cdcstream_sink_connected",
    "1 while Kinesis answers (the stream was described at start, and the last request got an answer, even an "
    "error); 0 while the daemon waits for it at start or its requests fail without one (connection errors, "
    "timeouts).",
    ["stream"],
)
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
    # From 5 ms: a healthy pipeline acknowledges within a request's round trip plus linger_ms (tens of ms), and a
    # p99 goal of 100 ms needs buckets below it; up to an hour for outages.
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
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
ERRORS = Counter("cdcstream_errors", "Errors by pipeline stage and error type.", ["stage", "error_type"])

#: Error types counted while retrying (so the error-rate alert sees outages the daemon rides out) and at a
#: fatal stop; pre-created at 0.
KNOWN_ERRORS = (
    ("receiving", "SourceConnectionError"),
    ("receiving", "SourceError"),
    ("processing", "MappingError"),
    ("sending", "SinkRetriableError"),
    ("sending", "SinkError"),
    ("checkpointing", "CheckpointError"),
)
#: Per-entry PutRecords error codes known in advance (the sink adds children for others as they appear).
THROTTLE_CODES = ("ProvisionedThroughputExceededException", "KMSThrottlingException")
FAILURE_CODES = ("InternalFailure",)

_table_label = True


def configure(*, table_label: bool) -> None:
    """Process-wide switches from ``[http]``: call before the source is built."""
    global _table_label
    _table_label = table_label


def table_value(schema: str, table: str) -> str:
    """The ``table`` label value for a table: ``schema.table``, or empty when the label is switched off."""
    return f"{schema}.{table}" if _table_label else ""


def precreate(*, source: str, source_kind: str, stream: str) -> None:
    """Create the known label combinations at 0, so dashboards and alerts see series before the first event."""
    BUILD_INFO.labels(__version__, platform.python_version(), source_kind).set(1)
    for m in (
        SOURCE_CONNECTED,
        SOURCE_RECONNECTS,
        SOURCE_TRANSACTIONS,
        SOURCE_DDL_SKIPPED,
        SOURCE_LAG_SECONDS,
        SOURCE_LAST_EVENT_TIMESTAMP,
        SOURCE_COMMIT_TIMESTAMP,
        CHECKPOINT_TIMESTAMP,
        CHECKPOINT_POSITION_TIMESTAMP,
        FULL_LOAD_ROWS,
        SOURCE_UNCAPTURED_TABLES,
    ):
        m.labels(source)
    for outcome in RELOAD_OUTCOMES:
        RELOADS.labels(source, outcome)
    for outcome in CONTROL_OUTCOMES:
        CONTROL_REQUESTS.labels(outcome)
    for outcome in ("ok", "error"):
        CHECKPOINT_WRITES.labels(source, outcome)
    for state in FULL_LOAD_STATES:
        FULL_LOAD_TABLES.labels(source, state).set(0)
    FULL_LOAD_PROGRESS.labels(source)
    for stage, error_type in KNOWN_ERRORS:
        ERRORS.labels(stage, error_type)
    for c in (RECORDS_SENT, RECORD_BYTES_SENT, DEAD_LETTER_RECORDS):
        c.labels(stream)
    for h in (BATCH_RECORDS, END_TO_END_LAG):
        h.labels(stream)
    INFLIGHT_RECORDS.labels(stream)
    SINK_CONNECTED.labels(stream)
    for outcome in ("ok", "partial", "error"):
        PUT_LATENCY.labels(stream, outcome)
    for reason in ("throttle", "partial", "request_error"):
        RETRIES.labels(stream, reason)
    for code in THROTTLE_CODES:
        THROTTLED_RECORDS.labels(stream, code)
    for code in FAILURE_CODES:
        FAILED_RECORDS.labels(stream, code)


class CallbackCollector(Collector):
    """Queue metrics read at scrape time from the pipeline's own counters (no per-record metric updates).

    ``stages`` maps a stage name to a callable returning ``(depth, capacity, pushed, popped)``.
    """

    def __init__(self) -> None:
        self.stages: dict[str, Callable[[], tuple[int, int, int, int]]] = {}

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily("cdcstream_queue_depth", "Items waiting in a pipeline queue.", labels=["stage"])
        cap = GaugeMetricFamily("cdcstream_queue_capacity", "Capacity of a pipeline queue.", labels=["stage"])
        pushed = CounterMetricFamily("cdcstream_queue_pushed", "Items put into a pipeline queue.", labels=["stage"])
        popped = CounterMetricFamily("cdcstream_queue_popped", "Items taken out of a pipeline queue.", labels=["stage"])
        for stage, read in self.stages.items():
            d, c, pu, po = read()
            depth.add_metric([stage], d)
            cap.add_metric([stage], c)
            pushed.add_metric([stage], pu)
            popped.add_metric([stage], po)
        yield from (depth, cap, pushed, popped)

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # Describing without collecting keeps registration free of side effects (the stages come later).
        yield GaugeMetricFamily("cdcstream_queue_depth", "", labels=["stage"])
        yield GaugeMetricFamily("cdcstream_queue_capacity", "", labels=["stage"])
        yield CounterMetricFamily("cdcstream_queue_pushed", "", labels=["stage"])
        yield CounterMetricFamily("cdcstream_queue_popped", "", labels=["stage"])


QUEUES = CallbackCollector()
REGISTRY.register(QUEUES)
