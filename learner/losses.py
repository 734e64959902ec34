"""The DQN loss: squared 1-step TD error against a target network, per member.

For transitions (s, a, r, s', c, w) of member p, with c the continuation
(1 - terminal for real data, the model's continuation probability for imagined
data) and w the rollout weight (1 for real data):

    y    = r + gamma * c * max_a' Q_target(s', a')
    loss = mean over the batch of  w * (Q(s, a) - y)^2

Members are independent: the total is the sum of per-member losses, so each
member's gradient is that of its own loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # plain tensor arithmetic: the configuration imports GAMMA without loading torch
    import torch

GAMMA = 0.9


def td_targets(next_q_target: torch.Tensor, reward: torch.Tensor, continuation: torch.Tensor, gamma: float = GAMMA):
    """[P, B, A], [P, B], [P, B] -> [P, B]."""
    return reward + gamma * continuation * next_q_target.max(dim=-1).values


def q_loss(q: torch.Tensor, action: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None):
    """Per-member loss [P] from Q-values [P, B, A], actions [P, B], targets and weights [P, B]."""
    chosen = q.gather(-1, action.unsqueeze(-1)).squeeze(-1)
    err = (chosen - target) ** 2
    if weight is not None:
        err = weight * err
    return err.mean(dim=1)
