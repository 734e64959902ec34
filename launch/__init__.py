"""Launching and reporting: the `mbgen` command, process supervision, results and plots.

cli.py, config.py   the command line and TOML configuration
supervisor.py       starts a run's processes, watches them, stops them, cleans up
rundir.py           what a run directory holds; refusing to mix two runs in one
results.py, plots.py, progress.py   summaries with confidence intervals, figures, the progress line
monitor.py, watch.py   status.json, TensorBoard/W&B scalars, and `mbgen watch`
policy.py, evaluation.py   trained policies (`load_policy`) and `mbgen eval`
export.py           `mbgen export --csv`
offline.py          the paper's section 2 offline experiment
bench.py            `mbgen bench`: throughput beside its references

    from launch import load_policy
    policy = load_policy("runs/my-run", member=0)
    action = policy.act(obs)
"""

__all__ = ["Policy", "load_policy"]


def __getattr__(name: str):
    """`from launch import load_policy` imports launch/policy.py (and torch) only when asked: every
    process of a run imports this package, and the replay service needs none of it."""
    if name in __all__:
        from launch import policy

        return getattr(policy, name)
    raise AttributeError(f"module 'launch' has no attribute {name!r}")
