"""Process lifecycle shared by every role: stop signals, parent-death, heartbeats, reproducible maths.

SIGTERM and SIGINT raise `StopRequested` in the main thread, which interrupts any
blocking wait (ZeroMQ polls, doorbells). Work that must not be cut in half (an
optimiser step, a checkpoint) runs inside `stop.deferred()`: a signal arriving
there takes effect when the section ends. A second signal while stopping is
ignored so clean-up code runs to the end.
"""

from __future__ import annotations

import ctypes
import os
import signal
from contextlib import contextmanager

# MKL chooses its GEMM kernels at run time, and member shards multiplying in two threads at once
# can get other kernels than one thread alone: the results then differ in the last bits, from
# run to run (measured: 2 of 24 runs of 300 sharded Q updates). MKL's strict conditional
# numerical reproducibility fixes the kernels whatever the threads or alignment; lock-step runs,
# which promise the same bits from the same seeds, run their processes with it. Its cost is within
# noise here (idle, ER Q updates at 1 seed: 2,743-2,770 vs 2,781-2,868 member-updates/s).
REPRODUCIBLE_MATH_ENV = {"MKL_CBWR": "AUTO,STRICT"}


class StopRequested(BaseException):
    """Raised in the main thread when the process is asked to stop."""


class StopSignal:
    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._deferring = 0
        self._raised = False

    def install(self) -> "StopSignal":
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            return
        self.requested = True
        self.signum = signum
        if self._deferring == 0:
            self._raise()

    def _raise(self) -> None:
        if not self._raised:
            self._raised = True
            raise StopRequested(self.signum)

    @property
    def exit_code(self) -> int:
        """What a process stopped by this signal exits with (the shell's 128 + signal number)."""
        return 128 + int(self.signum) if self.requested and self.signum else 0

    def check(self) -> None:
        if self.requested:
            self._raise()

    @contextmanager
    def deferred(self):
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if self.requested and self._deferring == 0:
            self._raise()


@contextmanager
def child_environment(extra: dict[str, str]):
    """Processes started inside see `extra` in their environment (a variable the user set wins)."""
    added = {k: v for k, v in extra.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def tune_allocator() -> None:
    """Keep freed memory in the heap instead of returning it to the OS at every free.

    Large tensors (a P=30 batch is megabytes) are allocated and freed every update; by default
    glibc maps each one fresh and unmaps it on free, so every update pays page faults to touch
    new memory. Raising the mmap and trim thresholds lets the allocator reuse its own pages.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    except (OSError, AttributeError):
        pass


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no orphans)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except OSError:
        pass
