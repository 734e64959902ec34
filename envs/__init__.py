"""Vectorised numpy environments of the paper, a registry, and Gymnasium wrappers.

spec = envs.spec("procmaze", grid_size=4)          # obs_dim, num_actions, episodic, score range
env = envs.make("procmaze", num_envs=256, seed=0, grid_size=4)
obs = env.reset()                                  # bool [E, obs_dim]
next_obs, reward, terminal, obs = env.step(actions)
next_obs, reward, terminal = env.transition(obs, actions, rng)   # true dynamics
"""

from __future__ import annotations

from mbgen.envs.base import EnvSpec, Transitions, VectorEnv
from mbgen.envs.registry import ENVIRONMENTS, env_params, environment_class, make, spec
from mbgen.envs.seeding import derive_seed

__all__ = [
    "ENVIRONMENTS", "EnvSpec", "Transitions", "VectorEnv", "derive_seed", "env_params", "environment_class", "make",
    "spec",
]  # fmt: skip
