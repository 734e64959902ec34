"""RunCounters: the shared-memory state of a run that every process can read.

The supervisor creates it (it outlives any one process, so a restarted replay
service or actor re-attaches) and it is part of every checkpoint. Each field has
exactly one writer, so plain stores suffice:

  the replay service (its own observations; actors' claims never feed these)
    received/stored/duplicates [P+1]     transitions per member (index P: no valid member)
    rejected_transitions [P+1]           transitions of refused messages whose arrays were well formed
    rejected_messages [1]                refused messages of any kind
    stored_by_actor [ACTOR_SLOTS, P]     what each actor slot's messages stored
    seq_below, seq_window [ACTOR_SLOTS]  deduplication: every seq below `seq_below` was stored, and
                                         which of the next SEQ_WINDOW were
    identity [ACTOR_SLOTS]               the authenticated identity owning each slot
    journal [JOURNAL]                    the insert being committed (see replay/service.py)
    inserts_paused_since                 0 when reading its socket
  each actor (its own row), or the service for a remote actor's validated report
    sent [ACTOR_SLOTS, P]                transitions the actor *claims* it sent
    actor_cut [ACTOR_SLOTS]              the last checkpoint cut the actor wrote its part for
  the supervisor
    slot_state [ACTOR_SLOTS]             FREE, LIVE (a local actor running), FINISHED, DEAD, REMOTE
                                         (the service marks REMOTE slots)
    stop_requested, draining             a stop cut is wanted; inserts must not pause any more
  the learner: updates, update_times [2], cut_at, cut_id
  the model server: model_updates
  every process its own slot: heartbeat [PROCESS_SLOTS] (unix time), part_done [PROCESS_SLOTS]
"""

from __future__ import annotations

import time

import numpy as np
from mbgen.runtime.roles import ACTOR_SLOTS, PROCESS_SLOTS, process_slot
from mbgen.runtime.shm import Segment

SEQ_WINDOW = 512  # messages an actor may have stored out of order beyond its oldest unstored one
IDENTITY_BYTES = 160
JOURNAL = 8  # active, slot, member, seq, count, written_before, stored_before, stored_by_before
FREE, LIVE, FINISHED, DEAD, REMOTE = range(5)  # slot_state values


