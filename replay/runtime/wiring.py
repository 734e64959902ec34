"""Wiring: the names of every shared-memory segment, endpoint and slot of one run.

Derived from the run id alone, so every process computes the same names; the
supervisor creates what the learner and model server publish into, the replay
service creates its store and counters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from replay.runtime.doorbell import bell_endpoint
from replay.shm import segment_name

STORE_SEGMENT, COUNTERS_SEGMENT = "replay", "counters"  # segment roles the replay service creates

# Heartbeat slots in RunCounters: fixed roles first, then one per actor.
REPLAY_SLOT, LEARNER_SLOT, MODELSERVER_SLOT, EVALUATOR_SLOT, FIRST_ACTOR_SLOT = range(5)


@dataclass(frozen=True)
class Wiring:
    run_id: str  # names the run's segments and ipc endpoints
    run_dir: str  # where events, metrics, checkpoints and plots go
    actors: int  # local actor processes

    def segment(self, role: str) -> str:
        return segment_name(self.run_id, role)

    @property
    def store(self) -> str:
        return self.segment(STORE_SEGMENT)

    @property
    def counters(self) -> str:
        return self.segment(COUNTERS_SEGMENT)

    @property
    def q_params(self) -> str:
        return self.segment("qparams")

    @property
    def model_params(self) -> str:
        return self.segment("modelparams")

    @property
    def imagined(self) -> str:
        return self.segment("imagined")

    @property
    def eval_queue(self) -> str:
        return self.segment("evalq")

    def all_segments(self) -> list[str]:
        return [self.store, self.counters, self.q_params, self.model_params, self.imagined, self.eval_queue]

    @property
    def ingest(self) -> str:
        """Where local actors send transitions."""
        return f"ipc://@mbgen-{self.run_id}-ingest"

    def bell(self, owner: str) -> str:
        return bell_endpoint(self.run_id, owner)

    def actor_bells(self) -> list[str]:
        return [self.bell(f"actor{i}") for i in range(self.actors)]

    @property
    def events(self) -> str:
        return os.path.join(self.run_dir, "events.jsonl")

    @property
    def metrics(self) -> str:
        return os.path.join(self.run_dir, "metrics.jsonl")

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.run_dir, "checkpoints")
