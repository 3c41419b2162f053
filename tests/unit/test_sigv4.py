"""The lean SigV4 signer (sinks/sigv4.py) writes byte for byte the headers botocore's SigV4Auth writes for the same
request, credentials and second: botocore is the reference, signed here both ways over random requests."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import given, settings
from hypothesis import strategies as st

from cdcstream.sinks.putrecords import CONTENT_TYPE, TARGET
from cdcstream.sinks.sigv4 import PutRecordsSigner

URLS = [
    "http://127.0.0.1:4567",
    "http://localhost:4567/",
    "https://kinesis.us-east-1.amazonaws.com",
    "https://Kinesis.EU-West-1.amazonaws.com:443",
    "http://example.test:80",
    "https://example.test:8443/prefix/path",
    "http://[::1]:9000",
    "https://vpce-0123.kinesis.us-east-1.vpce.amazonaws.com/?x=1&a=2",
]


def botocore_headers(
    monkeypatch: pytest.MonkeyPatch, url: str, region: str, creds: Credentials, body: bytes, now: float
) -> dict[str, str]:
    """What putrecords.py sent before the lean signer: botocore's SigV4Auth over an AWSRequest."""
    when = datetime.datetime.fromtimestamp(int(now), datetime.UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore_auth, "get_current_datetime", lambda *a, **k: when)
    req = AWSRequest(method="POST", url=url, data=body, headers={"X-Amz-Target": TARGET, "Content-Type": CONTENT_TYPE})
    botocore_auth.SigV4Auth(creds.get_frozen_credentials(), "kinesis", region).add_auth(req)
    return dict(req.headers.items())


def lean_headers(url: str, region: str, creds: Credentials, body: bytes, now: float) -> dict[str, str]:
    signer = PutRecordsSigner(url, region, "kinesis", TARGET, CONTENT_TYPE)
    return signer.headers(creds.get_frozen_credentials(), body, now)


text = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    url=st.sampled_from(URLS),
    region=st.sampled_from(["us-east-1", "eu-central-1", "local"]),
    access=text,
    secret=text,
    token=st.one_of(st.none(), st.just(""), text, st.just("  spaced   token  ")),
    body=st.binary(max_size=3000),
    now=st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
)
def test_lean_signer_writes_what_botocore_writes(
    url: str, region: str, access: str, secret: str, token: str | None, body: bytes, now: float
) -> None:
    creds = Credentials(access, secret, token)
    with pytest.MonkeyPatch.context() as mp:
        expected = botocore_headers(mp, url, region, creds, body, now)
    got = lean_headers(url, region, creds, body, now)
    assert got == expected
    assert list(got) == list(expected)  # the same order as well


def test_signing_key_and_timestamp_caches_follow_the_day_the_second_and_the_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = URLS[0]
    signer = PutRecordsSigner(url, "us-east-1", "kinesis", TARGET, CONTENT_TYPE)
    body = b'{"StreamName":"s","Records":[]}'
    day = 1_780_000_000.0
    cases: list[tuple[Any, float]] = [
        (Credentials("AK", "one"), day),
        (Credentials("AK", "one"), day + 0.5),  # same second
        (Credentials("AK", "one"), day + 1),
        (Credentials("AK", "one"), day + 86_400),  # next day: a new signing key
        (Credentials("AK", "two", "tok"), day + 86_400),  # rotated secret (refreshed credentials)
        (Credentials("AK", "one"), day),  # and back
    ]
    for creds, now in cases:
        expected = botocore_headers(monkeypatch, url, "us-east-1", creds, body, now)
        assert signer.headers(creds.get_frozen_credentials(), body, now) == expected
