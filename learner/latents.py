"""Latent distributions as plain functions of tensors: categorical (straight-through one-hot) and Gaussian.

Used by the latent agents' encoder (learner/qinput.py LatentInput) and their model
(modelserver/models.py LatentModel).
"""

from __future__ import annotations

import torch

MIN_STD = 0.1  # Gaussian latent: floor added to the encoder's standard deviation
STD_FLOOR = 1e-6  # numerical floor before the offset (as in the reference code)


# -- latent distributions (plain functions of tensors) ----------------------------------
def gumbel(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """Standard Gumbel noise -log(-log(u)): argmax(logits + G) samples softmax(logits)."""
    u = torch.rand(shape, generator=generator, device=device).clamp_(1e-20, 1.0)
    return u.log_().neg_().log_().neg_()


def categorical_sample(
    logits: torch.Tensor, classes: int, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
):
    """Straight-through one-hot sample: (latent [.., F*C], probs [.., F, C], log_probs [.., F, C]).

    `noise` is optional pre-drawn Gumbel noise shaped like the [.., F, C] logits.
    """
    shaped = logits.unflatten(-1, (-1, classes))
    log_probs = torch.log_softmax(shaped, dim=-1)
    probs = log_probs.exp()
    noise = gumbel(shaped.shape, generator, logits.device) if noise is None else noise
    one_hot = torch.nn.functional.one_hot((log_probs + noise).argmax(-1), classes).to(probs.dtype)
    latent = probs + (one_hot - probs).detach()
    return latent.flatten(-2), probs, log_probs


def gaussian_params(out: torch.Tensor, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std = max(2*sigmoid(x/2), 1e-6) + min_std from a head's [.., 2F] outputs."""
    mu, pre = out.chunk(2, dim=-1)
    std = (2 * torch.sigmoid(pre / 2)).clamp_min(STD_FLOOR) + min_std
    return mu, std


def gaussian_sample(
    mu: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None, normal: torch.Tensor | None = None
):
    """Reparameterised sample mu + std * eps (eps pre-drawn or drawn here)."""
    if normal is None:
        normal = torch.randn(mu.shape, generator=generator, device=mu.device)
    return mu + std * normal
