"""A study's figures, drawn from study.json's content and the cells' run directories.

figure3.png                 final performance against complexity: a panel per environment and
                            regime, a line per agent, mean over members with 95% CI error bars
                            (cut to the score's range; none where a cell has a single member),
                            the environment's random (dotted) and optimal (dashed) scores per
                            level (the paper's Figure 3)
curves-ENV-REGIME.png       learning curves, a panel per level, a line per agent (Appendix H)
heatmap-CELL.png            a grid cell's final mean per step size x temperature (Appendix G)
smoothing-panflute-LEVEL-REGIME.png  PanFlute: every model agent's reward and dynamics smoothing at its
                            last diagnostics (Figure 4, left)
frozen.png                  a frozen study: env steps to 95% of optimal per snapshot of the source
                            model, a dot per member (censored ones on the budget line), the median
                            joined across snapshots (Figure 4, right)
"""

from __future__ import annotations

import json
import os
import textwrap

from mbgen.launch.run.plots import colour_cycle, draw_points, draw_scale, last_smoothing, plot_smoothing, plt, y_label
from mbgen.launch.run.results import load_run, read_metrics, scale_of
from mbgen.launch.stats import TOO_FEW
from mbgen.launch.study.spec import Study, cell_name, level_text

AGENT_ORDER = ("er", "simple", "perfect", "latent-cat", "latent-gauss")


def draw_study(study: Study, out: str, data: dict) -> list[str]:
    """Every figure the cells' results allow so far; returns their file names (in `out`)."""
    figures = []
    if study.kind == "frozen":
        return [frozen_figure(study, out, data)] if any(r["members"] for r in data["frozen"]) else []
    if any(c["final"] is not None for c in data["cells"]):
        figures.append(figure3(study, out, data))
    figures += learning_curves(study, out, data)
    figures += heatmaps(out, data)
    figures += smoothing(study, out, data)
    return figures


