"""The algorithm seam and the agents beyond imagined replay: value expansion (MVE, STEVE) and planning (MPC).

The maths on hand-worked values; the declarations as every process reads them; each agent as a real
multi-process run; lock-step runs repeating bit for bit.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from helpers import mbgen, start, tiny_run

from mbgen.learner.agents import AGENTS, VARIANTS
from mbgen.learner.config import RunConfig
from mbgen.learner.expansion import STEVE_EPS, mve_targets, steve_candidates, steve_targets
from mbgen.learner.planning import cem, exhaustive, plan


# ------------------------------------------------------------------ MVE targets
def test_mve_targets_on_a_hand_built_three_step_path_with_a_continuation_below_one():
    """gamma = 0.5; rewards 1, 2, 4; continuations 1, 0.5, 1; bootstrap values V_t of s_{t+1}: 10, 20, 8.
    y_2 = 4 + 0.5 * 1 * 8 = 8;  y_1 = 2 + 0.5 * 0.5 * 8 = 4;  y_0 = 1 + 0.5 * 1 * 4 = 3.
    Row weights: w_0 = 1, w_1 = c_0 = 1, w_2 = c_0 c_1 = 0.5."""
    r, c, v = torch.tensor([[1.0, 2.0, 4.0]]), torch.tensor([[1.0, 0.5, 1.0]]), torch.ones(1, 3)
    targets, weights = mve_targets(r, c, v, torch.tensor([[10.0, 20.0, 8.0]]), 0.5)
    assert targets.tolist() == [[3.0, 4.0, 8.0]]
    assert weights.tolist() == [[1.0, 1.0, 0.5]]
    # The sum form: y_0 = r_0 + g c_0 r_1 + g^2 c_0 c_1 r_2 + g^3 c_0 c_1 c_2 V_2 = 1 + 1 + 0.5 + 0.5 = 3.
    assert 1 + 0.5 * 2 + 0.25 * 0.5 * 4 + 0.125 * 0.5 * 8 == 3.0


def test_mve_targets_bootstrap_before_an_invalid_transition():
    """Transition 2 invalid: y_1 bootstraps from V_1 = 20 instead of y_2; row 2 gets weight 0.
    y_1 = 2 + 0.5 * 0.5 * 20 = 7;  y_0 = 1 + 0.5 * 7 = 4.5."""
    r, c = torch.tensor([[1.0, 2.0, 4.0]]), torch.tensor([[1.0, 0.5, 1.0]])
    targets, weights = mve_targets(r, c, torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[10.0, 20.0, 8.0]]), 0.5)
    assert targets[0, :2].tolist() == [4.5, 7.0]
    assert weights.tolist() == [[1.0, 1.0, 0.0]]


# ------------------------------------------------------------------ STEVE
def test_steve_candidates_and_inverse_variance_weights_on_a_hand_built_ensemble():
    """Two models, L = 2 transitions, gamma = 0.5, every continuation 1.
    Model a: r = (1, 2), V = (4, 6): T_0 = 1 + 0.5*4 = 3, T_1 = 1 + 0.5*2 + 0.25*6 = 3.5.
    Model b: r = (1, 0), V = (4, 2): T_0 = 3,              T_1 = 1 + 0 + 0.25*2 = 1.5.
    Horizon 0: mean 3, variance 0; horizon 1: mean 2.5, variance 1 (population).
    Weights: 1/eps and 1/(1 + eps), normalised; the target is their weighted mean."""
    r = torch.tensor([[[1.0, 2.0], [1.0, 0.0]]])  # [1, K=2, L=2]
    c = torch.ones(1, 2, 2)
    V = torch.tensor([[[4.0, 6.0], [4.0, 2.0]]])
    assert steve_candidates(r, c, V, 0.5).tolist() == [[[3.0, 3.5], [3.0, 1.5]]]
    target, weights = steve_targets(r, c, V, 0.5)
    inverse = torch.tensor([1 / STEVE_EPS, 1 / (1 + STEVE_EPS)])
    expected = inverse / inverse.sum()
    assert weights[0].tolist() == pytest.approx(expected.tolist())
    assert target.item() == pytest.approx(float(expected[0] * 3 + expected[1] * 2.5))
    # Models that agree everywhere weigh every horizon alike: the target is the plain mean over horizons.
    same = torch.tensor([[[1.0, 2.0], [1.0, 2.0]]])
    target, weights = steve_targets(same, c, torch.tensor([[[4.0, 6.0], [4.0, 6.0]]]), 0.5)
    assert weights[0].tolist() == pytest.approx([0.5, 0.5]) and target.item() == pytest.approx(3.25)


def test_steve_discounts_by_the_continuations_before_each_step():
    """One model, gamma = 1: c = (0.5, 1), r = (1, 2), V = (10, 4). T_0 = 1 + 0.5 * 10 = 6; T_1 = 1 + 0.5 * 2
    + 0.5 * 1 * 4 = 4 (D_1 = c_0 = 0.5)."""
    t = steve_candidates(torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 1.0]]), torch.tensor([[10.0, 4.0]]), 1.0)
    assert t.tolist() == [[6.0, 4.0]]


# ------------------------------------------------------------------ planning
def chain_model():
    """A deterministic chain of states 0..3 as one-hot observations, 2 actions: 0 stays (reward 0), 1 moves
    right (reward -1, but 10 on entering state 3). Q is 0 everywhere except Q(s, stay) = 1 in state 0, so a
    greedy Q stays, while a 2-step lookahead from state 1 moves: -1 + gamma * 10 > anything staying."""

    def step(state, action):
        index = state.argmax(-1)
        moved = torch.where(action == 1, (index + 1).clamp(max=3), index)
        reward = torch.where(action == 1, torch.where(moved == 3, 10.0, -1.0), 0.0)
        return torch.nn.functional.one_hot(moved, 4).float(), reward, torch.ones_like(reward)

    def q_values(state):
        q = torch.zeros(*state.shape[:-1], 2)
        q[..., 0] = (state.argmax(-1) == 0).float()
        return q

    return step, q_values


def test_the_planner_picks_what_a_two_step_lookahead_prefers_and_a_greedy_q_would_not():
    step, q_values = chain_model()
    obs = torch.nn.functional.one_hot(torch.tensor([[1, 0]]), 4).float()  # [P=1, N=2, D]: states 1 and 0
    values = exhaustive(step, q_values, obs, 2, 2, 0.9)
    # State 1: stay-stay 0 + max Q(1) = 0 -> 0; stay-move 0 + (-1) + 0.81 * 0 = -1; move-stay -1 + 0 + 0 = -1;
    # move-move -1 + 0.9 * 10 + 0.81 * max Q(3) = 8. First-action values: stay max(0, -1) = 0, move 8.
    assert values[0, 0].tolist() == pytest.approx([0.0, 8.0])
    # State 0: stay-stay 0 + 0.81 * 1 = 0.81; stay-move -0.9 + 0.81 * 0 = -0.9; move-stay -1; move-move -1 - 0.9 = -1.9.
    assert values[0, 1].tolist() == pytest.approx([0.81, -1.0])
    assert q_values(obs)[0, 0].argmax().item() == 0 and values[0, 0].argmax().item() == 1  # greedy Q would stay
    # One step of lookahead does not see the reward: from state 1 moving gives -1 + 0.9 * max Q(2) = -1 < 0.
    assert exhaustive(step, q_values, obs, 2, 1, 0.9)[0, 0].argmax().item() == 0


def test_cem_finds_the_same_first_action_values_when_every_sequence_is_drawn():
    step, q_values = chain_model()
    obs = torch.nn.functional.one_hot(torch.tensor([[1, 0]]), 4).float()
    full = exhaustive(step, q_values, obs, 2, 3, 0.9)
    found = cem(step, q_values, obs, 2, 3, 0.9, samples=64, iterations=3, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(found, full)  # 32 draws per first action over 4 continuations: all of them seen
    assert torch.equal(plan(step, q_values, obs, 2, 3, 0.9, 8, 1, None), full)  # 2^3 <= 8: exhaustive


# ------------------------------------------------------------------ declarations
def test_every_agent_declares_its_training_acting_and_batch():
    for name, spec in AGENTS.items():
        cfg = RunConfig.build(agent=name, env="procmaze", seeds=[0, 1]).resolved()
        rows = spec.trains_on.rows(cfg)
        assert 0 < rows <= cfg.learning.batch_size, name
        batch = spec.trains_on.batch_spec(cfg)
        assert not (batch and not spec.model_server), f"{name}: a batch but no model server to make it"
        if spec.model_server:
            assert spec.work_class() is not None
    mve = RunConfig.build(agent="mve", env="procmaze", seeds=[0]).resolved()
    assert mve.spec.trains_on.rows(mve) == 29 * 11  # batch_size 320 // (H + 1) starts, H + 1 states each
    steve = RunConfig.build(agent="steve", env="procmaze", seeds=[0]).resolved()
    assert steve.spec.trains_on.batch_spec(steve)["states"][1] == (1, 320, 4, 5, 64)  # K = 4, H = 3: 5 states


def test_offline_names_come_from_the_registry():
    assert {"er", "model1", "model10", "table1", "table10", "ens10", "mve1", "mve10", "mpc1", "mpc3"} <= set(VARIANTS)
    spec, variant = VARIANTS["mpc3"]
    assert spec.name == "mpc" and variant.options == {"plan_depth": 3}


def test_an_agent_refuses_another_agents_option_naming_the_agent(tmp_path):
    done = mbgen("run", "--agent", "mve", "--plan-depth", "2", "--out", str(tmp_path / "never"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "plan_depth is an option of agent mpc, not of mve" in done.stderr
    assert not (tmp_path / "never").exists()


# ------------------------------------------------------------------ real runs
def run_summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["mve", "steve", "mpc"])
def test_each_new_agent_runs_as_a_multi_process_system(agent, tmp_path):
    run_dir = str(tmp_path / agent)
    extra = ["--ensemble-size", "2"] if agent == "steve" else []
    done = mbgen("run", *tiny_run(agent, 1000), "--hidden", "16,16", *extra, "--out", run_dir, timeout=240)
    assert done.returncode == 0, done.stderr
    s = run_summary(run_dir)
    assert s["outcome"] == "completed" and s["reconciled"], s
    if agent == "steve":
        with open(os.path.join(run_dir, "events.jsonl")) as f:
            weights = [json.loads(line).get("horizon_weights") for line in f if "horizon_weights" in line]
        assert weights and all(abs(sum(w) - 1) < 1e-3 for w in weights[-1])


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["mve", "mpc"])
def test_lock_step_runs_of_the_new_agents_repeat_bit_for_bit(agent, tmp_path):
    # The two runs at once: lock-step maths does not depend on timing, and they share the cores.
    run_dirs = [str(tmp_path / f"{agent}{i}") for i in range(2)]
    procs = [start("run", *tiny_run(agent, 750), "--hidden", "16,16", "--tolerance", "0", "--out", d) for d in run_dirs]
    scores = []
    for proc, run_dir in zip(procs, run_dirs):
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            scores.append([(r["env_steps"], r["member"], r["eval_return"]) for r in map(json.loads, f)])
    assert scores[0] == scores[1] and len(scores[0]) > 2
