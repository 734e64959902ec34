"""Structured logging for every process of a run: structlog JSON, one event per line.

Each process calls `configure_logging(role, path, ...)` once at start. Events go
to `<run>/events.jsonl` (appended with one write() per line, so lines from many
processes never interleave) with `t` (unix time), `level`, `role`, `pid`, any
bound context such as `member`, the `event` name and its numbers. Warnings and
errors are also echoed to stderr as one readable line for the person at the
terminal. Without a path, every event goes to stderr as JSON.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_FIRST = ("t", "level", "role", "pid", "member", "event")


class _LineSink:
    """Appends each rendered event with a single os.write. A write that fails (a full disk) drops the event
    and says so once on stderr: logging never takes a process down, least of all while it stops."""

    def __init__(self, path: str | None):
        self._path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) if path else 2
        self._failed = False

    def msg(self, message: str) -> None:
        if self._failed:
            return
        try:
            os.write(self._fd, (message + "\n").encode())
        except OSError as error:
            self._failed = True
            try:
                sys.stderr.write(f"mbgen: cannot write {self._path or 'stderr'} ({error.strerror}): events from now on are lost\n")
            except OSError:
                pass

    debug = info = warning = warn = error = critical = exception = msg


def _annotate(echo_level: int, to_file: bool):
    def processor(logger, method_name: str, event_dict: dict) -> dict:
        level = "warning" if method_name == "warn" else method_name
        event_dict["t"] = round(time.time(), 6)
        event_dict["level"] = level
        ordered = {k: event_dict.pop(k) for k in _FIRST if k in event_dict}
        ordered.update(event_dict)
        if to_file and _LEVELS.get(level, 20) >= echo_level:
            extra = " ".join(f"{k}={v}" for k, v in ordered.items() if k not in _FIRST)
            sys.stderr.write(
                f"{ordered.get('role', '?')}[{ordered.get('pid', '?')}] {level}: {ordered.get('event', '')} {extra}\n"
            )
            sys.stderr.flush()
        return ordered

    return processor


def configure_logging(role: str, path: str | None = None, echo: str = "warning", **context: Any) -> None:
    """Route this process's structlog events to `path` as JSON lines, bound to `role` and `pid`."""
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(role=role, pid=os.getpid(), **context)
    sink = _LineSink(path)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            _annotate(_LEVELS[echo], path is not None),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda *args: sink,
        cache_logger_on_first_use=False,
    )


def get_logger(**context: Any):
    return structlog.get_logger().bind(**context)
