"""The process table of a run: every child process by its role name, started, watched and stopped.

The supervisor decides what a process's exit means (launch/run/supervisor.py); the table only
knows processes: it starts them (spawn context, the run's environment variables), tells which
exited since it last looked, how long each has shown no heartbeat, and stops them within a
deadline (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from typing import Callable

from mbgen.runtime.counters import RunCounters
from mbgen.runtime.lifecycle import child_environment
from mbgen.runtime.roles import actor_slot

SPAWN = multiprocessing.get_context("spawn")


def describe_exit(process) -> str:
    code = process.exitcode
    if code is None:
        return "still running"
    return f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


class ProcessTable:
    def __init__(self, environment: dict[str, str], on_change: Callable[[list[int]], None], log):
        self.environment = environment  # extra environment variables of every child (lock-step maths)
        self.on_change = on_change  # told the children's pids whenever they change (the reaper's state)
        self.log = log
        self.children: dict[str, multiprocessing.Process] = {}
        self.launched: dict[str, float] = {}  # start time per child: its heartbeat grace begins there
        self.reaped: set[str] = set()  # children whose exit was handled

    # -- start -------------------------------------------------------------------------
    def spawn(self, name: str, target, *args) -> multiprocessing.Process:
        process = SPAWN.Process(target=target, args=args, name=f"mbgen-{name}")
        with child_environment(self.environment):
            process.start()
        self.children[name] = process
        self.launched[name] = time.time()
        self.on_change(self.pids())
        return process

    def forget(self, name: str) -> None:
        """Drop an exited child so that a new one can take its name."""
        del self.children[name]
        self.reaped.discard(name)

    # -- watch -------------------------------------------------------------------------
    def pids(self) -> list[int]:
        return [p.pid for p in self.children.values() if p.pid is not None]

    def actors(self) -> list[str]:
        return [name for name in self.children if actor_slot(name) is not None]

    def wait(self, timeout: float) -> None:
        """Until a child exits or `timeout` seconds pass."""
        alive = [p.sentinel for p in self.children.values() if p.exitcode is None]
        if alive:
            multiprocessing.connection.wait(alive, timeout=timeout)

    def new_exits(self) -> list[tuple[str, multiprocessing.Process]]:
        """Children that exited since the last call (each reported once)."""
        exited = [(n, p) for n, p in self.children.items() if p.exitcode is not None and n not in self.reaped]
        self.reaped.update(n for n, _ in exited)
        return exited

    def silence(self, counters: RunCounters, now: float | None = None) -> dict[str, float]:
        """Seconds since each live child's last heartbeat (or its start, whichever is later)."""
        now = time.time() if now is None else now
        return {
            name: now - max(counters.last_beat(name), self.launched[name])
            for name, process in self.children.items()
            if process.exitcode is None
        }

    def health(self, counters: RunCounters | None) -> dict[str, dict]:
        """Per child: pid, whether it runs, its exit code, seconds since its last heartbeat."""
        now = time.time()
        return {
            name: {
                "pid": process.pid,
                "alive": process.exitcode is None,
                "exitcode": process.exitcode,
                "heartbeat_age_s": now - max(counters.last_beat(name) if counters else 0.0, self.launched[name]),
            }
            for name, process in self.children.items()
        }

    # -- stop --------------------------------------------------------------------------
    def terminate(self, names: list[str], deadline: float) -> None:
        """SIGTERM each, then SIGKILL what has not exited by `deadline` (time.monotonic())."""
        processes = [self.children[n] for n in names]
        for process in processes:
            if process.exitcode is None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                self.log.warning("killing", process=process.name, process_pid=process.pid)
                process.kill()
                process.join()

    def kill(self, name: str) -> None:
        """SIGKILL one child (a hung one: SIGTERM would wait on it) and reap it; its exit is reported by
        `new_exits` like any other."""
        process = self.children[name]
        process.kill()  # SIGKILL also ends a SIGSTOPped process
        process.join(5.0)

    def clear(self) -> None:
        self.children, self.launched, self.reaped = {}, {}, set()

