"""A lean PutRecords client: builds, signs and sends the request itself.

aiobotocore's ``put_records`` costs ~33 µs of CPU per record (model-driven serialisation, validation,
event hooks, measured on a 2-core machine), which would make the sink the bottleneck of the whole daemon.
PutRecords is a simple JSON-1.1 call, so this module writes the body directly (base64 data, pre-escaped
partition keys), signs it with :mod:`cdcstream.sinks.sigv4` (SigV4 as botocore writes it, without botocore's
per-request objects; credentials from botocore's standard chain, refreshed per request) and posts it with one
long-lived aiohttp session. Everything else (DescribeStreamSummary, ListShards) goes through aiobotocore.

Errors are classified here: :class:`SinkRetriableError` for throttling, 5xx, timeouts and connection
errors (the request may or may not have been written: the caller resends everything, duplicates allowed),
and :class:`SinkError` for what retrying cannot fix (access denied, missing stream, validation, KMS
problems).
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import orjson

from cdcstream import compiled
from cdcstream.errors import SinkError, SinkRetriableError
from cdcstream.records import Record, put_records_entry
from cdcstream.sinks.aggregation import aggregate, pack
from cdcstream.sinks.batching import Batch
from cdcstream.sinks.sigv4 import PutRecordsSigner

TARGET = "Kinesis_20131202.PutRecords"
CONTENT_TYPE = "application/x-amz-json-1.1"

#: Whole-request error types worth retrying (HTTP 400 with one of these ``__type`` is throttling, not a bug).
RETRIABLE_REQUEST_ERRORS = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "KMSThrottlingException",
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "InternalFailure",
        "InternalFailureException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        # Temporary credentials expired between refresh and use: the next request signs with fresh ones.
        "ExpiredTokenException",
        "RequestExpired",
    }
)

_HINTS = {
    "ResourceNotFoundException": "the stream does not exist (any more); create it or fix target.stream_name",
    "AccessDeniedException": "grant kinesis:PutRecords on the stream to the daemon's AWS identity",
    "UnrecognizedClientException": "the AWS credentials are invalid; check the credential chain",
    "InvalidSignatureException": "the request signature was rejected; check the credentials and the clock",
    "KMSDisabledException": "the stream's KMS key is disabled; enable it",
    "KMSNotFoundException": "the stream's KMS key was not found; fix the stream's encryption settings",
    "KMSAccessDeniedException": "grant the daemon's identity kms:GenerateDataKey on the stream's key",
    "KMSInvalidStateException": "the stream's KMS key is not in a usable state",
    "KMSOptInRequired": "the AWS account is not subscribed to KMS",
    "ValidationException": "the request was rejected as invalid (a cdcstream bug if limits were respected)",
    "InvalidArgumentException": "the request was rejected as invalid (a cdcstream bug if limits were kept)",
}


def error_hint(code: str) -> str:
    """What to do about a non-retriable Kinesis error code."""
    return _HINTS.get(code, "see the Kinesis API reference for this error")


class PutRecordsResult:
    """Per-entry outcome: ``codes`` is None when every entry succeeded, else one error code (or None) per
    entry; ``messages`` the matching ErrorMessages."""

    __slots__ = ("codes", "failed", "messages")

    def __init__(self, failed: int, codes: list[str | None] | None, messages: list[str | None] | None) -> None:
        self.failed = failed
        self.codes = codes
        self.messages = messages


def _json_str(s: str) -> bytes:
    return orjson.dumps(s)


def _compiled_body() -> Callable[[bytes, list[Record], list[str], list[int]], bytes] | None:
    """The compiled body builder (``put_records_body``, the sink's optional C extension ``_putrecords.c``): None
    without the extension, with ``CDCSTREAM_PURE=1``, or if it disagrees with
    :meth:`PutRecordsClient.build_plain_body` (the reference) on a probe batch at import."""
    try:
        from cdcstream.sinks._putrecords import put_records_body
    except ImportError:
        return None
    if compiled.pure_requested():
        return None
    probe = PutRecordsClient(stream_name="s", region="r", endpoint_url=None, credentials=None, request_timeout=1)
    text = "".join(chr(i) for i in range(0x80)) + "é€😀\u2028"
    batch = Batch()
    batch.keys = [text, "k", "é", "w", "hashed"]
    batch.counts = [1, 3, 1, 1, 1]
    batch.records = [
        Record(text, b""),
        *(Record("k", d) for d in (b"a", b"ab", text.encode())),
        Record("é", b"abc"),
        Record("w", b"{}", entry=put_records_entry(b"{}", "w")),  # a worker's entry, used as is
        Record("long", b"{}", entry=put_records_entry(b"{}", "long")),  # sent under another key: rebuilt
    ]
    body = put_records_body(probe._head, batch.records, batch.keys, batch.counts)
    return put_records_body if body == probe.build_plain_body(batch) else None


class PutRecordsClient:
    """Sends :class:`Batch` es as PutRecords requests to one stream."""

    def __init__(
        self,
        *,
        stream_name: str,
        region: str,
        endpoint_url: str | None,
        credentials: Any,
        request_timeout: float,
        max_connections: int = 16,
    ) -> None:
        self.stream_name = stream_name
        self.region = region
        self.url = endpoint_url or f"https://kinesis.{region}.amazonaws.com"
        # A refreshable botocore credentials object; frozen per request so that refreshes are picked up.
        self._credentials = credentials
        self._signer = PutRecordsSigner(self.url, region, "kinesis", TARGET, CONTENT_TYPE)
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._head = b'{"StreamName":' + _json_str(stream_name) + b',"Records":['
        # Partition key -> the JSON tail of an entry for it; keys repeat a lot, escaping them once pays.
        self._key_tail: dict[str, bytes] = {}
        self._session: aiohttp.ClientSession | None = None
        self._max_connections = max_connections
        #: When set (bytes: the stream's maximum record size), records are sent as KPL aggregates.
        self.aggregate_max_bytes = 0

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, enable_cleanup_closed=True),
                timeout=self._timeout,
                # Kinesis answers JSON; we never want aiohttp to decompress or guess anything.
                auto_decompress=False,
                skip_auto_headers=("Content-Type",),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def build_body(self, batch: Batch) -> bytes:
        """The JSON request body for ``batch`` (records in batch order)."""
        if self.aggregate_max_bytes:
            return self._build_aggregated_body(batch, self.aggregate_max_bytes)
        if _COMPILED_BODY is not None:
            # One C call writes the whole body (base64, escaped keys, the joins): ~1 µs a record less than the
            # loop below, which stays the reference (tests/unit/test_putrecords_body.py holds them equal).
            return _COMPILED_BODY(self._head, batch.records, batch.keys, batch.counts)
        return self.build_plain_body(batch)

    def build_plain_body(self, batch: Batch) -> bytes:
        """:meth:`build_body` in Python: the reference of the compiled builder. A record's ``entry`` (built by a
        mapping worker process) is used as is when it carries the key sent (a key over 256 characters is sent
        hashed, which the worker did not know)."""
        parts: list[bytes] = []
        append = parts.append
        records = batch.records
        tails = self._key_tail
        start = 0
        for key, n in zip(batch.keys, batch.counts, strict=True):
            if n == 1 and key not in tails:
                # A key with one record here (a load's primary keys): caching its tail would only churn the cache.
                record = records[start]
                # Built already by a mapping worker process, or here.
                entry = record.entry
                append(
                    entry if entry is not None and record.partition_key == key else put_records_entry(record.data, key)
                )
                start += 1
                continue
            tail = tails.get(key)
            if tail is None:
                tail = b'","PartitionKey":' + _json_str(key) + b"}"
                if len(tails) > 100_000:
                    tails.clear()  # bound the cache for per-record keys
                tails[key] = tail
            for i in range(start, start + n):
                record = records[i]
                entry = record.entry
                if entry is not None and record.partition_key == key:
                    append(entry)
                else:
                    append(b'{"Data":"' + b2a_base64(record.data, newline=False) + tail)
            start += n
        return self._head + b",".join(parts) + b"]}"

    def _build_aggregated_body(self, batch: Batch, max_record_bytes: int) -> bytes:
        """Each key's records as KPL aggregates (sinks.aggregation); ``batch.entry_sizes`` maps entries back
        to records so per-entry results can be applied to every record an entry carries."""
        parts: list[bytes] = []
        sizes: list[int] = []
        records = batch.records
        start = 0
        for key, n, ks in zip(batch.keys, batch.counts, batch.key_sizes, strict=True):
            tail = b'","PartitionKey":' + _json_str(key) + b"}"
            group = records[start : start + n]
            i = 0
            for count in pack(ks, [len(r.data) for r in group], max_record_bytes):
                blob = aggregate(key, [r.data for r in group[i : i + count]])
                parts.append(b'{"Data":"' + b2a_base64(blob, newline=False) + tail)
                sizes.append(count)
                i += count
            start += n
        batch.entry_sizes = sizes
        return self._head + b",".join(parts) + b"]}"

    async def _sign(self, body: bytes) -> dict[str, str]:
        frozen = await self._credentials.get_frozen_credentials()
        return self._signer.headers(frozen, body)

    async def put_records(self, batch: Batch) -> PutRecordsResult:
        """Send one request. Raises SinkRetriableError (resend everything later) or SinkError (stop)."""
        body = self.build_body(batch)
        try:
            headers = await self._sign(body)
        except Exception as exc:  # credential refresh failures (e.g. IMDS unreachable) are transient
            raise SinkRetriableError(f"cannot get AWS credentials for stream {self.stream_name}: {exc}") from exc
        session = self._get_session()
        try:
            async with session.post(self.url, data=body, headers=headers) as resp:
                status = resp.status
                raw = await resp.read()
        except TimeoutError as exc:
            raise SinkRetriableError(
                f"PutRecords to stream {self.stream_name} timed out after {self._timeout.total} s", timed_out=True
            ) from exc
        except aiohttp.ClientError as exc:
            # A connection lost after the request was sent leaves its outcome unknown, like a timeout.
            raise SinkRetriableError(
                f"PutRecords to stream {self.stream_name} failed: {type(exc).__name__}: {exc}", ambiguous=True
            ) from exc
        except OSError as exc:
            raise SinkRetriableError(f"PutRecords to stream {self.stream_name} failed: {exc}", ambiguous=True) from exc
        if status == 200:
            sizes = batch.entry_sizes
            if sizes is None:
                return self._parse_ok(raw, len(batch.records))
            result = self._parse_ok(raw, len(sizes))
            if result.codes is not None:  # one entry's outcome is the outcome of every record it carries
                assert result.messages is not None
                result.codes = [c for c, k in zip(result.codes, sizes, strict=True) for _ in range(k)]
                result.messages = [m for m, k in zip(result.messages, sizes, strict=True) for _ in range(k)]
            return result
        raise self._classify(status, raw, batch)

    def _parse_ok(self, raw: bytes, n: int) -> PutRecordsResult:
        # All accepted, told without building n dicts (~1 µs per record): the answer echoes no record data and
        # its entries hold no objects, so n + 1 braces, n sequence numbers and no error code are n successes.
        if raw.count(b"{") == n + 1 and raw.count(b'"SequenceNumber"') == n and b'"ErrorCode"' not in raw:
            return PutRecordsResult(0, None, None)
        try:
            entries = orjson.loads(raw)["Records"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            # Whether anything was written is unknown: resend all (duplicates allowed, loss not).
            raise SinkRetriableError(
                f"PutRecords to stream {self.stream_name}: unreadable response ({exc}); resending"
            ) from exc
        if len(entries) != n:
            raise SinkRetriableError(
                f"PutRecords to stream {self.stream_name}: {len(entries)} results for {n} records; resending"
            )
        # Not all plain successes (see the top): each entry says, whatever FailedRecordCount claims.
        codes: list[str | None] = []
        messages: list[str | None] = []
        nfailed = 0
        for e in entries:
            code = e.get("ErrorCode")
            if code is None and "SequenceNumber" not in e:
                code = "InternalFailure"  # neither success nor error: treat as a retriable failure
            codes.append(code)
            messages.append(e.get("ErrorMessage"))
            if code is not None:
                nfailed += 1
        if nfailed == 0:
            return PutRecordsResult(0, None, None)
        return PutRecordsResult(nfailed, codes, messages)

    def _classify(self, status: int, raw: bytes, batch: Batch) -> SinkError:
        code = ""
        message = ""
        try:
            doc = orjson.loads(raw)
            if isinstance(doc, dict):
                code = str(doc.get("__type") or doc.get("code") or "")
                message = str(doc.get("message") or doc.get("Message") or "")
        except orjson.JSONDecodeError:
            pass
        code = code.rpartition("#")[2]
        where = f"PutRecords to stream {self.stream_name}"
        if status == 413:
            # Our batcher bounds request bytes, so the server's body limit is lower than the API's (kinesalite
            # answers a bare 413 above 7 MiB of body). Retrying the same request would loop forever.
            return SinkError(
                f"{where}: HTTP 413 request too large ({len(batch.records)} records, {batch.nbytes} bytes of "
                "data + keys); the endpoint's body limit is below the Kinesis API limit. This is a bug or an "
                "endpoint limitation; please report it"
            )
        if status >= 500 or code in RETRIABLE_REQUEST_ERRORS or status == 429:
            return SinkRetriableError(f"{where}: HTTP {status} {code or 'error'}: {message[:200]}")
        if not code:
            code = f"HTTP{status}"
        return SinkError(f"{where}: {code}: {message[:300]} -- {error_hint(code)}")


_COMPILED_BODY = _compiled_body()


def codes_summary(codes: Sequence[str | None]) -> dict[str, int]:
    """Count error codes (for logs)."""
    out: dict[str, int] = {}
    for c in codes:
        if c is not None:
            out[c] = out.get(c, 0) + 1
    return out