class RunCounters:
    def __init__(self, segment: Segment):
        self.segment = segment
        self.members = int(segment.meta["members"])
        a = segment.arrays
        self.received = a["received"]
        self.stored = a["stored"]
        self.duplicates = a["duplicates"]
        self.rejected_transitions = a["rejected_transitions"]
        self.rejected_messages = a["rejected_messages"]
        self.stored_by_actor = a["stored_by_actor"]
        self.seq_below = a["seq_below"]
        self.seq_window = a["seq_window"]
        self.identity = a["identity"]
        self.journal = a["journal"]
        self.sent = a["sent"]
        self.actor_cut = a["actor_cut"]
        self.slot_state = a["slot_state"]
        self.heartbeat = a["heartbeat"]
        self.part_done = a["part_done"]
        self.update_times = a["update_times"]
        self._scalars = a["scalars"]

    SCALARS = (
        "updates",
        "model_updates",
        "inserts_paused_since",
        "cut_at",
        "cut_id",
        "stop_requested",
        "draining",
    )

    @classmethod
    def spec(cls, members: int) -> dict:
        p1 = members + 1
        return {
            "received": (np.int64, (p1,)),
            "stored": (np.int64, (p1,)),
            "duplicates": (np.int64, (p1,)),
            "rejected_transitions": (np.int64, (p1,)),
            "rejected_messages": (np.int64, (1,)),
            "stored_by_actor": (np.int64, (ACTOR_SLOTS, members)),
            "seq_below": (np.int64, (ACTOR_SLOTS,)),
            "seq_window": (np.uint8, (ACTOR_SLOTS, SEQ_WINDOW)),
            "identity": (np.uint8, (ACTOR_SLOTS, IDENTITY_BYTES)),
            "journal": (np.int64, (JOURNAL,)),
            "sent": (np.int64, (ACTOR_SLOTS, members)),
            "actor_cut": (np.int64, (ACTOR_SLOTS,)),
            "slot_state": (np.int8, (ACTOR_SLOTS,)),
            "heartbeat": (np.float64, (PROCESS_SLOTS,)),
            "part_done": (np.int64, (PROCESS_SLOTS,)),
            "update_times": (np.float64, (2,)),
            "scalars": (np.float64, (len(cls.SCALARS),)),
        }

    @classmethod
    def create(cls, name: str, members: int) -> "RunCounters":
        return cls(Segment.create(name, cls.spec(members), {"kind": "counters", "members": members}))

    @classmethod
    def attach(cls, name: str) -> "RunCounters":
        return cls(Segment.attach(name))

    def close(self) -> None:
        self.segment.close()

    # -- scalars ------------------------------------------------------------------
    def _get(self, key: str) -> float:
        return float(self._scalars[self.SCALARS.index(key)])

    def _set(self, key: str, value: float) -> None:
        self._scalars[self.SCALARS.index(key)] = value

    updates = property(lambda self: int(self._get("updates")), lambda self, v: self._set("updates", v))
    model_updates = property(
        lambda self: int(self._get("model_updates")), lambda self, v: self._set("model_updates", v)
    )
    inserts_paused_since = property(
        lambda self: self._get("inserts_paused_since"), lambda self, v: self._set("inserts_paused_since", v)
    )
    cut_at = property(lambda self: int(self._get("cut_at")), lambda self, v: self._set("cut_at", v))
    cut_id = property(lambda self: int(self._get("cut_id")), lambda self, v: self._set("cut_id", v))
    stop_requested = property(
        lambda self: bool(self._get("stop_requested")), lambda self, v: self._set("stop_requested", float(v))
    )
    draining = property(lambda self: bool(self._get("draining")), lambda self, v: self._set("draining", float(v)))

    # -- limiter counts ----------------------------------------------------------
    def inserts(self) -> np.ndarray:
        """Env steps stored per member (the limiter's insert counts)."""
        return self.stored[: self.members]

    def min_inserts(self) -> int:
        return int(self.stored[: self.members].min())

    def beat(self, name: str) -> None:
        """Process `name` (runtime/roles.py) is alive now."""
        self.heartbeat[process_slot(name)] = time.time()

    def last_beat(self, name: str) -> float:
        return float(self.heartbeat[process_slot(name)])

    # -- identities of actor slots --------------------------------------------------
    def slot_identity(self, slot: int) -> str:
        raw = bytes(self.identity[slot])
        return raw.rstrip(b"\0").decode("utf-8", "replace")

    def set_slot_identity(self, slot: int, identity: str) -> None:
        raw = identity.encode()[:IDENTITY_BYTES]
        self.identity[slot] = 0
        self.identity[slot, : len(raw)] = np.frombuffer(raw, np.uint8)

    def identities(self) -> dict[str, int]:
        """{identity: slot} of every slot that has one."""
        return {self.slot_identity(s): s for s in range(ACTOR_SLOTS) if self.identity[s, 0]}

    # -- accounting ------------------------------------------------------------------
    def lost_in_flight(self) -> int:
        """What dead actors claimed to have sent but the service never stored (their unacknowledged
        messages died with them). Negative differences (claims below what arrived) are not losses;
        `reconciles()` catches them."""
        dead = self.slot_state == DEAD
        gap = self.sent[dead] - self.stored_by_actor[dead]
        return int(np.clip(gap, 0, None).sum())

    def accounting(self) -> dict[str, int]:
        """Totals of the transition accounting (what summary.json reports)."""
        return {
            "sent": int(self.sent.sum()),
            "received": int(self.received.sum()),
            "stored": int(self.stored.sum()),
            "rejected": int(self.rejected_transitions.sum()),
            "rejected_messages": int(self.rejected_messages[0]),
            "duplicates": int(self.duplicates.sum()),
            "lost_in_flight": self.lost_in_flight(),
        }

    def reconciles(self) -> tuple[bool, str]:
        """Whether every actor's claims agree with what the service observed, and if not, why.

        A live or finished actor must have had exactly what it claims stored; a dead one at most
        what it claims (the rest is lost in flight); nothing may have been refused.
        """
        problems = []
        for slot in range(ACTOR_SLOTS):
            claimed, stored = self.sent[slot], self.stored_by_actor[slot]
            state = int(self.slot_state[slot])
            if state == FREE and not claimed.any() and not stored.any():
                continue
            if state == DEAD:
                if (stored > claimed).any():
                    problems.append(f"slot {slot}: stored {stored.sum()} exceeds its claim {claimed.sum()}")
            elif state == REMOTE:
                if (stored > claimed).any():
                    problems.append(f"remote slot {slot}: stored {stored.sum()} but reported {claimed.sum()}")
            elif not np.array_equal(claimed, stored):
                problems.append(f"slot {slot}: claims {claimed.sum()}, stored {stored.sum()}")
        rejected = int(self.rejected_messages[0])
        if rejected:
            problems.append(f"{rejected} messages refused")
        return not problems, "; ".join(problems)

    def per_member(self) -> dict[str, list[int]]:
        return {
            "sent": self.sent.sum(axis=0).tolist(),
            "stored": self.stored[: self.members].tolist(),
            "rejected": self.rejected_transitions[: self.members].tolist(),
            "duplicates": self.duplicates[: self.members].tolist(),
        }
