"""ButtonGrid(N, b): turn every button on by stepping onto it; reward the step after.

Channels (channel-last, feature = cell*3 + channel): player, button_on, button_off.
A button toggles only when the agent *moves* onto it. With probability
1/(10 N^2) a spontaneous event turns every button on. On success (all buttons on
in the current state) the reward is 1 and the layout resets. Continuing.
"""

from __future__ import annotations

import numpy as np
from mbgen.envs.base import VectorEnv, require_int
from mbgen.envs.grid import NUM_GRID_ACTIONS, move_table
from mbgen.envs.render import cells_rgb

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


MAX_PLANNED_BUTTONS = 10  # optimal_actions searches grid_size^2 x 2^b states per layout


def buttongrid_plan(moves: np.ndarray, buttons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(moves left to all-on [cells, 2^b], next state [cells, 2^b, A]) for one layout.

    A state is (cell, on-mask), numbered cell * 2^b + mask; bit j of the mask is button
    `buttons[j]` on. Moving onto a button toggles it; staying or bumping an edge does not.
    Value iteration of dist(s) = 1 + min_a dist(next(s, a)), with dist = 0 where the mask is
    full, converges to the breadth-first distances."""
    cells, b = moves.shape[0], buttons.size
    index = np.full(cells, -1)
    index[buttons] = np.arange(b)
    moved_onto = (index[moves] >= 0) & (moves != np.arange(cells)[:, None])  # [cells, A]
    toggles = np.where(moved_onto, 1 << np.maximum(index[moves], 0), 0)
    next_state = moves[:, None, :] * (1 << b) + (np.arange(1 << b)[None, :, None] ^ toggles[:, None, :])
    dist = np.full((cells, 1 << b), cells << b, dtype=np.int64)
    dist[:, -1] = 0
    while True:
        better = np.minimum(dist, 1 + dist.reshape(-1)[next_state].min(axis=2))
        better[:, -1] = 0
        if (better == dist).all():
            return dist, next_state
        dist = better


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
        self._plans: dict[bytes, tuple] = {}  # button cells -> buttongrid_plan (optimal_actions)

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

    def optimal_actions(self, obs: np.ndarray) -> np.ndarray:
        """The first move of a shortest route to every button on (searched over cell x on-mask states
        of the layout). Spontaneous events and the fresh layout after a success do not depend on the
        actions, so reaching all-on soonest, every time, is optimal."""
        obs = self.check_obs(obs)
        if self.num_buttons > MAX_PLANNED_BUTTONS:
            raise NotImplementedError(f"buttongrid: no optimal search beyond {MAX_PLANNED_BUTTONS} buttons")
        if len(self._plans) > 20_000:
            self._plans.clear()
        actions = np.zeros(obs.shape[0], dtype=np.int64)
        for k, row in enumerate(obs):
            buttons = np.flatnonzero(row[BUTTON_ON::CHANNELS] | row[BUTTON_OFF::CHANNELS])
            key = buttons.tobytes()
            if key not in self._plans:
                self._plans[key] = buttongrid_plan(self.moves, buttons)
            dist, next_state = self._plans[key]
            mask = int((row[buttons * CHANNELS + BUTTON_ON].astype(np.int64) << np.arange(buttons.size)).sum())
            actions[k] = int(dist.reshape(-1)[next_state[row[PLAYER::CHANNELS].argmax(), mask]].argmin())
        return actions

    def render_text(self, obs: np.ndarray) -> str:
        """One observation as text: . empty, o button off, O button on, A agent (a, @ on an off/on button)."""
        n, lines = self.grid_size, []
        for r in range(n):
            row = ""
            for c in range(n):
                i = (r * n + c) * CHANNELS
                if obs[i + PLAYER]:
                    row += "@" if obs[i + BUTTON_ON] else "a" if obs[i + BUTTON_OFF] else "A"
                else:
                    row += "O" if obs[i + BUTTON_ON] else "o" if obs[i + BUTTON_OFF] else "."
            lines.append(row)
        return "\n".join(lines)

    def render_rgb(self, obs: np.ndarray) -> np.ndarray:
        """Buttons green (on) or red (off), the agent a blue disc."""
        n = self.grid_size
        on, off, agent = (obs[ch::CHANNELS].reshape(n, n) for ch in (BUTTON_ON, BUTTON_OFF, PLAYER))
        names = [["on" if on[r, c] else "off" if off[r, c] else "empty" for c in range(n)] for r in range(n)]
        marks = agent.tolist()
        return cells_rgb(names, marks)
