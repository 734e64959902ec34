"""A study's results: study.json, report.md and the figures, from whatever its cells have written.

Everything here reads run directories (config.toml, metrics.jsonl, summary.json,
events.jsonl) and never a running process, so `mbgen report DIR` redraws the
report mid-study too. Per cell:

  status      completed (its summary says so), failed (the run failed, or the study could not
              run it: DIR/failures.json), or pending (not started, running, or interrupted)
  final       per member the mean of its last 10% of evaluations; over members the mean with a
              Student-t 95% CI and the IQM with a stratified-bootstrap 95% CI (launch/stats.py),
              both cut to the range the score can take; [None, None] where the members are too
              few for one (one member for the mean, fewer than 5 for the bootstrap), which
              report.md writes as "too few seeds for an interval". A pending cell with evaluations after
              learning began reports them, marked "partial". A grid cell (several step size x
              temperature points) reports every point under "per_point" and, at the top level,
              its best point by mean (the paper's grid-search choice), named in "best_point".

Comparisons: for every model agent against ER in the same environment, level
and regime, the probability that a member of the agent scores higher than a
member of ER, with its bootstrap 95% CI (rliable's definition, launch/stats.py);
no interval when either side has fewer than 5 members.

A frozen study (the paper's Figure 4, right) reports instead, per snapshot of the
source run's model, each member's env steps until its greedy score first reaches
95% of the way from random to optimal behaviour (censored at the budget when it
never does), their median, how many got there, and the probability that a member
trained on this model gets there sooner than one trained on the snapshot before
(ties, including two censored members, count one half).
"""

from __future__ import annotations

import json
import math
import os
import statistics

from mbgen.launch.run.results import final_scores, learned_rows, load_run, point_names, scale_of
from mbgen.launch.stats import (
    BOOTSTRAP_MIN_MEMBERS,
    TOO_FEW,
    probability_of_improvement,
    probability_of_improvement_ci95,
    score_summary,
    steps_to_threshold,
)
from mbgen.launch.study.spec import CELLS_DIR, Study, level_text

STUDY_JSON = "study.json"
REPORT_MD = "report.md"
FAILURES = "failures.json"  # cells the study could not complete: {name: {"exit", "log"}}


def read_failures(out: str) -> dict:
    path = os.path.join(out, FAILURES)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def write_failures(out: str, failures: dict) -> None:
    path = os.path.join(out, FAILURES)
    with open(path + ".tmp", "w") as f:
        json.dump(failures, f, indent=1)
    os.replace(path + ".tmp", path)


def cell_status(cell_dir: str, failed: bool) -> tuple[str, dict | None]:
    """(status, the run's summary.json or None)."""
    summary = None
    path = os.path.join(cell_dir, "summary.json")
    if os.path.exists(path):
        try:
            with open(path) as f:
                summary = json.load(f)
        except ValueError:
            summary = None
    if summary is not None and summary.get("outcome") == "completed":
        return "completed", summary
    if failed or (summary is not None and summary.get("outcome") == "failed"):
        return "failed", summary
    return "pending", summary


def cell_final(cell_dir: str, completed: bool) -> dict | None:
    """The cell's final performance (see the module docstring), or None without evaluations."""
    if not os.path.exists(os.path.join(cell_dir, "config.toml")):
        return None
    run = load_run(cell_dir)
    cfg, rows = run.config, run.rows
    if not completed:
        rows = learned_rows(rows, cfg.learning.learning_starts)
    if not rows:
        return None
    bounds = tuple(scale_of(cfg)["range"])
    finals = dict(zip(sorted({int(r["member"]) for r in rows}), final_scores(rows)))
    points = []
    for point, name in zip(cfg.point_labels(), point_names(cfg.point_labels())):
        per_member = [finals[m] for m in point["members"] if m in finals]
        points.append(
            {"name": name, "lr": point["lr"], "temperature": point["temperature"], **score_summary(per_member, bounds)}
        )
    best = max(points, key=lambda p: p["mean"] if p["mean"] is not None else float("-inf"))
    final = {k: best[k] for k in ("mean", "ci95", "iqm", "iqm_ci95", "per_member")}
    final["partial"] = not completed
    if len(points) > 1:
        final["best_point"] = {"lr": best["lr"], "temperature": best["temperature"]}
        final["per_point"] = points
    return final


def collect(study: Study, out: str) -> dict:
    """study.json's content."""
    failures = read_failures(out)
    cells = []
    for cell in study.cells:
        cell_dir = study.cell_dir(out, cell)
        status, _ = cell_status(cell_dir, cell.name in failures)
        entry = {
            "name": cell.name,
            "agent": cell.agent,
            "env": cell.env,
            "params": cell.params,
            "regime": cell.regime,
            "run": os.path.join(CELLS_DIR, cell.name),
            "status": status,
            "final": cell_final(cell_dir, status == "completed"),
        }
        if cell.name in failures and status == "failed":
            entry["error"] = failures[cell.name]
        cells.append(entry)
    data = {"title": study.title, "kind": study.kind, "cells": cells, "comparisons": comparisons(study, cells)}
    if study.kind == "frozen":
        data["comparisons"] = []  # every cell is the same agent: nothing to set against ER
        data["frozen"] = frozen_snapshots(study, out)
    return data


