"""What the Q-network reads: the observation itself, or a latent sampled from an encoder.

An agent declares one `QInput` (learner/agents.py). ER, the simple, perfect,
ensemble and table agents read observations. Latent agents read a sample of
the encoder's latent distribution (PAPER.md section 3): categorical, F
features of C classes as straight-through one-hot samples (Q sees the F*C
flattened one-hots); Gaussian, F features sampled with mean and standard
deviation 2*sigmoid(x/2) + 0.1. The encoder is trained by the model server
and lives here because actors and the evaluator run it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mbgen.learner.networks import MLPShape, mlp_shape

if TYPE_CHECKING:
    from mbgen.learner.config import RunConfig

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


# -- the declarations ---------------------------------------------------------------------
class ObservationInput:
    """Q reads the observation: no encoder."""

    def width(self, cfg: "RunConfig", obs_dim: int) -> int:
        return obs_dim

    def encoder_shape(self, cfg: "RunConfig", obs_dim: int) -> MLPShape | None:
        return None

    def encode(self, cfg: "RunConfig", obs: torch.Tensor, encoder, generator: torch.Generator | None) -> torch.Tensor:
        return obs


@dataclass(frozen=True)
class LatentInput:
    """Q reads a latent sampled from an encoder MLP of the observation."""

    categorical: bool  # True: F features of C classes (one-hot samples); False: F Gaussian features

    def width(self, cfg: "RunConfig", obs_dim: int) -> int:
        return cfg.latent_features * cfg.latent_classes if self.categorical else cfg.latent_features

    def head_width(self, cfg: "RunConfig") -> int:
        """Outputs of a network that parameterises the latent distribution (logits, or mean and std)."""
        return cfg.latent_features * cfg.latent_classes if self.categorical else 2 * cfg.latent_features

    def encoder_shape(self, cfg: "RunConfig", obs_dim: int) -> MLPShape | None:
        return mlp_shape(obs_dim, cfg.hidden, self.head_width(cfg))

    def sample(self, cfg: "RunConfig", head: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A latent sample from an encoder's outputs."""
        if self.categorical:
            return categorical_sample(head, cfg.latent_classes, generator)[0]
        mu, std = gaussian_params(head, MIN_STD)
        return gaussian_sample(mu, std, generator)

    def encode(self, cfg: "RunConfig", obs: torch.Tensor, encoder, generator: torch.Generator | None) -> torch.Tensor:
        return self.sample(cfg, encoder(obs), generator)


QInput = ObservationInput | LatentInput
