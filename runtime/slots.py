"""SlotQueue: a single-producer, single-consumer queue of fixed-layout slots in shared memory.

Each slot holds the same named arrays (e.g. an imagined batch [P, B, ...] or a
parameter snapshot). The producer fills slot `produced % depth` and commits; the
consumer reads slot `consumed % depth` in place and releases it. Two counters
with one writer each make every item consumed exactly once, in order; the
producer can be at most `depth` items ahead. Waiting is on doorbells.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from mbgen.runtime.doorbell import Doorbell, wait_until
from mbgen.runtime.shm import Segment


class SlotQueue:
    def __init__(self, segment: Segment):
        self.segment = segment
        self.depth = int(segment.meta["depth"])
        self.fields = list(segment.meta["fields"])
        self._produced = segment.arrays["produced"]
        self._consumed = segment.arrays["consumed"]

    @classmethod
    def create(cls, name: str, depth: int, spec: dict[str, tuple[Any, tuple[int, ...]]], meta: dict | None = None):
        if depth < 1:
            raise ValueError(f"queue depth must be an integer >= 1, got {depth}")
        full = {"produced": (np.int64, (1,)), "consumed": (np.int64, (1,))}
        for key, (dtype, shape) in spec.items():
            full[key] = (dtype, (depth, *shape))
        return cls(Segment.create(name, full, {"kind": "slots", "depth": depth, "fields": list(spec), **(meta or {})}))

    @classmethod
    def attach(cls, name: str) -> "SlotQueue":
        return cls(Segment.attach(name))

    def close(self) -> None:
        self.segment.close()

    @property
    def produced(self) -> int:
        return int(self._produced[0])

    @property
    def consumed(self) -> int:
        return int(self._consumed[0])

    def pending(self) -> int:
        return self.produced - self.consumed

    def slot(self, index: int) -> dict[str, np.ndarray]:
        """The arrays of item `index` (a view into shared memory)."""
        i = index % self.depth
        return {k: self.segment.arrays[k][i, ...] for k in self.fields}  # views, 0-d ones too

    # -- producer ------------------------------------------------------------------
    def has_room(self) -> bool:
        return self.pending() < self.depth

    def await_room(self, bell: Doorbell, **wait) -> dict[str, np.ndarray]:
        """Wait for a free slot; returns its arrays to fill, then call `commit()`."""
        wait_until(self.has_room, bell, **wait)
        return self.slot(self.produced)

    def commit(self) -> None:
        self._produced[0] += 1

    # -- consumer ------------------------------------------------------------------
    def has_item(self) -> bool:
        return self.pending() > 0

    def await_item(self, bell: Doorbell, **wait) -> dict[str, np.ndarray]:
        """Wait for the next item; read it in place, then call `release()`."""
        wait_until(self.has_item, bell, **wait)
        return self.slot(self.consumed)

    def release(self) -> None:
        self._consumed[0] += 1

    def wait(self, ready: Callable[[], bool], bell: Doorbell, **wait) -> None:
        wait_until(ready, bell, **wait)
