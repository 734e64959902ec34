"""The replay ingest service: a ROUTER socket in front of the shared-memory ReplayStore.

It validates each message, writes good transitions, acknowledges, and drops
duplicates by (actor, sequence). When the learner lags the ratio by more than
the tolerance it stops reading its socket, so ZeroMQ's high-water marks push
back on the actors.

Who may send. The local endpoint is an ipc path in the run's private
directory; a peer logs in with its per-run token (PLAIN) and is bound to that
actor id. The remote endpoint needs a CurveZMQ key from the authorised
directory; a remote peer is known as its key plus the name it gives, and may
hold at most MAX_SLOTS_PER_KEY actor slots. The ZAP handler (replay/security.py)
refuses everything else during the handshake, before any message is read. A
message whose `actor` field is not its sender's authenticated identity is
refused.

What is bounded. Frames larger than a valid message can be disconnect their
peer (ZMQ_MAXMSGSIZE); each peer has at most RCVHWM messages queued; remote
slots are limited per key; counters are validated as the int64 they are
stored in; rewards must lie in the environment's declared range. Refusals are
counted (messages, and transitions only where the arrays were well formed) and
logged at most once per peer and reason per interval, with a count.

Surviving a crash. The store and counters are owned by the supervisor, so a
restarted service re-attaches. Deduplication state (the highest sequence below
which everything was stored, and a window of what was stored above it) lives in
the counters. An insert is committed through a journal: the service records
what it is about to commit, writes the data, publishes it, marks the sequence,
counts it, and clears the journal; a service killed anywhere in between is
completed or rolled back by the next one (`recover`), so nothing acknowledged
is lost and nothing is stored twice.

Checkpoints. When the learner announces a cut (counters.cut_id) and every live
local actor has written its part for it, the service writes its part (the
store and the counters) before handling another message, so the cut holds
every message an actor's part no longer holds (runtime/checkpoints.py).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import zmq
from mbgen.replay.limiter import RatioPolicy
from mbgen.replay.protocol import (
    INT64_MAX,
    MAX_TRANSITIONS_PER_MESSAGE,
    ProtocolError,
    StoreSpec,
    decode_header,
    decode_insert,
    max_frame_bytes,
    pack,
)
from mbgen.replay.store import DEFAULT_CAPACITY, ReplayStore
from mbgen.runtime import checkpoints
from mbgen.runtime.counters import FREE, LIVE, REMOTE, SEQ_WINDOW, RunCounters
from mbgen.runtime.doorbell import Doorbell, Ringer
from mbgen.runtime.lifecycle import StopSignal
from mbgen.runtime.logs import get_logger
from mbgen.runtime.roles import ACTOR_SLOTS, LEARNER, LOCAL_ACTOR_SLOTS, REPLAY, actor_name, actor_slot, process_slot
from mbgen.runtime.runner import run_role
from mbgen.runtime.security import (
    LOCAL_DOMAIN,
    REMOTE_DOMAIN,
    LocalCredentials,
    ServerKeys,
    ZapHandler,
    check_bind,
    check_private_endpoint,
)
from mbgen.runtime.shm import segment_name
from mbgen.runtime.wiring import COUNTERS_SEGMENT, STORE_SEGMENT

RCVHWM = 64  # messages queued per peer before ZeroMQ stops reading its connection
MAX_SLOTS_PER_KEY = 8  # remote actor slots one authorised key may hold
REJECTION_LOG_PERIOD_S = 10.0  # at most one "rejected" line per peer and reason per period


@dataclass
class ServiceConfig:
    run_id: str  # names the shared-memory segments
    endpoint: str  # where local actors connect: ipc:// in a private (0700) directory, or loopback tcp://
    credentials: str  # the local actors' per-run tokens (replay/security.py LocalCredentials)
    members: int  # population size P
    obs_dim: int  # observation width D
    num_actions: int  # actions are 0..num_actions-1
    reward_range: tuple[float, float] = (-1.0, 1.0)  # the environment's declared [low, high] reward
    capacity: int = DEFAULT_CAPACITY  # transitions kept per member
    ratio: dict | None = None  # RatioPolicy fields; None: no limiter (inserts never pause)
    owns_memory: bool = True  # create (and unlink) the store and counters; False: attach to the supervisor's
    bell: str | None = None  # this service's doorbell (rung by the learner after updates)
    ring_on_insert: list[str] = field(default_factory=list)  # doorbells to ring after each insert
    remote_endpoint: str | None = None  # where remote actors connect (CurveZMQ when keys_dir is set)
    keys_dir: str | None = None  # CurveZMQ key directory (see replay/security.py)
    run_info: dict[str, Any] = field(default_factory=dict)  # what a remote actor's hello receives
    checkpoints: str | None = None  # the run's checkpoints directory; None: no checkpoint parts
    log_path: str | None = None  # events.jsonl; None: stderr
    managed: bool = False  # started by a supervisor: ignore SIGINT (the supervisor relays stops)
    stall_warning_s: float = 30.0  # warn when inserts stay paused this long
    accounting_period_s: float = 10.0  # log the counters this often

    @property
    def store_name(self) -> str:
        return segment_name(self.run_id, STORE_SEGMENT)

    @property
    def counters_name(self) -> str:
        return segment_name(self.run_id, COUNTERS_SEGMENT)

    def to_dict(self) -> dict:
        return asdict(self)


# -- deduplication (plain functions of the counters' arrays) ------------------------------------
def seq_seen(below: int, window: np.ndarray, seq: int) -> bool:
    """Whether message `seq` was stored: everything below `below`, and window[seq % W] above it."""
    if seq < below:
        return True
    return seq < below + SEQ_WINDOW and bool(window[seq % SEQ_WINDOW])


def seq_mark(below: int, window: np.ndarray, seq: int) -> int:
    """Record `seq` as stored; returns the new `below` (advanced over every stored seq).

    Idempotent, so a journal replay may mark again. Callers check seq < below + W first.
    """
    if seq < below:
        return below
    window[seq % SEQ_WINDOW] = 1
    while window[below % SEQ_WINDOW]:
        window[below % SEQ_WINDOW] = 0
        below += 1
    return below


class RejectionLog:
    """Rate-limited "rejected" events: the first of each (peer, reason) per period, then a count."""

    def __init__(self, log, period_s: float = REJECTION_LOG_PERIOD_S):
        self.log, self.period_s = log, period_s
        self.window_end: dict[tuple, float] = {}
        self.suppressed: dict[tuple, int] = defaultdict(int)

    @staticmethod
    def kind(reason: str) -> str:
        """The reason without the values in it (numbers, quoted text, lists), so a fuzzer is one kind."""
        text = reason.split(" got ")[0].split(";")[0]
        return re.sub(r"'[^']*'|\"[^\"]*\"|\[[^\]]*\]|[-+]?\d[\w.+-]*", "#", text)[:80]

    def record(self, peer: str, error: ProtocolError) -> None:
        key, now = (peer, self.kind(error.reason)), time.monotonic()
        if key in self.window_end and now < self.window_end[key]:
            self.suppressed[key] += 1
            return
        self.flush(key)
        self.window_end[key] = now + self.period_s
        self.log.warning(
            "rejected", peer=peer, error=error.reason, seq=error.seq, member=error.member, count=error.count
        )

    def flush(self, key: tuple | None = None) -> None:
        keys = [key] if key is not None else list(self.suppressed)
        for k in keys:
            n = self.suppressed.pop(k, 0)
            if n:
                self.log.warning("rejected_repeatedly", peer=k[0], reason=k[1], more=n, period_s=self.period_s)


class ReplayService:
    def __init__(self, cfg: ServiceConfig, store: ReplayStore, counters: RunCounters, stop: StopSignal):
        self.cfg = cfg
        self.store = store
        self.counters = counters
        self.stop = stop
        self.pause_in_commit = os.environ.get(PAUSE_IN_COMMIT_ENV, "")  # tests only: see `paused_here`
        self.spec = StoreSpec(cfg.members, cfg.obs_dim, cfg.num_actions, tuple(cfg.reward_range))
        self.policy = RatioPolicy(**cfg.ratio) if cfg.ratio else None
        self.log = get_logger()
        self.rejections = RejectionLog(self.log)
        self.remote_peers: dict[bytes, zmq.Socket] = {}  # routing identity -> socket, for the goodbye
        self.slots = counters.identities()  # identity -> actor slot (survives a restart)
        self.last_part = counters.part_done[process_slot(REPLAY)]
        check_private_endpoint(cfg.endpoint)
        self.ctx = zmq.Context()
        keys = None
        if cfg.remote_endpoint:
            keys = ServerKeys.load(cfg.keys_dir) if cfg.keys_dir else None
            check_bind(cfg.remote_endpoint, keys)
        self.zap = ZapHandler(self.ctx, LocalCredentials(cfg.credentials), keys.authorized_dir if keys else None)
        self.max_frame = max_frame_bytes(cfg.obs_dim)
        self.sockets = [self._router(cfg.endpoint, LOCAL_DOMAIN, None)]
        if cfg.remote_endpoint:
            self.sockets.append(self._router(cfg.remote_endpoint, REMOTE_DOMAIN, keys))
        self.remote_socket = self.sockets[1] if cfg.remote_endpoint else None
        self.bell = Doorbell(self.ctx, cfg.bell) if cfg.bell else None
        self.ringer = Ringer(self.ctx, cfg.ring_on_insert)

    def _router(self, endpoint: str, domain: str, keys: ServerKeys | None) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting actor keeps its identity
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_frame)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.zap_domain = domain.encode()
        if keys is not None:
            keys.apply(sock)
        else:
            sock.plain_server = True
        sock.bind(endpoint)
        return sock

    def close(self) -> None:
        # Tell actors that said hello that the run is over, so they stop instead of waiting for acks.
        for identity, sock in self.remote_peers.items():
            try:
                sock.send_multipart([identity, pack({"type": "closing"})], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        self.rejections.flush()
        self.ringer.close()
        if self.bell is not None:
            self.bell.close()
        for sock in self.sockets:
            sock.close(linger=500 if self.remote_peers else 0)
        self.zap.stop()
        self.ctx.term()

    # -- main loop ------------------------------------------------------------
    def paused(self) -> bool:
        if self.policy is None or self.counters.draining:
            return False
        return self.policy.inserts_paused(self.counters.min_inserts(), self.counters.updates)

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        next_accounting = time.monotonic() + self.cfg.accounting_period_s
        next_stall_warning = None
        while True:
            self.counters.beat(REPLAY)
            self.maybe_write_part()
            now = time.monotonic()
            if now >= next_accounting:
                self.log_accounting("accounting")
                self.rejections.flush()
                next_accounting = now + self.cfg.accounting_period_s
            if self.paused():
                if self.counters.inserts_paused_since == 0:
                    self.counters.inserts_paused_since = time.time()
                    next_stall_warning = now + self.cfg.stall_warning_s
                elif now >= next_stall_warning:
                    self.log.warning(
                        "stalled",
                        side=LEARNER,
                        detail="inserts paused: the learner lags the ratio",
                        paused_s=round(time.time() - self.counters.inserts_paused_since, 1),
                        updates=self.counters.updates,
                        target=self.policy.target(self.counters.min_inserts()),
                    )
                    next_stall_warning = now + self.cfg.stall_warning_s
                if self.bell is not None:
                    self.bell.wait(0.2)  # short: actors' checkpoint parts do not ring this bell
                continue
            self.counters.inserts_paused_since = 0
            ready = [sock for sock, _ in poller.poll(1000)]
            # Handle what is queued, one message per socket in turn (fair to remote actors),
            # re-checking the limiter and the checkpoint before each message.
            while ready and not self.paused():
                for sock in list(ready):
                    self.maybe_write_part()
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        ready.remove(sock)
                        continue
                    self.handle(sock, frames)
                    if self.paused():
                        break

    def handle(self, sock: zmq.Socket, frames: list) -> None:
        identity, body = frames[0], frames[1:]
        peer = "?"
        try:
            peer = authenticated_peer(frames)
            if not body:
                raise ProtocolError("empty message")
            header = decode_header(body[0])
            kind = header["type"]
            remote = sock is self.remote_socket
            if kind == "insert":
                slot = self.sender_slot(peer, header["actor"], remote)
                reply = self.insert(slot, decode_insert(header, body[1:], self.spec))
            elif kind == "hello":
                if not remote:
                    raise ProtocolError("hello is for remote actors; local actors are known by their login")
                reply = self.hello(peer, header["actor"])
                self.remote_peers[bytes(identity.bytes)] = sock
            else:
                slot = self.sender_slot(peer, header["actor"], remote)
                reply = self.report(slot, header)
        except ProtocolError as error:
            return self.refuse(sock, identity, peer, error)
        except Exception as error:  # a bug of ours must not let one message stop the run
            self.log.exception("handling_failed", peer=peer)
            return self.refuse(sock, identity, peer, ProtocolError(f"internal error: {type(error).__name__}"))
        sock.send_multipart([identity, pack(reply)])

    # -- who is sending ------------------------------------------------------------
    def sender_slot(self, peer: str, actor: str, remote: bool) -> int:
        """The actor slot of an authenticated sender; its messages must name it."""
        if remote:
            slot = self.slots.get(f"{peer}/{actor}")
            if slot is None:
                raise ProtocolError(f"actor {actor!r} of {peer} has not said hello")
            return slot
        if peer != f"local/{actor}":
            raise ProtocolError(f"actor field {actor!r} is not this connection's login ({peer})")
        slot = actor_slot(actor)
        if slot is None or actor != actor_name(slot) or not 0 <= slot < LOCAL_ACTOR_SLOTS:
            raise ProtocolError(f"{actor!r} is not a local actor of this run")
        if slot not in self.slots.values():
            self.counters.set_slot_identity(slot, f"local/{actor}")
            self.slots[f"local/{actor}"] = slot
        return slot

    def hello(self, peer: str, actor: str) -> dict:
        identity = f"{peer}/{actor}"
        if identity not in self.slots:
            held = sum(1 for k in self.slots if k.startswith(peer + "/"))
            if held >= MAX_SLOTS_PER_KEY:
                raise ProtocolError(f"quota: key {peer} already holds {held} actor slots (at most {MAX_SLOTS_PER_KEY})")
            free = [s for s in range(LOCAL_ACTOR_SLOTS, ACTOR_SLOTS) if self.counters.slot_state[s] == FREE]
            if not free:
                raise ProtocolError(f"quota: no remote actor slot left ({ACTOR_SLOTS - LOCAL_ACTOR_SLOTS} per run)")
            slot = free[0]
            self.counters.set_slot_identity(slot, identity)
            self.counters.slot_state[slot] = REMOTE
            self.slots[identity] = slot
            self.log.info("actor_joined", actor=actor, peer=peer, slot=slot)
        return {"type": "welcome", "run": self.cfg.run_info, "slot": self.slots[identity]}

    # -- inserts -------------------------------------------------------------------------
    def insert(self, slot: int, msg) -> dict:
        c, m, n = self.counters, msg.member, msg.count
        c.received[m] += n
        below = int(c.seq_below[slot])
        if seq_seen(below, c.seq_window[slot], msg.seq):
            c.duplicates[m] += n
            return {"type": "ack", "seq": msg.seq, "status": "duplicate"}
        if msg.seq >= below + SEQ_WINDOW:
            raise ProtocolError(
                f"quota: seq {msg.seq} is more than {SEQ_WINDOW} messages ahead of the oldest unstored one ({below})",
                seq=msg.seq,
            )
        with self.stop.deferred():
            written = int(self.store.total_written()[m])
            c.journal[:] = (1, slot, m, msg.seq, n, written, c.stored[m], c.stored_by_actor[slot, m])
            self.paused_here("journal_written")
            self.store.add(m, msg.obs, msg.action, msg.reward, msg.next_obs, msg.terminal)
            self.paused_here("data_written")
            commit(c, self.store)
        self.ringer.ring()
        return {"type": "ack", "seq": msg.seq, "status": "stored"}

    def paused_here(self, point: str) -> None:
        """The tests' hook into the commit window: with PAUSE_IN_COMMIT_ENV=point the service stops itself
        (SIGSTOP) there, so a test can SIGKILL it at exactly that point."""
        if self.pause_in_commit == point:
            os.kill(os.getpid(), signal.SIGSTOP)

    def report(self, slot: int, header: dict) -> dict:
        """A remote actor's claim of what it sent: recorded as a claim if plausible, never as an observation."""
        sent = header.get("sent")
        if not (
            isinstance(sent, list)
            and len(sent) == self.cfg.members
            and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= INT64_MAX for x in sent)
        ):
            raise ProtocolError(f"sent must list {self.cfg.members} integers in [0, 2^63), one per member")
        claims = np.array(sent, np.int64)
        if (claims < self.counters.sent[slot]).any():
            raise ProtocolError("sent: a claim may not go down")
        # At most what arrived plus what can be in flight (its window of messages).
        arrived = self.counters.stored_by_actor[slot]
        bound = arrived + 2 * RCVHWM * MAX_TRANSITIONS_PER_MESSAGE
        if (claims > bound).any():
            raise ProtocolError(
                f"sent: claims {claims.tolist()} exceed what arrived ({arrived.tolist()}) plus a window"
            )
        self.counters.sent[slot] = claims
        return {"type": "reported"}

    def refuse(self, sock: zmq.Socket, identity, peer: str, error: ProtocolError) -> None:
        member = error.member if error.member is not None else self.cfg.members
        self.counters.rejected_transitions[member] += error.count
        self.counters.rejected_messages[0] += 1
        self.rejections.record(peer, error)
        sock.send_multipart([identity, pack({"type": "error", "seq": error.seq, "error": error.reason})])

    def log_accounting(self, event: str) -> None:
        self.log.info(
            event,
            **self.counters.accounting(),
            per_member=self.counters.per_member(),
            paused=bool(self.counters.inserts_paused_since),
            zap_refused=self.zap.refused,
        )

    # -- checkpoints -----------------------------------------------------------------------
    def maybe_write_part(self) -> None:
        """Write the replay part of the announced cut once every live local actor has written its own."""
        c = self.counters
        cut = c.cut_id
        if self.cfg.checkpoints is None or cut <= self.last_part:
            return
        live = c.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE
        if (c.actor_cut[:LOCAL_ACTOR_SLOTS][live] < cut).any():
            return
        with self.stop.deferred():
            arrays = {f"store.{k}": v for k, v in self.store.segment.arrays.items()}
            arrays.update({f"counters.{k}": v for k, v in c.segment.arrays.items()})
            live_actors = np.flatnonzero(live).tolist()  # their parts belong to this cut
            info = checkpoints.write_part(
                checkpoints.cut_dir(self.cfg.checkpoints, cut), REPLAY, arrays, {"live_actors": live_actors}
            )
            self.last_part = cut
            c.part_done[process_slot(REPLAY)] = cut
        self.log.info("checkpoint_part", part=REPLAY, updates=cut, bytes=info["bytes"], seconds=info["seconds"])


