"""Figures: learning curves per grid point (`plot_runs`), the offline experiment's Figure 1 and
PanFlute's smoothing diagnostic (Figure 4, left: `plot_smoothing`).

A learning curve is the greedy evaluation score of each grid point of each run.
With fewer than BAND_MIN_MEMBERS members per point every member is drawn as a thin
line beside their mean (a bootstrap of so few values would draw a band narrower than
the truth: launch/stats.py); with at least that many, the mean with a 95%
percentile-bootstrap band (`bootstrap_ci`), cut to the range the score can take. The
title names agent, environment, parameters and regime; the y axis the metric and
its unit; dashed lines mark the environment's random and optimal scores
(envs/scores.py). Runs of different environments on one axis get a warning.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from mbgen.envs.scores import reference_scores  # noqa: E402
from mbgen.launch.run.results import curves, load_run, point_names  # noqa: E402
from mbgen.launch.stats import BOOTSTRAP_MIN_MEMBERS, bootstrap_ci  # noqa: E402
from mbgen.learner.config import RunConfig  # noqa: E402

BAND_MIN_MEMBERS = BOOTSTRAP_MIN_MEMBERS  # fewer members per point: one thin line each instead of a band


def env_text(cfg: RunConfig) -> str:
    params = ", ".join(f"{k}={v}" for k, v in cfg.run.env_params.items() if k != "spontaneous")
    events = "" if cfg.run.env_params.get("spontaneous", True) else ", no spontaneous events"
    return f"{cfg.run.env}({params}{events})"


def y_label(cfg: RunConfig) -> str:
    if cfg.env_spec.episodic:
        return f"return per episode (greedy, episodes of at most {cfg.learning.eval_steps} steps)"
    return f"reward per step (greedy, {cfg.learning.eval_steps}-step episodes)"


def title_of(cfgs: list[RunConfig]) -> str:
    """What the figure shows: agent(s), environment and parameters, regime, the step size and
    temperature where all runs share one, and the seeds per point."""
    agents = sorted({c.run.agent for c in cfgs})
    environments = sorted({env_text(c) for c in cfgs})
    regimes = sorted({c.run.regime for c in cfgs})
    parts = [
        " vs ".join(agents) + " on " + (environments[0] if len(environments) == 1 else "several environments"),
        " and ".join(regimes) + "-data regime",
    ]
    lrs = {v for c in cfgs for v in c.grid_lr}
    temperatures = {v for c in cfgs for v in c.grid_temperature}
    if len(lrs) == 1:
        parts.append(f"lr {next(iter(lrs)):g}")
    if len(temperatures) == 1:
        parts.append(f"temperature {next(iter(temperatures)):g}")
    seeds = {len(c.run.seeds) for c in cfgs}
    if len(seeds) == 1:
        n = next(iter(seeds))
        parts.append(f"{n} seed{'s' if n != 1 else ''} per point")
    return ", ".join(parts)


def environment_warning(run_dirs: list[str], cfgs: list[RunConfig]) -> str | None:
    """A warning when the runs do not share one environment setting (their scores differ in kind)."""
    settings = {env_text(c) for c in cfgs}
    if len(settings) <= 1:
        return None
    listing = "; ".join(f"{d}: {env_text(c)}" for d, c in zip(run_dirs, cfgs))
    return f"runs of different environments share one axis, their scores are not comparable ({listing})"


def draw_points(ax, run_dir: str, cfg: RunConfig, rows: list[dict], label: str, colors) -> tuple[list, list]:
    """A run's learning curves on `ax`, point by point (members or a band, see the module docstring);
    `label` prefixes the legend entries ("" names points only). Returns (what was drawn, the scores'
    lowest and highest values)."""
    if not rows:
        raise ValueError(f"{run_dir} has no evaluations in metrics.jsonl")
    bounds = cfg.env_spec.score_range(cfg.learning.eval_steps)
    steps, per_member = curves(rows)
    drawn, low_high = [], []
    points = cfg.point_labels()
    for point, name in zip(points, point_names(points)):
        members = [m for m in point["members"] if m in per_member]
        scores = np.stack([per_member[m] for m in members])  # [S, T]
        c = next(colors)
        text = f"{label} {name}".strip()
        mean = scores.mean(axis=0)
        if len(members) == 1:
            ax.plot(steps, mean, color=c, lw=2, label=f"{text}: 1 seed")
        elif len(members) < BAND_MIN_MEMBERS:
            for member_scores in scores:
                ax.plot(steps, member_scores, color=c, lw=0.7, alpha=0.45)
            ax.plot(steps, mean, color=c, lw=2, label=f"{text}: mean of {len(members)} seeds (thin: each seed)")
        else:
            low, high = bootstrap_ci(scores)
            low, high = np.maximum(low, bounds[0]), np.minimum(high, bounds[1])
            ax.plot(steps, mean, color=c, lw=2, label=f"{text}: mean of {len(members)} seeds, 95% bootstrap CI")
            ax.fill_between(steps, low, high, color=c, alpha=0.25, lw=0)
        low_high += [float(scores.min()), float(scores.max())]
        style = "members" if len(members) < BAND_MIN_MEMBERS else "band"
        drawn.append({"run": run_dir, "point": name, "seeds": point["seeds"], "style": style})
    return drawn, low_high


def draw_scale(ax, cfg: RunConfig, low_high: list[float]) -> None:
    """The environment's random and optimal scores as dashed lines; y limits within the score's range."""
    scale = reference_scores(cfg.run.env, cfg.run.env_params, cfg.learning.eval_steps)
    for level, style in (("optimal", "--"), ("random", ":")):
        value = scale[level]["score"]
        if value is None:
            continue
        ax.axhline(value, color="0.35", ls=style, lw=1)
        ax.annotate(
            f"{level} {value:.3g}",
            (1.0, value),
            xycoords=("axes fraction", "data"),
            xytext=(-4, 3),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="0.3",
        )
        low_high = low_high + [value]
    bounds = cfg.env_spec.score_range(cfg.learning.eval_steps)
    lo, hi = min(low_high), max(low_high)
    margin = 0.06 * (hi - lo or 1.0)
    ax.set_ylim(max(lo - margin, bounds[0]), min(hi + margin, bounds[1]))


def colour_cycle():
    return iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10)


def plot_runs(run_dirs: list[str], out_path, title: str | None = None, image_format: str | None = None) -> dict:
    """Draw the runs' learning curves, point by point, into `out_path` (a path, or a binary file with
    `image_format`, e.g. "png"). Returns what was drawn:
    {"warnings": [for the reader], "curves": [{"run", "point", "seeds", "style"}], "title"}, where
    style is "members" (thin line per member and their mean) or "band" (mean and bootstrap CI)."""
    loaded = [load_run(d) for d in run_dirs]
    cfgs = [run.config for run in loaded]
    warnings = [w for w in [environment_warning(run_dirs, cfgs)] if w]
    drawn: list[dict] = []
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = colour_cycle()
    low_high: list[float] = []
    for run_dir, run in zip(run_dirs, loaded):
        cfg, rows = run.config, run.rows
        label = "" if len(run_dirs) == 1 else f"{cfg.run.agent} {env_text(cfg)}"
        run_drawn, run_low_high = draw_points(ax, run_dir, cfg, rows, label, colors)
        drawn += run_drawn
        low_high += run_low_high
    if not warnings:  # one environment setting: its scale
        draw_scale(ax, cfgs[0], low_high)
    ax.set_xlabel("env steps per member")
    ax.set_ylabel(y_label(cfgs[0]) if len({y_label(c) for c in cfgs}) == 1 else "greedy evaluation score")
    title = title or title_of(cfgs)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(out_path, dpi=120, format=image_format)
    plt.close(fig)
    return {"warnings": warnings, "curves": drawn, "title": title}


def save_with_caption(fig, out_path: str, caption: str, top: float, dpi: int) -> str:
    """Write a figure with a one-line grey caption under its panels."""
    fig.text(0.5, 0.005, caption, ha="center", fontsize=8, color="0.3")
    fig.tight_layout(rect=(0, 0.04, 1, top))
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return out_path


def last_smoothing(run_dir: str) -> dict | None:
    """The newest PanFlute smoothing diagnostics in a run's events.jsonl (modelserver/diagnostics.py),
    with the model update they were measured at, or None."""
    path = os.path.join(run_dir, "events.jsonl")
    found = None
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                if '"rewarding_next_by_active_ends"' not in line:
                    continue
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a killed process
                found = event
    if found is None:
        return None
    keys = ("reward_by_active_ends", "rewarding_next_by_active_ends", "model_updates")
    return {k: found.get(k) for k in keys}


def plot_smoothing(series: dict[str, dict], num_pipes: int, out_path: str, title: str) -> str:
    """The paper's Figure 4 (left): per model, the mean predicted reward by the number of pipe ends
    active now, and the predicted probability that every end is active next by the number active in
    the true next state; the truth (grey) is 0 but for all n ends."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ends = np.arange(num_pipes + 1)
    truth = (ends == num_pipes).astype(float)
    keys = (
        ("reward_by_active_ends", "active pipe ends now", "predicted reward"),
        ("rewarding_next_by_active_ends", "active pipe ends at the next step (true)", "P(all ends active next)"),
    )
    for ax, (key, xlabel, ylabel) in zip(axes, keys):
        ax.plot(ends, truth, color="0.5", ls="--", marker="o", ms=3, lw=1, label="truth")
        for label, values in series.items():
            y = np.array([np.nan if v is None else v for v in values[key]], dtype=float)
            ax.plot(np.arange(y.size), y, marker="o", ms=4, lw=1.6, label=label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xticks(ends)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    caption = (
        "probe: 80% of actions play the rewarding cycle, 20% at random; a model above the grey truth "
        "before n ends has smoothed reward or dynamics (a signal for exploration)"
    )
    return save_with_caption(fig, out_path, caption, top=0.95, dpi=120)
