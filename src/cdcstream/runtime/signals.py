"""Stop signals from the first instant of ``cdcstream run``, before the pipeline's event loop handles them.

Python's start-up and imports take about a second, during which SIGTERM would kill the process by its default
action. :func:`catch_early` (called first thing, importing nothing heavy) records the signal instead; the
pipeline replays it as soon as its own handlers are installed, so even a stop during start-up is a clean stop
(exit 0). A second signal in that window exits at once with 130, as it does later.
"""

from __future__ import annotations

import os
import signal
from types import FrameType

#: Exit code of a second stop signal (docs/troubleshooting.md, "Exit codes").
EXIT_INTERRUPTED = 130
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_caught: list[int] = []


def _early(signum: int, frame: FrameType | None) -> None:
    if _caught:
        os._exit(EXIT_INTERRUPTED)
    _caught.append(signum)


def catch_early() -> None:
    """Record SIGTERM/SIGINT from now on instead of dying of them (until the pipeline takes them over)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _early)


def take_early() -> list[int]:
    """The signals caught so far (at most one), forgotten once taken."""
    caught = list(_caught)
    _caught.clear()
    return caught
