"""The replay service under attack: who can connect, what they can claim, and what hostile input costs.

Real sockets and a real service process throughout. The fuzzer (hypothesis) sends over 10,000
malformed or hostile messages to both endpoints while a valid actor sends too, then checks that the
service kept serving, stayed within its memory bound, refused and counted exactly the hostile
messages, and stored byte for byte what the valid actor sent.
"""

import os
import shutil
import stat

import json
import subprocess
import sys
import time

import msgpack
import numpy as np
import psutil
import pytest
import zmq
import zmq.auth
from helpers import local_token, message, private_endpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mbgen.replay.client import ReplayClient
from mbgen.replay.protocol import (
    INSERT_ARRAYS,
    MAX_TRANSITIONS_PER_MESSAGE,
    PROTOCOL_VERSION,
    encode_insert,
    max_frame_bytes,
)
from mbgen.replay.service import MAX_SLOTS_PER_KEY, RCVHWM, ServiceConfig, start
from mbgen.replay.store import ReplayStore
from mbgen.runtime.counters import REMOTE, RunCounters
from mbgen.runtime.security import ClientKeys, apply_local_login, make_keys
from mbgen.runtime.shm import new_run_id

D, A, MEMBERS = 16, 5, 2
MEMORY_BOUND_MB = 400  # the service's resident memory, whatever its peers send (README: Security model)


class Service:
    def __init__(self, tmp_path, port, more_keys=(), **overrides):
        self.keys_dir = str(tmp_path / "keys")
        make_keys(self.keys_dir)
        for name in more_keys:  # further authorised actor keys: KEYS/<name>.key_secret, authorized/<name>.key
            public, _ = zmq.auth.create_certificates(self.keys_dir, name)
            shutil.copy(public, os.path.join(self.keys_dir, "authorized", f"{name}.key"))
        self.directory, endpoint, credentials = private_endpoint()
        self.cfg = ServiceConfig(
            run_id=new_run_id(),
            endpoint=endpoint,
            credentials=credentials,
            members=MEMBERS,
            obs_dim=D,
            num_actions=A,
            reward_range=(0.0, 1e9),
            remote_endpoint=f"tcp://127.0.0.1:{port}",
            keys_dir=self.keys_dir,
            run_info={"config": {"agent": "er"}, "param_endpoint": ""},
            log_path=str(tmp_path / "events.jsonl"),
            **overrides,
        )
        self.process = start(self.cfg)
        self.ctx = zmq.Context()
        self.counters = RunCounters.attach(self.cfg.counters_name)
        self.store = ReplayStore.attach(self.cfg.store_name)
        self.peak_rss = 0
        self.sockets = []

    def rss_mb(self):
        rss = psutil.Process(self.process.pid).memory_info().rss / 2**20
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def client_keys(self, name="actor"):
        public, secret = zmq.auth.load_certificate(os.path.join(self.keys_dir, f"{name}.key_secret"))
        return ClientKeys(public, secret, ClientKeys.load(self.keys_dir).server_public)

    def dealer(self, login=None, keys=False, remote=False, routing_id=None):
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if routing_id is not None:
            sock.setsockopt(zmq.ROUTING_ID, routing_id)
        if login is not None:
            apply_local_login(sock, *login)
        if keys:
            self.client_keys("actor" if keys is True else keys).apply(sock)
        sock.connect(self.cfg.remote_endpoint if remote else self.cfg.endpoint)
        self.sockets.append(sock)
        return sock

    def close(self):
        for sock in self.sockets:
            sock.close(linger=0)
        self.counters.close()
        self.store.close()
        self.ctx.term()
        self.process.terminate()
        self.process.join(15)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path, 22000 + os.getpid() % 20000)
    yield s
    s.close()


def round_trip(sock, frames, timeout_ms=3000):
    """The reply to one message, or None (no reply; or no connection to send on: refused at the handshake)."""
    try:
        sock.send_multipart(frames, zmq.NOBLOCK)
    except zmq.Again:
        return None
    if not sock.poll(timeout_ms):
        return None
    return msgpack.unpackb(sock.recv())


