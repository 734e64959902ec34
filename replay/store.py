"""ReplayStore: one ring buffer per population member, in shared memory, sampled in place.

Observations are stored bit-packed (np.packbits), so a transition costs
2*ceil(obs_dim/8) bytes of observations plus 1-2 (action) + 4 (reward) + 1
(terminal). One process writes (the ingest service, or the offline loader);
any number of processes attach by name and sample without copying through a
socket.

Torn reads are impossible by construction: the writer announces the positions
it is about to overwrite (`reserved`) before writing and publishes them
(`written`) after; a reader samples only published positions, copies, then
re-reads `reserved` and redraws any position the writer may have reached
meanwhile (position q lives in slot q mod C and is overwritten by the write of
position q + C).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mbgen.runtime.shm import Segment

DEFAULT_CAPACITY = 100_000

STORE_KIND = "replay-store"  # the segment meta kind of a replay store (attach refuses other segments)


def packed_width(obs_dim: int) -> int:
    return (obs_dim + 7) // 8


def action_dtype(num_actions: int) -> np.dtype:
    return np.dtype(np.uint8) if num_actions <= 256 else np.dtype(np.uint16)


def bytes_per_transition(obs_dim: int, num_actions: int) -> int:
    return 2 * packed_width(obs_dim) + action_dtype(num_actions).itemsize + 4 + 1


# Byte -> its 8 bits as float32, most significant first (np.packbits' default order).
_UNPACK_TABLE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)


FIELDS = ("obs", "action", "reward", "next_obs", "continuation", "terminal")


@dataclass
class Batch:
    """Preallocated sample buffers [P, B, ...]; the float tensors share memory with the arrays."""

    obs: np.ndarray  # float32 [P, B, D]
    action: np.ndarray  # int64 [P, B]
    reward: np.ndarray  # float32 [P, B]
    next_obs: np.ndarray  # float32 [P, B, D]
    continuation: np.ndarray  # float32 [P, B]: 1 - terminal
    terminal: np.ndarray  # bool [P, B]

    @classmethod
    def allocate(cls, members: int, batch_size: int, obs_dim: int) -> "Batch":
        return cls(
            obs=np.zeros((members, batch_size, obs_dim), np.float32),
            action=np.zeros((members, batch_size), np.int64),
            reward=np.zeros((members, batch_size), np.float32),
            next_obs=np.zeros((members, batch_size, obs_dim), np.float32),
            continuation=np.zeros((members, batch_size), np.float32),
            terminal=np.zeros((members, batch_size), bool),
        )

    def tensors(self) -> dict:
        """Zero-copy torch views of the buffers the models and Q read (continuation, not terminal)."""
        import torch  # the replay service itself never needs torch

        return {k: torch.from_numpy(getattr(self, k)) for k in FIELDS if k != "terminal"}


class ReplayStore:
    """Per-member ring buffers of transitions in one shared-memory segment."""

    def __init__(self, segment: Segment):
        self.segment = segment
        meta = segment.meta
        self.members = int(meta["members"])
        self.capacity = int(meta["capacity"])
        self.obs_dim = int(meta["obs_dim"])
        self.num_actions = int(meta["num_actions"])
        self.width = packed_width(self.obs_dim)
        s = segment.arrays
        self._obs, self._next_obs = s["obs"], s["next_obs"]
        self._action, self._reward, self._terminal = s["action"], s["reward"], s["terminal"]
        self._written, self._reserved = s["written"], s["reserved"]
        self._scratch: dict[tuple, np.ndarray] = {}

    # -- lifecycle ------------------------------------------------------------
    @classmethod
    def create(cls, name: str, members: int, obs_dim: int, num_actions: int, capacity: int = DEFAULT_CAPACITY):
        if members < 1 or capacity < 1 or obs_dim < 1 or num_actions < 1:
            raise ValueError("ReplayStore needs members, capacity, obs_dim and num_actions >= 1")
        w = packed_width(obs_dim)
        spec = {
            "written": (np.int64, (members,)),
            "reserved": (np.int64, (members,)),
            "obs": (np.uint8, (members, capacity, w)),
            "next_obs": (np.uint8, (members, capacity, w)),
            "action": (action_dtype(num_actions), (members, capacity)),
            "reward": (np.float32, (members, capacity)),
            "terminal": (np.uint8, (members, capacity)),
        }
        meta = {
            "kind": STORE_KIND,
            "members": members,
            "capacity": capacity,
            "obs_dim": obs_dim,
            "num_actions": num_actions,
        }
        return cls(Segment.create(name, spec, meta))

    @classmethod
    def attach(cls, name: str) -> "ReplayStore":
        segment = Segment.attach(name)
        if segment.meta.get("kind") != STORE_KIND:
            segment.close()
            raise ValueError(f"shared-memory segment {name} is not a replay store")
        return cls(segment)

    def close(self) -> None:
        self.segment.close()

    @property
    def name(self) -> str:
        return self.segment.name

    # -- writing (one writer) ---------------------------------------------------
    def add(self, member: int, obs, action, reward, next_obs, terminal) -> None:
        """Append n transitions to `member`'s ring. obs/next_obs: bool [n, D]."""
        n = len(action)
        if n == 0:
            return
        self.add_packed(
            member,
            np.packbits(obs, axis=1),
            action,
            reward,
            np.packbits(next_obs, axis=1),
            terminal,
        )

    def add_packed(self, member: int, obs_packed, action, reward, next_packed, terminal) -> None:
        n = len(action)
        start = int(self._written[member])
        if n > self.capacity:  # only the newest `capacity` survive
            skip = n - self.capacity
            obs_packed, next_packed = obs_packed[skip:], next_packed[skip:]
            action, reward, terminal = action[skip:], reward[skip:], terminal[skip:]
            start += skip
            n = self.capacity
        self._reserved[member] = start + n
        first = start % self.capacity
        head = min(n, self.capacity - first)
        for lo, hi, dst in ((0, head, first), (head, n, 0)):
            if hi > lo:
                span = slice(dst, dst + hi - lo)
                self._obs[member, span] = obs_packed[lo:hi]
                self._next_obs[member, span] = next_packed[lo:hi]
                self._action[member, span] = action[lo:hi]
                self._reward[member, span] = reward[lo:hi]
                self._terminal[member, span] = terminal[lo:hi]
        self._written[member] = self._reserved[member]

    def rollback(self, member: int, written: int) -> None:
        """Forget an interrupted write: positions from `written` on were never published."""
        self._written[member] = written
        self._reserved[member] = written

    # -- reading (any process) ----------------------------------------------------
    def size(self, member: int) -> int:
        return int(min(self._written[member], self.capacity))

    def sizes(self) -> np.ndarray:
        return np.minimum(self._written, self.capacity)

    def total_written(self) -> np.ndarray:
        return self._written.copy()

    def _draw(self, rng: np.random.Generator, written: int, count: int) -> np.ndarray:
        held = min(written, self.capacity)
        if held == 0:
            raise ValueError("cannot sample from an empty replay store member")
        return written - held + (rng.random(count) * held).astype(np.int64)

    def sample_positions(self, rngs: list[np.random.Generator], batch_size: int, members=None) -> np.ndarray:
        """Absolute positions [len(members), B] drawn uniformly from what each member holds."""
        members = range(self.members) if members is None else members
        written = self._written.copy()
        return np.stack([self._draw(rngs[i], int(written[m]), batch_size) for i, m in enumerate(members)])

    def sample(self, rngs: list[np.random.Generator], out: Batch, members=None) -> Batch:
        """Fill `out` ([len(members), B, ...]) with uniform samples, unpacked to float32."""
        members = list(range(self.members)) if members is None else list(members)
        rows = np.asarray(members, dtype=np.int64)[:, None]
        positions = self.sample_positions(rngs, out.action.shape[1], members)
        self._gather(rows, positions % self.capacity, out)
        torn = np.nonzero(positions < self._reserved[rows] - self.capacity)
        # Redraw, one by one, positions the writer may have overwritten while we copied them.
        while torn[0].size:
            ti, tj = torn
            for i, j in zip(ti, tj):
                positions[i, j] = self._draw(rngs[i], int(self._written[members[i]]), 1)[0]
            redrawn = Batch.allocate(ti.size, 1, self.obs_dim)
            self._gather(rows[ti], (positions[ti, tj] % self.capacity)[:, None], redrawn)
            for field in FIELDS:
                getattr(out, field)[ti, tj] = getattr(redrawn, field)[:, 0]
            still = positions[ti, tj] < self._reserved[rows[ti, 0]] - self.capacity
            torn = (ti[still], tj[still])
        return out

    def _gather(self, rows: np.ndarray, slots: np.ndarray, out: Batch) -> None:
        d = self.obs_dim
        key = slots.shape
        scratch = self._scratch.get(key)
        if scratch is None:
            scratch = self._scratch[key] = np.empty(key + (self.width, 8), np.float32)
        flat = scratch.reshape(key + (self.width * 8,))
        np.take(_UNPACK_TABLE, self._obs[rows, slots], axis=0, out=scratch)
        out.obs[...] = flat[..., :d]
        np.take(_UNPACK_TABLE, self._next_obs[rows, slots], axis=0, out=scratch)
        out.next_obs[...] = flat[..., :d]
        out.action[...] = self._action[rows, slots]
        out.reward[...] = self._reward[rows, slots]
        out.terminal[...] = self._terminal[rows, slots].view(bool)
        np.subtract(1.0, out.terminal, out=out.continuation)

    def read_all(self, member: int):
        """Every transition `member` holds, oldest first, unpacked (for tests and offline tools)."""
        written, held = int(self._written[member]), self.size(member)
        slots = (np.arange(written - held, written) % self.capacity)[None, :]
        out = Batch.allocate(1, held, self.obs_dim)
        self._gather(np.array([[member]]), slots, out)
        return out
