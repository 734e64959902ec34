"""Results of a run: metrics.jsonl reading, final scores with 95% confidence intervals, summary.json.

A member's final score is the mean of its last 10% of evaluations (at least
one). The run's final performance is the mean over members with a Student-t
95% confidence interval, as in the paper's figures.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import defaultdict

import numpy as np

from learner.config import RunConfig

# Two-sided 95% Student-t quantiles t_{0.975, df}.
_T975 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    11: 2.201,
    12: 2.179,
    13: 2.160,
    14: 2.145,
    15: 2.131,
    16: 2.120,
    17: 2.110,
    18: 2.101,
    19: 2.093,
    20: 2.086,
    21: 2.080,
    22: 2.074,
    23: 2.069,
    24: 2.064,
    25: 2.060,
    26: 2.056,
    27: 2.052,
    28: 2.048,
    29: 2.045,
    30: 2.042,
    40: 2.021,
    60: 2.000,
    120: 1.980,
}


def t975(df: int) -> float:
    if df in _T975:
        return _T975[df]
    larger = [d for d in _T975 if d > df]
    return _T975[min(larger)] if larger else 1.960


def mean_ci95(values) -> tuple[float, float, float]:
    """(mean, low, high); the interval collapses to the mean for a single value."""
    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean()) if v.size else float("nan")
    if v.size < 2:
        return mean, mean, mean
    half = t975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return mean, mean - half, mean + half


def read_metrics(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut short by an interruption
    return rows


def curves(rows: list[dict]) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(env steps of complete evaluation points, {member: scores at those points})."""
    by_point: dict[int, dict[int, float]] = defaultdict(dict)
    for r in rows:
        by_point[int(r["env_steps"])][int(r["member"])] = float(r["eval_return"])
    members = sorted({int(r["member"]) for r in rows})
    points = sorted(p for p, v in by_point.items() if len(v) == len(members))
    return np.array(points), {m: np.array([by_point[p][m] for p in points]) for m in members}


def final_scores(rows: list[dict]) -> list[float]:
    _, per_member = curves(rows)
    finals = []
    for m in sorted(per_member):
        scores = per_member[m]
        if scores.size:
            tail = max(1, int(math.ceil(0.1 * scores.size)))
            finals.append(float(scores[-tail:].mean()))
    return finals


class MetricsTail:
    """Follows metrics.jsonl as the evaluator appends; `latest()` is the newest complete point's mean."""

    def __init__(self, path: str, members: int):
        self.path, self.members = path, members
        self.offset = 0
        self.points: dict[int, list[float]] = defaultdict(list)
        self.complete: tuple[int, float] | None = None

    def poll(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path) as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind("\n") + 1
        self.offset += len(chunk[:end].encode())
        for line in chunk[:end].splitlines():
            row = json.loads(line)
            point = int(row["env_steps"])
            self.points[point].append(float(row["eval_return"]))
            if len(self.points[point]) == self.members:
                self.complete = (point, float(np.mean(self.points.pop(point))))

    def latest(self) -> tuple[int, float] | None:
        return self.complete


def session_wall_s(events_path: str) -> float:
    """Wall seconds of the run's sessions so far: from each run_started to that session's last event."""
    total, start, last = 0.0, None, None
    if not os.path.exists(events_path):
        return 0.0
    with open(events_path) as f:
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by a killed process
            t = event.get("t")
            if not isinstance(t, (int, float)):
                continue
            if event.get("event") == "run_started":
                if start is not None:
                    total += last - start
                start = t
            last = t
    if start is not None:
        total += last - start
    return total


def learned_rows(rows: list[dict], learning_starts: int) -> list[dict]:
    """Evaluations of a policy that had started learning (env_steps past learning_starts)."""
    return [r for r in rows if int(r["env_steps"]) > learning_starts]


def write_summary(
    run_dir: str, cfg: RunConfig, counters, started: float, outcome: str, reason: str = "", restarts=()
) -> dict:
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    # A run that did not complete reports its score as partial, from evaluations after learning began.
    scored = rows if outcome == "completed" else learned_rows(rows, cfg.learning_starts)
    finals = final_scores(scored)
    mean, lo, hi = mean_ci95(finals) if finals else (None, None, None)
    points = sorted({int(r["env_steps"]) for r in scored})
    wall = session_wall_s(os.path.join(run_dir, "events.jsonl")) or time.time() - started
    accounting = counters.accounting() if counters is not None else {}
    reconciled, problems = counters.reconciles() if counters is not None and not cfg.offline else (False, "")
    updates = counters.updates if counters is not None else 0
    steps = int(counters.inserts().sum()) if counters is not None else 0
    first, last = counters.update_times.tolist() if counters is not None else (0.0, 0.0)
    update_phase = last - first if first and last > first else 0.0
    summary = {
        "outcome": outcome,
        "reason": reason,
        "agent": cfg.agent,
        "env": cfg.env,
        "env_params": cfg.env_params,
        "regime": cfg.regime,
        "seeds": cfg.seeds,
        "final": {
            "mean": mean,
            "ci95": [lo, hi],
            "per_member": finals,
            "evaluations": len({r["env_steps"] for r in rows}),
            "partial": outcome != "completed",
            "from_env_steps": [points[-max(1, int(math.ceil(0.1 * len(points))))], points[-1]] if points else None,
        },
        "throughput": {
            "env_steps_per_s": steps / wall if wall > 0 else 0.0,
            "updates_per_s": updates / wall if wall > 0 else 0.0,
            "member_updates_per_s": updates * cfg.members / wall if wall > 0 else 0.0,
            "update_phase_updates_per_s": (updates - 1) / update_phase if update_phase > 0 else 0.0,
            "wall_s": wall,
            "env_steps": steps,
            "updates": updates,
        },
        "transitions": {
            k: accounting.get(k, 0)
            for k in ("sent", "stored", "rejected", "rejected_messages", "duplicates", "lost_in_flight")
        },
        "reconciled": reconciled,
        "reconciliation": problems,
        "restarts": len(restarts),
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if rows:
        from launch.plots import plot_runs

        plot_runs([run_dir], os.path.join(run_dir, "curve.png"))
    return summary
