"""RateLimiter: holds Q updates within a tolerance of the protocol's updates-per-step ratio.

The contract, with I the fewest env steps stored for any member, L
`learning_starts`, k `updates_per_step`, T `tolerance` (in updates) and u the
updates done:

    target(I) = min(k * max(0, I - L), total)   the updates the protocol calls for after I steps
    the learner may start update u+1   iff  I > L  and  u + 1 <= target(I) + T
    the service stops reading inserts  iff  target(I) - u > T

so u stays within T of target(I) (the insert side checks before each message,
which is atomic, so it may overshoot by one message's worth). T = 0 is lock-step:
one insert, then exactly k updates, then the next insert. Once the learner has
done the run's `total` updates, inserts never pause (extra actors, e.g. remote
ones, may still be sending). This is Reverb's
SampleToInsertRatio with min_size_to_sample = L + 1 and error_buffer = T, for a
population whose members advance together.

Waiting is done on doorbells (see replay/doorbell.py); a wait that lasts longer
than `stall_warning_s` logs a warning naming the side that is stalled.
"""

from __future__ import annotations

from dataclasses import dataclass


def protocol_updates(updates_per_step: int, learning_starts: int, env_steps: int) -> int:
    """k * max(0, I - L): the Q updates the protocol calls for once I env steps per member are stored."""
    return updates_per_step * max(0, env_steps - learning_starts)


@dataclass(frozen=True)
class RatioPolicy:
    updates_per_step: int  # k: Q updates per env step per member
    learning_starts: int  # L: env steps stored before the first update
    tolerance: float  # T: how far (in updates) u may drift from target(I); 0 is lock-step
    total: int | None = None  # the run's updates; None: unbounded

    def __post_init__(self):
        if self.updates_per_step < 1:
            raise ValueError(f"updates_per_step must be an integer >= 1, got {self.updates_per_step}")
        if self.learning_starts < 0:
            raise ValueError(f"learning_starts must be an integer >= 0, got {self.learning_starts}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")

    def target(self, inserts: int) -> int:
        target = protocol_updates(self.updates_per_step, self.learning_starts, inserts)
        return target if self.total is None else min(target, self.total)

    def may_update(self, inserts: int, done: int) -> bool:
        if self.total is not None and done >= self.total:
            return False
        return inserts > self.learning_starts and done + 1 <= self.target(inserts) + self.tolerance

    def inserts_paused(self, inserts: int, done: int) -> bool:
        return self.target(inserts) - done > self.tolerance
