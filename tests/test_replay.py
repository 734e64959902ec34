"""The replay service with real processes, real ZeroMQ sockets and real shared memory."""

import json
import os
import re
import shutil
import signal
import time

import msgpack
import numpy as np
import pytest
import zmq
from helpers import (
    SPAWN,
    consumer,
    local_token,
    message,
    paced_sender,
    private_endpoint,
    run_in_process,
    send_messages,
    stop_process,
    wait_for,
)
from mbgen.replay.client import ReplayClient, ReplayRejected
from mbgen.replay.limiter import RatioPolicy
from mbgen.replay.protocol import encode_insert, pack
from mbgen.replay.service import ServiceConfig, start
from mbgen.replay.store import Batch, ReplayStore, bytes_per_transition
from mbgen.runtime.counters import RunCounters
from mbgen.runtime.security import check_bind, make_keys
from mbgen.runtime.shm import leftover_segments, new_run_id, unlink_segment

D, A = 64, 5


def config(tmp_path, members=2, **kw):
    run_id = new_run_id()
    directory, endpoint, credentials = private_endpoint()
    return ServiceConfig(
        run_id=run_id,
        endpoint=kw.pop("endpoint", endpoint),
        credentials=credentials,
        members=members,
        obs_dim=D,
        num_actions=A,
        capacity=kw.pop("capacity", 10_000),
        reward_range=kw.pop("reward_range", (0.0, 1e9)),  # the test messages' rewards identify them
        log_path=str(tmp_path / "events.jsonl"),
        **kw,
    )


