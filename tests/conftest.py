import os
import sys

import pytest

# This session's own shared-memory namespace (inherited by every process it starts), so that
# segments of another session running on the same machine are never counted as ours.
os.environ.setdefault("MBGEN_SHM_PREFIX", f"mbgen_t{os.getpid():x}_")

from mbgen.runtime.shm import leftover_segments  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))  # so spawned children can import tests/helpers.py


@pytest.fixture(autouse=True)
def no_shared_memory_survives():
    before = set(leftover_segments())
    yield
    left = sorted(set(leftover_segments()) - before)
    assert not left, f"shared memory left behind in /dev/shm: {left}"
