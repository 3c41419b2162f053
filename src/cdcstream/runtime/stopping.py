"""Stopping for sure: a stop signal ends the process within a bound, whatever state it is in.

Three pieces, because no single one is enough on Python 3.11:

* :func:`cancel_and_wait` cancels a task and waits for it, cancelling again every second while it still runs.
  A cancellation can be lost once (CPython 3.11's ``asyncio.wait_for`` returns the inner result when the
  cancel coincides with it; a library may catch ``CancelledError``); a lost one is not lost twice in a row.
  It never swallows a cancellation of its own caller (``asyncio.wait`` propagates it), unlike the
  ``with suppress(CancelledError): await task`` idiom.
* :func:`first_or_stop` runs a step (connecting, creating a slot, DescribeStreamSummary) until it ends or a
  stop is requested, whichever comes first: start-up never makes a stop wait for a deadline of its own.
* :class:`Deadline` is the backstop: armed at the first stop request (or when the run ends for another reason,
  a fatal error or a completed full load), a daemon thread (independent of the event loop, so it fires even
  while the loop is blocked or the interpreter is joining threads at exit) ends the process when the bound has
  passed. Safe, as after SIGKILL: nothing unacknowledged was ever
  checkpointed, and the next start replays from the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Awaitable, Iterable
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Seconds between repeated cancellations of a task that is still running after being cancelled.
RECANCEL_INTERVAL = 1.0


class StopRequested(Exception):
    """A stop was requested while a step (start-up) was still running; the step was cancelled."""


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]] | asyncio.Task[object]) -> None:
    """Cancel ``tasks`` and wait until every one has ended, cancelling again the ones still running every
    :data:`RECANCEL_INTERVAL` seconds. Their own exceptions are retrieved and dropped (whoever needs them
    reads them from the task); a cancellation of the caller propagates."""
    every = [tasks] if isinstance(tasks, asyncio.Task) else list(tasks)
    pending = set(every)
    rounds = 0
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=RECANCEL_INTERVAL)
        rounds += 1
        if pending and (rounds in (1, 5) or rounds % 30 == 0):
            log.warning("tasks still running after cancellation, cancelling again", tasks=_names(pending))
    for task in every:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved


async def first_or_stop(step: Awaitable[T], stop: asyncio.Event) -> T:
    """``step``'s result, or :class:`StopRequested` as soon as ``stop`` is set (``step`` is then cancelled and
    waited for). The step's own exceptions propagate."""
    if stop.is_set():
        if asyncio.iscoroutine(step):
            step.close()  # never started: no "coroutine was never awaited" warning
        raise StopRequested
    task = asyncio.ensure_future(step)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            await cancel_and_wait(task)
        await cancel_and_wait(stopper)
    if task.cancelled():
        raise StopRequested
    return task.result()


def _names(tasks: Iterable[asyncio.Task[object]]) -> list[str]:
    return sorted(t.get_name() for t in tasks)


class Deadline:
    """Ends the process ``seconds`` after :meth:`arm` unless it exited before (see the module docstring)."""

    def __init__(self, seconds: float, exit_code: int) -> None:
        self.seconds = seconds
        #: What the process exits with when the deadline passes; the pipeline sets its own exit code once it
        #: has one, so that a hang in closing alone (threads joining at exit) keeps it.
        self.exit_code = exit_code
        self._timer: threading.Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start the countdown (once; later calls keep the first deadline)."""
        if self._timer is not None:
            return
        self._loop = loop
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.name = "stop-deadline"
        self._timer.daemon = True
        self._timer.start()

    def _expire(self) -> None:
        tasks: list[str] = []
        if self._loop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # from another thread: best effort, for the log line only
                tasks = _names(asyncio.all_tasks(self._loop))
        threads = sorted(t.name for t in threading.enumerate() if t is not threading.current_thread())
        log.error(
            f"stop did not complete within {self.seconds:.0f} s; exiting now (safe: nothing unacknowledged was "
            "checkpointed, the next start replays from the checkpoint)",
            exit_code=self.exit_code,
            tasks=tasks,
            threads=threads,
        )
        sys.stderr.flush()
        os._exit(self.exit_code)
