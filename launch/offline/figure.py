"""The offline experiment's figure: the paper's Figure 1 as the seeds answered it."""

from __future__ import annotations

from matplotlib.patches import Circle, Rectangle
from mbgen.envs import wallgrid as wg
from mbgen.envs.grid import MOVES
from mbgen.launch.run.plots import plt, save_with_caption
from mbgen.learner.agents import VARIANTS


def plot_offline(results: list[dict], agents: list[str], coverages: list[str], out_path: str, detail: str = "") -> str:
    """Figure 1 of the paper: per agent and coverage level, the two evaluation layouts with, in each
    cell, arrows whose length is the fraction of seeds whose greedy action it is (green: optimal).
    `detail` (e.g. "30 seeds, 3000 updates") goes into the title."""
    names = {name: variant.label for name, (_, variant) in VARIANTS.items()}
    by_key = {(r["agent"], r["coverage"], r["layout"], tuple(r["cell"])): r for r in results}
    fig, axes = plt.subplots(
        len(agents), len(coverages), figsize=(3.2 * len(coverages), 2.1 * len(agents) + 0.5), squeeze=False
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
    fig.suptitle(
        "WallGrid3x3 offline (paper section 2): each seed's greedy action in every cell of the two evaluation "
        "layouts" + (f", {detail}" if detail else ""),
        fontsize=10,
    )
    caption = (
        "arrow length: fraction of seeds choosing that move (circle: stay); green: an optimal action, red: not. "
        "A panel fails when, in some cell, most seeds choose a wrong action."
    )
    return save_with_caption(fig, out_path, caption, top=0.96, dpi=130)
