"""PhaseTimer: where a process's time goes, per update (sampling, training, publishing, waiting...)."""

from __future__ import annotations

import time
from contextlib import contextmanager


class PhaseTimer:
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.count = 0

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] = self.totals.get(name, 0.0) + seconds

    def tick(self) -> None:
        """One more update done."""
        self.count += 1

    def report(self) -> dict[str, float]:
        """Milliseconds per update for each phase since the last report; resets."""
        n = max(self.count, 1)
        out = {f"{k}_ms": round(v * 1000 / n, 3) for k, v in self.totals.items()}
        self.totals, self.count = {}, 0
        return out
