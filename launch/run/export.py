"""`mbgen export RUN --csv`: a run's evaluations as a CSV table, one row per evaluation and member."""

from __future__ import annotations

import csv
import os
import sys

from mbgen.actors.evaluator import METRICS_FIELDS
from mbgen.launch.run.outputs import STDOUT
from mbgen.launch.run.results import load_run


def table(run_dir: str) -> list[dict]:
    """metrics.jsonl's rows with every METRICS_FIELDS label (those a row lacks come from the config)."""
    run = load_run(run_dir)
    if not run.rows:
        raise ValueError(f"{os.path.join(run_dir, 'metrics.jsonl')} holds no evaluations yet")
    labels = run.config.member_labels()
    return [{**labels[int(row["member"])], **row} for row in run.rows]


def export_csv(run_dir: str, out_path: str) -> int:
    """Write the run's table as CSV with METRICS_FIELDS to `out_path` (STDOUT: standard output);
    returns the number of rows. Nothing is written when the run has no evaluations."""
    rows = table(run_dir)
    if out_path == STDOUT:
        write_rows(sys.stdout, rows)
        sys.stdout.flush()
        return len(rows)
    try:
        with open(out_path, "w", newline="") as f:
            write_rows(f, rows)
    except OSError as error:
        raise ValueError(f"out: cannot write {out_path}: {error.strerror or error}") from None
    return len(rows)


def write_rows(stream, rows: list[dict]) -> None:
    writer = csv.DictWriter(stream, fieldnames=METRICS_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