def header(actor="actor1", **overrides):
    m = message(1, 0, 4, D, A)
    parts = encode_insert(actor, 0, 0, **m)
    h = msgpack.unpackb(parts[0])
    h.update(overrides)
    return [msgpack.packb(h)] + [bytes(p) for p in parts[1:]]


# ------------------------------------------------------------------------- who may connect
def test_a_local_process_without_credentials_gets_nothing(service):
    token = local_token(service.cfg.endpoint, "actor1")
    assert stat.S_IMODE(os.stat(service.directory).st_mode) == 0o700
    strangers = [
        service.dealer(),  # no login at all
        service.dealer(login=("actor1", "0" * 32)),  # a guessed token
        service.dealer(login=("actor99", token)),  # another actor's token
        service.dealer(remote=True),  # the TCP endpoint without a key
    ]
    for sock in strangers:
        assert round_trip(sock, header(), 1500) is None  # refused at the handshake: no reply at all
        assert round_trip(sock, [msgpack.packb({"v": PROTOCOL_VERSION, "type": "hello", "actor": "x"})], 500) is None
    assert int(service.counters.stored.sum()) == 0 and int(service.counters.rejected_messages[0]) == 0
    assert not (service.counters.slot_state == REMOTE).any()  # no slot taken
    friend = service.dealer(login=("actor1", token))
    assert round_trip(friend, header())["status"] == "stored"


def test_no_peer_can_send_as_another(service):
    actor1 = service.dealer(login=("actor1", local_token(service.cfg.endpoint, "actor1")))
    reply = round_trip(actor1, header(actor="actor0", seq=5))
    assert reply["type"] == "error" and "not this connection's login" in reply["error"]
    # actor0's own message 5 is not taken for a duplicate later
    actor0 = ReplayClient(service.cfg.endpoint, "actor0", token=local_token(service.cfg.endpoint, "actor0"))
    try:
        for seq in range(6):
            actor0.send(0, **message(0, seq, 4, D, A))
        actor0.flush(10)
        assert actor0.stored == 6 and actor0.duplicates == 0
    finally:
        actor0.close()
    # a local login cannot say hello on the remote socket's behalf, nor reach remote slots
    hello = round_trip(actor1, [msgpack.packb({"v": PROTOCOL_VERSION, "type": "hello", "actor": "actor1"})])
    assert hello["type"] == "error" and "remote actors" in hello["error"]


def test_hello_gives_only_what_an_actor_needs_and_slots_are_a_quota(service):
    remote = service.dealer(keys=True, remote=True)
    replies = [
        round_trip(remote, [msgpack.packb({"v": PROTOCOL_VERSION, "type": "hello", "actor": f"a{i}"})])
        for i in range(61)
    ]
    welcomed = [r for r in replies if r["type"] == "welcome"]
    assert len(welcomed) == MAX_SLOTS_PER_KEY
    assert all("quota" in r["error"] for r in replies if r["type"] == "error")
    assert welcomed[0]["run"] == {"config": {"agent": "er"}, "param_endpoint": ""}
    assert int((service.counters.slot_state == REMOTE).sum()) == MAX_SLOTS_PER_KEY


def test_absurd_reports_are_refused_and_the_service_keeps_serving(service):
    remote = service.dealer(keys=True, remote=True)
    assert round_trip(remote, [msgpack.packb({"v": PROTOCOL_VERSION, "type": "hello", "actor": "far"})])["slot"]
    report = lambda sent: round_trip(  # noqa: E731
        remote, [msgpack.packb({"v": PROTOCOL_VERSION, "type": "report", "actor": "far", "sent": sent})]
    )
    for sent, why in (
        ([2**63, 0], "integers in"),
        ([-1, 0], "integers in"),
        ([2_000_012_000, 0], "exceed what arrived"),
        ([1.5, 0], "integers in"),
        ([1], "integers in"),
    ):
        reply = report(sent)
        assert reply["type"] == "error" and why in reply["error"], (sent, reply)
    assert report([10, 0])["type"] == "reported"
    assert report([3, 0])["type"] == "error"  # a claim may not go down
    assert service.process.is_alive() and int(service.counters.sent.sum()) == 10
    assert round_trip(remote, header(actor="far"))["status"] == "stored"


