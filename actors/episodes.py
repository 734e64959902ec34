"""Returns of behaviour (training) episodes, per member, from what an actor steps.

Episodic environments: an episode's return is the sum of its rewards up to and
including its terminal step (the evaluator's definition, without its 100-step
cap). Continuing environments have no episodes, so consecutive windows of
`window` steps (the evaluation length) count as episodes, scored by their
reward per step: training and evaluation scores then share one scale.
"""

from __future__ import annotations

import numpy as np


class EpisodeReturns:
    def __init__(self, members: int, envs_per_member: int, episodic: bool, window: int):
        self.episodic, self.window = episodic, window
        self.total = np.zeros((members, envs_per_member), np.float64)  # running sum of rewards
        self.length = np.zeros((members, envs_per_member), np.int64)
        self.finished_sum = np.zeros(members, np.float64)  # scores of episodes finished since take()
        self.finished = np.zeros(members, np.int64)

    def add(self, member: int, reward: np.ndarray, terminal: np.ndarray) -> None:
        """One step of member `member`'s E environments."""
        self.total[member] += reward
        self.length[member] += 1
        ended = terminal if self.episodic else self.length[member] >= self.window
        if ended.any():
            scores = self.total[member, ended]
            if not self.episodic:
                scores = scores / self.length[member, ended]
            self.finished_sum[member] += scores.sum()
            self.finished[member] += int(ended.sum())
            self.total[member, ended] = 0.0
            self.length[member, ended] = 0

    def take(self) -> tuple[list[float | None], list[int]]:
        """(mean score of the episodes each member finished since the last call, or None; their
        number), and start counting afresh."""
        means = [float(s / n) if n else None for s, n in zip(self.finished_sum, self.finished)]
        counts = self.finished.tolist()
        self.finished_sum[:] = 0.0
        self.finished[:] = 0
        return means, counts