FROZEN_THRESHOLD = 0.95  # of the way from random to optimal behaviour


def frozen_snapshots(study: Study, out: str) -> list[dict]:
    """Per snapshot: each member's env steps to FROZEN_THRESHOLD (None: censored, never within the
    budget), their median (None when most members never got there), and P(sooner than the previous
    snapshot) with its bootstrap interval."""
    rows = []
    for cell in (c for c in study.cells if c.snapshot):
        cell_dir = study.cell_dir(out, cell)
        steps = []
        if os.path.exists(os.path.join(cell_dir, "metrics.jsonl")):
            run = load_run(cell_dir)
            scale = scale_of(run.config)
            for member in sorted({int(r["member"]) for r in run.rows}):
                mine = sorted((int(r["env_steps"]), float(r["eval_return"])) for r in run.rows if int(r["member"]) == member)
                steps.append(
                    steps_to_threshold(
                        [e for e, _ in mine], [v for _, v in mine], scale["random"]["score"],
                        scale["optimal"]["score"], FROZEN_THRESHOLD,
                    )  # fmt: skip
                )
        median = statistics.median(steps) if steps else math.inf  # inf when most members never got there
        row = {
            "cell": cell.name,
            "snapshot": cell.snapshot,
            "steps_to_threshold": [None if math.isinf(x) else x for x in steps],
            "reached": sum(not math.isinf(x) for x in steps),
            "members": len(steps),
            "median": None if math.isinf(median) else median,
        }
        if rows and steps and rows[-1]["_steps"]:
            before = rows[-1]["_steps"]
            negated = [-x for x in steps], [-x for x in before]  # sooner = fewer steps
            row["p_sooner_than_previous"] = probability_of_improvement(*negated)
            row["p_sooner_ci95"] = list(probability_of_improvement_ci95(*negated))
        rows.append({**row, "_steps": steps})
    return [{k: v for k, v in r.items() if k != "_steps"} for r in rows]


def comparisons(study: Study, cells: list[dict]) -> list[dict]:
    by_key = {(c["agent"], c["env"], json.dumps(c["params"]), c["regime"]): c for c in cells}
    out = []
    for c in cells:
        er = by_key.get(("er", c["env"], json.dumps(c["params"]), c["regime"]))
        if c["agent"] == "er" or er is None or c["final"] is None or er["final"] is None:
            continue
        x, y = c["final"]["per_member"], er["final"]["per_member"]
        out.append(
            {
                "env": c["env"],
                "params": c["params"],
                "regime": c["regime"],
                "agent": c["agent"],
                "vs": "er",
                "prob_improvement": probability_of_improvement(x, y),
                "ci95": list(probability_of_improvement_ci95(x, y)),
                "members": [len(x), len(y)],
                "partial": c["final"]["partial"] or er["final"]["partial"],
            }
        )
    return out


# -- report.md ------------------------------------------------------------------------------------
def interval(final: dict | None, key: str = "mean", ci: str = "ci95") -> str:
    """'0.394 [0.381, 0.407]', or '0.394 (too few seeds for an interval)'; * marks a partial score."""
    if final is None or final[key] is None:
        return "–"
    lo, hi = final[ci]
    bracket = f"[{lo:.3g}, {hi:.3g}]" if lo is not None and hi is not None else f"({TOO_FEW})"
    return f"{final[key]:.3g} {bracket}" + ("*" if final.get("partial") else "")


def few_seeds_note(cells: list[dict], comparisons: list[dict]) -> list[str]:
    """A paragraph naming the cells with fewer than BOOTSTRAP_MIN_MEMBERS members, if any."""
    sizes = [len(c["final"]["per_member"]) for c in cells if c["final"] is not None]
    sizes += [n for c in comparisons for n in c.get("members", [])]
    few = sorted({n for n in sizes if n < BOOTSTRAP_MIN_MEMBERS})
    if not few:
        return []
    counts = " or ".join(map(str, few))
    return [
        f"Some cells have fewer than {BOOTSTRAP_MIN_MEMBERS} members ({counts}): too few seeds for an interval "
        "from the bootstrap, so their IQM and P(improvement) have none; their Student-t interval of the mean "
        "(none for a single member) is wide and cut to the range the score can take. Run more seeds "
        "(`seeds` in the study file) for intervals a reader can trust.",
        "",
    ]