def test_a_gigabyte_of_hostile_messages_keeps_memory_bounded(service):
    """An authenticated peer sends 1 GB: frames over the size limit (which disconnect it) and frames
    just under it (refused one by one); the service's memory stays under its bound."""
    token = local_token(service.cfg.endpoint, "actor1")
    limit = max_frame_bytes(D)
    big, under = os.urandom(limit + 1), os.urandom(limit - 1)
    sent = 0
    baseline = service.rss_mb()
    sock = service.dealer(login=("actor1", token))
    sock.setsockopt(zmq.SNDHWM, 8)
    while sent < 1 << 30:
        frames = [header()[0], big] if (sent // limit) % 2 else [header()[0], under, under]
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
            sent += sum(len(f) for f in frames)
        except zmq.Again:
            sock.poll(100)  # drain replies; an oversized frame got this connection dropped and redialled
            while sock.poll(0):
                sock.recv()
        service.rss_mb()
    sock.close()
    assert service.process.is_alive()
    assert service.peak_rss < MEMORY_BOUND_MB, f"peak {service.peak_rss:.0f} MB (baseline {baseline:.0f} MB)"
    friend = service.dealer(login=("actor2", local_token(service.cfg.endpoint, "actor2")))
    assert round_trip(friend, header(actor="actor2"), 10_000)["status"] == "stored"
    print(
        f"1 GB hostile: peak RSS {service.peak_rss:.0f} MB (baseline {baseline:.0f} MB), "
        f"{int(service.counters.rejected_messages[0])} refused"
    )


# ----------------------------------------------------------------------------------- fuzzer
def acceptable(actor, key, value):
    """Whether a header whose `key` is `value` (all else valid) is a valid insert, by the protocol's rules."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    original = msgpack.unpackb(header(actor)[0])
    return {
        "seq": is_int and value >= 0,
        "member": is_int and 0 <= value < MEMBERS,
        "count": is_int and value == 4,
    }.get(key, type(value) is type(original[key]) and value == original[key])


def hostile_messages(actor):
    """Messages that must all be refused with an error reply."""
    good = header(actor)
    field = st.sampled_from(["v", "type", "actor", "seq", "member", "count", "arrays"])
    junk = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=40),
        st.binary(max_size=40),
        st.lists(st.integers(), max_size=6),
    )

    def mutated_header(pair):
        key, value = pair
        h = msgpack.unpackb(good[0])
        h[key] = value
        try:
            return [msgpack.packb(h)] + good[1:]
        except (TypeError, ValueError, OverflowError):
            return [b"\xc1"] + good[1:]  # unpackable: still hostile

    def mutated_array(args):
        i, data = args
        frames = list(good)
        frames[1 + i] = data
        return frames

    def bad_values(args):
        which, value = args
        m = message(1, 0, 4, D, A)
        m[which] = np.asarray(value, m[which].dtype) if which != "reward" else np.full(4, value, np.float32)
        return [good[0]] + [bytes(np.ascontiguousarray(m[name])) for name, _, _ in INSERT_ARRAYS]

    return st.one_of(
        st.lists(st.binary(max_size=200), min_size=1, max_size=7),  # random frames
        st.tuples(field, junk).filter(lambda p: not acceptable(actor, *p)).map(mutated_header),
        st.tuples(st.integers(0, 4), st.binary(max_size=300)).map(mutated_array),  # wrong sizes and bytes
        st.integers(0, 4).map(lambda n: good[: 1 + n]),  # truncated
        st.integers(1, 3).map(lambda n: good + [b"\0"] * n),  # extra frames
        st.tuples(st.just("reward"), st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 3e38])).map(bad_values),
        st.tuples(st.just("action"), st.sampled_from([[-1, 0, 0, 0], [0, A, 0, 0], [0, 0, 2**40, 0]])).map(bad_values),
        st.integers(MEMBERS, 2**40).map(lambda m: mutated_header(("member", m))),
        st.integers(MAX_TRANSITIONS_PER_MESSAGE + 1, 2**62).map(lambda n: mutated_header(("count", n))),
    )


@pytest.mark.slow
def test_fuzzer_ten_thousand_hostile_messages_on_every_endpoint(service):
    token = local_token(service.cfg.endpoint, "actor1")
    local = service.dealer(login=("actor1", token))
    remote = service.dealer(keys=True, remote=True)
    assert round_trip(remote, [msgpack.packb({"v": PROTOCOL_VERSION, "type": "hello", "actor": "fuzz"})])["slot"]
    valid = ReplayClient(service.cfg.endpoint, "actor3", token=local_token(service.cfg.endpoint, "actor3"))
    stats = {"cases": 0, "refused": 0, "valid": 0}

    @settings(
        max_examples=5200,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_messages("actor1"), hostile_messages("fuzz"), st.booleans())
    def fuzz(local_frames, remote_frames, send_valid):
        for sock, frames in ((local, local_frames), (remote, remote_frames)):
            reply = round_trip(sock, frames)
            assert reply is not None and reply["type"] == "error", (frames[:1], reply)
            stats["cases"] += 1
            stats["refused"] += 1
        if send_valid:
            valid.send(stats["valid"] % MEMBERS, **message(3, stats["valid"], 4, D, A))
            stats["valid"] += 1
        if stats["cases"] % 500 == 0:
            service.rss_mb()

    try:
        fuzz()
        valid.flush(30)
    finally:
        valid.close()
    assert stats["cases"] >= 10_000
    assert service.process.is_alive() and service.peak_rss < MEMORY_BOUND_MB
    assert int(service.counters.rejected_messages[0]) == stats["refused"]
    # the store holds exactly, byte for byte, what the valid actor sent
    for member in range(MEMBERS):
        held = service.store.read_all(member)
        expected = [message(3, s, 4, D, A) for s in range(stats["valid"]) if s % MEMBERS == member]
        assert held.reward.shape[1] == 4 * len(expected)
        if expected:
            assert np.array_equal(held.reward[0], np.concatenate([m["reward"] for m in expected]))
            assert np.array_equal(held.obs[0], np.concatenate([m["obs"] for m in expected]).astype(np.float32))
            assert np.array_equal(held.action[0], np.concatenate([m["action"] for m in expected]))
    assert int(service.counters.stored.sum()) == 4 * stats["valid"]
    print(f"fuzzer: {stats['cases']} cases, {stats['refused']} refused, peak RSS {service.peak_rss:.0f} MB")


assert RCVHWM * max_frame_bytes(D) < MEMORY_BOUND_MB * 2**20 / 4


HOSTILE_RINGER = """
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.PUSH)
s.setsockopt(zmq.LINGER, 5000)
s.connect(sys.argv[1])
frame = b"x" * (50 << 20)
for _ in range(6):  # 300 MB of 'rings'
    s.send(frame, copy=False)
