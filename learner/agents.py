"""The agents: one declaration each of an algorithm, which every process asks instead of comparing names.

As Acme's builders make an agent's learner, actor and replay, an `AgentSpec` says

  trains_on  what the learner trains on and how its target is formed (learner/training.py): replay
             batches, imagined transitions, value-expansion paths, ensemble value-expansion targets.
             It owns the batch the model server hands the learner, the learner's update, and names
             the model server's work per update (modelserver/work.py)
  acting     how actors and the evaluator choose actions (learner/acting.py): on Q, or planning
             through the model, whose parameters then reach them as Q's do
  model      the dynamics model ("module:Class", a modelserver.interface.DynamicsModel); None: no
             model server runs. Which processes run follows: replay service, learner, evaluator,
             actors, and the model server when there is a model
  q_input    what the Q-network (and the behaviour policy) reads: observations or a latent
  options    the agent's own options (learner/options.py): the [options] section of its
             configuration; another agent's run refuses them
  tuned_as   whose tuned step size and temperature (the paper's grid search) the agent starts from
  cost       its time per update relative to ER's or the simple model's bench figure
             (launch/study/estimate.py: a study's --dry-run)
  variants   named settings of its options for `mbgen offline --agents` (model1, model10, ...)

Adding an agent is one module plus one entry in AGENTS. The model and the model server's work are
named as import paths so that this package, which actors and the learner import, does not import
the model server's code.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field

from mbgen.learner.acting import PlannedActing, QActing
from mbgen.learner.options import (
    EnsembleOptions,
    ExpansionOptions,
    LatentOptions,
    ModelOptions,
    NoOptions,
    PlanningOptions,
    RolloutOptions,
    SteveOptions,
)
from mbgen.learner.qinput import LatentInput, ObservationInput, QInput
from mbgen.learner.training import EnsembleTargets, ExpandedPaths, ImaginedBatches, ReplayBatches


@dataclass(frozen=True)
class Variant:
    """A named setting of an agent's options, for `mbgen offline --agents NAME`."""

    name: str  # e.g. "model10"
    label: str  # how the offline table names it, e.g. "model, 10-step"
    options: dict = field(default_factory=dict)  # option values over the agent's defaults
    offline_cost: float = 1.0  # offline wall time per update over ER's (the experiment's time estimate), measured


@dataclass(frozen=True)
class AgentSpec:
    name: str  # the --agent value
    description: str  # one line for --help and the README
    trains_on: object  # learner/training.py: what Q trains on and how its target is formed
    model: str | None = None  # "module:Class" of the dynamics model; None: no model server
    acting: object = QActing()  # learner/acting.py: how actors and the evaluator choose actions
    q_input: QInput = ObservationInput()  # what the Q-network reads
    options: type = NoOptions  # the agent's options: its [options] section
    tuned_as: str = ""  # agent whose tuned (step size, temperature) this one uses; "" = its own
    cost: float = 1.0  # wall time per update over its kind's bench figure (ER, or the simple model), measured
    variants: tuple[Variant, ...] = ()  # `mbgen offline` names

    @property
    def model_server(self) -> bool:
        """Whether a model server runs (it trains the model and does the agent's work per update)."""
        return self.model is not None

    def model_class(self) -> type:
        return load(self.model)

    def work_class(self) -> type:
        """The model server's work per update (modelserver/work.py), which the training declares."""
        return load(self.trains_on.producer)


