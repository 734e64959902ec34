"""The reference optimiser: Adam (b1 0.9, b2 0.99, eps 1e-5) with decoupled weight decay.

One step, for every member p with its own step size lr[p], on flat parameters:

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - lr[p] * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - wd * w

where t counts steps from 1 and the decay wd * w (1e-6, not scaled by the step
size) uses the weights before the step, as in the authors' JAX optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

B1, B2, EPS, WEIGHT_DECAY = 0.9, 0.99, 1e-5, 1e-6


@dataclass
class AdamState:
    m: torch.Tensor  # [P, N] first moment
    v: torch.Tensor  # [P, N] second moment
    t: int = 0  # steps taken


def adam_init(flat: torch.Tensor) -> AdamState:
    return AdamState(torch.zeros_like(flat, requires_grad=False), torch.zeros_like(flat, requires_grad=False))


@torch.no_grad()
def adam_step(
    w: torch.Tensor, g: torch.Tensor, state: AdamState, lr: torch.Tensor,
    b1: float = B1, b2: float = B2, eps: float = EPS, wd: float = WEIGHT_DECAY,
) -> None:
    """In place on w [P, N] with gradient g [P, N]; lr is [P] (one step size per member)."""
    state.t += 1
    state.m.mul_(b1).add_(g, alpha=1 - b1)
    state.v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (state.v / (1 - b2**state.t)).sqrt_().add_(eps)
    step = (state.m / (1 - b1**state.t)).div_(denom).mul_(lr.view(-1, 1))
    w.mul_(1 - wd).sub_(step)