s.close()
ctx.term()
"""


def test_a_doorbell_takes_only_empty_rings_and_only_in_a_private_directory(tmp_path):
    """A doorbell peer sending 300 MB of non-empty 'rings' is disconnected before anything is buffered: the
    owner's memory stays put, no ring is delivered, and a real ring still wakes it. Doorbells outside a
    private directory are refused."""
    import subprocess
    import sys

    from helpers import socket_directory
    from mbgen.runtime.doorbell import Doorbell, Ringer

    ctx = zmq.Context()
    bell = Doorbell(ctx, f"ipc://{socket_directory()}/bell-owner")
    try:
        before = psutil.Process().memory_info().rss
        subprocess.run([sys.executable, "-c", HOSTILE_RINGER, bell.endpoint], timeout=60, check=True)
        assert not bell.wait(1.0)  # nothing came through
        assert psutil.Process().memory_info().rss - before < 20 << 20
        ringer = Ringer(ctx, [bell.endpoint])
        ringer.ring()
        assert bell.wait(5.0)
        ringer.close()
    finally:
        bell.close()
    open_dir = tmp_path / "open"
    open_dir.mkdir(mode=0o755)
    os.chmod(open_dir, 0o755)
    for endpoint, why in [
        (f"ipc://{open_dir}/bell", "it must be 0700"),
        ("ipc://@bell", "abstract-namespace"),
        ("tcp://127.0.0.1:5999", "a doorbell is an ipc:// path"),
    ]:
        with pytest.raises(ValueError, match=why):
            Doorbell(ctx, endpoint)
    ctx.term()


# ------------------------------------------------------------ the remote endpoint (issue 31)
REMOTE_MEMORY_GROWTH_MB = 64  # docs/security.md: what hostile remote traffic may add to the service's memory


def hello(sock, actor):
    return round_trip(sock, [msgpack.packb({"v": PROTOCOL_VERSION, "type": "hello", "actor": actor})])


@pytest.fixture
def grace_service(tmp_path):
    s = Service(tmp_path, 23000 + os.getpid() % 20000, more_keys=("mallory", "k3", "k4", "k5"), remote_slot_grace_s=0.3)
    yield s
    s.close()


def test_a_gigabyte_of_hostile_multipart_messages_from_a_key_holder_keeps_memory_bounded(service):
    """Issue 31.1: multipart messages of 28,521 frames of 36,700 bytes (1 GB each, which libzmq buffered
    whole), frames over the size limit, and maximal messages refused one by one, from a holder of a valid
    key: the service's memory grows by less than REMOTE_MEMORY_GROWTH_MB and a valid remote actor is
    still served."""
    from mbgen.replay.service import remote_limits

    limits = remote_limits(D)
    assert limits.bound_bytes(keys=1) < REMOTE_MEMORY_GROWTH_MB * 2**20 / 2
    baseline = service.rss_mb()
    attacker = service.dealer(keys=True, remote=True)
    attacker.setsockopt(zmq.SNDHWM, 4)
    assert hello(attacker, "evil")["type"] == "welcome"
    chunk = zmq.Frame(os.urandom(36_700))
    big, under = os.urandom(limits.max_frame + 1), os.urandom(limits.max_frame - 1)
    offered, giants = 0, 0
    t0 = time.monotonic()
    while offered < 3 << 30 and time.monotonic() - t0 < 40:
        try:
            if giants < 2:  # the message, twice: 2 GB offered, cut off at a valid message's bytes
                attacker.send_multipart([header(actor="evil")[0]] + [chunk] * 28_521, zmq.NOBLOCK, copy=False)
                offered += 28_521 * 36_700
                giants += 1
            elif giants == 2:  # 100,000 empty frames: cut off at frame MAX_FRAMES + 1
                attacker.send_multipart([header(actor="evil")[0]] + [b""] * 100_000, zmq.NOBLOCK)
                giants += 1
            else:
                first = header(actor="evil")[0]
                frames = [first, big] if (offered // limits.max_frame) % 2 else [first, under, under]
                attacker.send_multipart(frames, zmq.NOBLOCK)
                offered += sum(len(f) for f in frames)
        except zmq.Again:
            attacker.poll(50)
            while attacker.poll(0):
                attacker.recv()
        service.rss_mb()
    attacker.close(linger=0)
    assert offered >= 3 << 30
    assert service.process.is_alive()
    growth = service.peak_rss - baseline
    assert growth < REMOTE_MEMORY_GROWTH_MB, f"peak {service.peak_rss:.0f} MB (baseline {baseline:.0f} MB)"
    friend = service.dealer(keys=True, remote=True)
    assert hello(friend, "friend")["type"] == "welcome"
    assert round_trip(friend, header(actor="friend"), 10_000)["status"] == "stored"
    with open(service.cfg.log_path) as f:
        reasons = [e.get("reason", "") for e in map(json.loads, f) if e.get("event") == "remote_disconnected"]
    assert sum("message of more than" in r and "bytes" in r for r in reasons) == 2, reasons[:5]  # the giants
    assert sum("more than 16 frames" in r for r in reasons) == 1, reasons[:5]
    assert sum("over the limit" in r for r in reasons) >= 10  # the oversized frames
    print(f"3 GB hostile remote: peak RSS {service.peak_rss:.0f} MB (baseline {baseline:.0f} MB, +{growth:.0f} MB)")


VICTIM = """
import json, sys, time
import numpy as np
from mbgen.replay.client import ReplayClient
from mbgen.replay.protocol import MAX_TRANSITIONS_PER_MESSAGE
from mbgen.runtime.security import ClientKeys
endpoint, keys, name, messages, pause = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
client = ReplayClient(endpoint, name, keys=ClientKeys.load(keys), resend_after_s=600)
welcome = client.hello(timeout_s=30)
client.next_seq = welcome["first_seq"]
print(json.dumps({"slot": welcome["slot"], "first_seq": welcome["first_seq"]}), flush=True)
time.sleep(pause)
d = 16
for i in range(messages):
    obs = np.zeros((4, d), bool)
    client.send(0, obs, np.zeros(4, np.int64), np.full(4, float(i), np.float32), obs, np.zeros(4, bool))
