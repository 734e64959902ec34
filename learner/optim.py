"""The reference optimiser: Adam (b1 0.9, b2 0.99, eps 1e-5) with decoupled weight decay.

One step, for every member p with its own step size lr[p], on flat parameters:

    m <- b1 m + (1 - b1) g
    v <- b2 v + (1 - b2) g^2
    w <- w - lr[p] * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) - wd * w

where t counts steps from 1 and the decay wd * w (1e-6, not scaled by the step
size) uses the weights before the step, as in the authors' JAX optimiser.

When every member has the same step size lr, this is exactly PyTorch's AdamW with
weight_decay = wd / lr (its decay is lr * weight_decay * w), and its fused kernel
does the whole step in one pass over the parameters instead of about ten; that
matters at P=30, where the model has millions of parameters. Per-member step
sizes (a hyperparameter grid in one population) take the explicit formula.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

B1, B2, EPS, WEIGHT_DECAY = 0.9, 0.99, 1e-5, 1e-6
FUSED = hasattr(torch, "_fused_adamw_")


@dataclass
class AdamState:
    m: torch.Tensor  # first moment, like the parameters
    v: torch.Tensor  # second moment
    t: int = 0  # steps taken
    step: torch.Tensor = field(default_factory=lambda: torch.zeros(()))  # t, as the fused kernel wants it


def adam_init(flat: torch.Tensor) -> AdamState:
    return AdamState(
        torch.zeros_like(flat, requires_grad=False),
        torch.zeros_like(flat, requires_grad=False),
        step=torch.zeros((), device=flat.device),
    )


def uniform(lr) -> float | None:
    """The common step size if every member has the same one, else None."""
    values = lr.flatten().tolist() if isinstance(lr, torch.Tensor) else [lr]
    return float(values[0]) if values and all(v == values[0] for v in values) and values[0] > 0 else None


@torch.no_grad()
def adam_step(
    w: torch.Tensor,
    g: torch.Tensor,
    state: AdamState,
    lr: torch.Tensor | float,
    b1: float = B1,
    b2: float = B2,
    eps: float = EPS,
    wd: float = WEIGHT_DECAY,
) -> None:
    """In place on w with gradient g; lr is one float (fused path) or broadcasts against w."""
    state.t += 1
    if isinstance(lr, float) and lr > 0 and FUSED:
        state.step.fill_(state.t)
        torch._fused_adamw_(
            [w],
            [g],
            [state.m],
            [state.v],
            [],
            [state.step],
            lr=lr,
            beta1=b1,
            beta2=b2,
            weight_decay=wd / lr,
            eps=eps,
            amsgrad=False,
            maximize=False,
        )
        return
    state.m.mul_(b1).add_(g, alpha=1 - b1)
    state.v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (state.v / (1 - b2**state.t)).sqrt_().add_(eps)
    step = (state.m / (1 - b1**state.t)).div_(denom).mul_(lr)
    w.mul_(1 - wd).sub_(step)
