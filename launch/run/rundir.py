"""A run directory: what a run writes there, and the refusal to mix two runs, or a run and a study, in one
directory."""

from __future__ import annotations

import os
import shutil

RUN_MARKERS = ("config.toml", "metrics.jsonl")  # present: the directory holds a run
STUDY_FILE = "study.toml"  # present: the directory holds a study (launch/study/spec.py writes it)
RUN_OUTPUTS = (  # everything a run writes, removed by --force before a new run starts there
    "config.toml",
    "metrics.jsonl",
    "events.jsonl",
    "summary.json",
    "status.json",
    "curve.png",
    "smoothing.png",
    "checkpoints",
    "tensorboard",
)


def existing_run(path: str) -> list[str]:
    """The run files already in `path` (empty: no run there)."""
    return [name for name in RUN_MARKERS if os.path.exists(os.path.join(path, name))]


def keep_private(shared: bool) -> None:
    """Unless `shared`, everything this process and its children create is theirs alone (umask 077): a
    run directory holds the whole replay store and the networks in its checkpoints."""
    if not shared:
        os.umask(0o077)


def prepare_run_dir(path: str, force: bool = False) -> None:
    """Refuse a directory that already holds a run, unless `force`: then remove that run's outputs
    (nothing else in the directory), so the new run never appends to old metrics. Refuse one that
    holds a study (even with `force`), or that cannot be written. All before any process starts.
    A new directory gets the mode the umask allows (0700 after `keep_private`)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"out: {path} exists and is not a directory")
    if os.path.exists(os.path.join(path, STUDY_FILE)):
        raise ValueError(f"out: {path} holds a study ({STUDY_FILE}), not a run; choose another --out")
    found = existing_run(path)
    if found and not force:
        raise ValueError(
            f"out: {path} already holds a run ({', '.join(found)}); continue it with --resume {path}, "
            "pass --force to replace it, or choose another --out"
        )
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".mbgen-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"out: cannot write to {path}: {error.strerror or error}") from None
    for name in RUN_OUTPUTS if found else ():
        target = os.path.join(path, name)
        if os.path.isdir(target):
            shutil.rmtree(target)
        elif os.path.exists(target):
            os.remove(target)
