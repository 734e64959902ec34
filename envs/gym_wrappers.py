"""Single-environment Gymnasium wrappers: gymnasium.make("mbgen/ProcMaze-v0", grid_size=4).

Observations are MultiBinary(obs_dim) int8 arrays, actions Discrete(num_actions).
Episodic environments terminate; continuing ones run until the TimeLimit of 100
steps (the paper's evaluation length), which callers may change with
`max_episode_steps`. `render_mode="ansi"` renders the state as text,
`"rgb_array"` as an image (envs/render.py).
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from mbgen.envs.registry import ENVIRONMENTS, make

GYM_IDS = {f"mbgen/{cls.__name__}-v0": name for name, cls in ENVIRONMENTS.items()}  # e.g. mbgen/ProcMaze-v0


class MbgenEnv(gymnasium.Env):
    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, env_name: str, render_mode: str | None = None, **params: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None, ansi or rgb_array, got {render_mode!r}")
        self.render_mode = render_mode
        self._name = env_name
        self._params = params
        self._env = make(env_name, 1, 0, **params)
        self.observation_space = spaces.MultiBinary(self._env.obs_dim)
        self.action_space = spaces.Discrete(self._env.num_actions)
        self._obs: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # self.np_random is Gymnasium's seeded generator; the dynamics draw from it.
        self._obs = self._env.initial_obs(1, self.np_random)
        return self._obs[0].astype(np.int8), {}

    def step(self, action):
        if self._obs is None:
            raise RuntimeError("call reset() before step()")
        if not self.action_space.contains(action):
            raise ValueError(f"action must be in [0, {self.action_space.n - 1}], got {action!r}")
        next_obs, reward, terminal = self._env.transition(self._obs, np.array([int(action)]), self.np_random)
        self._obs = next_obs
        return next_obs[0].astype(np.int8), float(reward[0]), bool(terminal[0]), False, {}

    def render(self):
        if self.render_mode is None or self._obs is None:
            return None
        if self.render_mode == "ansi":
            return self._env.render_text(self._obs[0]) + "\n"
        return self._env.render_rgb(self._obs[0])


def register() -> None:
    """Register the mbgen/*-v0 ids (idempotent): on `import mbgen`, and from the entry point."""
    for gym_id, name in GYM_IDS.items():
        if gym_id not in gymnasium.registry:
            gymnasium.register(
                id=gym_id,
                entry_point="mbgen.envs.gym_wrappers:MbgenEnv",
                kwargs={"env_name": name},
                max_episode_steps=100,
            )


register()
