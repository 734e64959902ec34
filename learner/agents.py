"""The agents: one declaration each, which every process asks instead of comparing names.

All agents share one DQN learner; they differ only in where its training
transitions come from (PAPER.md section 3). An `AgentSpec` says

  model     the dynamics model the model server trains and rolls out ("module:Class", a
            modelserver.interface.DynamicsModel); None: Q trains on replay samples and no
            model server runs
  q_input   what the Q-network (and the behaviour policy) reads: observations or a latent
  tuned_as  whose tuned step size and temperature (PAPER.md section 4) the agent starts from
  cost      its time per update relative to ER's or the simple model's bench figure
            (launch/estimate.py: a study's --dry-run)
  options   configuration keys only this agent reads (learner/config.py); another agent's run
            refuses them unless they are at their defaults

Adding an agent is one module (its model class) plus one entry in AGENTS. The
model is named as an import path so that this package, which actors and the
learner import, does not import the model server's code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mbgen.learner.networks import MLPShape, mlp_shape
from mbgen.learner.qinput import LatentInput, ObservationInput, QInput

if TYPE_CHECKING:
    from mbgen.learner.config import RunConfig


@dataclass(frozen=True)
class AgentSpec:
    name: str  # the --agent value
    description: str  # one line for --help and the README
    model: str | None  # "module:Class" of the dynamics model; None: Q trains on replay samples
    q_input: QInput  # what the Q-network reads
    tuned_as: str = ""  # agent whose tuned (step size, temperature) this one uses; "" = its own
    cost: float = 1.0  # wall time per update over its kind's bench figure (ER, or the simple model), measured
    options: tuple[str, ...] = ()  # config keys only this agent reads

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
        ),
        AgentSpec(
            "perfect", "the same rollouts in the true dynamics", "mbgen.modelserver.models:PerfectModel", ObservationInput()
        ),
        AgentSpec(
            "latent-cat",
            "rollouts in a Dreamer-style latent model of 32 categorical features of 32 classes",
            "mbgen.modelserver.models:LatentModel",
            LatentInput(categorical=True),
        ),
        AgentSpec(
            "latent-gauss",
            "rollouts in a Dreamer-style latent model of 32 Gaussian features",
            "mbgen.modelserver.models:LatentModel",
            LatentInput(categorical=False),
        ),
        AgentSpec(
            "ensemble",
            "MBPO: the simple model's rollouts in an ensemble of K bootstrapped simple models, a random one per step",
            "mbgen.modelserver.ensemble:EnsembleModel",
            ObservationInput(),
            tuned_as="simple",
            cost=3.7,  # K = 5: model step and Q update over the simple model's, ProcMaze(4), P = 4, 1 thread
            options=("ensemble_size", "uncertainty_cutoff"),
        ),
        AgentSpec(
            "table",
            "Dyna with a tabular model: rollouts replay the outcomes seen for each (observation, action)",
            "mbgen.modelserver.table:TableModel",
            ObservationInput(),
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


def q_shape(cfg: "RunConfig", obs_dim: int, num_actions: int) -> MLPShape:
    """The Q-network's layer sizes: what the agent's Q reads, the hidden layers, one value per action."""
    return mlp_shape(agent_spec(cfg.agent).q_input.width(cfg, obs_dim), cfg.hidden, num_actions)


def encoder_shape(cfg: "RunConfig", obs_dim: int) -> MLPShape | None:
    """The encoder actors must run before Q (latent agents), or None."""
    return agent_spec(cfg.agent).q_input.encoder_shape(cfg, obs_dim)
