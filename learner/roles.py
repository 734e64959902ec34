"""Process entry plumbing shared by the learner, model server, actors and evaluator."""

from __future__ import annotations

import sys
from typing import Callable, Protocol

from learner.config import RunConfig
from learner.wiring import Wiring
from replay.lifecycle import StopRequested, StopSignal, die_with_parent, tune_allocator
from replay.logs import configure_logging, get_logger


class Role(Protocol):
    def run(self) -> None: ...

    def close(self) -> None: ...


def run_role(
    name: str, config: dict, wiring: dict, make: Callable[[RunConfig, Wiring, StopSignal], Role], **context
) -> None:
    """Run one process of a run: exit with the parent, stop cleanly on SIGINT/SIGTERM, log as `name`.

    `make(cfg, wiring, stop)` builds the role; its `run()` does the work and `close()` releases what it
    holds, on every exit path. A role with `on_stop()` gets to save its state when asked to stop.
    A process stopped by a signal exits with 128 + the signal number, so the supervisor can tell a
    finished role from a stopped one.
    """
    die_with_parent()
    tune_allocator()
    stop = StopSignal().install()
    cfg, w = RunConfig(**config), Wiring(**wiring)
    configure_logging(name, w.events, **context)
    log = get_logger()
    role = None
    try:
        role = make(cfg, w, stop)
        role.run()
    except StopRequested:
        log.info(f"{name}_stopping")
        if role is not None and hasattr(role, "on_stop"):
            role.on_stop()
    except Exception:
        log.exception(f"{name}_failed")
        raise
    finally:
        if role is not None:
            role.close()
    if stop.exit_code:
        sys.exit(stop.exit_code)
