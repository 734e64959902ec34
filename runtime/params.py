"""Versioned parameter blocks: a writer publishes, readers copy a consistent version.

ParamBlock is a seqlock in shared memory: the writer bumps `seq` to odd, copies
the flat parameters (a ParamStore buffer), sets `version`, bumps `seq` to even; a reader copies
and retries if `seq` was odd or changed meanwhile, so no reader ever sees a
half-written version. Readers copy only when the version changed.

ParamPublisher sends versions to remote actors over a ZeroMQ PUB socket (one
msgpack header frame and one raw frame); ParamSubscriber keeps the newest.
"""

from __future__ import annotations

import msgpack
import numpy as np
import torch
import zmq
from mbgen.runtime.security import REMOTE_DOMAIN, ClientKeys, ServerKeys, ZapHandler, check_bind
from mbgen.runtime.shm import Segment


class ParamBlock:
    def __init__(self, segment: Segment):
        self.segment = segment
        self._seq = segment.arrays["seq"]
        self._version = segment.arrays["version"]
        self.data = segment.arrays["data"]
        self.shape = self.data.shape

    @classmethod
    def create(cls, name: str, numel: int, meta: dict | None = None) -> "ParamBlock":
        spec = {"seq": (np.int64, (1,)), "version": (np.int64, (1,)), "data": (np.float32, (numel,))}
        block = cls(Segment.create(name, spec, {"kind": "params", **(meta or {})}))
        block._version[0] = -1  # nothing published yet
        return block

    @classmethod
    def attach(cls, name: str) -> "ParamBlock":
        return cls(Segment.attach(name))

    def close(self) -> None:
        self.segment.close()

    @property
    def version(self) -> int:
        return int(self._version[0])

    def publish(self, flat: torch.Tensor | np.ndarray, version: int) -> None:
        src = flat.detach().cpu().numpy() if isinstance(flat, torch.Tensor) else flat
        self._seq[0] += 1
        np.copyto(self.data, src)
        self._version[0] = version
        self._seq[0] += 1

    def read(self, out: np.ndarray) -> int:
        """Copy the current version into `out`; returns the version (-1: none yet)."""
        while True:
            s1 = int(self._seq[0])
            if s1 % 2:
                continue
            version = int(self._version[0])
            np.copyto(out, self.data)
            if int(self._seq[0]) == s1:
                return version


class ParamReader:
    """A process's local copy of a block, refreshed only when a newer version exists."""

    def __init__(self, block: ParamBlock, out: torch.Tensor):
        self.block = block
        self.out = out
        self._view = out.numpy()
        self.version = -1

    def refresh(self) -> bool:
        if self.block.version == self.version:
            return False
        self.version = self.block.read(self._view)
        return True


class ParamPublisher:
    def __init__(self, ctx: zmq.Context, endpoint: str, keys: ServerKeys | None):
        check_bind(endpoint, keys)
        self.zap = None
        self.socket = ctx.socket(zmq.PUB)
        self.socket.setsockopt(zmq.SNDHWM, 2)
        self.socket.setsockopt(zmq.LINGER, 0)
        if keys is not None:  # only authorised keys may subscribe to the policy
            self.zap = ZapHandler(ctx, None, keys.authorized_dir)
            self.socket.zap_domain = REMOTE_DOMAIN.encode()
            keys.apply(self.socket)
        self.socket.bind(endpoint)

    def publish(self, name: str, flat: torch.Tensor, version: int) -> None:
        data = np.ascontiguousarray(flat.detach().cpu().numpy(), dtype=np.float32)
        header = msgpack.packb({"name": name, "version": version, "shape": list(data.shape)})
        try:
            self.socket.send_multipart([header, data], copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # a slow subscriber gets a later version

    def close(self) -> None:
        self.socket.close(linger=0)
        if self.zap is not None:
            self.zap.stop()


class ParamSubscriber:
    """Receives published versions; `latest(name)` gives the newest (version, array)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, keys: ClientKeys | None):
        self.socket = ctx.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.RCVHWM, 4)
        if keys is not None:
            keys.apply(self.socket)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(endpoint)
        self.newest: dict[str, tuple[int, np.ndarray]] = {}

    def poll(self, timeout_ms: int = 0) -> None:
        if not self.socket.poll(timeout_ms):
            return
        while True:
            try:
                header, data = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue  # not a two-frame message: not ours
            meta = msgpack.unpackb(header)
            array = np.frombuffer(data, dtype=np.float32).reshape(meta["shape"])
            self.newest[meta["name"]] = (int(meta["version"]), array)

    def close(self) -> None:
        self.socket.close(linger=0)
