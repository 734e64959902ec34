"""ActingPolicy: a process's local copy of the Q-network (and encoder) for choosing actions."""

from __future__ import annotations

import numpy as np
import torch
from mbgen.learner.behaviour import greedy_actions, softmax_actions
from mbgen.learner.config import RunConfig
from mbgen.learner.dqn import q_network
from mbgen.learner.networks import MLP, ParamStore


class ActingPolicy:
    def __init__(self, cfg: RunConfig, generator: torch.Generator):
        self.cfg = cfg
        self.q_store, self.q = q_network(cfg.q_shape(), cfg.member_seeds)
        enc = cfg.encoder_shape()
        self.encoder_store, self.encoder = None, None
        if enc is not None:  # the same layout as the model server's encoder span
            self.encoder_store = ParamStore(cfg.members, cfg.member_seeds)
            self.encoder = MLP(self.encoder_store, "encoder", enc)
            self.encoder_store.build()
        self.generator = generator
        self.temperature = torch.tensor(cfg.member_temperature, dtype=torch.float32)

    @torch.no_grad()
    def q_values(self, obs: np.ndarray) -> torch.Tensor:
        """bool obs [P, E, D] -> Q-values [P, E, A] (latent agents act on a sampled latent)."""
        x = torch.from_numpy(obs).to(torch.float32)
        return self.q(self.cfg.spec.q_input.encode(self.cfg.options, x, self.encoder, self.generator))

    def behaviour(self, obs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        return softmax_actions(self.q_values(obs), self.temperature, uniforms)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return greedy_actions(self.q_values(obs))
