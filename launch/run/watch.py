"""`mbgen watch RUN`: a live view of a run from another terminal.

It reads RUN/status.json, which the run's supervisor rewrites about once a
second (launch/monitor.py): progress and rates, the latest evaluation of every
grid point beside the environment's random and optimal scores, the latest
training-episode scores, each process's heartbeat and last event, recent
warnings. It redraws until the run ends, then shows the outcome. Watching
changes nothing in the run; Ctrl-C leaves it running.

A run that has ended is shown as it was when it ended: its own elapsed time (all
its sessions, not the time since it started), when it ended, and heartbeat ages
as of the end.
"""

from __future__ import annotations

import json
import os
import sys
import time

import psutil
from mbgen.launch.run.monitor import STATUS_FILE
from mbgen.launch.run.progress import clock

STALE_S = 10.0  # status older than this, with its supervisor gone: the run died


def read_status(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, STATUS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def number(x: float | None, fmt: str = ".3f") -> str:
    return "--" if x is None else format(x, fmt)


def ago(seconds: float) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 days ago'."""
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n != 1 else ''} ago"
    return f"{seconds:.0f} s ago"


def state_line(status: dict, now: float) -> str:
    """'running, elapsed 1:02, ETA 0:40', or for an ended run 'completed at 19:20:11 (3 h ago) after
    0:50 of running'."""
    running = status["outcome"] == "running"
    ended = status.get("ended") or (None if running else status["updated"])
    if running:
        elapsed = status.get("elapsed_s", status["updated"] - status["started"]) + now - status["updated"]
        eta = status["eta_s"]
        return f"state     running, elapsed {clock(elapsed)}" + (f", ETA {clock(eta)}" if eta is not None else "")
    elapsed = status.get("elapsed_s", ended - status["started"])  # a status.json of before 2026-12: one session
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ended))
    return f"state     {status['outcome']} at {when} ({ago(now - ended)}), after {clock(elapsed)} of running"


def render(run_dir: str, status: dict, now: float) -> str:
    points = status["points"]
    seeds = len(points[0]["seeds"]) if points else 0
    params = ", ".join(f"{k}={v}" for k, v in status["env_params"].items())
    pct = 100.0 * status["steps"] / max(status["total_steps"], 1)
    scale = status["scale"]
    optimal = scale["optimal"]["score"]
    running = status["outcome"] == "running"
    header = (
        f"status {now - status['updated']:.1f} s old; Ctrl-C stops watching, not the run"
        if running
        else "the run has ended: as it was at its end"
    )
    lines = [
        f"mbgen watch {run_dir}   ({header})",
        f"{status['agent']} on {status['env']}({params}), {status['regime']}-data regime, {status['members']} members "
        f"({len(points)} point{'s' if len(points) != 1 else ''} x {seeds} seed{'s' if seeds != 1 else ''})",
        state_line(status, now),
        f"progress  env steps {status['steps']:,}/{status['total_steps']:,} ({pct:.1f}%), "
        f"updates {status['updates']:,}/{status['total_updates']:,}, "
        f"{status['updates_per_s']:,.0f} updates/s, {status['env_steps_per_s']:,.0f} env steps/s",
        f"scale     random {number(scale['random']['score'], '.4g')}, optimal {number(optimal, '.4g')} "
        f"({scale['unit']})",
    ]
    latest = status["latest_eval"]
    header = f"latest evaluation @ {latest['env_steps']:,}" if latest else "latest evaluation: none yet"
    lines.append(f"\n  {'point':<22}{header:<40}training episodes")
    lines.append(f"  {'':<22}{'mean':>8}{'min':>8}{'max':>8}{'':16}{'mean':>8}")
    by_group = {p["group"]: p for p in latest["points"]} if latest else {}
    for p in points:
        e = by_group.get(p["group"], {})
        train = status["train_scores"][p["group"]] if status["train_scores"] else None
        lines.append(
            f"  {p['name']:<22}{number(e.get('mean')):>8}{number(e.get('min')):>8}{number(e.get('max')):>8}"
            f"{'':16}{number(train):>8}"
        )
    before = "ago" if running else "before the end"
    lines.append(f"\n  process       pid      state      heartbeat{'' if running else ' (as of the end)'}   last event")
    for name, info in status["processes"].items():
        state = process_state(info)
        age = info["last_event_age_s"]
        event = f"{info['last_event']} ({age:.0f} s {before})" if info["last_event"] else "--"
        beat = f"{info['heartbeat_age_s']:>6.1f} s {before}"
        lines.append(f"  {name:<13} {info['pid']:<8} {state:<10} {beat}  {event}")
    tr = status["transitions"]
    if tr:
        lines.append(
            f"\n  transitions sent {tr.get('sent', 0):,} stored {tr.get('stored', 0):,} "
            f"rejected {tr.get('rejected', 0)} duplicates {tr.get('duplicates', 0)}"
        )
    if status["warnings"]:
        lines.append("\n  recent warnings:")
        for w in status["warnings"]:
            lines.append(
                f"    {time.strftime('%H:%M:%S', time.localtime(w['t']))} {w['role']}: {w['event']} {w['detail']}"
            )
    return "\n".join(lines)


def process_state(info: dict) -> str:
    """running, finished (exit 0), stopped (by the supervisor's SIGTERM) or the exit code."""
    if info["alive"]:
        return "running"
    code = info["exitcode"]
    return "finished" if code == 0 else "stopped" if code in (143, -15) else f"exit {code}"


def supervisor_alive(status: dict) -> bool:
    try:
        return psutil.Process(status["supervisor_pid"]).is_running()
    except psutil.NoSuchProcess:
        return False


def watch(run_dir: str, once: bool = False, period: float = 1.0, stream=None) -> int:
    """Redraw the view every `period` s until the run ends (0) or is found dead (1)."""
    stream = stream or sys.stdout
    clear = "\033[H\033[2J" if stream.isatty() and not once else ""
    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir} is not a directory")
    try:
        while True:
            status = read_status(run_dir)
            now = time.time()
            if status is None:
                text = f"mbgen watch {run_dir}: no {STATUS_FILE} yet (the run has not started, or predates watch)"
                if once:
                    print(text, file=stream)
                    return 1
            else:
                text = render(run_dir, status, now)
            stream.write(clear + text + "\n")
            stream.flush()
            if status is not None and status["outcome"] != "running":
                return 0
            if status is not None and now - status["updated"] > STALE_S and not supervisor_alive(status):
                print(f"\nthe run's supervisor (pid {status['supervisor_pid']}) is gone: the run died", file=stream)
                return 1
            if once:
                return 0
            time.sleep(period)
    except KeyboardInterrupt:
        return 0
