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
