"""The process roles of a run: their names and their slots in the run's shared counters.

Every role name is written here once; logs, doorbells, checkpoint parts and heartbeats all
name a process by these constants. Local actors are `actor0`, `actor1`, ... after their slot.

Slot layout of RunCounters' per-process arrays (heartbeat, part_done):
    0 replay, 1 learner, 2 model server, 3 evaluator, then one slot per actor slot
Actor slots 0..LOCAL_ACTOR_SLOTS-1 are the supervisor's (local actors and their replacements);
the replay service hands out the rest to remote actors.
"""

from __future__ import annotations

SUPERVISOR = "supervisor"
REPLAY = "replay"
LEARNER = "learner"
MODELSERVER = "modelserver"
EVALUATOR = "evaluator"
ACTOR = "actor"  # the role of every actor process; each one's own name is actor_name(slot)

FIXED_ROLES = (REPLAY, LEARNER, MODELSERVER, EVALUATOR)  # in slot order
ACTOR_SLOTS = 64  # local and remote actor slots together
LOCAL_ACTOR_SLOTS = 32
REMOTE_ACTOR_SLOTS = ACTOR_SLOTS - LOCAL_ACTOR_SLOTS  # what the replay service hands out to remote actors
FIRST_ACTOR_SLOT = len(FIXED_ROLES)
PROCESS_SLOTS = FIRST_ACTOR_SLOT + ACTOR_SLOTS


def actor_name(slot: int) -> str:
    """A local actor's name: its credentials, its part of a checkpoint, its doorbell, its log field."""
    return f"{ACTOR}{slot}"


def actor_slot(name: str) -> int | None:
    """The slot of a local actor's name, or None when `name` is not one."""
    digits = name[len(ACTOR) :]
    return int(digits) if name.startswith(ACTOR) and digits.isdigit() else None


def process_slot(name: str) -> int:
    """Where a process's heartbeat and checkpoint progress live in RunCounters."""
    slot = actor_slot(name)
    return FIRST_ACTOR_SLOT + slot if slot is not None else FIXED_ROLES.index(name)
