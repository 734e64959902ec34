"""Device and thread choice for the compute processes (learner, model server).

Each process sets its own torch thread count so that the processes of a run do not
oversubscribe the machine's cores.
"""

from __future__ import annotations

import os

DEVICES = ("auto", "cpu", "cuda")


def choose_device(name: str):
    """`auto` is CUDA when present, else the CPU; `cuda` without CUDA is refused (a torch.device)."""
    import torch  # here, not at the top: the configuration reads DEVICES without loading torch

    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device must be auto or cpu on this machine: CUDA is not available")
    return torch.device(name)


def parallelism(members: int, workers: int, threads: int, compute_processes: int) -> tuple[int, int]:
    """(member-parallel workers, torch threads per worker) of one compute process; sets torch's threads.

    `workers` and `threads` are the configured values (0 = auto). Auto, with C cores: a population of
    at least C members is split over C workers of one thread each, in every compute process, so the
    operating system can fill every core with coarse pieces of work. A smaller population runs as one
    batch; a run's compute processes (1 for ER, 2 with a model server) share the cores inside each
    matrix product.
    """
    import torch

    cores = os.cpu_count() or 1
    workers = workers or (cores if members >= cores else 1)
    if not threads:
        threads = 1 if workers > 1 else max(1, cores // compute_processes)
    torch.set_num_threads(threads)
    return workers, threads
