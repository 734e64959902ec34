"""The terminal progress line: env steps, updates/s, the latest score of each grid point, ETA.

On a terminal the line is redrawn in place once a second; otherwise (a log
file, CI) a full line is printed every 10 seconds. Scores are shown per grid
point (never averaged over points) beside the environment's random and optimal
scores, so a number can be read without knowing the environment.
"""

from __future__ import annotations

import sys
import time

MAX_POINTS_SHOWN = 4  # more points: the best and the worst


def clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(seconds)
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d {h:02d}:{m:02d}:{s:02d}"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def scores_text(latest: tuple[int, list[float]] | None, names: list[str], scale: dict | None) -> str:
    """'eval 0.376 @ 5,000', per point when there are several, and the random/optimal levels."""
    if latest is None:
        text = "eval --"
    else:
        env_steps, means = latest
        if len(means) == 1:
            text = f"eval {means[0]:.3f} @ {env_steps:,}"
        elif len(means) <= MAX_POINTS_SHOWN:
            text = f"eval @ {env_steps:,}: " + ", ".join(f"{n} {m:.3f}" for n, m in zip(names, means))
        else:
            best = max(range(len(means)), key=means.__getitem__)
            worst = min(range(len(means)), key=means.__getitem__)
            text = (
                f"eval @ {env_steps:,} ({len(means)} points): best {names[best]} {means[best]:.3f}, "
                f"worst {names[worst]} {means[worst]:.3f}"
            )
    if scale is not None and scale["optimal"]["score"] is not None:
        text += f" (random {scale['random']['score']:.3g}, optimal {scale['optimal']['score']:.3g})"
    return text


class Progress:
    def __init__(
        self,
        total_steps: int,
        total_updates: int,
        enabled: bool = True,
        stream=None,
        names: list[str] | None = None,
        scale: dict | None = None,
    ):
        self.total_steps, self.total_updates = total_steps, total_updates
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.names = names or [""]  # grid point names (launch/results.py point_names)
        self.scale = scale  # envs/scores.py reference_scores, or None
        self.tty = self.stream.isatty()
        self.period = 1.0 if self.tty else 10.0
        self.start = time.monotonic()
        self.last_print = 0.0
        self.history: list[tuple[float, int, int]] = []  # (time, steps, updates)

    def rates(self, steps: int, updates: int) -> tuple[float, float, float]:
        """(env steps/s, updates/s over the last 30 s, ETA in s)."""
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
        return steps_rate, update_rate, eta

    def line(self, steps: int, updates: int, latest: tuple[int, list[float]] | None) -> str:
        _, update_rate, eta = self.rates(steps, updates)
        pct = 100.0 * steps / max(self.total_steps, 1)
        return (
            f"steps {steps:,}/{self.total_steps:,} ({pct:4.1f}%) | updates {updates:,} | "
            f"{update_rate:,.0f} upd/s | {scores_text(latest, self.names, self.scale)} | "
            f"elapsed {clock(time.monotonic() - self.start)} | ETA {clock(eta)}"
        )

    def show(self, steps: int, updates: int, latest: tuple[int, list[float]] | None) -> None:
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
