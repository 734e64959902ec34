"""WallGrid3x3: the paper's section 2 offline example, with its layouts and datasets.

A 3x3 grid, goal in the top-left cell, walls fixed within an episode. Reward -1
per step; *entering* the goal ends the episode. Observation (36 bits, four
blocks of 9 in row-major cell order): agent one-hot, goal one-hot, wall present,
wall absent. There are no spontaneous events in this environment; the
`spontaneous` flag is accepted for a uniform interface and changes nothing.

Datasets (paper section 2): every one holds the *basic set* (every transition of
every layout with a single wall in one of the 8 non-goal cells) plus some
transitions of the two *evaluation layouts*, walls {(1,0),(1,1)} and its mirror
{(0,1),(1,1)}, each leaving one open path of six moves from the far corner to the
goal:
  all     every transition of the evaluation layouts
  path    only the transitions that follow the path to the goal
  single  only the transitions from the far corner
  none    none of them
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Sequence

import numpy as np
from mbgen.envs.base import Transitions, VectorEnv
from mbgen.envs.grid import MOVES, NUM_GRID_ACTIONS, DistanceCache, descend, move_table
from mbgen.envs.render import maze_rgb, maze_text

SIZE = 3
CELLS = SIZE * SIZE
GOAL_CELL = (0, 0)
OBS_DIM = 4 * CELLS
AGENT, GOAL, WALL, EMPTY = (slice(i * CELLS, (i + 1) * CELLS) for i in range(4))

Cell = tuple[int, int]
Layout = tuple[Cell, ...]

BASIC_LAYOUTS: tuple[Layout, ...] = tuple(((r, c),) for r in range(SIZE) for c in range(SIZE) if (r, c) != GOAL_CELL)
EVALUATION_LAYOUTS: tuple[Layout, ...] = (((1, 0), (1, 1)), ((0, 1), (1, 1)))
COVERAGES = ("all", "path", "single", "none")
COVERAGE_NAMES = {"all": "All-Evaluation", "path": "Path-to-Goal", "single": "Single-Cell", "none": "No-Evaluation"}

_MOVES = move_table(SIZE)


def check_layout(walls: Iterable[Sequence[int]]) -> Layout:
    """Validate wall cells: on the grid, distinct, not the goal, at least one open non-goal cell."""
    layout = []
    for w in walls:
        if (
            len(w) != 2
            or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in w)
            or not all(0 <= x < SIZE for x in w)
        ):
            raise ValueError(
                f"walls: each wall must be a [row, col] pair with row and col in [0, {SIZE - 1}], got {w!r}"
            )
        cell = (int(w[0]), int(w[1]))
        if cell == GOAL_CELL:
            raise ValueError(f"walls: a wall may not be on the goal cell {list(GOAL_CELL)}")
        if cell in layout:
            raise ValueError(f"walls: wall {list(cell)} is listed twice")
        layout.append(cell)
    if len(layout) > CELLS - 2:
        raise ValueError(f"walls: at most {CELLS - 2} walls leave a cell to start from, got {len(layout)}")
    return tuple(sorted(layout))


def flat(cell: Cell) -> int:
    return cell[0] * SIZE + cell[1]


def open_cells(walls: Layout) -> list[Cell]:
    """Cells the agent can occupy before the episode ends: not a wall, not the goal."""
    return [(r, c) for r in range(SIZE) for c in range(SIZE) if (r, c) not in walls and (r, c) != GOAL_CELL]


def layout_obs(walls: Layout, cells: Sequence[Cell]) -> np.ndarray:
    """Observations of the agent in each of `cells` of one layout, bool [len(cells), 36]."""
    obs = np.zeros((len(cells), OBS_DIM), dtype=bool)
    wall = np.zeros(CELLS, dtype=bool)
    wall[[flat(w) for w in walls]] = True
    obs[:, WALL] = wall
    obs[:, EMPTY] = ~wall
    obs[:, GOAL.start + flat(GOAL_CELL)] = True
    obs[np.arange(len(cells)), [flat(c) for c in cells]] = True
    return obs


def wallgrid_transition(obs: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic dynamics for K observations (each carries its own walls)."""
    rows = np.arange(obs.shape[0])
    pos = obs[:, AGENT].argmax(axis=1)
    goal = obs[:, GOAL].argmax(axis=1)
    new_pos = _MOVES[pos, actions]
    new_pos = np.where(obs[:, WALL][rows, new_pos], pos, new_pos)
    next_obs = obs.copy()
    next_obs[:, AGENT] = False
    next_obs[rows, new_pos] = True
    return next_obs, np.full(obs.shape[0], -1.0, dtype=np.float32), new_pos == goal


def goal_distances(walls: Layout) -> np.ndarray:
    """Moves from each cell to the goal (inf where unreachable or a wall), shape [3, 3]."""
    dist = np.full((SIZE, SIZE), np.inf)
    dist[GOAL_CELL] = 0
    queue = deque([GOAL_CELL])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES[1:]:
            n = (r + int(dr), c + int(dc))
            if 0 <= n[0] < SIZE and 0 <= n[1] < SIZE and n not in walls and dist[n] == np.inf:
                dist[n] = dist[r, c] + 1
                queue.append(n)
    return dist


