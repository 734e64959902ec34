"""What the learner trains on, and how its target is formed: one declaration per way of using (or not
using) a model, which an agent names (learner/agents.py).

  ReplayBatches    Q on `batch_size` transitions sampled from replay, 1-step TD targets (ER; also
                   the planning agent, whose model chooses actions instead)
  ImaginedBatches  Q on the model server's imagined transitions, 1-step TD targets weighted by the
                   rollout (Dyna: the paper's model agents, MBPO ensembles, tabular Dyna)
  ExpandedPaths    Q on every state of paths that start at a real transition and go on in the model,
                   toward multi-step targets (MVE; learner/expansion.py)
  EnsembleTargets  Q on real transitions toward the inverse-variance weighted mean of an ensemble's
                   candidate targets over horizons 0..H (STEVE; learner/expansion.py)

Each declares the batch the model server hands the learner per update (`batch_spec`: field ->
(dtype, shape), possibly no field at all: the item then only paces the two processes) and builds
the learner's update (`learner_step`), which the learner process and the bench's single-process
loop both call. A path batch holds, per start s and path k, the states s_0 .. s_L and, per
transition t < L, action, reward, continuation and validity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from mbgen.learner.dqn import BATCH_FIELDS

PATH_FIELDS = ("states", "action", "reward", "continuation", "valid")  # one expansion batch


@dataclass
class LearnerContext:
    """What an update is built from: the run, the DQN, where data comes from, where it runs."""

    cfg: object  # RunConfig
    dqn: object  # learner/dqn.py DQN
    store: object  # replay/store.py ReplayStore (attached)
    device: object  # torch.device
    timer: object  # runtime/timing.py PhaseTimer


class Update:
    """One Q update: `update(batch)` (the model server's batch as tensors, or None) -> loss per member [P];
    `report()`: figures for the learner's progress event since the last call."""

    def __init__(self, step: Callable[[dict | None], object]):
        self.step = step

    def __call__(self, batch: dict | None):
        return self.step(batch)

    def report(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        """Its random streams (the learner's checkpoint part)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ReplayUpdate(Update):
    """ER's update: a batch sampled from replay with every member's own stream, then the TD step."""

    def __init__(self, step):
        super().__init__(lambda batch: step())
        self.rngs = step.rngs

    def state_dict(self) -> dict:
        from mbgen.envs.seeding import rng_state

        return {"sample_rngs": np.array([rng_state(r) for r in self.rngs])}

    def load_state_dict(self, state: dict) -> None:
        from mbgen.envs.seeding import set_rng_state

        for rng, saved in zip(self.rngs, state["sample_rngs"].tolist()):
            set_rng_state(rng, saved)


@dataclass(frozen=True)
class ReplayBatches:
    """Q trains on replay samples: the 1-step TD loss of DQN."""

    samples_replay = True  # the learner samples the replay store itself
    producer = "mbgen.modelserver.work:TrainModel"  # a model server (a planner's model) only trains it

    def batch_spec(self, cfg) -> dict:
        return {}  # a model server, if the agent has one, only paces the learner

    def rows(self, cfg) -> int:
        return cfg.learning.batch_size

    def rollout_shape(self, cfg) -> tuple[int, int]:
        """(states, steps) the model server imagines per update (the bench's arithmetic, the estimate)."""
        return 0, 0

    def learner_step(self, ctx: LearnerContext) -> Update:
        from mbgen.learner.step import ReplayStep

        cfg = ctx.cfg
        step = ReplayStep(
            ctx.store, ctx.dqn, cfg.member_seeds, cfg.learning.batch_size, cfg.env_spec.obs_dim, ctx.device, ctx.timer
        )
        return ReplayUpdate(step)


@dataclass(frozen=True)
class ImaginedBatches:
    """Q trains on the model server's rollouts: rollout_starts states x rollout_length imagined steps."""

    samples_replay = False
    producer = "mbgen.modelserver.work:Imagine"

    def batch_spec(self, cfg) -> dict:
        P, B = cfg.members, self.rows(cfg)
        width = cfg.spec.q_input.width(cfg.options, cfg.env_spec.obs_dim)
        shapes = {"obs": (P, B, width), "next_obs": (P, B, width)}
        return {k: (np.int64 if k == "action" else np.float32, shapes.get(k, (P, B))) for k in BATCH_FIELDS}

    def rows(self, cfg) -> int:
        return cfg.options.rollout_starts * cfg.options.rollout_length

    def rollout_shape(self, cfg) -> tuple[int, int]:
        return cfg.options.rollout_starts, cfg.options.rollout_length

    def learner_step(self, ctx: LearnerContext) -> Update:
        dqn, timer = ctx.dqn, ctx.timer

        def update(t: dict):
            with timer.phase("q_update"):
                return dqn.update(t["obs"], t["action"], t["reward"], t["next_obs"], t["continuation"], t["weight"])

        return Update(update)


def path_spec(cfg, starts: int, paths: int, length: int) -> dict:
    """A path batch: [P, starts, paths, length + 1, width] states and [P, starts, paths, length] the rest."""
    P, W = cfg.members, cfg.env_spec.obs_dim
    edges = (P, starts, paths, length)
    return {
        "states": (np.float32, (*edges[:3], length + 1, W)),
        "action": (np.int64, edges),
        "reward": (np.float32, edges),
        "continuation": (np.float32, edges),
        "valid": (np.float32, edges),
    }


@dataclass(frozen=True)
class ExpandedPaths:
    """MVE: each of S = batch_size // (H + 1) real transitions goes on for H imagined steps; all S (H + 1)
    states are trained toward their multi-step targets (so S (H + 1) <= batch_size rows: 319 for H = 10)."""

    samples_replay = False
    producer = "mbgen.modelserver.work:ImaginePaths"

    @staticmethod
    def starts(cfg) -> int:
        return cfg.learning.batch_size // (cfg.options.mve_horizon + 1)

    def batch_spec(self, cfg) -> dict:
        return path_spec(cfg, self.starts(cfg), 1, cfg.options.mve_horizon + 1)

    def rows(self, cfg) -> int:
        return self.starts(cfg) * (cfg.options.mve_horizon + 1)

    def rollout_shape(self, cfg) -> tuple[int, int]:
        return self.starts(cfg), cfg.options.mve_horizon

    def learner_step(self, ctx: LearnerContext) -> Update:
        from mbgen.learner.expansion import mve_targets

        dqn, timer, gamma = ctx.dqn, ctx.timer, ctx.cfg.learning.gamma

        def update(t: dict):
            with timer.phase("q_update"):
                states = t["states"][:, :, 0]  # [P, S, L + 1, W]: one path per start
                P, S, L = t["reward"].shape[:2] + t["reward"].shape[3:]
                bootstrap = dqn.bootstrap(states[:, :, 1:])
                targets, weights = mve_targets(
                    t["reward"][:, :, 0], t["continuation"][:, :, 0], t["valid"][:, :, 0], bootstrap, gamma
                )
                obs = states[:, :, :L].reshape(P, S * L, -1)
                action = t["action"][:, :, 0].reshape(P, S * L)
                return dqn.update_toward(obs, action, targets.reshape(P, S * L), weights.reshape(P, S * L))

        return Update(update)


@dataclass(frozen=True)
class EnsembleTargets:
    """STEVE: batch_size real transitions, each continued H steps by every one of the K ensemble models; each
    real state is trained toward the inverse-variance weighted mean over horizons of the K candidates."""

    samples_replay = False
    producer = "mbgen.modelserver.work:ImagineEnsemblePaths"

    def batch_spec(self, cfg) -> dict:
        return path_spec(cfg, cfg.learning.batch_size, cfg.options.ensemble_size, cfg.options.mve_horizon + 1)

    def rows(self, cfg) -> int:
        return cfg.learning.batch_size

    def rollout_shape(self, cfg) -> tuple[int, int]:
        return cfg.learning.batch_size * cfg.options.ensemble_size, cfg.options.mve_horizon

    def learner_step(self, ctx: LearnerContext) -> Update:
        return SteveUpdate(ctx)


class SteveUpdate(Update):
    """STEVE's update; reports the mean weight of each horizon per member (`horizon_weights` [P][L])."""

    def __init__(self, ctx: LearnerContext):
        self.dqn, self.timer, self.gamma = ctx.dqn, ctx.timer, ctx.cfg.learning.gamma
        self.weights = []  # [P, L] per update since the last report

    def __call__(self, t: dict):
        from mbgen.learner.expansion import steve_targets

        with self.timer.phase("q_update"):
            states = t["states"]  # [P, S, K, L + 1, W]
            bootstrap = self.dqn.bootstrap(states[:, :, :, 1:])
            targets, weights = steve_targets(t["reward"], t["continuation"], bootstrap, self.gamma)
            self.weights.append(weights.mean(1))
            return self.dqn.update_toward(states[:, :, 0, 0], t["action"][:, :, 0, 0], targets)

    def report(self) -> dict:
        if not self.weights:
            return {}
        import torch

        mean = torch.stack(self.weights).mean(0)
        self.weights.clear()
        return {"horizon_weights": [[round(float(w), 4) for w in member] for member in mean]}
