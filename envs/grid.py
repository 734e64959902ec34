"""Shared facts of the grid worlds: actions, moves, flattening."""

from __future__ import annotations

import numpy as np

# Actions of every grid world: 0 stay, 1 up (row-1), 2 left (col-1), 3 down (row+1), 4 right (col+1).
STAY, UP, LEFT, DOWN, RIGHT = range(5)
NUM_GRID_ACTIONS = 5
MOVES = np.array([[0, 0], [-1, 0], [0, -1], [1, 0], [0, 1]], dtype=np.int64)
ACTION_NAMES = ("stay", "up", "left", "down", "right")


def move_table(n: int) -> np.ndarray:
    """next_cell[cell, action]: the flat cell a move leads to on an open n x n grid (clipped)."""
    rows, cols = np.divmod(np.arange(n * n), n)
    r = np.clip(rows[:, None] + MOVES[None, :, 0], 0, n - 1)
    c = np.clip(cols[:, None] + MOVES[None, :, 1], 0, n - 1)
    return r * n + c


def neighbours(n: int) -> list[list[int]]:
    """The on-grid 4-neighbours of every flat cell."""
    table = move_table(n)
    return [sorted({int(x) for x in table[cell, 1:]} - {cell}) for cell in range(n * n)]


def distances_to(goal: int, moves: np.ndarray, blocked: np.ndarray | None = None) -> np.ndarray:
    """Moves from every flat cell to `goal` on a grid with `moves` = move_table(n) and optional walls
    (blocked[cell]); unreachable cells and walls get a large number (cells^2)."""
    cells = moves.shape[0]
    far = cells * cells
    dist = np.full(cells, far, dtype=np.int64)
    dist[goal] = 0
    frontier = [goal]
    while frontier:
        nxt = []
        for c in frontier:
            for m in moves[c, 1:]:
                m = int(m)
                if dist[m] == far and (blocked is None or not blocked[m]):
                    dist[m] = dist[c] + 1
                    nxt.append(m)
        frontier = nxt
    return dist


class DistanceCache:
    """distances_to per (goal, walls), remembered: an episode's maze is fixed, so a policy that asks
    every step computes each maze's distances once."""

    def __init__(self, moves: np.ndarray, limit: int = 100_000):
        self.moves, self.limit = moves, limit
        self.table: dict[tuple[int, bytes], np.ndarray] = {}

    def __call__(self, goals: np.ndarray, blocked: np.ndarray) -> np.ndarray:
        """Distances [K, cells] for goals [K] and walls bool [K, cells]."""
        if len(self.table) > self.limit:
            self.table.clear()
        out = []
        for goal, walls in zip(goals.tolist(), blocked):
            key = (goal, np.packbits(walls).tobytes())
            if key not in self.table:
                self.table[key] = distances_to(goal, self.moves, walls)
            out.append(self.table[key])
        return np.stack(out)


def descend(dist: np.ndarray, pos: np.ndarray, moves: np.ndarray, blocked: np.ndarray | None = None) -> np.ndarray:
    """For K agents at cells `pos`, the first action whose resulting cell (a wall: no move) is
    nearest the goal under `dist` [K, cells] — a shortest-path action; 0 (stay) at the goal."""
    k = np.arange(pos.size)
    after = moves[pos]  # [K, A]
    if blocked is not None:
        after = np.where(blocked[k[:, None], after], pos[:, None], after)
    return dist[k[:, None], after].argmin(axis=1)
