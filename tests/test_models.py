"""Model losses by hand, rollouts on constructed models, the perfect model, and learning a real model."""

import math

import numpy as np
import pytest
import torch
from helpers import mbgen, tiny_run
from mbgen.learner.config import RunConfig
from mbgen.learner.dqn import q_network
from mbgen.learner.optim import adam_init, adam_step
from mbgen.learner.shapes import mlp_shape
from mbgen.modelserver.diagnostics import accuracy, panflute_probe, smoothing
from mbgen.envs.base import EnvSpec
from mbgen.learner.agents import agent_spec
from mbgen.modelserver.interface import ModelContext, Prediction, Step
from mbgen.modelserver.losses import (
    balanced_kl,
    bernoulli_nll,
    categorical_kl,
    gaussian_kl,
    latent_model_loss,
    simple_model_loss,
)
from mbgen.modelserver.models import LatentModel, PerfectModel, SimpleModel
from mbgen.modelserver.rollout import RolloutEngine, rollout, softmax_sample

from mbgen import envs

LOG2 = math.log(2.0)


def test_simple_model_loss_by_hand():
    # transition 1 (continuing): reward 0.5 (1.5 - 0.5)^2 = 0.5; continuation BCE(0, 1) = log 2;
    #   next obs BCE(0, 1) + BCE(2, 0) = log 2 + log(1 + e^2)
    # transition 2 (terminal): reward 0.5; continuation BCE(0, 0) = log 2; next obs skipped
    first = 0.5 + LOG2 + LOG2 + math.log1p(math.e**2)
    second = 0.5 + LOG2
    loss = simple_model_loss(
        next_logits=torch.tensor([[[0.0, 2.0], [5.0, -5.0]]]),
        reward_mean=torch.tensor([[0.5, 0.5]]),
        cont_logit=torch.tensor([[0.0, 0.0]]),
        reward=torch.tensor([[1.5, 1.5]]),
        next_obs=torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
        continuation=torch.tensor([[1.0, 0.0]]),
    )
    assert loss.tolist() == pytest.approx([(first + second) / 2], rel=1e-6)
    assert bernoulli_nll(torch.tensor([100.0, -100.0]), torch.tensor([1.0, 0.0])).tolist() == pytest.approx([0, 0])


def test_kl_values_by_hand():
    p, q = torch.tensor([[0.5, 0.5]]).log(), torch.tensor([[0.25, 0.75]]).log()
    assert categorical_kl(p, q).item() == pytest.approx(0.5 * LOG2 + 0.5 * math.log(0.5 / 0.75))
    # KL(N(0, 1) || N(1, 2)) = log 2 + (1 + 1) / (2 * 4) - 1/2
    kl = gaussian_kl(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(1.0), torch.tensor(2.0))
    assert kl.item() == pytest.approx(LOG2 + 0.25 - 0.5)
    assert gaussian_kl(torch.tensor(0.3), torch.tensor(0.7), torch.tensor(0.3), torch.tensor(0.7)).item() == 0.0


def test_balanced_kl_sends_0_8_to_the_prior_and_0_2_to_the_posterior():
    post_logits = torch.tensor([[0.3, -0.2, 0.1]], requires_grad=True)
    prior_logits = torch.tensor([[-0.5, 0.4, 0.2]], requires_grad=True)
    post, prior = (torch.log_softmax(post_logits, -1),), (torch.log_softmax(prior_logits, -1),)
    balanced_kl(post, prior, categorical_kl).sum().backward()
    ref_post = post_logits.detach().clone().requires_grad_(True)
    ref_prior = prior_logits.detach().clone().requires_grad_(True)
    categorical_kl(torch.log_softmax(ref_post, -1), torch.log_softmax(ref_prior, -1)).sum().backward()
    assert torch.allclose(post_logits.grad, 0.2 * ref_post.grad)
    assert torch.allclose(prior_logits.grad, 0.8 * ref_prior.grad)


