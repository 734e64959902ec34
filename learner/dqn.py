"""The DQN learner for a population: Q-network, target network, optimiser, one update.

Plain tensors in, per-member losses out; no processes or sockets here. The same
update serves every agent: ER passes replay samples (continuation = 1 - terminal,
weight 1); model agents pass imagined transitions with the model's continuation
probabilities and rollout weights.
"""
from __future__ import annotations

import numpy as np
import torch

from envs.seeding import derive_seed
from learner.losses import GAMMA, q_loss, td_targets
from learner.networks import MLPShape, PopulationMLP
from learner.optim import AdamState, adam_init, adam_step


class DQN:
    def __init__(
        self,
        shape: MLPShape,
        seeds: list[int],
        lr: list[float],
        *,
        gamma: float = GAMMA,
        target_period: int = 100,
        device: str | torch.device = "cpu",
    ):
        self.shape = shape
        self.device = torch.device(device)
        self.q = PopulationMLP.create(shape, [derive_seed(s, "q") for s in seeds], self.device)
        self.target = PopulationMLP(shape, self.q.flat.detach().clone())
        self.opt: AdamState = adam_init(self.q.flat)
        self.lr = torch.tensor(lr, dtype=torch.float32, device=self.device)
        self.gamma = gamma
        self.target_period = target_period
        self.updates = 0

    @property
    def members(self) -> int:
        return self.q.members

    def loss(self, obs, action, reward, next_obs, continuation, weight=None) -> torch.Tensor:
        """Per-member loss [P]; differentiable in the Q-network's parameters."""
        with torch.no_grad():
            target = td_targets(self.target(next_obs), reward, continuation, self.gamma)
        return q_loss(self.q(obs), action, target, weight)

    def update(self, obs, action, reward, next_obs, continuation, weight=None) -> torch.Tensor:
        """One optimiser step on every member; refreshes the target every `target_period` updates."""
        losses = self.loss(obs, action, reward, next_obs, continuation, weight)
        (grad,) = torch.autograd.grad(losses.sum(), self.q.flat)
        adam_step(self.q.flat, grad, self.opt, self.lr)
        self.updates += 1
        if self.updates % self.target_period == 0:
            self.target.load_(self.q.flat)
        return losses.detach()

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {
            "q": self.q.flat.detach().cpu().numpy(),
            "target": self.target.flat.cpu().numpy(),
            "adam_m": self.opt.m.cpu().numpy(),
            "adam_v": self.opt.v.cpu().numpy(),
            "adam_t": np.array(self.opt.t),
            "updates": np.array(self.updates),
            "lr": self.lr.cpu().numpy(),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        with torch.no_grad():
            self.q.flat.copy_(torch.from_numpy(state["q"]))
            self.target.flat.copy_(torch.from_numpy(state["target"]))
            self.opt.m.copy_(torch.from_numpy(state["adam_m"]))
            self.opt.v.copy_(torch.from_numpy(state["adam_v"]))
        self.opt.t = int(state["adam_t"])
        self.updates = int(state["updates"])
