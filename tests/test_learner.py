"""Learner numerics against hand-worked values, and its shared-memory plumbing across processes."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zmq
from helpers import run_in_process, socket_directory, stop_process
from mbgen.learner.dqn import DQN, q_network
from mbgen.learner.losses import q_loss, td_targets
from mbgen.learner.networks import MLP, ParamStore, TripleHead
from mbgen.learner.optim import adam_init, adam_step
from mbgen.learner.shapes import mlp_shape
from mbgen.runtime.doorbell import Doorbell, Ringer
from mbgen.runtime.lifecycle import REPRODUCIBLE_MATH_ENV
from mbgen.runtime.params import ParamBlock, ParamReader
from mbgen.runtime.shm import new_run_id, segment_name
from mbgen.runtime.slots import SlotQueue

# A linear Q (no hidden layer) over 2 features and 2 actions: W = [[1, 2], [3, 4]], b = [0.5, -0.5].
LINEAR = mlp_shape(2, [], 2)
W_B = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.5, -0.5]])
BATCH = dict(
    obs=torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]),
    action=torch.tensor([[0, 1]]),
    reward=torch.tensor([[1.0, 0.0]]),
    next_obs=torch.tensor([[[0.0, 1.0], [1.0, 1.0]]]),
    continuation=torch.tensor([[1.0, 0.0]]),
)


def random_batch(members, size, obs_dim, num_actions, seed, weighted=False):
    rng = torch.Generator().manual_seed(seed)
    batch = dict(
        obs=torch.rand(members, size, obs_dim, generator=rng),
        action=torch.randint(0, num_actions, (members, size), generator=rng),
        reward=torch.rand(members, size, generator=rng),
        next_obs=torch.rand(members, size, obs_dim, generator=rng),
        continuation=torch.ones(members, size),
    )
    if weighted:
        batch["weight"] = torch.rand(members, size, generator=rng)
    return batch


def linear_dqn(lr=0.01):
    dqn = DQN(LINEAR, [0], [lr], target_period=100)
    dqn.store.flat.copy_(W_B[0])  # one member: the tensor-major layout is w0 (row-major), then b0
    dqn.target_flat.copy_(W_B[0])
    return dqn


def test_td_loss_by_hand():
    # Q(s1) = [1, 2] + b = [1.5, 1.5]; Q(s2) = [3, 4] + b = [3.5, 3.5]
    # y1 = 1 + 0.9 * 1 * max(Q(s1')) = 1 + 0.9 * 3.5 = 4.15;  y2 = 0 + 0.9 * 0 * 5.5 = 0
    dqn = linear_dqn()
    loss = dqn.loss(**BATCH)
    assert loss.tolist() == pytest.approx([((1.5 - 4.15) ** 2 + 3.5**2) / 2])
    weighted = dqn.loss(**BATCH, weight=torch.tensor([[1.0, 0.5]]))
    assert weighted.tolist() == pytest.approx([((1.5 - 4.15) ** 2 + 0.5 * 3.5**2) / 2])
    q = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    assert td_targets(q, torch.tensor([[0.5, 0.5]]), torch.tensor([[1.0, 0.5]]), 0.5).tolist() == [[1.5, 1.5]]
    assert q_loss(q, torch.tensor([[1, 0]]), torch.tensor([[0.0, 0.0]])).tolist() == [(4 + 9) / 2]


def test_one_optimiser_step_by_hand():
    # dL/dQ(s1, 0) = (1.5 - 4.15) = -2.65 and dL/dQ(s2, 1) = 3.5 (the mean over 2 halves 2*err)
    # so g = [dW00, dW01, dW10, dW11, db0, db1] = [-2.65, 0, 0, 3.5, -2.65, 3.5].
    # First Adam step: mhat = g, vhat = g^2, so w <- w - lr * g / (|g| + 1e-5) - 1e-6 * w.
    lr = 0.01
    dqn = linear_dqn(lr)
    dqn.update(**BATCH)
    g = np.array([-2.65, 0.0, 0.0, 3.5, -2.65, 3.5])
    w = W_B.numpy()[0].astype(np.float64)
    expected = w - lr * g / (np.abs(g) + 1e-5) - 1e-6 * w
    assert dqn.store.flat.numpy() == pytest.approx(expected, abs=1e-6)
    assert dqn.opt.t == 1
    assert dqn.opt.m.numpy() == pytest.approx(0.1 * g, abs=1e-6)
    assert dqn.opt.v.numpy() == pytest.approx(0.01 * g**2, abs=1e-6)


def test_adam_second_step_bias_correction():
    # With the same gradient twice: m = 0.19 g, v = 0.0199 g^2, and the corrections give mhat = g, vhat = g^2.
    w = torch.tensor([[1.0, -2.0]])
    g = torch.tensor([[0.3, -4.0]])
    state = adam_init(w)
    lr = torch.tensor([0.1])
    adam_step(w, g, state, lr)
    adam_step(w, g, state, lr)
    assert state.m.numpy() == pytest.approx(0.19 * g.numpy())
    assert state.v.numpy() == pytest.approx(0.0199 * g.numpy() ** 2, rel=1e-5)
    one = np.array([1.0, -2.0]) - 0.1 * np.sign([0.3, -4.0]) * np.array([0.3, 4.0]) / (np.array([0.3, 4.0]) + 1e-5)
    one -= 1e-6 * np.array([1.0, -2.0])
    two = one - 0.1 * np.sign([0.3, -4.0]) * np.array([0.3, 4.0]) / (np.array([0.3, 4.0]) + 1e-5) - 1e-6 * one
    assert w.numpy()[0] == pytest.approx(two, abs=1e-6)


def test_members_are_independent_with_their_own_step_sizes():
    shape = mlp_shape(4, [8], 3)
    dqn = DQN(shape, [5, 6], [1e-3, 0.0])
    before = [dqn.store.member(p).clone() for p in range(2)]
    batch = random_batch(members=2, size=16, obs_dim=4, num_actions=3, seed=0)
    dqn.update(**batch)
    assert not torch.allclose(dqn.store.member(0), before[0])
    assert torch.allclose(dqn.store.member(1), before[1] * (1 - 1e-6))  # lr 0: only the decay
    # member 0 alone, same seed, same data: the same step
    solo = DQN(shape, [5], [1e-3])
    solo.update(**{k: v[:1] for k, v in batch.items()})
    assert torch.allclose(solo.store.member(0), dqn.store.member(0), atol=1e-7)


def test_target_refreshes_every_period():
    dqn = DQN(mlp_shape(2, [4], 2), [0], [0.1], target_period=3)
    expected = dqn.target_flat.clone()
    for u in range(1, 7):
        dqn.update(**BATCH)
        if u % 3 == 0:
            expected = dqn.store.flat.clone()
        assert torch.equal(dqn.target_flat, expected), f"after update {u}"
    assert not torch.equal(dqn.target_flat, q_network(mlp_shape(2, [4], 2), [0])[0].flat)


def test_population_mlp_matches_per_member_computation_and_seeds():
    shape = mlp_shape(3, [5, 4], 2)
    store, net = q_network(shape, [11, 12, 13])
    x = torch.randn(3, 7, 3)
    out = net(x)
    for p in range(3):
        h = x[p]
        for k, (w, b) in enumerate(net.params()):
            h = h @ w[p] + b[p]
            if k < 2:
                h = torch.where(h > 0, h, torch.exp(h) - 1)
        assert torch.allclose(out[p], h, atol=1e-6)
    # a member's initialisation depends on its seed alone
    assert torch.equal(q_network(shape, [12])[0].member(0), store.member(1))
    # weights are truncated normal with std 1/sqrt(fan_in); biases zero
    big, big_net = q_network(mlp_shape(400, [], 300), [1])
    w, b = big_net.params()[0]
    assert abs(w.std().item() - 0.05 * 0.88) < 0.002 and w.abs().max() <= 0.1 and (b == 0).all()


@pytest.mark.parametrize("members", [1, 3])
def test_hand_written_backward_equals_autograd(members):
    torch.manual_seed(0)
    shape = mlp_shape(6, [8, 8], 4)
    store, net = q_network(shape, list(range(members)))
    x, grad_out = torch.randn(members, 5, 6), torch.randn(members, 5, 4)
    out, inputs = net.forward_cached(x)
    net.backward(inputs, grad_out)
    manual = store.grad.clone()
    auto = ParamStore(members, list(range(members)))
    auto_net = MLP(auto, "q", shape)
    auto.build().enable_autograd()
    (auto_net(x) * grad_out).sum().backward()
    expected = torch.cat([auto.view(n).grad.reshape(-1) for n in auto.specs])
    assert torch.allclose(out, auto_net(x).detach(), atol=1e-6)
    assert torch.allclose(manual, expected, atol=1e-5)


@pytest.mark.parametrize("members", [1, 2])
def test_triple_head_backward_equals_autograd(members):
    torch.manual_seed(1)
    store = ParamStore(members, list(range(members)))
    net = TripleHead(store, "m", 7, [6, 6], 5)
    store.build()
    x = torch.randn(members, 4, 7)
    g_main, g_side = torch.randn(members, 4, 5), torch.randn(2, members, 4)
    main, side, cache = net.forward_cached(x)
    net.backward(cache, g_main, g_side)
    auto = ParamStore(members, list(range(members)))
    auto_net = TripleHead(auto, "m", 7, [6, 6], 5)
    auto.build().enable_autograd()
    a_main, a_side = auto_net(x)
    ((a_main * g_main).sum() + (a_side * g_side).sum()).backward()
    expected = torch.cat([auto.view(n).grad.reshape(-1) for n in auto.specs])
    assert torch.allclose(main, a_main.detach(), atol=1e-6) and torch.allclose(side, a_side.detach(), atol=1e-6)
    assert torch.allclose(store.grad, expected, atol=1e-5)
    # the three heads are three separate MLPs: member p, head h uses only its own weights
    w0 = store.view("m.w0")
    assert w0.shape == (members, 3, 7, 6) and not torch.equal(w0[:, 0], w0[:, 1])


def test_member_shards_compute_the_same_update():
    shape = mlp_shape(6, [8, 8], 4)
    batch = random_batch(members=5, size=16, obs_dim=6, num_actions=4, seed=3, weighted=True)
    one, three = DQN(shape, list(range(5)), [1e-3] * 5), DQN(shape, list(range(5)), [1e-3] * 5, workers=3)
    assert [(s.start, s.stop) for s in three.shards.slices] == [(0, 2), (2, 3), (3, 5)]
    for _ in range(3):
        assert torch.allclose(one.update(**batch), three.update(**batch), atol=1e-6)
    assert torch.allclose(one.flat, three.flat, atol=1e-6)


def test_lock_step_maths_gives_the_same_bits_whether_shards_run_at_once_or_in_turn():
    """Lock-step runs start their processes in REPRODUCIBLE_MATH_ENV. Without it MKL multiplies
    differently when two shard threads call it at once (last-bit differences, on this machine
    every time between these two orders, and in 2 of 24 repeated concurrent runs)."""
    script = os.path.join(os.path.dirname(__file__), "shard_bits.py")
    done = subprocess.run(
        [sys.executable, script],
        env={**os.environ, **REPRODUCIBLE_MATH_ENV},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    at_once, in_turn = done.stdout.split()
    assert at_once == in_turn


def test_dqn_checkpoint_round_trip():
    a = DQN(mlp_shape(2, [4], 2), [0], [0.1])
    a.update(**BATCH)
    b = DQN(mlp_shape(2, [4], 2), [9], [0.1])
    b.load_state(a.state())
    assert torch.equal(a.flat, b.flat) and b.opt.t == 1 and b.updates == 1
    assert torch.equal(a.loss(**BATCH), b.loss(**BATCH))


# ------------------------------------------------------------- shared memory
def publish_versions(name, enough):
    """Publish versions 0, 1, 2, ... (every value equal to the version) until `enough` is set."""
    block = ParamBlock.attach(name)
    try:
        v = 0
        while not enough.is_set():
            block.publish(np.full(block.shape, float(v), np.float32), v)
            v += 1
    finally:
        block.close()


def test_param_block_readers_never_see_a_half_written_version():
    from helpers import SPAWN

    block = ParamBlock.create(segment_name(new_run_id(), "params"), 800_000)
    writer = None
    try:
        assert block.version == -1
        enough = SPAWN.Event()
        writer = run_in_process(publish_versions, block.segment.name, enough)
        reader = ParamReader(block, torch.zeros(block.shape))
        seen = set()
        deadline = time.monotonic() + 60
        while len(seen) < 20 and time.monotonic() < deadline:  # reads race the writer throughout
            if reader.refresh():
                lo, hi = reader.out.min().item(), reader.out.max().item()
                assert lo == hi == reader.version, "a read mixed two versions"
                seen.add(reader.version)
        enough.set()
        writer.join(30)
        assert len(seen) >= 20 and writer.exitcode == 0
    finally:
        if writer is not None:
            stop_process(writer)
        block.close()


def produce_items(queue_name, bell, consumer_bell, count):
    ctx = zmq.Context()
    q, own, ring = SlotQueue.attach(queue_name), Doorbell(ctx, bell), Ringer(ctx, [consumer_bell])
    try:
        for i in range(count):
            slot = q.await_room(own)
            slot["item"][...] = i
            slot["data"][...] = i
            q.commit()
            ring.ring()
    finally:
        own.close()
        ring.close()
        q.close()
        ctx.term()


def test_slot_queue_hands_every_item_to_exactly_one_consumer_read():
    run_id, directory = new_run_id(), socket_directory()
    producer_bell, consumer_bell = f"ipc://{directory}/bell-producer", f"ipc://{directory}/bell-consumer"
    q = SlotQueue.create(segment_name(run_id, "queue"), 2, {"item": (np.int64, ()), "data": (np.float32, (64, 64))})
    ctx = zmq.Context()
    own, ring = Doorbell(ctx, consumer_bell), Ringer(ctx, [producer_bell])
    producer = run_in_process(produce_items, q.segment.name, producer_bell, consumer_bell, 500)
    try:
        got = []
        for _ in range(500):
            slot = q.await_item(own)
            assert q.pending() <= 2
            got.append(int(slot["item"]))
            assert (slot["data"] == got[-1]).all()
            q.release()
            ring.ring()
        assert got == list(range(500))
        producer.join(30)
        assert producer.exitcode == 0 and q.pending() == 0
    finally:
        if producer.is_alive():
            stop_process(producer)
        own.close()
        ring.close()
        q.close()
        ctx.term()