def load(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


SIMPLE_MODEL = "mbgen.modelserver.models:SimpleModel"
AGENTS: dict[str, AgentSpec] = {
    spec.name: spec
    for spec in (
        AgentSpec(
            "er",
            "DQN on 320 replay samples (experience replay)",
            ReplayBatches(),
            variants=(Variant("er", "DQN + ER"),),
        ),
        AgentSpec(
            "simple",
            "32 replay states rolled out 10 steps in a learned model of independent Bernoulli features",
            ImaginedBatches(),
            SIMPLE_MODEL,
            options=RolloutOptions,
            variants=(
                Variant("model1", "model, 1-step", {"rollout_starts": 320, "rollout_length": 1}, 2.9),
                Variant("model10", "model, 10-step", {"rollout_starts": 32, "rollout_length": 10}, 2.7),
            ),
        ),
        AgentSpec(
            "perfect",
            "the same rollouts in the true dynamics",
            ImaginedBatches(),
            "mbgen.modelserver.models:PerfectModel",
            options=RolloutOptions,
        ),
        AgentSpec(
            "latent-cat",
            "rollouts in a Dreamer-style latent model of 32 categorical features of 32 classes",
            ImaginedBatches(),
            "mbgen.modelserver.models:LatentModel",
            q_input=LatentInput(categorical=True),
            options=LatentOptions,
        ),
        AgentSpec(
            "latent-gauss",
            "rollouts in a Dreamer-style latent model of 32 Gaussian features",
            ImaginedBatches(),
            "mbgen.modelserver.models:LatentModel",
            q_input=LatentInput(categorical=False),
            options=LatentOptions,
        ),
        AgentSpec(
            "ensemble",
            "MBPO: the simple model's rollouts in an ensemble of K bootstrapped simple models, a random one per step",
            ImaginedBatches(),
            "mbgen.modelserver.ensemble:EnsembleModel",
            options=EnsembleOptions,
            tuned_as="simple",
            cost=3.7,  # K = 5: model step and Q update over the simple model's, ProcMaze(4), P = 4, 1 thread
            variants=(Variant("ens10", "ensemble, 10-step", {"rollout_starts": 32, "rollout_length": 10}, 10.0),),
        ),
        AgentSpec(
            "table",
            "Dyna with a tabular model: rollouts replay the outcomes seen for each (observation, action)",
            ImaginedBatches(),
            "mbgen.modelserver.table:TableModel",
            options=RolloutOptions,
            tuned_as="simple",
            cost=0.5,  # model step and Q update over the simple model's, ProcMaze(4), P = 4, 1 thread
            variants=(
                Variant("table1", "table, 1-step", {"rollout_starts": 320, "rollout_length": 1}, 1.75),
                Variant("table10", "table, 10-step", {"rollout_starts": 32, "rollout_length": 10}, 1.75),
            ),
        ),
        AgentSpec(
            "mve",
            "value expansion: Q on real transitions and H imagined steps after each, toward multi-step targets",
            ExpandedPaths(),
            SIMPLE_MODEL,
            options=ExpansionOptions,
            tuned_as="simple",
            variants=(
                Variant("mve1", "value expansion, 1 step", {"mve_horizon": 1}, 2.9),
                Variant("mve10", "value expansion, 10 steps", {"mve_horizon": 10}, 2.7),
            ),
        ),
        AgentSpec(
            "steve",
            "STEVE: real transitions toward an ensemble's value-expansion targets weighted by their certainty",
            EnsembleTargets(),
            "mbgen.modelserver.ensemble:EnsembleModel",
            options=SteveOptions,
            tuned_as="simple",
        ),
        AgentSpec(
            "mpc",
            "decision-time planning: actions scored through the learned model, Q at the leaves (Q learns as ER)",
            ReplayBatches(),
            SIMPLE_MODEL,
            acting=PlannedActing(),
            options=PlanningOptions,
            tuned_as="er",
            variants=(
                Variant("mpc1", "planning, depth 1", {"plan_depth": 1}, 1.5),
                Variant("mpc3", "planning, depth 3", {"plan_depth": 3}, 1.5),
            ),
        ),
    )
}
VARIANTS: dict[str, tuple[AgentSpec, Variant]] = {v.name: (s, v) for s in AGENTS.values() for v in s.variants}

# A model server trains and works on a model: its agent's options are ModelOptions (or more); a
# latent encoder and a planner cannot share the actors' model block.
assert all(issubclass(s.options, ModelOptions) for s in AGENTS.values() if s.model_server)
assert not any(isinstance(s.q_input, LatentInput) and not isinstance(s.acting, QActing) for s in AGENTS.values())

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


def option_names(agent: str) -> set[str]:
    """The keys of an agent's own options."""
    return {f.name for f in dataclasses.fields(agent_spec(agent).options)}


def option_fields() -> list[str]:
    """Every agent option's key, each once (flags and the [options] section)."""
    return list(dict.fromkeys(f.name for spec in AGENTS.values() for f in dataclasses.fields(spec.options)))
