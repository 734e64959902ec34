"""`mbgen export RUN --csv`: a run's evaluations as a CSV table, one row per evaluation and member."""

from __future__ import annotations

import csv
import os

from mbgen.actors.evaluator import METRICS_FIELDS
from mbgen.launch.run.results import load_run


def export_csv(run_dir: str, out_path: str) -> int:
    """Write metrics.jsonl as CSV with METRICS_FIELDS (labels a row lacks come from the config); returns rows."""
    run = load_run(run_dir)
    cfg, rows = run.config, run.rows
    if not rows:
        raise ValueError(f"{os.path.join(run_dir, 'metrics.jsonl')} holds no evaluations yet")
    labels = cfg.member_labels()
    with open(out_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**labels[int(row["member"])], **row})
    return len(rows)
