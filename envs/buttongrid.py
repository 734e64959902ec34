"""ButtonGrid(N, b): turn every button on by stepping onto it; reward the step after.

Channels (channel-last, feature = cell*3 + channel): player, button_on, button_off.
A button toggles only when the agent *moves* onto it. With probability
1/(10 N^2) a spontaneous event turns every button on. On success (all buttons on
in the current state) the reward is 1 and the layout resets. Continuing.
"""

from __future__ import annotations

import numpy as np

from envs.base import VectorEnv, require_int
from envs.grid import NUM_GRID_ACTIONS, move_table

PLAYER, BUTTON_ON, BUTTON_OFF = range(3)
CHANNELS = 3


def buttongrid_layouts(n: int, grid_size: int, num_buttons: int, rng: np.random.Generator) -> np.ndarray:
    """n fresh layouts: a uniform player cell and b distinct uniform button cells, all off."""
    cells = grid_size * grid_size
    obs = np.zeros((n, cells * CHANNELS), dtype=bool)
    rows = np.arange(n)
    obs[rows, rng.integers(0, cells, n) * CHANNELS + PLAYER] = True
    buttons = np.argsort(rng.random((n, cells)), axis=1)[:, :num_buttons]
    obs[rows[:, None], buttons * CHANNELS + BUTTON_OFF] = True
    return obs


def buttongrid_transition(
    obs: np.ndarray, actions: np.ndarray, moves: np.ndarray, event: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step for K copies, except the layout reset on success, which the caller does.

    Returns (next_obs, reward, success); rows where `success` is set still need
    a fresh layout.
    """
    k = obs.shape[0]
    rows = np.arange(k)
    success = ~obs[:, BUTTON_OFF::CHANNELS].any(axis=1)
    pos = obs[:, PLAYER::CHANNELS].argmax(axis=1)
    new_pos = moves[pos, actions]
    next_obs = obs.copy()
    next_obs[rows, pos * CHANNELS + PLAYER] = False
    next_obs[rows, new_pos * CHANNELS + PLAYER] = True
    on_button = obs[rows, new_pos * CHANNELS + BUTTON_ON] | obs[rows, new_pos * CHANNELS + BUTTON_OFF]
    toggle = np.flatnonzero((new_pos != pos) & on_button)
    if toggle.size:
        cell = new_pos[toggle] * CHANNELS
        next_obs[toggle, cell + BUTTON_ON] = ~next_obs[toggle, cell + BUTTON_ON]
        next_obs[toggle, cell + BUTTON_OFF] = ~next_obs[toggle, cell + BUTTON_OFF]
    fired = np.flatnonzero(event)
    if fired.size:
        next_obs[fired, BUTTON_ON::CHANNELS] |= next_obs[fired, BUTTON_OFF::CHANNELS]
        next_obs[fired, BUTTON_OFF::CHANNELS] = False
    return next_obs, success.astype(np.float32), success


class ButtonGrid(VectorEnv):
    name = "buttongrid"
    episodic = False
    reward_range = (0.0, 1.0)

    def __init__(self, num_envs: int, seed: int, grid_size: int = 5, num_buttons: int = 4, spontaneous: bool = True):
        super().__init__(num_envs, seed, spontaneous)
        self.grid_size = require_int("grid_size", grid_size, 2)
        self.num_buttons = require_int("num_buttons", num_buttons, 1, self.grid_size**2)
        self.num_actions = NUM_GRID_ACTIONS
        self.obs_dim = self.grid_size**2 * CHANNELS
        self.event_probability = 1.0 / (10 * self.grid_size**2)
        self.moves = move_table(self.grid_size)

    @property
    def params(self):
        return {"grid_size": self.grid_size, "num_buttons": self.num_buttons, **super().params}

    def initial_obs(self, n, rng):
        return buttongrid_layouts(n, self.grid_size, self.num_buttons, rng)

    def transition(self, obs, actions, rng):
        obs = self.check_obs(obs)
        actions = self.check_actions(actions, obs.shape[0])
        event = self.events(obs.shape[0], self.event_probability, rng)
        next_obs, reward, success = buttongrid_transition(obs, actions, self.moves, event)
        done = np.flatnonzero(success)
        if done.size:
            next_obs[done] = self.initial_obs(done.size, rng)
        return next_obs, reward, np.zeros(obs.shape[0], dtype=bool)
