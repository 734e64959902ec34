"""RunConfig: the one flat configuration of a run, shared by every process role.

Every field has a one-line comment; `validate()` refuses bad values with a
message naming the key and the allowed values. Zero or empty values marked
"auto" are resolved by `resolved()` from the data regime and the paper's tuned
hyperparameters (PAPER.md section 4), so the saved config.toml holds concrete
numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from mbgen import envs
from mbgen.learner.agents import AGENTS, AgentSpec, agent_spec, tuned
from mbgen.learner.losses import GAMMA
from mbgen.replay.limiter import RatioPolicy, protocol_updates
from mbgen.runtime.devices import DEVICES
from mbgen.runtime.security import endpoint_is_local


def grid_value(value: float | list[float], tuned_value: float) -> float | list[float]:
    """A step size or temperature with 0 replaced by the tuned value; a one-value list is a number."""
    if isinstance(value, list):
        values = [v or tuned_value for v in value]
        return values[0] if len(values) == 1 else values
    return value or tuned_value


# The paper's data regimes (PAPER.md section 4): equal total updates, different amounts of data.
REGIMES = {
    "high": {"steps": 1_000_000, "updates_per_step": 1, "eval_period": 500},
    "low": {"steps": 100_000, "updates_per_step": 10, "eval_period": 50},
}


@dataclass
class RunConfig:
    # -- what to run -----------------------------------------------------------------------
    agent: str = "er"  # where Q's training transitions come from: one of learner/agents.py AGENTS
    env: str = "procmaze"  # environment: panflute | buttongrid | procmaze | opengrid | wallgrid3x3
    env_params: dict[str, Any] = field(default_factory=dict)  # environment parameters, e.g. grid_size = 4
    regime: str = "high"  # high: 1M env steps, 1 update per step, eval every 500; low: 100k, 10 per step, every 50
    steps: int = 0  # env steps per member (offline: updates); 0 = auto: the regime's budget (1,000,000 or 100,000)
    offline: bool = False  # train on a fixed dataset already in the replay store: no actors, no ratio
    seeds: list[int] = field(default_factory=lambda: [0])  # seeds, each run at every grid point (distinct)
    # -- learning (PAPER.md sections 3-4) ----------------------------------------------------
    lr: float | list[float] = 0.0  # Q step size, or a list of grid values; 0 = auto (the paper's tuned value)
    temperature: float | list[float] = 0.0  # softmax temperature, or a list of grid values; 0 = auto (tuned)
    model_lr: float = 2e-4  # model step size
    gamma: float = GAMMA  # discount
    batch_size: int = 320  # transitions per Q update (ER: replay samples; models: starts x rollout length)
    model_batch: int = 32  # real transitions per model update; rollouts start from the same ones
    rollout_starts: int = 32  # states each update rolls out from (more than model_batch: extra ones sampled)
    rollout_length: int = 10  # imagined steps per rollout (1 for the paper's ablation)
    ensemble_size: int = 5  # ensemble: K simple models per member, each trained on its own bootstrap draw of each batch
    uncertainty_cutoff: float = 0.0  # ensemble: cut rollouts where the models' disagreement exceeds this; 0 = off
    frozen_model: str = ""  # a run's checkpoints/model-final.npz: roll out that model, never train it; empty = learn
    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])  # hidden layer sizes of every MLP
    latent_features: int = 32  # latent agents: number of latent features
    latent_classes: int = 32  # latent-cat: classes per categorical feature
    target_period: int = 100  # Q updates between target-network refreshes
    learning_starts: int = 1000  # env steps per member before the first update
    capacity: int = 100_000  # replay transitions kept per member
    updates_per_step: int = 0  # Q updates per env step; 0 = auto (from regime)
    eval_period: int = 0  # env steps between evaluations; 0 = auto (from regime)
    eval_episodes: int = 32  # greedy episodes per evaluation and member
    eval_steps: int = 100  # steps per evaluation episode
    # -- system ----------------------------------------------------------------------------
    actors: int = 1  # local actor processes
    envs_per_actor: int = 1  # environment copies per member in each actor
    message_size: int = 16  # transitions per member per message to the replay service
    tolerance: float = 100.0  # updates the learner may drift from the ratio; 0 = lock-step (reproducible)
    policy_lag: int = 1  # Q versions a rollout's policy may trail the learner (0 in lock-step)
    queue_depth: int = 2  # imagined batches the model server may prepare ahead
    publish_period: int = 1  # Q updates between parameter publications
    remote_publish_period: int = 100  # Q updates between publications to remote actors (ZeroMQ PUB)
    checkpoint_period: int = 100_000  # Q updates between checkpoint cuts (one at the end, one on Ctrl-C)
    max_restarts: int = 3  # automatic resumes after a learner or model server dies, within restart_window_s
    restart_window_s: float = 3600.0  # the window max_restarts counts in
    diagnostics_period: int = 1000  # model updates between model diagnostics events
    device: str = "auto"  # learner and model server: auto | cpu | cuda
    workers: int = 0  # threads splitting the population in the learner and model server; 0 = auto
    learner_threads: int = 0  # torch threads per learner worker; 0 = auto (runtime/devices.py: parallelism)
    model_threads: int = 0  # torch threads per model-server worker; 0 = auto
    out: str = ""  # run directory; empty = runs/<time>-<agent>-<env>
    remote_endpoint: str = ""  # tcp://HOST:PORT where remote actors send transitions; empty = local actors only
    param_endpoint: str = ""  # tcp://HOST:PORT where remote actors subscribe to parameters; empty = none
    keys: str = ""  # CurveZMQ key directory (required for non-loopback endpoints; see `mbgen keys`)
    tensorboard: bool = False  # write TensorBoard scalars to <run>/tensorboard (the tensorboard package)
    wandb: str = ""  # W&B project to log the same scalars to (the wandb package); empty = none
    stall_warning_s: float = 30.0  # warn when a process waits this long for another
    heartbeat_timeout_s: float = 120.0  # stop the run when a process shows no sign of life this long

    # -- the population: a grid of (lr, temperature) points x seeds --------------------------
    # Members are ordered point-major: lr outermost, then temperature, then seed; member m runs
    # seed seeds[m % S] at point (group) m // S. The same seed under two points starts from the
    # same initialisation and sees the same environments (every stream derives from the seed).
    @property
    def grid_lr(self) -> list[float]:
        """The step sizes of the grid (one value when lr is a number)."""
        return [float(v) for v in self.lr] if isinstance(self.lr, list) else [float(self.lr)]

    @property
    def grid_temperature(self) -> list[float]:
        """The temperatures of the grid (one value when temperature is a number)."""
        t = self.temperature
        return [float(v) for v in t] if isinstance(t, list) else [float(t)]

    def grid_points(self) -> list[tuple[float, float]]:
        """(lr, temperature) of every point, lr outermost; a point's index is its `group`."""
        return [(lr, t) for lr in self.grid_lr for t in self.grid_temperature]

    @property
    def members(self) -> int:
        """P: population members, |lr| x |temperature| x |seeds|."""
        return len(self.grid_points()) * len(self.seeds)

    @property
    def member_seeds(self) -> list[int]:
        return [s for _ in self.grid_points() for s in self.seeds]

    @property
    def member_lr(self) -> list[float]:
        return [lr for lr, _ in self.grid_points() for _ in self.seeds]

    @property
    def member_temperature(self) -> list[float]:
        return [t for _, t in self.grid_points() for _ in self.seeds]

    def member_labels(self) -> list[dict[str, Any]]:
        """What each member is: {"member", "group", "lr", "temperature", "seed"}, in member order."""
        S = len(self.seeds)
        return [
            {"member": g * S + i, "group": g, "lr": lr, "temperature": t, "seed": seed}
            for g, (lr, t) in enumerate(self.grid_points())
            for i, seed in enumerate(self.seeds)
        ]

    def point_labels(self) -> list[dict[str, Any]]:
        """Each grid point: {"group", "lr", "temperature", "members": [indices], "seeds"}."""
        S = len(self.seeds)
        return [
            {
                "group": g,
                "lr": lr,
                "temperature": t,
                "members": list(range(g * S, (g + 1) * S)),
                "seeds": list(self.seeds),
            }
            for g, (lr, t) in enumerate(self.grid_points())
        ]

    # ------------------------------------------------------------------------------------

    @property
    def spec(self) -> AgentSpec:
        """The agent's declaration (learner/agents.py)."""
        return agent_spec(self.agent)

    @property
    def lockstep(self) -> bool:
        return self.tolerance == 0

    @property
    def total_updates(self) -> int:
        return self.steps if self.offline else self.target_updates(self.steps)

    def eval_points(self) -> list[int]:
        """Env steps after which the policy is evaluated: 0, eval_period, ..., steps (none offline)."""
        return [] if self.offline else list(range(0, self.steps + 1, self.eval_period))

    def target_updates(self, env_steps: int) -> int:
        """Q updates the protocol calls for after `env_steps` steps per member."""
        return protocol_updates(self.updates_per_step, self.learning_starts, env_steps)

    def ratio_policy(self) -> RatioPolicy:
        """The rate limiter's contract for this run (replay/limiter.py)."""
        return RatioPolicy(self.updates_per_step, self.learning_starts, self.tolerance, self.total_updates)

    def digest(self) -> str:
        """SHA-256 of the resolved configuration: a checkpoint resumes only the run that wrote it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # The keys a remote actor needs to act (its hello reply): no paths, keys or endpoints of the run.
    ACTOR_KEYS = (
        "agent", "env", "env_params", "regime", "steps", "seeds", "lr", "temperature", "hidden",
        "latent_features", "latent_classes", "learning_starts", "updates_per_step", "eval_period",
        "eval_steps", "actors", "envs_per_actor", "message_size", "tolerance", "publish_period",
    )  # fmt: skip

    def actor_view(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.ACTOR_KEYS}

    def resolved(self) -> "RunConfig":
        """A copy with every auto value replaced by a concrete one; validates first."""
        self.validate()
        c = dataclasses.replace(
            self, env_params=dict(self.env_params), seeds=list(self.seeds), hidden=list(self.hidden)
        )
        regime = REGIMES[c.regime]
        c.steps = c.steps or regime["steps"]
        c.updates_per_step = c.updates_per_step or regime["updates_per_step"]
        c.eval_period = c.eval_period or regime["eval_period"]
        lr, temperature = tuned(c.agent, c.env, c.regime)
        c.lr = grid_value(c.lr, lr)
        c.temperature = grid_value(c.temperature, temperature)
        c.env_params = envs.make(c.env, 1, 0, **c.env_params).params
        c.frozen_model = os.path.abspath(c.frozen_model) if c.frozen_model else ""
        c.validate()
        return c

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key {', '.join(unknown)}; see `mbgen run --help` for the keys")
        return cls(**values)

    # ------------------------------------------------------------------------------------
    def validate(self) -> None:
        def fail(key: str, allowed: str, value: Any) -> None:
            raise ValueError(f"{key} must be {allowed}, got {value!r}")

        def integer(key: str, low: int) -> None:
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                fail(key, f"an integer >= {low}", v)

        def number(key: str, low: float, strict: bool) -> None:
            v = getattr(self, key)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or (v <= low if strict else v < low):
                fail(key, f"a number {'>' if strict else '>='} {low}", v)

        spec = AGENTS.get(self.agent)
        if spec is None:
            fail("agent", "one of " + ", ".join(AGENTS), self.agent)
        if self.env not in envs.ENVIRONMENTS:
            fail("env", "one of " + ", ".join(envs.ENVIRONMENTS), self.env)
        if self.regime not in REGIMES:
            fail("regime", "one of " + ", ".join(REGIMES), self.regime)
        if self.device not in DEVICES:
            fail("device", "one of " + ", ".join(DEVICES), self.device)
        if not isinstance(self.env_params, dict):
            fail("env_params", "a table of environment parameters", self.env_params)
        try:
            envs.make(self.env, 1, 0, **self.env_params)
        except ValueError as error:
            raise ValueError(f"env_params: {error}") from None
        if (
            not isinstance(self.seeds, list)
            or not self.seeds
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in self.seeds)
        ):
            fail("seeds", "a non-empty list of integers >= 0", self.seeds)
        if len(set(self.seeds)) != len(self.seeds):
            fail("seeds", "distinct integers >= 0 (a seed runs once at every grid point)", self.seeds)
        for key in ("lr", "temperature"):
            v = getattr(self, key)
            values = v if isinstance(v, list) else [v]
            if isinstance(v, list) and not v:
                fail(key, "a number or a non-empty list of grid values", v)
            for x in values:
                if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
                    fail(key, "a number > 0 (or 0 for the tuned value), or a list of them", v)
            if len(set(values)) != len(values):
                fail(key, "a list of distinct grid values", v)
        for key in ("model_lr",):
            number(key, 0, strict=True)
        number("uncertainty_cutoff", 0, strict=False)
        if self.uncertainty_cutoff >= 0.5:
            fail(
                "uncertainty_cutoff",
                "a number in [0, 0.5) (0 = off; a disagreement is at most 0.5)",
                self.uncertainty_cutoff,
            )
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for other in AGENTS.values():
            for key in other.options:
                if key not in spec.options and getattr(self, key) != defaults[key]:
                    readers = ", ".join(a.name for a in AGENTS.values() if key in a.options)
                    allowed = f"left at its default {defaults[key]!r} for agent {self.agent} (read only by {readers})"
                    fail(key, allowed, getattr(self, key))
        ok = isinstance(self.gamma, (int, float)) and not isinstance(self.gamma, bool) and math.isfinite(self.gamma)
        if not ok or not 0 <= self.gamma < 1:
            fail("gamma", "a number in [0, 1)", self.gamma)
        for key in ("offline", "tensorboard"):
            if not isinstance(getattr(self, key), bool):
                fail(key, "true or false", getattr(self, key))
        if not isinstance(self.frozen_model, str):
            fail("frozen_model", "the path of a model checkpoint (or empty)", self.frozen_model)
        if self.frozen_model and not (spec.model_server and os.path.isfile(self.frozen_model)):
            fail(
                "frozen_model",
                "an existing model checkpoint (RUN/checkpoints/model-final.npz) and an agent with a model",
                self.frozen_model,
            )
        if not isinstance(self.wandb, str):
            fail("wandb", "a W&B project name (or empty)", self.wandb)
        for key in (
            "batch_size",
            "model_batch",
            "rollout_starts",
            "rollout_length",
            "latent_features",
            "latent_classes",
            "ensemble_size",
            "target_period",
            "capacity",
            "eval_episodes",
            "eval_steps",
            "actors",
            "envs_per_actor",
            "message_size",
            "queue_depth",
            "publish_period",
            "remote_publish_period",
            "checkpoint_period",
            "diagnostics_period",
        ):
            integer(key, 1)
        integer("max_restarts", 0)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            fail("steps", "an integer >= 1, or 0 for the regime's budget", self.steps)
        for key in (
            "learning_starts",
            "updates_per_step",
            "eval_period",
            "policy_lag",
            "workers",
            "learner_threads",
            "model_threads",
        ):
            integer(key, 0)
        for key in ("tolerance",):
            number(key, 0, strict=False)
        for key in ("stall_warning_s", "heartbeat_timeout_s", "restart_window_s"):
            number(key, 0, strict=True)
        if (
            not isinstance(self.hidden, list)
            or not self.hidden
            or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in self.hidden)
        ):
            fail("hidden", "a non-empty list of integers >= 1", self.hidden)
        if spec.model_server and self.rollout_starts * self.rollout_length != self.batch_size:
            fail(
                "batch_size",
                f"rollout_starts x rollout_length = {self.rollout_starts * self.rollout_length} "
                "for model agents (equal transitions per update)",
                self.batch_size,
            )
        per_step = self.actors * self.envs_per_actor
        if self.offline and not self.steps:
            fail("steps", "an integer >= 1 (the updates of an offline run)", self.steps)
        if self.steps % per_step:
            fail("steps", f"a multiple of actors x envs_per_actor = {per_step}", self.steps)
        if self.eval_period and self.steps % self.eval_period and not self.offline:
            fail("steps", f"a multiple of eval_period = {self.eval_period}", self.steps)
        if self.steps and self.steps <= self.learning_starts and not self.offline:
            fail("steps", f"more than learning_starts = {self.learning_starts}", self.steps)
        if self.lockstep and self.actors != 1:
            fail("actors", "1 when tolerance is 0 (lock-step runs are reproducible with one actor)", self.actors)
        for key in ("remote_endpoint", "param_endpoint"):
            v = getattr(self, key)
            if v and not v.startswith(("tcp://", "ipc://")):
                fail(key, "empty, tcp://HOST:PORT or ipc://PATH", v)
        for key in ("remote_endpoint", "param_endpoint"):
            v = getattr(self, key)
            if v and not self.keys and not endpoint_is_local(v):
                fail(key, "a loopback address unless keys is set (a public endpoint needs CurveZMQ keys)", v)
        if bool(self.remote_endpoint) != bool(self.param_endpoint):
            fail("param_endpoint", "set together with remote_endpoint (remote actors need both)", self.param_endpoint)
        if self.lockstep and self.remote_endpoint:
            fail(
                "remote_endpoint",
                "empty when tolerance is 0 (remote actors would break lock-step)",
                self.remote_endpoint,
            )
        if self.lockstep and self.publish_period != 1:
            fail(
                "publish_period", "1 when tolerance is 0 (lock-step actors wait for every version)", self.publish_period
            )