def test_latent_model_loss_by_hand():
    # reward 0.5 * 1^2; continuation BCE(0, 1) = log 2; reconstruction BCE(0, 1) = log 2; KL term 0.25
    loss = latent_model_loss(
        torch.tensor([[[0.0]]]),
        torch.tensor([[[1.0]]]),
        torch.tensor([[0.0]]),
        torch.tensor([[0.0]]),
        torch.tensor([[1.0]]),
        torch.tensor([[1.0]]),
        torch.tensor([[0.25]]),
    )
    assert loss.item() == pytest.approx(0.5 + 2 * LOG2 + 0.25)


def cfg(agent, env="procmaze", **kw):
    latent = dict(latent_features=4, latent_classes=3) if hasattr(agent_spec(agent).options, "latent_features") else {}
    base = dict(seeds=[0, 1], hidden=[16, 16], **latent)
    return RunConfig.build(agent=agent, env=env, **{**base, **kw}).resolved()


def real_batch(env_name="procmaze", n=32, members=2, seed=0, **params):
    env = envs.make(env_name, n, seed, **params)
    obs = env.reset()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(members):
        a = rng.integers(0, env.num_actions, n)
        nxt, r, term, obs2 = env.step(a)
        out.append((obs, a, r, nxt, 1.0 - term))
        obs = obs2
    f = lambda i, dt: torch.from_numpy(np.stack([o[i] for o in out])).to(dt)  # noqa: E731
    return f(0, torch.float32), f(1, torch.int64), f(2, torch.float32), f(3, torch.float32), f(4, torch.float32)


@pytest.mark.parametrize("agent", ["simple", "latent-cat", "latent-gauss"])
def test_learned_models_train(agent):
    c = cfg(agent)
    gen = torch.Generator().manual_seed(0)
    model = (SimpleModel if agent == "simple" else LatentModel)(ModelContext(c, torch.device("cpu"), gen))
    batch = real_batch()
    opt, lr = adam_init(model.store.flat), model.store.per_element(torch.full((2,), 1e-3))
    first = model.loss(*batch).detach()
    assert first.shape == (2,) and torch.isfinite(first).all()
    for _ in range(150):
        model.learn(*batch)
        adam_step(model.store.flat, model.store.grad, opt, lr)
    assert (model.loss(*batch).detach() < 0.8 * first).all()
    state = model.start(batch[0])
    width = 12 if agent == "latent-cat" else (4 if agent == "latent-gauss" else 64)
    assert state.shape == (2, 32, width)
    if agent == "latent-cat":  # straight-through one-hot samples
        assert ((state.view(2, 32, 4, 3).sum(-1) - 1).abs() < 1e-5).all()


def test_simple_model_analytic_gradient_equals_autograd():
    c = cfg("simple")
    model = SimpleModel(ModelContext(c, torch.device("cpu"), torch.Generator().manual_seed(0)))
    batch = real_batch()
    loss = model.learn(*batch)
    manual = model.store.grad.clone()
    model.store.enable_autograd()
    auto_loss = model.loss(*batch)
    auto_loss.sum().backward()
    expected = torch.cat([model.store.view(n).grad.reshape(-1) for n in model.store.specs])
    assert torch.allclose(loss, auto_loss.detach(), atol=1e-5)
    assert torch.allclose(manual, expected, atol=1e-6)


class CountingModel:
    """A constructed model: the state counts steps, reward = action, continuation 0.5 (or 1)."""

    member_parallel = False

    def __init__(self, continuation):
        self.continuation = continuation

    def start(self, obs):
        return obs.clone()

    def noise(self, length, members, starts, generator):
        return [None] * length

    def step(self, state, action, noise, members=None):
        return Step(state + 1, action.to(torch.float32), torch.full(action.shape, self.continuation))

    def q_input(self, state):
        return state


