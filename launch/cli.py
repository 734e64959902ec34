"""The `mbgen` command: run, actor, offline, bench, plot, keys."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

DEMO = {  # `mbgen run` with no arguments: ER learning PanFlute(3) in about 70 s on 2 cores
    "agent": "er",
    "env": "panflute",
    "env_params": {"num_pipes": 3},
    "seeds": [0, 1],
    "steps": 12_000,
    "eval_period": 500,
}


def default_run_dir(agent: str, env: str) -> str:
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{agent}-{env}")


RUN_FILES = ("config.toml", "metrics.jsonl", "events.jsonl")  # a directory holding any of these holds a run


def check_run_dir(path: str, force: bool) -> None:
    """Refuse, before anything starts, a directory that cannot be written or already holds a run."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"out: {path} exists and is not a directory")
    held = [f for f in RUN_FILES if os.path.exists(os.path.join(path, f))]
    if held and not force:
        raise ValueError(
            f"out: {path} already holds a run ({', '.join(held)}); continue it with --resume {path}, "
            "or pass --force to start a new run there (its metrics would be appended to the old ones)"
        )
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".mbgen-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"out: cannot write to {path}: {error.strerror or error}") from None


def resume_config(run_dir: str):
    """The configuration of a run directory to resume, or a ValueError saying why it cannot be."""
    from launch.config import load_toml
    from learner.config import RunConfig

    path = os.path.join(run_dir, "config.toml")
    if not os.path.exists(path):
        raise ValueError(f"resume: {run_dir} holds no run (no config.toml)")
    cfg = RunConfig.from_dict(load_toml(path))
    if cfg != cfg.resolved():
        raise ValueError(f"resume: {path} is not the resolved configuration mbgen wrote")
    summary = os.path.join(run_dir, "summary.json")
    if os.path.exists(summary):
        with open(summary) as f:
            if json.load(f).get("outcome") == "completed":
                raise ValueError(f"resume: the run in {run_dir} has already completed")
    return cfg


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    from launch.config import config_from_args
    from learner.config import RunConfig

    if args.resume:
        return cmd_resume(args, extra)
    if not args.given:
        cfg = RunConfig.from_dict(DEMO).resolved()
        print(
            "mbgen run: no arguments, running the demo (ER on PanFlute with 3 pipes, 2 seeds, "
            f"{cfg.steps:,} steps; random behaviour scores about 0.15, the optimum about 0.41)",
            file=sys.stderr,
        )
    else:
        cfg = config_from_args(args, extra)
    run_dir = cfg.out or default_run_dir(cfg.agent, cfg.env)
    check_run_dir(run_dir, args.force)
    from launch.supervisor import Supervisor  # after validation: bad options fail fast

    print(f"run directory: {run_dir}", file=sys.stderr)
    supervisor = Supervisor(cfg, run_dir, progress=not args.quiet)
    code = supervisor.run()
    print_summary(supervisor.summary, run_dir)
    return code


def cmd_resume(args: argparse.Namespace, extra: list[str]) -> int:
    """`mbgen run --resume RUN_DIR`: continue from the newest complete checkpoint."""
    from launch.supervisor import RunFailed, Supervisor

    given = [a for a in args.given if a.startswith("--") and a not in ("--resume", "--quiet")]
    if given or extra:
        raise ValueError(f"--resume takes the run's own configuration; remove {' '.join(given + extra)}")
    cfg = resume_config(args.resume)
    supervisor = Supervisor(cfg, args.resume, progress=not args.quiet, resume=True)
    try:
        cut = supervisor.newest_cut()
    except RunFailed as error:
        raise ValueError(str(error)) from None
    print(
        f"resuming {args.resume} from its checkpoint at update {os.path.basename(cut)[2:].lstrip('0') or 0}",
        file=sys.stderr,
    )
    code = supervisor.run()
    print_summary(supervisor.summary, args.resume)
    return code


