"""`mbgen offline`: the evaluation rules by hand, and the whole pipeline at a tiny budget."""

import argparse
import json

import numpy as np
import pytest
from helpers import mbgen, mbgen_refusal
from mbgen.envs import wallgrid as wg
from mbgen.envs.grid import LEFT, RIGHT, STAY, UP
from mbgen.launch.offline.experiment import (
    cell_statistics,
    coverage_levels,
    entry,
    evaluation_cells,
    load_dataset,
    remaining,
    verdict,
)


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


def test_an_entry_shows_its_weakest_cell_and_whether_it_keeps_the_margin():
    optimal = [
        int(np.flatnonzero(wg.optimal_actions(wg.EVALUATION_LAYOUTS[layout])[cell])[0])
        for layout, cell in evaluation_cells()
    ]
    actions = np.tile(optimal, (30, 1))
    j = evaluation_cells().index((1, (1, 2)))
    actions[:11, j] = STAY  # 19 of 30 optimal: succeeds (a majority), but below 2/3
    rows = cell_statistics(actions)
    assert rows[j]["optimal_count"] == 19 and rows[j]["ci95"] == [0.4551, 0.7813]  # Wilson, by launch/stats.py
    e = entry(rows, "succeeds")
    assert e["verdict"] == "succeeds" and e["with_margin"] is False
    assert e["weakest"] == {
        "layout": 1,
        "cell": [1, 2],
        "optimal_count": 19,
        "optimal_fraction": 19 / 30,
        "ci95": [0.4551, 0.7813],
    }
    actions[:1, j] = optimal[j]  # 20 of 30 = 2/3 exactly: the margin holds
    assert entry(cell_statistics(actions), "succeeds")["with_margin"] is True
    actions[:20, j] = STAY  # 10 of 30 = 1/3: fails, with the margin
    e = entry(cell_statistics(actions), "fails")
    assert e["verdict"] == "fails" and e["with_margin"] is True
    actions[:1, j] = optimal[j]  # 11 of 30: still fails, but inside the margin
    assert entry(cell_statistics(actions), "fails")["with_margin"] is False
    assert entry(cell_statistics(actions), None)["with_margin"] is None  # nothing wanted of it


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
    assert report["seeds"] == 2 and report["seed_list"] == [0, 1] and report["updates"] == 40 and report["lockstep"]
    assert report["protocol"] == "fast" and report["hyperparameters"]["hidden"] == [64, 64, 64]
    assert set(report["table"]) == {"er", "model1", "model10"}
    for agent in report["table"]:
        assert set(report["table"][agent]) == {"all", "path", "single", "none"}
        assert set(report["table"][agent].values()) <= {"succeeds", "fails"}
    assert len(report["results"]) == 3 * 4 * 12
    for row in report["results"]:
        assert {"agent", "coverage", "layout", "cell", "optimal_fraction"} <= set(row)
        assert row["layout"] in (0, 1) and len(row["cell"]) == 2 and 0.0 <= row["optimal_fraction"] <= 1.0
        assert sum(row["action_fractions"]) == pytest.approx(1.0)
        assert row["optimal_fraction"] == row["optimal_count"] / 2
        assert row["ci95"][0] <= row["optimal_fraction"] <= row["ci95"][1]
    for agent, row in report["entries"].items():
        for coverage, e in row.items():
            assert (
                e["wanted"] == report["expected"][agent][coverage] and e["verdict"] == report["table"][agent][coverage]
            )
    study = report["budget_study"]
    assert list(study) == [str(b) for b in range(5, 41, 5)]  # a checkpoint every updates/8
    for row in study.values():
        assert all(0.0 <= f <= 1.0 for by_coverage in row["weakest_fraction"].values() for f in by_coverage.values())
    final = study["40"]["weakest_fraction"]
    assert final == {
        a: {c: e["weakest"]["optimal_fraction"] for c, e in row.items()} for a, row in report["entries"].items()
    }
    kept, total = report["entries_with_margin"]
    assert total == 12 and 0 <= kept <= 12
    assert set(report["q_sha256"]) == {"er", "model1", "model10"}
    assert set(json.loads((out / "timing.json").read_text())["wall_s"]) == {"er", "model1", "model10"}
    assert report["expected"]["model10"]["single"] == "succeeds" and isinstance(report["matches_paper"], bool)
    assert set(report["model_accuracy"]) == {"model1", "model10"}
    assert (out / "offline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "evaluation data" in done.stdout and "Single-Cell" in done.stdout
    assert (
        "reproduces the paper's table (2 seeds, 40 updates, 64,64,64 units)" in done.stdout
        or "does NOT reproduce the paper's table" in done.stdout
    )
    assert f"with the margin: {kept}/12 entries" in done.stdout


@pytest.mark.slow
def test_two_runs_with_the_same_seeds_give_the_same_offline_json(tmp_path):
    """Lock-step (the default): model update u and rollout u use Q version u, so nothing depends on timing."""
    reports = []
    for name in ("first", "second"):
        out = tmp_path / name
        args = ("--agents", "model10", "--coverage", "path", "--first-seed", "3", "--seeds", "2", "--updates", "60")
        done = mbgen("offline", *args, "--out", str(out), "--quiet")
        assert done.returncode == 0, done.stderr
        reports.append((out / "offline.json").read_bytes())
    assert reports[0] == reports[1]
    report = json.loads(reports[0])
    assert report["seed_list"] == [3, 4] and report["lockstep"] and len(report["q_sha256"]["model10"]) == 64


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


def test_coverage_levels_are_a_list_in_the_tables_order():
    assert coverage_levels("ALL") == ["all", "path", "single", "none"]
    assert coverage_levels("single,path") == ["path", "single"]
    assert coverage_levels("none") == ["none"]
    for bad in ("path,path", "path,most", ""):
        with pytest.raises(ValueError, match="--coverage must be one or more of"):
            coverage_levels(bad)


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["--coverage", "most"],
            "--coverage must be one or more of all, path, single, none (comma-separated, distinct)",
        ),
        (["--coverage", "path,path"], "or ALL, got 'path,path'"),
        (["--agents", "er,dreamer"], "--agents must list some of er, model1, model10"),
        (["--env", "procmaze"], "the built-in datasets are WallGrid3x3's"),
        (["--seed-list", "4,1000"], "offline seeds must be below 1000"),
        (["--seed-list", "4,4"], "--seed-list must be distinct integers >= 0"),
        (["--seeds", "0"], "--seeds must be an integer >= 1, got 0"),
        (["--lockstep", "maybe"], "--lockstep: invalid choice: 'maybe' (choose from 'on', 'off')"),
        (["--protocol", "long"], "--protocol: invalid choice: 'long' (choose from 'fast', 'paper')"),
        (["--hidden", "64,x"], "--hidden must be comma-separated integers >= 1, got '64,x'"),
    ],
)
def test_bad_offline_options(tmp_path, args, message):
    code, stderr = mbgen_refusal("offline", *args, "--out", str(tmp_path / "x"), "--quiet")
    assert code == 2 and message in stderr
    assert not (tmp_path / "x").exists()


