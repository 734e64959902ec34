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
