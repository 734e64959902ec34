"""The one runner every process of a run goes through: replay service, learner, model server, actors,
evaluator.

It makes the process exit with its parent, tunes the allocator, turns SIGINT/SIGTERM into a clean
stop, routes the process's logs to the run's events.jsonl, and guarantees `close()` on every exit
path. The role itself is built by a factory, so this module knows nothing of run configurations.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable, Protocol

from mbgen.runtime.lifecycle import StopRequested, StopSignal, die_with_parent, tune_allocator
from mbgen.runtime.logs import configure_logging, get_logger


class Role(Protocol):
    def run(self) -> None:
        """Do the role's work until it is finished."""

    def on_stop(self) -> None:
        """Asked to stop by a signal: save what must survive (checkpoints)."""

    def close(self) -> None:
        """Release sockets and shared memory; called on every exit path."""


def run_role(
    name: str,
    events: str | None,
    make: Callable[[StopSignal], Role],
    supervised: bool = True,
    **context,
) -> None:
    """Run one process as role `name` (runtime/roles.py), logging to `events` (a run's events.jsonl;
    None: the terminal): `make(stop)` builds the role, `run()` does the work.

    SIGTERM stops the role (its `on_stop` runs first). A supervised process ignores SIGINT: Ctrl-C
    reaches the whole process group, only the supervisor acts on it, and it stops the roles in order
    (a checkpoint cut, the actors' last acknowledgements, then the rest). A process stopped by a
    signal exits with 128 + the signal number, so the supervisor can tell a finished role from a
    stopped one.
    """
    die_with_parent()
    tune_allocator()
    stop = StopSignal().install()
    if supervised:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(name, events, **context)
    log = get_logger()
    role = None
    try:
        role = make(stop)
        role.run()
    except StopRequested:
        log.info(f"{name}_stopping")
        if role is not None:
            role.on_stop()
    except Exception:
        log.exception(f"{name}_failed")
        raise
    finally:
        if role is not None:
            role.close()
    if stop.exit_code:
        sys.exit(stop.exit_code)
