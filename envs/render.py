"""Drawing observations, so a person can watch a policy: text (ANSI mode) and RGB images.

Each environment draws one observation (bool [obs_dim]) with `render_text` and
`render_rgb`; the Gymnasium wrappers call them for render_mode "ansi" and
"rgb_array", and `mbgen eval --render` prints the text frames. The helpers here
turn a grid of per-cell colour names into an image, so every grid world draws
the same way.
"""

from __future__ import annotations

import numpy as np

CELL_PX = 24  # pixels per grid cell in RGB frames
COLOURS = {
    "empty": (245, 245, 245),
    "wall": (60, 60, 60),
    "goal": (240, 200, 60),
    "agent": (40, 90, 200),
    "agent_on_goal": (40, 160, 90),
    "off": (200, 80, 70),
    "on": (70, 180, 90),
    "line": (180, 180, 180),
    "none": (255, 255, 255),
}


def cells_rgb(names: list[list[str]], marks: list[list[bool]] | None = None) -> np.ndarray:
    """An image of rows x cols cells, each filled with COLOURS[name]; a mark draws a blue disc
    (the agent) over the cell. uint8 [rows*CELL_PX, cols*CELL_PX, 3]."""
    rows, cols = len(names), len(names[0])
    image = np.empty((rows * CELL_PX, cols * CELL_PX, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:CELL_PX, 0:CELL_PX]
    disc = (yy - CELL_PX / 2 + 0.5) ** 2 + (xx - CELL_PX / 2 + 0.5) ** 2 <= (CELL_PX * 0.32) ** 2
    for r in range(rows):
        for c in range(cols):
            block = image[r * CELL_PX : (r + 1) * CELL_PX, c * CELL_PX : (c + 1) * CELL_PX]
            block[...] = COLOURS[names[r][c]]
            if names[r][c] != "none":
                block[0, :] = block[:, 0] = COLOURS["line"]
            if marks is not None and marks[r][c]:
                block[disc] = COLOURS["agent"]
    return image


def maze_text(n: int, agent: np.ndarray, goal: np.ndarray, wall: np.ndarray) -> str:
    """An n x n grid world as text from flat per-cell masks: # wall, . open, G goal, A agent, * both."""
    lines = []
    for r in range(n):
        row = ""
        for c in range(n):
            i = r * n + c
            row += "*" if agent[i] and goal[i] else "A" if agent[i] else "G" if goal[i] else "#" if wall[i] else "."
        lines.append(row)
    return "\n".join(lines)


def maze_rgb(n: int, agent: np.ndarray, goal: np.ndarray, wall: np.ndarray) -> np.ndarray:
    """The same grid world as an RGB image: walls dark, goal gold, the agent a blue disc."""
    names = [
        ["goal" if goal[r * n + c] else "wall" if wall[r * n + c] else "empty" for c in range(n)] for r in range(n)
    ]
    marks = [[bool(agent[r * n + c]) for c in range(n)] for r in range(n)]
    return cells_rgb(names, marks)
