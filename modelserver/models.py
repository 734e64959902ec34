"""The paper's dynamics models, population-batched, each a modelserver.interface.DynamicsModel.

  SimpleModel   three MLPs on [observation, one-hot action]: independent Bernoulli next features,
                reward mean, continuation (the paper's "simple model")
  LatentModel   a Dreamer-style single-step latent model, categorical or Gaussian latents
  PerfectModel  the true dynamics (env.transition), spontaneous events included

The learned models sample their next state; `learn` computes the training loss
on real transitions and leaves its gradient in `store.grad`; `train_step` is
`learn` followed by the optimiser step (Adam, learner/optim.py, at model_lr).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from mbgen.envs.seeding import derive_seed, rng_state, set_rng_state
from mbgen.learner.config import RunConfig
from mbgen.learner.latents import MIN_STD, categorical_sample, gaussian_params, gaussian_sample, gumbel
from mbgen.learner.networks import MLP, ParamStore, TripleHead, simple_model_net, with_action
from mbgen.learner.optim import adam_init, adam_step
from mbgen.learner.qinput import LatentInput
from mbgen.learner.shapes import mlp_shape
from mbgen.learner.shards import ShardPool
from mbgen.modelserver.interface import ModelContext, Prediction, Step
from mbgen.modelserver.losses import balanced_kl, categorical_kl, gaussian_kl, latent_model_loss, simple_model_loss

from mbgen import envs


class GradientModel(ABC):
    """What models trained by gradient share: a ParamStore, its Adam state, checkpoints."""

    learned = True
    store: ParamStore

    def init_optimiser(self, cfg: RunConfig) -> None:
        self.opt = adam_init(self.store.flat)
        self.model_lr = float(cfg.options.model_lr)  # one for every member: the fused optimiser step

    @abstractmethod
    def learn(self, obs, action, reward, next_obs, continuation) -> torch.Tensor:
        """The loss per member [P] of a [P, B] batch, with its gradient written into store.grad."""

    def train_step(self, obs, action, reward, next_obs, continuation) -> torch.Tensor:
        loss = self.learn(obs, action, reward, next_obs, continuation)
        adam_step(self.store.flat, self.store.grad, self.opt, self.model_lr)
        return loss

    def acting_params(self) -> torch.Tensor | None:
        """The whole model: a planner in the actors and the evaluator runs it (learner/acting.py)."""
        return self.store.flat

    def diagnostics(self, obs, action) -> dict:
        return {}

    def state_dict(self) -> dict[str, np.ndarray]:
        return {
            "params": self.store.flat.detach().cpu().numpy(),
            "adam_m": self.opt.m.cpu().numpy(),
            "adam_v": self.opt.v.cpu().numpy(),
            "adam_t": np.array(self.opt.t),
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.store.flat.copy_(torch.from_numpy(state["params"]))
        self.opt.m.copy_(torch.from_numpy(state["adam_m"]))
        self.opt.v.copy_(torch.from_numpy(state["adam_v"]))
        self.opt.t = int(state["adam_t"])


class SimpleModel(GradientModel):
    """Three 3x200 ELU MLPs on [obs, one-hot action]: next-obs logits, reward mean, continuation logit.

    The three run as one TripleHead call; `learn` uses the analytic gradient of the loss
    (modelserver/losses.py) with respect to the three outputs, per transition:
        d/d next_logits = c (sigmoid(next_logits) - o') / B
        d/d reward_mean = (reward_mean - r) / B
        d/d cont_logit  = (sigmoid(cont_logit) - c) / B
    """

    member_parallel = True

    def __init__(self, ctx: ModelContext):
        cfg, device, generator, shards = ctx.cfg, ctx.device, ctx.generator, ctx.shards
        obs_dim, num_actions = ctx.obs_dim, ctx.num_actions
        self.num_actions, self.generator = num_actions, generator
        self.shards = shards or ShardPool(cfg.members, 1)
        self.store = ParamStore(cfg.members, cfg.member_seeds, device)
        self.net = simple_model_net(self.store, obs_dim, num_actions, cfg.learning.hidden)
        self.store.build()
        self.init_optimiser(cfg)

    def heads(self, obs, action, members: slice | None = None):
        """(next-observation logits [p, B, D], reward mean [p, B], continuation logit [p, B])."""
        main, side = self.net(with_action(obs, action, self.num_actions), members)
        return main, side[0], side[1]

    @torch.no_grad()
    def predict(self, obs, action) -> Prediction:
        logits, reward, cont = self.heads(obs, action)
        return Prediction(logits, reward, torch.sigmoid(cont))

    def loss(self, obs, action, reward, next_obs, continuation):
        next_logits, reward_mean, cont_logit = self.heads(obs, action)
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

    @torch.no_grad()
    def step(self, state, action, noise, members: slice | None = None) -> Step:
        next_logits, reward_mean, cont_logit = self.heads(state, action, members)
        next_state = (next_logits > noise).to(state.dtype)
        return Step(next_state, reward_mean, torch.sigmoid(cont_logit))

    def q_input(self, state):
        return state


class LatentModel(GradientModel):
    """Dreamer-style single-step latent model: encoder, transition (prior), decoder, reward, continuation.

    The transition, reward and continuation nets share their input (latent, action) and run as one
    TripleHead; gradients come from autograd on the store's leaf views. The agent's declared
    q_input (a LatentInput) says whether the latents are categorical or Gaussian.
    """

    member_parallel = False

    def __init__(self, ctx: ModelContext):
        cfg, device, generator = ctx.cfg, ctx.device, ctx.generator
        obs_dim, num_actions = ctx.obs_dim, ctx.num_actions
        latent = cfg.spec.q_input
        if not isinstance(latent, LatentInput):
            raise ValueError(f"agent {cfg.run.agent}: a latent model needs a LatentInput q_input")
        self.cfg, self.latent, self.num_actions, self.generator = cfg, latent, num_actions, generator
        self.categorical = latent.categorical
        width = latent.width(cfg.options, obs_dim)
        self.store = ParamStore(cfg.members, cfg.member_seeds, device)
        self.encoder = MLP(self.store, "encoder", latent.encoder_shape(cfg.options, cfg.learning.hidden, obs_dim))  # first: a contiguous span
        head_width = latent.head_width(cfg.options)
        self.dynamics = TripleHead(self.store, "dynamics", width + num_actions, cfg.learning.hidden, head_width)
        self.decoder = MLP(self.store, "decoder", mlp_shape(width, cfg.learning.hidden, obs_dim))
        self.store.build().enable_autograd()
        self.init_optimiser(cfg)

    def acting_params(self) -> torch.Tensor:
        """The encoder, which actors and the evaluator run before Q."""
        a, b = self.store.range_of("encoder")
        return self.store.flat[a:b]

    # A latent distribution is (log_probs,) for categorical, (mean, std) for Gaussian.
    def dist_and_sample(self, head: torch.Tensor, min_std: float, noise: torch.Tensor | None = None):
        if self.categorical:
            latent, _, log_probs = categorical_sample(head, self.cfg.options.latent_classes, self.generator, noise)
            return (log_probs,), latent
        mu, std = gaussian_params(head, min_std)
        return (mu, std), gaussian_sample(mu, std, self.generator, noise)

    def noise(self, length, members, starts, generator):
        """Gumbel noise (categorical) or standard normals (Gaussian) for every step's prior sample."""
        F, C = self.cfg.options.latent_features, self.cfg.options.latent_classes
        if self.categorical:
            return gumbel((length, members, starts, F, C), generator, self.store.device)
        return torch.randn((length, members, starts, F), generator=generator, device=self.store.device)

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
    def step(self, state, action, noise, members: slice | None = None) -> Step:
        prior_head, side = self.dynamics(with_action(state, action, self.num_actions))
        _, next_state = self.dist_and_sample(prior_head, 0.0, noise)
        return Step(next_state, side[0], torch.sigmoid(side[1]))

    @torch.no_grad()
    def predict(self, obs, action) -> Prediction:
        """The decoded prior sample after one step from the encoded observation."""
        z = self.start(obs)
        step = self.step(z, action, None)
        return Prediction(self.decoder(step.next_state), step.reward, step.continuation)

    def q_input(self, state):
        return state


class PerfectModel:
    """The true dynamics: env.transition from the sampled observations, one rng per member."""

    member_parallel = False
    learned = False
    store = None

    def __init__(self, ctx: ModelContext):
        cfg = ctx.cfg
        self.env = envs.make(cfg.run.env, 1, 0, **cfg.run.env_params)  # its true dynamics
        self.rngs = [np.random.default_rng(derive_seed(s, "perfect-model")) for s in cfg.member_seeds]
        self.device = ctx.device

    def train_step(self, obs, action, reward, next_obs, continuation) -> None:
        return None

    def start(self, obs):
        return obs

    def noise(self, length, members, starts, generator):
        return [None] * length  # the environment draws its own events from the members' streams

    def _transition(self, state, action):
        obs = state.cpu().numpy().astype(bool)
        actions = action.cpu().numpy()
        nxt, rew, term = zip(*(self.env.transition(obs[p], actions[p], rng) for p, rng in enumerate(self.rngs)))
        to = lambda a, dtype: torch.from_numpy(np.stack(a)).to(self.device, dtype)  # noqa: E731
        return to(nxt, torch.float32), to(rew, torch.float32), 1.0 - to(term, torch.float32)

    def step(self, state, action, noise, members: slice | None = None) -> Step:
        return Step(*self._transition(state, action))

    def predict(self, obs, action) -> Prediction:
        nxt, reward, cont = self._transition(obs, action)
        return Prediction(torch.where(nxt > 0.5, 30.0, -30.0), reward, cont)

    def q_input(self, state):
        return state

    def acting_params(self) -> None:
        return None

    def diagnostics(self, obs, action) -> dict:
        return {}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The members' event streams."""
        return {"rng_states": np.array([rng_state(rng) for rng in self.rngs])}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for rng, text in zip(self.rngs, state["rng_states"].tolist()):
            set_rng_state(rng, text)
