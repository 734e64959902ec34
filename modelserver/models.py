"""The learned dynamics models, population-batched ([P, ...] weights), with their one-step dynamics.

Each model offers
  loss(obs, action, reward, next_obs, continuation) -> [P]    the training loss on real transitions
  start(obs) -> state                                          the rollout state of real observations
  step(state, action) -> (next_state, reward, continuation)   one imagined step
  q_input(state) -> what the Q-network sees                    (observations, or latents)
The simple and latent models sample their next state; the perfect model steps
the true environment (PerfectModel, spontaneous events included).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import envs
from envs.seeding import derive_seed
from learner.agent import (MIN_STD, categorical_sample, encoder_shape, gaussian_params, gaussian_sample,
                           latent_head_width, latent_width)
from learner.config import RunConfig
from learner.networks import MLPShape, NetworkPack, mlp_shape
from modelserver.losses import (balanced_kl, categorical_kl, gaussian_kl, latent_model_loss,
                                simple_model_loss)


def with_action(x: torch.Tensor, action: torch.Tensor, num_actions: int) -> torch.Tensor:
    """[P, B, W] and [P, B] -> [P, B, W + A]: the input of every (state, action) network."""
    return torch.cat([x, F.one_hot(action, num_actions).to(x.dtype)], dim=-1)


class SimpleModel:
    """Three 3x200 ELU MLPs on [obs, one-hot action]: next-obs logits, reward mean, continuation logit."""

    trainable = True

    def __init__(self, cfg: RunConfig, obs_dim: int, num_actions: int, device, generator: torch.Generator):
        self.num_actions, self.generator = num_actions, generator
        inputs = obs_dim + num_actions
        self.pack = NetworkPack({
            "next_obs": mlp_shape(inputs, cfg.hidden, obs_dim),
            "reward": mlp_shape(inputs, cfg.hidden, 1),
            "continuation": mlp_shape(inputs, cfg.hidden, 1),
        }, cfg.seeds, device)

    def predict(self, obs, action):
        x = with_action(obs, action, self.num_actions)
        return (self.pack["next_obs"](x), self.pack["reward"](x).squeeze(-1),
                self.pack["continuation"](x).squeeze(-1))

    def loss(self, obs, action, reward, next_obs, continuation):
        next_logits, reward_mean, cont_logit = self.predict(obs, action)
        return simple_model_loss(next_logits, reward_mean, cont_logit, reward, next_obs, continuation)

    def start(self, obs):
        return obs

    def step(self, state, action):
        next_logits, reward_mean, cont_logit = self.predict(state, action)
        next_state = torch.bernoulli(torch.sigmoid(next_logits), generator=self.generator)
        return next_state, reward_mean, torch.sigmoid(cont_logit)

    def q_input(self, state):
        return state


class LatentModel:
    """Dreamer-style single-step latent model: encoder, transition (prior), decoder, reward, continuation."""

    trainable = True

    def __init__(self, cfg: RunConfig, obs_dim: int, num_actions: int, device, generator: torch.Generator):
        self.cfg, self.num_actions, self.generator = cfg, num_actions, generator
        self.categorical = cfg.agent == "latent-cat"
        width = latent_width(cfg)
        self.pack = NetworkPack({
            "encoder": encoder_shape(cfg, obs_dim),
            "transition": mlp_shape(width + num_actions, cfg.hidden, latent_head_width(cfg)),
            "decoder": mlp_shape(width, cfg.hidden, obs_dim),
            "reward": mlp_shape(width + num_actions, cfg.hidden, 1),
            "continuation": mlp_shape(width + num_actions, cfg.hidden, 1),
        }, cfg.seeds, device)

    def encoder_flat(self) -> torch.Tensor:
        return self.pack.slice("encoder")

    # A latent distribution is (log_probs,) for categorical, (mean, std) for Gaussian.
    def dist_and_sample(self, head: torch.Tensor, min_std: float):
        if self.categorical:
            latent, _, log_probs = categorical_sample(head, self.cfg.latent_classes, self.generator)
            return (log_probs,), latent
        mu, std = gaussian_params(head, min_std)
        return (mu, std), gaussian_sample(mu, std, self.generator)

    def kl(self, *args):
        return categorical_kl(*args) if self.categorical else gaussian_kl(*args)

    def loss(self, obs, action, reward, next_obs, continuation):
        _, z = self.dist_and_sample(self.pack["encoder"](obs), MIN_STD)
        posterior, _ = self.dist_and_sample(self.pack["encoder"](next_obs), MIN_STD)
        za = with_action(z, action, self.num_actions)
        prior, _ = self.dist_and_sample(self.pack["transition"](za), 0.0)
        kl_term = balanced_kl(posterior, prior, self.kl)
        return latent_model_loss(self.pack["decoder"](z), obs, self.pack["reward"](za).squeeze(-1),
                                 self.pack["continuation"](za).squeeze(-1), reward, continuation, kl_term)

    def start(self, obs):
        return self.dist_and_sample(self.pack["encoder"](obs), MIN_STD)[1]

    def step(self, state, action):
        za = with_action(state, action, self.num_actions)
        _, next_state = self.dist_and_sample(self.pack["transition"](za), 0.0)
        return (next_state, self.pack["reward"](za).squeeze(-1),
                torch.sigmoid(self.pack["continuation"](za).squeeze(-1)))

    def decode(self, state):
        return self.pack["decoder"](state)

    def q_input(self, state):
        return state


class PerfectModel:
    """The true dynamics: env.transition from the sampled observations, one rng per member."""

    trainable = False

    def __init__(self, cfg: RunConfig, obs_dim: int, num_actions: int, device, generator: torch.Generator):
        self.env = envs.make(cfg.env, 1, 0, **cfg.env_params)
        self.rngs = [np.random.default_rng(derive_seed(s, "perfect-model")) for s in cfg.seeds]
        self.device = device

    def start(self, obs):
        return obs

    def step(self, state, action):
        obs = state.cpu().numpy().astype(bool)
        actions = action.cpu().numpy()
        nxt, rew, term = zip(*(self.env.transition(obs[p], actions[p], rng) for p, rng in enumerate(self.rngs)))
        to = lambda a, dtype: torch.from_numpy(np.stack(a)).to(self.device, dtype)  # noqa: E731
        return to(nxt, torch.float32), to(rew, torch.float32), 1.0 - to(term, torch.float32)

    def q_input(self, state):
        return state


MODELS = {"simple": SimpleModel, "perfect": PerfectModel, "latent-cat": LatentModel, "latent-gauss": LatentModel}


def make_model(cfg: RunConfig, obs_dim: int, num_actions: int, device, generator: torch.Generator):
    return MODELS[cfg.agent](cfg, obs_dim, num_actions, device, generator)


__all__ = ["MODELS", "MLPShape", "make_model", "SimpleModel", "LatentModel", "PerfectModel"]
