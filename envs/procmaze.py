"""ProcMaze(N) and OpenGrid(N): reach the goal; -1 per step; episodic.

ProcMaze channels (feature = cell*4 + channel): player, goal, wall, empty. Each
episode carves a new maze by randomised depth-first search, so open cells form
a tree. The episode ends on the step *after* the goal is reached (terminal is
read off the current state). A spontaneous event teleports the agent onto the
goal with probability 0.1 / ((N+1) ceil(N/2) - N mod 2), a tenth of the inverse
of the longest optimal path.

OpenGrid is the control case without walls or factored structure: one player
channel, the goal fixed in the bottom-right cell, teleport probability 0.1/N.
"""

from __future__ import annotations

import math

import numpy as np
from mbgen.envs.base import VectorEnv, require_int
from mbgen.envs.grid import NUM_GRID_ACTIONS, DistanceCache, descend, distances_to, move_table, neighbours
from mbgen.envs.render import maze_rgb, maze_text

PLAYER, GOAL, WALL, EMPTY = range(4)
CHANNELS = 4


def carve_maze(grid_size: int, nbrs: list[list[int]], u: np.ndarray) -> list[bool]:
    """Randomised depth-first carve on a grid_size^2 grid; returns which cells are open.

    A neighbour of the current cell may be opened if it is unvisited and its only
    open neighbour is the current cell; `u` supplies uniforms in [0, 1), one for
    the start cell and one per opened cell (at most grid_size^2 in all).
    """
    cells = grid_size * grid_size
    is_open = [False] * cells
    open_nbrs = [0] * cells  # how many open neighbours each cell has
    draws = iter(u.tolist())

    def open_cell(c: int) -> None:
        is_open[c] = True
        for m in nbrs[c]:
            open_nbrs[m] += 1

    start = int(next(draws) * cells)
    open_cell(start)
    stack = [start]
    while stack:
        c = stack[-1]
        candidates = [m for m in nbrs[c] if not is_open[m] and open_nbrs[m] == 1]
        if candidates:
            m = candidates[int(next(draws) * len(candidates))]
            open_cell(m)
            stack.append(m)
        else:
            stack.pop()
    return is_open


def procmaze_layouts(n: int, grid_size: int, nbrs: list[list[int]], rng: np.random.Generator) -> np.ndarray:
    """n fresh episodes: a carved maze, then start and goal drawn uniformly from its open cells."""
    cells = grid_size * grid_size
    obs = np.zeros((n, cells * CHANNELS), dtype=bool)
    u = rng.random((n, cells + 2))
    for i in range(n):
        is_open = np.array(carve_maze(grid_size, nbrs, u[i, :cells]))
        open_cells = np.flatnonzero(is_open)
        player = open_cells[int(u[i, cells] * open_cells.size)]
        goal = open_cells[int(u[i, cells + 1] * open_cells.size)]
        obs[i, WALL::CHANNELS] = ~is_open
        obs[i, EMPTY::CHANNELS] = is_open
        obs[i, player * CHANNELS + PLAYER] = True
        obs[i, goal * CHANNELS + GOAL] = True
    return obs


