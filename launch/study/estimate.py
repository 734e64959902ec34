"""How long a run will take, from `mbgen bench` figures: the study's --dry-run and its first ETA.

The bench measures end-to-end member-updates/s of ER and of the simple model on
ProcMaze(4) with the paper's networks at P=1 and P=30 members (`mbgen bench
--json`). From those, the wall time of one update of a population of P is
modelled as

    t(P) = a + b * P * f,      a = t(1) - b,   b = (t(30) - t(1)) / 29,

where t(1) = 1 / member-updates/s at P=1 and t(30) = 30 / member-updates/s at P=30:
`a` is the per-update cost that does not grow with the population (process
hand-offs, Python), `b` the arithmetic of one member's update, and `f` the
cell's network FLOPs per update over the bench's (learner/networks.py shapes:
other environments, sizes and batch). An agent's declared `cost`
(learner/agents.py) scales its kind's figure (latent models are dearer than the
simple model, the perfect model cheaper). A run costs its updates times t(P)
plus START_S for starting and stopping its processes. The first cells of a
study then correct the estimate: its ETA scales the rest by measured/estimated.
"""

from __future__ import annotations

import importlib.resources
import json

from mbgen.learner.config import RunConfig

START_S = 8.0  # starting and stopping a run's processes, evaluation at the end (measured, 2 cores)
DEFAULT_FIGURES = "bench-cpu-2core.json"  # in launch/presets: `mbgen bench --json` on the 2-core CI machine


def default_figures() -> dict:
    with importlib.resources.files("mbgen.launch.study").joinpath("presets", DEFAULT_FIGURES).open() as f:
        return json.load(f)


def load_figures(path: str | None) -> dict:
    """`mbgen bench --json` output (None: the figures measured on the 2-core CI machine)."""
    if path is None:
        return default_figures()
    try:
        with open(path) as f:
            figures = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"--bench: cannot read {path}: {error}") from None
    missing = [key for kind in ("er", "simple") for key in required_keys(kind) if key not in figures]
    if missing:
        raise ValueError(f"--bench: {path} lacks {', '.join(missing)}; write it with `mbgen bench --json`")
    return figures


def required_keys(kind: str) -> tuple[str, str]:
    return f"{kind}_p1_member_updates_per_s", f"{kind}_p30_member_updates_per_s"


def update_seconds(cfg: RunConfig, figures: dict) -> float:
    """Modelled wall seconds of one population update of `cfg` (see the module docstring)."""
    from mbgen.launch.bench.throughput import bench_config, update_flops

    kind = "simple" if cfg.spec.model_server else "er"
    p1, p30 = required_keys(kind)
    t1, t30 = 1.0 / figures[p1], 30.0 / figures[p30]
    b = max((t30 - t1) / 29.0, 0.0)
    a = max(t1 - b, 0.0)
    f = update_flops(cfg) / update_flops(bench_config(cfg.run.agent if kind == "er" else "simple"))
    return cfg.spec.cost * (a + b * cfg.members * f)


def run_seconds(cfg: RunConfig, figures: dict) -> float:
    return START_S + cfg.total_updates * update_seconds(cfg, figures)
