"""`mbgen offline`: the evaluation rules by hand, and the whole pipeline at a tiny budget."""

import json

import numpy as np
import pytest
from helpers import mbgen

from envs import wallgrid as wg
from envs.grid import LEFT, RIGHT, STAY, UP
from launch.offline import cell_statistics, evaluation_cells, load_dataset, remaining, verdict


def test_evaluation_cells_are_the_open_cells_of_both_layouts():
    cells = evaluation_cells()
    assert len(cells) == 12 and [c for layout, c in cells if layout == 0] == [
        (0, 1),
        (0, 2),
        (1, 2),
        (2, 0),
        (2, 1),
        (2, 2),
    ]


def test_a_cell_is_wrong_when_most_seeds_pick_a_non_optimal_action():
    optimal = [
        int(np.flatnonzero(wg.optimal_actions(wg.EVALUATION_LAYOUTS[layout])[cell])[0])
        for layout, cell in evaluation_cells()
    ]
    actions = np.tile(optimal, (10, 1))
    rows = cell_statistics(actions)
    assert all(r["optimal_fraction"] == 1.0 for r in rows) and verdict(rows) == "succeeds"
    # bottom-middle cell of the lower layout: only RIGHT is optimal (the paper's example)
    j = evaluation_cells().index((0, (2, 1)))
    assert optimal[j] == RIGHT
    actions[:5, j] = LEFT  # half the seeds wrong: not a majority
    rows = cell_statistics(actions)
    assert rows[j]["optimal_fraction"] == 0.5 and verdict(rows) == "succeeds"
    assert rows[j]["action_fractions"] == [0.0, 0.0, 0.5, 0.0, 0.5]
    actions[5, j] = STAY  # now 6 of 10 seeds choose a non-optimal action
    assert verdict(cell_statistics(actions)) == "fails"
    assert optimal[evaluation_cells().index((0, (1, 2)))] == UP


def test_time_left_scales_by_each_agents_measured_cost():
    # er took 100 s; model1 and model10 cost 2.9 and 2.7 er-updates per update
    assert remaining(100.0, ["er"], ["model1", "model10"]) == pytest.approx(560.0)
    assert remaining(390.0, ["er", "model1"], ["model10"]) == pytest.approx(270.0)


def test_dataset_files_are_validated(tmp_path):
    data = wg.dataset("path")
    good = tmp_path / "good.npz"
    np.savez(good, obs=data.obs, action=data.action, reward=data.reward, next_obs=data.next_obs, terminal=data.terminal)
    assert len(load_dataset(str(good), 36, 5)) == len(data)
    np.savez(
        tmp_path / "bad.npz",
        obs=data.obs[:, :30],
        action=data.action,
        reward=data.reward,
        next_obs=data.next_obs,
        terminal=data.terminal,
    )
    with pytest.raises(ValueError, match=r"obs must be 0/1 values shaped \[292, 36\]"):
        load_dataset(str(tmp_path / "bad.npz"), 36, 5)
    np.savez(tmp_path / "short.npz", obs=data.obs)
    with pytest.raises(ValueError, match="lacks array 'action'"):
        load_dataset(str(tmp_path / "short.npz"), 36, 5)
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(str(tmp_path / "none.npz"), 36, 5)


@pytest.mark.slow
def test_the_whole_pipeline_at_a_tiny_budget(tmp_path):
    out = tmp_path / "offline"
    done = mbgen("offline", "--seeds", "2", "--updates", "40", "--coverage", "ALL", "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "offline.json").read_text())
    assert report["seeds"] == 2 and report["updates"] == 40
    assert set(report["table"]) == {"er", "model1", "model10"}
    for agent in report["table"]:
        assert set(report["table"][agent]) == {"all", "path", "single", "none"}
        assert set(report["table"][agent].values()) <= {"succeeds", "fails"}
    assert len(report["results"]) == 3 * 4 * 12
    for row in report["results"]:
        assert {"agent", "coverage", "layout", "cell", "optimal_fraction"} <= set(row)
        assert row["layout"] in (0, 1) and len(row["cell"]) == 2 and 0.0 <= row["optimal_fraction"] <= 1.0
        assert sum(row["action_fractions"]) == pytest.approx(1.0)
    assert report["expected"]["model10"]["single"] == "succeeds" and isinstance(report["matches_paper"], bool)
    assert set(report["model_accuracy"]) == {"model1", "model10"}
    assert (out / "offline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "evaluation data" in done.stdout and "Single-Cell" in done.stdout


@pytest.mark.slow
def test_a_custom_dataset_file(tmp_path):
    data = wg.dataset("all")
    path = tmp_path / "mine.npz"
    np.savez(path, obs=data.obs, action=data.action, reward=data.reward, next_obs=data.next_obs, terminal=data.terminal)
    out = tmp_path / "custom"
    done = mbgen(
        "offline",
        "--dataset",
        str(path),
        "--agents",
        "er",
        "--seeds",
        "2",
        "--updates",
        "30",
        "--out",
        str(out),
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "offline.json").read_text())
    assert report["coverages"] == ["custom"] and set(report["table"]["er"]) == {"custom"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["--coverage", "most"], "--coverage must be one of all, path, single, none or ALL, got 'most'"),
        (["--agents", "er,dreamer"], "--agents must list some of er, model1, model10"),
        (["--env", "procmaze"], "the built-in datasets are WallGrid3x3's"),
    ],
)
def test_bad_offline_options(tmp_path, args, message):
    done = mbgen("offline", *args, "--out", str(tmp_path / "x"), "--quiet")
    assert done.returncode == 2 and message in done.stderr


def test_the_table_agents_are_checked_against_theorem_1s_prediction():
    from launch.offline import PREDICTED, format_table

    er_row = {"all": "succeeds", "path": "fails", "single": "fails", "none": "fails"}
    assert PREDICTED["table1"] == PREDICTED["table10"] == er_row
    report = {
        "agents": ["er", "table10", "ens10"],
        "coverages": ["all", "path"],
        "table": {
            "er": {"all": "succeeds", "path": "fails"},
            "table10": {"all": "succeeds", "path": "succeeds"},
            "ens10": {"all": "fails", "path": "fails"},
        },
        "expected": {"er": {"all": "succeeds", "path": "fails"}},
        "predicted": {"table10": {"all": "succeeds", "path": "fails"}},
        "matches_paper": True,
        "matches_prediction": False,
        "seeds": 2,
        "updates": 40,
    }
    lines = format_table(report).splitlines()
    assert lines[0].split() == ["evaluation", "data", "DQN", "+", "ER", "table,", "10-step", "ensemble,", "10-step"]
    # ens10 has neither the paper's nor a predicted verdict: nothing beside its cell
    assert lines[2].split() == ["Path-to-Goal", "fails", "succeeds", "(predicted:", "fails)", "fails"]
    assert "reproduces the paper's table (2 seeds, 40 updates)" in lines
    assert "table10 does NOT match Theorem 1's prediction (ER's row) (2 seeds, 40 updates)" in lines
