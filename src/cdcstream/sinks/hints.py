"""What to tell a person when the stream cannot be used: no credentials, no stream, no answer.

``run`` (the sink's start), ``check`` and ``tail`` say the same words, so a fix learnt from one works in the
others; a local Kinesis-API server (``endpoint_url``) gets the hints it needs (dummy credentials, the
``--endpoint-url`` of ``aws kinesis create-stream``).
"""

from __future__ import annotations

from typing import NamedTuple


class Hint(NamedTuple):
    """A problem and its fix; ``str()`` is the one-line message ``run`` and ``tail`` print."""

    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.problem}. Fix: {self.fix}"


def create_stream_command(stream: str, region: str, endpoint_url: str | None) -> str:
    """The AWS CLI command that creates ``stream`` where cdcstream looks for it."""
    endpoint = f" --endpoint-url {endpoint_url}" if endpoint_url else ""
    return f"aws kinesis create-stream --stream-name {stream} --shard-count 1 --region {region}{endpoint}"


def missing_stream(stream: str, region: str, endpoint_url: str | None, setting: str = "target.stream_name") -> Hint:
    """The stream does not exist: where it was looked for, how to create it, or which ``setting`` to fix."""
    where = region + (f" at {endpoint_url}" if endpoint_url else "")
    return Hint(
        f"Kinesis stream {stream} does not exist in {where}",
        f"create it with `{create_stream_command(stream, region, endpoint_url)}`, or fix {setting}",
    )


def no_credentials(endpoint_url: str | None) -> Hint:
    """No AWS credentials in the standard chain; a local server accepts any, but requests must be signed."""
    fix = (
        "configure the standard AWS credential chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, "
        "or an instance / pod role)"
    )
    if endpoint_url:
        fix += (
            f"; a local Kinesis-API server ({endpoint_url}) accepts any credentials but needs some: "
            "export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test"
        )
    return Hint("no AWS credentials found", fix)


def unreachable(region: str, endpoint_url: str | None, error: object) -> Hint:
    """Kinesis did not answer (wrong endpoint or region, server down, network)."""
    if endpoint_url:
        return Hint(f"cannot reach {endpoint_url}: {error}", "check that the server runs there and the URL is right")
    return Hint(
        f"cannot reach Kinesis in region {region}: {error}",
        "check region, DNS and the network path to Kinesis (proxy, VPC endpoint)",
    )
