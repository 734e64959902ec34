"""`mbgen eval RUN`: greedy scores of a trained run's checkpoint, per member and grid point.

The evaluation is the run's own (launch/policy.py `evaluate_run`): same
protocol, same episode seeds, so the final checkpoint reproduces the run's last
evaluation; other environment parameters (`--env.PARAM VALUE`) and episode
counts are allowed where the observation and action sizes stay the same.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from mbgen.envs.scores import reference_scores
from mbgen.launch.run.policy import evaluate_run, load_policy, render_episode
from mbgen.launch.run.results import point_names
from mbgen.launch.stats import ci_text, clip_interval, mean_ci95


def main(args: argparse.Namespace, env_params: dict) -> int:
    if args.episodes < 0:
        raise ValueError(f"--episodes must be an integer >= 1, got {args.episodes}")
    result = evaluate_run(args.run, args.checkpoint, args.episodes, env_params)
    cfg, scores = result["config"], result["scores"]
    scale = reference_scores(cfg.run.env, cfg.run.env_params, cfg.learning.eval_steps)
    points = cfg.point_labels()
    report = {
        "run": args.run,
        "checkpoint": os.path.basename(result["checkpoint"].path),
        "updates": result["checkpoint"].updates,
        "env": cfg.run.env,
        "env_params": cfg.run.env_params,
        "episodes": cfg.learning.eval_episodes,
        "episode_seeds_of_env_step": result["env_steps"],
        "scale": {k: scale[k]["score"] for k in ("random", "optimal")} | {"unit": scale["unit"]},
        "points": [],
    }
    for point, name in zip(points, point_names(points)):
        member_scores = [float(scores[m]) for m in point["members"]]
        mean, lo, hi = mean_ci95(member_scores)
        lo, hi = clip_interval(lo, hi, tuple(scale["range"]))
        entry = {
            "group": point["group"],
            "name": name,
            "lr": point["lr"],
            "temperature": point["temperature"],
            "members": point["members"],
            "seeds": point["seeds"],
            "scores": member_scores,
            "mean": mean,
            "ci95": [lo, hi],
        }
        if result["recorded"] is not None:
            entry["recorded"] = [result["recorded"][m] for m in point["members"]]
        report["points"].append(entry)
    if args.json:
        print(json.dumps(report))
    else:
        print(text_report(report))
    if args.render:
        policy = load_policy(args.run, member=args.member, checkpoint=args.checkpoint)
        seed = policy.label["seed"]
        print(
            f"\none greedy episode of member {args.member} (seed {seed}, {point_names(points)[policy.label['group']]}):"
        )
        for step, frame, action, total in render_episode(policy, seed, env_params):
            what = f"action {action}" if action is not None else "end"
            print(f"\nstep {step}, return so far {total:g}, {what}\n{frame}")
    return 0


def text_report(report: dict) -> str:
    lines = [
        f"{report['run']}: {report['checkpoint']} ({report['updates']:,} updates), {report['env']}"
        f"({', '.join(f'{k}={v}' for k, v in report['env_params'].items())}), "
        f"{report['episodes']} greedy episodes per member (seeds of the evaluation at env step "
        f"{report['episode_seeds_of_env_step']:,})"
    ]
    for p in report["points"]:
        lines.append(
            f"  {p['name']}: mean {p['mean']:.4f} ({ci_text(*p['ci95'])}); "
            + ", ".join(f"seed {s} {x:.4f}" for s, x in zip(p["seeds"], p["scores"]))
        )
        if "recorded" in p and None not in p["recorded"]:
            same = np.allclose(p["scores"], p["recorded"], rtol=0, atol=1e-12)
            lines.append(
                "    the run's own evaluation: "
                + ", ".join(f"{x:.4f}" for x in p["recorded"])
                + (" (reproduced)" if same else " (differs: latent agents sample their latents)")
            )
    optimal = report["scale"]["optimal"]
    lines.append(
        f"random behaviour {report['scale']['random']:.4g}"
        + (f", optimal {optimal:.4g}" if optimal is not None else "")
        + f" ({report['scale']['unit']})"
    )
    return "\n".join(lines)
