"""The DQN learner for a population: Q-network, target network, optimiser, one update.

Plain tensors in, per-member losses out; no processes or sockets here. The same
update serves every agent: ER passes replay samples (continuation = 1 - terminal,
weight 1); model agents pass imagined transitions with the model's continuation
probabilities and rollout weights. The gradient of the loss (learner/losses.py)
with respect to the chosen Q-values,

    d loss_p / d Q(s_b, a_b) = 2 w_b (Q(s_b, a_b) - y_b) / B,

is back-propagated by the network's own backward pass (learner/networks.py).
"""

from __future__ import annotations

import numpy as np
import torch
from mbgen.learner.losses import GAMMA, q_loss, td_targets
from mbgen.learner.networks import MLP, ParamStore
from mbgen.learner.optim import AdamState, adam_init, adam_step, uniform
from mbgen.learner.shapes import MLPShape
from mbgen.learner.shards import ShardPool

BATCH_FIELDS = ("obs", "action", "reward", "next_obs", "continuation", "weight")  # what one Q update reads


def q_network(shape: MLPShape, seeds: list[int], device="cpu") -> tuple[ParamStore, MLP]:
    """A store holding one population Q-network (the layout every reader of Q parameters shares)."""
    store = ParamStore(len(seeds), seeds, device)
    net = MLP(store, "q", shape)
    store.build()
    return store, net


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
        workers: int = 1,
    ):
        self.shape = shape
        self.device = torch.device(device)
        self.store, self.q = q_network(shape, seeds, self.device)
        self.target_flat = self.store.flat.clone()
        self.target_params = self._views_of(self.target_flat)
        self.shards = ShardPool(len(seeds), workers)
        self.opt: AdamState = adam_init(self.store.flat)
        self.lr = torch.tensor(lr, dtype=torch.float32, device=self.device)
        common = uniform(self.lr)  # one step size for all: the fused optimiser step
        self.step_size = common if common is not None else self.store.per_element(self.lr)
        self.gamma = gamma
        self.target_period = target_period
        self.updates = 0

    def _views_of(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        views = []
        for k in range(len(self.shape.layers)):
            for name in (f"q.w{k}", f"q.b{k}"):
                a, b = self.store.offsets[name]
                views.append(flat[a:b].view(self.store.shape(name)))
        return list(zip(views[::2], views[1::2]))

    @property
    def members(self) -> int:
        return self.store.members

    @property
    def flat(self) -> torch.Tensor:
        return self.store.flat

    def target_q(self, next_obs: torch.Tensor, members: slice | None = None) -> torch.Tensor:
        params = self.target_params if members is None else [(w[members], b[members]) for w, b in self.target_params]
        return self.q.forward(next_obs, params)

    @torch.no_grad()
    def loss(self, obs, action, reward, next_obs, continuation, weight=None) -> torch.Tensor:
        """Per-member loss [P] (no update)."""
        target = td_targets(self.target_q(next_obs), reward, continuation, self.gamma)
        return q_loss(self.q(obs), action, target, weight)

    @torch.no_grad()
    def update(self, obs, action, reward, next_obs, continuation, weight=None) -> torch.Tensor:
        """One optimiser step on every member toward 1-step TD targets; refreshes the target every
        `target_period` updates."""

        def gradients(m: slice) -> torch.Tensor:
            target = td_targets(self.target_q(next_obs[m], m), reward[m], continuation[m], self.gamma)
            return self._gradients(m, obs[m], action[m], target, None if weight is None else weight[m])

        return self._step(gradients)

    @torch.no_grad()
    def update_toward(self, obs, action, target, weight=None) -> torch.Tensor:
        """One optimiser step on every member toward given targets [P, B] (value expansion)."""

        def gradients(m: slice) -> torch.Tensor:
            return self._gradients(m, obs[m], action[m], target[m], None if weight is None else weight[m])

        return self._step(gradients)

    def bootstrap(self, states: torch.Tensor) -> torch.Tensor:
        """max_a Q_target(s, a) of states [P, ..., W] (the value a target bootstraps from)."""
        shape = states.shape
        flat = states.reshape(shape[0], -1, shape[-1])
        return self.target_q(flat).max(-1).values.view(shape[:-1])

    def _step(self, gradients) -> torch.Tensor:
        losses = torch.cat(self.shards.map(gradients))
        adam_step(self.store.flat, self.store.grad, self.opt, self.step_size)
        self.updates += 1
        if self.updates % self.target_period == 0:
            self.target_flat.copy_(self.store.flat)
        return losses

    def _gradients(self, members, obs, action, target, weight) -> torch.Tensor:
        """Loss of members [members] toward `target` and its gradient, written into the store's gradient buffer."""
        q, inputs = self.q.forward_cached(obs, members)
        chosen = q.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        err = chosen - target
        scale = (2.0 / err.shape[1]) * (err if weight is None else weight * err)
        grad_q = torch.zeros_like(q).scatter_(-1, action.unsqueeze(-1), scale.unsqueeze(-1))
        self.q.backward(inputs, grad_q, members=members)
        return (err * err if weight is None else weight * err * err).mean(dim=1)

    # -- checkpoints ------------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        return {
            "q": self.store.flat.cpu().numpy(),
            "target": self.target_flat.cpu().numpy(),
            "adam_m": self.opt.m.cpu().numpy(),
            "adam_v": self.opt.v.cpu().numpy(),
            "adam_t": np.array(self.opt.t),
            "updates": np.array(self.updates),
            "lr": self.lr.cpu().numpy(),
        }

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.store.flat.copy_(torch.from_numpy(state["q"]))
        self.target_flat.copy_(torch.from_numpy(state["target"]))
        self.opt.m.copy_(torch.from_numpy(state["adam_m"]))
        self.opt.v.copy_(torch.from_numpy(state["adam_v"]))
        self.opt.t = int(state["adam_t"])
        self.updates = int(state["updates"])
