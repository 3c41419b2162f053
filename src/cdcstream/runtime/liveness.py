"""Is the pipeline alive, as opposed to merely running? The answer gates the systemd watchdog ping.

``WatchdogSec=`` exists to restart a process that is up but hung (systemd.service(5)), so ``WATCHDOG=1`` is
sent only while both loops show signs of life within ``window`` seconds:

* the **reader** went round its loop (the source stamps ``alive_at`` at least every second while streaming,
  data or not), or it is handing a batch to the sink and the sink itself is alive (backpressure from a slow
  or unavailable Kinesis is not a hang);
* the **sink** has nothing outstanding, or a PutRecords request finished (accepted, partially failed or
  failed and scheduled for retry) recently. An outage the sink keeps retrying through counts as alive: a
  restart would not help and would only replay records. A sink with records outstanding and no request
  finishing is wedged.

``window`` must exceed the slowest legitimate gap between request completions, ``request_timeout +
retry_max_delay`` (40 s with the defaults; the shipped units use ``WatchdogSec=60s``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class LoopStamps:
    """What the pipeline knows about its loops at one instant (monotonic seconds)."""

    reader_at: float
    delivering_since: float | None
    sink_outstanding: int
    sink_at: float


def assess(now: float, window: float, s: LoopStamps) -> str | None:
    """None if alive; otherwise why not, for the log line that explains a withheld watchdog ping."""
    sink_wedged = s.sink_outstanding > 0 and now - s.sink_at > window
    if sink_wedged:
        return (
            f"sink: {s.sink_outstanding} records outstanding and no PutRecords request finished "
            f"for {now - s.sink_at:.0f}s"
        )
    if s.delivering_since is not None:
        if s.sink_outstanding == 0 and now - s.delivering_since > window:
            return f"reader: stuck for {now - s.delivering_since:.0f}s handing a batch to an idle sink"
        return None  # waiting for a live sink (backpressure) is fine
    if now - s.reader_at > window:
        return f"reader: no pass through the source's read loop for {now - s.reader_at:.0f}s"
    return None
