"""The researcher's interface without processes: grids, results per point, scores on a scale,
rendering, the policy API's shapes, plots, the run-directory guard, --help."""

import json
import os

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from mbgen.actors.episodes import EpisodeReturns
from mbgen.envs import buttongrid as bg
from mbgen.envs import procmaze as pm
from mbgen.envs.grid import DOWN, RIGHT, STAY, UP
from mbgen.envs.scores import (
    CACHE_PATH,
    compute_reference,
    estimate,
    panflute_optimal,
    panflute_random,
    play,
    reference_scores,
)
from mbgen.launch.options import dump_toml
from mbgen.launch.run.progress import scores_text
from mbgen.launch.run.results import MetricsTail, point_finals, point_names, run_final
from mbgen.launch.run.rundir import prepare_run_dir
from mbgen.launch.stats import bootstrap_ci
from mbgen.learner.config import RunConfig
from mbgen.learner.dqn import DQN

from mbgen import envs


# ---------------------------------------------------------------- grids
def grid(**kw) -> RunConfig:
    base = dict(agent="er", env="panflute", env_params={"num_pipes": 2}, seeds=[3, 7], steps=2000)
    return RunConfig.build(**{**base, **kw}).resolved()


def test_a_grid_is_the_cross_product_point_major():
    cfg = grid(lr=[1e-4, 4e-4], temperature=[0.1, 0.2, 0.4])
    assert cfg.members == 2 * 3 * 2
    assert cfg.member_seeds == [3, 7] * 6
    assert cfg.member_lr == [1e-4] * 6 + [4e-4] * 6
    assert cfg.member_temperature == [0.1, 0.1, 0.2, 0.2, 0.4, 0.4] * 2
    labels = cfg.member_labels()
    assert labels[5] == {"member": 5, "group": 2, "lr": 1e-4, "temperature": 0.4, "seed": 7}
    assert [p["members"] for p in cfg.point_labels()][3] == [6, 7]
    assert point_names(cfg.point_labels())[3] == "lr=0.0004 T=0.1"


def test_one_point_and_tuned_values():
    cfg = grid()  # lr, temperature 0: the paper's tuned values for ER on PanFlute, high data
    assert (cfg.learning.lr, cfg.learning.temperature, cfg.members) == (1e-4, 0.1, 2)
    assert point_names(cfg.point_labels()) == ["lr=0.0001 T=0.1"]
    mixed = grid(lr=[0, 3e-4])  # 0 in a grid: the tuned value
    assert mixed.learning.lr == [1e-4, 3e-4] and mixed.member_lr == [1e-4, 1e-4, 3e-4, 3e-4]
    assert grid(lr=[2e-4]).learning.lr == 2e-4  # a one-value grid is a number


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"lr": [1e-4, 1e-4]}, "lr must be a list of distinct grid values"),
        ({"lr": [0, 1e-4]}, "lr must be a list of distinct grid values"),  # 0 is the tuned 1e-4
        ({"temperature": []}, "temperature must be a number or a non-empty list"),
        ({"temperature": [0.1, -1]}, "temperature must be a number > 0"),
        ({"seeds": [1, 1]}, "seeds must be distinct"),
    ],
)
def test_bad_grids_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        grid(**kw)


def test_same_seed_under_two_step_sizes_starts_from_the_same_q():
    cfg = grid(lr=[1e-4, 4e-4], seeds=[0, 1])
    dqn = DQN(cfg.q_shape(), cfg.member_seeds, cfg.member_lr)
    assert dqn.store.member(0).equal(dqn.store.member(2)) and dqn.store.member(1).equal(dqn.store.member(3))
    assert not dqn.store.member(0).equal(dqn.store.member(1))
    assert dqn.lr.tolist() == pytest.approx([1e-4, 1e-4, 4e-4, 4e-4])


