"""Exponential backoff with full jitter (AWS architecture blog's "full jitter"): spreads retries of many
clients so they do not throttle again in lockstep."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(slots=True)
class Backoff:
    """Delay generator: ``next()`` returns a random delay in [0, min(max, base * 2**attempt)]."""

    base: float = 0.1
    maximum: float = 30.0
    attempt: int = 0

    def next(self) -> float:
        cap = min(self.maximum, self.base * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return random.uniform(0, cap)

    def reset(self) -> None:
        self.attempt = 0
