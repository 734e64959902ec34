"""The `mbgen` command: run, study, report, eval, watch, export, plot, actor, offline, bench, keys."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

DEMO = {  # `mbgen run` with no run options: ER learning PanFlute(3) (README: measured time)
    "agent": "er",
    "env": "panflute",
    "env_params": {"num_pipes": 3},
    "seeds": [0, 1],
    "steps": 12_000,
    "eval_period": 500,
}


def default_run_dir(agent: str, env: str) -> str:
    return os.path.join("runs", f"{time.strftime('%Y%m%d-%H%M%S')}-{agent}-{env}")


def resume_config(run_dir: str):
    """The configuration of a run directory to resume, or a ValueError saying why it cannot be."""
    from mbgen.launch.options import load_toml
    from mbgen.learner.config import RunConfig

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


# Flags that do not change what the demo runs: with nothing else given, `mbgen run` runs the demo.
DEMO_COMPATIBLE = {"out", "tensorboard", "wandb"}


def wants_demo(args: argparse.Namespace, extra: list[str]) -> bool:
    from mbgen.launch.options import given_keys

    given = set(given_keys(args))
    return (
        not extra
        and args.config is None
        and (args.seeds, args.first_seed, args.seed_list) == (None, None, None)
        and given <= DEMO_COMPATIBLE
    )


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.launch.options import config_from_args
    from mbgen.launch.run.monitor import check_sinks
    from mbgen.launch.run.rundir import keep_private, prepare_run_dir

    if args.resume:
        return cmd_resume(args, extra)
    demo = wants_demo(args, extra)
    cfg = config_from_args(args, extra, base=DEMO if demo else None)
    if demo:
        from mbgen.envs.scores import reference_scores

        print(
            "mbgen run: no run options, running the demo (ER on PanFlute with 3 pipes, 2 seeds, "
            f"{cfg.run.steps:,} steps per member; {scale_text(reference_scores(cfg.run.env, cfg.run.env_params))})",
            file=sys.stderr,
        )
    check_sinks(cfg)
    if cfg.system.engine == "ray":
        from mbgen.launch.raycluster import check_reachable, require_ray

        require_ray()  # refused here, before the run directory is made
        check_reachable(cfg.system.address)
    from mbgen.runtime.devices import choose_device

    choose_device(cfg.system.device)  # refused here (no CUDA), not in the learner after everything started
    if cfg.spec.model_server and cfg.options.frozen_model:
        from mbgen.modelserver.frozen import check_frozen

        check_frozen(cfg)
    run_dir = cfg.outputs.out or default_run_dir(cfg.run.agent, cfg.run.env)
    keep_private(cfg.outputs.share_run_dir)
    prepare_run_dir(run_dir, force=args.force)  # refused here, before any process starts
    from mbgen.launch.run.supervisor import Supervisor  # after validation: bad options fail fast

    print(f"run directory: {run_dir}", file=sys.stderr)
    supervisor = Supervisor(cfg, run_dir, progress=not args.quiet)
    code = supervisor.run()
    print_summary(supervisor.summary, run_dir)
    return code


def cmd_resume(args: argparse.Namespace, extra: list[str]) -> int:
    """`mbgen run --resume RUN_DIR`: continue from the newest complete checkpoint."""
    from mbgen.launch.options import given_keys
    from mbgen.launch.run.rundir import keep_private
    from mbgen.launch.run.supervisor import RunFailed, Supervisor

    given = [f"--{name.replace('_', '-')}" for name in given_keys(args)]
    own = (("--config", args.config), ("--seeds", args.seeds), ("--first-seed", args.first_seed))
    given += [flag for flag, value in own + (("--seed-list", args.seed_list),) if value is not None]
    if given or extra or args.force:
        given += extra + (["--force"] if args.force else [])
        raise ValueError(f"--resume takes the run's own configuration; remove {' '.join(given)}")
    cfg = resume_config(args.resume)
    keep_private(cfg.outputs.share_run_dir)
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


def format_final(final: dict, bounds=None) -> str:
    """'0.3912 (95% CI 0.3870 .. 0.3950) over 2 members: 0.390, 0.392'; an interval cut to the
    score's range `bounds` says so; a single member has none."""
    from mbgen.launch.stats import ci_text

    if final["mean"] is None:
        return "no evaluation yet"
    lo, hi = final["ci95"]
    n = len(final["per_member"])
    cut = bounds is not None and lo is not None and (lo <= bounds[0] or hi >= bounds[1])
    interval = ci_text(lo, hi) + (", cut to the score's range" if cut else "")
    return f"{final['mean']:.4f} ({interval}) over {n} member{'s' if n != 1 else ''}: " + ", ".join(
        f"{x:.3f}" for x in final["per_member"]
    )


