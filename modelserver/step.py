"""ModelStep: one model update and one imagined batch, the model server's work per Q update.

The model server process and `mbgen bench`'s single-process loop both call it,
so what the bench times is what runs. From a [P, max(model_batch,
rollout_starts)] batch of real transitions: the model takes one training step
(optimiser included) on the first `model_batch` (none for a frozen model), then the engine rolls out
`rollout_length` steps from the first `rollout_starts` states with the newest
Q parameters (`before_rollout` refreshes them).
"""

from __future__ import annotations

from typing import Callable

import torch
from mbgen.modelserver.interface import DynamicsModel
from mbgen.modelserver.rollout import RolloutEngine
from mbgen.runtime.timing import PhaseTimer


class ModelStep:
    def __init__(
        self,
        model: DynamicsModel,
        engine: RolloutEngine,
        model_batch: int,
        rollout_starts: int,
        timer: PhaseTimer | None = None,
        train: bool = True,
    ):
        self.model, self.engine, self.train = model, engine, train
        self.model_batch, self.rollout_starts = model_batch, rollout_starts
        self.timer = timer or PhaseTimer()

    def __call__(
        self,
        real: dict[str, torch.Tensor],
        out: dict[str, torch.Tensor] | None = None,
        before_rollout: Callable[[], None] | None = None,
    ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """(model loss per member or None, imagined batch [P, S*L, ...])."""
        loss = None
        if self.train:
            with self.timer.phase("model_train"):
                t = {k: v[:, : self.model_batch] for k, v in real.items()}
                loss = self.model.train_step(t["obs"], t["action"], t["reward"], t["next_obs"], t["continuation"])
        if before_rollout is not None:
            with self.timer.phase("publish"):
                before_rollout()
        with self.timer.phase("rollout"):
            imagined = self.engine.run(real["obs"][:, : self.rollout_starts], out)
        return loss, imagined
