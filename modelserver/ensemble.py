"""EnsembleModel: MBPO's bootstrap ensemble of simple models, with uncertainty-aware rollouts.

Each population member p holds K simple models (modelserver/models.py
SimpleModel), all P x K batched as one [P*K, ...] TripleHead: network p*K + k
is member p's model k. Training: model k of member p takes its step on its own
bootstrap draw of the member's batch (B indices drawn uniformly with
replacement), with the simple model's analytic gradient; the loss reported per
member is the mean over its K models.

Rollouts (MBPO): every step runs all K models on every state and takes the next
state, reward and continuation of one model drawn uniformly per state and step.
The ensemble's disagreement on the next observation, with p_kf = sigmoid(logit
of feature f under model k) and p_f their mean over k,

    d(o, a) = max_f sqrt( (1/K) sum_k (p_kf - p_f)^2 )        in [0, 0.5]

is the largest standard deviation over the models of a feature's predicted
probability. With `uncertainty_cutoff` u > 0 a step with d > u is invalid
(Step.valid = 0): the rollout is cut there, its remaining transitions get weight 0
(modelserver/rollout.py), and every update still trains on the same number of
slots. Diagnostics report d on held-out real transitions and along rollouts.
"""

from __future__ import annotations

import torch
from mbgen.envs.seeding import derive_seed
from mbgen.learner.networks import ParamStore, simple_model_net, with_action
from mbgen.learner.shards import ShardPool
from mbgen.modelserver.interface import ModelContext, Step
from mbgen.modelserver.models import SimpleModel


