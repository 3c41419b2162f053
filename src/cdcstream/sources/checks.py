"""What every engine's ``cdcstream check`` reports: one :class:`CheckResult` per requirement, with the fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CheckResult:
    """One line of the ``cdcstream check`` report.

    ``warning`` marks a passing check that still deserves attention (printed as WARN, exit code unaffected):
    capture works, but some records will carry less than a consumer might expect.
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    warning: bool = False