def markdown(study: Study, data: dict, figures: list[str]) -> str:
    cells = data["cells"]
    counts = {s: sum(c["status"] == s for c in cells) for s in ("completed", "failed", "pending")}
    agents = list(dict.fromkeys(c["agent"] for c in cells))
    lines = [
        f"# Study: {study.title}",
        "",
        f"{len(cells)} cells: {counts['completed']} completed, {counts['failed']} failed, "
        f"{counts['pending']} pending. Final score per member: the mean of its last 10% of greedy "
        "evaluations. Cells show the mean over members [Student-t 95% CI] and the interquartile mean "
        "[stratified-bootstrap 95% CI]; * marks a partial score (a cell not yet completed, from its "
        "evaluations so far)."
        + (
            " P(improvement) is the probability that a member of the agent beats a member of ER (0.5: no "
            "difference), with a bootstrap 95% CI."
            if study.kind == "grid"
            else ""
        ),
        "",
        *few_seeds_note(cells, data["comparisons"]),
    ]
    if study.kind == "frozen":
        lines += frozen_markdown(data["frozen"])
    groups = list(dict.fromkeys((c["env"], c["regime"]) for c in cells)) if study.kind == "grid" else []
    for env, regime in groups:
        group = [c for c in cells if c["env"] == env and c["regime"] == regime]
        varied = study.levels.get(env, [])
        levels = list(dict.fromkeys(json.dumps(c["params"]) for c in group))
        present = [a for a in agents if any(c["agent"] == a for c in group)]
        lines += [f"## {env}, {regime}-data regime", ""]
        for title, key, ci in (("Mean [95% CI]", "mean", "ci95"), ("IQM [95% CI]", "iqm", "iqm_ci95")):
            lines += [f"{title}:", "", "| level | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
            for level in levels:
                row = {c["agent"]: c for c in group if json.dumps(c["params"]) == level}
                cells_text = [interval(row[a]["final"], key, ci) if a in row else "" for a in present]
                lines.append(f"| {level_text(json.loads(level), varied)} | " + " | ".join(cells_text) + " |")
            lines.append("")
        comps = [c for c in data["comparisons"] if c["env"] == env and c["regime"] == regime]
        if comps:
            others = [a for a in present if a != "er"]
            lines += ["P(improvement over ER) [95% CI]:", "", "| level | " + " | ".join(others) + " |"]
            lines.append("|---" * (len(others) + 1) + "|")
            for level in levels:
                row = {c["agent"]: c for c in comps if json.dumps(c["params"]) == level}
                text = [probability_text(row[a]) if a in row else "–" for a in others]
                lines.append(f"| {level_text(json.loads(level), varied)} | " + " | ".join(text) + " |")
            lines.append("")
    grids = [c for c in cells if c["final"] is not None and "per_point" in c["final"]]
    if grids:
        lines += ["## Step size x temperature grids", ""]
        for c in grids:
            best = c["final"]["best_point"]
            lines.append(f"- {c['name']}: best point lr={best['lr']:g}, temperature={best['temperature']:g}")
            lines += [f"  - {p['name']}: {interval(p)}" for p in c["final"]["per_point"]]
        lines.append("")
    failed = [c for c in cells if c["status"] == "failed"]
    if failed:
        lines += ["## Failed cells", ""]
        for c in failed:
            detail = c.get("error", {}).get("log", "") if isinstance(c.get("error"), dict) else ""
            lines.append(f"- {c['name']} ({c['run']}): {detail or 'see its summary.json'}")
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def frozen_markdown(rows: list[dict]) -> list[str]:
    lines = [
        "## Q trained from scratch on a frozen model",
        "",
        f"Env steps until a member's greedy score first reaches {FROZEN_THRESHOLD:.0%} of the way from random "
        "to optimal behaviour, per snapshot of the source run's model (model updates when frozen); members "
        "that never did within the budget are censored (counted as slower than any that did).",
        "",
        "| frozen after (model updates) | median env steps | reached | P(sooner than the snapshot before) [95% CI] |",
        "|---|---|---|---|",
    ]
    for r in rows:
        median = f"{r['median']:,.0f}" if r["median"] is not None else ("not reached" if r["members"] else "–")
        if "p_sooner_than_previous" in r:
            lo, hi = r["p_sooner_ci95"]
            bracket = f"[{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"({TOO_FEW})"
            sooner = f"{r['p_sooner_than_previous']:.2f} {bracket}"
        else:
            sooner = "–"
        lines.append(f"| {r['snapshot']:,} | {median} | {r['reached']} of {r['members']} | {sooner} |")
    return lines + [""]


def probability_text(comparison: dict) -> str:
    """'0.75 [0.52, 0.93]', or '0.75 (too few seeds for an interval)'; * marks a partial score."""
    lo, hi = comparison["ci95"]
    bracket = f"[{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else f"({TOO_FEW})"
    return f"{comparison['prob_improvement']:.2f} {bracket}" + ("*" if comparison["partial"] else "")


def write_report(study: Study, out: str) -> dict:
    """study.json, report.md and the figures; returns study.json's content."""
    from mbgen.launch.study.figures import draw_study

    data = collect(study, out)
    with open(os.path.join(out, STUDY_JSON) + ".tmp", "w") as f:
        json.dump(data, f, indent=1)
    os.replace(os.path.join(out, STUDY_JSON) + ".tmp", os.path.join(out, STUDY_JSON))
    figures = draw_study(study, out, data)
    with open(os.path.join(out, REPORT_MD), "w") as f:
        f.write(markdown(study, data, figures))
    return data
