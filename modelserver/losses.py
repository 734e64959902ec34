"""Model losses as plain functions of tensors (PAPER.md section 3, the authors' code).

Per transition (o, a, r, o', terminal), with c = 1 - terminal:

simple model, on [o, one-hot a]:
    L = 0.5 (r - r_hat)^2                              reward: Gaussian NLL with sigma 1, constant dropped
      + BCE(c_logit, c)                                continuation
      + c * sum_features BCE(o'_logits, o')            next observation, skipped on terminal transitions

latent models, z ~ q(z | o) from the encoder, prior p(z' | z, a) from the transition:
    L = 0.5 (r - R(z, a))^2 + BCE(C(z, a), c)
      + c * sum_features BCE(decoder(z), o)            reconstruction of the *current* observation
      + 0.8 KL(sg(q(z' | o')) || p(z' | z, a))         trains the prior towards the posterior
      + 0.2 KL(q(z' | o') || sg(p(z' | z, a)))         trains the posterior towards the prior

Every loss is averaged over the batch, per member ([P] out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KL_PRIOR, KL_POSTERIOR = 0.8, 0.2


def bernoulli_nll(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Elementwise -log p(target) under Bernoulli(sigmoid(logits)), stable for any logits."""
    return F.softplus(logits) - target * logits


def unit_gaussian_nll(mean: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0.5 (target - mean)^2: the Gaussian NLL with sigma 1, without its constant."""
    return 0.5 * (target - mean) ** 2


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per categorical feature, from log-probabilities [.., F, C] -> [.., F]."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def gaussian_kl(mu_p, std_p, mu_q, std_q) -> torch.Tensor:
    """KL(N(mu_p, std_p) || N(mu_q, std_q)) elementwise."""
    return torch.log(std_q / std_p) + (std_p**2 + (mu_p - mu_q) ** 2) / (2 * std_q**2) - 0.5


def simple_model_loss(next_logits, reward_mean, cont_logit, reward, next_obs, continuation) -> torch.Tensor:
    """[P, B, D], [P, B], [P, B] predictions and [P, B] / [P, B, D] targets -> loss per member [P]."""
    obs_term = continuation * bernoulli_nll(next_logits, next_obs).sum(-1)
    per_transition = unit_gaussian_nll(reward_mean, reward) + bernoulli_nll(cont_logit, continuation) + obs_term
    return per_transition.mean(-1)


def balanced_kl(posterior: tuple, prior: tuple, kl) -> torch.Tensor:
    """0.8 KL(sg(post) || prior) + 0.2 KL(post || sg(prior)), summed over latent features."""
    post_sg = tuple(x.detach() for x in posterior)
    prior_sg = tuple(x.detach() for x in prior)
    return KL_PRIOR * kl(*post_sg, *prior).sum(-1) + KL_POSTERIOR * kl(*posterior, *prior_sg).sum(-1)


def latent_model_loss(recon_logits, obs, reward_mean, cont_logit, reward, continuation, kl_term) -> torch.Tensor:
    """Loss per member [P]; `kl_term` is balanced_kl(...) per transition [P, B]."""
    recon = continuation * bernoulli_nll(recon_logits, obs).sum(-1)
    per_transition = unit_gaussian_nll(reward_mean, reward) + bernoulli_nll(cont_logit, continuation) + recon + kl_term
    return per_transition.mean(-1)
