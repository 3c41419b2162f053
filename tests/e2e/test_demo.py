"""`make demo` keeps working: the demo script brings everything up and records flow (README quick start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_records_flowing() -> None:
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--exit-after", "1"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = res.stdout
    for needle in (
        '"RestartTask"',
        '"operation":"insert"',
        '"operation":"update"',
        '"operation":"delete"',
        '"TruncateTable"',
    ):
        assert needle in out, f"{needle} not in demo output:\n{out[-3000:]}"
    assert out.index('"TruncateTable"') < out.rindex('"operation":"insert"')
