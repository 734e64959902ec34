"""Results of a run: metrics.jsonl reading, final scores with 95% confidence intervals, summary.json.

A member's final score is the mean of its last 10% of evaluations (at least
one). Each grid point's final performance is the mean over its members with a
Student-t 95% confidence interval, as in the paper's figures, cut to the range
the score can take (a single member has none: [None, None]); points are reported
side by side, never averaged together.
Plots use a percentile bootstrap instead (launch/stats.py holds every statistic). The summary also
carries the environment's random and optimal scores (envs/scores.py).
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from mbgen.launch.options import load_toml
from mbgen.launch.stats import clip_interval, mean_ci95
from mbgen.learner.config import RunConfig


@dataclass(frozen=True)
class Run:
    """A run directory as data: `pandas.DataFrame(run.metrics)` is its evaluation table."""

    path: str
    config: RunConfig  # the resolved configuration (config.toml)
    rows: list[dict]  # metrics.jsonl: one dict per evaluation point and member
    summary: dict | None  # summary.json, or None while the run goes on

    @property
    def metrics(self) -> dict[str, list]:
        """The evaluations as columns (METRICS_FIELDS order first): pandas-ready, no pandas needed."""
        names = list(dict.fromkeys(k for row in self.rows for k in row))
        return {k: [row.get(k) for row in self.rows] for k in names}


def load_run(run_dir: str) -> Run:
    """A run directory's resolved configuration, metrics rows and summary (refuses a directory without config)."""
    path = os.path.join(run_dir, "config.toml")
    if not os.path.exists(path):
        raise ValueError(f"{run_dir} is not a run directory (no config.toml)")
    summary_path = os.path.join(run_dir, "summary.json")
    summary = None
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    return Run(os.path.abspath(run_dir), RunConfig.from_dict(load_toml(path)), rows, summary)


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


def tail_mean(scores: np.ndarray) -> float:
    """A member's final score: the mean of its last 10% of evaluations (at least one)."""
    tail = max(1, int(math.ceil(0.1 * scores.size)))
    return float(scores[-tail:].mean())


def final_scores(rows: list[dict]) -> list[float]:
    """Every member's final score, in member order."""
    _, per_member = curves(rows)
    return [tail_mean(per_member[m]) for m in sorted(per_member) if per_member[m].size]


def point_finals(cfg: RunConfig, rows: list[dict], bounds: tuple[float, float] | None = None) -> list[dict]:
    """summary.json's "points": per (lr, temperature) point, its members and their final scores with
    the mean and a Student-t 95% interval (cut to `bounds`, the score's possible range; [None, None]
    for a single member: no interval, never a zero-width one)."""
    finals = dict(zip(sorted(curves(rows)[1]), final_scores(rows)))
    evaluations = len({r["env_steps"] for r in rows})
    points = []
    for point in cfg.point_labels():
        per_member = [finals[m] for m in point["members"] if m in finals]
        mean, lo, hi = mean_ci95(per_member) if per_member else (None, None, None)
        lo, hi = clip_interval(lo, hi, bounds)
        final = {"mean": mean, "ci95": [lo, hi], "per_member": per_member, "evaluations": evaluations}
        points.append({**point, "final": final})
    return points


def run_final(points: list[dict]) -> dict:
    """summary.json's "final": the point's own for a single-point run; with several points, each
    point separately under "per_point" (mean and ci95 stay None: points are never averaged)."""
    if len(points) == 1:
        return points[0]["final"]
    return {
        "mean": None,
        "ci95": [None, None],
        "per_member": [x for p in points for x in p["final"]["per_member"]],
        "evaluations": points[0]["final"]["evaluations"],
        "per_point": [
            {"group": p["group"], "lr": p["lr"], "temperature": p["temperature"], **p["final"]} for p in points
        ],
    }


def point_names(points: list[dict]) -> list[str]:
    """Short names of grid points, naming only what varies: "lr=0.0001", "lr=0.0001 T=0.4"; a single
    point is named by both values."""
    vary_lr = len({p["lr"] for p in points}) > 1
    vary_t = len({p["temperature"] for p in points}) > 1
    if not (vary_lr or vary_t):
        vary_lr = vary_t = True
    return [
        " ".join(([f"lr={p['lr']:g}"] if vary_lr else []) + ([f"T={p['temperature']:g}"] if vary_t else []))
        for p in points
    ]


def scale_of(cfg: RunConfig) -> dict:
    """The environment's random and optimal scores on this run's protocol (envs/scores.py)."""
    from mbgen.envs.scores import reference_scores

    return reference_scores(cfg.run.env, cfg.run.env_params, cfg.learning.eval_steps)


class MetricsTail:
    """Follows metrics.jsonl as the evaluator appends. `poll()` returns the evaluations completed
    since the last call (env steps, updates, every member's score); `latest()` is the newest one as
    (env steps, mean score of each grid point's members)."""

    def __init__(self, path: str, groups: list[int]):
        self.path = path
        self.groups = np.asarray(groups)  # each member's grid point
        self.offset = 0
        self.pending: dict[int, dict[int, float]] = defaultdict(dict)
        self.updates: dict[int, int] = {}
        self.complete: tuple[int, list[float]] | None = None

    def poll(self, until: int | None = None) -> list[tuple[int, int, np.ndarray]]:
        """`until`: read no further than that byte offset."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = (f.read() if until is None else f.read(max(0, until - self.offset))).decode(errors="replace")
        end = chunk.rfind("\n") + 1
        self.offset += len(chunk[:end].encode())
        done = []
        for line in chunk[:end].splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short when an earlier session was killed
            point = int(row["env_steps"])
            self.pending[point][int(row["member"])] = float(row["eval_return"])
            self.updates[point] = int(row["updates"])
            if len(self.pending[point]) == self.groups.size:
                members = self.pending.pop(point)
                scores = np.array([members[m] for m in range(self.groups.size)])
                done.append((point, self.updates.pop(point), scores))
                means = [float(scores[self.groups == g].mean()) for g in np.unique(self.groups)]
                self.complete = (point, means)
        return done

    def latest(self) -> tuple[int, list[float]] | None:
        return self.complete


def session_wall_s(events_path: str) -> float:
    """Wall seconds of the run's sessions so far: from each run_started to that session's run_finished
    (a session that was killed: its last event before the next run_started). Events between a
    run_finished and the next run_started (a resumed session's processes starting up) belong to no
    session, so the time a run lay stopped is never counted."""
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
            name = event.get("event")
            if name == "run_started":
                if start is not None:
                    total += last - start
                start = last = t
                continue
            if start is None:
                continue  # after a session's end, before the next one starts
            last = t
            if name == "run_finished":
                total += last - start
                start = None
    if start is not None:
        total += last - start
    return total


def learned_rows(rows: list[dict], learning_starts: int) -> list[dict]:
    """Evaluations of a policy that had started learning (env_steps past learning_starts)."""
    return [r for r in rows if int(r["env_steps"]) > learning_starts]
