"""Checkpoints: the whole state of a run, written by its processes as parts of one consistent cut.

A cut is named by the learner's update count u at which it is taken
(`checkpoints/u-<u>/`). Each process writes its own part when it reaches the
cut (learner.npz, modelserver.npz, replay.npz, actor<slot>.npz; see the
processes for what each holds and why the parts agree with each other). A part
is written atomically: the arrays to a temporary file, fsync, rename, then a
sidecar `<part>.json` with its SHA-256 and size, also by rename. The supervisor
writes `MANIFEST.json` when every part the cut needs is there and verifies, and
only then deletes older cuts, so the previous checkpoint survives until the
new one is complete. A resumed run takes the newest cut whose parts all verify,
manifest or not (the supervisor may have been killed before writing it).

Parts are .npz files of plain arrays (loaded with allow_pickle=False); text
such as generator states is stored as unicode arrays.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

import numpy as np

MANIFEST = "MANIFEST.json"
FINAL_MODEL = "model-final.npz"  # beside the cuts: the model as the run ended (for tools, --frozen-model)


def snapshot_name(updates: int) -> str:
    """The file beside the cuts of the model after `updates` model updates (--model-snapshots)."""
    return f"model-{updates:09d}.npz"
CUT_PREFIX = "u-"


def cut_dir(root: str, updates: int) -> str:
    return os.path.join(root, f"{CUT_PREFIX}{updates:012d}")


def cut_updates(path: str) -> int:
    return int(os.path.basename(path)[len(CUT_PREFIX) :])


def list_cuts(root: str) -> list[str]:
    """Cut directories under `root`, oldest first."""
    if not os.path.isdir(root):
        return []
    names = sorted(n for n in os.listdir(root) if n.startswith(CUT_PREFIX) and n[len(CUT_PREFIX) :].isdigit())
    return [os.path.join(root, n) for n in names]


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_bytes(path: str, data: bytes) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_part(directory: str, name: str, arrays: dict[str, Any], meta: dict | None = None) -> dict:
    """Write part `name` of a cut atomically; returns {bytes, sha256, seconds} (what is logged)."""
    started = time.perf_counter()
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{name}.npz")
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    info = {"part": name, "bytes": os.path.getsize(path), "sha256": sha256_file(path), "meta": meta or {}}
    _atomic_bytes(os.path.join(directory, f"{name}.json"), json.dumps(info).encode())
    info["seconds"] = round(time.perf_counter() - started, 4)
    return info


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, corrupt, or from another configuration."""


def verify_part(directory: str, name: str) -> dict:
    """The part's sidecar if the part exists and its checksum matches; raises CheckpointError."""
    path, sidecar = os.path.join(directory, f"{name}.npz"), os.path.join(directory, f"{name}.json")
    if not os.path.exists(path) or not os.path.exists(sidecar):
        raise CheckpointError(f"{directory}: part {name} is missing")
    try:
        with open(sidecar) as f:
            info = json.load(f)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{directory}: {name}.json is unreadable ({error})") from None
    if os.path.getsize(path) != info.get("bytes") or sha256_file(path) != info.get("sha256"):
        raise CheckpointError(f"{directory}: part {name} is corrupt (size or SHA-256 differs from {name}.json)")
    return info


def read_part(directory: str, name: str) -> dict[str, np.ndarray]:
    verify_part(directory, name)
    with np.load(os.path.join(directory, f"{name}.npz"), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def has_part(directory: str, name: str) -> bool:
    return os.path.exists(os.path.join(directory, f"{name}.json"))


def has_manifest(directory: str) -> bool:
    """The keeper found every part of this cut there and verified (it may have been damaged since)."""
    return os.path.exists(os.path.join(directory, MANIFEST))


def part_meta(directory: str, name: str) -> dict:
    """What the part's writer recorded about it (its sidecar's meta), without reading the part."""
    try:
        with open(os.path.join(directory, f"{name}.json")) as f:
            return json.load(f).get("meta", {})
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{directory}: {name}.json is unreadable ({error})") from None


def text(value: str) -> np.ndarray:
    """Text as a 0-d unicode array (what parts store instead of pickled objects)."""
    return np.array(value)


def write_manifest(directory: str, parts: dict[str, dict], extra: dict) -> None:
    body = {"updates": cut_updates(directory), "parts": parts, "written_at": time.time(), **extra}
    _atomic_bytes(os.path.join(directory, MANIFEST), json.dumps(body, indent=1).encode())
