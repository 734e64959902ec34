"""RunCounters: the shared-memory counters every process of a run can read.

Each counter has exactly one writer, so plain stores suffice:
  received/stored/rejected/duplicates [P+1]  the ingest service (index P: no valid member)
  rejected_messages                          the ingest service
  sent [ACTOR_SLOTS, P]                      each actor its own row (remote actors: the service)
  updates                                    the learner (Q-network updates done)
  model_updates                              the model server
  heartbeat [PROCESS_SLOTS]                  each process its own slot (unix time)
  inserts_paused_since                       the service (0 when reading its socket)
  update_times [2]                           the learner: unix times of the first and latest update
"""

from __future__ import annotations

import time

import numpy as np

from replay.shm import Segment

ACTOR_SLOTS = 64
PROCESS_SLOTS = 80


class RunCounters:
    def __init__(self, segment: Segment):
        self.segment = segment
        self.members = int(segment.meta["members"])
        a = segment.arrays
        self.received = a["received"]
        self.stored = a["stored"]
        self.rejected = a["rejected"]
        self.duplicates = a["duplicates"]
        self.rejected_messages = a["rejected_messages"]
        self.sent = a["sent"]
        self._updates = a["updates"]
        self._model_updates = a["model_updates"]
        self.heartbeat = a["heartbeat"]
        self._paused_since = a["inserts_paused_since"]
        self.update_times = a["update_times"]

    @classmethod
    def create(cls, name: str, members: int) -> "RunCounters":
        p1 = members + 1
        spec = {
            "received": (np.int64, (p1,)),
            "stored": (np.int64, (p1,)),
            "rejected": (np.int64, (p1,)),
            "duplicates": (np.int64, (p1,)),
            "rejected_messages": (np.int64, (1,)),
            "sent": (np.int64, (ACTOR_SLOTS, members)),
            "updates": (np.int64, (1,)),
            "model_updates": (np.int64, (1,)),
            "heartbeat": (np.float64, (PROCESS_SLOTS,)),
            "inserts_paused_since": (np.float64, (1,)),
            "update_times": (np.float64, (2,)),
        }
        return cls(Segment.create(name, spec, {"kind": "counters", "members": members}))

    @classmethod
    def attach(cls, name: str) -> "RunCounters":
        return cls(Segment.attach(name))

    def close(self) -> None:
        self.segment.close()

    # -- limiter counts ----------------------------------------------------------
    @property
    def updates(self) -> int:
        return int(self._updates[0])

    @updates.setter
    def updates(self, value: int) -> None:
        self._updates[0] = value

    @property
    def model_updates(self) -> int:
        return int(self._model_updates[0])

    @model_updates.setter
    def model_updates(self, value: int) -> None:
        self._model_updates[0] = value

    def inserts(self) -> np.ndarray:
        """Env steps stored per member (the limiter's insert counts)."""
        return self.stored[: self.members]

    def min_inserts(self) -> int:
        return int(self.stored[: self.members].min())

    @property
    def inserts_paused_since(self) -> float:
        return float(self._paused_since[0])

    @inserts_paused_since.setter
    def inserts_paused_since(self, value: float) -> None:
        self._paused_since[0] = value

    def beat(self, slot: int) -> None:
        self.heartbeat[slot] = time.time()

    def accounting(self) -> dict[str, int]:
        """Totals of the transition accounting (what summary.json reports)."""
        return {
            "sent": int(self.sent.sum()),
            "received": int(self.received.sum()),
            "stored": int(self.stored.sum()),
            "rejected": int(self.rejected.sum()),
            "rejected_messages": int(self.rejected_messages[0]),
            "duplicates": int(self.duplicates.sum()),
        }

    def per_member(self) -> dict[str, list[int]]:
        return {
            "sent": self.sent.sum(axis=0).tolist(),
            "stored": self.stored[: self.members].tolist(),
            "rejected": self.rejected[: self.members].tolist(),
            "duplicates": self.duplicates[: self.members].tolist(),
        }
