"""RunCounters: the shared-memory state of a run that every process can read.

The supervisor creates it (it outlives any one process, so a restarted replay
service or actor re-attaches) and it is part of every checkpoint. Each field has
exactly one writer, so plain stores suffice:

  the replay service (its own observations; actors' claims never feed these)
    received/stored/duplicates [P+1]     transitions per member (index P: no valid member)
    rejected_transitions [P+1]           transitions of refused messages whose arrays were well formed
    rejected_messages [1]                refused messages of any kind
    stored_by_actor [ACTOR_SLOTS, P]     what each actor slot's messages stored
    refused_by_actor [ACTOR_SLOTS, P]    transitions of each slot's refused (well-formed) messages
    duplicates_by_actor [ACTOR_SLOTS, P] transitions of each slot's duplicate messages
    largest_message [ACTOR_SLOTS]        the most transitions one message of the slot held
    retired [RETIRED, P]                 the accounting of remote incarnations whose slot was reused or
                                         who said hello again: sent, stored, refused, lost in flight,
                                         unexplained (claims beyond what could have been in flight)
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
                                         (the service marks REMOTE slots, and RELEASED when no
                                         connection carried the actor for a grace period)
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
FREE, LIVE, FINISHED, DEAD, REMOTE, RELEASED = range(6)  # slot_state values
STATE_NAMES = ("free", "live", "finished", "dead", "remote", "released")
RETIRED = 5  # rows of `retired`: sent, stored, refused, lost in flight, unexplained
IN_FLIGHT_MESSAGES = 64  # a remote actor's window (ReplayClient's default): what it can have unacknowledged


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
        self.refused_by_actor = a["refused_by_actor"]
        self.duplicates_by_actor = a["duplicates_by_actor"]
        self.largest_message = a["largest_message"]
        self.retired = a["retired"]
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
            "refused_by_actor": (np.int64, (ACTOR_SLOTS, members)),
            "duplicates_by_actor": (np.int64, (ACTOR_SLOTS, members)),
            "largest_message": (np.int64, (ACTOR_SLOTS,)),
            "retired": (np.int64, (RETIRED, members)),
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
    def slot_accounting(self, slot: int, state: int | None = None) -> dict:
        """One slot's claims beside the service's observations, and what follows from them.

        claimed = stored + refused + lost in flight must hold. A live local actor, or a connected remote
        one, has nothing lost yet; a dead local actor lost what it claims beyond what arrived; a
        released remote actor at most what its window could hold (IN_FLIGHT_MESSAGES of its largest
        message): a claim beyond that is `unexplained`.
        """
        claimed, stored = self.sent[slot], self.stored_by_actor[slot]
        refused = self.refused_by_actor[slot]
        state = int(self.slot_state[slot]) if state is None else state
        gap = claimed - stored - refused
        lost = np.zeros_like(gap)
        unexplained = np.zeros_like(gap)
        if state == DEAD:
            lost = np.clip(gap, 0, None)
        elif state == RELEASED:
            cap = IN_FLIGHT_MESSAGES * int(self.largest_message[slot])
            lost = np.clip(gap, 0, None)
            if int(lost.sum()) > cap:
                unexplained, lost = lost, np.zeros_like(gap)
        return {
            "slot": slot,
            "identity": self.slot_identity(slot),
            "state": STATE_NAMES[state] if 0 <= state < len(STATE_NAMES) else str(state),
            "claimed": int(claimed.sum()),
            "stored": int(stored.sum()),
            "refused": int(refused.sum()),
            "duplicates": int(self.duplicates_by_actor[slot].sum()),
            "lost_in_flight": int(lost.sum()),
            "unexplained": int(unexplained.sum()),
            "_lost": lost,
            "_unexplained": unexplained,
            "_gap": gap,
        }

    def per_slot(self) -> list[dict]:
        """Every slot that was used: claims beside observations (summary.json)."""
        rows = []
        for slot in range(ACTOR_SLOTS):
            if self.slot_state[slot] == FREE and not self.identity[slot, 0] and not self.sent[slot].any():
                continue
            rows.append({k: v for k, v in self.slot_accounting(slot).items() if not k.startswith("_")})
        return rows

    def retire(self, slot: int) -> None:
        """Fold a remote slot's accounting into `retired` and clear it (its slot is reused, or its actor
        starts again from zero claims): the totals stay what they were."""
        a = self.slot_accounting(slot, RELEASED)  # an incarnation that said hello again is gone as well
        self.retired[0] += self.sent[slot]
        self.retired[1] += self.stored_by_actor[slot]
        self.retired[2] += self.refused_by_actor[slot]
        self.retired[3] += a["_lost"]
        # claims beyond its window, and observations beyond its claims (a report that never caught up)
        self.retired[4] += a["_unexplained"] + np.clip(-a["_gap"], 0, None)
        for array in (self.sent, self.stored_by_actor, self.refused_by_actor, self.duplicates_by_actor):
            array[slot] = 0
        self.largest_message[slot] = 0

    def lost_in_flight(self) -> int:
        """What dead local actors and released remote ones claimed to have sent but the service never
        stored nor refused (their unacknowledged messages died with them), plus retired incarnations'.
        Negative differences (claims below what arrived) are not losses; `reconciles()` catches them."""
        closed = [s for s in range(ACTOR_SLOTS) if self.slot_state[s] in (DEAD, RELEASED)]
        lost = sum(int(self.slot_accounting(s)["_lost"].sum()) for s in closed)
        return lost + int(self.retired[3].sum())

    def accounting(self) -> dict[str, int]:
        """Totals of the transition accounting (what summary.json reports)."""
        return {
            "sent": int(self.sent.sum()) + int(self.retired[0].sum()),
            "received": int(self.received.sum()),
            "stored": int(self.stored.sum()),
            "rejected": int(self.rejected_transitions.sum()),
            "rejected_messages": int(self.rejected_messages[0]),
            "duplicates": int(self.duplicates.sum()),
            "lost_in_flight": self.lost_in_flight(),
        }

    def reconciles(self) -> tuple[bool, str]:
        """Whether every actor slot's claims agree with what the service observed, and if not, why.

        For every slot, local or remote: claimed = stored + refused + lost in flight, where only a dead
        local actor or a released remote one can have lost anything (a remote one at most its window);
        retired remote incarnations likewise; and nothing may have been refused.
        """
        problems = []
        for slot in range(ACTOR_SLOTS):
            state = int(self.slot_state[slot])
            if state == FREE and not self.sent[slot].any() and not self.stored_by_actor[slot].any():
                continue
            a = self.slot_accounting(slot)
            kind = "remote slot" if state in (REMOTE, RELEASED) else "slot"
            who = f"{kind} {slot}" + (f" ({a['identity']})" if state in (REMOTE, RELEASED) else "")
            observed = f"stored {a['stored']:,}" + (f" + refused {a['refused']:,}" if a["refused"] else "")
            gap = a["_gap"]
            if (gap < 0).any():
                problems.append(f"{who}: {observed} exceeds its claim {a['claimed']:,}")
            elif a["unexplained"]:
                problems.append(
                    f"{who}: claims {a['claimed']:,}, {observed}: {a['unexplained']:,} more than its window "
                    f"({IN_FLIGHT_MESSAGES} messages of at most {int(self.largest_message[slot])}) could have lost"
                )
            elif state not in (DEAD, RELEASED) and gap.any():
                problems.append(f"{who}: claims {a['claimed']:,}, {observed}")
        unexplained = int(self.retired[4].sum())
        if unexplained:
            problems.append(f"earlier remote incarnations: {unexplained:,} transitions claimed but not observed")
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
