"""The learned dynamics models, population-batched, with their one-step dynamics.

Each model offers
  learn(obs, action, reward, next_obs, continuation) -> [P]  the training loss on real transitions, with its
                                                            gradient left in `store.grad` for the optimiser
  loss(...) -> [P]                                          the same loss, differentiable (tests, diagnostics)
  start(obs) -> state                                       the rollout state of real observations
  noise(L, P, S, generator) -> per-step noise for an L-step rollout of P x S states, drawn at once
  step(state, action, noise=None) -> (next_state, reward, continuation)   one imagined step
  q_input(state) -> what the Q-network sees                 (observations, or latents)
The simple and latent models sample their next state; the perfect model steps
the true environment (spontaneous events included).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import envs
from envs.seeding import derive_seed
from learner.agent import (
    MIN_STD,
    categorical_sample,
    encoder_shape,
    gaussian_params,
    gaussian_sample,
    latent_head_width,
    latent_width,
)
from learner.config import RunConfig
from learner.networks import MLP, ParamStore, TripleHead, mlp_shape
from learner.shards import ShardPool
from modelserver.losses import balanced_kl, categorical_kl, gaussian_kl, latent_model_loss, simple_model_loss


def with_action(x: torch.Tensor, action: torch.Tensor, num_actions: int) -> torch.Tensor:
    """[P, B, W] and [P, B] -> [P, B, W + A]: the input of every (state, action) network."""
    return torch.cat([x, F.one_hot(action, num_actions).to(x.dtype)], dim=-1)


class SimpleModel:
    """Three 3x200 ELU MLPs on [obs, one-hot action]: next-obs logits, reward mean, continuation logit.

    The three run as one TripleHead call; `learn` uses the analytic gradient of the loss
    (modelserver/losses.py) with respect to the three outputs, per transition:
        d/d next_logits = c (sigmoid(next_logits) - o') / B
        d/d reward_mean = (reward_mean - r) / B
        d/d cont_logit  = (sigmoid(cont_logit) - c) / B
    """

    trainable = True
    shardable = True  # learn and step work on member ranges (learner/shards.py)

    def __init__(
        self,
        cfg: RunConfig,
        obs_dim: int,
        num_actions: int,
        device,
        generator: torch.Generator,
        shards: ShardPool | None = None,
    ):
        self.num_actions, self.generator = num_actions, generator
        self.shards = shards or ShardPool(cfg.members, 1)
        self.store = ParamStore(cfg.members, cfg.seeds, device)
        self.net = TripleHead(self.store, "model", obs_dim + num_actions, cfg.hidden, obs_dim)
        self.store.build()

    def predict(self, obs, action, members: slice | None = None):
        main, side = self.net(with_action(obs, action, self.num_actions), members)
        return main, side[0], side[1]

    def loss(self, obs, action, reward, next_obs, continuation):
        next_logits, reward_mean, cont_logit = self.predict(obs, action)
        return simple_model_loss(next_logits, reward_mean, cont_logit, reward, next_obs, continuation)

    @torch.no_grad()
    def learn(self, obs, action, reward, next_obs, continuation):
        return torch.cat(
            self.shards.map(lambda m: self._learn(m, obs[m], action[m], reward[m], next_obs[m], continuation[m]))
        )

    def _learn(self, members, obs, action, reward, next_obs, continuation):
        main, side, cache = self.net.forward_cached(with_action(obs, action, self.num_actions), members)
        loss = simple_model_loss(main, side[0], side[1], reward, next_obs, continuation)
        inv_b = 1.0 / obs.shape[1]
        grad_main = torch.sigmoid(main).sub_(next_obs).mul_((continuation * inv_b).unsqueeze(-1))
        grad_side = torch.stack([(side[0] - reward) * inv_b, (torch.sigmoid(side[1]) - continuation) * inv_b])
        self.net.backward(cache, grad_main, grad_side, members)
        return loss

    def start(self, obs):
        return obs

    def noise(self, length, members, starts, generator):
        """Logistic thresholds: feature = 1 exactly when logit > log(u / (1 - u)), u ~ U(0, 1),
        which happens with probability sigmoid(logit) (a Bernoulli sample)."""
        u = torch.rand(
            (length, members, starts, self.store.shape("model.wmain")[-1]),
            generator=generator,
            device=self.store.device,
        ).clamp_(1e-7, 1 - 1e-7)
        return u.log() - torch.log1p(-u)

    def step(self, state, action, noise=None, members: slice | None = None):
        next_logits, reward_mean, cont_logit = self.predict(state, action, members)
        if noise is None:
            noise = self.noise(1, *state.shape[:2], self.generator)[0]
        next_state = (next_logits > noise).to(state.dtype)
        return next_state, reward_mean, torch.sigmoid(cont_logit)

    def q_input(self, state):
        return state


class LatentModel:
    """Dreamer-style single-step latent model: encoder, transition (prior), decoder, reward, continuation.

    The transition, reward and continuation nets share their input (latent, action) and run as one
    TripleHead; gradients come from autograd on the store's leaf views.
    """

    trainable = True
    shardable = False

    def __init__(
        self,
        cfg: RunConfig,
        obs_dim: int,
        num_actions: int,
        device,
        generator: torch.Generator,
        shards: ShardPool | None = None,
    ):
        self.cfg, self.num_actions, self.generator = cfg, num_actions, generator
        self.categorical = cfg.agent == "latent-cat"
        width = latent_width(cfg)
        self.store = ParamStore(cfg.members, cfg.seeds, device)
        self.encoder = MLP(self.store, "encoder", encoder_shape(cfg, obs_dim))  # first: a contiguous span
        self.dynamics = TripleHead(self.store, "dynamics", width + num_actions, cfg.hidden, latent_head_width(cfg))
        self.decoder = MLP(self.store, "decoder", mlp_shape(width, cfg.hidden, obs_dim))
        self.store.build().enable_autograd()

    def encoder_flat(self) -> torch.Tensor:
        a, b = self.store.range_of("encoder")
        return self.store.flat[a:b]

    # A latent distribution is (log_probs,) for categorical, (mean, std) for Gaussian.
    def dist_and_sample(self, head: torch.Tensor, min_std: float, noise: torch.Tensor | None = None):
        if self.categorical:
            latent, _, log_probs = categorical_sample(head, self.cfg.latent_classes, self.generator, noise)
            return (log_probs,), latent
        mu, std = gaussian_params(head, min_std)
        return (mu, std), gaussian_sample(mu, std, self.generator, noise)

    def noise(self, length, members, starts, generator):
        """Gumbel noise (categorical) or standard normals (Gaussian) for every step's prior sample."""
        c = self.cfg
        if self.categorical:
            from modelserver.rollout import gumbel

            return gumbel((length, members, starts, c.latent_features, c.latent_classes), generator, self.store.device)
        return torch.randn((length, members, starts, c.latent_features), generator=generator, device=self.store.device)

    def kl(self, *args):
        return categorical_kl(*args) if self.categorical else gaussian_kl(*args)

    def loss(self, obs, action, reward, next_obs, continuation):
        _, z = self.dist_and_sample(self.encoder(obs), MIN_STD)
        posterior, _ = self.dist_and_sample(self.encoder(next_obs), MIN_STD)
        prior_head, side = self.dynamics(with_action(z, action, self.num_actions))
        prior, _ = self.dist_and_sample(prior_head, 0.0)
        kl_term = balanced_kl(posterior, prior, self.kl)
        return latent_model_loss(self.decoder(z), obs, side[0], side[1], reward, continuation, kl_term)

    def learn(self, obs, action, reward, next_obs, continuation):
        loss = self.loss(obs, action, reward, next_obs, continuation)
        self.store.autograd_backward(loss.sum())
        return loss.detach()

    @torch.no_grad()
    def start(self, obs):
        return self.dist_and_sample(self.encoder(obs), MIN_STD)[1]

    @torch.no_grad()
    def step(self, state, action, noise=None):
        prior_head, side = self.dynamics(with_action(state, action, self.num_actions))
        _, next_state = self.dist_and_sample(prior_head, 0.0, noise)
        return next_state, side[0], torch.sigmoid(side[1])

    @torch.no_grad()
    def decode(self, state):
        return self.decoder(state)

    def q_input(self, state):
        return state


class PerfectModel:
    """The true dynamics: env.transition from the sampled observations, one rng per member."""

    trainable = False
    shardable = False

    def __init__(
        self,
        cfg: RunConfig,
        obs_dim: int,
        num_actions: int,
        device,
        generator: torch.Generator,
        shards: ShardPool | None = None,
    ):
        self.env = envs.make(cfg.env, 1, 0, **cfg.env_params)
        self.rngs = [np.random.default_rng(derive_seed(s, "perfect-model")) for s in cfg.seeds]
        self.device = device

    def start(self, obs):
        return obs

    def step(self, state, action, noise=None):
        obs = state.cpu().numpy().astype(bool)
        actions = action.cpu().numpy()
        nxt, rew, term = zip(*(self.env.transition(obs[p], actions[p], rng) for p, rng in enumerate(self.rngs)))
        to = lambda a, dtype: torch.from_numpy(np.stack(a)).to(self.device, dtype)  # noqa: E731
        return to(nxt, torch.float32), to(rew, torch.float32), 1.0 - to(term, torch.float32)

    def q_input(self, state):
        return state


MODELS = {"simple": SimpleModel, "perfect": PerfectModel, "latent-cat": LatentModel, "latent-gauss": LatentModel}


def make_model(
    cfg: RunConfig, obs_dim: int, num_actions: int, device, generator: torch.Generator, shards: ShardPool | None = None
):
    return MODELS[cfg.agent](cfg, obs_dim, num_actions, device, generator, shards)