def print_summary(summary: dict, run_dir: str) -> None:
    final, tp, tr = summary["final"], summary["throughput"], summary["transitions"]
    lines = [f"\n{summary['outcome']}" + (f" ({summary['reason']})" if summary["reason"] else "")]
    if final["mean"] is not None:
        lo, hi = final["ci95"]
        a, b = final["from_env_steps"]
        lines.append(
            f"{'PARTIAL score (run not completed)' if final['partial'] else 'final score'} {final['mean']:.4f} "
            f"(95% CI {lo:.4f} .. {hi:.4f}) over {len(final['per_member'])} members, "
            f"evaluations at env steps {a:,}..{b:,}: {', '.join(f'{x:.3f}' for x in final['per_member'])}"
        )
    elif summary["outcome"] != "completed":
        lines.append("no score: no evaluation after learning started")
    lines.append(
        f"{tp['env_steps']:,} env steps, {tp['updates']:,} updates in {tp['wall_s']:.1f} s "
        f"({tp['updates_per_s']:.1f} updates/s, {tp['member_updates_per_s']:.1f} member-updates/s)"
    )
    lines.append(
        f"transitions sent {tr['sent']:,} stored {tr['stored']:,} lost in flight {tr['lost_in_flight']:,} "
        f"rejected {tr['rejected']} ({tr['rejected_messages']} messages) duplicates dropped {tr['duplicates']}"
        + (" (reconciled)" if summary["reconciled"] else "")
    )
    if not summary["reconciled"] and summary["reconciliation"]:
        lines.append(f"ACCOUNTING DOES NOT RECONCILE: {summary['reconciliation']}")
    if summary["restarts"]:
        lines.append(f"automatic restarts from checkpoints: {summary['restarts']}")
    plot = os.path.join(run_dir, "curve.png")
    lines.append(
        f"summary: {os.path.join(run_dir, 'summary.json')}" + (f"  plot: {plot}" if os.path.exists(plot) else "")
    )
    print("\n".join(lines), file=sys.stderr)


def cmd_plot(args: argparse.Namespace, extra: list[str]) -> int:
    from launch.plots import plot_runs

    out = args.out or os.path.join(args.runs[0], "compare.png" if len(args.runs) > 1 else "curve.png")
    plot_runs(args.runs, out, args.title)
    print(out)
    return 0


def cmd_keys(args: argparse.Namespace, extra: list[str]) -> int:
    from replay.security import make_keys

    paths = make_keys(args.dir)
    print(json.dumps(paths, indent=2))
    print(
        "the run needs server.key_secret and authorized/; a remote actor needs server.key and actor.key_secret",
        file=sys.stderr,
    )
    return 0


def cmd_actor(args: argparse.Namespace, extra: list[str]) -> int:
    from actors.remote import run_remote_actor

    return run_remote_actor(args.connect, args.keys, args.name, args.envs)


def cmd_offline(args: argparse.Namespace, extra: list[str]) -> int:
    from launch.config import env_params_from_extra
    from launch.offline import main as offline_main

    args.env_params = env_params_from_extra(extra)
    return offline_main(args)


def cmd_bench(args: argparse.Namespace, extra: list[str]) -> int:
    from launch.bench import main as bench_main

    return bench_main(args)


def build_parser() -> argparse.ArgumentParser:
    from launch.config import add_run_options

    parser = argparse.ArgumentParser(
        prog="mbgen", description="Model-based RL research: does a learned model beat experience replay here, and why?"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="a local multi-process run (no arguments: a short demo)",
        description="Run agents as a multi-process system. Every config key is a flag; flags "
        "override --config. Without arguments, runs a short demo.",
    )
    add_run_options(run)
    run.add_argument("--quiet", action="store_true", help="no progress line")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped or killed run from its newest checkpoint")
    run.add_argument("--force", action="store_true", help="start a new run in an --out directory that holds one")
    run.set_defaults(func=cmd_run)

    actor = sub.add_parser("actor", help="join a running run from another machine")
    actor.add_argument("--connect", required=True, metavar="URL", help="the run's ingest endpoint, tcp://HOST:PORT")
    actor.add_argument("--keys", metavar="DIR", help="key directory with server.key and actor.key_secret")
    actor.add_argument("--name", default=None, help="actor id (default: hostname-pid)")
    actor.add_argument("--envs", type=int, default=1, help="environment copies per member")
    actor.set_defaults(func=cmd_actor)

    from launch.offline import add_offline_options

    offline = sub.add_parser(
        "offline",
        help="the paper's section 2 offline experiment on WallGrid3x3",
        description="Train DQN+ER and the simple model with 1- and 10-step rollouts on "
        "fixed datasets and check which greedy policies are right in every cell.",
    )
    add_offline_options(offline)
    offline.set_defaults(func=cmd_offline)

    from launch.bench import add_bench_options

    bench = sub.add_parser("bench", help="throughput of environments, replay and end-to-end agents")
    add_bench_options(bench)
    bench.set_defaults(func=cmd_bench)

    plot = sub.add_parser("plot", help="draw several runs' learning curves on one figure")
    plot.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    plot.add_argument("--out", help="image path (default: RUN/compare.png)")
    plot.add_argument("--title", help="figure title")
    plot.set_defaults(func=cmd_plot)

    keys = sub.add_parser("keys", help="write CurveZMQ key pairs for remote actors")
    keys.add_argument("dir", metavar="DIR", help="directory to create")
    keys.set_defaults(func=cmd_keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.given = argv[1:]  # what followed the subcommand
    if extra and args.command not in ("run", "offline"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra)
    except ValueError as error:
        print(f"mbgen {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
