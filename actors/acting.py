"""ActingPolicy: a process's local copy of what chooses actions: the Q-network and, where the agent
needs it, a model network (a latent agent's encoder, or the simple model a planner searches with).

The model network has the layout of the model server's published block (`model_store`, filled by
LocalParams, RemoteParams or a checkpoint); the agent's acting declaration (learner/acting.py) turns
observations into action values, softmax at the temperature to behave, greedy to evaluate.
"""

from __future__ import annotations

import numpy as np
import torch

from mbgen.learner.behaviour import greedy_actions, softmax_actions
from mbgen.learner.config import RunConfig
from mbgen.learner.dqn import q_network
from mbgen.learner.networks import MLP, ParamStore, with_action


class ActingPolicy:
    def __init__(self, cfg: RunConfig, generator: torch.Generator):
        self.cfg = cfg
        self.q_store, self.q = q_network(cfg.q_shape(), cfg.member_seeds)
        self.model_store: ParamStore | None = None  # the actors' model parameters, when the agent has them
        self.encoder = self.model_net = None
        if cfg.actor_model_numel():
            self.model_store = ParamStore(cfg.members, cfg.member_seeds)
            encoder = cfg.encoder_shape()
            if encoder is not None:  # the same layout as the model server's encoder span
                self.encoder = MLP(self.model_store, "encoder", encoder)
            self.model_net = cfg.spec.acting.model_network(cfg, self.model_store)
            self.model_store.build()
        self.generator = generator
        self.temperature = torch.tensor(cfg.member_temperature, dtype=torch.float32)

    def model_step(self, state: torch.Tensor, action: torch.Tensor):
        """The simple model as a deterministic step (the planner's): the most likely next observation,
        the predicted reward, and the continuation probability (1 in continuing environments)."""
        main, side = self.model_net(with_action(state, action, self.cfg.env_spec.num_actions))
        cont = torch.sigmoid(side[1]) if self.cfg.env_spec.episodic else torch.ones_like(side[1])
        return (main > 0).to(state.dtype), side[0], cont

    @torch.no_grad()
    def action_values(self, obs: np.ndarray) -> torch.Tensor:
        """bool obs [P, E, D] -> the values the agent acts on [P, E, A] (Q of the observation or of a sampled
        latent, or first-action values planned through the model)."""
        x = torch.from_numpy(obs).to(torch.float32)
        x = self.cfg.spec.q_input.encode(self.cfg.options, x, self.encoder, self.generator)
        return self.cfg.spec.acting.values(self, x)

    def behaviour(self, obs: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        return softmax_actions(self.action_values(obs), self.temperature, uniforms)

    def greedy(self, obs: np.ndarray) -> np.ndarray:
        return greedy_actions(self.action_values(obs))