def optimal_actions(walls: Layout) -> np.ndarray:
    """optimal[r, c, a]: action a is optimal in cell (r, c); all False on walls and the goal."""
    walls = check_layout(walls)
    dist = goal_distances(walls)
    best = np.zeros((SIZE, SIZE, NUM_GRID_ACTIONS), dtype=bool)
    for r, c in open_cells(walls):
        if dist[r, c] == np.inf:
            continue
        for a in range(NUM_GRID_ACTIONS):
            n = divmod(int(_MOVES[flat((r, c)), a]), SIZE)
            if n in walls:
                n = (r, c)
            best[r, c, a] = dist[n] == dist[r, c] - 1
    return best


def far_corner(walls: Layout) -> Cell:
    """The reachable cell furthest from the goal along open paths."""
    dist = goal_distances(check_layout(walls))
    dist[np.isinf(dist)] = -1
    return divmod(int(dist.argmax()), SIZE)


def path_to_goal(walls: Layout) -> list[tuple[Cell, int]]:
    """(cell, optimal action) along the shortest path from the far corner to the goal."""
    best = optimal_actions(walls)
    cell, steps = far_corner(walls), []
    while cell != GOAL_CELL:
        action = int(np.flatnonzero(best[cell])[0])
        steps.append((cell, action))
        cell = divmod(int(_MOVES[flat(cell), action]), SIZE)
    return steps


def layout_transitions(walls: Layout, pairs: Sequence[tuple[Cell, int]] | None = None) -> Transitions:
    """Transitions of one layout for (cell, action) pairs; default every open cell and action."""
    walls = check_layout(walls)
    if pairs is None:
        pairs = [(cell, a) for cell in open_cells(walls) for a in range(NUM_GRID_ACTIONS)]
    obs = layout_obs(walls, [cell for cell, _ in pairs])
    actions = np.array([a for _, a in pairs], dtype=np.int64)
    next_obs, reward, terminal = wallgrid_transition(obs, actions)
    return Transitions(obs, actions, reward, next_obs, terminal)


def basic_set() -> Transitions:
    return Transitions.concat([layout_transitions(layout) for layout in BASIC_LAYOUTS])


def evaluation_part(coverage: str, walls: Layout) -> Transitions | None:
    """The transitions of one evaluation layout that a coverage level includes."""
    if coverage == "all":
        return layout_transitions(walls)
    if coverage == "path":
        return layout_transitions(walls, path_to_goal(walls))
    if coverage == "single":
        return layout_transitions(walls, [(far_corner(walls), a) for a in range(NUM_GRID_ACTIONS)])
    if coverage == "none":
        return None
    raise ValueError(f"coverage must be one of {', '.join(COVERAGES)}, got {coverage!r}")


def dataset(coverage: str) -> Transitions:
    """The basic set plus the evaluation layouts' transitions that `coverage` includes."""
    parts = [basic_set()]
    for walls in EVALUATION_LAYOUTS:
        part = evaluation_part(coverage, walls)
        if part is not None:
            parts.append(part)
    return Transitions.concat(parts)


class WallGrid3x3(VectorEnv):
    name = "wallgrid3x3"
    episodic = True
    reward_range = (-1.0, -1.0)
    obs_dim = OBS_DIM
    num_actions = NUM_GRID_ACTIONS

    def __init__(self, num_envs: int, seed: int, walls: Iterable[Sequence[int]] = (), spontaneous: bool = True):
        super().__init__(num_envs, seed, spontaneous)
        self.walls = check_layout(walls)
        self._starts = layout_obs(self.walls, open_cells(self.walls))
        self._distances = DistanceCache(_MOVES)  # for optimal_actions

    @property
    def params(self):
        return {"walls": [list(w) for w in self.walls], **super().params}

    def initial_obs(self, n, rng):
        return self._starts[rng.integers(0, len(self._starts), n)]

    def transition(self, obs, actions, rng):
        obs = self.check_obs(obs)
        return wallgrid_transition(obs, self.check_actions(actions, obs.shape[0]))

    def optimal_actions(self, obs: np.ndarray) -> np.ndarray:
        """A shortest-path action to the goal in each observation's own walls."""
        obs = self.check_obs(obs)
        walls = obs[:, WALL]
        dist = self._distances(np.full(obs.shape[0], flat(GOAL_CELL)), walls)
        return descend(dist, obs[:, AGENT].argmax(axis=1), _MOVES, walls)

    def render_text(self, obs: np.ndarray) -> str:
        """One observation as text: # wall, . open, G goal, A agent."""
        return maze_text(SIZE, obs[AGENT], obs[GOAL], obs[WALL])

    def render_rgb(self, obs: np.ndarray) -> np.ndarray:
        return maze_rgb(SIZE, obs[AGENT], obs[GOAL], obs[WALL])
