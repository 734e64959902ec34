"""What `mbgen bench` takes (no torch here: the `mbgen` parser imports this module)."""

from __future__ import annotations

import argparse

SECTIONS = ("matmul", "envs", "replay", "floor", "single", "agents", "acting", "e2e")  # what --only chooses from


def add_bench_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="short measurements (under 2 minutes)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--only", default="", help=f"comma-separated sections: {','.join(SECTIONS)}")
    parser.add_argument("--device", default="auto", help="learner and model server device: auto, cpu or cuda")
    parser.add_argument(
        "--reference",
        metavar="FILE.json",
        help="reference figures: the authors' code timed on this machine in the same hour (docs/reference.md says how; default: the figures of docs/reference.md)",
    )
