"""The environment registry: names, parameters, building (`make`) and settings (`spec`)."""

from __future__ import annotations

import inspect
from typing import Any

from mbgen.envs.base import EnvSpec, VectorEnv
from mbgen.envs.buttongrid import ButtonGrid
from mbgen.envs.panflute import PanFlute
from mbgen.envs.procmaze import OpenGrid, ProcMaze
from mbgen.envs.wallgrid import WallGrid3x3

ENVIRONMENTS: dict[str, type[VectorEnv]] = {
    "panflute": PanFlute,
    "buttongrid": ButtonGrid,
    "procmaze": ProcMaze,
    "opengrid": OpenGrid,
    "wallgrid3x3": WallGrid3x3,
}


def env_params(name: str) -> dict[str, Any]:
    """The parameters an environment takes, with their defaults."""
    cls = environment_class(name)
    sig = inspect.signature(cls.__init__)
    return {p: v.default for p, v in sig.parameters.items() if p not in ("self", "num_envs", "seed")}


def environment_class(name: str) -> type[VectorEnv]:
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}; choose one of: {', '.join(ENVIRONMENTS)}")
    return ENVIRONMENTS[name]


def make(name: str, num_envs: int = 1, seed: int = 0, **params: Any) -> VectorEnv:
    """Build `num_envs` copies of environment `name`, seeded, with its parameters."""
    allowed = env_params(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has no parameter {', '.join(unknown)}; its parameters are: {', '.join(allowed)}")
    return environment_class(name)(num_envs, seed, **params)


def spec(name: str, **params: Any) -> EnvSpec:
    """The setting's dimensions, kind and complete parameters (validated), without keeping an environment."""
    return make(name, 1, 0, **params).spec
