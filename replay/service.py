"""The replay ingest service: a ROUTER socket in front of the shared-memory ReplayStore.

It validates each message, writes good transitions, acknowledges, and drops
duplicates by (actor, sequence). When the learner lags the ratio by more than
the tolerance it stops reading its socket, so ZeroMQ's high-water marks push
back on the actors.

Who may send. The local endpoint is an ipc path in the run's private
directory; a peer logs in with its per-run token (PLAIN, libzmq, checked by the
ZAP handler in runtime/security.py) and is bound to that actor id. The remote
endpoint is our own ZMTP 3.0 CURVE server (runtime/zmtp.py): a peer needs a key
from the authorised directory, and is known as that key plus the name it gives.
A remote message is answered on the connection it came on (the service, not the
client, chooses routes: nothing can be handed over). A message whose `actor`
field is not its sender's authenticated identity is refused.

Remote slots. A key may hold at most MAX_SLOTS_PER_KEY slots, and beyond its
fair share (the remote slots divided among the authorised keys) only while every
other key could still get its share. A slot is released when no connection has
carried its actor for `remote_slot_grace_s` (a disconnect, or a connection idle
past `remote_idle_timeout_s`); the same actor saying hello again gets it back,
another actor gets it only once the free ones are gone, and then the slot's
accounting is folded into the retired totals (RunCounters.retire). Every hello
starts a new incarnation: its claims start from zero (the old ones are retired)
and its welcome says which sequence number to continue from.

What is bounded. Local: frames larger than a valid message disconnect their
peer (ZMQ_MAXMSGSIZE), each peer has at most RCVHWM messages queued. Remote: a
frame over the size limit, a message of more than MAX_FRAMES frames or more
bytes than a valid message is a disconnect before its body is read; each
connection holds at most one message; connections per key and handshakes in
progress are limited (runtime/zmtp.py Limits). Counters are validated as the
int64 they are stored in; rewards must lie in the environment's declared
range. Refusals are counted (messages, and transitions only where the arrays
were well formed, also per actor slot) and logged at most once per peer and
reason per interval, with a count.

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
from zmq.utils import z85
from mbgen.replay.limiter import RatioPolicy
from mbgen.replay.protocol import (
    INT64_MAX,
    MAX_TRANSITIONS_PER_MESSAGE,
    ProtocolError,
    StoreSpec,
    decode_header,
    decode_insert,
    max_frame_bytes,
    max_message_bytes,
    pack,
)
from mbgen.replay.store import DEFAULT_CAPACITY, ReplayStore
from mbgen.runtime import checkpoints
from mbgen.runtime.counters import FREE, LIVE, RELEASED, REMOTE, SEQ_WINDOW, RunCounters
from mbgen.runtime.doorbell import Doorbell, Ringer
from mbgen.runtime.lifecycle import StopSignal
from mbgen.runtime.logs import get_logger
from mbgen.runtime.roles import ACTOR_SLOTS, LEARNER, LOCAL_ACTOR_SLOTS, REPLAY, actor_name, actor_slot, process_slot
from mbgen.runtime.runner import run_role
from mbgen.runtime.security import (
    LOCAL_DOMAIN,
    LocalCredentials,
    ServerKeys,
    ZapHandler,
    authorized_keys,
    check_bind,
    check_private_endpoint,
    key_name,
)
from mbgen.runtime.zmtp import CurveServer, Limits
from mbgen.runtime.shm import segment_name
from mbgen.runtime.wiring import COUNTERS_SEGMENT, STORE_SEGMENT

RCVHWM = 64  # messages queued per peer before ZeroMQ stops reading its connection
MAX_SLOTS_PER_KEY = 8  # remote actor slots one authorised key may hold (and at most its fair share, see take_slot)
MAX_FRAMES = 16  # frames per remote message (a valid one has 6); more is a disconnect before they are read
MAX_CONNECTIONS_PER_KEY = 10  # remote connections one key may hold at once (its 8 actors, and room to reconnect)
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
    remote_slot_grace_s: float = 10.0  # a remote actor no connection carried this long loses its slot
    remote_idle_timeout_s: float = 300.0  # a remote connection that sends nothing this long is closed

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
        self.slots = counters.identities()  # identity -> actor slot (survives a restart)
        self.current_slot: int | None = None  # the slot of the message being handled (for per-slot refusals)
        # remote actors' connections: identity -> connections that carried it; when the last one closed
        self.actor_conns: dict[str, set] = defaultdict(set)
        self.conn_actors: dict[Any, set] = defaultdict(set)
        self.unheld_since: dict[str, float] = {}
        self.released_order: dict[int, float] = {}  # slot -> when released (the longest released is reused first)
        now = time.monotonic()  # a restarted service: remote actors not heard from within the grace period go
        for identity, slot in self.slots.items():
            if counters.slot_state[slot] == REMOTE:
                self.unheld_since[identity] = now
        self.last_part = counters.part_done[process_slot(REPLAY)]
        check_private_endpoint(cfg.endpoint)
        self.ctx = zmq.Context()
        keys = None
        if cfg.remote_endpoint:
            keys = ServerKeys.load(cfg.keys_dir) if cfg.keys_dir else None
            check_bind(cfg.remote_endpoint, keys)
        self.zap = ZapHandler(self.ctx, LocalCredentials(cfg.credentials), None)
        self.max_frame = max_frame_bytes(cfg.obs_dim)
        self.sockets = [self._router(cfg.endpoint, LOCAL_DOMAIN, None)]
        self.authorized_dir = keys.authorized_dir if keys else None
        self.remote: CurveServer | None = None
        if cfg.remote_endpoint:
            if keys is None:  # even on loopback: the remote endpoint only speaks CURVE
                raise ValueError(f"the remote endpoint {cfg.remote_endpoint} needs CurveZMQ keys (`mbgen keys DIR`)")
            self.remote = CurveServer(
                cfg.remote_endpoint,
                z85.decode(keys.public),
                z85.decode(keys.secret),
                self.authorize,
                remote_limits(cfg.obs_dim, cfg.remote_idle_timeout_s),
                self.log,
            )
        self.bell = Doorbell(self.ctx, cfg.bell) if cfg.bell else None
        self.ringer = Ringer(self.ctx, cfg.ring_on_insert)

    def authorize(self, public: bytes) -> str | None:
        """The peer name of an authorised CURVE public key ("key/<file stem>"), or None."""
        name = key_name(public, self.authorized_dir) if self.authorized_dir else None
        return None if name is None else f"key/{name}"

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
        # Tell remote actors that the run is over, so they stop instead of waiting for acks.
        if self.remote is not None:
            self.remote.shutdown([pack({"type": "closing"})])
            self.release_gone_actors(force=True)
        self.rejections.flush()
        self.ringer.close()
        if self.bell is not None:
            self.bell.close()
        for sock in self.sockets:
            sock.close(linger=0)
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
        if self.remote is not None:
            poller.register(self.remote.fileno(), zmq.POLLIN)
        was_paused = False
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
            self.release_gone_actors()
            if self.paused():
                was_paused = True
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
            if was_paused and self.remote is not None:
                self.remote.touch()  # we did not read: nobody was idle
            was_paused = False
            poller.poll(1000)
            # Handle what is queued, one message per endpoint in turn (and the remote endpoint takes its
            # connections in turn: fair to remote actors), re-checking the limiter and the checkpoint
            # before each message.
            ready = list(self.sockets) + ([self.remote] if self.remote is not None else [])
            while ready and not self.paused():
                for source in list(ready):
                    self.maybe_write_part()
                    if source is self.remote:
                        got = self.remote.recv()
                        self.note_closed()
                        if got is None:
                            ready.remove(source)
                            continue
                        self.handle_remote(*got)
                    else:
                        try:
                            frames = source.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            ready.remove(source)
                            continue
                        self.handle(source, frames)
                    if self.paused():
                        break

    def handle(self, sock: zmq.Socket, frames: list) -> None:
        """A local message: [routing id, body...], its sender known by its PLAIN login."""
        identity = frames[0]
        try:
            peer = authenticated_peer(frames)
        except ProtocolError as error:
            reply = self.refuse("?", error)
        else:
            reply = self.answer(peer, frames[1:], None)
        sock.send_multipart([identity, pack(reply)])

    def handle_remote(self, conn, frames: list) -> None:
        """A remote message, from a connection bound to the key it proved; answered on that connection."""
        conn.send([pack(self.answer(conn.peer, frames, conn))])

    def answer(self, peer: str, body: list, conn) -> dict:
        """The reply to one message (an error reply when it is refused)."""
        self.current_slot = None
        try:
            if not body:
                raise ProtocolError("empty message")
            header = decode_header(body[0])
            kind = header["type"]
            if kind == "insert":
                slot = self.sender_slot(peer, header["actor"], conn)
                return self.insert(slot, decode_insert(header, body[1:], self.spec))
            if kind == "hello":
                if conn is None:
                    raise ProtocolError("hello is for remote actors; local actors are known by their login")
                return self.hello(peer, header["actor"], conn)
            slot = self.sender_slot(peer, header["actor"], conn)
            return self.report(slot, header)
        except ProtocolError as error:
            return self.refuse(peer, error)
        except Exception as error:  # a bug of ours must not let one message stop the run
            self.log.exception("handling_failed", peer=peer)
            return self.refuse(peer, ProtocolError(f"internal error: {type(error).__name__}"))

    # -- who is sending ------------------------------------------------------------
    def sender_slot(self, peer: str, actor: str, conn) -> int:
        """The actor slot of an authenticated sender; its messages must name it."""
        if conn is not None:
            identity = f"{peer}/{actor}"
            slot = self.slots.get(identity)
            if slot is None:
                raise ProtocolError(f"actor {actor!r} of {peer} has not said hello")
            if self.counters.slot_state[slot] == RELEASED:  # back after its grace period, without a hello
                self.take_slot(peer, identity, slot)
            self.carry(identity, conn)
            self.current_slot = slot
            return slot
        if peer != f"local/{actor}":
            raise ProtocolError(f"actor field {actor!r} is not this connection's login ({peer})")
        slot = actor_slot(actor)
        if slot is None or actor != actor_name(slot) or not 0 <= slot < LOCAL_ACTOR_SLOTS:
            raise ProtocolError(f"{actor!r} is not a local actor of this run")
        if slot not in self.slots.values():
            self.counters.set_slot_identity(slot, f"local/{actor}")
            self.slots[f"local/{actor}"] = slot
        self.current_slot = slot
        return slot

    def hello(self, peer: str, actor: str, conn) -> dict:
        """A remote actor (re)starts: its slot (its own released one if still there), a fresh incarnation
        of its accounting, and the sequence number to continue from."""
        identity = f"{peer}/{actor}"
        c = self.counters
        slot = self.slots.get(identity)
        if slot is None or c.slot_state[slot] != REMOTE:
            slot = self.take_slot(peer, identity, slot)
        if c.sent[slot].any() or c.stored_by_actor[slot].any() or c.refused_by_actor[slot].any():
            c.retire(slot)  # the previous incarnation's claims: kept in the totals, not in this one's
        self.carry(identity, conn)
        self.log.info("actor_joined", actor=actor, peer=peer, slot=slot)
        return {"type": "welcome", "run": self.cfg.run_info, "slot": slot, "first_seq": next_unseen(c, slot)}

    # -- remote slots ----------------------------------------------------------------
    def take_slot(self, peer: str, identity: str, own: int | None) -> int:
        """A slot for `identity` of key `peer`: its own released one, else a free one, else the longest
        released one of another actor (whose accounting is retired); within the key's quota."""
        c = self.counters
        remote = range(LOCAL_ACTOR_SLOTS, ACTOR_SLOTS)
        held: dict[str, int] = defaultdict(int)
        for s in remote:
            if c.slot_state[s] == REMOTE:
                held[c.slot_identity(s).rsplit("/", 1)[0]] += 1
        mine = held.get(peer, 0)
        if mine >= MAX_SLOTS_PER_KEY:
            raise ProtocolError(f"quota: key {peer} already holds {mine} actor slots (at most {MAX_SLOTS_PER_KEY})")
        available = [s for s in remote if c.slot_state[s] in (FREE, RELEASED)]
        if not available:
            raise ProtocolError(f"quota: no remote actor slot left ({len(remote)} per run)")
        keys = {f"key/{k}" for k in authorized_keys(self.authorized_dir)} | set(held) | {peer}
        share = max(1, len(remote) // len(keys))
        reserve = sum(max(0, share - held.get(k, 0)) for k in keys if k != peer)
        if mine >= share and len(available) - 1 < reserve:
            raise ProtocolError(
                f"quota: key {peer} holds {mine} actor slots, its fair share of {len(remote)} among {len(keys)} keys "
                f"is {share}, and the {len(available)} left are kept for the other keys"
            )
        if own is not None and c.slot_state[own] == RELEASED:
            slot = own
        else:
            free = [s for s in available if c.slot_state[s] == FREE and not c.identity[s, 0]]
            if free:
                slot = free[0]
            else:
                slot = min(available, key=lambda s: self.released_order.get(s, 0.0))
                previous = c.slot_identity(slot)
                c.retire(slot)
                c.seq_below[slot] = 0
                c.seq_window[slot] = 0
                self.slots.pop(previous, None)
                self.log.info("slot_reused", slot=slot, previous=previous, actor=identity)
            c.set_slot_identity(slot, identity)
            self.slots[identity] = slot
        c.slot_state[slot] = REMOTE
        self.unheld_since.pop(identity, None)
        return slot

    def carry(self, identity: str, conn) -> None:
        """`conn` carries `identity`'s messages (its slot is held while some connection does)."""
        if conn not in self.actor_conns[identity]:
            self.actor_conns[identity].add(conn)
            self.conn_actors[conn].add(identity)
        self.unheld_since.pop(identity, None)

    def note_closed(self) -> None:
        if self.remote is None:
            return
        now = time.monotonic()
        for conn in self.remote.closed():
            for identity in self.conn_actors.pop(conn, ()):
                conns = self.actor_conns.get(identity)
                if conns is not None:
                    conns.discard(conn)
                    if not conns:
                        del self.actor_conns[identity]
                        self.unheld_since[identity] = now

    def release_gone_actors(self, force: bool = False) -> None:
        """Release the slots of remote actors no connection carried for the grace period (all, at the end)."""
        self.note_closed()
        now = time.monotonic()
        if force:
            for identity in list(self.actor_conns):
                self.unheld_since[identity] = now - self.cfg.remote_slot_grace_s
            self.actor_conns.clear()
            self.conn_actors.clear()
        for identity, since in list(self.unheld_since.items()):
            if now - since < self.cfg.remote_slot_grace_s:
                continue
            del self.unheld_since[identity]
            slot = self.slots.get(identity)
            if slot is not None and self.counters.slot_state[slot] == REMOTE:
                self.counters.slot_state[slot] = RELEASED
                self.released_order[slot] = now
                a = self.counters.slot_accounting(slot)
                self.log.info(
                    "actor_released",
                    actor=identity,
                    slot=slot,
                    claimed=a["claimed"],
                    stored=a["stored"],
                    refused=a["refused"],
                    lost_in_flight=a["lost_in_flight"],
                    unexplained=a["unexplained"],
                )

    # -- inserts -------------------------------------------------------------------------
    def insert(self, slot: int, msg) -> dict:
        c, m, n = self.counters, msg.member, msg.count
        c.received[m] += n
        c.largest_message[slot] = max(int(c.largest_message[slot]), n)
        below = int(c.seq_below[slot])
        if seq_seen(below, c.seq_window[slot], msg.seq):
            c.duplicates[m] += n
            c.duplicates_by_actor[slot, m] += n
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
        arrived = self.counters.stored_by_actor[slot] + self.counters.refused_by_actor[slot]
        bound = arrived + 2 * RCVHWM * MAX_TRANSITIONS_PER_MESSAGE
        if (claims > bound).any():
            raise ProtocolError(
                f"sent: claims {claims.tolist()} exceed what arrived ({arrived.tolist()}) plus a window"
            )
        self.counters.sent[slot] = claims
        return {"type": "reported"}

    def refuse(self, peer: str, error: ProtocolError) -> dict:
        member = error.member if error.member is not None else self.cfg.members
        self.counters.rejected_transitions[member] += error.count
        self.counters.rejected_messages[0] += 1
        if self.current_slot is not None and error.count and error.member is not None:
            self.counters.refused_by_actor[self.current_slot, error.member] += error.count
        self.rejections.record(peer, error)
        return {"type": "error", "seq": error.seq, "error": error.reason}

    def log_accounting(self, event: str) -> None:
        self.log.info(
            event,
            **self.counters.accounting(),
            per_member=self.counters.per_member(),
            paused=bool(self.counters.inserts_paused_since),
            zap_refused=self.zap.refused + (self.remote.refused if self.remote is not None else 0),
            remote_dropped=self.remote.dropped if self.remote is not None else 0,
            remote_slots=[a for a in self.counters.per_slot() if a["slot"] >= LOCAL_ACTOR_SLOTS],
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


def next_unseen(c: RunCounters, slot: int) -> int:
    """One past the highest sequence number the slot stored: where a restarted actor continues."""
    below = int(c.seq_below[slot])
    marked = np.flatnonzero(c.seq_window[slot])
    if marked.size == 0:
        return below
    return below + int(max((int(i) - below) % SEQ_WINDOW for i in marked)) + 1


def remote_limits(obs_dim: int, idle_timeout_s: float = 300.0) -> Limits:
    """What one remote connection may send (runtime/zmtp.py): frames no larger than a valid message's
    largest, at most MAX_FRAMES of them and no more bytes than a valid message."""
    return Limits(
        max_frame=max_frame_bytes(obs_dim),
        max_frames=MAX_FRAMES,
        max_message=max_message_bytes(obs_dim),
        max_per_key=MAX_CONNECTIONS_PER_KEY,
        idle_timeout_s=idle_timeout_s,
    )


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