class Running:
    """A started service plus attached views of its store and counters."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.process = start(cfg)
        self.store = ReplayStore.attach(cfg.store_name)
        self.counters = RunCounters.attach(cfg.counters_name)

    def stop(self):
        self.store.close()
        self.counters.close()
        return stop_process(self.process)


@pytest.fixture
def service(tmp_path, request):
    running = []

    def launch(**kw):
        r = Running(config(tmp_path, **kw))
        running.append(r)
        return r

    yield launch
    for r in running:
        if r.process.is_alive():
            r.stop()
        shutil.rmtree(os.path.dirname(r.cfg.endpoint[len("ipc://") :]), ignore_errors=True)


def stored_rewards(store, member):
    return np.sort(store.read_all(member).reward[0])


def events(tmp_path):
    return [json.loads(line) for line in open(tmp_path / "events.jsonl")]


# ------------------------------------------------------------------ the store
def test_store_layout_and_bytes_per_transition():
    assert bytes_per_transition(400, 5) == 2 * 50 + 1 + 4 + 1  # <= 2*ceil(D/8) + 16
    store = ReplayStore.create(f"mbgen_test_{new_run_id()}", members=3, obs_dim=400, num_actions=5, capacity=1000)
    try:
        assert store.segment.nbytes < 3 * 1000 * bytes_per_transition(400, 5) + 64 * 1024
        assert store.sizes().tolist() == [0, 0, 0]
    finally:
        store.close()


def test_store_ring_keeps_newest_and_samples_uniformly():
    store = ReplayStore.create(f"mbgen_test_{new_run_id()}", members=2, obs_dim=D, num_actions=A, capacity=100)
    try:
        for seq in range(5):  # 5 x 30 = 150 into a ring of 100
            store.add(1, **message(0, seq, 30, D, A))
        assert store.sizes().tolist() == [0, 100]
        held = store.read_all(1)
        assert held.reward[0].tolist() == list(range(50, 150))
        batch = Batch.allocate(1, 20_000, D)
        store.sample([np.random.default_rng(0)], batch, members=[1])
        counts = np.bincount(batch.reward[0].astype(int) - 50, minlength=100)
        assert counts.min() > 120 and counts.max() < 290  # uniform: 200 each
        # the sampled fields belong together
        m = message(0, 4, 30, D, A)
        rows = np.flatnonzero(batch.reward[0] >= 120)
        i = batch.reward[0, rows].astype(int) - 120
        assert (batch.obs[0, rows] == m["obs"][i]).all() and (batch.action[0, rows] == m["action"][i]).all()
        assert (batch.continuation[0, rows] == 1 - m["terminal"][i]).all()
        with pytest.raises(ValueError, match="empty"):
            store.sample([np.random.default_rng(0)], Batch.allocate(1, 4, D), members=[0])
    finally:
        store.close()


def write_forever(store_name, stop_after):
    """Writer process: messages of 64 transitions whose obs all equal the bits of their reward."""
    store = ReplayStore.attach(store_name)
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(bool)
    k = 0
    try:
        while k < stop_after:
            values = (np.arange(64) + k) % 256
            obs = np.tile(bits[values], (1, D // 8))
            store.add(0, obs, values % A, values.astype(np.float32), obs, np.zeros(64, bool))
            k += 64
    finally:
        store.close()


def test_concurrent_writer_never_yields_a_torn_transition():
    store = ReplayStore.create(f"mbgen_test_{new_run_id()}", members=1, obs_dim=D, num_actions=A, capacity=512)
    writer = None
    try:
        store.add(
            0,
            np.zeros((512, D), bool),
            np.zeros(512, int),
            np.zeros(512, np.float32),
            np.zeros((512, D), bool),
            np.zeros(512, bool),
        )
        writer = run_in_process(write_forever, store.name, 64 * 20_000)
        bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)
        batch, rng, checked = Batch.allocate(1, 256, D), [np.random.default_rng(0)], 0
        # Four seconds of reading from the writer's first write (its start under load can take longer).
        wait_for(lambda: store.total_written()[0] > 512 or not writer.is_alive(), 60, "the writer's first write")
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and writer.is_alive():
            store.sample(rng, batch)
            v = batch.reward[0].astype(int)
            expected = np.tile(bits[v], D // 8)
            fresh = store.total_written()[0] > 512
            if fresh:
                ok = (batch.obs[0] == expected).all(axis=1) | (v == 0) & (batch.obs[0] == 0).all(axis=1)
                assert ok.all(), "a sampled transition mixes two writes"
                assert ((batch.action[0] == v % A) | (v == 0)).all()
                checked += v.size
        assert checked > 10_000
    finally:
        if writer is not None:
            stop_process(writer)
        store.close()


# ------------------------------------------------------------ ingest and acks
def test_concurrent_actors_reconcile_exactly(service):
    svc = service(members=2)
    actors = [run_in_process(send_messages, svc.cfg.endpoint, a, a % 2, 0, 40, 64, D, A) for a in range(4)]
    for p in actors:
        p.join(60)
        assert p.exitcode == 0
    acc = svc.counters.accounting()
    assert acc["stored"] == 4 * 40 * 64 and acc["duplicates"] == 0 and acc["rejected"] == 0
    for member in (0, 1):
        expected = np.sort(np.concatenate([a * 1_000_000 + np.arange(40 * 64) for a in range(4) if a % 2 == member]))
        assert (stored_rewards(svc.store, member) == expected).all()


def test_killed_and_restarted_client_resends_without_duplicates(service):
    svc = service(members=1)
    progress = SPAWN.Value("i", 0)
    first = run_in_process(send_messages, svc.cfg.endpoint, 7, 0, 0, 200, 32, D, A, progress=progress)
    wait_for(lambda: svc.counters.stored[0] >= 50 * 32, what="first client to store some messages")
    stop_process(first, signal.SIGKILL)
    stored_before = int(svc.counters.stored[0])
    assert 0 < stored_before < 200 * 32
    # The restarted actor regenerates its stream from the start; the service keeps one copy of each.
    second = run_in_process(send_messages, svc.cfg.endpoint, 7, 0, 0, 200, 32, D, A)
    second.join(60)
    assert second.exitcode == 0
    assert int(svc.counters.stored[0]) == 200 * 32
    # Messages the first client had queued may still land after the kill; every copy beyond one is dropped.
    assert int(svc.counters.duplicates[0]) >= stored_before
    assert int(svc.counters.received[0]) == 200 * 32 + int(svc.counters.duplicates[0])
    assert (stored_rewards(svc.store, 0) == 7_000_000 + np.arange(200 * 32)).all()


def test_client_resends_unacknowledged_messages_after_reconnect(tmp_path):
    # A service whose limiter pauses after the first insert: later messages stay unread.
    cfg = config(tmp_path, members=1, ratio={"updates_per_step": 1, "learning_starts": 0, "tolerance": 0})
    first = start(cfg)
    client = ReplayClient(cfg.endpoint, "actor3", token=local_token(cfg.endpoint, "actor3"))
    try:
        for seq in range(5):
            client.send(0, **message(3, seq, 8, D, A))
        wait_for(lambda: (client.poll(10), len(client.unacked) == 4)[1], what="first ack")
        stop_process(first, signal.SIGKILL)
        for name in (cfg.store_name, cfg.counters_name):  # what a supervisor does for a dead service
            unlink_segment(name)
        second = start(ServiceConfig(**{**cfg.to_dict(), "ratio": None}))
        try:
            client.flush(30)
            assert client.resends == 4
            store = ReplayStore.attach(cfg.store_name)
            assert (stored_rewards(store, 0) == 3_000_000 + np.arange(8, 40)).all()
            store.close()
        finally:
            stop_process(second)
    finally:
        client.close()


def test_a_service_that_still_acknowledges_gets_no_copies():
    # A ROUTER that acknowledges in order, slowly (as the service does when the limiter paces it):
    # the oldest message waits longer than resend_after_s, but acks keep coming, so nothing is resent.
    # Once the service falls silent for resend_after_s, the unacknowledged messages are sent again.
    ctx = zmq.Context()
    endpoint = f"ipc://@mbgen-{new_run_id()}-slow"
    router = ctx.socket(zmq.ROUTER)
    router.bind(endpoint)
    client = ReplayClient(endpoint, "actor1", ctx=ctx, resend_after_s=0.5)

    def ack_next():
        identity, header, *_ = router.recv_multipart()
        seq = msgpack.unpackb(header)["seq"]
        router.send_multipart([identity, pack({"type": "ack", "seq": seq, "status": "stored"})])

    try:
        for seq in range(6):
            client.send(0, **message(1, seq, 4, D, A))
        start = time.monotonic()
        for _ in range(4):  # one ack every 0.3 s: 1.2 s in all, more than twice resend_after_s
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:
                client.poll(20)
            ack_next()
        client.poll(50)
        assert time.monotonic() - start > 2 * client.resend_after_s
        assert client.resends == 0 and len(client.unacked) == 2
        wait_for(lambda: (client.poll(20), client.resends == 2)[1], timeout=5, what="resend after silence")
    finally:
        client.close()
        router.close(linger=0)
        ctx.term()


# ----------------------------------------------------------------- validation
def raw_message(header_overrides=None, frames=None, count=4, obs_width=D):
    m = message(1, 0, count, obs_width, A)
    parts = encode_insert("actor1", 0, 0, m["obs"], m["action"], m["reward"], m["next_obs"], m["terminal"])
    header = msgpack.unpackb(parts[0])
    header.update(header_overrides or {})
    return [msgpack.packb(header)] + [bytes(p) for p in (frames if frames is not None else parts[1:])]


def good_arrays(count=4):
    m = message(1, 0, count, D, A)
    return [m["obs"], m["action"], m["reward"], m["next_obs"], m["terminal"]]


def with_array(i, value):
    arrays = good_arrays()
    arrays[i] = value
    return [np.ascontiguousarray(a) for a in arrays]


MALFORMED = {
    "wrong protocol version": (raw_message({"v": 1}), "wrong protocol version 1"),
    "unknown member": (raw_message({"member": 5}), "unknown member 5; this run's members are 0..1"),
    "wrong obs width": (
        raw_message(count=4, obs_width=D - 1),
        f"wrong obs width {D - 1}; this run's observations have {D}",
    ),
    "non-boolean obs values": (raw_message(frames=with_array(0, np.full((4, D), 2, np.uint8))), "non-boolean obs"),
    "non-boolean obs dtype": (
        raw_message(
            {
                "arrays": [
                    ["obs", "<f4", [4, D]],
                    ["action", "<i8", [4]],
                    ["reward", "<f4", [4]],
                    ["next_obs", "|b1", [4, D]],
                    ["terminal", "|b1", [4]],
                ]
            }
        ),
        "non-boolean obs: dtype must be |b1",
    ),
    "action out of range": (
        raw_message(frames=with_array(1, np.array([0, 1, 5, 2]))),
        r"action out of range: values must be in \[0, 4\]",
    ),
    "negative action": (raw_message(frames=with_array(1, np.array([0, -1, 2, 2]))), "action out of range"),
    "non-finite reward": (
        raw_message(frames=with_array(2, np.array([0, np.nan, 1, 2], np.float32))),
        "non-finite reward",
    ),
    "infinite reward": (
        raw_message(frames=with_array(2, np.array([0, np.inf, 1, 2], np.float32))),
        "non-finite reward",
    ),
    "reward out of range": (
        raw_message(frames=with_array(2, np.array([0, -5, 1, 3e38], np.float32))),
        r"reward out of range: this environment's rewards lie in \[0.0, 1000000000.0\]",
    ),
    "truncated frames": (raw_message()[:4], "truncated message: 3 array frames, expected 5"),
    "extra frames": (raw_message() + [b"\x00" * 4], "extra frames: 6 array frames, expected 5"),
    "short frame": (
        raw_message(frames=good_arrays()[:4] + [np.zeros(3, bool)]),
        "frame terminal has 3 bytes, expected 4",
    ),
    "garbage bytes": ([b"\x93\xff garbage \x00\x01"], "garbage: the first frame is not a msgpack map"),
    "empty header map": ([msgpack.packb({})], "wrong protocol version None"),
    "actor name of 2,000 characters": (
        [msgpack.packb({"v": 2, "type": "hello", "actor": "a" * 2000})],
        r"header too large .*the actor's name at most 128",
    ),
    "unknown type": (
        [msgpack.packb({"v": 2, "type": "drop_tables", "actor": "x"})],
        "unknown message type 'drop_tables'",
    ),
    "bad count": (raw_message({"count": 0}), r"count must be an integer in \[1, 4096\], got 0"),
    "bad seq": (raw_message({"seq": -3}), "seq must be an integer >= 0, got -3"),
}


def test_each_malformed_message_is_refused_and_the_service_keeps_serving(service, tmp_path):
    svc = service(members=2)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.plain_username, sock.plain_password = b"actor1", local_token(svc.cfg.endpoint, "actor1").encode()
    sock.connect(svc.cfg.endpoint)
    try:
        for i, (name, (frames, expected)) in enumerate(MALFORMED.items()):
            sock.send_multipart(frames)
            assert sock.poll(10_000), name
            reply = msgpack.unpackb(sock.recv())
            assert reply["type"] == "error", name
            assert re.search(expected, reply["error"]), f"{name}: {reply['error']}"
            assert int(svc.counters.rejected_messages[0]) == i + 1
            assert svc.store.sizes().tolist() == [0, 0], f"{name} reached the store"
        # still serving
        sock.send_multipart(raw_message())
        assert sock.poll(10_000)
        assert msgpack.unpackb(sock.recv())["status"] == "stored"
        assert svc.store.sizes().tolist() == [4, 0]
        acc = svc.counters.accounting()
        assert acc["rejected_messages"] == len(MALFORMED) and acc["stored"] == 4
        # transitions are counted only where the arrays were well formed (5 messages of 4 here)
        assert acc["rejected"] == 5 * 4
    finally:
        sock.close()
        ctx.term()
    svc.stop()  # flushes the rate-limited rejection log
    log = events(tmp_path)
    rejected = [e for e in log if e["event"] == "rejected"]
    repeated = sum(e["more"] for e in log if e["event"] == "rejected_repeatedly")
    assert len(rejected) + repeated == len(MALFORMED)
    assert all(e["level"] == "warning" and e["role"] == "replay" and e["peer"] == "local/actor1" for e in rejected)


def test_client_raises_on_refusal(service):
    svc = service(members=1)
    client = ReplayClient(svc.cfg.endpoint, "actor5", token=local_token(svc.cfg.endpoint, "actor5"))
    try:
        m = message(1, 0, 4, D, A)
        m["action"] = np.array([0, 1, 9, 1])
        client.send(0, **m)
        with pytest.raises(ReplayRejected, match="action out of range"):
            client.flush(10)
    finally:
        client.close()


# ---------------------------------------------------------------- rate limiter
def test_ratio_policy_contract():
    p = RatioPolicy(updates_per_step=2, learning_starts=10, tolerance=0)
    assert p.target(10) == 0 and p.target(13) == 6
    assert not p.may_update(10, 0) and p.may_update(11, 0) and p.may_update(11, 1) and not p.may_update(11, 2)
    assert p.inserts_paused(11, 0) and p.inserts_paused(11, 1) and not p.inserts_paused(11, 2)
    assert RatioPolicy(1, 0, 5).may_update(1, 5) and not RatioPolicy(1, 0, 5).may_update(1, 6)
    with pytest.raises(ValueError, match="updates_per_step must be an integer >= 1"):
        RatioPolicy(0, 10, 0)


def limited(service, tmp_path, ratio, members=1):
    directory = private_endpoint()[0]
    learner_bell, service_bell = f"ipc://{directory}/bell-learner", f"ipc://{directory}/bell-replay"
    svc = service(members=members, ratio=ratio, bell=service_bell, ring_on_insert=[learner_bell])
    return svc, learner_bell, service_bell


def run_limited(service, tmp_path, ratio, total_updates, consumer_work, producer, size):
    svc, learner_bell, service_bell = limited(service, tmp_path, ratio)
    out = tmp_path / "records.npy"
    ready = SPAWN.Event()
    c = run_in_process(
        consumer,
        svc.cfg.counters_name,
        svc.cfg.store_name,
        ratio,
        learner_bell,
        service_bell,
        total_updates,
        consumer_work,
        str(out),
        ready=ready,
    )
    assert ready.wait(60)
    p = producer(svc.cfg.endpoint)
    c.join(120)
    assert c.exitcode == 0
    stop_process(p)
    records = np.load(out)
    assert len(records) == total_updates
    policy = RatioPolicy(**ratio)
    inserts, done = records[:, 0], records[:, 1]
    target = np.array([policy.target(i) for i in inserts])
    assert (done + 1 <= target + policy.tolerance).all(), "the learner ran ahead of the ratio"
    # The service checks before each message, so it may overshoot by one message's worth.
    lag = target - done
    assert lag.max() <= policy.tolerance + policy.updates_per_step * size, f"the learner lagged by {lag.max()}"
    return records, svc


def test_limiter_holds_ratio_with_fast_producer_and_slow_consumer(service, tmp_path):
    ratio = {"updates_per_step": 1, "learning_starts": 64, "tolerance": 40}
    records, svc = run_limited(
        service, tmp_path, ratio, 300, 20, lambda ep: run_in_process(send_messages, ep, 0, 0, 0, 2000, 8, D, A), size=8
    )
    # the producer was held back: it could have sent 16000 transitions
    assert svc.counters.min_inserts() <= 64 + 300 + 40 + 8 + 64 * 8


def test_limiter_holds_ratio_with_slow_producer_and_fast_consumer(service, tmp_path):
    ratio = {"updates_per_step": 4, "learning_starts": 16, "tolerance": 10}
    records, _ = run_limited(
        service, tmp_path, ratio, 400, 0, lambda ep: run_in_process(paced_sender, ep, 0, 0, 200, 1, D, A, 300), size=1
    )
    assert records[:, 0].min() > 16  # nothing before learning starts
    # the consumer was held back: it kept reaching the bound and waiting there
    policy = RatioPolicy(**ratio)
    at_bound = records[:, 1] + 1 == np.array([policy.target(i) for i in records[:, 0]]) + policy.tolerance
    assert at_bound.sum() >= 60  # once per insert (every 4 updates) when it keeps up


def test_lock_step_alternates_exactly(service, tmp_path):
    ratio = {"updates_per_step": 3, "learning_starts": 5, "tolerance": 0}
    records, _ = run_limited(
        service, tmp_path, ratio, 90, 1, lambda ep: run_in_process(send_messages, ep, 0, 0, 0, 200, 1, D, A), size=1
    )
    # update u happens with exactly L + 1 + u // k env steps stored
    assert (records[:, 0] == 5 + 1 + records[:, 1] // 3).all()


def test_waits_are_interruptible_and_stalls_are_named(service, tmp_path):
    ratio = {"updates_per_step": 1, "learning_starts": 0, "tolerance": 0}
    svc, learner_bell, service_bell = limited(service, tmp_path, ratio)
    log = tmp_path / "consumer.jsonl"
    c = run_in_process(
        consumer,
        svc.cfg.counters_name,
        svc.cfg.store_name,
        ratio,
        learner_bell,
        service_bell,
        10,
        0,
        str(tmp_path / "r.npy"),
        str(log),
        0.3,
    )
    wait_for(lambda: log.exists() and "stalled" in log.read_text(), 20, "a stall warning")
    t = time.monotonic()
    assert stop_process(c, signal.SIGTERM) == 0
    assert time.monotonic() - t < 5
    warning = [json.loads(line) for line in log.read_text().splitlines() if '"stalled"' in line][0]
    assert warning["side"] == "actors" and warning["level"] == "warning"


# ------------------------------------------------------------------- security
def test_non_loopback_bind_needs_keys():
    with pytest.raises(ValueError, match="refusing to bind tcp://0.0.0.0:5555 without CurveZMQ keys"):
        check_bind("tcp://0.0.0.0:5555", None)
    check_bind("tcp://127.0.0.1:5555", None)
    check_bind("ipc://@x", None)


def test_curve_refuses_an_unknown_key(service, tmp_path):
    make_keys(tmp_path / "run")
    make_keys(tmp_path / "stranger")
    # a stranger knows the server's public key but its own key is not authorised
    (tmp_path / "stranger" / "server.key").write_bytes((tmp_path / "run" / "server.key").read_bytes())
    port = 20000 + os.getpid() % 20000
    svc = service(members=1, keys_dir=str(tmp_path / "run"), remote_endpoint=f"tcp://127.0.0.1:{port}")
    remote = svc.cfg.remote_endpoint
    stranger = run_in_process(send_messages, remote, 1, 0, 0, 3, 4, D, A, str(tmp_path / "stranger"))
    friend = run_in_process(send_messages, remote, 2, 0, 0, 3, 4, D, A, str(tmp_path / "run"))
    keyless = run_in_process(send_messages, remote, 3, 0, 0, 3, 4, D, A)
    local = run_in_process(send_messages, svc.cfg.endpoint, 4, 0, 0, 3, 4, D, A)
    for p in (friend, local):
        p.join(30)
        assert p.exitcode == 0
    stranger.join(3)
    for p in (stranger, keyless):
        assert p.is_alive(), "an unauthorised actor must still be waiting for an acknowledgement"
        stop_process(p)
    expected = np.concatenate([2_000_000 + np.arange(12), 4_000_000 + np.arange(12)])
    assert (stored_rewards(svc.store, 0) == expected).all()


# ------------------------------------------------------------------ lifecycle
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_service_unlinks_its_memory_when_signalled(tmp_path, sig):
    cfg = config(tmp_path, members=1)
    process = start(cfg)
    assert cfg.store_name in leftover_segments() and cfg.counters_name in leftover_segments()
    assert stop_process(process, sig) == 128 + sig
    assert cfg.store_name not in leftover_segments()
    assert any(e["event"] == "final_accounting" for e in events(tmp_path))


@pytest.mark.parametrize("point,recovery", [("journal_written", "journal_rolled_back"), ("data_written", "journal_completed")])
def test_a_service_killed_inside_its_commit_window_loses_and_doubles_nothing(tmp_path, monkeypatch, point, recovery):
    """SIGKILL with the journal written and the data not yet (rolled back, then resent and stored), or with
    the data written and not yet counted (completed; the resent copy is a duplicate): either way the store
    holds each transition once and the counts agree with it."""
    import psutil
    from mbgen.replay.service import PAUSE_IN_COMMIT_ENV

    monkeypatch.setenv(PAUSE_IN_COMMIT_ENV, point)
    cfg = config(tmp_path, members=1)
    first = start(cfg)
    monkeypatch.delenv(PAUSE_IN_COMMIT_ENV)
    client = ReplayClient(cfg.endpoint, "actor3", token=local_token(cfg.endpoint, "actor3"))
    try:
        for seq in range(3):
            client.send(0, **message(3, seq, 8, D, A))
        stopped = lambda: psutil.Process(first.pid).status() == psutil.STATUS_STOPPED  # noqa: E731
        wait_for(lambda: (client.poll(10), stopped())[1], what="the service to stop inside its commit window")
        stop_process(first, signal.SIGKILL)
        second = start(ServiceConfig(**{**cfg.to_dict(), "owns_memory": False}))  # as the supervisor restarts it
        try:
            client.flush(30)
            store, counters = ReplayStore.attach(cfg.store_name), RunCounters.attach(cfg.counters_name)
            assert (stored_rewards(store, 0) == 3_000_000 + np.arange(24)).all()
            assert int(counters.stored[0]) == 24 and int(counters.stored_by_actor.sum()) == 24
            duplicates = 8 if point == "data_written" else 0
            assert int(counters.duplicates[0]) == duplicates and int(counters.journal[0]) == 0
            store.close()
            counters.close()
        finally:
            stop_process(second)
        assert [e["event"] for e in events(tmp_path)].count(recovery) == 1
    finally:
        client.close()
        for name in (cfg.store_name, cfg.counters_name):
            unlink_segment(name)
