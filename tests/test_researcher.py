"""The researcher's interface on a real run: a grid of two step sizes x two seeds, watched while it
runs, then read back through metrics, summary, plot, TensorBoard, the policy API, `mbgen eval` and
`mbgen export`; a second run into the same directory is refused. A run stopped and resumed adds
only new points to TensorBoard, and `mbgen watch` shows it as it was at its end."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import ROOT, descendants, assert_all_gone, mbgen, start, tiny_run
from mbgen.envs.scores import play
from mbgen.envs.seeding import derive_seed
from mbgen.launch.run.results import load_run

from mbgen import envs

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def status(run_dir):
    path = os.path.join(run_dir, "status.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    """`--lr 1e-4,4e-4 --seeds 2 --tensorboard`, and `mbgen watch --once` while it runs."""
    run_dir = str(tmp_path_factory.mktemp("grid") / "run")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mbgen.launch.cli",
            "run",
            *tiny_run(),
            "--lr",
            "1e-4,4e-4",
            "--tensorboard",
            "--out",
            run_dir,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: (status(run_dir) or {}).get("latest_eval") is not None, 120, "a first evaluation")
        live = mbgen("watch", run_dir, "--once", timeout=60)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    return run_dir, live, err


def test_a_grid_of_two_step_sizes_and_two_seeds_is_four_members_reported_per_point(grid_run):
    run_dir, _, stderr = grid_run
    run = load_run(run_dir)
    cfg, rows = run.config, run.rows
    assert cfg.members == 4 and cfg.learning.lr == [1e-4, 4e-4] and cfg.run.seeds == [0, 1]
    assert len(rows) == 4 * 7  # evaluations at 0, 250, ..., 1500
    labels = {(r["member"], r["group"], r["lr"], r["temperature"], r["seed"]) for r in rows}
    assert labels == {(0, 0, 1e-4, 0.1, 0), (1, 0, 1e-4, 0.1, 1), (2, 1, 4e-4, 0.1, 0), (3, 1, 4e-4, 0.1, 1)}
    # the same seed under both step sizes starts from the same Q (and the same episodes): equal scores
    # until the first update (learning starts at step 500)
    early = {(r["env_steps"], r["member"]): r["eval_return"] for r in rows if r["updates"] == 0}
    assert {t for t, _ in early} == {0, 250, 500}
    for t in (0, 250, 500):
        assert early[(t, 0)] == early[(t, 2)] and early[(t, 1)] == early[(t, 3)]
    assert early[(0, 0)] != early[(0, 1)]  # two seeds: two initialisations
    with open(os.path.join(run_dir, "summary.json")) as f:
        summary = json.load(f)
    points = summary["points"]
    assert [(p["group"], p["lr"], p["seeds"], p["members"]) for p in points] == [
        (0, 1e-4, [0, 1], [0, 1]),
        (1, 4e-4, [0, 1], [2, 3]),
    ]
    final = {(r["member"]): r["eval_return"] for r in rows if r["env_steps"] == 1500}  # last 10% of 7: 1 point
    for p in points:
        assert p["final"]["per_member"] == pytest.approx([final[m] for m in p["members"]])
        assert p["final"]["mean"] == pytest.approx(np.mean([final[m] for m in p["members"]]))
    assert summary["final"]["mean"] is None and len(summary["final"]["per_point"]) == 2  # never averaged
    assert summary["scale"]["optimal"]["score"] == pytest.approx(0.615)  # PanFlute(2), exact
    assert "final score per grid point (2 points, 2 seeds each)" in stderr
    assert "lr=0.0001:" in stderr and "lr=0.0004:" in stderr and "random behaviour scores 0.4313" in stderr

    from mbgen.launch.run.plots import plot_runs

    drawn = plot_runs([run_dir], os.path.join(run_dir, "again.png"))
    assert [(c["point"], c["seeds"], c["style"]) for c in drawn["curves"]] == [
        ("lr=0.0001", [0, 1], "members"),
        ("lr=0.0004", [0, 1], "members"),
    ]


def test_watch_showed_the_live_run(grid_run):
    _, live, _ = grid_run
    assert live.returncode == 0, live.stderr
    text = live.stdout
    assert "state     running" in text and "4 members (2 points x 2 seeds)" in text
    assert "lr=0.0001" in text and "lr=0.0004" in text and "random 0.4313, optimal 0.615" in text
    for process in ("replay", "learner", "evaluator", "actor0"):
        assert f"  {process} " in text


def test_tensorboard_scalars_are_read_back(grid_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _, _ = grid_run
    events = EventAccumulator(os.path.join(run_dir, "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for point in ("lr=0.0001", "lr=0.0004"):
        assert {f"eval/{point}/mean", f"eval/{point}/min", f"eval/{point}/max", f"loss/{point}/q"} <= tags
        assert f"train/{point}/episode_score" in tags
    assert {"reference/random", "reference/optimal", "throughput/updates_per_s", "accounting/stored"} <= tags
    rows = load_run(run_dir).rows
    last = [r["eval_return"] for r in rows if r["env_steps"] == 1500 and r["group"] == 1]
    written = events.Scalars("eval/lr=0.0004/mean")
    assert [s.step for s in written] == list(range(0, 1501, 250))
    assert written[-1].value == pytest.approx(np.mean(last), rel=1e-6)
    assert events.Scalars("accounting/stored")[-1].value == 2 * 2 * 1500


def test_a_loaded_policy_reproduces_the_evaluators_scores(grid_run):
    from mbgen import load_policy

    run_dir, _, _ = grid_run
    run = load_run(run_dir)
    cfg, rows = run.config, run.rows
    recorded = {r["member"]: r["eval_return"] for r in rows if r["env_steps"] == cfg.run.steps}
    for member, label in enumerate(cfg.member_labels()):
        policy = load_policy(run_dir, member=member)
        env = envs.make(cfg.run.env, cfg.learning.eval_episodes, derive_seed(label["seed"], "eval", cfg.run.steps), **cfg.run.env_params)
        scores = play([env], lambda obs: policy.act(obs[0])[None], cfg.learning.eval_steps)
        assert scores.mean() == recorded[member], member
    everyone = load_policy(run_dir, member=None)
    obs = envs.make(cfg.run.env, 5, 0, **cfg.run.env_params).reset()
    assert everyone.act(obs).shape == (4, 5) and isinstance(load_policy(run_dir, member=1).act(obs[0]), int)

    done = mbgen("eval", run_dir)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(reproduced)") == 2
    for m in range(4):
        assert f"{recorded[m]:.4f}" in done.stdout
    other = mbgen("eval", run_dir, "--env.spontaneous", "false", "--episodes", "8")
    assert other.returncode == 0 and "spontaneous=False" in other.stdout and "optimal 0.49" in other.stdout
    refused = mbgen("eval", run_dir, "--env.num_pipes", "3")
    assert refused.returncode == 2 and "observations of 3 features and 2 actions" in refused.stderr


def test_export_and_a_second_run_into_the_same_directory_is_refused(grid_run):
    run_dir, _, _ = grid_run
    out = os.path.join(os.path.dirname(run_dir), "table.csv")
    done = mbgen("export", run_dir, "--csv", "--out", out)
    assert done.returncode == 0 and done.stderr.strip() == f"mbgen export: 28 rows to {out}", done.stderr
    with open(out) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 28 and table[-1]["lr"] == "0.0004" and table[-1]["group"] == "1"
    piped = mbgen("export", run_dir, "--csv", "--out", "-")
    assert piped.returncode == 0 and list(csv.DictReader(piped.stdout.splitlines())) == table
    sizes = {name: os.path.getsize(os.path.join(run_dir, name)) for name in ("metrics.jsonl", "events.jsonl")}
    again = mbgen("run", *tiny_run(), "--out", run_dir)
    assert again.returncode == 2
    assert "already holds a run (config.toml, metrics.jsonl); continue it with --resume" in again.stderr
    assert "pass --force" in again.stderr
    assert sizes == {name: os.path.getsize(os.path.join(run_dir, name)) for name in sizes}  # nothing started


def test_seed_options_name_the_seeds_the_same_way_in_run_and_offline():
    from mbgen.launch.cli import build_parser
    from mbgen.launch.options import config_from_args

    parser = build_parser()

    def seeds(*argv):
        args, extra = parser.parse_known_args(["run", *argv])
        return config_from_args(args, extra).run.seeds

    assert seeds("--seeds", "3") == [0, 1, 2]
    assert seeds("--first-seed", "30", "--seeds", "3") == [30, 31, 32]  # a disjoint set of the same size
    assert seeds("--first-seed", "7") == [7]
    assert seeds("--seed-list", "9,2") == [9, 2]
    offline = parser.parse_args(["offline", "--first-seed", "60", "--seeds", "30"])
    assert (offline.first_seed, offline.seeds, offline.seed_list) == (60, 30, None)


def test_watch_shows_the_finished_run_at_its_end(grid_run):
    from mbgen.launch.run.progress import clock
    from mbgen.launch.run.watch import render

    run_dir, _, _ = grid_run
    ended = status(run_dir)
    assert ended["outcome"] == "completed" and ended["ended"] == ended["updated"]
    text = render(run_dir, ended, ended["ended"] + 2 * 3600)  # watched two hours later
    assert f"after {clock(ended['elapsed_s'])} of running" in text and "(2 h ago)" in text
    assert ended["elapsed_s"] < 600 and "2:00:" not in text  # the run's own time, not now minus its start
    assert "heartbeat (as of the end)" in text and "s before the end" in text


@pytest.mark.timeout(600)  # two sessions of a run; minutes on a loaded 2-core machine
def test_a_resumed_run_adds_only_new_points_to_tensorboard(tmp_path):
    """Stopped with Ctrl-C after a few evaluations and resumed: every evaluation point is in
    TensorBoard once (before the fix each session wrote all points again: 19 for 13 steps), and
    status.json's elapsed time covers both sessions."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = str(tmp_path / "run")
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    # a checkpoint every 250 updates: on a loaded machine the stop cut may not finish in its budget,
    # and the run then resumes from the newest periodic one
    proc = start("run", *tiny_run(steps=2000), "--tensorboard", "--checkpoint-period", "250", "--out", run_dir)

    def learned() -> bool:
        return os.path.exists(metrics_path) and any('"updates": 500' in line for line in open(metrics_path))

    try:
        wait_for(learned, 300, "an evaluation after 500 updates")
        children = descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT
    assert_all_gone(children)
    first = status(run_dir)
    assert first["outcome"] == "interrupted"
    resumed = mbgen("run", "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    steps = sorted({r["env_steps"] for r in load_run(run_dir).rows})
    assert steps == list(range(0, 2001, 250))
    events = EventAccumulator(os.path.join(run_dir, "tensorboard"))
    events.Reload()
    assert len(os.listdir(os.path.join(run_dir, "tensorboard"))) == 2  # one event file per session
    assert [s.step for s in events.Scalars("eval/mean")] == steps  # each point once, in order
    assert [s.step for s in events.Scalars("reference/random")] == [0, first["steps"], 2000]  # start, each end
    last = status(run_dir)
    with open(os.path.join(run_dir, "summary.json")) as f:
        wall = json.load(f)["throughput"]["wall_s"]  # both sessions, from events.jsonl, before the plot
    before = last["elapsed_s"] - (last["updated"] - last["started"])  # the first session, as the second saw it
    assert before > 0.5 * first["elapsed_s"]
    # summary.json's clock (events.jsonl) starts each session at its run_started event, status.json's at
    # its setup, and the status is written after the summary: a few seconds apart, more under load
    assert wall - 1.0 <= last["elapsed_s"] <= wall + 60