# ---------------------------------------------------------------- results per point
def rows_for(cfg: RunConfig, scores: dict[int, list[float]]) -> list[dict]:
    """metrics rows: scores[member] at evaluation points 0, 500, ..."""
    return [
        {"env_steps": 500 * t, "updates": 0, **label, "eval_return": scores[label["member"]][t], "wall_s": 0.0}
        for t in range(len(scores[0]))
        for label in cfg.member_labels()
    ]


def test_points_are_reported_separately_never_averaged():
    cfg = grid(lr=[1e-4, 4e-4], seeds=[0, 1])
    # 10 evaluations: the final score is the last one (10% of 10); point 0 ends at 0.2/0.4, point 1 at 0.6/0.8
    scores = {m: [0.0] * 9 + [0.2 * (m + 1)] for m in range(4)}
    points = point_finals(cfg, rows_for(cfg, scores), (0.0, 1.0))
    assert [p["final"]["per_member"] for p in points] == [pytest.approx([0.2, 0.4]), pytest.approx([0.6, 0.8])]
    assert points[0]["final"]["mean"] == pytest.approx(0.3) and points[1]["final"]["mean"] == pytest.approx(0.7)
    # two values: the Student-t interval (t = 12.706) is cut to the score's range [0, 1]
    assert points[0]["final"]["ci95"] == pytest.approx([0.0, 1.0])
    assert points[0]["seeds"] == [0, 1] and points[1]["members"] == [2, 3]
    final = run_final(points)
    assert final["mean"] is None and [p["mean"] for p in final["per_point"]] == pytest.approx([0.3, 0.7])
    single = point_finals(grid(seeds=[0, 1, 2]), rows_for(grid(seeds=[0, 1, 2]), {0: [0.1], 1: [0.2], 2: [0.3]}))
    assert run_final(single) == single[0]["final"]
    assert single[0]["final"]["ci95"] == pytest.approx([0.2 - 4.303 * 0.1 / 3**0.5, 0.2 + 4.303 * 0.1 / 3**0.5], abs=1e-4)


