"""ReplayStep: one experience-replay Q update, the learner's work per update for ER.

The learner process and `mbgen bench`'s single-process loop both call it (through
learner/training.py ReplayBatches; the model server's work is modelserver/work.py),
so what the bench times is what runs: sample a [P, batch] batch from the replay store in
place (every member from its own ring with its own generator), then one DQN
update on it.
"""

from __future__ import annotations

import numpy as np
import torch
from mbgen.envs.seeding import derive_seed
from mbgen.learner.dqn import DQN
from mbgen.replay.store import Batch, ReplayStore
from mbgen.runtime.timing import PhaseTimer


class ReplayStep:
    def __init__(
        self,
        store: ReplayStore,
        dqn: DQN,
        seeds: list[int],
        batch_size: int,
        obs_dim: int,
        device: torch.device,
        timer: PhaseTimer | None = None,
    ):
        self.store, self.dqn, self.device = store, dqn, device
        self.batch = Batch.allocate(len(seeds), batch_size, obs_dim)
        self.tensors = self.batch.tensors()
        self.rngs = [np.random.default_rng(derive_seed(s, "replay-sample")) for s in seeds]
        self.timer = timer or PhaseTimer()

    def __call__(self) -> torch.Tensor:
        """One update; the loss per member [P]."""
        with self.timer.phase("sample"):
            self.store.sample(self.rngs, self.batch)
        t = {k: v.to(self.device, non_blocking=True) for k, v in self.tensors.items()}
        with self.timer.phase("q_update"):
            return self.dqn.update(t["obs"], t["action"], t["reward"], t["next_obs"], t["continuation"])
