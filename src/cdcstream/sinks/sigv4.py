"""SigV4 signatures of PutRecords requests without botocore's per-request objects.

botocore's ``SigV4Auth.add_auth`` builds an ``AWSRequest`` (an ``email.message`` header map), splits the URL, sorts
and trims the headers and derives the signing key from the secret, every request: ~0.5 µs per record of a
500-record request in the daemon's profile (bench/README.md), besides the SHA-256 of the body that any signer pays.
Every PutRecords request of a sink goes to one URL with the same two headers, so :class:`PutRecordsSigner` works
out the constant parts once (with botocore's own functions, so the canonical host, path and query are botocore's),
caches the signing key per day, and per request hashes the body and formats two short strings.

The output is byte for byte what botocore writes for the same request, credentials and second
(tests/unit/test_sigv4.py signs random requests both ways and compares the headers); credentials still come from
botocore's providers, frozen per request by the caller so refreshes are picked up.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth, _host_from_url
from botocore.awsrequest import AWSRequest

#: botocore.auth.SIGV4_TIMESTAMP.
_TIMESTAMP = "%Y%m%dT%H%M%SZ"


def _trim(value: str) -> str:
    # SigV4's Trimall, as botocore applies it to every signed header value.
    return " ".join(value.split())


class PutRecordsSigner:
    """Signs POST requests to ``url`` carrying ``X-Amz-Target: target`` and ``Content-Type: content_type``."""

    __slots__ = (
        "_content_type",
        "_head",
        "_key",
        "_key_for",
        "_region",
        "_scope_tail",
        "_service",
        "_stamp",
        "_stamp_second",
        "_tail",
        "_target",
    )

    def __init__(self, url: str, region: str, service: str, target: str, content_type: str) -> None:
        self._region = region
        self._service = service
        self._target = target
        self._content_type = content_type
        # The request-independent lines of the canonical request, from botocore's own helpers.
        auth = SigV4Auth(None, service, region)
        path = auth._normalize_url_path(urlsplit(url).path)
        query = auth.canonical_query_string(AWSRequest(method="POST", url=url, data=b""))
        self._head = f"POST\n{path}\n{query}\ncontent-type:{_trim(content_type)}\nhost:{_host_from_url(url)}\n"
        self._tail = f"x-amz-target:{_trim(target)}\n\n"
        self._scope_tail = f"/{region}/{service}/aws4_request"
        self._key: bytes = b""
        self._key_for: tuple[str, str] = ("", "")
        self._stamp = ""
        self._stamp_second = -1

    def _signing_key(self, secret: str, day: str) -> bytes:
        # The HMAC chain depends only on the secret and the day: derived again only when either changes.
        if self._key_for != (secret, day):
            k = hmac.new(f"AWS4{secret}".encode(), day.encode(), hashlib.sha256).digest()
            k = hmac.new(k, self._region.encode(), hashlib.sha256).digest()
            k = hmac.new(k, self._service.encode(), hashlib.sha256).digest()
            self._key = hmac.new(k, b"aws4_request", hashlib.sha256).digest()
            self._key_for = (secret, day)
        return self._key

    def timestamp(self, now: float) -> str:
        """``X-Amz-Date`` for the epoch second of ``now`` (formatted once per second)."""
        second = int(now)
        if second != self._stamp_second:
            self._stamp = time.strftime(_TIMESTAMP, time.gmtime(second))
            self._stamp_second = second
        return self._stamp

    def headers(self, credentials: Any, body: bytes, now: float | None = None) -> dict[str, str]:
        """The request's headers, ``Authorization`` included, for frozen botocore ``credentials`` (access_key,
        secret_key, token) at ``now`` (epoch seconds; default: the clock), in the order botocore sets them."""
        stamp = self.timestamp(time.time() if now is None else now)
        token = credentials.token
        if token:
            signed = "content-type;host;x-amz-date;x-amz-security-token;x-amz-target"
            amz = f"x-amz-date:{stamp}\nx-amz-security-token:{_trim(token)}\n"
        else:
            signed = "content-type;host;x-amz-date;x-amz-target"
            amz = f"x-amz-date:{stamp}\n"
        canonical = f"{self._head}{amz}{self._tail}{signed}\n{hashlib.sha256(body).hexdigest()}"
        day = stamp[:8]
        scope = day + self._scope_tail
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(credentials.secret_key, day), to_sign.encode(), hashlib.sha256)
        out = {"X-Amz-Target": self._target, "Content-Type": self._content_type, "X-Amz-Date": stamp}
        if token:
            out["X-Amz-Security-Token"] = token
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={credentials.access_key}/{scope}, SignedHeaders={signed}, "
            f"Signature={signature.hexdigest()}"
        )
        return out