def scale_text(scale: dict) -> str:
    optimal = scale["optimal"]["score"]
    return (
        f"random behaviour scores {scale['random']['score']:.4g}"
        + (f", the optimal policy {optimal:.4g}" if optimal is not None else "")
        + f" ({scale['unit']})"
    )


def print_summary(summary: dict, run_dir: str) -> None:
    from mbgen.launch.run.results import point_names

    tp, tr = summary["throughput"], summary["transitions"]
    lines = [f"\n{summary['outcome']}" + (f" ({summary['reason']})" if summary["reason"] else "")]
    points = summary["points"]
    final = summary["final"]
    label = "PARTIAL score (run not completed)" if final["partial"] else "final score"
    span = (
        f", evaluations at env steps {final['from_env_steps'][0]:,}..{final['from_env_steps'][1]:,}"
        if final["from_env_steps"]
        else ""
    )
    bounds = summary["scale"].get("range")
    if len(points) == 1:
        lines.append(f"{label}{span}: {format_final(points[0]['final'], bounds)}")
    else:
        lines.append(f"{label} per grid point ({len(points)} points, {len(summary['seeds'])} seeds each){span}:")
        for name, point in zip(point_names(points), points):
            lines.append(f"  {name}: {format_final(point['final'], bounds)}")
    if final["from_env_steps"] is None and summary["outcome"] != "completed":
        lines.append("no score: no evaluation after learning started")
    lines.append(scale_text(summary["scale"]))
    lines.append(
        f"{tp['env_steps']:,} env steps, {tp['updates']:,} updates in {tp['wall_s']:.1f} s "
        f"({tp['updates_per_s']:.1f} updates/s, {tp['member_updates_per_s']:.1f} member-updates/s)"
    )
    lines.append(
        f"transitions sent {tr['sent']:,} stored {tr['stored']:,} lost in flight {tr['lost_in_flight']:,} "
        f"rejected {tr['rejected']} ({tr['rejected_messages']} messages) duplicates dropped {tr['duplicates']}"
        + (" (reconciled)" if summary["reconciled"] else "")
    )
    for a in summary.get("remote_slots", []):
        lines.append(
            f"  remote slot {a['slot']} {a['identity']} ({a['state']}): claimed {a['claimed']:,}, "
            f"stored {a['stored']:,}, refused {a['refused']:,}, duplicates {a['duplicates']:,}, "
            f"lost in flight {a['lost_in_flight']:,}"
            + (f", unexplained {a['unexplained']:,}" if a["unexplained"] else "")
        )
    if not summary["reconciled"] and summary["reconciliation"]:
        lines.append(f"ACCOUNTING DOES NOT RECONCILE: {summary['reconciliation']}")
    if summary["restarts"]:
        lines.append(f"automatic restarts from checkpoints: {summary['restarts']}")
    lines += node_lines(summary)
    plot = os.path.join(run_dir, "curve.png")
    lines.append(
        f"summary: {os.path.join(run_dir, 'summary.json')}" + (f"  plot: {plot}" if os.path.exists(plot) else "")
    )
    print("\n".join(lines), file=sys.stderr)


def node_lines(summary: dict) -> list[str]:
    """A run whose actors were on a Ray cluster: what each node did, which nodes left, the policy lag."""
    if "nodes" not in summary:
        return []
    lines = []
    for node, row in summary["nodes"].items():
        left = " (left during the run)" if node in summary["lost_nodes"] else ""
        lines.append(
            f"node {node[:12]}{left}: {row['actors']} actors, {row['env_steps']:,} env steps, "
            f"sent {row['sent']:,} stored {row['stored']:,}"
        )
    lag = summary["policy_lag"]
    if lag["samples"]:
        lines.append(f"remote actors' policy lag: mean {lag['mean']:.1f}, max {lag['max']} Q updates")
    return lines


PLOT_FORMATS = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".eps", ".ps", ".tif", ".tiff", ".webp")  # --out's endings


