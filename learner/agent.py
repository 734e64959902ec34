"""What acts: the Q-network's input for each agent, the latent encoder, and the behaviour policy.

ER, simple and perfect agents feed observations to Q. Latent agents feed a
sampled latent of the observation (PAPER.md section 3): categorical, 32
features of 32 classes as straight-through one-hot samples (Q sees the 1024
flattened one-hots); Gaussian, 32 features sampled with mean and standard
deviation 2*sigmoid(x/2) + 0.1. The encoder is trained by the model server and
lives here because actors and the evaluator run it too.

Behaviour is softmax over Q/temperature (per-member temperatures); evaluation
is greedy.
"""

from __future__ import annotations

import numpy as np
import torch

from learner.config import RunConfig
from learner.networks import MLPShape, mlp_shape

MIN_STD = 0.1  # Gaussian latent: floor added to the encoder's standard deviation
STD_FLOOR = 1e-6  # numerical floor before the offset (as in the reference code)


def is_latent(agent: str) -> bool:
    return agent.startswith("latent")


def latent_width(cfg: RunConfig) -> int:
    """Width of the latent vector Q sees."""
    if cfg.agent == "latent-cat":
        return cfg.latent_features * cfg.latent_classes
    return cfg.latent_features


def q_input_width(cfg: RunConfig, obs_dim: int) -> int:
    return latent_width(cfg) if is_latent(cfg.agent) else obs_dim


def q_shape(cfg: RunConfig, obs_dim: int, num_actions: int) -> MLPShape:
    return mlp_shape(q_input_width(cfg, obs_dim), cfg.hidden, num_actions)


def latent_head_width(cfg: RunConfig) -> int:
    """Outputs of a network that parameterises a latent distribution."""
    if cfg.agent == "latent-cat":
        return cfg.latent_features * cfg.latent_classes  # logits
    return 2 * cfg.latent_features  # mean and pre-activation standard deviation


def encoder_shape(cfg: RunConfig, obs_dim: int) -> MLPShape | None:
    return mlp_shape(obs_dim, cfg.hidden, latent_head_width(cfg)) if is_latent(cfg.agent) else None


# -- latent distributions (plain functions of tensors) ----------------------------------
def categorical_sample(
    logits: torch.Tensor, classes: int, generator: torch.Generator | None = None, gumbel: torch.Tensor | None = None
):
    """Straight-through one-hot sample: (latent [.., F*C], probs [.., F, C], log_probs [.., F, C]).

    `gumbel` is optional pre-drawn Gumbel noise shaped like the [.., F, C] logits.
    """
    shaped = logits.unflatten(-1, (-1, classes))
    log_probs = torch.log_softmax(shaped, dim=-1)
    probs = log_probs.exp()
    if gumbel is None:
        u = torch.rand(shaped.shape, generator=generator, device=logits.device).clamp_(1e-20, 1.0)
        gumbel = -torch.log(-torch.log(u))
    one_hot = torch.nn.functional.one_hot((log_probs + gumbel).argmax(-1), classes).to(probs.dtype)
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


def encode(cfg: RunConfig, encoder_out: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A latent sample from the encoder's outputs (what Q and the rollouts act on)."""
    if cfg.agent == "latent-cat":
        return categorical_sample(encoder_out, cfg.latent_classes, generator)[0]
    mu, std = gaussian_params(encoder_out, MIN_STD)
    return gaussian_sample(mu, std, generator)


# -- behaviour ----------------------------------------------------------------------
def softmax_actions(q: torch.Tensor, temperature: torch.Tensor, uniforms: np.ndarray) -> np.ndarray:
    """Sample a ~ softmax(Q/temperature) per row by inverting the CDF with given uniforms.

    q [P, E, A], temperature [P], uniforms [P, E] in [0, 1) -> int64 actions [P, E].
    """
    probs = torch.softmax(q / temperature.view(-1, 1, 1), dim=-1).cpu().numpy()
    cdf = np.cumsum(probs, axis=-1)
    actions = (cdf < uniforms[..., None] * cdf[..., -1:]).sum(axis=-1)
    return np.minimum(actions, q.shape[-1] - 1).astype(np.int64)


def greedy_actions(q: torch.Tensor) -> np.ndarray:
    return q.argmax(dim=-1).cpu().numpy().astype(np.int64)
