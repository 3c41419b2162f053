"""Typed errors. Whether an error is worth retrying is a property of its class, not of the caller.

Every error a user can hit says what went wrong, where, and how to fix it; ``exit_code`` is what the process
returns when the error ends it (docs/troubleshooting.md, "Exit codes").
"""

from __future__ import annotations

from dataclasses import dataclass


class CdcstreamError(Exception):
    """Base class. ``retriable`` errors are retried with backoff; the others stop the pipeline."""

    retriable: bool = False
    exit_code: int = 1
    stage: str = "runtime"


class ConfigError(CdcstreamError):
    """Invalid configuration or mapping file; raised before anything connects."""

    exit_code = 2
    stage = "config"


class SourceError(CdcstreamError):
    """A non-retriable problem with the source database (privileges, settings, lost slot, ...)."""

    exit_code = 3
    stage = "receiving"


class SourceConnectionError(SourceError):
    """The source connection dropped or could not be opened; reconnect with backoff."""

    retriable = True


class PositionRefusedError(SourceError):
    """The server does not confirm a stored position (another server, a moved slot, a position it lacks): see
    :class:`Refusal`. The pipeline names the checkpoint file in the message."""


class DecodeError(SourceError):
    """The source sent something the decoder does not understand. Carries the position for the bug report."""


class MappingError(CdcstreamError):
    """A change could not be turned into a record (e.g. a partition key column is missing)."""

    exit_code = 4
    stage = "processing"


class SinkError(CdcstreamError):
    """A non-retriable Kinesis error (access denied, stream missing, validation)."""

    exit_code = 5
    stage = "sending"


class SinkRetriableError(SinkError):
    """Throttling, 5xx, connection errors: retried forever with backoff, never dropped.

    ``ambiguous``: the request may still be applied by the server (a timeout, a connection lost after
    sending), so resending too early could let the late original land after newer records. ``timed_out``: no
    answer within ``request_timeout`` (the sink then sends smaller requests).
    """

    retriable = True

    def __init__(self, message: str, *, ambiguous: bool = False, timed_out: bool = False) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous or timed_out
        self.timed_out = timed_out


class OversizeRecordError(SinkError):
    """A record exceeds the stream's maximum record size (``size`` and ``limit`` in bytes, data + key)."""

    def __init__(self, message: str, *, size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class CheckpointError(CdcstreamError):
    """The checkpoint file cannot be read (corrupt, truncated) or written."""

    exit_code = 6
    stage = "checkpointing"


@dataclass(frozen=True)
class Refusal:
    """Why a stored position must not be resumed from on this server: ``run`` raises the first one (exit 3),
    ``cdcstream check`` prints each under ``check`` (the name of its line) with ``fix``."""

    check: str
    problem: str
    fix: str

    def error(self) -> PositionRefusedError:
        return PositionRefusedError(f"{self.problem}. Fix: {self.fix}")
