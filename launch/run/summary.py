"""A run's summary.json, curve.png and (PanFlute, model agents) smoothing.png, written when it ends.

summary.json: the outcome and its reason; per grid point the final score (mean of each member's
last 10% of evaluations; over members the mean with a Student-t 95% interval cut to the range
the score can take: launch/run/results.py); the environment's scale; throughput; the transition
accounting and whether it reconciles; the number of automatic restarts. A run that did not
complete reports its score as partial, from the evaluations after learning began.
"""

from __future__ import annotations

import json
import math
import os
import time

from mbgen.launch.run.plots import last_smoothing, plot_runs, plot_smoothing
from mbgen.launch.run.results import learned_rows, point_finals, read_metrics, run_final, scale_of, session_wall_s
from mbgen.learner.config import RunConfig
from mbgen.runtime.logs import get_logger
from mbgen.runtime.roles import LOCAL_ACTOR_SLOTS


def write_summary(
    run_dir: str, cfg: RunConfig, counters, started: float, outcome: str, reason: str = "", restarts=(), cluster=None
) -> dict:
    rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    # A run that did not complete reports its score as partial, from evaluations after learning began.
    scored = rows if outcome == "completed" else learned_rows(rows, cfg.learning.learning_starts)
    scale = scale_of(cfg)
    points = point_finals(cfg, scored, tuple(scale["range"]))
    evaluated = sorted({int(r["env_steps"]) for r in scored})
    span = [evaluated[-max(1, int(math.ceil(0.1 * len(evaluated))))], evaluated[-1]] if evaluated else None
    for p in points:
        p["final"].update(partial=outcome != "completed", from_env_steps=span)
    final = run_final(points)
    final.update(partial=outcome != "completed", from_env_steps=span)
    wall = session_wall_s(os.path.join(run_dir, "events.jsonl")) or time.time() - started
    accounting = counters.accounting() if counters is not None else {}
    if cluster is not None and counters is not None:
        accounting = cluster.accounting(accounting, counters)
    reconciled, problems = counters.reconciles() if counters is not None and not cfg.run.offline else (False, "")
    updates = counters.updates if counters is not None else 0
    steps = int(counters.inserts().sum()) if counters is not None else 0
    first, last = counters.update_times.tolist() if counters is not None else (0.0, 0.0)
    update_phase = last - first if first and last > first else 0.0
    summary = {
        "outcome": outcome,
        "reason": reason,
        "agent": cfg.run.agent,
        "env": cfg.run.env,
        "env_params": cfg.run.env_params,
        "regime": cfg.run.regime,
        "seeds": cfg.run.seeds,
        "final": final,
        "points": points,
        "scale": scale,
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
        # every remote actor slot: what its actor claimed beside what the service observed
        "remote_slots": (
            [a for a in counters.per_slot() if a["slot"] >= LOCAL_ACTOR_SLOTS] if counters is not None else []
        ),
        "reconciled": reconciled,
        "reconciliation": problems,
        "restarts": len(restarts),
    }
    if cluster is not None:  # actors on a Ray cluster (launch/run/cluster.py): what each node did, their lag
        summary["nodes"] = cluster.nodes(counters)
        summary["lost_nodes"] = list(cluster.lost_nodes)
        summary["policy_lag"] = cluster.policy_lag()
    try:
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        if rows:
            plot_runs([run_dir], os.path.join(run_dir, "curve.png"))
        draw_smoothing(run_dir, cfg)
    except OSError as error:  # a full disk: the terminal still gets the summary, and one line saying so
        get_logger().warning("summary_not_written", run_dir=run_dir, error=error.strerror or str(error))
    return summary


def draw_smoothing(run_dir: str, cfg: RunConfig) -> None:
    """PanFlute runs of a model agent: smoothing.png, the model's reward and dynamics smoothing
    (the paper's Figure 4, left) at its last diagnostics."""
    found = last_smoothing(run_dir) if cfg.run.env == "panflute" else None
    if found is not None:
        title = (
            f"{cfg.run.agent} model on PanFlute({cfg.run.env_params['num_pipes']}) after {found['model_updates']:,} "
            f"model updates, mean over {cfg.members} members"
        )
        pipes = cfg.run.env_params["num_pipes"]
        plot_smoothing({cfg.run.agent: found}, pipes, os.path.join(run_dir, "smoothing.png"), title)
