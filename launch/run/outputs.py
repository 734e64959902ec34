"""Where `mbgen plot` and `mbgen export` write: a file named for what it holds in the current
directory, or `--out FILE`, `--out DIR` (that name inside DIR), or `--out -` (standard output).

A path that cannot be written is refused before anything is drawn or read, in one line that
names it and says why.
"""

from __future__ import annotations

import os
import sys

STDOUT = "-"  # --out -: standard output


def run_name(run_dir: str) -> str:
    """A run's name: its directory's own name ("runs/20261207-er-panflute/" -> "20261207-er-panflute")."""
    return os.path.basename(os.path.normpath(os.path.abspath(run_dir)))


def output_path(out: str | None, default_name: str, extensions: tuple[str, ...] = ()) -> str:
    """The file to write: `out`, or `default_name` in the current directory (or inside `out` when it
    is a directory); STDOUT stays STDOUT. `extensions` (".png", ...): the names the writer can
    honour. Raises ValueError (one line: the field, the path, what is allowed) otherwise."""
    if out == STDOUT:
        return STDOUT
    path = default_name if not out else out
    if os.path.isdir(path):
        path = os.path.join(path, default_name)
    if extensions and os.path.splitext(path)[1].lower() not in extensions:
        allowed = ", ".join(extensions)
        raise ValueError(f"out: {path}: the file name must end in {allowed} (the format), or be - for standard output")
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise ValueError(f"out: cannot write {path}: {parent} is not a directory")
    if os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f"out: cannot write {path}: it exists and is not a file")
    if not os.access(parent, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise ValueError(f"out: cannot write {path}: permission denied")
    return path


def where(path: str) -> str:
    """How a message names the destination."""
    return "standard output" if path == STDOUT else path


def write_bytes(path: str, data: bytes) -> None:
    """`data` into `path` (STDOUT: standard output), a failure as one line."""
    if path == STDOUT:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as error:
        raise ValueError(f"out: cannot write {path}: {error.strerror or error}") from None
