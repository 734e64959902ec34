"""`mbgen offline`: the paper's section 2 experiment on WallGrid3x3, or any fixed dataset.

For each coverage level of the evaluation layouts (all, path, single, none) the
agents train on the same data with the same number of updates and of
transitions per update (320):
  er       DQN on 320 transitions sampled from the dataset
  model1   DQN on 320 one-step rollouts of the simple model, from 320 dataset states
  model10  DQN on 32 ten-step rollouts of the simple model, from 32 dataset states
  table1   DQN on 320 one-step rollouts of the tabular model (agent table), from 320 dataset states
  table10  DQN on 32 ten-step rollouts of the tabular model
  ens10    DQN on 32 ten-step rollouts of the MBPO ensemble (agent ensemble)
  mve1     value expansion: 160 dataset transitions each followed by 1 imagined step, all 320 states
           trained toward their multi-step targets (agent mve)
  mve10    value expansion: 29 dataset transitions each followed by 10 imagined steps (319 states)
  mpc1     Q as ER; greedy actions planned one step deep through the simple model (agent mpc)
  mpc3     the same, three steps deep (every sequence of 3 actions)
They are the registry's variants (learner/agents.py VARIANTS). The paper's three are the
default (--agents er,model1,model10). Every model agent trains its model the same way (32
real transitions per update). The paper's table (EXPECTED) covers er, model1 and model10;
for the others launch/offline/options.py states what Theorem 1 predicts (PREDICTED), written
before they ran.
Training uses the real learner and model-server processes with the replay
store filled from the dataset (no actors, no ratio). Every coverage level
and seed is one member of a single population per agent.

Runs are lock-step by default (--lockstep on): model update u and rollout u are
made with Q version u, then Q update u+1 trains on them, and the processes run
MKL in its strict reproducibility mode (replay/runtime/lifecycle.py), so the same
seeds give the same offline.json bit for bit (wall times go to timing.json).

Evaluation (paper section 2): in every open cell of both evaluation layouts,
each seed's greedy action; a cell is wrong when the majority of seeds choose a
non-optimal action, and an agent fails at a coverage level when any cell is wrong.
The margin: each entry's weakest cell (fewest seeds optimal, with its 95% Wilson
interval over seeds); an entry the paper says succeeds has its margin when that
cell has at least 2/3 of seeds optimal, one it says fails when it has at most 1/3.
Outputs in --out: offline.json, timing.json, offline.png (arrows: fraction of
seeds choosing each action), and one run directory per agent.

The budget study: the learner checkpoints every updates/8 Q updates, and the
table and each entry's weakest-cell fraction are evaluated at every checkpoint
too (training up to update k is exactly a k-update run), so one run shows how
the table changes with the budget.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np
import torch
from mbgen.envs import wallgrid as wg
from mbgen.envs.base import TRANSITION_FIELDS, Transitions
from mbgen.launch.offline.options import (
    DEFAULT_SEEDS,
    EXPECTED,
    LEARNING,
    MARGIN,
    PREDICTED,
    PROTOCOLS,
    SEED_STRIDE,
    STUDY_POINTS,
)
from mbgen.launch.options import seeds_from_args
from mbgen.launch.run.policy import acting_policy, read_checkpoint
from mbgen.launch.stats import wilson_ci95
from mbgen.learner.agents import VARIANTS
from mbgen.learner.config import RunConfig, SystemSection
from mbgen.runtime.checkpoints import FINAL_MODEL

from mbgen import envs


def load_dataset(path: str, obs_dim: int, num_actions: int) -> Transitions:
    """A transitions file, every array validated against the environment."""
    keys = TRANSITION_FIELDS
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in keys if k not in f.files]
            if missing:
                raise ValueError(f"dataset {path} lacks array {missing[0]!r}; it needs {', '.join(keys)}")
            arrays = {k: f[k] for k in keys}
    except FileNotFoundError:
        raise ValueError(f"dataset {path} does not exist") from None
    except OSError as error:
        raise ValueError(f"dataset {path} is not a readable .npz of plain arrays: {error}") from None
    n = len(arrays["action"])
    for key in ("obs", "next_obs"):
        a = arrays[key]
        if a.shape != (n, obs_dim) or not np.isin(a, (0, 1)).all():
            raise ValueError(f"dataset {key} must be 0/1 values shaped [{n}, {obs_dim}], got {a.shape}")
    if n == 0 or arrays["action"].shape != (n,) or arrays["action"].min() < 0 or arrays["action"].max() >= num_actions:
        raise ValueError(f"dataset action must be {n} integers in [0, {num_actions - 1}]")
    if arrays["reward"].shape != (n,) or not np.isfinite(arrays["reward"]).all():
        raise ValueError(f"dataset reward must be {n} finite numbers")
    if arrays["terminal"].shape != (n,):
        raise ValueError(f"dataset terminal must be {n} booleans")
    return Transitions(
        arrays["obs"].astype(bool),
        arrays["action"].astype(np.int64),
        arrays["reward"].astype(np.float32),
        arrays["next_obs"].astype(bool),
        arrays["terminal"].astype(bool),
    )


# -- evaluation (plain functions) ---------------------------------------------------------
def evaluation_cells() -> list[tuple[int, wg.Cell]]:
    """(layout index, cell) for every open cell of both evaluation layouts."""
    return [(i, cell) for i, walls in enumerate(wg.EVALUATION_LAYOUTS) for cell in wg.open_cells(walls)]


@torch.no_grad()
def greedy_on_cells(cfg: RunConfig, ckpt) -> np.ndarray:
    """Greedy action of every member in every evaluation cell, as the agent acts (on Q, or planning through
    its model): int [P, cells]. `ckpt`: the parameters (launch/run/policy.py read_checkpoint)."""
    policy = acting_policy(cfg, ckpt)
    obs = np.concatenate([wg.layout_obs(wg.EVALUATION_LAYOUTS[i], [cell]) for i, cell in evaluation_cells()])
    return policy.greedy(np.ascontiguousarray(np.broadcast_to(obs.astype(bool), (cfg.members, *obs.shape))))


def cell_statistics(actions: np.ndarray) -> list[dict]:
    """Per evaluation cell: fraction of seeds choosing each action, and choosing an optimal one.

    actions: [seeds, cells] greedy actions of one agent at one coverage level.
    """
    rows = []
    for j, (layout, cell) in enumerate(evaluation_cells()):
        optimal = wg.optimal_actions(wg.EVALUATION_LAYOUTS[layout])[cell]
        n = actions.shape[0]
        counts = np.bincount(actions[:, j], minlength=wg.NUM_GRID_ACTIONS)
        k = int(counts[optimal].sum())
        rows.append(
            {
                "layout": layout,
                "cell": list(cell),
                "optimal_count": k,
                "optimal_fraction": k / n,
                "ci95": [round(x, 4) for x in wilson_ci95(k, n)],
                "action_fractions": [round(float(c) / n, 4) for c in counts],
            }
        )
    return rows


def verdict(rows: list[dict]) -> str:
    """Fails when in some cell the majority of seeds choose a non-optimal action."""
    return "fails" if any(1.0 - r["optimal_fraction"] > 0.5 for r in rows) else "succeeds"


def entry(rows: list[dict], wanted: str | None) -> dict:
    """One agent at one coverage level: its verdict, the verdict wanted of it (the paper's or
    Theorem 1's; None: neither), its weakest cell, and whether that cell shows the margin (MARGIN).
    The weakest cell decides both ways: every cell >= 2/3 iff the weakest is; some cell <= 1/3 iff it is."""
    weakest = min(rows, key=lambda r: r["optimal_fraction"])
    low = weakest["optimal_fraction"]
    margin = None if wanted is None else (low >= MARGIN[0] if wanted == "succeeds" else low <= MARGIN[1])
    keys = ("layout", "cell", "optimal_count", "optimal_fraction", "ci95")
    return {
        "verdict": verdict(rows),
        "wanted": wanted,
        "weakest": {k: weakest[k] for k in keys},
        "with_margin": margin,
    }


def q_digest(q_flat: np.ndarray) -> str:
    """SHA-256 of the trained Q parameters (every member): equal digests, bit-identical networks."""
    return hashlib.sha256(np.ascontiguousarray(q_flat, dtype=np.float32).tobytes()).hexdigest()


@torch.no_grad()
def model_accuracy(cfg: RunConfig, model_state: dict[str, np.ndarray]) -> dict[str, float]:
    """The trained models on every transition of the evaluation layouts: agent-position accuracy
    (the paper's check) and next-observation feature error, mean over members."""
    from mbgen.modelserver.interface import ModelContext, build_model

    model = build_model(ModelContext(cfg, torch.device("cpu"), torch.Generator().manual_seed(0)))
    model.load_state_dict(model_state)
    data = Transitions.concat([wg.layout_transitions(walls) for walls in wg.EVALUATION_LAYOUTS])
    expand = lambda a, dt: torch.from_numpy(a).to(dt).expand(cfg.members, *a.shape).contiguous()  # noqa: E731
    logits = model.predict(expand(data.obs, torch.float32), expand(data.action, torch.int64)).next_obs_logits
    live = ~data.terminal
    position = (logits[:, :, wg.AGENT].argmax(-1).numpy() == data.next_obs[:, wg.AGENT].argmax(-1))[:, live]
    wrong = ((logits > 0).numpy() != data.next_obs)[:, live]
    return {
        "agent_position_accuracy": float(position.mean()),
        "next_obs_feature_error": float(wrong.mean()),
        "transitions": int(live.sum()),
    }


# -- the experiment ---------------------------------------------------------------------------
def remaining(elapsed: float, done: list[str], todo: list[str]) -> float:
    """Seconds left for the agents still to train, scaled from those trained so far."""
    cost = {name: variant.offline_cost for name, (_, variant) in VARIANTS.items()}
    return elapsed / sum(cost[a] for a in done) * sum(cost[a] for a in todo)


def hidden_sizes(spec: str) -> list[int]:
    try:
        sizes = [int(x) for x in str(spec).split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--hidden must be comma-separated integers >= 1, got {spec!r}")
    return sizes


def coverage_levels(spec: str) -> list[str]:
    """Comma-separated coverage levels, in the table's order; ALL: every level."""
    if spec == "ALL":
        return list(wg.COVERAGES)
    names = [c.strip() for c in spec.split(",")]
    if not all(c in wg.COVERAGES for c in names) or len(set(names)) != len(names):
        raise ValueError(
            f"--coverage must be one or more of {', '.join(wg.COVERAGES)} (comma-separated, distinct) or ALL, got {spec!r}"
        )
    return [c for c in wg.COVERAGES if c in names]


def agent_names(spec: str) -> list[str]:
    names = [a.strip() for a in spec.split(",") if a.strip()]
    bad = [a for a in names if a not in VARIANTS]
    if not names or bad:
        raise ValueError(f"--agents must list some of {', '.join(VARIANTS)}, got {spec!r}")
    return names


def train(
    agent: str,
    groups: list[str],
    datasets: list[Transitions],
    seeds: list[int],
    hidden: list[int],
    args,
    run_dir: str,
    env_name: str,
    env_params: dict,
) -> tuple[RunConfig, dict, int]:
    """One population run of `agent`: members are (group, seed) pairs. Returns (config, summary, exit code)."""
    from mbgen.launch.run.supervisor import Supervisor

    spec, variant = VARIANTS[agent]
    model = {"model_lr": args.model_lr} if spec.model_server else {}
    cfg = RunConfig.build(
        env=env_name,
        env_params=env_params,
        seeds=[g * SEED_STRIDE + s for g in range(len(groups)) for s in seeds],
        steps=args.updates,
        offline=True,
        tolerance=0.0 if args.lockstep == "on" else SystemSection.tolerance,
        lr=args.lr,
        temperature=args.temperature,
        learning_starts=0,
        target_period=args.target_period,
        hidden=hidden,
        eval_period=1,
        checkpoint_period=max(1, args.updates // STUDY_POINTS),
        diagnostics_period=max(100, args.updates // 10),
        agent=spec.name,
        **model,
        **variant.options,
    ).resolved()
    members = [datasets[g] for g in range(len(groups)) for _ in seeds]
    supervisor = Supervisor(cfg, run_dir, progress=not args.quiet, dataset=members)
    code = supervisor.run()
    return cfg, supervisor.summary, code


def apply_protocol(args: argparse.Namespace) -> None:
    """Fill --hidden and --updates from the run's protocol where the command line left them out."""
    for key, value in PROTOCOLS[args.protocol].items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def main(args: argparse.Namespace) -> int:
    apply_protocol(args)
    if args.updates < 1:
        raise ValueError(f"--updates must be an integer >= 1, got {args.updates}")
    hidden = hidden_sizes(args.hidden)
    seeds = seeds_from_args(args, default_count=DEFAULT_SEEDS) or list(range(DEFAULT_SEEDS))
    if max(seeds) >= SEED_STRIDE:
        raise ValueError(f"offline seeds must be below {SEED_STRIDE} (member seed = coverage * {SEED_STRIDE} + seed)")
    agents = agent_names(args.agents)
    out = args.out or os.path.join("runs", time.strftime("%Y%m%d-%H%M%S") + "-offline")
    env_params = dict(getattr(args, "env_params", {}) or {})
    env = envs.spec(args.env, **env_params)
    if args.dataset:
        groups, datasets = ["custom"], [load_dataset(args.dataset, env.obs_dim, env.num_actions)]
    else:
        if args.env != "wallgrid3x3":
            raise ValueError("the built-in datasets are WallGrid3x3's: give --dataset FILE.npz for another --env")
        groups = coverage_levels(args.coverage)
        datasets = [wg.dataset(c) for c in groups]
    os.makedirs(out, exist_ok=True)
    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    builtin = args.env == "wallgrid3x3" and not args.dataset
    results, table, entries, accuracy, timing, study, weakest, digests = [], {}, {}, {}, {}, {}, {}, {}
    started = time.time()
    for i, agent in enumerate(agents):
        log(
            f"[{i + 1}/{len(agents)}] {agent}: {len(groups)} dataset(s) x {len(seeds)} seeds, {args.updates} updates"
            + (f" (about {remaining(time.time() - started, agents[:i], agents[i:]):.0f} s left)" if i else "")
        )
        run_dir = os.path.join(out, agent)
        cfg, summary, code = train(agent, groups, datasets, seeds, hidden, args, run_dir, args.env, env_params)
        if code != 0:
            what = "interrupted" if summary["outcome"] == "interrupted" else f"failed ({summary['reason']})"
            print(f"mbgen offline: {agent} {what}; its run directory: {run_dir}", file=sys.stderr)
            return code
        timing[agent] = round(summary["throughput"]["wall_s"], 1)
        checkpoints = os.path.join(out, agent, "checkpoints")
        final = read_checkpoint(run_dir, cfg)
        q_flat = final.q
        digests[agent] = q_digest(q_flat)
        if args.env == "wallgrid3x3":
            actions = greedy_on_cells(cfg, final).reshape(len(groups), len(seeds), -1)
            table[agent], entries[agent] = {}, {}
            for g, group in enumerate(groups):
                rows = cell_statistics(actions[g])
                table[agent][group] = verdict(rows)
                wanted = (EXPECTED.get(agent) or PREDICTED.get(agent) or {}).get(group) if builtin else None
                entries[agent][group] = entry(rows, wanted)
                results += [{"agent": agent, "coverage": group, **r} for r in rows]
            for name in sorted(os.listdir(checkpoints)):
                if name.startswith("learner-0"):
                    # a planner's model is the final one: the model server keeps no offline snapshots
                    snapshot = read_checkpoint(run_dir, cfg, name)
                    earlier = greedy_on_cells(cfg, snapshot).reshape(len(groups), len(seeds), -1)
                    budget = str(snapshot.updates)
                    stats = [cell_statistics(earlier[g]) for g in range(len(groups))]
                    study.setdefault(budget, {})[agent] = {group: verdict(stats[g]) for g, group in enumerate(groups)}
                    weakest.setdefault(budget, {})[agent] = {
                        group: min(r["optimal_fraction"] for r in stats[g]) for g, group in enumerate(groups)
                    }
            if cfg.spec.model_server:
                with np.load(os.path.join(out, agent, "checkpoints", FINAL_MODEL)) as f:
                    model_state = {k[len("model.") :]: f[k] for k in f.files if k.startswith("model.")}
                accuracy[agent] = model_accuracy(cfg, model_state)
                log(f"  model on the evaluation layouts: {accuracy[agent]}")
        else:
            from mbgen.actors.evaluator import evaluate
            from mbgen.launch.stats import mean_ci95

            policy = acting_policy(cfg, final)
            mean, lo, hi = mean_ci95(evaluate(cfg, policy, 0))
            table[agent] = {"custom": {"mean": mean, "ci95": [lo, hi]}}
    report = {
        "seeds": len(seeds),
        "seed_list": seeds,
        "updates": args.updates,
        "lockstep": args.lockstep == "on",
        "protocol": args.protocol,
        "coverages": groups,
        "agents": agents,
        "hyperparameters": {k: getattr(args, k) for k in LEARNING} | {"hidden": hidden},
        "q_sha256": digests,
        "results": results,
        "table": table,
        "entries": entries,
        "model_accuracy": accuracy,
    }
    if builtin:
        report["expected"] = {a: {c: EXPECTED[a][c] for c in groups} for a in agents if a in EXPECTED}
        report["predicted"] = {a: {c: PREDICTED[a][c] for c in groups} for a in agents if a in PREDICTED}
        report["matches_paper"] = all(table[a][c] == EXPECTED[a][c] for a in report["expected"] for c in groups)
        report["matches_prediction"] = all(table[a][c] == PREDICTED[a][c] for a in report["predicted"] for c in groups)
        judged = [entries[a][c] for a in agents for c in groups if entries[a][c]["wanted"] is not None]
        report["entries_with_margin"] = [sum(e["with_margin"] for e in judged), len(judged)]
        study[str(args.updates)] = table
        weakest[str(args.updates)] = {
            a: {c: entries[a][c]["weakest"]["optimal_fraction"] for c in groups} for a in agents
        }
        report["budget_study"] = {
            budget: {
                "table": study[budget],
                "weakest_fraction": weakest[budget],  # per agent and coverage: its weakest cell's fraction optimal
                "cells_matching": sum(
                    study[budget][a][c] == EXPECTED[a][c] for a in study[budget] if a in EXPECTED for c in groups
                ),
            }
            for budget in sorted(study, key=int)
        }
        from mbgen.launch.offline.figure import plot_offline

        detail = f"{len(seeds)} seeds, {args.updates} updates"
        plot_offline(results, agents, groups, os.path.join(out, "offline.png"), detail)
    with open(os.path.join(out, "offline.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "timing.json"), "w") as f:  # apart: wall times differ between identical runs
        json.dump({"wall_s": timing, "total_s": round(time.time() - started, 1)}, f, indent=1)
    print(format_table(report))
    print(
        f"\n{os.path.join(out, 'offline.json')}"
        + ("  " + os.path.join(out, "offline.png") if os.path.exists(os.path.join(out, "offline.png")) else "")
    )
    return 0


def slack(e: dict) -> float:
    """How far an entry's weakest cell is inside its margin (negative: outside)."""
    low = e["weakest"]["optimal_fraction"]
    return low - MARGIN[0] if e["wanted"] == "succeeds" else MARGIN[1] - low


def entry_text(e: dict) -> str:
    """verdict, weakest cell's fraction optimal [95% interval], ! when the margin is missing."""
    w = e["weakest"]
    lo, hi = w["ci95"]
    return f"{e['verdict']} {w['optimal_fraction']:.2f} [{lo:.2f},{hi:.2f}]" + (
        "!" if e["with_margin"] is False else ""
    )


def format_table(report: dict) -> str:
    agents, groups, table, entries = report["agents"], report["coverages"], report["table"], report["entries"]
    if "expected" not in report:
        return json.dumps(table, indent=1)
    texts = {}
    for a in agents:
        for c in groups:
            text, e = entry_text(entries[a][c]), entries[a][c]
            if e["wanted"] is not None and e["verdict"] != e["wanted"]:
                source = "paper" if a in report["expected"] else "predicted"
                text += f" ({source}: {e['wanted']})"
            texts[a, c] = text
    width = max(len(wg.COVERAGE_NAMES[c]) for c in groups + ["all"]) + 5  # "evaluation data" fits
    labels = {name: variant.label for name, (_, variant) in VARIANTS.items()}
    column = max(len(t) for t in list(texts.values()) + [labels[a] for a in agents]) + 3
    lines = ["evaluation data".ljust(width) + "".join(labels[a].ljust(column) for a in agents)]
    for c in groups:
        lines.append(wg.COVERAGE_NAMES[c].ljust(width) + "".join(texts[a, c].ljust(column) for a in agents))
    lines.append(
        "each entry: verdict, weakest cell's fraction of seeds optimal [95% interval]; ! = no margin (succeeds "
        f"needs >= {MARGIN[0]:.2f} in every cell, fails <= {MARGIN[1]:.2f} in some cell)"
    )
    units = ",".join(str(n) for n in report["hyperparameters"]["hidden"])
    detail = f"({report['seeds']} seeds, {report['updates']} updates, {units} units)"
    if report["expected"]:
        verb = "reproduces" if report["matches_paper"] else "does NOT reproduce"
        ran = sum(len(row) for row in report["expected"].values())
        what = (
            "the paper's table"
            if ran == sum(len(row) for row in EXPECTED.values())
            else f"the {ran} entries of the paper's table it ran"
        )
        lines.append(f"\n{verb} {what} {detail}")
    if report.get("predicted"):
        one = len(report["predicted"]) == 1
        if report["matches_prediction"]:
            verb = "matches" if one else "match"
        else:
            verb = "does NOT match" if one else "do NOT match"
        lines.append(f"{', '.join(report['predicted'])} {verb} the predictions from Theorem 1 {detail}")
    judged = [(slack(entries[a][c]), a, c) for a in agents for c in groups if entries[a][c]["wanted"] is not None]
    if judged:
        kept, total = report["entries_with_margin"]
        _, a, c = min(judged)
        w = entries[a][c]["weakest"]
        lines.append(
            f"with the margin: {kept}/{total} entries; closest to its line: {a} on {wg.COVERAGE_NAMES[c]}, "
            f"layout {w['layout']} cell {tuple(w['cell'])}, {w['optimal_count']}/{report['seeds']} seeds optimal"
        )
    paper = [a for a in agents if a in report["expected"]]
    if paper:
        total = len(paper) * len(groups)
        lines.append(
            "cells matching the paper by budget: "
            + ", ".join(f"{b}: {row['cells_matching']}/{total}" for b, row in report.get("budget_study", {}).items())
        )
    return "\n".join(lines)