client.flush(30)
client.report([4 * messages, 0])
print(json.dumps({"stored": client.stored, "duplicates": client.duplicates}), flush=True)
client.close()
"""


def remote_actor(service, name, messages, pause=0.0):
    """A remote actor process (ReplayClient with the run's actor key) sending `messages` of 4 transitions."""
    return subprocess.Popen(
        [sys.executable, "-c", VICTIM, service.cfg.remote_endpoint, service.keys_dir, name, str(messages), str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {k: v for line in lines for k, v in line.items()}


def test_another_key_cannot_take_over_an_actors_route(grace_service):
    """Issue 31.2: a peer with key B connecting with the routing id of key A's actor, saying hello under
    that name and sending as it, does not take its route: the victim's next 602 messages are all
    acknowledged, and B's messages never reach A's slot."""
    s = grace_service
    victim = remote_actor(s, "faraway", 602, pause=1.0)
    json.loads(victim.stdout.readline())  # the victim said hello and holds its route
    thief = s.dealer(keys="mallory", remote=True, routing_id=b"faraway")
    welcome = hello(thief, "faraway")  # its own name space: key/mallory/faraway, not the victim's slot
    assert welcome["type"] == "welcome"
    for seq in range(20):
        round_trip(thief, header(actor="faraway", seq=seq), 1000)
    report = [msgpack.packb({"v": PROTOCOL_VERSION, "type": "report", "actor": "faraway", "sent": [10**6, 0]})]
    assert round_trip(thief, report)["type"] == "error"  # beyond what key/mallory/faraway sent
    result = finished(victim)
    assert result["stored"] == 602 and result["duplicates"] == 0
    slots = {a["identity"]: a for a in s.counters.per_slot()}
    mine = slots["key/actor/faraway"]
    assert mine["stored"] == mine["claimed"] == 4 * 602
    assert slots["key/mallory/faraway"]["slot"] != mine["slot"]
    # a message naming an actor that said hello only under another key is refused
    other = s.dealer(keys="k3", remote=True)
    reply = round_trip(other, header(actor="faraway", seq=999))
    assert reply["type"] == "error" and "has not said hello" in reply["error"]


def test_an_inflated_report_and_replayed_duplicates_do_not_reconcile(grace_service):
    """Issue 31.3: a report inflated by the whole allowed window and 500 replayed duplicates: the
    accounting names the slot and says it does not reconcile, connected or released."""
    s = grace_service
    evil = s.dealer(keys="mallory", remote=True)
    assert hello(evil, "liar")["type"] == "welcome"
    for seq in range(10):
        assert round_trip(evil, header(actor="liar", seq=seq))["status"] == "stored"
    for _ in range(500):
        assert round_trip(evil, header(actor="liar", seq=3))["status"] == "duplicate"
    inflated = [40 + 2 * RCVHWM * MAX_TRANSITIONS_PER_MESSAGE, 2 * RCVHWM * MAX_TRANSITIONS_PER_MESSAGE]
    report = [msgpack.packb({"v": PROTOCOL_VERSION, "type": "report", "actor": "liar", "sent": inflated})]
    assert round_trip(evil, report)["type"] == "reported"  # plausible while connected: some may be in flight
    ok, why = s.counters.reconciles()
    assert not ok and "remote slot" in why and "key/mallory/liar" in why, why
    row = [a for a in s.counters.per_slot() if a["identity"] == "key/mallory/liar"][0]
    assert (row["claimed"], row["stored"], row["duplicates"]) == (sum(inflated), 40, 2000)
    evil.close(linger=0)
    deadline = time.monotonic() + 10
    while s.counters.slot_state[row["slot"]] == REMOTE and time.monotonic() < deadline:
        time.sleep(0.1)
    ok, why = s.counters.reconciles()  # released: at most its window (64 messages of 4) could be lost
    assert not ok and "more than its window" in why, why
    assert s.counters.accounting()["lost_in_flight"] == 0


def test_a_fifth_key_gets_its_share_of_remote_slots(grace_service):
    """Issue 31.4: four keys asking for every slot they can get leave the fifth its fair share."""
    s = grace_service
    welcomed = {}
    for key in ("actor", "mallory", "k3", "k4", "k5"):
        sock = s.dealer(keys=key, remote=True)
        replies = [hello(sock, f"{key}-{i}") for i in range(12)]
        welcomed[key] = sum(r["type"] == "welcome" for r in replies)
        assert all("quota" in r["error"] for r in replies if r["type"] == "error")
    share = 32 // 5
    assert all(n >= share for n in welcomed.values()), welcomed
    assert max(welcomed.values()) <= MAX_SLOTS_PER_KEY and sum(welcomed.values()) <= 32


def test_a_restarted_remote_actor_always_gets_a_slot_and_the_accounting_stays_whole(grace_service):
    """Issue 31.4: an actor restarted 8 times under one name gets its released slot back and continues its
    sequence (nothing dropped as a duplicate); 9 incarnations under fresh names (the default, host-pid)
    all get slots although one key holds at most 8; the totals still reconcile."""
    s = grace_service
    slots = set()
    for i in range(9):
        r = finished(remote_actor(s, "restarting", 5))
        assert r["stored"] == 5 and r["duplicates"] == 0
        assert r["first_seq"] == 5 * i
        slots.add(r["slot"])
    assert len(slots) == 1
    for i in range(9):
        r = finished(remote_actor(s, f"host-{1000 + i}", 3))
        assert r["stored"] == 3 and "slot" in r
    time.sleep(0.6)  # past the grace period: every slot released
    totals = s.counters.accounting()
    assert totals["sent"] == totals["stored"] == 4 * (9 * 5 + 9 * 3)
    ok, why = s.counters.reconciles()
    assert ok, why


def test_strangers_on_the_tcp_port_cannot_block_an_actors_handshake(service):
    """Before authentication: 300 idle connections and garbage from other addresses (127.0.0.2-4), a
    NULL-mechanism greeting, a huge command frame, a HELLO with a bad box: each is refused or dropped
    (at most 16 handshakes per address wait, 10 s each), the service stays small, and an actor with a
    key still completes its handshake and is served."""
    import socket

    from mbgen.runtime.zmtp import greeting

    port = int(service.cfg.remote_endpoint.rsplit(":", 1)[1])
    baseline = service.rss_mb()

    def stranger(source, payload=b""):
        s = socket.socket()
        s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        if payload:
            s.sendall(payload)
        return s

    idle = [stranger(f"127.0.0.{2 + i % 3}") for i in range(300)]
    hostile = [
        stranger("127.0.0.5", os.urandom(4096)),  # not ZMTP
        stranger("127.0.0.5", greeting(b"NULL", False)),  # no keys
        stranger("127.0.0.5", greeting(b"CURVE", False) + b"\x06" + (1 << 40).to_bytes(8, "big")),  # 1 TB command
        stranger("127.0.0.5", greeting(b"CURVE", False) + b"\x04\xc8\x05HELLO\x01\x00" + os.urandom(192)),  # bad box
    ]
    for s in hostile:  # each is dropped without the handshake timeout
        s.settimeout(5)
        data = b"x"
        while data:
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                break
    friend = service.dealer(keys=True, remote=True)
    assert hello(friend, "friend")["type"] == "welcome"
    assert round_trip(friend, header(actor="friend"))["status"] == "stored"
    assert service.rss_mb() - baseline < 16
    for s in idle + hostile:
        s.close()
    assert service.process.is_alive()
