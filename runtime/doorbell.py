"""Doorbells: cross-process wake-ups over ZeroMQ, so that no process polls a counter with sleep.

A waiting process owns one `Doorbell` (a PULL socket bound to an ipc endpoint);
any process that changes something the owner may be waiting for calls
`Ringer.ring()` after publishing the change in shared memory. Rings never
block; the waiter drains every queued ring at once, *before* re-checking the
shared counters, so a change published before a ring is always seen. (A small
send high-water mark would drop rings: ZeroMQ returns pipe credit lazily, so a
ring can be refused although the previous one was already consumed.)

A doorbell is an ipc path in the run's private 0700 directory (no one else can connect) and takes only
rings of at most RING_LIMIT_BYTES: a peer that sends a larger frame is disconnected before it is
buffered (ZMQ_MAXMSGSIZE), so a ring costs its owner at most a small queued message.
"""

from __future__ import annotations

import time
from typing import Callable

import zmq
from mbgen.runtime.logs import get_logger
from mbgen.runtime.security import check_private_endpoint

# A ring is empty; the limit is on every frame a peer sends, the handshake's READY command included
# (about 30 bytes), so it cannot be 0.
RING_LIMIT_BYTES = 256


class Doorbell:
    def __init__(self, ctx: zmq.Context, endpoint: str):
        if not endpoint.startswith("ipc://"):
            raise ValueError(f"doorbell {endpoint}: a doorbell is an ipc:// path in a private directory")
        check_private_endpoint(endpoint)
        self.endpoint = endpoint
        self.socket = ctx.socket(zmq.PULL)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.MAXMSGSIZE, RING_LIMIT_BYTES)  # a larger frame disconnects its sender
        self.socket.bind(endpoint)

    def drain(self) -> None:
        while True:
            try:
                self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                return

    def wait(self, timeout_s: float) -> bool:
        """Block until rung or `timeout_s` passes; True if rung. Signals interrupt the wait."""
        if self.socket.poll(int(timeout_s * 1000)):
            self.drain()
            return True
        return False

    def close(self) -> None:
        self.socket.close(linger=0)


class Ringer:
    """Rings one or more doorbells."""

    def __init__(self, ctx: zmq.Context, endpoints: list[str]):
        self.sockets = []
        for endpoint in endpoints:
            s = ctx.socket(zmq.PUSH)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            self.sockets.append(s)

    def ring(self) -> None:
        for s in self.sockets:
            try:
                s.send(b"", zmq.NOBLOCK)
            except zmq.Again:
                pass  # a thousand wake-ups are already pending (or the owner is gone)

    def close(self) -> None:
        for s in self.sockets:
            s.close(linger=0)
        self.sockets = []


class ActorRinger:
    """Rings the doorbells of the run's live local actors (replacements included), found in the counters."""

    def __init__(self, ctx: zmq.Context, endpoint_of, slot_state, live: int):
        self.ctx, self.endpoint_of, self.slot_state, self.live = ctx, endpoint_of, slot_state, live
        self.ringers: dict[int, Ringer] = {}

    def ring(self) -> None:
        for slot in (self.slot_state == self.live).nonzero()[0].tolist():
            if slot not in self.ringers:
                self.ringers[slot] = Ringer(self.ctx, [self.endpoint_of(slot)])
            self.ringers[slot].ring()

    def close(self) -> None:
        for r in self.ringers.values():
            r.close()
        self.ringers = {}


def wait_until(
    ready: Callable[[], bool],
    bell: Doorbell,
    *,
    heartbeat: Callable[[], None] | None = None,
    stall_warning_s: float = 30.0,
    describe_stall: Callable[[], dict] | None = None,
    slice_s: float = 1.0,
) -> float:
    """Block until `ready()`, waking on `bell`; returns the seconds waited.

    The bell is drained before each check, so a change published before its ring
    is never missed. Every `slice_s` the heartbeat is refreshed; after
    `stall_warning_s` (and each further interval) a warning describes the stall.
    """
    start = time.monotonic()
    next_warning = start + stall_warning_s
    bell.drain()
    while not ready():
        bell.wait(slice_s)
        if heartbeat is not None:
            heartbeat()
        now = time.monotonic()
        if now >= next_warning and not ready():
            get_logger().warning(
                "stalled", waited_s=round(now - start, 1), **(describe_stall() if describe_stall else {})
            )
            next_warning = now + stall_warning_s
    return time.monotonic() - start
