"""Studies: planning cells from a study file (unit), and whole studies of real runs: run, reused,
interrupted with Ctrl-C and finished, and run again on a local Ray cluster started here."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from helpers import ROOT, mbgen, wait_for
from mbgen.launch.run.progress import clock
from mbgen.launch.study.estimate import default_figures, required_keys, run_seconds, update_seconds
from mbgen.launch.study.runner import LOCK_FILE, StudyLock
from mbgen.launch.study.spec import PRESETS, check_directory, load_study, plan, preset_path, write_plan

TINY_STUDY = """
agents = ["er", "simple"]
regimes = ["high"]
seeds = 3
steps = 1000
learning_starts = 500
eval_period = 250
eval_episodes = 4
hidden = [16, 16]
tolerance = 0          # lock-step: the same cells on any engine, bit for bit
[envs.panflute]
num_pipes = [2, 3]
"""
CELLS = [
    "er-panflute-num_pipes2-high",
    "simple-panflute-num_pipes2-high",
    "er-panflute-num_pipes3-high",
    "simple-panflute-num_pipes3-high",
]


# -- planning ------------------------------------------------------------------------------------
def test_a_study_is_the_cross_product_of_agents_regimes_and_levels():
    spec = {
        "agents": ["er", "simple"],
        "regimes": ["high", "low"],
        "seeds": 3,
        "steps": {"high": 20000, "low": 2000},
        "hidden": [32],
        "envs": {"procmaze": {"grid_size": [2, 3, 4]}, "buttongrid": {"grid_size": 5, "num_buttons": [1, 3]}},
    }
    study = plan(spec, "t")
    assert len(study.cells) == 2 * 2 * (3 + 2)
    assert study.levels == {"procmaze": ["grid_size"], "buttongrid": ["num_buttons"]}
    cell = next(c for c in study.cells if c.name == "simple-buttongrid-grid_size5-num_buttons3-low")
    cfg = cell.run_config("/tmp/x")
    assert (cfg.run.seeds, cfg.run.steps, cfg.learning.hidden, cfg.run.regime) == ([0, 1, 2], 2000, [32], "low")
    assert cfg.run.env_params["num_buttons"] == 3 and cfg.learning.updates_per_step == 10
    assert (cfg.learning.lr, cfg.learning.temperature) == (5e-5, 0.4)  # PAPER.md section 4: simple, ButtonGrid, low data
    high = next(c for c in study.cells if c.name == "er-procmaze-grid_size4-high").run_config("/tmp/x")
    assert high.run.steps == 20000 and (high.learning.lr, high.learning.temperature) == (5e-5, 0.1)


def test_a_grid_and_default_budgets():
    study = plan({"agents": ["er"], "lr": [1e-4, 2e-4], "temperature": [0.2, 0], "envs": {"opengrid": {}}}, "g")
    (cell,) = study.cells
    cfg = cell.run_config("/tmp/x")
    assert cell.grid and cfg.members == 4 and cfg.run.steps == 1_000_000  # the high regime's budget
    assert cfg.learning.lr == [1e-4, 2e-4] and cfg.learning.temperature == [0.2, 0.1]  # 0: ER's tuned temperature
    low = plan({"agents": ["er"], "regimes": ["low"], "seeds": [4, 7], "envs": {"opengrid": {}}}, "l").cells[0]
    assert low.run_config("/tmp/x").run.steps == 100_000 and low.run_config("/tmp/x").run.seeds == [4, 7]


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"agents": ["er"], "envs": {"procmaze": {}}, "gama": 0.9}, "unknown key gama"),
        ({"agents": ["er"], "envs": {"procmaze": {}}, "agent": "er"}, "agent is set per cell"),
        ({"agents": ["er"], "envs": {"mazes": {}}}, "envs.mazes is not an environment"),
        ({"agents": ["er"], "envs": {"procmaze": {"size": [2]}}}, "envs.procmaze.size is not a parameter"),
        ({"agents": ["er"], "envs": {"procmaze": {"grid_size": []}}}, "envs.procmaze.grid_size must be"),
        ({"agents": ["er", "er"], "envs": {"procmaze": {}}}, "agents must not repeat"),
        ({"agents": ["dyna"], "envs": {"procmaze": {}}}, "cell dyna-procmaze-high: agent must be one of"),
        ({"agents": ["er"], "regimes": ["mid"], "envs": {"procmaze": {}}}, "regimes must be among high, low"),
        ({"agents": ["er"], "envs": {"procmaze": {"grid_size": [0]}}}, "cell er-procmaze-grid_size0-high: env_params"),
        ({"agents": ["er"], "envs": {"procmaze": {}}, "hidden": "big"}, "hidden must be a non-empty list"),
        ({"agents": ["er"], "envs": {"procmaze": {}}, "steps": {"mid": 5}}, "steps has unknown regime mid"),
        ({"envs": {"procmaze": {}}}, "agents is required"),
    ],
)
def test_bad_study_files_are_refused_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        plan(spec, "bad")


def test_presets_load_and_the_paper_figure_has_150_cells():
    full = load_study(os.path.join(ROOT, "launch", "study", "presets", "figure3.toml"))
    assert len(full.cells) == 150 and {c.config["run"]["steps"] for c in full.cells} == {1_000_000, 100_000}
    small = load_study(os.path.join(ROOT, "launch", "study", "presets", "figure3-small.toml"))
    assert 0 < len(small.cells) < 150


def test_a_directory_holding_another_study_is_refused(tmp_path):
    study = plan({"agents": ["er"], "seeds": 2, "envs": {"panflute": {"num_pipes": [2]}}}, "one")
    write_plan(study, str(tmp_path))
    check_directory(study, str(tmp_path))  # the same study: fine
    other = plan({"agents": ["er"], "seeds": 3, "envs": {"panflute": {"num_pipes": [2]}}}, "one")
    with pytest.raises(ValueError, match="holds another study.*seeds"):
        check_directory(other, str(tmp_path))


def test_the_study_lock_keeps_a_second_study_out_and_is_removed_on_every_exit(tmp_path):
    out = str(tmp_path)
    path = os.path.join(out, LOCK_FILE)
    with StudyLock(out):
        assert open(path).read() == f"pid {os.getpid()}"
        with pytest.raises(ValueError, match=rf"^out: another mbgen study is running in {out} \(pid {os.getpid()}\)$"):
            StudyLock(out).__enter__()
    assert not os.path.exists(path)
    with pytest.raises(RuntimeError):
        with StudyLock(out):
            raise RuntimeError("a failure inside the study")
    assert not os.path.exists(path)
    # a lock file left by a killed study (SIGKILL) holds no lock: the next study takes it, then removes it
    open(path, "w").write("pid 1")
    with StudyLock(out):
        pass
    assert not os.path.exists(path)
    # SIGTERM while the lock is held (outside the cells' loop): the process exits 143 through the lock's exit
    code = "import os, signal, sys; from mbgen.launch.study.runner import StudyLock\n"
    code += "with StudyLock(sys.argv[1]):\n    os.kill(os.getpid(), signal.SIGTERM)\n    signal.pause()\n"
    done = subprocess.run([sys.executable, "-c", code, out], capture_output=True, text=True, timeout=120)
    assert done.returncode == 143 and not os.path.exists(path), done.stderr


def test_the_report_says_when_cells_have_too_few_seeds_for_an_interval():
    from mbgen.launch.stats import score_summary
    from mbgen.launch.study.report import comparisons, markdown

    study = plan({"agents": ["er", "simple"], "seeds": 2, "envs": {"panflute": {"num_pipes": [2, 3]}}}, "few")
    scores = {"er": [[0.4], [0.1, 0.3]], "simple": [[0.5], [0.2, 0.6]]}  # level 2: one member; 3: two
    cells = []
    for cell in study.cells:
        values = scores[cell.agent][cell.params["num_pipes"] - 2]
        final = {**score_summary(values, (0.0, 1.0)), "partial": False}
        cells.append({"name": cell.name, "agent": cell.agent, "env": cell.env, "params": cell.params,
                      "regime": cell.regime, "run": "", "status": "completed", "final": final})  # fmt: skip
    comps = comparisons(study, cells)
    assert [(c["prob_improvement"], c["ci95"], c["members"]) for c in comps] == [
        (1.0, [None, None], [1, 1]),  # groups of 1: no interval, not [1, 1]
        (0.75, [None, None], [2, 2]),
    ]
    text = markdown(study, {"cells": cells, "comparisons": comps}, [])
    assert "fewer than 5 members (1 or 2): too few seeds for an interval" in text
    assert "| num_pipes=2 | 0.4 (too few seeds for an interval) | 0.5 (too few seeds for an interval) |" in text
    # two members: a Student-t interval, cut to the score's range [0, 1]; their IQM has none
    assert "| num_pipes=3 | 0.2 [0, 1] | 0.4 [0, 1] |" in text
    assert "| num_pipes=3 | 0.2 (too few seeds for an interval) | 0.4 (too few seeds for an interval) |" in text
    assert "| num_pipes=2 | 1.00 (too few seeds for an interval) |" in text
    assert "[0.4, 0.4]" not in text and "[1.00, 1.00]" not in text  # never a zero-width interval


def test_estimates_follow_the_bench_figures_by_hand():
    """t(1) = 1/100 s, t(30) = 30/300 s: b = (0.1 - 0.01)/29, a = 0.01 - b; at the bench's own
    setting (ProcMaze(4), the paper's networks) the model returns the measured figures."""
    figures = {required_keys("er")[0]: 100.0, required_keys("er")[1]: 300.0}
    figures.update({required_keys("simple")[0]: 10.0, required_keys("simple")[1]: 20.0})
    one = plan({"agents": ["er"], "seeds": 1, "envs": {"procmaze": {"grid_size": 4}}}, "e").cells[0]
    thirty = plan({"agents": ["er"], "seeds": 30, "envs": {"procmaze": {"grid_size": 4}}}, "e").cells[0]
    assert update_seconds(one.run_config(""), figures) == pytest.approx(0.01)
    assert update_seconds(thirty.run_config(""), figures) == pytest.approx(0.1)
    cfg = one.run_config("")
    assert run_seconds(cfg, figures) == pytest.approx(8.0 + 999_000 * 0.01)
    assert clock(2 * 86400 + 3661) == "2d 01:01:01"


@pytest.mark.parametrize("preset", [p for p in PRESETS if p != "figure3"])
def test_every_small_preset_plans_and_is_estimated_to_fit_an_hour_here(preset, tmp_path):
    """The presets for this machine are whole validated studies whose estimate (from the bench figures of
    the 2-core machine) is at most about an hour; the claim presets have 10 seeds at least."""
    study = load_study(preset_path(preset), str(tmp_path))
    seconds = sum(run_seconds(c.run_config(""), default_figures()) for c in study.cells)
    assert 60 < seconds <= 85 * 60, clock(seconds)
    if preset.startswith("claim-"):
        assert all(len(c.config["run"]["seeds"]) >= 10 for c in study.cells)


def test_dry_run_prints_cells_and_an_estimate(tmp_path):
    done = mbgen("study", "--preset", "figure3", "--dry-run", "--out", str(tmp_path / "f3"))
    assert done.returncode == 0, done.stderr
    assert "simple-procmaze-grid_size4-high" in done.stdout and "150 cells" in done.stdout
    assert not os.path.exists(tmp_path / "f3")  # nothing written
    bad = mbgen("study", "--preset", "figure9", "--dry-run")
    assert bad.returncode == 2 and "--preset must be one of figure3, figure3-small" in bad.stderr


# -- whole studies of real runs ----------------------------------------------------------------------
def study_command(spec_path, out, *extra):
    return [sys.executable, "-m", "mbgen.launch.cli", "study", spec_path, "--out", out, *extra]


def per_member(out):
    with open(os.path.join(out, "study.json")) as f:
        return {c["name"]: c["final"]["per_member"] for c in json.load(f)["cells"]}


def mtimes(out):
    return {
        os.path.join(d, n): os.stat(os.path.join(d, n)).st_mtime_ns
        for d, _, names in os.walk(os.path.join(out, "cells"))
        for n in names
    }


@pytest.fixture(scope="module")
def interrupted_study(tmp_path_factory):
    """The tiny study, stopped with Ctrl-C (SIGINT) while its last cell runs, then run again."""
    root = tmp_path_factory.mktemp("study")
    spec = str(root / "tiny.toml")
    with open(spec, "w") as f:
        f.write(TINY_STUDY)
    out = str(root / "out")
    proc = subprocess.Popen(study_command(spec, out), cwd=ROOT, stderr=subprocess.PIPE, text=True)
    last = os.path.join(out, "cells", CELLS[-1])
    metrics = os.path.join(last, "metrics.jsonl")
    wait_for(lambda: os.path.exists(metrics) and len(open(metrics).readlines()) >= 6, 300, "the last cell to learn")
    proc.send_signal(signal.SIGINT)
    first_stderr = proc.communicate(timeout=60)[1]
    interrupted = {"code": proc.returncode, "stderr": first_stderr, "pending": json.load(open(f"{out}/study.json"))}
    interrupted["lock_left"] = os.path.exists(os.path.join(out, LOCK_FILE))
    again = subprocess.run(study_command(spec, out), cwd=ROOT, capture_output=True, text=True, timeout=300)
    return spec, out, interrupted, again


@pytest.mark.slow
@pytest.mark.timeout(900)  # the fixture runs a whole study, twice
def test_an_interrupted_study_finishes_when_run_again_with_every_output(interrupted_study):
    spec, out, interrupted, again = interrupted_study
    assert interrupted["code"] == 130, interrupted["stderr"]
    assert "stopping 1 running cell(s) cleanly" in interrupted["stderr"]
    assert not interrupted["lock_left"] and not os.path.exists(os.path.join(out, LOCK_FILE))  # Ctrl-C, then an end
    status = {c["name"]: c["status"] for c in interrupted["pending"]["cells"]}
    assert status == {**{n: "completed" for n in CELLS[:-1]}, CELLS[-1]: "pending"}
    assert again.returncode == 0, again.stderr
    assert "3 of 4 cells already complete, skipped" in again.stderr
    with open(os.path.join(out, "cells", CELLS[-1], "run.log")) as f:
        assert "--resume" in f.read()  # finished from its stop checkpoint
    with open(os.path.join(out, "study.json")) as f:
        data = json.load(f)
    assert [c["name"] for c in data["cells"]] == CELLS
    for c in data["cells"]:
        assert c["status"] == "completed" and c["run"] == f"cells/{c['name']}"
        final = c["final"]
        assert len(final["per_member"]) == 3 and final["partial"] is False
        assert final["ci95"][0] <= final["mean"] <= final["ci95"][1]  # Student-t on 3 members
        with open(os.path.join(out, c["run"], "summary.json")) as f:
            assert json.load(f)["outcome"] == "completed"  # an ordinary run directory
    assert {(c["agent"], c["params"]["num_pipes"]) for c in data["comparisons"]} == {("simple", 2), ("simple", 3)}
    # 3 seeds per cell: too few for a bootstrap, so no interval of P(improvement) or the IQM, and
    # the report says so
    assert all(c["ci95"] == [None, None] and c["members"] == [3, 3] for c in data["comparisons"])
    assert all(c["final"]["iqm_ci95"] == [None, None] for c in data["cells"])
    report = open(os.path.join(out, "report.md")).read()
    assert "| num_pipes=2 |" in report and "P(improvement over ER)" in report
    assert "fewer than 5 members (3): too few seeds for an interval" in report
    for figure in ("figure3.png", "curves-panflute-high.png", "smoothing-panflute-num_pipes3-high.png"):
        assert os.path.getsize(os.path.join(out, figure)) > 10_000
    assert os.path.exists(os.path.join(out, "cells", CELLS[1], "smoothing.png"))  # a model agent's run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_rerun_reuses_finished_cells_without_touching_them(interrupted_study):
    spec, out, _, _ = interrupted_study
    before = mtimes(out)
    t = time.monotonic()
    done = subprocess.run(study_command(spec, out), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "4 of 4 cells already complete" in done.stderr
    assert mtimes(out) == before and time.monotonic() - t < 60
    os.remove(os.path.join(out, "figure3.png"))
    redrawn = mbgen("report", out)
    assert redrawn.returncode == 0 and os.path.exists(os.path.join(out, "figure3.png"))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_same_study_on_a_local_ray_cluster_gives_the_same_cells(interrupted_study, tmp_path):
    pytest.importorskip("ray")
    _, local_out, _, _ = interrupted_study
    spec = str(tmp_path / "half.toml")  # the study's num_pipes 2 cells: enough to compare, half the time
    with open(spec, "w") as f:
        f.write(TINY_STUDY.replace("num_pipes = [2, 3]", "num_pipes = [2]"))
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    port = str(20000 + os.getpid() % 20000)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = [ray, "start", "--head", "--port", port, "--num-cpus", "2", "--include-dashboard", "false"]
    subprocess.run(start, check=True, capture_output=True, env=env, timeout=120, cwd=str(tmp_path))
    try:
        out = str(tmp_path / "ray")
        command = study_command(spec, out, "--engine", "ray", "--address", f"127.0.0.1:{port}", "--parallel", "2")
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr
        on_ray, local = per_member(out), per_member(local_out)
        assert sorted(on_ray) == [c for c in sorted(CELLS) if "num_pipes2" in c]
        assert on_ray == {name: local[name] for name in on_ray}  # lock-step cells: identical on either engine
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, env=env, timeout=120)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_frozen_model_trains_q_from_scratch_and_is_never_updated(interrupted_study, tmp_path):
    """Figure 4 (right): Q trained on rollouts of the model a finished cell exported."""
    spec, out, _, _ = interrupted_study
    cell = os.path.join(out, "cells", CELLS[1])
    frozen = os.path.join(cell, "checkpoints", "model-final.npz")
    run_dir = str(tmp_path / "frozen")
    done = mbgen(
        "run", "--config", os.path.join(cell, "cell.toml"), "--frozen-model", frozen, "--out", run_dir, "--quiet"
    )
    assert done.returncode == 0, done.stderr
    import numpy as np

    with np.load(frozen) as before, np.load(os.path.join(run_dir, "checkpoints", "model-final.npz")) as after:
        assert np.array_equal(before["model.params"], after["model.params"])
    with open(os.path.join(run_dir, "events.jsonl")) as f:
        diagnostics = [json.loads(line) for line in f if '"model_diagnostics"' in line]
    assert diagnostics and all("loss" not in d for d in diagnostics)  # no model update happened
    assert os.path.exists(os.path.join(run_dir, "smoothing.png"))
    other = mbgen("run", "--config", os.path.join(cell, "cell.toml"), "--seeds", "2", "--frozen-model", frozen)
    assert other.returncode == 2 and "this run needs 1 or 2" in other.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_failed_cell_is_reported_and_the_others_go_on(tmp_path):
    """Every cell of this study is refused by its run (device cuda, none here): each is reported
    with the end of its log, the study goes on to the next, and exits 1."""
    spec = tmp_path / "failing.toml"
    spec.write_text('agents = ["er"]\nseeds = 1\nsteps = 1500\ndevice = "cuda"\n[envs.panflute]\nnum_pipes = [2, 3]\n')
    out = str(tmp_path / "out")
    done = subprocess.run(study_command(str(spec), out), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    for name in ("er-panflute-num_pipes2-high", "er-panflute-num_pipes3-high"):
        assert f"cell {name} FAILED (exit 2)" in done.stderr and "CUDA is not available" in done.stderr
    with open(os.path.join(out, "study.json")) as f:
        cells = json.load(f)["cells"]
    assert [c["status"] for c in cells] == ["failed", "failed"]
    assert all("CUDA is not available" in c["error"]["log"] for c in cells)
    assert "## Failed cells" in open(os.path.join(out, "report.md")).read()
    assert not os.path.exists(os.path.join(out, LOCK_FILE))  # the study's lock goes with it


FROZEN_STUDY = """
kind = "frozen"
agents = ["simple"]
regimes = ["high"]
seeds = 2
steps = 800
learning_starts = 500
eval_period = 100
eval_episodes = 2
hidden = [16, 16]
snapshots = [20, 250]
[envs.panflute]
num_pipes = 2
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_frozen_study_runs_its_source_then_q_on_each_frozen_snapshot(tmp_path):
    """One command: the source run keeps its model at each snapshot; one run per snapshot trains Q from
    scratch on that model, frozen (it is never updated); the report gives steps to 95% of optimal per
    snapshot and draws frozen.png. Planning refuses what a frozen study cannot be."""
    import numpy as np

    spec = str(tmp_path / "frozen.toml")
    with open(spec, "w") as f:
        f.write(FROZEN_STUDY)
    out = str(tmp_path / "out")
    done = subprocess.run(study_command(spec, out), cwd=ROOT, capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr
    cells = os.path.join(out, "cells")
    source = os.path.join(cells, "simple-panflute-num_pipes2-high-source", "checkpoints")
    assert os.path.exists(os.path.join(source, "model-000000020.npz"))
    for u in (20, 250):
        frozen = os.path.join(cells, f"simple-panflute-num_pipes2-high-frozen{u}", "checkpoints", "model-final.npz")
        with np.load(os.path.join(source, f"model-{u:09d}.npz")) as before, np.load(frozen) as after:
            assert np.array_equal(before["model.params"], after["model.params"])  # never trained
    with open(os.path.join(out, "study.json")) as f:
        data = json.load(f)
    assert data["kind"] == "frozen" and [r["snapshot"] for r in data["frozen"]] == [20, 250]
    for r in data["frozen"]:
        assert r["members"] == 2 and 0 <= r["reached"] <= 2 and len(r["steps_to_threshold"]) == 2
    assert "p_sooner_than_previous" in data["frozen"][1] and data["frozen"][1]["p_sooner_ci95"] == [None, None]
    report = open(os.path.join(out, "report.md")).read()
    assert "| frozen after (model updates) |" in report and "| 250 |" in report
    assert os.path.getsize(os.path.join(out, "frozen.png")) > 10_000
    for bad, message in [
        ('agents = ["simple", "er"]', "one agent, one regime and one environment level"),
        ('agents = ["er"]', "must learn a model to freeze"),
        ("snapshots = [20, 99999]", "at most the source run's"),
    ]:
        key = bad.split(" =")[0]
        text = "\n".join(bad if line.startswith(key + " =") else line for line in FROZEN_STUDY.splitlines())
        with pytest.raises(ValueError, match=message):
            plan(__import__("tomllib").loads(text), "bad", str(tmp_path / "bad"))
