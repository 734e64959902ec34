"""The agents: one declaration each, which every process asks instead of comparing names.

All agents share one DQN learner; they differ only in where its training
transitions come from (PAPER.md section 3). An `AgentSpec` says

  model     the dynamics model the model server trains and rolls out ("module:Class", a
            modelserver.interface.DynamicsModel); None: Q trains on replay samples and no
            model server runs
  q_input   what the Q-network (and the behaviour policy) reads: observations or a latent
  tuned_as  whose tuned step size and temperature (PAPER.md section 4) the agent starts from
  cost      its time per update relative to ER's or the simple model's bench figure
            (launch/study/estimate.py: a study's --dry-run)
  options   the agent's own options, a dataclass with validate(cfg) and resolve(): the [options]
            section of its configuration (learner/config.py); another agent's run refuses them

Adding an agent is one module (its model class) plus one entry in AGENTS. The
model is named as an import path so that this package, which actors and the
learner import, does not import the model server's code.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from dataclasses import dataclass

from mbgen.learner.check import fail, integer, number, text
from mbgen.learner.qinput import LatentInput, ObservationInput, QInput


# -- each agent's own options: its [options] section, refused for other agents ----------------------
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

    def validate(self, cfg) -> None:
        number("model_lr", self.model_lr, 0, strict=True)
        integer("model_batch", self.model_batch, 1)
        text("frozen_model", self.frozen_model)
        if self.frozen_model and not os.path.isfile(self.frozen_model):
            fail("frozen_model", "an existing model checkpoint (RUN/checkpoints/model-final.npz)", self.frozen_model)

    def resolve(self) -> None:
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
class EnsembleOptions(RolloutOptions):
    ensemble_size: int = 5  # ensemble: K simple models per member, each trained on its own bootstrap draw of each batch
    uncertainty_cutoff: float = 0.0  # ensemble: cut rollouts where the models' disagreement exceeds this; 0 = off

    def validate(self, cfg) -> None:
        super().validate(cfg)
        integer("ensemble_size", self.ensemble_size, 1)
        number("uncertainty_cutoff", self.uncertainty_cutoff, 0, strict=False)
        if self.uncertainty_cutoff >= 0.5:
            fail(
                "uncertainty_cutoff",
                "a number in [0, 0.5) (0 = off; a disagreement is at most 0.5)",
                self.uncertainty_cutoff,
            )


@dataclass(frozen=True)
class AgentSpec:
    name: str  # the --agent value
    description: str  # one line for --help and the README
    model: str | None  # "module:Class" of the dynamics model; None: Q trains on replay samples
    q_input: QInput  # what the Q-network reads
    options: type = NoOptions  # the agent's options: its [options] section
    tuned_as: str = ""  # agent whose tuned (step size, temperature) this one uses; "" = its own
    cost: float = 1.0  # wall time per update over its kind's bench figure (ER, or the simple model), measured

    @property
    def model_server(self) -> bool:
        """Whether a model server runs and the learner trains on its imagined batches."""
        return self.model is not None

    def model_class(self) -> type:
        module, _, name = self.model.partition(":")
        return getattr(importlib.import_module(module), name)


AGENTS: dict[str, AgentSpec] = {
    spec.name: spec
    for spec in (
        AgentSpec("er", "DQN on 320 replay samples (experience replay)", None, ObservationInput()),
        AgentSpec(
            "simple",
            "32 replay states rolled out 10 steps in a learned model of independent Bernoulli features",
            "mbgen.modelserver.models:SimpleModel",
            ObservationInput(),
            RolloutOptions,
        ),
        AgentSpec(
            "perfect",
            "the same rollouts in the true dynamics",
            "mbgen.modelserver.models:PerfectModel",
            ObservationInput(),
            RolloutOptions,
        ),
        AgentSpec(
            "latent-cat",
            "rollouts in a Dreamer-style latent model of 32 categorical features of 32 classes",
            "mbgen.modelserver.models:LatentModel",
            LatentInput(categorical=True),
            LatentOptions,
        ),
        AgentSpec(
            "latent-gauss",
            "rollouts in a Dreamer-style latent model of 32 Gaussian features",
            "mbgen.modelserver.models:LatentModel",
            LatentInput(categorical=False),
            LatentOptions,
        ),
        AgentSpec(
            "ensemble",
            "MBPO: the simple model's rollouts in an ensemble of K bootstrapped simple models, a random one per step",
            "mbgen.modelserver.ensemble:EnsembleModel",
            ObservationInput(),
            EnsembleOptions,
            tuned_as="simple",
            cost=3.7,  # K = 5: model step and Q update over the simple model's, ProcMaze(4), P = 4, 1 thread
        ),
        AgentSpec(
            "table",
            "Dyna with a tabular model: rollouts replay the outcomes seen for each (observation, action)",
            "mbgen.modelserver.table:TableModel",
            ObservationInput(),
            RolloutOptions,
            tuned_as="simple",
            cost=0.5,  # model step and Q update over the simple model's, ProcMaze(4), P = 4, 1 thread
        ),
    )
}

# Tuned (Q step size, softmax temperature) per (agent, environment, regime): PAPER.md section 4.
TUNED: dict[tuple[str, str, str], tuple[float, float]] = {
    ("er", "procmaze", "high"): (5e-5, 0.1),
    ("simple", "procmaze", "high"): (2e-4, 0.8),
    ("perfect", "procmaze", "high"): (1e-4, 0.4),
    ("latent-cat", "procmaze", "high"): (2e-4, 1.6),
    ("latent-gauss", "procmaze", "high"): (3.125e-6, 12.8),
    ("er", "buttongrid", "high"): (5e-5, 0.0125),
    ("simple", "buttongrid", "high"): (2e-4, 1.6),
    ("perfect", "buttongrid", "high"): (2e-4, 0.0125),
    ("latent-cat", "buttongrid", "high"): (1e-4, 0.05),
    ("latent-gauss", "buttongrid", "high"): (1.25e-5, 0.1),
    ("er", "panflute", "high"): (1e-4, 0.1),
    ("simple", "panflute", "high"): (1e-4, 0.4),
    ("perfect", "panflute", "high"): (2e-4, 0.1),
    ("latent-cat", "panflute", "high"): (8e-4, 0.05),
    ("latent-gauss", "panflute", "high"): (2e-4, 0.1),
    ("er", "procmaze", "low"): (2.5e-5, 1.6),
    ("simple", "procmaze", "low"): (2.5e-5, 0.4),
    ("perfect", "procmaze", "low"): (4e-4, 0.4),
    ("latent-cat", "procmaze", "low"): (1e-4, 0.8),
    ("latent-gauss", "procmaze", "low"): (3.125e-6, 0.8),
    ("er", "buttongrid", "low"): (2.5e-5, 0.1),
    ("simple", "buttongrid", "low"): (5e-5, 0.4),
    ("perfect", "buttongrid", "low"): (2e-4, 0.0125),
    ("latent-cat", "buttongrid", "low"): (2e-4, 0.1),
    ("latent-gauss", "buttongrid", "low"): (2.5e-5, 0.8),
    ("er", "panflute", "low"): (3.125e-6, 0.8),
    ("simple", "panflute", "low"): (2e-4, 0.2),
    ("perfect", "panflute", "low"): (1e-4, 0.1),
    ("latent-cat", "panflute", "low"): (1.6e-3, 0.05),
    ("latent-gauss", "panflute", "low"): (2e-4, 0.1),
}
# Environments the paper did not tune on borrow the values of the closest one.
TUNED_PROXY = {"opengrid": "procmaze", "wallgrid3x3": "procmaze"}


def agent_spec(name: str) -> AgentSpec:
    if name not in AGENTS:
        raise ValueError(f"agent must be one of {', '.join(AGENTS)}, got {name!r}")
    return AGENTS[name]


def tuned(agent: str, env: str, regime: str) -> tuple[float, float]:
    """The paper's tuned (Q step size, temperature) for an agent, environment and regime."""
    spec = agent_spec(agent)
    return TUNED[(spec.tuned_as or spec.name, TUNED_PROXY.get(env, env), regime)]


# A model server trains and rolls out a model: its agent's options are ModelOptions (or more).
assert all(issubclass(spec.options, ModelOptions) for spec in AGENTS.values() if spec.model_server)


def option_names(agent: str) -> set[str]:
    """The keys of an agent's own options."""
    return {f.name for f in dataclasses.fields(agent_spec(agent).options)}


def option_fields() -> list[str]:
    """Every agent option's key, each once (flags and the [options] section)."""
    return list(dict.fromkeys(f.name for spec in AGENTS.values() for f in dataclasses.fields(spec.options)))
