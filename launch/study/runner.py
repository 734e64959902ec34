"""Running a study: its cells one after another, N at a time, or on a Ray cluster.

Every cell is the ordinary `mbgen run` command in its own process (its own
supervisor, processes, shared memory and run directory under DIR/cells/), so a
cell started by this machine and one started by a Ray task on another node are
the same program. What a cell needs next is read from its directory:

  completed   summary.json says so: skipped, never touched
  resumable   a checkpoint cut exists: `mbgen run --resume DIR` (falls back to a fresh start when
              the resume is refused, e.g. a corrupt cut)
  otherwise   `mbgen run --config cell.toml --out DIR --force` (from zero; --force clears what an
              earlier start without a checkpoint left)

A re-run of the same study command therefore skips finished cells and finishes
interrupted ones. A cell is started with MBGEN_PARENT_PID set, so it stops
(cleanly, with a checkpoint) if the study process dies. Ctrl-C or SIGTERM stop
every running cell cleanly (each writes its stop checkpoint) and the study
exits 130; a failed cell is reported with the end of its log and the others go
on. A lock file keeps two studies out of one directory; it is removed when the study ends.

With Ray (`--engine ray`), Ray is only the control plane: a task per cell runs
the same command on a node with the CPUs/GPUs the cell asks for; transitions
stay on ZeroMQ and shared memory inside that node. The study directory must be
on a filesystem every node sees (NFS, Lustre), as on any cluster.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from mbgen.launch.run.progress import clock
from mbgen.launch.stats import ci_text
from mbgen.launch.study.estimate import run_seconds
from mbgen.launch.study.spec import CELLS_DIR, Cell, Study

LOCK_FILE = ".study.lock"
LOG_FILE = "run.log"  # in a cell's directory: its run's terminal output
CELL_STOP_S = 30.0  # a cell asked to stop has this long to write its stop checkpoint before SIGKILL
POLL_S = 0.2
LINE_PERIOD_S = 30.0  # progress lines when not on a terminal
REFUSED = 2  # `mbgen run`'s exit code for input it refuses (here: a checkpoint it cannot resume)


# -- one cell ---------------------------------------------------------------------------------
def cell_state(cell_dir: str) -> str:
    """ "completed", "resumable" (a checkpoint cut exists) or "fresh" (start from zero)."""
    if outcome(cell_dir) == "completed":
        return "completed"
    if os.path.exists(os.path.join(cell_dir, "config.toml")) and glob.glob(
        os.path.join(cell_dir, "checkpoints", "u-*", "MANIFEST.json")
    ):
        return "resumable"
    return "fresh"


def outcome(cell_dir: str) -> str | None:
    """The outcome its summary.json records (None: no summary, or one cut short by a killed run)."""
    try:
        with open(os.path.join(cell_dir, "summary.json")) as f:
            return json.load(f).get("outcome")
    except (OSError, ValueError):
        return None


def cell_command(cell_dir: str, resume: bool) -> list[str]:
    command = [sys.executable, "-m", "mbgen.launch.cli", "run", "--quiet"]
    if resume:
        return command + ["--resume", cell_dir]
    return command + ["--config", os.path.join(cell_dir, "cell.toml"), "--out", cell_dir, "--force"]


def run_cell(cell_dir: str, stop: threading.Event | None = None) -> int:
    """Run (or resume) one cell to its end; its output goes to cell_dir/run.log. Returns the run's
    exit code. `stop` set (or KeyboardInterrupt, as Ray's cancel raises) stops the run cleanly."""
    resume = cell_state(cell_dir) == "resumable"
    code = _run_command(cell_dir, cell_command(cell_dir, resume), stop)
    if resume and code == REFUSED:  # the checkpoint cannot be used: start the cell again from zero
        code = _run_command(cell_dir, cell_command(cell_dir, False), stop)
    return code


def _run_command(cell_dir: str, command: list[str], stop: threading.Event | None) -> int:
    env = {**os.environ, "MBGEN_PARENT_PID": str(os.getpid())}
    with open(os.path.join(cell_dir, LOG_FILE), "a") as log:
        log.write(f"\n$ {' '.join(command[1:])}\n")
        log.flush()
        proc = subprocess.Popen(command, stdout=log, stderr=log, env=env, start_new_session=True)
        try:
            while proc.poll() is None:
                try:
                    proc.wait(POLL_S)
                except subprocess.TimeoutExpired:
                    pass
                if stop is not None and stop.is_set():
                    return _stop(proc)
        except KeyboardInterrupt:
            _stop(proc)
            raise
        return proc.returncode


def _stop(proc: subprocess.Popen) -> int:
    """SIGINT (a clean stop with a checkpoint), SIGKILL after CELL_STOP_S."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(CELL_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def log_tail(cell_dir: str, lines: int = 3) -> str:
    path = os.path.join(cell_dir, LOG_FILE)
    if not os.path.exists(path):
        return ""
    with open(path, errors="replace") as f:
        text = [line.rstrip() for line in f if line.strip()]
    return " | ".join(text[-lines:])


# -- engines ----------------------------------------------------------------------------------
class LocalEngine:
    """Cells as child processes of this one, each waited on by a thread."""

    def __init__(self):
        self.stop_event = threading.Event()

    def start(self, cell: Cell, cell_dir: str, cfg) -> object:
        result: dict = {}

        def target():
            result["code"] = run_cell(cell_dir, self.stop_event)

        thread = threading.Thread(target=target, name=f"cell-{cell.name}", daemon=True)
        thread.start()
        return (thread, result)

    def poll(self, handle) -> int | None:
        thread, result = handle
        return None if thread.is_alive() else result.get("code", 1)

    def stop(self, handles: list) -> None:
        self.stop_event.set()
        for thread, _ in handles:
            thread.join(CELL_STOP_S + 5)

    def close(self) -> None:
        pass


class RayEngine:
    """Cells as Ray tasks: the same `mbgen run` command started on a node of the cluster."""

    def __init__(self, address: str, cell_cpus: float, cell_gpus: float):
        from mbgen.launch.raycluster import join_cluster

        self.ray = join_cluster(address)
        self.task = self.ray.remote(run_cell)
        self.cell_cpus, self.cell_gpus = cell_cpus, cell_gpus

    def start(self, cell: Cell, cell_dir: str, cfg) -> object:
        gpus = self.cell_gpus if cfg.system.device == "cuda" else 0
        return self.task.options(num_cpus=self.cell_cpus, num_gpus=gpus, max_retries=0).remote(cell_dir)

    def poll(self, handle) -> int | None:
        ready, _ = self.ray.wait([handle], timeout=0)
        if not ready:
            return None
        try:
            return int(self.ray.get(handle))
        except Exception:  # the task itself failed (node lost, cancelled): the cell did not complete
            return 1

    def stop(self, handles: list) -> None:
        for handle in handles:
            self.ray.cancel(handle)  # KeyboardInterrupt in the task: it stops its run cleanly
        self.ray.wait(handles, num_returns=len(handles), timeout=CELL_STOP_S + 5)

    def close(self) -> None:
        self.ray.shutdown()


# -- the study --------------------------------------------------------------------------------
@dataclass
class Running:
    cell: Cell
    handle: object
    started: float
    estimate_s: float


@dataclass
class StudyProgress:
    """The study's line (cells done/total, current cells, ETA) and, under it, each running cell's
    own progress read from its status.json; redrawn in place on a terminal, else a line per 30 s."""

    total: int
    stream: object = sys.stderr
    done: int = 0
    failed: int = 0
    skipped: int = 0
    spent_s: float = 0.0  # wall seconds of cells finished in this session
    spent_estimate_s: float = 0.0  # their estimates
    remaining_estimate_s: float = 0.0  # estimates of cells not started
    parallel: int = 1
    drawn: int = 0
    last_line: float = field(default=0.0)

    def calibration(self) -> float:
        return self.spent_s / self.spent_estimate_s if self.spent_estimate_s > 0 else 1.0

    def eta_s(self, running: list[Running], study_dir: str, now: float) -> float:
        """Cells not started: their estimates, scaled by measured/estimated of the cells finished so far;
        a running cell: extrapolated from its own progress once it has some, else its scaled estimate."""
        calibration = self.calibration()
        left = self.remaining_estimate_s * calibration
        for r in running:
            elapsed = now - r.started
            done = cell_fraction(os.path.join(study_dir, CELLS_DIR, r.cell.name))
            left += elapsed * (1 - done) / done if done > 0.05 else max(r.estimate_s * calibration - elapsed, 0.0)
        return left / max(1, min(self.parallel, len(running) + (self.remaining_estimate_s > 0)))

    def lines(self, running: list[Running], study_dir: str, now: float) -> list[str]:
        head = (
            f"study: {self.done + self.failed}/{self.total} cells done"
            + (f" ({self.skipped} already complete)" if self.skipped else "")
            + (f", {self.failed} failed" if self.failed else "")
            + (f", running {', '.join(r.cell.name for r in running)}" if running else "")
            + f", ETA {clock(self.eta_s(running, study_dir, now))}"
        )
        out = [head]
        for r in running:
            out.append("  " + cell_progress(os.path.join(study_dir, CELLS_DIR, r.cell.name), now - r.started))
        return out

    def draw(self, running: list[Running], study_dir: str, force: bool = False) -> None:
        now = time.monotonic()
        lines = self.lines(running, study_dir, now)
        if self.stream.isatty():
            up = f"\x1b[{self.drawn}F" if self.drawn else ""  # back to the block's first line, then clear
            width = shutil.get_terminal_size().columns - 1  # a wrapped line would break the redraw
            self.stream.write(up + "\x1b[J" + "".join(f"{line[:width]}\n" for line in lines))
            self.drawn = len(lines)
        elif force or now - self.last_line >= LINE_PERIOD_S:
            self.stream.write("\n".join(lines) + "\n")
            self.last_line = now
        self.stream.flush()

    def say(self, text: str) -> None:
        """A permanent line (a cell finished) above the redrawn block."""
        if self.stream.isatty() and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0
        self.stream.write(text + "\n")
        self.stream.flush()


def read_status(cell_dir: str) -> dict | None:
    """A running cell's status.json (what `mbgen watch` reads), or None before it has one."""
    try:
        with open(os.path.join(cell_dir, "status.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cell_fraction(cell_dir: str) -> float:
    """How far a running cell is, in updates (what its time goes into)."""
    status = read_status(cell_dir)
    if not status or not status.get("total_updates") or status.get("outcome") != "running":
        return 0.0
    return min(status.get("updates", 0) / status["total_updates"], 1.0)


def cell_progress(cell_dir: str, elapsed_s: float) -> str:
    """One line of a running cell, from its status.json."""
    name = os.path.basename(cell_dir)
    status = read_status(cell_dir)
    if status is None:
        return f"{name}: starting ({clock(elapsed_s)})"
    steps, total = status.get("steps", 0), status.get("total_steps") or 1
    latest = status.get("latest_eval") or {}
    score = ""
    if latest.get("points"):
        score = ", eval " + " / ".join(f"{p['mean']:.3g}" for p in latest["points"][:4])
    eta = status.get("eta_s")
    return (
        f"{name}: {steps:,}/{total:,} steps ({steps / total:.0%}), {status.get('updates_per_s', 0):.0f} updates/s"
        f"{score}, ETA {clock(eta if eta is not None else float('nan'))}"
    )


class StudyLock:
    """An exclusive lock on the study directory while a study runs in it: DIR/.study.lock, held with
    flock, and removed on every way out (a normal end, an error, Ctrl-C, SIGTERM). SIGKILL leaves
    the file, but not the lock: the kernel releases it, and the next study takes the file over.

    The file is removed while the lock is still held, so a study that opened it just before then
    finds, once it holds the lock, that the path names another file (or none) and starts again
    on the path: two studies never both hold a lock on one directory."""

    def __init__(self, out: str):
        self.path = os.path.join(out, LOCK_FILE)
        self.file = None
        self.previous_sigterm = None

    def __enter__(self):
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip()
                f.close()
                raise ValueError(
                    f"out: another mbgen study is running in {os.path.dirname(self.path)} ({holder})"
                ) from None
            try:
                same = os.path.samestat(os.fstat(f.fileno()), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()  # the holder removed it as we opened it: lock the file now at the path
        self.file = f
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        if threading.current_thread() is threading.main_thread():
            self.previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_exit)
        return self

    def __exit__(self, *exc):
        if self.previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self.previous_sigterm)
            self.previous_sigterm = None
        try:
            os.remove(self.path)  # while still locked (see the class docstring)
        except FileNotFoundError:
            pass
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()
        self.file = None


def _sigterm_exit(signum, frame):
    """SIGTERM outside the cells' loop (which stops its cells itself): leave through `finally`."""
    raise SystemExit(128 + signum)


class Interrupted(Exception):
    pass


def run_study(
    study: Study, out: str, engine, figures: dict, parallel: int = 1, on_change=None, failures: dict | None = None
) -> int:
    """Run every cell not yet complete, `parallel` at a time; `on_change()` after each cell ends (the
    report is redrawn there). `failures` (cell name -> {"exit", "log"}) is updated as cells fail or
    complete. Returns 0 if every cell completed, 1 if one failed, 130 if stopped."""
    failures = {} if failures is None else failures
    progress = StudyProgress(total=len(study.cells), parallel=parallel)
    todo = []
    for cell in study.cells:
        if cell_state(study.cell_dir(out, cell)) == "completed":
            progress.skipped += 1
            progress.done += 1
        else:
            todo.append(cell)
    estimates = {c.name: run_seconds(c.run_config(study.cell_dir(out, c)), figures) for c in todo}
    progress.remaining_estimate_s = sum(estimates.values())
    if progress.skipped:
        progress.say(f"study: {progress.skipped} of {len(study.cells)} cells already complete, skipped")
    running: list[Running] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupt(signum, frame):
        raise Interrupted(signum)

    for s in previous:
        signal.signal(s, interrupt)
    try:
        while todo or running:
            for cell in blocked(todo, running, failures, out):
                todo.remove(cell)
                progress.failed += 1
                failures[cell.name] = {"exit": None, "log": f"its source cell {cell.needs} did not complete"}
                progress.say(f"cell {cell.name} not run: its source cell {cell.needs} did not complete")
            while len(running) < parallel:
                cell = next((c for c in todo if source_ready(c, out)), None)
                if cell is None:
                    break
                todo.remove(cell)
                cell_dir = study.cell_dir(out, cell)
                progress.remaining_estimate_s -= estimates[cell.name]
                handle = engine.start(cell, cell_dir, cell.run_config(cell_dir))
                running.append(Running(cell, handle, time.monotonic(), estimates[cell.name]))
                progress.draw(running, out, force=True)
            time.sleep(POLL_S * 5)
            for r in list(running):
                code = engine.poll(r.handle)
                if code is None:
                    continue
                running.remove(r)
                _finished(progress, r, code, study.cell_dir(out, r.cell), failures)
                if on_change is not None:
                    on_change()
            progress.draw(running, out)
    except Interrupted:
        progress.say(f"study: stopping {len(running)} running cell(s) cleanly (each writes a checkpoint)...")
        for s in previous:
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean stop short
        engine.stop([r.handle for r in running])
        if on_change is not None:
            on_change()
        progress.say("study: stopped; run the same command again to finish it")
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        engine.close()
    return 1 if progress.failed else 0


def source_ready(cell: Cell, out: str) -> bool:
    """A cell may start: it needs no other cell, or the one it needs has completed."""
    return not cell.needs or cell_state(os.path.join(out, CELLS_DIR, cell.needs)) == "completed"


def blocked(todo: list[Cell], running: list[Running], failures: dict, out: str) -> list[Cell]:
    """Cells whose source cell failed, or will not run again in this study run: they cannot start."""
    ahead = {c.name for c in todo} | {r.cell.name for r in running}
    return [
        c for c in todo if not source_ready(c, out) and (c.needs in failures or c.needs not in ahead)
    ]


def _finished(progress: StudyProgress, r: Running, code: int, cell_dir: str, failures: dict) -> None:
    wall = time.monotonic() - r.started
    progress.spent_s += wall
    progress.spent_estimate_s += r.estimate_s
    if code == 0 and cell_state(cell_dir) == "completed":
        progress.done += 1
        failures.pop(r.cell.name, None)
        with open(os.path.join(cell_dir, "summary.json")) as f:
            final = json.load(f)["final"]
        score = (
            f"final {final['mean']:.4g} ({ci_text(*final['ci95'], fmt='.4g')})"
            if final.get("mean") is not None
            else f"{len(final.get('per_point', []))} grid points"
        )
        progress.say(f"cell {r.cell.name} completed in {clock(wall)}: {score}")
    else:
        progress.failed += 1
        failures[r.cell.name] = {"exit": code, "log": log_tail(cell_dir)}
        progress.say(f"cell {r.cell.name} FAILED (exit {code}) after {clock(wall)}: {log_tail(cell_dir)}")


# -- the command ------------------------------------------------------------------------------
def add_study_options(parser) -> None:
    parser.add_argument("spec", nargs="?", metavar="SPEC", help="study file (TOML); or --preset")
    parser.add_argument("--preset", metavar="NAME", help="a study shipped with mbgen: figure3, figure3-small")
    parser.add_argument("--out", metavar="DIR", help="study directory (default: runs/study-<title>)")
    parser.add_argument("--parallel", type=int, default=1, metavar="N", help="cells run at a time (default: 1)")
    parser.add_argument("--engine", default="local", help="local (this machine) or ray (a Ray cluster)")
    parser.add_argument("--address", metavar="HOST:PORT", help="the Ray cluster's address (--engine ray)")
    parser.add_argument("--cell-cpus", type=float, default=2.0, metavar="C", help="Ray: CPUs per cell (default: 2)")
    parser.add_argument(
        "--cell-gpus", type=float, default=1.0, metavar="G", help="Ray: GPUs per cell on cuda (default: 1)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the cells and an estimated time, run nothing")
    parser.add_argument(
        "--bench", metavar="FILE.json", help="`mbgen bench --json` figures for the estimate (default: 2-core CI)"
    )


def resolve_spec(args) -> str:
    from mbgen.launch.study.spec import preset_path

    if (args.spec is None) == (args.preset is None):
        raise ValueError("study: give a study file or --preset NAME (one of them)")
    return preset_path(args.preset) if args.preset else args.spec


def dry_run(study: Study, out: str, figures: dict, parallel: int) -> int:
    rows = []
    for cell in study.cells:
        cfg = cell.run_config(study.cell_dir(out, cell))
        state = cell_state(study.cell_dir(out, cell))
        rows.append((cell.name, cfg.members, cfg.total_updates, run_seconds(cfg, figures), state))
    width = max(len(r[0]) for r in rows)
    print(f"{'cell':<{width}}  members  updates      estimate  state")
    for name, members, updates, seconds, state in rows:
        print(f"{name:<{width}}  {members:>7}  {updates:>9,}  {clock(seconds):>11}  {state}")
    todo = sum(r[3] for r in rows if r[4] != "completed")
    machine = f"{figures.get('device', 'cpu')}, {figures.get('cpus', '?')} cores"
    print(
        f"\n{len(rows)} cells, {sum(r[4] == 'completed' for r in rows)} already complete; estimated "
        f"{clock(todo / max(1, parallel))} to finish with --parallel {parallel} "
        f"(from mbgen bench figures measured on {machine}; launch/study/estimate.py)"
    )
    return 0


def main(args) -> int:
    from mbgen.launch.study.estimate import load_figures
    from mbgen.launch.study.report import read_failures, write_failures, write_report
    from mbgen.launch.options import load_toml
    from mbgen.launch.study.spec import check_directory, load_study, study_title, write_plan

    if args.parallel < 1:
        raise ValueError(f"--parallel must be an integer >= 1, got {args.parallel}")
    if args.engine not in ("local", "ray"):
        raise ValueError(f"--engine must be local or ray, got {args.engine!r}")
    if args.engine == "ray" and not args.address:
        raise ValueError("--engine ray needs --address HOST:PORT (the cluster's head; `ray start --head`)")
    if args.cell_cpus <= 0 or args.cell_gpus < 0:
        raise ValueError("--cell-cpus must be > 0 and --cell-gpus >= 0")
    path = resolve_spec(args)
    out = args.out or os.path.join("runs", f"study-{study_title(path, load_toml(path))}")
    study = load_study(path, out)
    figures = load_figures(args.bench)
    check_directory(study, out)
    if args.dry_run:
        return dry_run(study, out, figures, args.parallel)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as error:
        raise ValueError(f"out: cannot create {out}: {error.strerror or error}") from None
    with StudyLock(out):
        write_plan(study, out)
        failures = read_failures(out)

        def on_change():
            write_failures(out, failures)
            write_report(study, out)

        engine = LocalEngine() if args.engine == "local" else RayEngine(args.address, args.cell_cpus, args.cell_gpus)
        print(f"study {study.title}: {len(study.cells)} cells in {out}", file=sys.stderr)
        outcome = run_study(study, out, engine, figures, args.parallel, on_change, failures)
        write_failures(out, failures)
        data = write_report(study, out)
    counts = {s: sum(c["status"] == s for c in data["cells"]) for s in ("completed", "failed", "pending")}
    print(
        f"study {study.title}: {counts['completed']} completed, {counts['failed']} failed, {counts['pending']} "
        f"pending\nreport: {os.path.join(out, 'report.md')}  data: {os.path.join(out, 'study.json')}",
        file=sys.stderr,
    )
    return outcome


def report_main(args) -> int:
    from mbgen.launch.study.report import write_report
    from mbgen.launch.study.spec import load_directory

    study = load_directory(args.dir)
    data = write_report(study, args.dir)
    done = sum(c["status"] == "completed" for c in data["cells"])
    print(f"{os.path.join(args.dir, 'report.md')}: {done}/{len(data['cells'])} cells completed", file=sys.stderr)
    return 0
