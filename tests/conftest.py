import os
import sys

import pytest

from replay.shm import leftover_segments

sys.path.insert(0, os.path.dirname(__file__))  # so spawned children can import tests/helpers.py


@pytest.fixture(autouse=True)
def no_shared_memory_survives():
    before = set(leftover_segments())
    yield
    left = sorted(set(leftover_segments()) - before)
    assert not left, f"shared memory left behind in /dev/shm: {left}"