class FixedQ:
    def __call__(self, x):  # prefers action 2 overwhelmingly
        q = torch.zeros(*x.shape[:2], 4)
        q[..., 2] = 100.0
        return q


@pytest.mark.parametrize("episodic", [True, False])
def test_rollout_shapes_weights_and_continuation_products(episodic):
    P, S, L = 2, 3, 5
    start = torch.arange(P * S, dtype=torch.float32).view(P, S, 1).repeat(1, 1, 4)
    out = rollout(CountingModel(0.5), FixedQ(), start, L, torch.tensor([1.0, 1.0]), episodic, None)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "obs": (P, S * L, 4),
        "action": (P, S * L),
        "reward": (P, S * L),
        "next_obs": (P, S * L, 4),
        "continuation": (P, S * L),
        "weight": (P, S * L),
    }
    for p in range(P):
        for s in range(S):
            rows = slice(s * L, (s + 1) * L)
            assert out["obs"][p, rows, 0].tolist() == [p * S + s + i for i in range(L)]
            assert out["next_obs"][p, rows, 0].tolist() == [p * S + s + i + 1 for i in range(L)]
            expected = [0.5**i for i in range(L)] if episodic else [1.0] * L
            assert out["weight"][p, rows].tolist() == pytest.approx(expected)
    assert (out["action"] == 2).all() and (out["reward"] == 2).all() and (out["continuation"] == 0.5).all()


def test_softmax_sampling_follows_the_temperature():
    q = torch.tensor([[[0.0, 1.0]]]).expand(2, 20_000, 2)
    gen = torch.Generator().manual_seed(0)
    freq = softmax_sample(q, torch.tensor([1.0, 0.25]), gen).to(torch.float32).mean(1)
    assert freq.tolist() == pytest.approx([1 / (1 + math.e**-1), 1 / (1 + math.e**-4)], abs=0.01)


def test_perfect_model_rollouts_equal_environment_steps():
    c = cfg("perfect", env_params={"grid_size": 4, "spontaneous": False})
    model = PerfectModel(ModelContext(c, torch.device("cpu"), None))
    env = envs.make("procmaze", 1, 0, grid_size=4, spontaneous=False)
    start = real_batch(grid_size=4, spontaneous=False)[0]
    q = q_network(mlp_shape(64, [16], 5), [3, 4])[1]
    out = rollout(model, q, start, 10, torch.tensor([1.0, 1.0]), True, torch.Generator().manual_seed(1))
    obs, act = out["obs"].view(2, 32, 10, 64), out["action"].view(2, 32, 10)
    for p in range(2):
        state = start[p].numpy().astype(bool)
        weight = np.ones(32)
        for i in range(10):
            assert (obs[p, :, i].numpy() == state).all()
            nxt, reward, terminal = env.transition(state, act[p, :, i].numpy(), env.rng)
            assert (out["next_obs"].view(2, 32, 10, 64)[p, :, i].numpy() == nxt).all()
            assert (out["reward"].view(2, 32, 10)[p, :, i].numpy() == reward).all()
            assert (out["continuation"].view(2, 32, 10)[p, :, i].numpy() == 1 - terminal).all()
            assert (out["weight"].view(2, 32, 10)[p, :, i].numpy() == weight).all()
            weight = weight * (1 - terminal)
            state = nxt


