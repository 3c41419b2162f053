"""The switch over the optional compiled extensions (the fused row paths, the PutRecords body, the workers'
frames): ``CDCSTREAM_PURE=1`` in the environment sends every one to its pure-Python reference, and each says
which path a process runs in the same words."""

from __future__ import annotations

import os


def pure_requested() -> bool:
    """True when ``CDCSTREAM_PURE`` is set to anything but empty or ``0``."""
    return os.environ.get("CDCSTREAM_PURE", "") not in ("", "0")


def path_name(built: bool, agrees: bool, caveat: str | None) -> str:
    """Which row path runs, for log lines and ``cdcstream check``: ``built`` (the extension imported), ``agrees``
    (it writes what this orjson writes), and ``caveat`` (None, or what still goes to the pure path)."""
    if not built:
        return "pure (the compiled extension is not built)"
    if not agrees:
        return "pure (the compiled extension disagrees with this orjson)"
    if pure_requested():
        return "pure (CDCSTREAM_PURE is set)"
    return "compiled fused" + (f" ({caveat})" if caveat else "")
