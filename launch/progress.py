"""The terminal progress line: env steps, updates/s, latest mean evaluation score, ETA.

On a terminal the line is redrawn in place once a second; otherwise (a log
file, CI) a full line is printed every 10 seconds.
"""

from __future__ import annotations

import sys
import time


def clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    def __init__(self, total_steps: int, total_updates: int, enabled: bool = True, stream=None):
        self.total_steps, self.total_updates = total_steps, total_updates
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = self.stream.isatty()
        self.period = 1.0 if self.tty else 10.0
        self.start = time.monotonic()
        self.last_print = 0.0
        self.history: list[tuple[float, int, int]] = []  # (time, steps, updates)

    def line(self, steps: int, updates: int, latest: tuple[int, float] | None) -> str:
        now = time.monotonic()
        self.history.append((now, steps, updates))
        while len(self.history) > 2 and now - self.history[0][0] > 30:
            self.history.pop(0)
        t0, s0, u0 = self.history[0]
        dt = max(now - t0, 1e-9)
        steps_rate, update_rate = (steps - s0) / dt, (updates - u0) / dt
        if updates > 0 and update_rate > 0:
            eta = (self.total_updates - updates) / update_rate
        elif steps_rate > 0:
            eta = (self.total_steps - steps) / steps_rate
        else:
            eta = float("inf")
        score = f"eval {latest[1]:.3f} @ {latest[0]:,}" if latest else "eval --"
        pct = 100.0 * steps / max(self.total_steps, 1)
        return (
            f"steps {steps:,}/{self.total_steps:,} ({pct:4.1f}%) | updates {updates:,} | "
            f"{update_rate:,.0f} upd/s | {score} | elapsed {clock(now - self.start)} | ETA {clock(eta)}"
        )

    def show(self, steps: int, updates: int, latest: tuple[int, float] | None) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last_print < self.period:
            return
        self.last_print = now
        text = self.line(steps, updates, latest)
        if self.tty:
            self.stream.write("\r\033[K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
