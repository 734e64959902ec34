"""The replay ingest service: a ROUTER socket in front of the shared-memory ReplayStore.

It owns the store and the run's counters (creates them, unlinks them on every
exit path), validates each message, writes good transitions, acknowledges, and
drops duplicates by (actor, sequence). When the learner lags the ratio by more
than the tolerance it stops reading its socket, so ZeroMQ's high-water marks
push back on the actors.

Run it in its own process with `serve(config_dict)`; `ServiceConfig` documents
the keys.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import zmq

from replay.counters import ACTOR_SLOTS, RunCounters
from replay.limiter import RatioPolicy
from replay.protocol import ProtocolError, StoreSpec, decode_header, decode_insert, pack
from replay.runtime.doorbell import Doorbell, Ringer
from replay.runtime.lifecycle import StopRequested, StopSignal, die_with_parent
from replay.runtime.logs import configure_logging, get_logger
from replay.runtime.wiring import COUNTERS_SEGMENT, STORE_SEGMENT
from replay.security import ServerKeys, check_bind, endpoint_is_local, start_authenticator
from replay.shm import segment_name
from replay.store import DEFAULT_CAPACITY, ReplayStore

# Bounds what one garbage message can make the service allocate.
MAX_MESSAGE_BYTES = 256 << 20


@dataclass
class ServiceConfig:
    run_id: str  # names the shared-memory segments
    endpoint: str  # where local actors connect (ipc:// or loopback tcp://, never encrypted)
    members: int  # population size P
    obs_dim: int  # observation width D
    num_actions: int  # actions are 0..num_actions-1
    capacity: int = DEFAULT_CAPACITY  # transitions kept per member
    ratio: dict | None = None  # RatioPolicy fields; None: no limiter (inserts never pause)
    bell: str | None = None  # this service's doorbell (rung by the learner after updates)
    ring_on_insert: list[str] = field(default_factory=list)  # doorbells to ring after each insert
    remote_endpoint: str | None = None  # where remote actors connect (CurveZMQ when keys_dir is set)
    keys_dir: str | None = None  # CurveZMQ key directory (see replay/security.py)
    run_info: dict[str, Any] = field(default_factory=dict)  # what a remote actor's hello receives
    log_path: str | None = None  # events.jsonl; None: stderr
    heartbeat_slot: int = 0  # this process's slot in RunCounters.heartbeat
    first_remote_slot: int = 0  # actor slots from here on go to actors that say hello
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


class SequenceTracker:
    """Which (actor, sequence) pairs were stored, in O(out-of-order window) memory per actor."""

    def __init__(self) -> None:
        self._below: dict[str, int] = {}  # every seq below this was stored
        self._above: dict[str, set[int]] = {}

    def seen(self, actor: str, seq: int) -> bool:
        return seq < self._below.get(actor, 0) or seq in self._above.get(actor, ())

    def mark(self, actor: str, seq: int) -> None:
        below = self._below.get(actor, 0)
        above = self._above.setdefault(actor, set())
        above.add(seq)
        while below in above:
            above.remove(below)
            below += 1
        self._below[actor] = below


class ReplayService:
    def __init__(self, cfg: ServiceConfig, store: ReplayStore, counters: RunCounters, stop: StopSignal):
        self.cfg = cfg
        self.store = store
        self.counters = counters
        self.stop = stop
        self.spec = StoreSpec(cfg.members, cfg.obs_dim, cfg.num_actions)
        self.policy = RatioPolicy(**cfg.ratio) if cfg.ratio else None
        self.log = get_logger()
        self.sequences = SequenceTracker()
        self.remote_slots: dict[str, int] = {}
        self.remote_peers: dict[bytes, zmq.Socket] = {}  # routing identity -> socket, for the goodbye
        self.ctx = zmq.Context()
        self.auth = None
        if not endpoint_is_local(cfg.endpoint):
            raise ValueError(
                f"endpoint {cfg.endpoint} is for local actors: use ipc:// or loopback tcp://; "
                "remote actors connect to remote_endpoint"
            )
        self.sockets = [self._router(cfg.endpoint, None)]
        if cfg.remote_endpoint:
            keys = ServerKeys.load(cfg.keys_dir) if cfg.keys_dir else None
            check_bind(cfg.remote_endpoint, keys)
            if keys is not None:
                self.auth = start_authenticator(self.ctx, keys)
            self.sockets.append(self._router(cfg.remote_endpoint, keys))
        self.bell = Doorbell(self.ctx, cfg.bell) if cfg.bell else None
        self.ringer = Ringer(self.ctx, cfg.ring_on_insert)

    def _router(self, endpoint: str, keys: ServerKeys | None) -> zmq.Socket:
        sock = self.ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a reconnecting actor keeps its identity
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sock.setsockopt(zmq.RCVHWM, 64)
        if keys is not None:
            keys.apply(sock)
        sock.bind(endpoint)
        return sock

    def close(self) -> None:
        # Tell actors that said hello that the run is over, so they stop instead of waiting for acks.
        for identity, sock in self.remote_peers.items():
            try:
                sock.send_multipart([identity, pack({"type": "closing"})], zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
        self.ringer.close()
        if self.bell is not None:
            self.bell.close()
        for sock in self.sockets:
            sock.close(linger=500 if self.remote_peers else 0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()

    # -- main loop ------------------------------------------------------------
    def paused(self) -> bool:
        return self.policy is not None and self.policy.inserts_paused(
            self.counters.min_inserts(), self.counters.updates
        )

    def run(self) -> None:
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLIN)
        next_accounting = time.monotonic() + self.cfg.accounting_period_s
        next_stall_warning = None
        while True:
            self.counters.beat(self.cfg.heartbeat_slot)
            now = time.monotonic()
            if now >= next_accounting:
                self.log_accounting("accounting")
                next_accounting = now + self.cfg.accounting_period_s
            if self.paused():
                if self.counters.inserts_paused_since == 0:
                    self.counters.inserts_paused_since = time.time()
                    next_stall_warning = now + self.cfg.stall_warning_s
                elif now >= next_stall_warning:
                    self.log.warning(
                        "stalled",
                        side="learner",
                        detail="inserts paused: the learner lags the ratio",
                        paused_s=round(time.time() - self.counters.inserts_paused_since, 1),
                        updates=self.counters.updates,
                        target=self.policy.target(self.counters.min_inserts()),
                    )
                    next_stall_warning = now + self.cfg.stall_warning_s
                if self.bell is not None:
                    self.bell.wait(1.0)
                continue
            self.counters.inserts_paused_since = 0
            ready = [sock for sock, _ in poller.poll(1000)]
            # Handle what is queued, one message per socket in turn (fair to remote actors),
            # re-checking the limiter before each message.
            while ready and not self.paused():
                for sock in list(ready):
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
        if not body:
            return self.refuse(sock, identity, ProtocolError("empty message"))
        try:
            header = decode_header(body[0])
            kind = header["type"]
            if kind == "insert":
                reply = self.insert(decode_insert(header, body[1:], self.spec))
            elif kind == "hello":
                reply = self.hello(header)
                self.remote_peers[bytes(identity.bytes)] = sock
            else:
                reply = self.report(header)
        except ProtocolError as error:
            return self.refuse(sock, identity, error)
        sock.send_multipart([identity, pack(reply)])

    def insert(self, msg) -> dict:
        m, n = msg.member, msg.count
        self.counters.received[m] += n
        if self.sequences.seen(msg.actor, msg.seq):
            self.counters.duplicates[m] += n
            self.log.info("duplicate", actor=msg.actor, seq=msg.seq, member=m, count=n)
            return {"type": "ack", "seq": msg.seq, "status": "duplicate"}
        with self.stop.deferred():
            self.store.add(m, msg.obs, msg.action, msg.reward, msg.next_obs, msg.terminal)
            self.sequences.mark(msg.actor, msg.seq)
            self.counters.stored[m] += n
        self.ringer.ring()
        return {"type": "ack", "seq": msg.seq, "status": "stored"}

    def hello(self, header: dict) -> dict:
        actor = header["actor"]
        if actor not in self.remote_slots:
            slot = self.cfg.first_remote_slot + len(self.remote_slots)
            if slot >= ACTOR_SLOTS:
                raise ProtocolError(f"no actor slot left: at most {ACTOR_SLOTS} actors per run")
            self.remote_slots[actor] = slot
            self.log.info("actor_joined", actor=actor, slot=slot)
        return {"type": "welcome", "run": self.cfg.run_info, "slot": self.remote_slots[actor]}

    def report(self, header: dict) -> dict:
        actor, sent = header["actor"], header.get("sent")
        if actor not in self.remote_slots:
            raise ProtocolError(f"report from actor {actor!r} before its hello")
        if not (
            isinstance(sent, list)
            and len(sent) == self.cfg.members
            and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in sent)
        ):
            raise ProtocolError(f"sent must list {self.cfg.members} non-negative integers, one per member")
        self.counters.sent[self.remote_slots[actor]] = sent
        return {"type": "reported"}

    def refuse(self, sock: zmq.Socket, identity, error: ProtocolError) -> None:
        member = error.member if error.member is not None else self.cfg.members
        self.counters.rejected[member] += error.count
        self.counters.rejected_messages[0] += 1
        self.log.warning("rejected", error=error.reason, seq=error.seq, member=error.member, count=error.count)
        sock.send_multipart([identity, pack({"type": "error", "seq": error.seq, "error": error.reason})])

    def log_accounting(self, event: str) -> None:
        self.log.info(
            event,
            **self.counters.accounting(),
            per_member=self.counters.per_member(),
            paused=bool(self.counters.inserts_paused_since),
        )


def serve(config: dict, ready=None) -> None:
    """Process entry point: create the store and counters, serve until stopped, clean up."""
    die_with_parent()
    stop = StopSignal().install()
    cfg = ServiceConfig(**config)
    configure_logging("replay", cfg.log_path)
    log = get_logger()
    store = counters = service = None
    try:
        store = ReplayStore.create(cfg.store_name, cfg.members, cfg.obs_dim, cfg.num_actions, cfg.capacity)
        counters = RunCounters.create(cfg.counters_name, cfg.members)
        service = ReplayService(cfg, store, counters, stop)
        log.info(
            "replay_started",
            endpoint=cfg.endpoint,
            remote_endpoint=cfg.remote_endpoint,
            members=cfg.members,
            capacity=cfg.capacity,
            store_bytes=store.segment.nbytes,
            curve=bool(cfg.keys_dir),
        )
        if ready is not None:
            ready.set()
        service.run()
    except StopRequested:
        pass
    except Exception:
        log.exception("replay_failed")
        raise
    finally:
        if service is not None:
            service.log_accounting("final_accounting")
            service.close()
        for segment in (store, counters):
            if segment is not None:
                segment.close()
        log.info("replay_stopped")
    if stop.exit_code:
        sys.exit(stop.exit_code)


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
