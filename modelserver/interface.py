"""The interface every dynamics model implements, so the model server and the rollout engine never probe.

A model is population-batched: every tensor has a leading member axis [P, ...]
(or [p, ...] for a member range when `member_parallel` is set). Models are
built as `Model(ctx)` from one ModelContext by `build_model`, from the agent's
declaration (learner/agents.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, Protocol, Sequence

import numpy as np
import torch
from mbgen.learner.shards import ShardPool

if TYPE_CHECKING:
    from mbgen.envs.base import EnvSpec
    from mbgen.learner.config import RunConfig
    from mbgen.learner.networks import ParamStore


class Step(NamedTuple):
    """One imagined step of p x S states."""

    next_state: torch.Tensor  # [p, S, ...] the model's state after the action
    reward: torch.Tensor  # [p, S] predicted reward
    continuation: torch.Tensor  # [p, S] probability the episode goes on
    valid: torch.Tensor | None = None  # [p, S] 1 where the model could produce this transition; None: all


class Prediction(NamedTuple):
    """The model's one-step prediction from real (observation, action) pairs (diagnostics)."""

    next_obs_logits: torch.Tensor  # [P, B, D] logits of each next-observation feature
    reward: torch.Tensor  # [P, B]
    continuation: torch.Tensor  # [P, B] probability


class DynamicsModel(Protocol):
    member_parallel: bool  # train_step, noise and step accept a member range (learner/shards.py)
    learned: bool  # trained from data (diagnostics compare it with held-out transitions)
    store: "ParamStore | None"  # trainable parameters; None when nothing is trained by gradient

    def train_step(self, obs, action, reward, next_obs, continuation) -> torch.Tensor | None:
        """One update on a [P, B] batch of real transitions (optimiser included); loss per member [P]."""

    def start(self, obs: torch.Tensor) -> torch.Tensor:
        """The rollout state of real observations [P, S, D]."""

    def noise(self, length: int, members: int, starts: int, generator: torch.Generator | None) -> Sequence:
        """All random draws an L-step rollout of members x starts states needs, drawn at once (one per step)."""

    def step(self, state: torch.Tensor, action: torch.Tensor, noise, members: slice | None = None) -> Step:
        """One imagined step from `state` [p, S, ...] under `action` [p, S] with this step's noise."""

    def q_input(self, state: torch.Tensor) -> torch.Tensor:
        """What the Q-network reads of a state (observations, or latents)."""

    def predict(self, obs: torch.Tensor, action: torch.Tensor) -> Prediction:
        """One-step prediction from real observations (diagnostics)."""

    def acting_params(self) -> torch.Tensor | None:
        """Parameters actors and the evaluator need besides Q (a latent model's encoder), or None."""

    def diagnostics(self, obs: torch.Tensor, action: torch.Tensor) -> dict:
        """Model-specific figures for the model_diagnostics event (may be empty)."""

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to continue training: parameters, optimiser, tables."""

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None: ...


@dataclass(frozen=True)
class ModelContext:
    """What a model is built from: the run (its sections and env_spec), where it lives, its randomness."""

    cfg: "RunConfig"  # sizes (learning.hidden, env_spec), the agent's options, the population's seeds
    device: torch.device
    generator: torch.Generator | None  # the model's own random stream (sampling, bootstraps)
    shards: ShardPool | None = None  # member-parallel workers (learner/shards.py); None: one
    env: "EnvSpec | None" = None  # the observations and actions modelled; None: the run's environment

    @property
    def obs_dim(self) -> int:
        return (self.env or self.cfg.env_spec).obs_dim

    @property
    def num_actions(self) -> int:
        return (self.env or self.cfg.env_spec).num_actions


def build_model(ctx: ModelContext) -> DynamicsModel:
    """The dynamics model the run's agent declares."""
    return ctx.cfg.spec.model_class()(ctx)