@pytest.mark.slow
def test_simple_model_learns_buttongrid_dynamics():
    """Random-policy ButtonGrid(5, 2): next-observation feature error below 0.5% (PAPER.md's factored world)."""
    torch.manual_seed(0)
    env = envs.make("buttongrid", 256, 0, grid_size=5, num_buttons=2)
    rng = np.random.default_rng(0)
    obs, data = env.reset(), []
    for _ in range(100):
        a = rng.integers(0, 5, 256)
        nxt, r, term, obs2 = env.step(a)
        data.append((obs, a, r, nxt, 1.0 - term))
        obs = obs2
    O, A, R, N, C = (np.concatenate([d[i] for d in data]) for i in range(5))

    def batch(idx):
        f = lambda x, dt: torch.from_numpy(x[idx]).to(dt)[None]  # noqa: E731
        return f(O, torch.float32), f(A, torch.int64), f(R, torch.float32), f(N, torch.float32), f(C, torch.float32)

    c = RunConfig.build(agent="simple", env="buttongrid", env_params={"num_buttons": 2}, seeds=[0]).resolved()
    model = SimpleModel(ModelContext(c, torch.device("cpu"), torch.Generator().manual_seed(0)))
    opt, lr = adam_init(model.store.flat), torch.tensor([c.options.model_lr])
    held_out = batch(rng.integers(0, len(A), 4096))
    assert accuracy(model, *held_out)["next_obs_error"][0] > 0.05
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 32-row products: a second thread only waits, and on a busy machine spins
    try:
        for _ in range(8000):
            model.learn(*batch(rng.integers(0, len(A), c.options.rollout_starts)))
            adam_step(model.store.flat, model.store.grad, opt, lr)
    finally:
        torch.set_num_threads(threads)
    result = accuracy(model, *held_out)
    assert result["next_obs_error"][0] < 0.005, result
    assert result["continuation_acc"][0] == 1.0 and result["reward_se"][0] < 0.01


def test_panflute_probe_covers_every_number_of_active_ends():
    probe = panflute_probe(4)
    assert probe.obs.shape[1] == 10 and set(probe.ends.tolist()) == {0, 1, 2, 3, 4}
    assert set(probe.next_ends.tolist()) == {0, 1, 2, 3, 4} and probe.end_features.tolist() == [0, 2, 5, 9]