def test_the_table_agents_are_checked_against_theorem_1s_prediction():
    from mbgen.launch.offline.experiment import PREDICTED, format_table

    er_row = {"all": "succeeds", "path": "fails", "single": "fails", "none": "fails"}
    assert PREDICTED["table1"] == PREDICTED["table10"] == er_row

    def judged(verdict, wanted, count, with_margin, ci95):
        weakest = {"layout": 1, "cell": [1, 2], "optimal_count": count, "optimal_fraction": count / 30, "ci95": ci95}
        return {"verdict": verdict, "wanted": wanted, "weakest": weakest, "with_margin": with_margin}

    report = {
        "agents": ["er", "table10", "ens10"],
        "coverages": ["all", "path"],
        "table": {
            "er": {"all": "succeeds", "path": "fails"},
            "table10": {"all": "succeeds", "path": "succeeds"},
            "ens10": {"all": "fails", "path": "fails"},
        },
        "entries": {
            "er": {
                "all": judged("succeeds", "succeeds", 30, True, [0.8865, 1.0]),
                "path": judged("fails", "fails", 0, True, [0.0, 0.1135]),
            },
            "table10": {
                "all": judged("succeeds", "succeeds", 19, False, [0.4551, 0.7813]),
                "path": judged("succeeds", "fails", 30, False, [0.8865, 1.0]),
            },
            "ens10": {
                "all": judged("fails", None, 3, None, [0.0346, 0.2562]),
                "path": judged("fails", None, 0, None, [0.0, 0.1135]),
            },
        },
        "expected": {"er": {"all": "succeeds", "path": "fails"}},
        "predicted": {"table10": {"all": "succeeds", "path": "fails"}},
        "matches_paper": True,
        "matches_prediction": False,
        "entries_with_margin": [2, 4],
        "seeds": 30,
        "updates": 40,
        "hyperparameters": {"hidden": [64, 64, 64]},
    }
    lines = format_table(report).splitlines()
    assert lines[0].split() == ["evaluation", "data", "DQN", "+", "ER", "table,", "10-step", "ensemble,", "10-step"]
    # verdict, weakest cell's fraction optimal [interval], ! without the margin; ens10 is judged against nothing
    assert lines[1].split() == [
        "All-Evaluation",
        "succeeds",
        "1.00",
        "[0.89,1.00]",
        "succeeds",
        "0.63",
        "[0.46,0.78]!",
        "fails",
        "0.10",
        "[0.03,0.26]",
    ]
    assert lines[2].split() == [
        "Path-to-Goal",
        "fails",
        "0.00",
        "[0.00,0.11]",
        "succeeds",
        "1.00",
        "[0.89,1.00]!",
        "(predicted:",
        "fails)",
        "fails",
        "0.00",
        "[0.00,0.11]",
    ]
    assert "reproduces the 2 entries of the paper's table it ran (30 seeds, 40 updates, 64,64,64 units)" in lines
    assert "table10 does NOT match the predictions from Theorem 1 (30 seeds, 40 updates, 64,64,64 units)" in lines
    # table10 on Path-to-Goal is furthest on the wrong side of its line (1.00 where <= 1/3 is wanted)
    assert (
        "with the margin: 2/4 entries; closest to its line: table10 on Path-to-Goal, layout 1 cell (1, 2), "
        "30/30 seeds optimal" in lines
    )


def test_a_protocol_names_network_sizes_and_budget_and_options_override_it():
    from mbgen.launch.offline.experiment import apply_protocol
    from mbgen.launch.offline.options import PROTOCOLS, add_offline_options

    parser = argparse.ArgumentParser()
    add_offline_options(parser)

    def resolved(*argv):
        args = parser.parse_args(argv)
        apply_protocol(args)
        return args.protocol, args.hidden, args.updates

    assert resolved() == ("fast", "64,64,64", 3000)
    assert resolved("--protocol", "paper") == ("paper", "128,128,128", 3000)
    assert resolved("--protocol", "paper", "--updates", "40") == ("paper", "128,128,128", 40)
    assert resolved("--hidden", "32,32") == ("fast", "32,32", 3000)
    assert set(PROTOCOLS) == {"fast", "paper"}
