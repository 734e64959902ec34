"""mbgen: does a learned model beat experience replay, and why? (Young et al., arXiv 2211.02222)

The public API, for use from Python:

    import mbgen
    env = mbgen.make("procmaze", num_envs=8, seed=0, grid_size=4)   # a vectorised environment
    policy = mbgen.load_policy("runs/my-run", member=0)              # a trained greedy policy
    action = policy.act(env.reset())
    run = mbgen.load_run("runs/my-run")                              # config, metrics, summary
    pandas.DataFrame(run.metrics)                                    # one row per evaluation and member

Importing mbgen registers the Gymnasium ids (`gymnasium.make("mbgen/ProcMaze-v0", grid_size=4)`).
The subpackages are the system's parts: mbgen.envs, mbgen.runtime, mbgen.replay, mbgen.learner,
mbgen.modelserver, mbgen.actors and mbgen.launch (the `mbgen` command).
"""

from __future__ import annotations

from mbgen.envs import ENVIRONMENTS, make
from mbgen.envs.gym_wrappers import register as _register_gymnasium_ids

__all__ = ["ENVIRONMENTS", "make", "load_policy", "load_run", "Policy", "Run"]

_LAZY = {  # torch and matplotlib load only when these are asked for
    "load_policy": "mbgen.launch.run.policy",
    "Policy": "mbgen.launch.run.policy",
    "load_run": "mbgen.launch.run.results",
    "Run": "mbgen.launch.run.results",
}


_register_gymnasium_ids()


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mbgen' has no attribute {name!r}")
