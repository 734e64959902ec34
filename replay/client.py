"""ReplayClient: an actor's connection to the replay service (a DEALER socket).

Messages are numbered per actor and kept until acknowledged. Unacknowledged
messages are sent again after a reconnect, or when the oldest has waited
`resend_after_s` while the service has answered nothing for as long: a service
that still acknowledges (in order) is working through its queue, paused by the
rate limiter, and a copy would only be dropped as a duplicate. The service drops
the copies it already stored. At most
`window` messages are in flight: `send` blocks beyond that, which, together
with the service pausing its reads, is how a lagging learner slows the actors.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import msgpack
import numpy as np
import zmq
from mbgen.envs.base import TRANSITION_FIELDS
from mbgen.replay.protocol import ProtocolError, decode_reply, encode_insert, pack
from mbgen.runtime.logs import get_logger
from mbgen.runtime.security import ClientKeys, apply_local_login
from zmq.utils.monitor import recv_monitor_message


class ReplayRejected(RuntimeError):
    """The service refused a message; the text says why."""


class ReplayUnavailable(RuntimeError):
    """The service did not answer in time."""


class ReplayClosed(RuntimeError):
    """The service said the run is over."""


class ReplayClient:
    def __init__(
        self,
        endpoint: str,
        actor_id: str,
        *,
        window: int = 64,
        resend_after_s: float = 30.0,
        keys: ClientKeys | None = None,
        token: str | None = None,
        ctx: zmq.Context | None = None,
        first_seq: int = 0,
        on_wait=None,
        stall_warning_s: float = 30.0,
    ):
        if window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window}")
        self.endpoint = endpoint
        self.actor_id = actor_id
        self.window = window
        self.resend_after_s = resend_after_s
        self._own_ctx = ctx is None
        self.ctx = ctx or zmq.Context()
        self.socket = self.ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.ROUTING_ID, actor_id.encode())
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SNDHWM, window)
        if keys is not None:  # a remote actor: CurveZMQ with an authorised key
            keys.apply(self.socket)
        elif token is not None:  # a local actor: its per-run login
            apply_local_login(self.socket, actor_id, token)
        self.monitor = self.socket.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        self.socket.connect(endpoint)
        self.poller = zmq.Poller()
        self.poller.register(self.socket, zmq.POLLIN)
        self.poller.register(self.monitor, zmq.POLLIN)
        self.next_seq = first_seq
        self.unacked: OrderedDict[int, tuple[list, float]] = OrderedDict()  # seq -> (frames, last sent)
        self.stored = 0
        self.duplicates = 0
        self.resends = 0
        self._disconnected = False
        self._pending_reply: dict | None = None
        self.on_wait = on_wait  # called while blocked waiting for acknowledgements (heartbeats)
        self.stall_warning_s = stall_warning_s
        self._last_ack = time.monotonic()
        self._next_warning = self._last_ack + stall_warning_s
        self.log = get_logger()

    # -- inserts ----------------------------------------------------------------
    def send(self, member: int, obs, action, reward, next_obs, terminal) -> int:
        """Send one message of transitions for `member`; returns its sequence number."""
        seq = self.next_seq
        self.next_seq += 1
        frames = encode_insert(self.actor_id, seq, member, obs, action, reward, next_obs, terminal)
        self.unacked[seq] = (frames, time.monotonic())
        self.socket.send_multipart(frames, copy=False)
        self.poll(0)
        while len(self.unacked) >= self.window:
            self._wait(1000)
        return seq

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until every message sent so far is acknowledged."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.unacked:
            if deadline is not None and time.monotonic() > deadline:
                raise ReplayUnavailable(f"{len(self.unacked)} messages unacknowledged after {timeout_s}s")
            self._wait(200)

    def _wait(self, timeout_ms: int) -> None:
        self.poll(timeout_ms)
        if self.on_wait is not None:
            self.on_wait()
        now = time.monotonic()
        if self.unacked and now >= self._next_warning and now - self._last_ack >= self.stall_warning_s:
            self.log.warning(
                "stalled",
                side="replay service",
                detail="no acknowledgement (service paused by the rate limiter, gone, or refusing our keys?)",
                endpoint=self.endpoint,
                waited_s=round(now - self._last_ack, 1),
                unacked=len(self.unacked),
            )
            self._next_warning = now + self.stall_warning_s

    def poll(self, timeout_ms: int) -> None:
        """Handle replies and connection events; resend what is due."""
        events = dict(self.poller.poll(timeout_ms))
        if self.monitor in events:
            self._connection_events()
        if self.socket in events:
            while True:
                try:
                    frame = self.socket.recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                self._reply(decode_reply(frame))
        if self.unacked:
            oldest = next(iter(self.unacked.values()))[1]
            if time.monotonic() - max(oldest, self._last_ack) > self.resend_after_s:
                self._resend("timeout")

    def _reply(self, reply: dict) -> None:
        kind = reply.get("type")
        self._last_ack = time.monotonic()
        if kind == "ack":
            if self.unacked.pop(reply.get("seq"), None) is not None:
                if reply.get("status") == "duplicate":
                    self.duplicates += 1
                else:
                    self.stored += 1
        elif kind == "error":
            self.unacked.pop(reply.get("seq"), None)
            raise ReplayRejected(f"replay service refused message {reply.get('seq')}: {reply.get('error')}")
        elif kind == "closing":
            raise ReplayClosed(f"the run at {self.endpoint} has ended ({len(self.unacked)} messages unacknowledged)")
        else:
            self._pending_reply = reply

    def _connection_events(self) -> None:
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event["event"] == zmq.EVENT_DISCONNECTED:
                self._disconnected = True
            elif event["event"] == zmq.EVENT_CONNECTED and self._disconnected:
                self._disconnected = False
                self._resend("reconnect")

    def _resend(self, reason: str) -> None:
        now = time.monotonic()
        self.log.info("resend", reason=reason, messages=len(self.unacked))
        for seq, (frames, _) in list(self.unacked.items()):
            self.unacked[seq] = (frames, now)
            self.socket.send_multipart(frames, copy=False)
            self.resends += 1

    # -- checkpoints ---------------------------------------------------------------
    def outbox(self) -> dict[str, np.ndarray]:
        """The unacknowledged messages and the next sequence number, as arrays (an actor's checkpoint)."""
        out: dict[str, np.ndarray] = {"next_seq": np.array(self.next_seq)}
        seqs, members = [], []
        for i, (seq, (frames, _)) in enumerate(self.unacked.items()):
            seqs.append(seq)
            members.append(msgpack.unpackb(frames[0])["member"])
            for name, array in zip(TRANSITION_FIELDS, frames[1:]):
                out[f"outbox{i}.{name}"] = np.asarray(array)
        out["outbox.seq"], out["outbox.member"] = np.array(seqs, np.int64), np.array(members, np.int64)
        return out

    def restore(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `outbox()`: send every message that was unacknowledged again, same numbers."""
        for i, (seq, member) in enumerate(zip(state["outbox.seq"].tolist(), state["outbox.member"].tolist())):
            arrays = {name: state[f"outbox{i}.{name}"] for name in TRANSITION_FIELDS}
            frames = encode_insert(self.actor_id, seq, member, **arrays)
            self.unacked[seq] = (frames, time.monotonic())
            self.socket.send_multipart(frames, copy=False)
        self.next_seq = int(state["next_seq"])

    # -- requests -----------------------------------------------------------------
    def request(self, message: dict, timeout_s: float = 10.0) -> dict:
        """A hello or report round trip (inserts keep flowing meanwhile)."""
        self._pending_reply = None
        self.socket.send(pack({"actor": self.actor_id, **message}))
        deadline = time.monotonic() + timeout_s
        while self._pending_reply is None:
            if time.monotonic() > deadline:
                raise ReplayUnavailable(f"no answer to {message['type']} from {self.endpoint} within {timeout_s}s")
            try:
                self.poll(100)
            except ProtocolError as error:
                raise ReplayUnavailable(str(error)) from None
        reply, self._pending_reply = self._pending_reply, None
        return reply

    def hello(self, timeout_s: float = 10.0) -> dict:
        return self.request({"type": "hello"}, timeout_s)

    def report(self, sent: list[int], timeout_s: float = 10.0) -> dict:
        return self.request({"type": "report", "sent": [int(x) for x in np.asarray(sent)]}, timeout_s)

    def announce(self, sent: list[int]) -> None:
        """A report sent without waiting for its answer: the claims of a message about to follow (the
        stream is ordered, so the service records them before that message arrives)."""
        self.socket.send(pack({"actor": self.actor_id, "type": "report", "sent": [int(x) for x in sent]}))

    def close(self) -> None:
        self.socket.disable_monitor()
        self.monitor.close(linger=0)
        self.socket.close(linger=0)
        if self._own_ctx:
            self.ctx.term()
