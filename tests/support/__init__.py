"""Test support: private servers (PostgreSQL, Kinesis-API servers), a fault-injecting proxy, helpers.

Tests that need a server call :func:`server_missing`: locally the test is skipped with the reason, in CI
(``CI=true``) it fails, because a CI run that silently skips its integration tests proves nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import NoReturn, Protocol, TypeVar

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def server_missing(reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) because a server the test needs is not available."""
    if IN_CI:
        pytest.fail(f"server required in CI is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Stoppable)


def running(start: Callable[[], S], start_error: type[Exception]) -> Iterator[S]:
    """Body of a private-server fixture (``yield from running(...)``): start the server, or skip / fail via
    :func:`server_missing` when it cannot start; stop it after the tests."""
    try:
        server = start()
    except start_error as exc:
        server_missing(str(exc))
    try:
        yield server
    finally:
        server.stop()
