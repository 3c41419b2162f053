"""The configuration file: one TOML document validated by pydantic.

Unknown keys are rejected and every error names the file and the key. Secrets are ``SecretStr`` so they never
appear in ``repr``, logs or ``/status``; they can come from the file, a ``*_file`` path, ``$CREDENTIALS_DIRECTORY``
(systemd ``LoadCredential=``) or an environment variable (``CDCSTREAM_SOURCE_PASSWORD``).

Over 500 lines on purpose: the file's whole schema, one model per section, so every key and its check read in one
place, as docs/configuration.md lists them.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from cdcstream.errors import ConfigError

#: Upper bound of every duration in seconds: larger values pass for numbers but overflow timers at run time.
DAY = 86_400.0


#: Why a text value must not hold a NUL: libpq reads its connection string up to the first one, so a password
#: "a\0b" would silently become "a" and every attempt fail as a wrong password, forever.
_NUL = "contains a NUL character (\\u0000), which no connection string, name or path can hold"


class _Section(BaseModel):
    # allow_inf_nan: `inf` is valid TOML and would pass `gt=0`, to fail only at the first timer it reaches.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                texts = value if isinstance(value, list) else [value]
                if any(isinstance(text, str) and "\x00" in text for text in texts):
                    raise ValueError(f"{key}: {_NUL}")  # the key, never the value (it may be the password)
        return data


def _read_secret(path: str, key: str) -> SecretStr:
    try:
        text = Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ValueError(f"cannot read {key} {path!r}: {reason}") from None
    if "\x00" in text:
        raise ValueError(f"{key} {path!r} {_NUL}")
    return SecretStr(text)


def _check_host(value: str) -> str:
    """A host name must be encodable for DNS (each label 1-63 characters); PostgreSQL also takes a socket
    directory (``/run/postgresql``) and a comma-separated list. Otherwise the name fails deep in a resolver."""
    for part in value.split(","):
        if part.startswith("/"):
            continue
        try:
            part.encode("idna")
        except UnicodeError:
            raise ValueError(f"{part!r} is not a host name (labels of 1 to 63 letters, digits or -)") from None
    return value


class PostgresSourceConfig(_Section):
    """``[source]`` with ``engine = "postgres"``."""

    engine: Literal["postgres"] = "postgres"
    # libpq's multi-host form is passed through: host = "a,b" (with one port, or one per host: port = "5432,5433")
    # and target_session_attrs = "read-write" follow a failover (docs/postgresql.md, "Failover").
    host: str = "127.0.0.1"
    port: int | str = 5432
    target_session_attrs: Literal["any", "read-write", "read-only", "primary", "standby", "prefer-standby"] | None = (
        None
    )
    user: str = "cdc"
    password: SecretStr | None = None
    password_file: str | None = None
    database: str
    slot_name: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,63}$")] = "cdcstream"
    publication: Annotated[str, Field(min_length=1, max_length=63)] = "cdcstream"
    sslmode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    sslrootcert: str | None = None
    sslcert: str | None = None
    sslkey: str | None = None
    connect_timeout: Annotated[float, Field(gt=0, le=DAY)] = 10.0
    # Heartbeats (pg_logical_emit_message) keep the slot moving when captured tables are idle but others are
    # busy, so WAL can be recycled. 0 turns them off.
    heartbeat_interval: Annotated[float, Field(ge=0, le=DAY)] = 10.0
    # How often a standby status update is sent even when nothing new was acknowledged; must stay well
    # under the server's wal_sender_timeout (60 s by default).
    status_interval: Annotated[float, Field(gt=0, le=30)] = 10.0
    create_slot: bool = True
    create_publication: bool = True
    # Seconds between checks that every selected table is in the publication (tables created while CDC runs);
    # each one that is not is named in the log, /status and cdcstream_source_uncaptured_tables. With a failover
    # slot and a host list, also of each standby's copy of the slot (cdcstream_source_standby_slot_ready). 0 turns
    # them off.
    table_check_interval: Annotated[float, Field(ge=0, le=DAY)] = 30.0
    reconnect_max_delay: Annotated[float, Field(gt=0, le=DAY)] = 30.0
    # Rendering of PostgreSQL-specific types (docs/types.md, "PostgreSQL types"): "string" = the JSON text as a
    # string, as DMS writes it; "object" = embedded JSON (json/jsonb verbatim, hstore as an object of strings).
    # In [source] because the source renders values and these types exist only in PostgreSQL.
    json_as: Literal["string", "object"] = "string"
    hstore_as: Literal["string", "object"] = "string"
    # PostgreSQL 18+: stored generated columns in the records (the publication's publish_generated_columns =
    # stored, set when cdcstream creates it; an existing one must say so). Older servers never send them, so
    # true is refused there rather than silently producing records without them.
    publish_generated_columns: bool = False
    # PostgreSQL 17+: the slot is created as a failover slot (and an existing one made one), which a standby with
    # sync_replication_slots keeps in step, so the daemon resumes on it after a promotion. Ignored (with a log line)
    # on older servers and when reading from a standby.
    failover: bool = True
    # Seconds the replication connection may receive nothing while the server's WAL grows before the daemon
    # warns (and cdcstream_source_stalled_seconds says how long): e.g. walsenders waiting for a physical slot of
    # synchronized_standby_slots that nobody consumes. 0 turns it off.
    stall_timeout: Annotated[float, Field(ge=0, le=DAY)] = 60.0

    _host = field_validator("host")(_check_host)

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> int | str:
        """One port (an int, also from an environment variable's text) or libpq's list, one per host."""
        parts = str(value).split(",")
        if isinstance(value, bool) or not all(p.strip().isdigit() and 1 <= int(p) <= 65535 for p in parts):
            raise ValueError(f"{value!r} is not a port number (1-65535) or a comma-separated list of them")
        return int(parts[0]) if len(parts) == 1 else ",".join(p.strip() for p in parts)

    @model_validator(mode="after")
    def _ports_per_host(self) -> PostgresSourceConfig:
        hosts = len(self.host.split(","))
        if isinstance(self.port, str) and len(self.port.split(",")) != hosts:
            raise ValueError(f"port {self.port!r}: give one port, or one per host ({hosts} in host)")
        return self

    @model_validator(mode="after")
    def _resolve_password(self) -> PostgresSourceConfig:
        return _resolve_password(self)


class MySQLSourceConfig(_Section):
    """``[source]`` with ``engine = "mysql"``: MySQL 8 or MariaDB (10.5+) through the binary log."""

    engine: Literal["mysql"]
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 3306
    user: str = "cdc"
    password: SecretStr | None = None
    password_file: str | None = None
    # The replica id this reader registers with; must differ from every server's and every other replica's.
    server_id: Annotated[int, Field(ge=1, le=4294967295)]
    # Schemas whose tables may be captured (None: every schema the mapping selects). Row events of other
    # schemas are skipped without decoding.
    databases: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    # "auto": resume from the checkpoint's GTID when it has one and the server uses GTIDs, else from
    # file/position; "on": always GTID (fails without one); "off": always file/position.
    gtid_mode: Literal["auto", "on", "off"] = "auto"
    # The server sends a heartbeat event after this many idle seconds, so a dead connection is noticed.
    heartbeat_interval: Annotated[float, Field(gt=0, le=3600)] = 5.0
    reconnect_max_delay: Annotated[float, Field(gt=0, le=DAY)] = 30.0
    connect_timeout: Annotated[float, Field(gt=0, le=DAY)] = 10.0
    # TLS, named after the MySQL client's --ssl-mode (docs/mysql.md, "TLS"): "disabled" plaintext; "preferred"
    # TLS when the server offers it, unverified, else plaintext; "required" TLS, unverified; "verify_ca" the
    # certificate must chain to ssl_ca; "verify_identity" that, and be issued for `host`. Without ssl_ca the
    # verify modes use the system's CA store.
    ssl_mode: Literal["disabled", "preferred", "required", "verify_ca", "verify_identity"] = "preferred"
    ssl_ca: str | None = None
    ssl_cert: str | None = None  # client certificate (PEM) for servers that require X509 users
    ssl_key: str | None = None  # its private key (PEM); may be left out when it is inside ssl_cert
    # PyMySQL's spelling, kept for people who know it: true is ssl_mode = "verify_identity"; false with ssl_ca
    # (and no ssl_mode) is "verify_ca". Contradicting an explicit ssl_mode is an error, never a silent choice.
    ssl_verify_identity: bool | None = None
    # Dates and datetimes the calendar cannot hold (a zero month or day, '2020-02-31' under ALLOW_INVALID_DATES,
    # all-zero values, the zero TIMESTAMP): "text" sends the server's own text ("0001-00-00",
    # "0000-00-00 14:02:10"); "null" sends null, as AWS DMS does.
    invalid_dates: Literal["text", "null"] = "text"

    _host = field_validator("host")(_check_host)

    @model_validator(mode="after")
    def _resolve_password(self) -> MySQLSourceConfig:
        return _resolve_password(self)

    @model_validator(mode="before")
    @classmethod
    def _verify_identity_alias(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("ssl_verify_identity") is None:
            return data
        flag, mode = data["ssl_verify_identity"], data.get("ssl_mode")
        if isinstance(flag, str):  # environment overrides arrive as text
            flag = flag.strip().lower() in {"1", "true", "yes", "on"}
        if flag is True and mode not in (None, "verify_identity"):
            raise ValueError(f"ssl_verify_identity = true contradicts ssl_mode = {mode!r}; set only ssl_mode")
        if flag is False and mode == "verify_identity":
            raise ValueError("ssl_verify_identity = false contradicts ssl_mode = 'verify_identity'; set only ssl_mode")
        if flag is True:
            return {**data, "ssl_mode": "verify_identity"}
        if flag is False and mode is None and data.get("ssl_ca"):
            return {**data, "ssl_mode": "verify_ca"}
        return data

    @model_validator(mode="after")
    def _check_tls(self) -> MySQLSourceConfig:
        # Checked here, before anything connects, so a typo in a path is a config error naming the key
        # rather than a TLS handshake failure at 3 a.m.
        for key in ("ssl_ca", "ssl_cert", "ssl_key"):
            path = getattr(self, key)
            if path is None:
                continue
            if self.ssl_mode in ("disabled", "preferred"):
                raise ValueError(
                    f"{key} is set but ssl_mode = {self.ssl_mode!r} does not use it; set ssl_mode = 'verify_identity' "
                    f"(or 'verify_ca' / 'required'), or remove {key}"
                )
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"{key} {path!r}: {exc.strerror}") from None
        if self.ssl_key is not None and self.ssl_cert is None:
            raise ValueError("ssl_key is set without ssl_cert (the client certificate it belongs to)")
        return self


SourceConfig = Annotated[PostgresSourceConfig | MySQLSourceConfig, Field(discriminator="engine")]


_S = TypeVar("_S", PostgresSourceConfig, MySQLSourceConfig)


def _resolve_password(section: _S) -> _S:
    if section.password is not None and section.password_file is not None:
        raise ValueError("set either password or password_file, not both")
    secret: SecretStr | None = section.password
    if section.password_file is not None:
        secret = _read_secret(section.password_file, "password_file")
    elif secret is None:
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        env = os.environ.get("CDCSTREAM_SOURCE_PASSWORD")
        if cred_dir and (Path(cred_dir) / "source_password").is_file():
            secret = _read_secret(str(Path(cred_dir) / "source_password"), "credential source_password")
        elif env is not None:
            secret = SecretStr(env)
    object.__setattr__(section, "password", secret)
    return section


class BeforeImageConfig(_Section):
    """``[target.before_image]``: DMS ``BeforeImageSettings`` (a top-level JSON key on update records)."""

    enabled: bool = False
    field_name: Annotated[str, Field(min_length=1, max_length=128)] = "before-image"
    # pk-only: the key columns (PostgreSQL sends them only when the key changed, or with REPLICA IDENTITY FULL);
    # non-lob: every column except LOB types (text, bytea, json, jsonb, xml; MySQL text/blob); all: every column.
    column_filter: Literal["pk-only", "non-lob", "all"] = "pk-only"

    @field_validator("field_name")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in ("data", "metadata", "control"):
            raise ValueError(f"{value!r} is a reserved envelope key")
        return value


class TargetConfig(_Section):
    """``[target]``: the Kinesis stream and how records are written to it (DMS ``KinesisSettings``)."""

    stream_name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_.-]+$")]
    region: str = "us-east-1"
    endpoint_url: str | None = None
    message_format: Literal["json", "json-unformatted"] = "json"
    include_null_and_empty: bool = False
    no_hex_prefix: bool = False
    # DMS KinesisSettings (docs/record-format.md). transaction-id and stream-position are always written;
    # include_transaction_details adds transaction-record-id, prev-transaction-id, prev-transaction-record-id and
    # commit-timestamp.
    include_transaction_details: bool = False
    include_partition_value: bool = False
    partition_include_schema_table: bool = False
    include_control_details: bool = False
    # DMS IncludeTableAlterOperations: add-column, drop-column, rename-column, column-type-change,
    # change-columns and rename-table control records (docs/schema-changes.md).
    include_table_alter_operations: bool = False
    # "seed": TruncateTable/DropTable/RestartTask (the seed document); "dms": truncate-table/drop-table/
    # restart-task, for consumers written against current DMS output.
    control_operation_names: Literal["seed", "dms"] = "seed"
    before_image: BeforeImageConfig = BeforeImageConfig()
    # Batching: a PutRecords request is sent when it is full (500 records / request bytes) or when the
    # oldest record in it has waited linger_ms.
    linger_ms: Annotated[float, Field(ge=0, le=10_000)] = 20.0
    max_in_flight_requests: Annotated[int, Field(ge=1, le=64)] = 4
    # Bound on records accepted by the sink but not yet acknowledged by Kinesis; the source stalls beyond it.
    max_buffered_records: Annotated[int, Field(ge=500, le=1_000_000)] = 20_000
    # The same bound in bytes (data + partition key + ~200 bytes of bookkeeping per record), which is what
    # memory follows: the source stalls when either is reached. At least 1 MiB (one record of any size fits).
    max_buffered_bytes: Annotated[int, Field(ge=1_048_576, le=68_719_476_736)] = 268_435_456
    # per-key: a partition key's changes reach the stream in commit order (its last occurrences; see
    # docs/delivery-guarantees.md). none: only rejected entries are resent, so a key may be reordered; for
    # consumers that order by stream-position themselves. Fewer duplicates, more throughput on hot keys.
    ordering: Literal["per-key", "none"] = "per-key"
    # A record over the stream's maximum record size: "fail" stops the pipeline (nothing after it is
    # checkpointed); "dead-letter" writes it to <state_dir>/<task_id>.dead-letter.jsonl and sends a small
    # control record (OversizeRecordDiverted) in its place.
    oversize_policy: Literal["fail", "dead-letter"] = "fail"
    # Per-shard write budgets (token buckets over the ListShards hash ranges) keep each shard under its
    # documented limits instead of provoking throttling. On-demand streams and local servers differ: adjust
    # the limits or turn it off. The map is re-read every shard_map_refresh seconds (resharding).
    # KPL-compatible aggregation: many records of one partition key per Kinesis record (consumers must
    # de-aggregate: KCL, aws-kinesis-agg, Lambda with the deaggregation library). Lifts the 1,000 records/s
    # per-shard ceiling for small records; off by default because plain consumers would see binary blobs.
    aggregation: bool = False
    shard_rate_limit: bool = True
    shard_records_per_second: Annotated[int, Field(ge=1)] = 1000
    shard_bytes_per_second: Annotated[int, Field(ge=1024)] = 1_048_576
    shard_map_refresh: Annotated[float, Field(ge=1, le=DAY)] = 60.0
    retry_base_delay: Annotated[float, Field(gt=0, le=DAY)] = 0.1
    retry_max_delay: Annotated[float, Field(gt=0, le=DAY)] = 10.0
    request_timeout: Annotated[float, Field(gt=0, le=DAY)] = 30.0
    # A stop signal (SIGTERM/SIGINT) waits this long for records already read to be acknowledged, then exits
    # without them (they are replayed at the next start). The process exits at most drain_timeout + 10 s after
    # the signal: give the service manager's stop timeout more than that.
    drain_timeout: Annotated[float, Field(ge=0, le=3600)] = 30.0

    # botocore checks both only when the first client is made (a ValueError deep in the sink's start): here
    # they are config errors naming the key.
    @field_validator("region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        from botocore.exceptions import InvalidRegionError
        from botocore.utils import validate_region_name

        try:
            validate_region_name(value)
        except InvalidRegionError:
            raise ValueError(f"{value!r} is not an AWS region name (like us-east-1)") from None
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        from botocore.utils import is_valid_endpoint_url, is_valid_ipv6_endpoint_url

        if value is None:
            return value
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 (raises ValueError when out of range)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not (is_valid_endpoint_url(value) or is_valid_ipv6_endpoint_url(value))
        ):
            raise ValueError(f"{value!r} is not an http(s)://HOST[:PORT] URL")
        return value


class CheckpointConfig(_Section):
    """``[checkpoint]``: where the durable position lives and how often it is written."""

    state_dir: str = "/var/lib/cdcstream"
    # Minimum seconds between checkpoint writes; the watermark is always the safe position, this only
    # bounds fsync traffic (and so the number of duplicates replayed after a crash).
    interval: Annotated[float, Field(ge=0, le=60)] = 1.0


#: Shortest control token accepted: 128 bits as hex (``openssl rand -hex 16``); a guessable one is refused.
MIN_TOKEN_LENGTH = 32

#: An IPv4/IPv6 address or a DNS name; whether it resolves and can be bound is only known at start.
_HOST = re.compile(r"[0-9A-Fa-f:.]+|[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


class HttpConfig(_Section):
    """``[http]``: the address of /metrics, /healthz, /readyz, /status and the control endpoint ``POST /reload``.
    Empty string turns it off."""

    listen: str = "127.0.0.1:9187"
    # The bearer token POST /reload requires (docs/control-plane.md): control_token (or the environment
    # variable CDCSTREAM_HTTP__CONTROL_TOKEN) or control_token_file; neither: the daemon generates one in
    # <state_dir>/control-token (mode 0600), which `cdcstream reload` on the same machine reads.
    control_token: SecretStr | None = None
    control_token_file: str | None = None
    # /readyz fails when a record read this long ago is still not acknowledged by Kinesis (delivery lagging).
    ready_window: Annotated[float, Field(gt=0, le=DAY)] = 120.0
    # Label cdcstream_source_events_total by table (schema.table). Turn off for databases with very many
    # tables: the label is then empty and the series count stays bounded by the number of operations.
    metrics_table_label: bool = True
    # Seconds between source lag probes (PostgreSQL: slot lag bytes, retained WAL, safe_wal_size) on the
    # normal connection. 0 turns them off.
    lag_probe_interval: Annotated[float, Field(ge=0, le=DAY)] = 15.0

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value == "":
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        if not _HOST.fullmatch(host.removeprefix("[").removesuffix("]")):
            raise ValueError(f"{host!r} is not an IP address or host name (an IPv6 address is written [::1]:9187)")
        return value

    @model_validator(mode="after")
    def _resolve_control_token(self) -> HttpConfig:
        if self.control_token is not None and self.control_token_file is not None:
            raise ValueError("set either control_token or control_token_file, not both")
        token = self.control_token
        if self.control_token_file is not None:
            token = _read_secret(self.control_token_file, "control_token_file")
        if token is not None:
            problem = token_problem(token.get_secret_value())
            if problem:
                where = "control_token_file" if self.control_token_file else "control_token"
                raise ValueError(f"{where}: {problem}")
        object.__setattr__(self, "control_token", token)
        return self


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a control token (too short to resist guessing, or not sendable in an HTTP
    header), or None."""
    if len(token) < MIN_TOKEN_LENGTH:
        return f"the control token must have at least {MIN_TOKEN_LENGTH} characters (e.g. `openssl rand -hex 32`)"
    if not all(33 <= ord(ch) <= 126 for ch in token):
        return "the control token must be printable ASCII without spaces (it is sent in an HTTP header)"
    return None


class FullLoadConfig(_Section):
    """``[full_load]``: how a full load (``migration_type`` full-load or full-load-and-cdc) copies the tables.

    Names and limits follow the DMS task settings (``MaxFullLoadSubTasks``, ``ParallelLoadThreads``,
    ``ParallelLoadBufferSize``); docs/full-load.md, "Settings".
    """

    # Source sessions reading at once (tables, or segments of tables, in parallel). DMS: default 8, max 49.
    max_full_load_subtasks: Annotated[int, Field(ge=1, le=49)] = 8
    # Segments per table (primary-key ranges read in parallel); 0 or 1 = the whole table in one segment.
    # table-settings "parallel-load" ranges in the mapping file override it per table. DMS: max 32.
    parallel_load_threads: Annotated[int, Field(ge=0, le=32)] = 0
    # Rows a load session hands over at once (one queue item, followed by a checkpointable marker); the
    # load queue holds at most 2 x max_full_load_subtasks such items, which bounds memory. DMS: default 50.
    parallel_load_buffer_size: Annotated[int, Field(ge=1, le=1000)] = 50
    # Rows per keyset page (one SELECT ... WHERE key > last ORDER BY key LIMIT chunk_rows per page).
    chunk_rows: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000
    # Seconds between progress log lines (rows copied, estimate, rows/s, ETA) per loading table.
    progress_interval: Annotated[float, Field(gt=0, le=3600)] = 10.0
    # Worker processes that decode, map and serialise load rows beside the event loop (not a DMS setting):
    # "auto" = one per CPU core available but one, at most 4; 0 = everything in the daemon's own process.
    processes: Annotated[int, Field(ge=0, le=64)] | Literal["auto"] = "auto"


class LogConfig(_Section):
    """``[log]``: level and format (``auto`` = human-readable on a TTY, JSON otherwise)."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class Config(_Section):
    """The whole configuration file."""

    task_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")] = "cdcstream"
    # DMS MigrationType: "cdc" streams changes from the slot/binlog position; "full-load" copies the selected
    # tables once and exits; "full-load-and-cdc" copies them, then streams from the exact point the copy saw.
    migration_type: Literal["cdc", "full-load", "full-load-and-cdc"] = "cdc"
    table_mappings: str | None = None
    source: SourceConfig
    target: TargetConfig
    full_load: FullLoadConfig = FullLoadConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    config_path: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _default_engine(cls, data: Any) -> Any:
        # ``engine`` picks the [source] schema; configs written before MySQL support have none (PostgreSQL).
        if isinstance(data, dict) and isinstance(data.get("source"), dict) and "engine" not in data["source"]:
            data = {**data, "source": {**data["source"], "engine": "postgres"}}
        return data

    def resolve(self, path: str) -> Path:
        """Resolve a path from the config relative to the config file's directory."""
        p = Path(path)
        if not p.is_absolute() and self.config_path is not None:
            p = self.config_path.parent / p
        return p


def _format_validation_error(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: invalid configuration:"]
    for err in exc.errors():
        parts = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
        if parts[:1] == ["source"] and parts[1:2] in (["postgres"], ["mysql"]):
            del parts[1]  # the union's tag (the engine), not a key the user wrote
        loc = ".".join(parts)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "union_tag_invalid":
            loc = f"{loc}.engine"
            msg = f"unknown engine {err['input'].get('engine')!r}; expected 'postgres' or 'mysql'"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see config/cdcstream.example.toml)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"  {loc or '<top>'}: {msg}")
    return "\n".join(lines)


ENV_PREFIX = "CDCSTREAM_"


def apply_env_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Override ``[section] key`` with ``CDCSTREAM_<SECTION>__<KEY>`` (containers, Kubernetes). Values stay
    strings and pydantic converts them like the file's (``"5432"`` -> 5432, ``"false"`` -> False); unknown
    sections or keys are rejected like the file's. Returns the variable names applied, for error messages."""
    applied: list[str] = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not section or not key:
            continue
        table = raw.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: {section!r} is not a [section] of the configuration")
        table[key] = environ[name]
        applied.append(name)
    return applied


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file plus ``CDCSTREAM_<SECTION>__<KEY>`` environment overrides; raise
    :class:`ConfigError` naming the file (or variable) and key on any problem."""
    path = Path(path)
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}): a TOML file must be UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(f"{path}: not valid TOML: arrays or inline tables nested too deeply") from None
    applied = apply_env_overrides(raw, os.environ if environ is None else environ)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        message = _format_validation_error(path, exc)
        if applied:
            message += f"\n  (environment overrides applied: {', '.join(applied)})"
        raise ConfigError(message) from None
    return cfg.model_copy(update={"config_path": path.resolve()})