def test_metrics_tail_reports_each_point(tmp_path):
    cfg = grid(lr=[1e-4, 4e-4], seeds=[0, 1])
    path = tmp_path / "metrics.jsonl"
    tail = MetricsTail(str(path), [label["group"] for label in cfg.member_labels()])
    rows = rows_for(cfg, {0: [0.1], 1: [0.3], 2: [0.5], 3: [0.9]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    assert tail.poll() == [] and tail.latest() is None  # member 3 still missing
    with open(path, "a") as f:
        f.write(json.dumps(rows[3]) + "\n")
    (done,) = tail.poll()
    assert done[0] == 0 and done[2].tolist() == [0.1, 0.3, 0.5, 0.9]
    assert tail.latest() == (0, pytest.approx([0.2, 0.7]))
    scale = reference_scores("panflute", {"num_pipes": 2})
    text = scores_text(tail.latest(), point_names(cfg.point_labels()), scale)
    assert text == "eval @ 0: lr=0.0001 0.200, lr=0.0004 0.700 (random 0.431, optimal 0.615)"


def test_bootstrap_interval_lies_inside_the_data_and_collapses_when_constant():
    rng = np.random.default_rng(0)
    samples = np.column_stack([rng.uniform(0.2, 0.4, 30), np.full(30, 0.5), rng.uniform(0, 1, 30)])
    low, high = bootstrap_ci(samples)
    mean = samples.mean(axis=0)
    assert (low <= mean).all() and (mean <= high).all()
    assert low[1] == high[1] == 0.5
    assert (low >= samples.min(axis=0)).all() and (high <= samples.max(axis=0)).all()
    # about sd/sqrt(n) * 1.96 wide for a uniform on [0, 1]
    assert high[2] - low[2] == pytest.approx(2 * 1.96 * (1 / 12) ** 0.5 / 30**0.5, rel=0.25)


def test_training_episode_returns_by_hand():
    episodic = EpisodeReturns(members=2, envs_per_member=2, episodic=True, window=100)
    episodic.add(0, np.array([-1.0, -1.0]), np.array([False, True]))
    episodic.add(0, np.array([-1.0, -1.0]), np.array([True, False]))
    assert episodic.take() == ([pytest.approx(-1.5), None], [2, 0])  # returns -2 and -1
    assert episodic.take() == ([None, None], [0, 0])
    continuing = EpisodeReturns(members=1, envs_per_member=1, episodic=False, window=4)
    for r in (1.0, 0.0, 0.0, 1.0, 1.0):
        continuing.add(0, np.array([r]), np.array([False]))
    assert continuing.take() == ([0.5], [1])  # one 4-step window at 2/4; the fifth step starts the next


# ---------------------------------------------------------------- scores on a scale
@pytest.mark.parametrize("n,spontaneous", [(2, True), (3, True), (3, False), (4, True)])
def test_panflute_closed_forms_match_simulation(n, spontaneous):
    params = {"num_pipes": n, "spontaneous": spontaneous}
    for policy, exact in (("optimal", panflute_optimal(n, spontaneous)), ("random", panflute_random(n, spontaneous))):
        sim = estimate("panflute", params, policy, episodes=2000)
        assert abs(sim["score"] - exact) <= 4 * sim["se"] + 1e-12, policy


def test_panflute_closed_forms_by_hand():
    # n = 3, L = 100: successes at 3, 6, ..., 99 (33), events (1/9) on the other 66 steps from T = 1
    assert panflute_optimal(3) == pytest.approx((33 + 66 / 9) / 100)
    assert panflute_optimal(3, spontaneous=False) == pytest.approx(0.33)
    # random, no events: a success needs action i at T-1-i for all 3 pipes: (1/3)^3 on 97 steps
    assert panflute_random(3, spontaneous=False) == pytest.approx(97 / 27 / 100)


def test_grid_optimal_policies_by_hand():
    open4 = envs.make("opengrid", 1, 0, grid_size=4)
    obs = np.zeros((3, 16), bool)
    obs[[0, 1, 2], [0, 13, 15]] = True  # top-left, bottom row col 1, the goal
    assert open4.optimal_actions(obs).tolist() == [DOWN, RIGHT, STAY]  # down before right: the first best
    # a maze: the way from (0, 0) to the goal (0, 2) goes down, right, right, up around a wall at (0, 1)
    maze = envs.make("procmaze", 1, 0, grid_size=3)
    walls = np.zeros(9, bool)
    walls[[1, 7]] = True
    row = np.zeros(36, bool)
    row[pm.WALL :: pm.CHANNELS] = walls
    row[pm.EMPTY :: pm.CHANNELS] = ~walls
    row[2 * pm.CHANNELS + pm.GOAL] = True
    path = []
    for cell in (0, 3, 4, 5):
        obs = row.copy()
        obs[cell * pm.CHANNELS + pm.PLAYER] = True
        path.append(int(maze.optimal_actions(obs[None])[0]))
    assert path == [DOWN, RIGHT, RIGHT, UP]
    # ButtonGrid 3x3, agent in cell 0, buttons in cells 1 (off) and 2 (on): one move right turns all on
    grid3 = envs.make("buttongrid", 1, 0, grid_size=3, num_buttons=2)
    obs = np.zeros(27, bool)
    obs[0 * bg.CHANNELS + bg.PLAYER] = True
    obs[1 * bg.CHANNELS + bg.BUTTON_OFF] = True
    obs[2 * bg.CHANNELS + bg.BUTTON_ON] = True
    assert grid3.optimal_actions(obs[None]).tolist() == [RIGHT]
    dist, _ = bg.buttongrid_plan(grid3.moves, np.array([1, 2]))
    assert dist[0, 0b00] == 2  # both off: right (cell 1 on), right (cell 2 on)
    assert dist[0, 0b10] == 1 and dist[4, 0b11] == 0
    assert dist[2, 0b01] == 2  # standing on cell 2, off: step down and back up (left would turn cell 1 off)


def test_opengrid_and_wallgrid_optimal_estimates_match_exact_values():
    # OpenGrid(4) without events: return -(d + 1), d the Manhattan distance from a uniform start to the
    # corner: E[d] = 2 x 1.5, so -4.
    est = estimate("opengrid", {"grid_size": 4, "spontaneous": False}, "optimal", episodes=4000)
    assert abs(est["score"] + 4.0) <= 4 * est["se"]
    # WallGrid3x3 without walls: return -d (entering the goal ends the episode), starts uniform on the 8 cells
    d = [1, 2, 1, 2, 3, 2, 3, 4]
    est = estimate("wallgrid3x3", {}, "optimal", episodes=4000)
    assert abs(est["score"] + np.mean(d)) <= 4 * est["se"]


def test_reference_scores_cache_matches_a_recomputation():
    with open(CACHE_PATH) as f:
        cached = json.load(f)
    key = 'opengrid {"grid_size": 3, "spontaneous": true} steps=100'
    assert cached[key] == json.loads(json.dumps(compute_reference("opengrid", {"grid_size": 3, "spontaneous": True})))
    scale = reference_scores("buttongrid")  # the paper's ButtonGrid(5, 4): from the cache, instantly
    assert scale["random"]["score"] < 0.01 < scale["optimal"]["score"] and scale["unit"] == "reward per step"
    assert envs.spec("procmaze").score_range(100) == (-100.0, 0.0) and envs.spec("panflute").score_range(50) == (0.0, 1.0)


def test_play_matches_the_evaluator_definition():
    env = envs.make("opengrid", 4, 5, grid_size=2, spontaneous=False)
    scores = play([env], lambda obs: np.full(obs.shape[:2], STAY), 7)  # never moving: -1 per step
    start = envs.make("opengrid", 4, 5, grid_size=2, spontaneous=False).reset().argmax(axis=1)
    assert scores[0].tolist() == [-1.0 if s == 3 else -7.0 for s in start]  # at the goal: ends at once


# ---------------------------------------------------------------- rendering
@pytest.mark.parametrize("gym_id", list(envs.gym_wrappers.GYM_IDS))
@pytest.mark.parametrize("mode", ["ansi", "rgb_array"])
def test_every_environment_renders(gym_id, mode):
    env = gymnasium.make(gym_id, render_mode=mode)
    check_env(env.unwrapped)
    env.reset(seed=1)
    frame = env.render()
    if mode == "ansi":
        assert isinstance(frame, str) and frame.strip()
    else:
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


def test_text_frames_by_hand():
    maze = envs.make("procmaze", 1, 0, grid_size=3)
    row = np.zeros(36, bool)
    walls = np.zeros(9, bool)
    walls[[1, 7]] = True
    row[pm.WALL :: pm.CHANNELS] = walls
    row[pm.EMPTY :: pm.CHANNELS] = ~walls
    row[2 * pm.CHANNELS + pm.GOAL] = True
    row[0 * pm.CHANNELS + pm.PLAYER] = True
    assert maze.render_text(row) == "A#G\n...\n.#."
    flute = envs.make("panflute", 1, 0, num_pipes=2)
    assert flute.render_text(np.array([True, False, True])) == "  #\n# .\n0 1\nall ends active: reward 1"
    with pytest.raises(ValueError, match="render_mode must be None, ansi or rgb_array, got 'svg'"):
        envs.gym_wrappers.MbgenEnv("opengrid", render_mode="svg")


# ---------------------------------------------------------------- run directories, plots, help
def fake_run(path, cfg: RunConfig, scores: dict[int, list[float]]) -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.toml"), "w") as f:
        f.write(dump_toml(cfg.to_dict()))
    with open(os.path.join(path, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows_for(cfg, scores))
    return str(path)


def test_a_directory_holding_a_run_is_refused_unless_forced(tmp_path):
    run = fake_run(tmp_path / "run", grid(), {0: [0.1], 1: [0.2]})
    (tmp_path / "run" / "notes.txt").write_text("mine")
    (tmp_path / "run" / "checkpoints").mkdir()
    with pytest.raises(
        ValueError,
        match=r"already holds a run \(config.toml, metrics.jsonl\); continue it with --resume .*, pass --force",
    ):
        prepare_run_dir(run)
    prepare_run_dir(run, force=True)
    assert sorted(os.listdir(run)) == ["notes.txt"]  # the run's outputs gone, nothing else
    prepare_run_dir(str(tmp_path / "new"))  # nothing there: nothing to refuse


def test_plot_draws_each_point_members_or_band_and_warns_across_environments(tmp_path):
    from mbgen.launch.run.plots import BAND_MIN_MEMBERS, plot_runs

    few = grid(lr=[1e-4, 4e-4], seeds=[0, 1])
    a = fake_run(tmp_path / "a", few, {m: [0.1, 0.2 + 0.05 * m] for m in range(4)})
    report = plot_runs([a], str(tmp_path / "a.png"))
    assert [(c["point"], len(c["seeds"]), c["style"]) for c in report["curves"]] == [
        ("lr=0.0001", 2, "members"),
        ("lr=0.0004", 2, "members"),
    ]
    assert report["title"] == "er on panflute(num_pipes=2), high-data regime, temperature 0.1, 2 seeds per point"
    assert not report["warnings"]
    many = grid(seeds=list(range(BAND_MIN_MEMBERS)))
    b = fake_run(tmp_path / "b", many, {m: [0.1, 0.3 + 0.01 * m] for m in range(BAND_MIN_MEMBERS)})
    other = RunConfig.build(agent="er", env="opengrid", seeds=[0], steps=2000).resolved()
    c = fake_run(tmp_path / "c", other, {0: [-30.0, -10.0]})
    report = plot_runs([b, c], str(tmp_path / "bc.png"))
    assert [x["style"] for x in report["curves"]] == ["band", "members"]
    assert "runs of different environments share one axis" in report["warnings"][0]
    with open(tmp_path / "bc.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_help_groups_flags_shows_defaults_and_lists_environment_parameters(capsys, monkeypatch):
    from mbgen.launch.cli import build_parser, main

    monkeypatch.setenv("COLUMNS", "250")  # no wrapping inside a help line
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    short = capsys.readouterr().out
    for group in ("what to run:", "learning:", "outputs:"):
        assert group in short
    assert "system:" not in short and "--tolerance" not in short and "--help-all" in short
    assert "--lr LR[,LR...]" in short and "--out DIR" in short and "--seeds S" in short
    assert "env steps per member (offline: updates); 0 = auto: the regime's budget (1,000,000 or 100,000) (default: 0)" in short
    with pytest.raises(SystemExit):
        main(["run", "--help-all"])
    text = capsys.readouterr().out
    for group in ("what to run:", "learning:", "agent options:", "system:", "outputs:"):
        assert group in text
    assert "--tensorboard [true|false]" in text and "--tolerance X" in text and "--keys DIR" in text
    assert "panflute     num_pipes=7, spontaneous=true" in text
    assert "buttongrid   grid_size=5, num_buttons=4, spontaneous=true" in text
    assert "1,000,000 env steps per member" in text

# ---------------------------------------------------------------- plot and export: where they write
def cli(*argv) -> int:
    from mbgen.launch.cli import main

    return main(list(argv))


def test_plot_writes_to_the_current_directory_out_or_stdout(tmp_path, monkeypatch, capsysbinary):
    a = fake_run(tmp_path / "runs" / "er-a", grid(), {0: [0.1, 0.2], 1: [0.2, 0.3]})
    b = fake_run(tmp_path / "runs" / "er-b", grid(), {0: [0.1, 0.3], 1: [0.2, 0.4]})
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert cli("plot", a) == 0
    assert (work / "er-a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # one run: named for it, here
    assert capsysbinary.readouterr().err.decode().strip() == "mbgen plot: 1 curve of 1 run to er-a.png"
    assert cli("plot", a, b) == 0 and (work / "compare.png").exists()  # several: compare.png
    assert cli("plot", a, b, "--out", str(tmp_path)) == 0 and (tmp_path / "compare.png").exists()  # a directory
    assert cli("plot", a, "--out", "fig.svg") == 0 and (work / "fig.svg").read_text().lstrip().startswith("<?xml")
    capsysbinary.readouterr()
    assert cli("plot", a, "--out", "-") == 0
    out = capsysbinary.readouterr()
    assert out.out[:8] == b"\x89PNG\r\n\x1a\n" and "to standard output" in out.err.decode()
    assert sorted(os.listdir(os.path.join(tmp_path, "runs", "er-a"))) == ["config.toml", "metrics.jsonl"]  # untouched


def test_export_writes_to_the_current_directory_out_or_stdout(tmp_path, monkeypatch, capsys):
    run = fake_run(tmp_path / "runs" / "er-a", grid(), {0: [0.1, 0.2], 1: [0.2, 0.3]})
    monkeypatch.chdir(tmp_path)
    assert cli("export", run, "--csv") == 0
    lines = (tmp_path / "er-a.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("env_steps,updates,member,group,lr,temperature,seed")
    assert capsys.readouterr().err.strip() == "mbgen export: 4 rows to er-a.csv"
    assert cli("export", run, "--csv", "--out", "-") == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == lines and out.err.strip() == "mbgen export: 4 rows to standard output"
    assert cli("export", run, "--csv", "--out", str(tmp_path / "t.csv")) == 0 and (tmp_path / "t.csv").exists()


def test_unwritable_outputs_are_refused_in_one_line_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from helpers import mbgen_refusal

    run = fake_run(tmp_path / "run", grid(), {0: [0.1, 0.2], 1: [0.2, 0.3]})
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(tmp_path)
    cases = [
        (("plot", run, "--out", "missing/x.png"), "mbgen plot: error: out: cannot write missing/x.png: missing is not"),
        (("plot", run, "--out", "afile/x.png"), "mbgen plot: error: out: cannot write afile/x.png: afile is not a dir"),
        (("plot", run, "--out", "x.txt"), "mbgen plot: error: out: x.txt: the file name must end in .png, .pdf, .svg"),
        (("export", run, "--csv", "--out", "missing/x.csv"), "mbgen export: error: out: cannot write missing/x.csv"),
        (("export", run), "mbgen export: error: format: choose one: --csv"),
    ]
    for argv, message in cases:
        code, err = mbgen_refusal(*argv)
        assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    import sys

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # an image is not for a terminal
    assert cli("plot", run, "--out", "-") == 2
    assert capsys.readouterr().err.startswith("mbgen plot: error: out: - writes a PNG to standard output, here a term")
    empty = fake_run(tmp_path / "empty", grid(), {0: [], 1: []})
    code, err = mbgen_refusal("export", empty, "--csv")
    assert code == 2 and "holds no evaluations yet" in err and not os.path.exists("empty.csv")
    assert sorted(os.listdir(tmp_path)) == ["afile", "empty", "run"]  # nothing written


def test_a_run_and_a_study_never_share_a_directory(tmp_path):
    from mbgen.launch.study.spec import check_directory, plan, write_plan

    study = plan({"agents": ["er"], "seeds": 1, "envs": {"panflute": {"num_pipes": [2]}}}, "s")
    run = fake_run(tmp_path / "run", grid(), {0: [0.1], 1: [0.2]})
    with pytest.raises(ValueError, match=r"^out: .*run holds a run \(config.toml, metrics.jsonl\), not a study;"):
        check_directory(study, run)
    write_plan(study, str(tmp_path / "study"))
    for force in (False, True):
        with pytest.raises(ValueError, match=r"^out: .*study holds a study \(study.toml\), not a run; choose"):
            prepare_run_dir(str(tmp_path / "study"), force=force)


# ---------------------------------------------------------------- mbgen watch on a run that has ended
def status_of(outcome: str, **kw) -> dict:
    t0 = 1_800_000_000.0
    process = {"pid": 11, "alive": False, "exitcode": 0, "heartbeat_age_s": 0.4, "last_event": "learner_finished"}
    return {
        "outcome": outcome,
        "supervisor_pid": 1,
        "updated": t0 + 50,
        "started": t0 + 20,  # a resumed session's start: the run itself ran 30 s before it
        "elapsed_s": 60.0,
        "ended": t0 + 50 if outcome != "running" else None,
        "agent": "er",
        "env": "panflute",
        "env_params": {"num_pipes": 2},
        "regime": "high",
        "members": 1,
        "points": [{"group": 0, "name": "lr=0.0001 T=0.1", "seeds": [0]}],
        "steps": 1500,
        "total_steps": 1500,
        "updates": 1000,
        "total_updates": 1000,
        "updates_per_s": 40.0,
        "env_steps_per_s": 60.0,
        "eta_s": 25.0,
        "latest_eval": None,
        "train_scores": [None],
        "scale": reference_scores("panflute", {"num_pipes": 2}),
        "processes": {"learner": {**process, "last_event_age_s": 0.3}},
        "warnings": [],
        "transitions": {},
        **kw,
    }


def test_watch_shows_an_ended_run_as_it_was_at_its_end():
    from mbgen.launch.run.watch import render

    ended = status_of("completed")
    three_hours_later = ended["updated"] + 3 * 3600
    text = render("RUN", ended, three_hours_later)
    when = __import__("time").strftime("%Y-%m-%d %H:%M:%S", __import__("time").localtime(ended["ended"]))
    assert f"state     completed at {when} (3 h ago), after 1:00 of running" in text  # not 3:00:30
    assert "the run has ended" in text and "ETA" not in text and "s old" not in text
    assert "heartbeat (as of the end)" in text and "0.4 s before the end  learner_finished (0 s before the end)" in text
    running = render("RUN", status_of("running", processes={}), ended["updated"] + 2)
    assert "state     running, elapsed 1:02, ETA 0:25" in running  # the run's clock, all sessions, goes on


def test_the_summary_line_gives_no_interval_for_one_member_and_says_when_one_is_cut():
    from mbgen.launch.cli import format_final

    one = point_finals(grid(seeds=[0]), rows_for(grid(seeds=[0]), {0: [0.3]}), (0.0, 1.0))[0]["final"]
    assert one["ci95"] == [None, None]  # not [0.3, 0.3]
    assert format_final(one, [0.0, 1.0]) == "0.3000 (too few seeds for an interval) over 1 member: 0.300"
    two = point_finals(grid(), rows_for(grid(), {0: [0.0], 1: [1.0]}), (0.0, 1.0))[0]["final"]
    assert two["ci95"] == [0.0, 1.0]  # 0.5 +- 6.35, cut to [0, 1]
    assert format_final(two, [0.0, 1.0]) == (
        "0.5000 (95% CI 0.0000 .. 1.0000, cut to the score's range) over 2 members: 0.000, 1.000"
    )


def test_a_runs_wall_time_counts_its_sessions_never_the_time_it_lay_stopped(tmp_path):
    from mbgen.launch.run.results import session_wall_s

    def event(t, name, role="supervisor"):
        return json.dumps({"t": 1000.0 + t, "role": role, "event": name}) + "\n"

    path = tmp_path / "events.jsonl"
    path.write_text(
        event(0, "run_started")
        + event(30, "eval", "evaluator")
        + event(36.5, "run_finished")  # stopped with Ctrl-C
        + event(3600, "replay_started", "replay")  # an hour later, resumed: its processes start up
        + event(3601, "run_started")
        + event(3650, "eval", "evaluator")  # ... and it is killed
        + event(3700, "run_started")  # resumed at once
        + event(3710, "run_finished")
    )
    # 36.5 + 49 + 10: the hour between the first session and the second is nobody's time
    assert session_wall_s(str(path)) == pytest.approx(95.5)
