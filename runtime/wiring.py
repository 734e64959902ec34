"""Wiring: the names of every shared-memory segment, endpoint, file and slot of one run.

Derived from the run id, the run directory and the run's private socket
directory, so every process computes the same names. The supervisor creates
every shared-memory segment (so they outlive any one process) and the private
directory (mode 0700) where every ipc endpoint and the local actors'
credentials live; nothing of a run is reachable through an abstract-namespace
socket.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mbgen.runtime.security import CREDENTIALS_FILE
from mbgen.runtime.shm import segment_name

STORE_SEGMENT, COUNTERS_SEGMENT = "replay", "counters"  # segment roles the replay service creates



@dataclass(frozen=True)
class Wiring:
    run_id: str  # names the run's segments
    run_dir: str  # where events, metrics, checkpoints and plots go
    socket_dir: str  # private (0700) directory of the run's ipc endpoints and local credentials
    resume_from: str = ""  # checkpoint cut directory every process restores its part from; "" = fresh start
    elapsed_before: float = 0.0  # wall seconds of the run's earlier sessions (a resumed run's clock goes on)
    # Remote actors (system.remote_endpoint etc., or what the Ray engine makes for the session): where they
    # send transitions, where parameters are published to them, and the CurveZMQ key directory.
    remote_endpoint: str = ""
    param_endpoint: str = ""
    keys: str = ""

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
    def model_batches(self) -> str:
        """The model server's batch per Q update (imagined transitions, value-expansion paths, or nothing)."""
        return self.segment("batches")

    @property
    def eval_queue(self) -> str:
        return self.segment("evalq")

    def all_segments(self) -> list[str]:
        return [self.store, self.counters, self.q_params, self.model_params, self.model_batches, self.eval_queue]

    @property
    def ingest(self) -> str:
        """Where local actors send transitions (PLAIN login with their per-run token)."""
        return f"ipc://{self.socket_dir}/ingest"

    @property
    def credentials(self) -> str:
        return os.path.join(self.socket_dir, CREDENTIALS_FILE)

    def bell(self, owner: str) -> str:
        return f"ipc://{self.socket_dir}/bell-{owner}"

    @property
    def events(self) -> str:
        return os.path.join(self.run_dir, "events.jsonl")

    @property
    def metrics(self) -> str:
        return os.path.join(self.run_dir, "metrics.jsonl")

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.run_dir, "checkpoints")