PAUSE_IN_COMMIT_ENV = "MBGEN_TEST_PAUSE_IN_COMMIT"  # journal_written | data_written (ReplayService.paused_here)


def commit(c: RunCounters, store: ReplayStore) -> None:
    """Finish (or redo) the insert recorded in the journal: publish, mark its sequence, count it, clear.

    Every step sets absolute values from the journal, so running it twice is the same as once.
    """
    _, slot, member, seq, count, _, stored_before, by_before = (int(x) for x in c.journal)
    c.seq_below[slot] = seq_mark(int(c.seq_below[slot]), c.seq_window[slot], seq)
    c.stored[member] = stored_before + count
    c.stored_by_actor[slot, member] = by_before + count
    c.journal[0] = 0


def recover(c: RunCounters, store: ReplayStore, log) -> None:
    """Complete or roll back the insert a killed service was committing (see the module docstring)."""
    if not c.journal[0]:
        return
    _, slot, member, seq, count, written_before, _, _ = (int(x) for x in c.journal)
    if int(store.total_written()[member]) == written_before + count:
        commit(c, store)  # the data was published: finish the bookkeeping
        log.warning("journal_completed", slot=slot, member=member, seq=seq, count=count)
    else:
        store.rollback(member, written_before)  # the data never became visible: as if never received
        c.journal[0] = 0
        log.warning("journal_rolled_back", slot=slot, member=member, seq=seq, count=count)


