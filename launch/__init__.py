"""Launching and reporting: the `mbgen` command and everything above a run's processes.

cli.py       the `mbgen` command and its subcommands
options.py   run configuration from TOML files and command-line flags
stats.py     statistics of per-member scores (confidence intervals, IQM, probability of improvement)
run/         one run: supervision (process table, checkpoint keeper, summary), monitoring, results,
             learning curves, trained policies, `mbgen eval`, `mbgen export`, `mbgen watch`
study/       studies: specs and presets, the runner, reports and their figures, time estimates
offline/     the paper's section 2 offline experiment (`mbgen offline`)
bench/       `mbgen bench`: throughput beside its references

Nothing below launch/ imports it. The public Python API is the `mbgen` package itself.
"""
