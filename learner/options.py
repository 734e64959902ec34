"""Each agent's own options: the [options] section of its configuration, refused for other agents.

An agent's declaration (learner/agents.py) names one of these classes. Each field has a one-line
comment (its --flag's help); `validate(cfg)` refuses bad values naming the key; `resolve()` makes
paths absolute. Classes compose by inheritance, so a key has one home even when several agents
read it (ensemble_size: ensemble and steve).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from mbgen.learner.check import fail, integer, integer_list, number, text


@dataclass
class NoOptions:
    """An agent without options of its own (ER)."""

    def validate(self, cfg) -> None:
        pass

    def resolve(self) -> None:
        pass


@dataclass
class ModelOptions(NoOptions):
    model_lr: float = 2e-4  # model step size
    model_batch: int = 32  # real transitions per model update; rollouts start from the same ones
    frozen_model: str = ""  # a run's checkpoints/model-final.npz: roll out that model, never train it; empty = learn
    model_snapshots: list[int] = field(default_factory=list)  # model updates at which to keep checkpoints/model-<U>.npz

    def validate(self, cfg) -> None:
        super().validate(cfg)  # an agent with a model may compose other options (EnsembleSizeOptions)
        number("model_lr", self.model_lr, 0, strict=True)
        integer("model_batch", self.model_batch, 1)
        text("frozen_model", self.frozen_model)
        if self.frozen_model and not os.path.isfile(self.frozen_model):
            fail("frozen_model", "an existing model checkpoint (RUN/checkpoints/model-final.npz)", self.frozen_model)
        if isinstance(self.model_snapshots, int) and not isinstance(self.model_snapshots, bool):
            self.model_snapshots = [self.model_snapshots]  # `--model-snapshots 500`
        if self.model_snapshots:
            integer_list("model_snapshots", self.model_snapshots, 1)
            if sorted(set(self.model_snapshots)) != self.model_snapshots:
                fail("model_snapshots", "distinct model-update counts in increasing order", self.model_snapshots)
            if self.frozen_model:
                fail("model_snapshots", "empty for a frozen model (it is never trained)", self.model_snapshots)

    def resolve(self) -> None:
        super().resolve()
        self.frozen_model = os.path.abspath(self.frozen_model) if self.frozen_model else ""


@dataclass
class RolloutOptions(ModelOptions):
    rollout_starts: int = 32  # states each update rolls out from (more than model_batch: extra ones sampled)
    rollout_length: int = 10  # imagined steps per rollout (1 for the paper's ablation)

    def validate(self, cfg) -> None:
        super().validate(cfg)
        integer("rollout_starts", self.rollout_starts, 1)
        integer("rollout_length", self.rollout_length, 1)
        rows = self.rollout_starts * self.rollout_length
        if rows != cfg.learning.batch_size:
            fail(
                "batch_size",
                f"rollout_starts x rollout_length = {rows} for agent {cfg.run.agent} (equal transitions per update)",
                cfg.learning.batch_size,
            )


@dataclass
class LatentOptions(RolloutOptions):
    latent_features: int = 32  # latent agents: number of latent features
    latent_classes: int = 32  # latent-cat: classes per categorical feature

    def validate(self, cfg) -> None:
        super().validate(cfg)
        integer("latent_features", self.latent_features, 1)
        integer("latent_classes", self.latent_classes, 1)


@dataclass
class EnsembleSizeOptions(NoOptions):
    ensemble_size: int = 5  # ensemble, steve: K simple models per member, each on its own bootstrap draw; steve: 4

    def validate(self, cfg) -> None:
        super().validate(cfg)
        integer("ensemble_size", self.ensemble_size, 1)

    @property
    def rollout_cutoff(self) -> float:
        """The disagreement past which the ensemble's rollouts are cut (0: never)."""
        return 0.0


@dataclass
class EnsembleOptions(RolloutOptions, EnsembleSizeOptions):
    uncertainty_cutoff: float = 0.0  # ensemble: cut rollouts where the models' disagreement exceeds this; 0 = off

    @property
    def rollout_cutoff(self) -> float:
        return float(self.uncertainty_cutoff)

    def validate(self, cfg) -> None:
        super().validate(cfg)
        number("uncertainty_cutoff", self.uncertainty_cutoff, 0, strict=False)
        if self.uncertainty_cutoff >= 0.5:
            fail(
                "uncertainty_cutoff",
                "a number in [0, 0.5) (0 = off; a disagreement is at most 0.5)",
                self.uncertainty_cutoff,
            )


@dataclass
class ExpansionOptions(ModelOptions):
    mve_horizon: int = 10  # mve, steve: imagined steps after each real transition (the expansion's H); steve: 3

    def validate(self, cfg) -> None:
        super().validate(cfg)
        integer("mve_horizon", self.mve_horizon, 1)
        if self.mve_horizon + 1 > cfg.learning.batch_size:
            fail("mve_horizon", f"at most batch_size - 1 = {cfg.learning.batch_size - 1}", self.mve_horizon)


@dataclass
class SteveOptions(ExpansionOptions, EnsembleSizeOptions):
    # STEVE's own defaults (Buckman et al. used short horizons and ensembles of 4): its model server imagines
    # batch_size x K x H steps per update, 16,000 at K = 5 and H = 10 (1.5 s per update here), 3,840 at 4 and 3.
    mve_horizon: int = 3  # mve, steve: imagined steps after each real transition (the value expansion's H)
    ensemble_size: int = 4  # ensemble, steve: K simple models per member, each trained on its own bootstrap draw

    def validate(self, cfg) -> None:
        super().validate(cfg)
        if self.ensemble_size < 2:
            fail("ensemble_size", "an integer >= 2 for agent steve (the targets weigh the models' disagreement)",
                 self.ensemble_size)  # fmt: skip


@dataclass
class PlanningOptions(ModelOptions):
    plan_depth: int = 3  # mpc: actions in each planned sequence (d); every sequence when |A|^d <= plan_samples
    plan_samples: int = 128  # mpc: sequences scored per state and CEM round (more than |A|^d: exhaustive)
    plan_iterations: int = 3  # mpc: CEM rounds when the sequences are too many to score them all

    def validate(self, cfg) -> None:
        super().validate(cfg)
        integer("plan_depth", self.plan_depth, 1)
        integer("plan_samples", self.plan_samples, 1)
        integer("plan_iterations", self.plan_iterations, 1)
        if self.plan_samples < cfg.env_spec.num_actions:
            fail("plan_samples", f"at least the number of actions, {cfg.env_spec.num_actions}", self.plan_samples)