def cmd_plot(args: argparse.Namespace, extra: list[str]) -> int:
    import io

    from mbgen.launch.run.outputs import STDOUT, output_path, run_name, where, write_bytes

    default = f"{run_name(args.runs[0])}.png" if len(args.runs) == 1 else "compare.png"
    out = output_path(args.out, default, PLOT_FORMATS)  # refused here, before anything is drawn
    if out == STDOUT and sys.stdout.isatty():
        raise ValueError("out: - writes a PNG to standard output, here a terminal; redirect it or name a file")
    from mbgen.launch.run.plots import plot_runs

    image = io.BytesIO()
    image_format = "png" if out == STDOUT else os.path.splitext(out)[1][1:].lower()
    drawn = plot_runs(args.runs, image, args.title, image_format=image_format)
    for warning in drawn["warnings"]:
        print(f"mbgen plot: warning: {warning}", file=sys.stderr)
    write_bytes(out, image.getvalue())
    curves = len(drawn["curves"])
    print(
        f"mbgen plot: {curves} curve{'s' if curves != 1 else ''} of {len(args.runs)} run"
        f"{'s' if len(args.runs) != 1 else ''} to {where(out)}",
        file=sys.stderr,
    )
    return 0


def cmd_eval(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.launch.options import env_params_from_extra
    from mbgen.launch.run.evaluation import main as eval_main

    return eval_main(args, env_params_from_extra(extra))


def cmd_watch(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.launch.run.watch import watch

    return watch(args.run, once=args.once, period=args.period)


def cmd_export(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.launch.run.export import export_csv
    from mbgen.launch.run.outputs import output_path, run_name, where

    if not args.csv:
        raise ValueError("format: choose one: --csv")
    out = output_path(args.out, f"{run_name(args.run)}.csv")
    rows = export_csv(args.run, out)
    print(f"mbgen export: {rows} rows to {where(out)}", file=sys.stderr)
    return 0


def cmd_keys(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.runtime.security import make_keys

    paths = make_keys(args.dir)
    print(json.dumps(paths, indent=2))
    print(
        "the run needs server.key_secret and authorized/; a remote actor needs server.key and actor.key_secret",
        file=sys.stderr,
    )
    return 0


def cmd_actor(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.actors.remote import run_remote_actor

    return run_remote_actor(args.connect, args.keys, args.name, args.envs)


def cmd_offline(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.launch.offline.experiment import main as offline_main
    from mbgen.launch.options import env_params_from_extra

    args.env_params = env_params_from_extra(extra)
    return offline_main(args)


def cmd_study(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.launch.study.runner import main as study_main

    return study_main(args)


def cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.launch.study.runner import report_main

    return report_main(args)


def cmd_bench(args: argparse.Namespace, extra: list[str]) -> int:
    from mbgen.launch.bench.throughput import main as bench_main

    return bench_main(args)


def build_parser(show_all: bool = False) -> argparse.ArgumentParser:
    """The `mbgen` parser; `show_all`: `mbgen run --help-all`, every option in the help."""
    from mbgen.launch.options import add_run_options, run_epilog

    parser = argparse.ArgumentParser(
        prog="mbgen", description="Model-based RL research: does a learned model beat experience replay here, and why?"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="a local multi-process run (no arguments: a short demo)",
        description="Run agents as a multi-process system. Every config key is a flag; flags "
        "override --config. Without run options, runs a short demo (12,000 steps). "
        + ("" if show_all else "This help shows what to run and the options most people set; --help-all shows all."),
        epilog=run_epilog(show_all),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = add_run_options(run, show_all)["what to run"]
    what.add_argument("--resume", metavar="DIR", help="continue a stopped or killed run from its newest checkpoint")
    what.add_argument("--force", action="store_true", help="replace a run already in --out (its outputs are deleted)")
    what.add_argument("--quiet", action="store_true", help="no progress line")
    what.add_argument("--help-all", action="store_true", help="show every option, then exit")
    run.set_defaults(func=cmd_run)

    from mbgen.launch.study.runner import add_study_options

    study = sub.add_parser(
        "study",
        help="a study: agents x regimes x environment levels, one run per cell, resumable",
        description="Run every cell of a study file (or a preset) as an ordinary run in DIR/cells/, one "
        "after another (--parallel N at a time) or on a Ray cluster; re-running the same command skips "
        "completed cells and finishes interrupted ones. Writes DIR/study.json, DIR/report.md and the figures.",
    )
    add_study_options(study)
    study.set_defaults(func=cmd_study)

    report = sub.add_parser("report", help="redraw a study's report and figures from what its cells have written")
    report.add_argument("dir", metavar="DIR", help="study directory")
    report.set_defaults(func=cmd_report)

    evaluation = sub.add_parser(
        "eval",
        help="greedy scores of a trained run's checkpoint, per member and grid point",
        description="Evaluate a run's checkpoint with the run's evaluation protocol and seeds (its last "
        "evaluation is reproduced), optionally on other environment parameters (--env.PARAM VALUE) "
        "that keep the observation and action sizes.",
    )
    evaluation.add_argument("run", metavar="RUN", help="run directory")
    evaluation.add_argument("--checkpoint", metavar="F", help="learner checkpoint (default: learner-final.npz)")
    evaluation.add_argument(
        "--episodes", type=int, default=0, metavar="N", help="episodes per member (default: the run's)"
    )
    evaluation.add_argument("--render", action="store_true", help="also print one greedy episode of --member as text")
    evaluation.add_argument("--member", type=int, default=0, metavar="M", help="member to render (default: 0)")
    evaluation.add_argument("--json", action="store_true", help="print one JSON object")
    evaluation.set_defaults(func=cmd_eval)

    watch = sub.add_parser(
        "watch",
        help="a live view of a running run (from another terminal)",
        description="Progress, the latest scores per grid point and each process's health, redrawn every "
        "second from RUN/status.json (which the run's supervisor rewrites) until the run ends.",
    )
    watch.add_argument("run", metavar="RUN", help="run directory")
    watch.add_argument("--once", action="store_true", help="print the view once and exit")
    watch.add_argument("--period", type=float, default=1.0, metavar="S", help="seconds between redraws (default: 1)")
    watch.set_defaults(func=cmd_watch)

    export = sub.add_parser("export", help="a run's evaluations as a table (CSV)")
    export.add_argument("run", metavar="RUN", help="run directory")
    export.add_argument("--csv", action="store_true", help="write CSV: one row per evaluation and member")
    export.add_argument(
        "--out", metavar="FILE", help="CSV file, a directory for the default name, or - for standard output "
        "(default: ./<run name>.csv)"
    )
    export.set_defaults(func=cmd_export)

    actor = sub.add_parser("actor", help="join a running run from another machine")
    actor.add_argument("--connect", required=True, metavar="URL", help="the run's ingest endpoint, tcp://HOST:PORT")
    actor.add_argument("--keys", metavar="DIR", help="key directory with server.key and actor.key_secret")
    actor.add_argument("--name", default=None, help="actor id (default: hostname-pid)")
    actor.add_argument("--envs", type=int, default=1, help="environment copies per member")
    actor.set_defaults(func=cmd_actor)

    from mbgen.launch.offline.options import add_offline_options

    offline = sub.add_parser(
        "offline",
        help="the paper's section 2 offline experiment on WallGrid3x3",
        description="Train DQN+ER and the simple model with 1- and 10-step rollouts on "
        "fixed datasets and check which greedy policies are right in every cell.",
    )
    add_offline_options(offline)
    offline.set_defaults(func=cmd_offline)

    from mbgen.launch.bench.options import add_bench_options

    bench = sub.add_parser("bench", help="throughput of environments, replay and end-to-end agents")
    add_bench_options(bench)
    bench.set_defaults(func=cmd_bench)

    plot = sub.add_parser("plot", help="draw several runs' learning curves on one figure")
    plot.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    plot.add_argument(
        "--out", metavar="FILE", help="image file (.png, .pdf, .svg, ...), a directory for the default name, or - for "
        "PNG on standard output (default: ./<run name>.png for one run, ./compare.png for several)"
    )
    plot.add_argument("--title", help="figure title")
    plot.set_defaults(func=cmd_plot)

    keys = sub.add_parser("keys", help="write CurveZMQ key pairs for remote actors")
    keys.add_argument("dir", metavar="DIR", help="directory to create")
    keys.set_defaults(func=cmd_keys)
    return parser


def stay_with_parent() -> bool:
    """A run started by a study (MBGEN_PARENT_PID) stops cleanly when the study process dies; False if
    that parent is already gone. The variable is not passed on to the run's own processes."""
    parent = os.environ.pop("MBGEN_PARENT_PID", None)
    if parent is None:
        return True
    from mbgen.runtime.lifecycle import die_with_parent

    die_with_parent()
    return os.getppid() == int(parent)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not stay_with_parent():
        return 143
    show_all = argv[:1] == ["run"] and "--help-all" in argv
    parser = build_parser(show_all)
    if show_all:
        parser.parse_args(["run", "--help"])  # prints the whole help and exits
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("run", "offline", "eval"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra)
    except ValueError as error:
        print(f"mbgen {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`mbgen eval ... | head`): nothing more to say
        sys.stdout = open(os.devnull, "w")
        return 0


if __name__ == "__main__":
    sys.exit(main())
