"""Launching and reporting: the `mbgen` command, process supervision, results and plots.

cli.py, config.py   the command line and TOML configuration
supervisor.py       starts a run's processes, watches them, stops them, cleans up
results.py, plots.py, progress.py   summaries with confidence intervals, figures, the progress line
offline.py          the paper's section 2 offline experiment
bench.py            `mbgen bench`: throughput beside its references
"""
