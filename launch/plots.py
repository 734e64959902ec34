"""Learning curves: mean greedy score over members with a 95% confidence band, per run."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from launch.results import curves, mean_ci95, read_metrics, t975  # noqa: E402


def run_label(run_dir: str) -> str:
    import json

    summary = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary):
        with open(summary) as f:
            s = json.load(f)
        params = ",".join(f"{k}={v}" for k, v in s.get("env_params", {}).items() if k != "spontaneous")
        return f"{s['agent']} {s['env']}({params}) P={len(s['seeds'])}"
    return os.path.basename(os.path.normpath(run_dir))


def plot_runs(run_dirs: list[str], out_path: str, title: str | None = None) -> str:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run_dir in run_dirs:
        rows = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        if not rows:
            raise ValueError(f"{run_dir} has no evaluations in metrics.jsonl")
        points, per_member = curves(rows)
        scores = np.stack([per_member[m] for m in sorted(per_member)])  # [P, T]
        mean = scores.mean(axis=0)
        if scores.shape[0] > 1:
            half = t975(scores.shape[0] - 1) * scores.std(axis=0, ddof=1) / np.sqrt(scores.shape[0])
        else:
            half = np.zeros_like(mean)
        (line,) = ax.plot(points, mean, label=run_label(run_dir))
        ax.fill_between(points, mean - half, mean + half, color=line.get_color(), alpha=0.25)
    ax.set_xlabel("env steps per member")
    ax.set_ylabel("greedy evaluation score (mean, 95% CI)")
    ax.set_title(title or "mbgen learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


__all__ = ["plot_runs", "mean_ci95"]


def plot_offline(results: list[dict], agents: list[str], coverages: list[str], out_path: str) -> str:
    """Figure 1 of the paper: per agent and coverage level, the two evaluation layouts with, in each
    cell, arrows whose length is the fraction of seeds whose greedy action it is (green: optimal)."""
    from matplotlib.patches import Circle, Rectangle

    from envs import wallgrid as wg
    from envs.grid import MOVES

    names = {"er": "DQN + ER", "model1": "model, 1-step", "model10": "model, 10-step"}
    by_key = {(r["agent"], r["coverage"], r["layout"], tuple(r["cell"])): r for r in results}
    fig, axes = plt.subplots(
        len(agents), len(coverages), figsize=(3.2 * len(coverages), 1.9 * len(agents)), squeeze=False
    )
    for i, agent in enumerate(agents):
        for j, coverage in enumerate(coverages):
            ax = axes[i][j]
            rows = [r for k, r in by_key.items() if k[0] == agent and k[1] == coverage]
            failed = any(1.0 - r["optimal_fraction"] > 0.5 for r in rows)
            for layout, walls in enumerate(wg.EVALUATION_LAYOUTS):
                x0 = layout * 3.6
                best = wg.optimal_actions(walls)
                for r in range(3):
                    for c in range(3):
                        y = 2 - r
                        face = "0.25" if (r, c) in walls else ("#ffe9a8" if (r, c) == wg.GOAL_CELL else "white")
                        ax.add_patch(Rectangle((x0 + c, y), 1, 1, facecolor=face, edgecolor="0.6", lw=0.8))
                        if (r, c) == wg.GOAL_CELL:
                            ax.text(x0 + c + 0.5, y + 0.5, "G", ha="center", va="center", fontsize=8)
                        row = by_key.get((agent, coverage, layout, (r, c)))
                        if row is None:
                            continue
                        for a, frac in enumerate(row["action_fractions"]):
                            if frac <= 0:
                                continue
                            color = "tab:green" if best[r, c, a] else "tab:red"
                            cx, cy = x0 + c + 0.5, y + 0.5
                            if a == 0:
                                ax.add_patch(Circle((cx, cy), 0.08 + 0.25 * frac, fill=False, color=color, lw=1.2))
                            else:
                                dr, dc = MOVES[a]
                                ax.arrow(
                                    cx,
                                    cy,
                                    0.45 * frac * dc,
                                    -0.45 * frac * dr,
                                    width=0.04,
                                    head_width=0.12,
                                    length_includes_head=True,
                                    color=color,
                                )
            ax.set_xlim(-0.1, 6.7)
            ax.set_ylim(-0.1, 3.1)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(
                f"{names.get(agent, agent)} / {wg.COVERAGE_NAMES[coverage]}: {'fails' if failed else 'succeeds'}",
                fontsize=8,
                color="tab:red" if failed else "black",
            )
    fig.tight_layout()
    fig.savefig(out_path, dpi=130)
    plt.close(fig)
    return out_path
