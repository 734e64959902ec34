"""Scores on the evaluation protocol, and the scale they live on: random and optimal scores.

The protocol (PAPER.md section 4): episodes of at most L steps (`eval_steps`,
100) from fresh starts, stepped with the true dynamics. Episodic environments
score the return (rewards until and including the first terminal step),
continuing ones the reward rate (mean reward per step over the L steps). `play`
is that loop; the evaluator and the reference scores below both use it.

Reference scores, so that 0.004 on ButtonGrid can be read:
  random   uniform random actions
  optimal  the environment's optimal policy (`optimal_actions`: the PanFlute
           cycle, breadth-first shortest paths in the mazes, a breadth-first route
           over ButtonGrid's (cell, buttons-on) states)
PanFlute's are exact (closed forms below, checked against simulation in the
tests). Every other one is a Monte-Carlo estimate: REFERENCE_EPISODES episodes of
the protocol from a fixed seed, reported with its standard error. Estimates for
the paper's settings are cached in envs/reference_scores.json (`python -m
envs.scores` rewrites it); others are computed on first use, in seconds.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import numpy as np
from mbgen.envs.registry import make, spec
from mbgen.envs.seeding import derive_seed

EVAL_STEPS = 100  # the paper's evaluation episode length (RunConfig.eval_steps defaults to it)
REFERENCE_EPISODES = 1000
REFERENCE_SEED = 20221104  # fixed: the estimates are reproducible
CACHE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_scores.json")
# The settings cached in reference_scores.json: the paper's environments at the sizes it reports.
CACHED_SETTINGS = (
    [("panflute", {"num_pipes": n}) for n in range(1, 10)]
    + [("buttongrid", {"grid_size": 5, "num_buttons": b}) for b in range(1, 6)]
    + [("procmaze", {"grid_size": n}) for n in range(2, 9)]
    + [("opengrid", {"grid_size": n}) for n in range(2, 9)]
    + [("wallgrid3x3", {})]
)

Act = Callable[[np.ndarray], np.ndarray]


def play(group_envs: list, act: Act, steps: int) -> np.ndarray:
    """Scores [M, E] of M groups of E episodes (one vector env per group), stepped together.

    `act(obs bool [M, E, D]) -> actions [M, E]`. Each group's environment draws its events from
    its own generator, so a group's scores do not depend on the other groups."""
    obs = np.stack([env.reset() for env in group_envs])
    episodic = group_envs[0].episodic
    total = np.zeros(obs.shape[:2], np.float64)
    alive = np.ones(obs.shape[:2], bool)
    for _ in range(steps):
        actions = act(obs)
        for m, env in enumerate(group_envs):
            obs[m], reward, terminal = env.transition(obs[m], actions[m], env.rng)
            total[m] += reward * alive[m]
            if episodic:
                alive[m] &= ~terminal
    return total if episodic else total / steps


# -- exact values ----------------------------------------------------------------------------------
def panflute_optimal(num_pipes: int, spontaneous: bool = True, steps: int = EVAL_STEPS) -> float:
    """Reward rate of the optimal cycle over `steps` steps from all pipes off.

    The reward at step T is 1 when every end is active: scheduled by actions i at T-1-i (first at
    T = n, then every n steps: k = floor((L-1)/n) successes) or set by an event at T-1 (probability
    p = 1/n^2, independent of the actions, for T >= 1). Expected total: k + (L-1-k) p."""
    n, L = num_pipes, steps
    p = 1.0 / n**2 if spontaneous else 0.0
    k = (L - 1) // n
    return (k + (L - 1 - k) * p) / L


def panflute_random(num_pipes: int, spontaneous: bool = True, steps: int = EVAL_STEPS) -> float:
    """Reward rate of uniform random actions: a scheduled success at T >= n has probability
    q = n^-n, an event at T-1 probability p, independently: P(reward at T) = q + p - qp for T >= n,
    p for 1 <= T < n, 0 at T = 0."""
    n, L = num_pipes, steps
    p = 1.0 / n**2 if spontaneous else 0.0
    q = float(n) ** -n
    late = max(L - n, 0)
    return (late * (q + p - q * p) + (min(n, L) - 1) * p) / L


# -- estimates -------------------------------------------------------------------------------------
def estimate(name: str, params: dict[str, Any], policy: str, steps: int = EVAL_STEPS, episodes: int = 0) -> dict:
    """Monte-Carlo score of `policy` ("random" or "optimal") on the protocol: mean and standard error."""

    episodes = episodes or REFERENCE_EPISODES
    env = make(name, episodes, derive_seed(REFERENCE_SEED, name, policy), **params)
    rng = np.random.default_rng(derive_seed(REFERENCE_SEED, name, policy, "actions"))
    if policy == "random":
        act: Act = lambda obs: rng.integers(0, env.num_actions, obs.shape[:2])  # noqa: E731
    else:
        act = lambda obs: env.optimal_actions(obs[0])[None]  # noqa: E731
    scores = play([env], act, steps)[0]
    return {
        "score": float(scores.mean()),
        "se": float(scores.std(ddof=1) / math.sqrt(scores.size)),
        "method": f"monte carlo, {scores.size} episodes",
    }


def compute_reference(name: str, params: dict[str, Any], steps: int = EVAL_STEPS) -> dict:
    """{"random": {...}, "optimal": {...}, "unit", "range"} for one environment setting (params complete)."""
    setting = spec(name, **params)
    out: dict[str, Any] = {"unit": setting.unit, "range": list(setting.score_range(steps))}
    if name == "panflute":
        n, spontaneous = setting.params["num_pipes"], setting.params["spontaneous"]
        out["random"] = {"score": panflute_random(n, spontaneous, steps), "se": 0.0, "method": "exact"}
        out["optimal"] = {"score": panflute_optimal(n, spontaneous, steps), "se": 0.0, "method": "exact"}
        return out
    out["random"] = estimate(name, params, "random", steps)
    try:
        out["optimal"] = estimate(name, params, "optimal", steps)
    except NotImplementedError as error:
        out["optimal"] = {"score": None, "se": None, "method": f"not computed: {error}"}
    return out


def _key(name: str, params: dict[str, Any], steps: int) -> str:
    return f"{name} {json.dumps(params, sort_keys=True)} steps={steps}"


_memo: dict[str, dict] = {}


def reference_scores(name: str, params: dict[str, Any] | None = None, steps: int = EVAL_STEPS) -> dict:
    """The random and optimal scores of an environment setting: from the cache when it holds
    them, else computed (and remembered for this process)."""
    full = spec(name, **(params or {})).params  # the complete parameters, defaults included
    key = _key(name, full, steps)
    if key not in _memo:
        cached = {}
        if os.path.exists(CACHE_PATH):
            with open(CACHE_PATH) as f:
                cached = json.load(f)
        _memo[key] = cached[key] if key in cached else compute_reference(name, full, steps)
    return _memo[key]


def write_cache(path: str = CACHE_PATH) -> dict:
    """Compute every setting of CACHED_SETTINGS (with and without spontaneous events) and write them."""
    table = {}
    for name, params in CACHED_SETTINGS:
        for spontaneous in (True, False):
            full = spec(name, **params, spontaneous=spontaneous).params
            table[_key(name, full, EVAL_STEPS)] = compute_reference(name, full, EVAL_STEPS)
    with open(path, "w") as f:
        json.dump(table, f, indent=1, sort_keys=True)
        f.write("\n")
    return table


if __name__ == "__main__":
    for key, value in write_cache().items():
        print(f"{key}: random {value['random']['score']:.4f}  optimal {value['optimal']['score']}")