def authenticated_peer(frames: list) -> str:
    """The ZAP user id of a received message: who the sender proved to be."""
    try:
        return frames[-1].get("User-Id")
    except (zmq.ZMQError, AttributeError, KeyError):
        raise ProtocolError("unauthenticated connection") from None


class ReplayRole:
    """The replay service as a process role (runtime/runner.py): its memory, created (owns_memory) or
    attached (a supervised run, where a restarted service completes or rolls back the insert its
    predecessor was committing), then the service until stopped."""

    def __init__(self, cfg: ServiceConfig, stop: StopSignal, ready=None):
        self.cfg, self.ready, self.log = cfg, ready, get_logger()
        self.store = self.counters = self.service = None
        try:
            if cfg.owns_memory:
                self.store = ReplayStore.create(
                    cfg.store_name, cfg.members, cfg.obs_dim, cfg.num_actions, cfg.capacity
                )
                self.counters = RunCounters.create(cfg.counters_name, cfg.members)
            else:
                self.store, self.counters = ReplayStore.attach(cfg.store_name), RunCounters.attach(cfg.counters_name)
                recover(self.counters, self.store, self.log)
            self.service = ReplayService(cfg, self.store, self.counters, stop)
        except BaseException:
            self.close()
            raise

    def run(self) -> None:
        cfg, store = self.cfg, self.store
        self.log.info(
            "replay_started",
            endpoint=cfg.endpoint,
            remote_endpoint=cfg.remote_endpoint,
            members=cfg.members,
            capacity=cfg.capacity,
            store_bytes=store.segment.nbytes,
            curve=bool(cfg.keys_dir),
            attached=not cfg.owns_memory,
            stored=int(self.counters.stored.sum()),
        )
        if self.ready is not None:
            self.ready.set()
        self.service.run()

    def on_stop(self) -> None:
        pass  # the store and counters outlive the service in a supervised run; a checkpoint is the learner's call

    def close(self) -> None:
        if self.service is not None:
            self.service.log_accounting("final_accounting")
            self.service.close()
        for segment in (self.store, self.counters):
            if segment is not None:
                segment.close()
        self.log.info("replay_stopped")


def serve(config: dict, ready=None) -> None:
    """Process entry point: the replay service through the role runner every process uses."""
    cfg = ServiceConfig(**config)
    run_role(REPLAY, cfg.log_path, lambda stop: ReplayRole(cfg, stop, ready), supervised=cfg.managed)


def start(cfg: ServiceConfig, timeout_s: float = 60.0):
    """Start the service in a spawned process and wait until it serves; returns the process."""
    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    ready = mp.Event()
    process = mp.Process(target=serve, args=(cfg.to_dict(), ready), name="mbgen-replay")
    process.start()
    deadline = time.monotonic() + timeout_s
    while not ready.wait(0.1):
        if not process.is_alive() or time.monotonic() > deadline:
            process.kill()
            process.join()
            raise RuntimeError(f"the replay service did not start (exit code {process.exitcode})")
    return process