def maze_transition(
    pos: np.ndarray,
    goal: np.ndarray,
    blocked: np.ndarray | None,
    actions: np.ndarray,
    moves: np.ndarray,
    event: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(new_pos, reward, terminal) for positions on a grid with optional walls (blocked[k, cell])."""
    terminal = pos == goal
    new_pos = moves[pos, actions]
    if blocked is not None:
        new_pos = np.where(blocked[np.arange(pos.size), new_pos], pos, new_pos)
    new_pos = np.where(event, goal, new_pos)
    return new_pos, np.full(pos.size, -1.0, dtype=np.float32), terminal


def teleport_probability(grid_size: int) -> float:
    return 0.1 / ((grid_size + 1) * math.ceil(grid_size / 2) - grid_size % 2)


class ProcMaze(VectorEnv):
    name = "procmaze"
    episodic = True
    reward_range = (-1.0, -1.0)

    def __init__(self, num_envs: int, seed: int, grid_size: int = 4, spontaneous: bool = True):
        super().__init__(num_envs, seed, spontaneous)
        self.grid_size = require_int("grid_size", grid_size, 2)
        self.num_actions = NUM_GRID_ACTIONS
        self.obs_dim = self.grid_size**2 * CHANNELS
        self.event_probability = teleport_probability(self.grid_size)
        self.moves = move_table(self.grid_size)
        self.nbrs = neighbours(self.grid_size)
        self._distances = DistanceCache(self.moves)  # for optimal_actions

    @property
    def params(self):
        return {"grid_size": self.grid_size, **super().params}

    def initial_obs(self, n, rng):
        return procmaze_layouts(n, self.grid_size, self.nbrs, rng)

    def transition(self, obs, actions, rng):
        obs = self.check_obs(obs)
        actions = self.check_actions(actions, obs.shape[0])
        rows = np.arange(obs.shape[0])
        pos = obs[:, PLAYER::CHANNELS].argmax(axis=1)
        goal = obs[:, GOAL::CHANNELS].argmax(axis=1)
        event = self.events(obs.shape[0], self.event_probability, rng)
        new_pos, reward, terminal = maze_transition(pos, goal, obs[:, WALL::CHANNELS], actions, self.moves, event)
        next_obs = obs.copy()
        next_obs[rows, pos * CHANNELS + PLAYER] = False
        next_obs[rows, new_pos * CHANNELS + PLAYER] = True
        return next_obs, reward, terminal

    def optimal_actions(self, obs: np.ndarray) -> np.ndarray:
        """A shortest-path action per observation (breadth-first search in its own maze).

        Teleports do not depend on the action, so this is an optimal policy."""
        obs = self.check_obs(obs)
        walls = obs[:, WALL::CHANNELS]
        dist = self._distances(obs[:, GOAL::CHANNELS].argmax(axis=1), walls)
        return descend(dist, obs[:, PLAYER::CHANNELS].argmax(axis=1), self.moves, walls)

    def render_text(self, obs: np.ndarray) -> str:
        """One observation as text: # wall, . open, G goal, A agent (* agent on the goal)."""
        return maze_text(self.grid_size, obs[PLAYER::CHANNELS], obs[GOAL::CHANNELS], obs[WALL::CHANNELS])

    def render_rgb(self, obs: np.ndarray) -> np.ndarray:
        return maze_rgb(self.grid_size, obs[PLAYER::CHANNELS], obs[GOAL::CHANNELS], obs[WALL::CHANNELS])


class OpenGrid(VectorEnv):
    name = "opengrid"
    episodic = True
    reward_range = (-1.0, -1.0)

    def __init__(self, num_envs: int, seed: int, grid_size: int = 4, spontaneous: bool = True):
        super().__init__(num_envs, seed, spontaneous)
        self.grid_size = require_int("grid_size", grid_size, 2)
        self.num_actions = NUM_GRID_ACTIONS
        self.obs_dim = self.grid_size**2
        self.goal = self.grid_size**2 - 1
        self.event_probability = 0.1 / self.grid_size
        self.moves = move_table(self.grid_size)

    @property
    def params(self):
        return {"grid_size": self.grid_size, **super().params}

    def initial_obs(self, n, rng):
        obs = np.zeros((n, self.obs_dim), dtype=bool)
        obs[np.arange(n), rng.integers(0, self.obs_dim, n)] = True
        return obs

    def transition(self, obs, actions, rng):
        obs = self.check_obs(obs)
        actions = self.check_actions(actions, obs.shape[0])
        pos = obs.argmax(axis=1)
        event = self.events(obs.shape[0], self.event_probability, rng)
        goal = np.full_like(pos, self.goal)
        new_pos, reward, terminal = maze_transition(pos, goal, None, actions, self.moves, event)
        next_obs = np.zeros_like(obs)
        next_obs[np.arange(obs.shape[0]), new_pos] = True
        return next_obs, reward, terminal

    def optimal_actions(self, obs: np.ndarray) -> np.ndarray:
        """A shortest-path action toward the fixed goal (teleports do not depend on the action)."""
        obs = self.check_obs(obs)
        dist = np.broadcast_to(distances_to(self.goal, self.moves), obs.shape)
        return descend(dist, obs.argmax(axis=1), self.moves)

    def _goal_mask(self) -> np.ndarray:
        goal = np.zeros(self.obs_dim, dtype=bool)
        goal[self.goal] = True
        return goal

    def render_text(self, obs: np.ndarray) -> str:
        """One observation as text: . open, G goal, A agent (* agent on the goal)."""
        return maze_text(self.grid_size, obs, self._goal_mask(), np.zeros(self.obs_dim, dtype=bool))

    def render_rgb(self, obs: np.ndarray) -> np.ndarray:
        return maze_rgb(self.grid_size, obs, self._goal_mask(), np.zeros(self.obs_dim, dtype=bool))
