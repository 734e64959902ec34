"""Seeds derived from a member's seed, so every random stream of a member is its own.

A member with seed s draws its network initialisations, environment resets,
behaviour and replay sampling from streams derived from s alone, so a member
behaves the same whatever else is in the population.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np


def derive_seed(seed: int, *words: object) -> int:
    """A stable 63-bit seed from `seed` and a path of words, e.g. derive_seed(3, "actor", 0)."""
    text = "/".join([str(int(seed)), *map(str, words)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def rng_state(rng: np.random.Generator) -> str:
    """A numpy generator's whole state as JSON text (what checkpoints store; never pickled)."""
    return json.dumps(rng.bit_generator.state)


def set_rng_state(rng: np.random.Generator, text: str) -> None:
    """Restore a state written by `rng_state` into a generator of the same bit generator."""
    rng.bit_generator.state = json.loads(text)
