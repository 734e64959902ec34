"""The reaper: cleans up after a supervisor that was killed without a chance to do it itself.

The supervisor starts one reaper per session, in a session of its own (so
signals to the run's process group do not reach it), and tells it, through a
file in the run's private directory, which processes and shared-memory
segments belong to the run. The reaper blocks on the supervisor's pidfd (no
polling). If the supervisor exits normally it has removed the private
directory and the reaper simply leaves. If it was killed, its children exit on
their own (parent-death signal); the reaper waits for them (at most
CHILD_GRACE_S), kills any that remain, unlinks every segment and removes the
directory.

    python -m replay.runtime.reaper SUPERVISOR_PID PRIVATE_DIR
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import sys
import time

from mbgen.runtime.shm import unlink_segment

STATE_FILE = "reaper.json"  # {"pids": [...], "segments": [...]}, rewritten atomically by the supervisor
CHILD_GRACE_S = 8.0


def write_state(directory: str, pids: list[int], segments: list[str]) -> None:
    tmp = os.path.join(directory, STATE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"pids": pids, "segments": segments}, f)
    os.replace(tmp, os.path.join(directory, STATE_FILE))


def wait_for_exit(pid: int, timeout: float | None) -> bool:
    """Block until process `pid` exits (True) or `timeout` passes (False), on its pidfd."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        return bool(ready)
    finally:
        os.close(fd)


def reap(supervisor: int, directory: str) -> None:
    wait_for_exit(supervisor, None)
    path = os.path.join(directory, STATE_FILE)
    if not os.path.exists(path):
        return  # the supervisor cleaned up itself
    with open(path) as f:
        state = json.load(f)
    deadline = time.monotonic() + CHILD_GRACE_S
    for pid in state["pids"]:
        if not wait_for_exit(pid, max(0.0, deadline - time.monotonic())):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_for_exit(pid, 2.0)
    for name in state["segments"]:
        unlink_segment(name)
    shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reap(int(sys.argv[1]), sys.argv[2])


if __name__ == "__main__":
    main()