def bootstrap_indices(members: int, k: int, batch: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """[P, K, B] indices into a [P, B] batch, uniform with replacement: one bootstrap draw per model."""
    return torch.randint(0, batch, (members, k, batch), generator=generator, device=device)


def bootstrap(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [P, B, ...] gathered at index [P, K, B] -> [P*K, B, ...]: row p*K + k is x[p, index[p, k]]."""
    P, K, B = index.shape
    rows = torch.arange(P, device=x.device).view(P, 1, 1).expand(P, K, B)
    return x[rows, index].reshape(P * K, B, *x.shape[2:])


def disagreement(logits: torch.Tensor) -> torch.Tensor:
    """d = max_f std_k sigmoid(logits[..., k, :, f]) (population std over k): [p, K, S, D] -> [p, S]."""
    probs = torch.sigmoid(logits)
    return probs.var(dim=1, unbiased=False).sqrt().amax(-1)


def pick(x: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """x [p, K, S, ...] at model choice[p, s] -> [p, S, ...]."""
    index = choice.view(choice.shape[0], 1, choice.shape[1], *([1] * (x.dim() - 3)))
    return torch.gather(x, 1, index.expand(-1, 1, *x.shape[2:])).squeeze(1)


def within_cutoff(d: torch.Tensor, cutoff: float) -> torch.Tensor | None:
    """valid = 1 where d <= cutoff; None (all valid) when the cutoff is off (0)."""
    return None if cutoff <= 0 else d <= cutoff


class EnsembleModel(SimpleModel):
    member_parallel = True  # member range m is network range [m.start K, m.stop K)

    def __init__(self, ctx: ModelContext):
        cfg, device, generator, shards = ctx.cfg, ctx.device, ctx.generator, ctx.shards
        obs_dim, num_actions = ctx.obs_dim, ctx.num_actions
        self.num_actions, self.generator = num_actions, generator
        self.k, self.cutoff = cfg.options.ensemble_size, cfg.options.rollout_cutoff
        self.shards = shards or ShardPool(cfg.members, 1)
        seeds = [derive_seed(s, "ensemble", k) for s in cfg.member_seeds for k in range(self.k)]
        self.store = ParamStore(cfg.members * self.k, seeds, device)
        self.net = simple_model_net(self.store, obs_dim, num_actions, cfg.learning.hidden)
        self.store.build()
        self.init_optimiser(cfg)
        self.rollout_d = torch.zeros(cfg.members, dtype=torch.float64, device=self.store.device)
        self.rollout_states = torch.zeros(cfg.members, dtype=torch.float64, device=self.store.device)

    def networks(self, members: slice | None) -> slice | None:
        return None if members is None else slice(members.start * self.k, members.stop * self.k)

    def ensemble_heads(self, obs, action, members: slice | None = None):
        """Every model on every (obs, action) [p, S]: logits [p, K, S, D], reward [p, K, S], continuation logit."""
        p, S = action.shape
        x = with_action(obs, action, self.num_actions)
        x = x.unsqueeze(1).expand(p, self.k, S, x.shape[-1]).reshape(p * self.k, S, -1)
        main, side = self.net(x, self.networks(members))
        return main.view(p, self.k, S, -1), side[0].view(p, self.k, S), side[1].view(p, self.k, S)

    def heads(self, obs, action, members: slice | None = None):
        """The ensemble's mean prediction: logit of the mean probability, mean reward, logit of the mean
        continuation probability."""
        logits, reward, cont = self.ensemble_heads(obs, action, members)
        mean_logit = lambda x: torch.logit(torch.sigmoid(x).mean(1), eps=1e-6)  # noqa: E731
        return mean_logit(logits), reward.mean(1), mean_logit(cont)

    @torch.no_grad()
    def learn(self, obs, action, reward, next_obs, continuation):
        P, B = action.shape
        index = bootstrap_indices(P, self.k, B, self.generator, action.device)
        data = [bootstrap(x, index) for x in (obs, action, reward, next_obs, continuation)]
        losses = self.shards.map(lambda m: self._learn(self.networks(m), *(x[self.networks(m)] for x in data)))
        return torch.cat(losses).view(P, self.k).mean(1)

    def noise(self, length, members, starts, generator):
        """Per step: the model each state uses (uniform over K), and the simple model's logistic thresholds."""
        choice = torch.randint(0, self.k, (length, members, starts), generator=generator, device=self.store.device)
        return list(zip(choice, super().noise(length, members, starts, generator)))

    @torch.no_grad()
    def step(self, state, action, noise, members: slice | None = None) -> Step:
        choice, thresholds = noise
        logits, reward, cont = self.ensemble_heads(state, action, members)
        d = disagreement(logits)
        rows = slice(None) if members is None else members
        self.rollout_d[rows] += d.sum(-1).to(torch.float64)
        self.rollout_states[rows] += d.shape[-1]
        next_state = (pick(logits, choice) > thresholds).to(state.dtype)
        return Step(next_state, pick(reward, choice), torch.sigmoid(pick(cont, choice)), within_cutoff(d, self.cutoff))

    @torch.no_grad()
    def diagnostics(self, obs, action) -> dict:
        """disagreement: mean d on held-out real transitions; disagreement_above_cutoff: the fraction of them
        a rollout would be cut at; rollout_disagreement: mean d over rollout steps since the last report."""
        d = disagreement(self.ensemble_heads(obs, action)[0])
        out = {"disagreement": d.mean(-1).tolist()}
        if self.cutoff > 0:
            out["disagreement_above_cutoff"] = (d > self.cutoff).float().mean(-1).tolist()
        if (self.rollout_states > 0).all():
            out["rollout_disagreement"] = (self.rollout_d / self.rollout_states).tolist()
            self.rollout_d.zero_()
            self.rollout_states.zero_()
        return out


class EachModelPaths:
    """The ensemble seen by the rollout engine as K separate models: of p x (K S) states, block k (states
    k S .. (k+1) S - 1 of a member) always steps in model k, so every model imagines its own paths from
    the same starts (STEVE: modelserver/work.py ImagineEnsemblePaths). Not a random model per step."""

    member_parallel = True

    def __init__(self, ensemble: EnsembleModel):
        self.ensemble, self.k = ensemble, ensemble.k

    def start(self, obs):
        return obs

    def noise(self, length, members, starts, generator):
        return SimpleModel.noise(self.ensemble, length, members, starts, generator)  # the logistic thresholds

    @torch.no_grad()
    def step(self, state, action, noise, members: slice | None = None) -> Step:
        p, KS, D = state.shape
        S = KS // self.k
        x = with_action(state, action, self.ensemble.num_actions).reshape(p * self.k, S, -1)
        main, side = self.ensemble.net(x, self.ensemble.networks(members))
        next_state = (main.reshape(p, KS, D) > noise).to(state.dtype)
        return Step(next_state, side[0].reshape(p, KS), torch.sigmoid(side[1].reshape(p, KS)))

    def q_input(self, state):
        return state
