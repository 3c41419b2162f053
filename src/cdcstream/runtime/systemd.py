"""sd_notify with the standard library: one datagram to ``$NOTIFY_SOCKET`` (a stable, documented protocol).

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING messages to the service manager, if there is one."""

    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = None
        if addr.startswith("@"):  # abstract namespace socket
            self._addr = b"\0" + addr[1:].encode()
        elif addr:
            self._addr = addr
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1_000_000

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def notify(self, *lines: str) -> None:
        if self._addr is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(self._addr)
                sock.sendall("\n".join(lines).encode())
            except OSError:
                pass  # the manager went away; nothing useful to do

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self, status: str = "draining") -> None:
        self.notify("STOPPING=1", f"STATUS={status}")