def _groups(cells: list[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((c["env"], c["regime"]) for c in cells))


def _agents(cells: list[dict]) -> list[str]:
    present = list(dict.fromkeys(c["agent"] for c in cells))
    return sorted(present, key=lambda a: AGENT_ORDER.index(a) if a in AGENT_ORDER else len(AGENT_ORDER))


def _scale(study: Study, out: str, cell: dict) -> dict:
    """The environment's random and optimal scores for the cell (from its summary when it has one)."""
    path = os.path.join(out, cell["run"], "summary.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)["scale"]
    spec = next(c for c in study.cells if c.name == cell["name"])
    return scale_of(spec.run_config(os.path.join(out, cell["run"])))


def figure3(study: Study, out: str, data: dict) -> str:
    cells = data["cells"]
    envs_ = list(dict.fromkeys(c["env"] for c in cells))
    regimes = list(dict.fromkeys(c["regime"] for c in cells))
    fig, axes = plt.subplots(len(envs_), len(regimes), figsize=(5.2 * len(regimes), 3.6 * len(envs_)), squeeze=False)
    agents = _agents(cells)
    colors = dict(zip(agents, colour_cycle()))
    for i, env in enumerate(envs_):
        for j, regime in enumerate(regimes):
            ax = axes[i][j]
            group = [c for c in cells if c["env"] == env and c["regime"] == regime]
            levels = list(dict.fromkeys(json.dumps(c["params"]) for c in group))
            x = range(len(levels))
            for agent in agents:
                row = {json.dumps(c["params"]): c for c in group if c["agent"] == agent}
                points = [(k, row[lv]["final"]) for k, lv in enumerate(levels) if lv in row and row[lv]["final"]]
                if not points:
                    continue
                xs = [k for k, _ in points]
                means = [f["mean"] for _, f in points]
                errors = error_bars([f for _, f in points])
                partial = any(f.get("partial") for _, f in points)
                ax.errorbar(
                    xs, means, yerr=errors, color=colors[agent], marker="o", ms=4, capsize=3, lw=1.6,
                    ls="--" if partial else "-", label=agent + (" (partial)" if partial else ""),
                )  # fmt: skip
            first = {json.dumps(c["params"]): c for c in group}
            scales = [_scale(study, out, first[lv]) for lv in levels]
            for level, style in (("optimal", "--"), ("random", ":")):
                values = [s[level]["score"] for s in scales]
                if all(v is not None for v in values):
                    ax.plot(list(x), values, color="0.45", ls=style, lw=1, label=level)
            ax.set_xticks(list(x))
            ax.set_xticklabels([level_text(json.loads(lv), study.levels.get(env, [])) for lv in levels], fontsize=8)
            cfg = next(c for c in study.cells if c.name == group[0]["name"]).run_config("")
            ax.set_ylabel(y_label(cfg).split(" (")[0], fontsize=8)
            ax.set_title(f"{env}, {regime}-data regime", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    seeds = {len(c.config["run"]["seeds"]) for c in study.cells}
    bars = "error bars: Student-t 95% CI cut to the score's range" + (
        f", {TOO_FEW} below 2 seeds" if min(seeds) < 2 else ""
    )
    title = (
        f"{study.title}: final greedy performance against complexity (mean of each member's last 10% of "
        f"evaluations; {'/'.join(map(str, sorted(seeds)))} seeds per cell; {bars})"
    )
    width = fig.get_size_inches()[0]
    lines = textwrap.wrap(title, int(11 * width))  # about 11 characters an inch at 10 pt
    fig.suptitle("\n".join(lines), fontsize=10)
    fig.tight_layout()  # makes room for the suptitle too
    name = "figure3.png"
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    return name


def frozen_figure(study: Study, out: str, data: dict) -> str:
    rows = [r for r in data["frozen"] if r["members"]]
    cfg = study.cells[0].run_config("")
    budget = cfg.run.steps
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    x = list(range(len(rows)))
    for k, r in zip(x, rows):
        reached = [v for v in r["steps_to_threshold"] if v is not None]
        censored = r["members"] - len(reached)
        jitter = [k + 0.06 * (i - len(reached) / 2) / max(1, len(reached)) for i in range(len(reached))]
        ax.scatter(jitter, reached, color="C0", s=14, alpha=0.7, label="a member" if k == 0 else None)
        if censored:
            ax.scatter([k], [budget], color="C3", marker="x", s=30, label="never within the budget" if k == 0 else None)
            ax.annotate(f"{censored} of {r['members']}", (k, budget), textcoords="offset points", xytext=(6, -10), fontsize=7)
    medians = [r["median"] if r["median"] is not None else budget for r in rows]
    ax.plot(x, medians, color="k", lw=1.5, marker="o", ms=4, label="median")
    ax.axhline(budget, color="0.45", ls=":", lw=1, label=f"budget ({budget:,} env steps)")
    ax.set_xticks(x)
    ax.set_xticklabels([f"{r['snapshot']:,}" for r in rows])
    ax.set_xlabel("source model frozen after this many model updates")
    ax.set_ylabel("env steps to 95% of optimal")
    ax.set_ylim(0, budget * 1.08)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    cell = study.cells[0]
    title = (
        f"{study.title}: Q trained from scratch on a frozen {cell.agent} model, {cell.env} "
        f"{level_text(cell.params, [])}, {len(cell.config['run']['seeds'])} seeds"
    )
    fig.suptitle("\n".join(textwrap.wrap(title, 70)), fontsize=9)
    fig.tight_layout()
    name = "frozen.png"
    fig.savefig(os.path.join(out, name), dpi=110)
    plt.close(fig)
    return name


def error_bars(finals: list[dict]) -> list[list[float]]:
    """errorbar's yerr (below, above) per point; NaN, drawn as nothing, where a cell has no interval."""
    below, above = [], []
    for f in finals:
        lo, hi = f["ci95"]
        below.append(f["mean"] - lo if lo is not None else float("nan"))
        above.append(hi - f["mean"] if hi is not None else float("nan"))
    return [below, above]


def learning_curves(study: Study, out: str, data: dict) -> list[str]:
    names = []
    for env, regime in _groups(data["cells"]):
        group = [
            c
            for c in data["cells"]
            if c["env"] == env and c["regime"] == regime and read_metrics(os.path.join(out, c["run"], "metrics.jsonl"))
        ]
        if not group:
            continue
        levels = list(dict.fromkeys(json.dumps(c["params"]) for c in group))
        fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 3.8), squeeze=False)
        for ax, level in zip(axes[0], levels):
            colors = colour_cycle()
            low_high: list[float] = []
            cfg = None
            for c in sorted((c for c in group if json.dumps(c["params"]) == level), key=lambda c: c["agent"]):
                run_dir = os.path.join(out, c["run"])
                run = load_run(run_dir)
                cfg, rows = run.config, run.rows
                low_high += draw_points(ax, run_dir, cfg, rows, c["agent"], colors)[1]
            draw_scale(ax, cfg, low_high)
            ax.set_title(level_text(json.loads(level), study.levels.get(env, [])), fontsize=9)
            ax.set_xlabel("env steps per member", fontsize=8)
            ax.set_ylabel(y_label(cfg), fontsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
        fig.suptitle(f"{study.title}: learning curves on {env}, {regime}-data regime", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.94))
        name = f"curves-{env}-{regime}.png"
        fig.savefig(os.path.join(out, name), dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def heatmaps(out: str, data: dict) -> list[str]:
    names = []
    for c in data["cells"]:
        final = c["final"]
        if final is None or "per_point" not in final:
            continue
        lrs = sorted({p["lr"] for p in final["per_point"]})
        temperatures = sorted({p["temperature"] for p in final["per_point"]})
        grid = [[None] * len(temperatures) for _ in lrs]
        for p in final["per_point"]:
            grid[lrs.index(p["lr"])][temperatures.index(p["temperature"])] = p["mean"]
        values = [[float("nan") if v is None else v for v in row] for row in grid]
        fig, ax = plt.subplots(figsize=(1.2 * len(temperatures) + 2.5, 0.8 * len(lrs) + 2))
        image = ax.imshow(values, cmap="viridis", aspect="auto", origin="lower")
        for r, row in enumerate(grid):
            for k, v in enumerate(row):
                if v is not None:
                    ax.text(k, r, f"{v:.3g}", ha="center", va="center", fontsize=8, color="w")
        ax.set_xticks(range(len(temperatures)))
        ax.set_xticklabels([f"{t:g}" for t in temperatures], fontsize=8)
        ax.set_yticks(range(len(lrs)))
        ax.set_yticklabels([f"{lr:g}" for lr in lrs], fontsize=8)
        ax.set_xlabel("softmax temperature")
        ax.set_ylabel("Q step size")
        fig.colorbar(image, ax=ax, label="final score, mean over seeds")
        ax.set_title(f"{c['name']}" + (" (partial)" if final.get("partial") else ""), fontsize=9)
        fig.tight_layout()
        name = f"heatmap-{c['name']}.png"
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        names.append(name)
    return names


def smoothing(study: Study, out: str, data: dict) -> list[str]:
    names = []
    panflute = [c for c in data["cells"] if c["env"] == "panflute"]
    for regime in dict.fromkeys(c["regime"] for c in panflute):
        for level in dict.fromkeys(json.dumps(c["params"]) for c in panflute):
            series = {}
            for c in panflute:
                if c["regime"] == regime and json.dumps(c["params"]) == level:
                    found = last_smoothing(os.path.join(out, c["run"]))
                    if found is not None:
                        series[f"{c['agent']} ({found['model_updates']:,} model updates)"] = found
            if not series:
                continue
            cell = next(c for c in study.cells if c.env == "panflute" and json.dumps(c.params) == level)
            pipes = cell.config["run"]["env_params"]["num_pipes"]
            name = f"smoothing-{cell_name('', 'panflute', cell.params, regime)}.png"
            title = f"{study.title}: model smoothing on PanFlute({pipes}), {regime}-data regime (Figure 4, left)"
            plot_smoothing(series, pipes, os.path.join(out, name), title)
            names.append(name)
    return names
