"""Member-parallel work: the population axis split into shards run by worker threads.

Members are independent, so a P-member update is the same maths whether it runs
as one batched call or as several calls on member ranges. Worker threads each
take a contiguous range (torch releases the GIL inside its kernels), which lets
the operating system spread coarse-grained work from every compute process of a
run over all cores instead of leaving a core idle while one process waits for
another. With one worker everything runs inline.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")


def member_slices(members: int, workers: int) -> list[slice]:
    """Contiguous, near-equal member ranges, at most one per worker."""
    workers = max(1, min(workers, members))
    bounds = [round(i * members / workers) for i in range(workers + 1)]
    return [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]


class ShardPool:
    """One thread per member range (at most `workers`); inline when there is one range."""

    def __init__(self, members: int, workers: int):
        self.slices = member_slices(members, workers)
        self.pool = ThreadPoolExecutor(len(self.slices), thread_name_prefix="shard") if len(self.slices) > 1 else None

    @property
    def workers(self) -> int:
        return len(self.slices)

    def index(self, members: slice) -> int:
        return self.slices.index(members)

    def map(self, fn: Callable[[slice], T]) -> list[T]:
        """fn(members) for every shard, in parallel; results in shard order; the first error is raised."""
        if self.pool is None:
            return [fn(self.slices[0])]
        return list(self.pool.map(fn, self.slices))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
