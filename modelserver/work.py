"""The model server's work per Q update, one class per way an agent uses its model (learner/training.py
names it): the model server process and `mbgen bench`'s single-process loop both call these, so
what the bench times is what runs.

Every one first takes one training step of the model (optimiser included) on the first
`model_batch` of the real transitions sampled for this update (none for a frozen model), then calls
`before_rollout` (publish what the actors need of the model, read the newest Q), then:

  TrainModel            nothing more: a planner in the actors uses the model (mpc)
  Imagine               rolls out `rollout_length` steps from the first `rollout_starts` states into
                        the imagined batch the learner trains on (the paper's model agents)
  ImaginePaths          continues each of S real transitions for H imagined steps from its next
                        state: the paths of value expansion (mve)
  ImagineEnsemblePaths  the same with every one of the ensemble's K models imagining its own path
                        from each of batch_size real transitions (steve)

`samples` is how many real transitions an update needs; the rollouts read Q with the softmax
behaviour policy at the members' temperatures (modelserver/rollout.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from mbgen.learner.shards import ShardPool
from mbgen.learner.training import ExpandedPaths
from mbgen.modelserver.interface import DynamicsModel
from mbgen.modelserver.rollout import RolloutEngine
from mbgen.runtime.timing import PhaseTimer


@dataclass
class WorkContext:
    cfg: object  # RunConfig
    model: DynamicsModel
    q_net: object  # the Q-network the rollouts act with (learner/networks.py MLP)
    temperature: torch.Tensor  # [P]
    generator: torch.Generator | None
    shards: ShardPool | None
    timer: PhaseTimer
    train: bool = True  # False: a frozen model (--frozen-model), never trained


class TrainModel:
    def __init__(self, ctx: WorkContext):
        self.ctx, self.model, self.timer = ctx, ctx.model, ctx.timer
        self.model_batch = ctx.cfg.options.model_batch
        self.engine: RolloutEngine | None = None

    @property
    def samples(self) -> int:
        return self.model_batch

    @property
    def generators(self) -> list:
        """Random streams of the rollouts (checkpoints)."""
        return self.engine.generators if self.engine is not None else []

    def take_cut_fraction(self) -> list[float] | None:
        return self.engine.take_cut_fraction() if self.engine is not None else None

    def train(self, real: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if not self.ctx.train:
            return None
        with self.timer.phase("model_train"):
            t = {k: v[:, : self.model_batch] for k, v in real.items()}
            return self.model.train_step(t["obs"], t["action"], t["reward"], t["next_obs"], t["continuation"])

    def __call__(
        self,
        real: dict[str, torch.Tensor],
        out: dict[str, torch.Tensor] | None = None,
        before_rollout: Callable[[], None] | None = None,
    ) -> torch.Tensor | None:
        """The model's loss per member (None when it is not trained); `out`: the batch to fill (tensor views)."""
        loss = self.train(real)
        if before_rollout is not None:
            with self.timer.phase("publish"):
                before_rollout()
        self.produce(real, out)
        return loss

    def produce(self, real: dict[str, torch.Tensor], out: dict[str, torch.Tensor] | None) -> None:
        pass

    def engine_for(self, model, length: int) -> RolloutEngine:
        ctx = self.ctx
        episodic = ctx.cfg.env_spec.episodic
        return RolloutEngine(model, ctx.q_net, length, ctx.temperature, episodic, ctx.generator, ctx.shards)


class Imagine(TrainModel):
    def __init__(self, ctx: WorkContext):
        super().__init__(ctx)
        self.starts = ctx.cfg.options.rollout_starts
        self.engine = self.engine_for(ctx.model, ctx.cfg.options.rollout_length)

    @property
    def samples(self) -> int:
        return max(self.model_batch, self.starts)

    def produce(self, real, out) -> dict[str, torch.Tensor]:
        with self.timer.phase("rollout"):
            return self.engine.run(real["obs"][:, : self.starts], out)


class ImaginePaths(TrainModel):
    paths = 1  # paths per start

    def __init__(self, ctx: WorkContext):
        super().__init__(ctx)
        self.horizon = ctx.cfg.options.mve_horizon
        self.starts = ExpandedPaths.starts(ctx.cfg)
        self.engine = self.engine_for(self.path_model(ctx.model), self.horizon)

    def path_model(self, model):
        return model

    @property
    def samples(self) -> int:
        return max(self.model_batch, self.starts)

    def produce(self, real, out) -> dict[str, torch.Tensor]:
        """Paths [P, S, K, H + 1 (+1 states), ...]: the real transition, then the H imagined steps."""
        S, K = self.starts, self.paths
        r = {k: v[:, :S] for k, v in real.items()}
        P = r["action"].shape[0]
        with self.timer.phase("rollout"):
            # every model's paths start from the real next states: [P, K S] k-major, as EachModelPaths steps them
            starts = r["next_obs"].unsqueeze(1).expand(P, K, S, -1).reshape(P, K * S, -1)
            imagined = {k: v.view(P, K, S, *v.shape[2:]).transpose(1, 2) for k, v in self.engine.run_paths(starts).items()}
        fields = out if out is not None else {}
        states = torch.cat(
            [r["obs"][:, :, None, None].expand(P, S, K, 1, -1), r["next_obs"][:, :, None, None].expand(P, S, K, 1, -1),
             imagined["next_obs"]], dim=3,
        )  # fmt: skip
        first = {"action": r["action"], "reward": r["reward"], "continuation": r["continuation"]}
        first["valid"] = torch.ones_like(r["reward"])
        values = {"states": states}
        for k, v in first.items():
            values[k] = torch.cat([v[:, :, None, None].expand(P, S, K, 1).to(imagined[k].dtype), imagined[k]], dim=3)
        for k, v in values.items():
            if k in fields:
                fields[k].copy_(v)
            else:
                fields[k] = v
        return fields


class ImagineEnsemblePaths(ImaginePaths):
    def __init__(self, ctx: WorkContext):
        self.paths = ctx.cfg.options.ensemble_size
        TrainModel.__init__(self, ctx)
        self.horizon = ctx.cfg.options.mve_horizon
        self.starts = ctx.cfg.learning.batch_size
        self.engine = self.engine_for(self.path_model(ctx.model), self.horizon)

    def path_model(self, model):
        from mbgen.modelserver.ensemble import EachModelPaths

        return EachModelPaths(model)
