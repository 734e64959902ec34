"""Environment throughput: `python -m envs.bench` prints {"<env>": {"E1": steps/s, "E256": steps/s}}.

Steps per second count single-environment steps (E per `step` call), under
uniform random actions drawn in advance, resets included.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from mbgen import envs

BENCH_ENVS = {
    "panflute": {"num_pipes": 7},
    "buttongrid": {"grid_size": 5, "num_buttons": 4},
    "procmaze": {"grid_size": 4},
    "opengrid": {"grid_size": 4},
    "wallgrid3x3": {"walls": [[1, 0], [1, 1]]},
}
GOALS_E256 = {"panflute": 1_000_000, "buttongrid": 1_000_000, "procmaze": 200_000}


def steps_per_second(name: str, params: dict, num_envs: int, seconds: float) -> float:
    env = envs.make(name, num_envs, 0, **params)
    env.reset()
    actions = np.random.default_rng(0).integers(0, env.num_actions, (256, num_envs))
    for a in actions[:16]:  # warm up
        env.step(a)
    calls, start = 0, time.perf_counter()
    while True:
        for a in actions:
            env.step(a)
        calls += len(actions)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * num_envs / elapsed


def run(seconds: float = 1.0) -> dict[str, dict[str, float]]:
    return {
        name: {f"E{e}": round(steps_per_second(name, params, e, seconds)) for e in (1, 256)}
        for name, params in BENCH_ENVS.items()
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.seconds)))


if __name__ == "__main__":
    main()
