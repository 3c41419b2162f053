"""Stopping for sure (runtime/stopping.py, runtime/signals.py) and the cancellation race that defeated it.

On CPython 3.11 ``asyncio.wait_for`` returns the inner result when a cancellation arrives in the same loop
iteration as that result, swallowing the cancellation; the PostgreSQL reader waited for its socket that way, so
under load a stop signal was sometimes ignored and streaming went on. These tests reproduce the race
deterministically (the result and the cancellation in one step) instead of hoping for it.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import textwrap

import pytest

from cdcstream.errors import SinkError, SinkRetriableError
from cdcstream.runtime.stopping import StopRequested, cancel_and_wait, first_or_stop
from cdcstream.sources.postgres.replication import ReplicationConnection
from tests.support import free_port


async def test_replication_wait_honours_a_cancellation_that_coincides_with_readiness() -> None:
    """The reader's socket wait (read_batch's) must end cancelled, not return True, when the socket turns
    readable in the same iteration as the stop's cancellation."""
    a, b = socket.socketpair()
    try:
        conn = ReplicationConnection("")
        task = asyncio.create_task(conn._wait_fd(a.fileno(), max_wait=5.0))
        await asyncio.sleep(0)  # the task now waits on its future
        waiter = conn._reader_waiter
        assert waiter is not None
        waiter.set_result(None)  # readable ...
        task.cancel()  # ... and cancelled, in the same step
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        a.close()
        b.close()


async def test_replication_wait_still_times_out_and_wakes_on_data() -> None:
    a, b = socket.socketpair()
    try:
        conn = ReplicationConnection("")
        assert await conn._wait_fd(a.fileno(), max_wait=0.05) is False
        assert await conn._wait_fd(a.fileno(), max_wait=0) is False
        b.send(b"x")
        assert await conn._wait_fd(a.fileno(), max_wait=5.0) is True
    finally:
        a.close()
        b.close()


async def test_cancel_and_wait_cancels_again_a_task_that_swallowed_the_first_cancellation() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed > 1:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and swallowed == 2


async def test_cancel_and_wait_does_not_swallow_its_callers_cancellation() -> None:
    async def slow_to_die() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            await asyncio.sleep(0.3)  # clean-up that takes a while

    async def caller(task: asyncio.Task[None]) -> str:
        await cancel_and_wait(task)
        return "went on after being cancelled"

    inner = asyncio.create_task(slow_to_die())
    outer = asyncio.create_task(caller(inner))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer


async def test_first_or_stop_returns_the_result_or_stops_the_step() -> None:
    stop = asyncio.Event()
    assert await first_or_stop(asyncio.sleep(0, result=7), stop) == 7

    cancelled = asyncio.Event()

    async def start() -> None:
        try:
            await asyncio.sleep(60)  # e.g. DescribeStreamSummary against an unreachable endpoint
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(StopRequested):
        await first_or_stop(start(), stop)
    assert cancelled.is_set()
    with pytest.raises(StopRequested):  # already stopping: the step does not even start
        await first_or_stop(start(), stop)


async def test_first_or_stop_passes_the_steps_error_on() -> None:
    async def fails() -> None:
        raise SinkError("stream missing")

    with pytest.raises(SinkError, match="stream missing"):
        await first_or_stop(fails(), asyncio.Event())


def test_deadline_ends_a_process_whose_stop_hangs() -> None:
    """Armed, the deadline exits the process even while the event loop is blocked (here: time.sleep in it)."""
    code = textwrap.dedent(
        """
        import asyncio, time
        from cdcstream.runtime.stopping import Deadline

        async def main():
            Deadline(0.3, 130).arm(asyncio.get_running_loop())
            time.sleep(30)  # a stop that never finishes, blocking the loop

        asyncio.run(main())
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.returncode == 130, res.stderr
    assert "stop did not complete" in res.stdout + res.stderr


def test_a_signal_during_start_up_is_replayed_not_fatal() -> None:
    """``cdcstream run`` catches SIGTERM from its first instant; before the pipeline takes over it is recorded
    (the process does not die of it), and a second one exits with 130."""
    code = textwrap.dedent(
        """
        import os, signal, sys
        sys.argv = ["cdcstream", "run"]
        from cdcstream.runtime.signals import catch_early, take_early
        catch_early()
        os.kill(os.getpid(), signal.SIGTERM)
        print("caught", take_early() == [signal.SIGTERM], flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        print("not reached")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert res.stdout.splitlines() == ["caught True"], res.stdout + res.stderr
    assert res.returncode == 130


async def test_sink_start_with_kinesis_unreachable_is_retriable_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable endpoint is a connection error: retried (forever, by the pipeline), never exit 5 after a
    start-up deadline. No server is needed: nothing listens on the port."""
    from cdcstream.config import TargetConfig
    from cdcstream.sinks.kinesis import KinesisSink

    for name, value in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test")):
        monkeypatch.setenv(name, value)
    cfg = TargetConfig(stream_name="s", endpoint_url=f"http://127.0.0.1:{free_port()}", request_timeout=5)
    sink = KinesisSink(cfg, lambda records: None)
    with pytest.raises(SinkRetriableError, match="unreachable"):
        await sink.start()
    await sink.close()
