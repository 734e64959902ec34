"""PanFlute(n): n pipes, pipe i has i+1 cells; reward needs every pipe's end active at once.

Observation: the pipes concatenated, pipe i at features [i(i+1)/2, i(i+1)/2 + i],
cell 0 of a pipe is its bottom and cell i its end. Continuing.
"""

from __future__ import annotations

import numpy as np
from mbgen.envs.base import VectorEnv, require_int
from mbgen.envs.render import cells_rgb


def pipe_layout(num_pipes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bottom, end, shift_dst, shift_src) feature indices of the concatenated pipes."""
    starts = np.array([i * (i + 1) // 2 for i in range(num_pipes)], dtype=np.int64)
    bottom = starts
    end = starts + np.arange(num_pipes)
    dim = num_pipes * (num_pipes + 1) // 2
    shift_dst = np.setdiff1d(np.arange(dim), bottom)  # every cell above a bottom cell
    return bottom, end, shift_dst, shift_dst - 1


def panflute_transition(
    obs: np.ndarray,
    actions: np.ndarray,
    layout: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    event: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of PanFlute for K copies; `event[k]` marks a spontaneous all-ends activation."""
    bottom, end, shift_dst, shift_src = layout
    reward = obs[:, end].all(axis=1).astype(np.float32)
    next_obs = np.zeros_like(obs)
    next_obs[:, shift_dst] = obs[:, shift_src]
    next_obs[:, bottom] = actions[:, None] == np.arange(bottom.size)
    next_obs[:, end] |= event[:, None]
    return next_obs, reward, np.zeros(obs.shape[0], dtype=bool)


class PanFlute(VectorEnv):
    name = "panflute"
    episodic = False
    reward_range = (0.0, 1.0)

    def __init__(self, num_envs: int, seed: int, num_pipes: int = 7, spontaneous: bool = True):
        super().__init__(num_envs, seed, spontaneous)
        self.num_pipes = require_int("num_pipes", num_pipes, 1)
        self.num_actions = self.num_pipes
        self.obs_dim = self.num_pipes * (self.num_pipes + 1) // 2
        self.event_probability = 1.0 / self.num_pipes**2
        self.layout = pipe_layout(self.num_pipes)

    @property
    def params(self):
        return {"num_pipes": self.num_pipes, **super().params}

    def initial_obs(self, n, rng):
        return np.zeros((n, self.obs_dim), dtype=bool)

    def transition(self, obs, actions, rng):
        obs = self.check_obs(obs)
        actions = self.check_actions(actions, obs.shape[0])
        event = self.events(obs.shape[0], self.event_probability, rng)
        return panflute_transition(obs, actions, self.layout, event)

    def optimal_actions(self, obs: np.ndarray) -> np.ndarray:
        """The cycle n-1, n-2, ..., 0: each step activates the pipe one shorter than the last one
        activated. Every pipe end is then active together once every n steps, the most a policy
        can achieve: a success at T needs action i at T-1-i for every pipe i, so two successes are
        at least n steps apart. Spontaneous events do not depend on the actions.

        The last action is read off the active bottom cell of pipes 1.., which events never set
        (pipe 0's single cell is also its end); none active: the last action was 0, or there was
        none, and both continue with n-1."""
        obs = self.check_obs(obs)
        bottoms = obs[:, self.layout[0]]
        bottoms[:, 0] = False
        last = bottoms.argmax(axis=1)  # 0 when none is active
        return (last - 1) % self.num_pipes

    def render_text(self, obs: np.ndarray) -> str:
        """The pipes side by side, bottom cell at the bottom: # active, . inactive; a pipe's end is
        its top cell. The last line says whether every end is active (the next reward)."""
        bottom, end, _, _ = self.layout
        n = self.num_pipes
        lines = []
        for level in range(n - 1, -1, -1):
            lines.append(" ".join(("#" if obs[bottom[i] + level] else ".") if level <= i else " " for i in range(n)))
        lines.append(" ".join(str(i % 10) for i in range(n)))
        lines.append("all ends active: reward 1" if obs[end].all() else "")
        return "\n".join(lines)

    def render_rgb(self, obs: np.ndarray) -> np.ndarray:
        """Pipes as columns of cells: green active, red inactive end, light inactive cell."""
        bottom, end, _, _ = self.layout
        n = self.num_pipes
        names = [
            [
                "none" if level > i else "on" if obs[bottom[i] + level] else "off" if level == i else "empty"
                for i in range(n)
            ]
            for level in range(n - 1, -1, -1)
        ]
        return cells_rgb(names)

    def active_ends(self, obs: np.ndarray) -> np.ndarray:
        """Number of active pipe ends per observation (the paper's Figure 4 axis)."""
        return obs[:, self.layout[1]].sum(axis=1)