def test_smoothing_bins_predictions_by_active_ends():
    """A hand-built model that predicts reward = active ends and 1/2 for every next feature: the
    reward bins are 0..n exactly, and P(all n ends active next) is 0.5**n in every bin."""
    probe = panflute_probe(3)

    class Counting:
        def predict(self, obs, action):
            ends = obs[..., torch.from_numpy(probe.end_features)].sum(-1)
            return Prediction(torch.zeros_like(obs), ends, torch.ones_like(ends))

    out = smoothing(Counting(), probe, members=2, device="cpu")
    assert out["reward_by_active_ends"] == [0.0, 1.0, 2.0, 3.0]
    assert out["rewarding_next_by_active_ends"] == pytest.approx([0.125] * 4)


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["simple", "perfect", "latent-cat", "latent-gauss", "ensemble", "table"])
def test_each_model_agent_runs_as_a_multi_process_system(tmp_path, agent):
    import json

    run_dir = tmp_path / agent
    done = mbgen(
        "run",
        *tiny_run(agent, steps=800, eval_period=200),
        *("--hidden", "64,64", "--diagnostics-period", "100", "--out", str(run_dir)),
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["outcome"] == "completed" and summary["reconciled"] and summary["throughput"]["updates"] == 300
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    finished = [e for e in events if e["event"] == "modelserver_finished"][0]
    assert finished["updates"] == 300  # one model update (and one imagined batch) per Q update
    diagnostics = [e for e in events if e["event"] == "model_diagnostics" and "next_obs_error" in e]
    if agent == "perfect":
        assert not diagnostics
    else:
        assert diagnostics and len(diagnostics[-1]["reward_by_active_ends"]) == 3


def test_member_shards_train_the_simple_model_identically():
    from mbgen.learner.shards import ShardPool

    c = RunConfig.build(agent="simple", env="procmaze", seeds=[0, 1, 2], hidden=[16, 16]).resolved()
    batch = real_batch(members=3)
    one = SimpleModel(ModelContext(c, torch.device("cpu"), torch.Generator().manual_seed(0)))
    two = SimpleModel(ModelContext(c, torch.device("cpu"), torch.Generator().manual_seed(0), ShardPool(3, 2)))
    assert torch.allclose(one.learn(*batch), two.learn(*batch), atol=1e-6)
    assert torch.allclose(one.store.grad, two.store.grad, atol=1e-6)
    q = q_network(mlp_shape(64, [16], 5), [3, 4, 5])[1]
    engine = RolloutEngine(two, q, 4, torch.ones(3), True, torch.Generator().manual_seed(1), ShardPool(3, 2))
    out = engine.run(batch[0])
    assert out["obs"].shape == (3, 32 * 4, 64) and (out["weight"].view(3, 32, 4)[:, :, 0] == 1).all()
    assert ((out["next_obs"] == 0) | (out["next_obs"] == 1)).all()


# ------------------------------------------------------------------ the agent seam
def test_every_declared_model_implements_the_interface():
    """Each agent's declaration builds a model that answers every DynamicsModel question."""
    from mbgen.learner.agents import AGENTS
    from mbgen.modelserver.interface import DynamicsModel, Prediction, build_model

    members = [name for name in DynamicsModel.__annotations__] + [
        n for n in vars(DynamicsModel) if not n.startswith("_")
    ]
    for spec in AGENTS.values():
        if not spec.model_server:
            continue
        c = cfg(spec.name)
        model = build_model(ModelContext(c, torch.device("cpu"), torch.Generator().manual_seed(0)))
        for name in members:
            assert hasattr(model, name), f"{spec.name}: {type(model).__name__} lacks {name}"
        obs, action, reward, next_obs, cont = real_batch()
        model.train_step(obs, action, reward, next_obs, cont)
        pred = model.predict(obs, action)
        assert isinstance(pred, Prediction) and pred.next_obs_logits.shape == (2, 32, 64)
        state = model.start(obs)
        noise = model.noise(2, 2, 32, torch.Generator().manual_seed(1))
        step = model.step(state, action, noise[0])
        assert step.reward.shape == (2, 32) and step.continuation.shape == (2, 32)
        restored = build_model(ModelContext(c, torch.device("cpu"), torch.Generator().manual_seed(0)))
        restored.load_state_dict(model.state_dict())
        for k, v in model.state_dict().items():
            assert np.array_equal(v, restored.state_dict()[k]), (spec.name, k)


def test_no_process_compares_agent_names():
    """Processes ask the agent's declaration (learner/agents.py), never `cfg.run.agent == ...`."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    pattern = re.compile(r"\.agent\s*(==|!=|in\b|not in\b)|startswith\(\"latent|isinstance\(\w*model")
    offenders = []
    for path in root.glob("*/**/*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".venv", "tests/")):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ------------------------------------------------------------------ the tabular model (table)
O1, O2, O3 = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
TOY = EnvSpec("toy", {}, obs_dim=3, num_actions=2, episodic=True, reward_range=(-1.0, 1.0))  # 3 bits, 2 actions


def table_model(**kw):
    from mbgen.modelserver.table import TableModel

    return TableModel(ModelContext(cfg("table", seeds=[0], **kw), torch.device("cpu"), None, env=TOY))


def transitions(*rows):
    """[1, B] tensors from rows (obs, action, reward, next_obs, continuation)."""
    obs, action, reward, next_obs, cont = zip(*rows)
    f = lambda x, dt: torch.tensor([list(x)], dtype=dt)  # noqa: E731
    return f(obs, torch.float32), f(action, torch.int64), f(reward, torch.float32), f(next_obs, torch.float32), f(
        cont, torch.float32
    )


A = (O1, 0, 1.0, O2, 1.0)  # (o1, 0) -> o2, reward 1: seen 3 times
B = (O1, 0, 0.0, O3, 0.0)  # (o1, 0) -> o3, terminal: seen once
C = (O2, 1, 0.5, O1, 1.0)  # (o2, 1) -> o1


def table_step(model, obs, action, u):
    return model.step(torch.tensor([obs]), torch.tensor([action]), torch.tensor([u]))


def test_table_holds_each_outcome_with_its_count_and_draws_it_by_frequency():
    model = table_model()
    assert model.train_step(*transitions(A, B, A, C, A)) is None  # nothing trained by gradient
    assert model.entries_per_member() == [3]
    assert model.t["count"].tolist() == [3.0, 1.0, 1.0]  # A, B, C in order of first appearance
    # (o1, 0): A with probability 3/4 (u < 0.75), B with 1/4
    draws = [(0.0, (O2, 1.0, 1.0)), (0.74, (O2, 1.0, 1.0)), (0.76, (O3, 0.0, 0.0)), (0.99, (O3, 0.0, 0.0))]
    for u, (nxt, reward, cont) in draws:
        step = table_step(model, [O1, O1], [0, 0], [u, u])
        assert step.next_state.tolist() == [[nxt, nxt]] and step.reward.tolist() == [[reward, reward]], u
        assert step.continuation.tolist() == [[cont, cont]] and step.valid.tolist() == [[True, True]]
    # (o2, 1) has a single outcome whatever u
    step = table_step(model, [O2, O2], [1, 1], [0.0, 0.99])
    assert step.next_state.tolist() == [[O1, O1]] and step.reward.tolist() == [[0.5, 0.5]]
    # A once more: 4 of 5, so u = 0.79 draws A and u = 0.81 draws B; no new entry
    model.train_step(*transitions(A))
    assert model.t["count"].tolist() == [4.0, 1.0, 1.0]
    assert table_step(model, [O1, O1], [0, 0], [0.79, 0.81]).next_state.tolist() == [[O2, O3]]


def test_table_unseen_pairs_are_invalid_and_stay_put():
    model = table_model()
    empty = table_step(model, [O1], [0], [0.5])  # nothing seen yet
    assert empty.valid.tolist() == [[False]] and empty.next_state.tolist() == [[O1]] and empty.reward.tolist() == [[0]]
    model.train_step(*transitions(A, C))
    step = table_step(model, [O1, O2, O3, O1], [1, 0, 0, 0], [0.5] * 4)
    assert step.valid.tolist() == [[False, False, False, True]]
    assert step.next_state.tolist() == [[O1, O2, O3, O2]] and step.reward.tolist() == [[0.0, 0.0, 0.0, 1.0]]
    assert model.diagnostics(torch.tensor([[O1, O2]]), torch.tensor([[0, 0]]))["seen_fraction"] == [0.5]


def test_table_rollout_ends_at_the_first_unseen_pair():
    """From o2, Q always picks action 1: (o2, 1) -> o1 is seen, (o1, 1) is not: weights 1, 0, 0."""
    model = table_model()
    model.train_step(*transitions(A, C))

    class PrefersOne:
        def __call__(self, x):
            q = torch.zeros(*x.shape[:2], 2)
            q[..., 1] = 100.0
            return q

    engine = RolloutEngine(model, PrefersOne(), 3, torch.ones(1), True, torch.Generator().manual_seed(0))
    out = engine.run(torch.tensor([[O2]]))
    assert out["weight"].tolist() == [[1.0, 0.0, 0.0]]
    assert out["next_obs"][0, 0].tolist() == O1 and out["reward"].tolist() == [[0.5, 0.0, 0.0]]
    assert engine.take_cut_fraction() == pytest.approx([2 / 3]) and engine.take_cut_fraction() is None


def test_table_keeps_each_members_newest_entries_within_the_capacity():
    from mbgen.modelserver.table import keep_newest

    # members 0, 1, 0, 0, 1 with capacity 2: member 0 drops its oldest (index 0)
    assert keep_newest(torch.tensor([0, 1, 0, 0, 1]), 2, 2).tolist() == [False, True, True, True, True]
    model = table_model(capacity=2)
    model.train_step(*transitions(A, B, C))
    assert model.t["count"].tolist() == [1.0, 1.0] and table_step(model, [O1], [0], [0.0]).next_state.tolist() == [[O3]]
    restored = table_model(capacity=2)
    restored.load_state_dict(model.state_dict())
    assert table_step(restored, [O2], [1], [0.0]).next_state.tolist() == [[O1]]


def test_table_members_keep_their_own_transitions():
    from mbgen.modelserver.table import TableModel

    model = TableModel(ModelContext(cfg("table"), torch.device("cpu"), None, env=TOY))  # two members
    a, c = transitions(A), transitions(C)
    model.train_step(*(torch.cat([x, y]) for x, y in zip(a, c)))  # member 0 sees A, member 1 sees C
    step = model.step(torch.tensor([[O1, O2], [O1, O2]]), torch.tensor([[0, 1], [0, 1]]), torch.zeros(2, 2))
    assert step.valid.tolist() == [[True, False], [False, True]] and model.entries_per_member() == [1, 1]


def test_table_draws_by_hand():
    from mbgen.modelserver.table import sample_in_groups

    cum = torch.tensor([3.0, 4.0, 6.0, 7.0], dtype=torch.float64)  # counts 3, 1 | 2 | 1
    lo, hi = torch.tensor([0, 0, 2, 3, 4]), torch.tensor([2, 2, 3, 4, 4])
    u = torch.tensor([0.7, 0.8, 0.9, 0.1, 0.5])
    assert sample_in_groups(cum, lo, hi, u).tolist() == [0, 1, 2, 3, 3]  # the last: an empty group, clamped


# ------------------------------------------------------------------ the ensemble (MBPO)
def test_ensemble_maths_by_hand():
    from mbgen.modelserver.ensemble import bootstrap, disagreement, pick, within_cutoff

    x = torch.tensor([[10.0, 11.0, 12.0]])
    assert bootstrap(x, torch.tensor([[[0, 0, 2], [1, 2, 1]]])).tolist() == [[10, 10, 12], [11, 12, 11]]
    # two models, one state: feature 0 at p = 0.5 in both (std 0); feature 1 at 0.5 and 0.9 (std 0.2)
    logits = torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(9.0)]]]])  # [p=1, K=2, S=1, D=2]
    assert disagreement(logits).tolist() == [[pytest.approx(0.2)]]
    values = torch.tensor([[[0.0, 1.0], [10.0, 11.0], [20.0, 21.0]]])  # [p=1, K=3, S=2]: 10 k + s
    assert pick(values, torch.tensor([[2, 0]])).tolist() == [[20.0, 1.0]]
    assert within_cutoff(torch.tensor([0.05, 0.2, 0.1]), 0.1).tolist() == [True, False, True]
    assert within_cutoff(torch.tensor([0.3]), 0.0) is None  # off


class ThreeStates:
    """Heads of a hand-made ensemble of K = 3 on observations o1 ("safe"), o2 ("edge"), o3 ("risky"):
    from safe every model predicts edge, from edge every model predicts risky (d = 0); from risky,
    model k predicts feature k on (d = sqrt(2)/3, the std of (1, 0, 0)). Model k's reward is k."""

    def __call__(self, obs, action, members=None):
        p, S = action.shape
        target = torch.zeros(p, 3, S, 3)
        safe, edge, risky = (obs[..., i] > 0.5 for i in range(3))
        target[..., 1] += safe.unsqueeze(1).float()
        target[..., 2] += edge.unsqueeze(1).float()
        target += risky.view(p, 1, S, 1).float() * torch.eye(3).view(1, 3, 1, 3)
        logits = target * 60.0 - 30.0
        reward = torch.arange(3.0).view(1, 3, 1).expand(p, 3, S)
        return logits, reward, torch.full((p, 3, S), 30.0)


def test_ensemble_steps_with_the_chosen_model_and_cuts_on_disagreement():
    model = build_ensemble(uncertainty_cutoff=0.3)
    model.ensemble_heads = ThreeStates()
    state = torch.tensor([[O1, O2, O3, O3]])
    actions = torch.zeros(1, 4, dtype=torch.int64)
    step = model.step(state, actions, (torch.tensor([[1, 2, 0, 2]]), torch.zeros(1, 4, 3)))
    assert step.next_state.tolist() == [[O2, O3, O1, O3]]  # risky states: model 0 -> o1, model 2 -> o3
    assert step.reward.tolist() == [[1.0, 2.0, 0.0, 2.0]]  # the chosen models' rewards
    assert step.valid.tolist() == [[True, True, False, False]]  # d = sqrt(2)/3 = 0.471 > 0.3 on risky
    # a 4-step rollout from safe: safe -> edge -> risky (valid), from risky cut: weights 1, 1, 0, 0
    engine = RolloutEngine(model, FixedQ3(), 4, torch.ones(1), True, torch.Generator().manual_seed(0))
    out = engine.run(torch.tensor([[O1, O3]]))
    assert out["weight"].tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    assert engine.take_cut_fraction() == pytest.approx([(2 + 4) / 8])
    assert model.diagnostics(state, actions)["disagreement_above_cutoff"] == [0.5]
    off = build_ensemble()
    off.ensemble_heads = ThreeStates()
    assert off.step(state, actions, (torch.zeros_like(actions), torch.zeros(1, 4, 3))).valid is None


class FixedQ3:
    def __call__(self, x):
        return torch.zeros(*x.shape[:2], 5)


def build_ensemble(**kw):
    from mbgen.modelserver.ensemble import EnsembleModel

    c = cfg("ensemble", seeds=[0], ensemble_size=3, **kw)
    three = EnvSpec("toy", {}, obs_dim=3, num_actions=5, episodic=True, reward_range=(0, 2))
    return EnsembleModel(ModelContext(c, torch.device("cpu"), torch.Generator().manual_seed(0), env=three))


def test_ensemble_models_start_apart_pick_uniformly_and_train_on_bootstrap_draws():
    from mbgen.modelserver.ensemble import EnsembleModel

    c = cfg("ensemble", ensemble_size=3, model_lr=1e-3)

    model = EnsembleModel(ModelContext(c, torch.device("cpu"), torch.Generator().manual_seed(0)))
    assert model.store.members == 2 * 3 and not model.store.member(0).equal(model.store.member(1))
    choice, _ = model.noise(1, 2, 30_000, torch.Generator().manual_seed(1))[0]
    assert torch.bincount(choice.flatten(), minlength=3).div(60_000).tolist() == pytest.approx([1 / 3] * 3, abs=0.01)
    batch = real_batch()
    first = model.train_step(*batch)
    assert first.shape == (2,)
    for _ in range(100):
        loss = model.train_step(*batch)
    assert (loss < 0.8 * first).all()
    diag = model.diagnostics(batch[0], batch[1])
    assert len(diag["disagreement"]) == 2 and all(0 <= d <= 0.5 for d in diag["disagreement"])


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"agent": "simple", "uncertainty_cutoff": 0.1}, r"uncertainty_cutoff is an option of agent ensemble, not of simple \(the"),
        ({"agent": "table", "ensemble_size": 3}, r"ensemble_size is an option of agent ensemble, steve, not of table \(the"),
        ({"agent": "ensemble", "uncertainty_cutoff": 0.5}, r"uncertainty_cutoff must be a number in \[0, 0.5\)"),
        ({"agent": "ensemble", "uncertainty_cutoff": -1.0}, "uncertainty_cutoff must be a number >= 0"),
        ({"agent": "ensemble", "ensemble_size": 0}, "ensemble_size must be an integer >= 1"),
    ],
)
def test_new_agent_options_are_validated(kw, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.build(env="procmaze", seeds=[0], **kw).resolved()
