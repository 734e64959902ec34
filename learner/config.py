"""RunConfig: a run's configuration in five sections, shared by every process role.

    run       what to run: the agent, the environment, the data regime, the budget, the seeds
    learning  the Q learner's hyperparameters and the evaluation protocol (the paper's protocol)
    options   the agent's own options: a dataclass its declaration names (learner/agents.py);
              another agent's options are refused
    system    processes, the ratio's tolerance, checkpoints, devices, threads, endpoints
    outputs   where results go

Each section is a flat dataclass with a one-line comment per field (the help text of its
`--flag`) and validates itself, refusing a bad value with one line naming the key and the
allowed values; `RunConfig.validate` checks only what spans sections. Zero or empty values
marked "auto" are resolved by `resolved()` from the data regime and the paper's tuned
hyperparameters, so the saved config.toml holds concrete numbers.

Flags and study files name keys flat (`--lr`, `hidden = [64, 64]`): every key lives in exactly
one section, so `RunConfig.build(lr=1e-3, seeds=[0, 1])` and `place_keys` put each where it
belongs. A config file is the sectioned form (`[run]`, `[learning]`, `[options]`, ...).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mbgen.envs.base import EnvSpec
from mbgen.learner.agents import AGENTS, AgentSpec, agent_spec, option_fields, tuned
from mbgen.learner.check import boolean, fail, integer, integer_list, number, text
from mbgen.learner.losses import GAMMA
from mbgen.learner.shapes import MLPShape, mlp_shape
from mbgen.replay.limiter import RatioPolicy, protocol_updates
from mbgen.runtime.devices import DEVICES
from mbgen.runtime.roles import REMOTE_ACTOR_SLOTS

from mbgen import envs

ENGINES = ("local", "ray")  # where a run's actors run (system.engine)
PLACEMENTS = ("spread", "strict_spread")  # Ray placement group strategies (system.placement)

# The paper's data regimes: equal total updates, different amounts of data.
REGIMES = {
    "high": {"steps": 1_000_000, "updates_per_step": 1, "eval_period": 500},
    "low": {"steps": 100_000, "updates_per_step": 10, "eval_period": 50},
}


def grid_value(value: float | list[float], tuned_value: float) -> float | list[float]:
    """A step size or temperature with 0 replaced by the tuned value; a one-value list is a number."""
    if isinstance(value, list):
        values = [v or tuned_value for v in value]
        return values[0] if len(values) == 1 else values
    return value or tuned_value


@dataclass
class RunSection:
    agent: str = "er"  # the algorithm: one of learner/agents.py AGENTS (`mbgen run --help` lists them)
    env: str = "procmaze"  # environment: panflute | buttongrid | procmaze | opengrid | wallgrid3x3
    env_params: dict[str, Any] = field(default_factory=dict)  # environment parameters, e.g. grid_size = 4
    regime: str = "high"  # high: 1M env steps, 1 update per step, eval every 500; low: 100k, 10 per step, every 50
    steps: int = 0  # env steps per member (offline: updates); 0 = auto: the regime's budget (1,000,000 or 100,000)
    offline: bool = False  # train on a fixed dataset already in the replay store: no actors, no ratio
    seeds: list[int] = field(default_factory=lambda: [0])  # seeds, each run at every grid point (distinct)

    def validate_agent(self) -> None:
        if AGENTS.get(self.agent) is None:
            fail("agent", "one of " + ", ".join(AGENTS), self.agent)

    def validate(self) -> None:
        self.validate_agent()
        if self.env not in envs.ENVIRONMENTS:
            fail("env", "one of " + ", ".join(envs.ENVIRONMENTS), self.env)
        if self.regime not in REGIMES:
            fail("regime", "one of " + ", ".join(REGIMES), self.regime)
        if not isinstance(self.env_params, dict):
            fail("env_params", "a table of environment parameters", self.env_params)
        try:
            envs.spec(self.env, **self.env_params)
        except ValueError as error:
            raise ValueError(f"env_params: {error}") from None
        boolean("offline", self.offline)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            fail("steps", "an integer >= 1, or 0 for the regime's budget", self.steps)
        seeds = self.seeds
        if not isinstance(seeds, list) or not seeds or not all(is_int(s) and s >= 0 for s in seeds):
            fail("seeds", "a non-empty list of integers >= 0", seeds)
        if len(set(seeds)) != len(seeds):
            fail("seeds", "distinct integers >= 0 (a seed runs once at every grid point)", seeds)


@dataclass
class LearningSection:
    lr: float | list[float] = 0.0  # Q step size, or a list of grid values; 0 = auto (the paper's tuned value)
    temperature: float | list[float] = 0.0  # softmax temperature, or a list of grid values; 0 = auto (tuned)
    gamma: float = GAMMA  # discount
    batch_size: int = 320  # Q-training rows per update (ER: replay samples; model agents: starts x rollout length)
    hidden: list[int] = field(default_factory=lambda: [200, 200, 200])  # hidden layer sizes of every MLP
    target_period: int = 100  # Q updates between target-network refreshes
    learning_starts: int = 1000  # env steps per member before the first update
    capacity: int = 100_000  # replay transitions kept per member
    updates_per_step: int = 0  # Q updates per env step; 0 = auto (from regime)
    eval_period: int = 0  # env steps between evaluations; 0 = auto (from regime)
    eval_episodes: int = 32  # greedy episodes per evaluation and member
    eval_steps: int = 100  # steps per evaluation episode

    def validate(self) -> None:
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
        g = self.gamma
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(g) or not 0 <= g < 1:
            fail("gamma", "a number in [0, 1)", g)
        for key in ("batch_size", "target_period", "capacity", "eval_episodes", "eval_steps"):
            integer(key, getattr(self, key), 1)
        for key in ("learning_starts", "updates_per_step", "eval_period"):
            integer(key, getattr(self, key), 0)
        integer_list("hidden", self.hidden, 1)


@dataclass
class SystemSection:
    actors: int = 1  # local actor processes
    envs_per_actor: int = 1  # environment copies per member in each actor
    message_size: int = 16  # transitions per member per message to the replay service
    tolerance: float = 100.0  # updates the learner may drift from the ratio; 0 = lock-step (reproducible)
    policy_lag: int = 1  # Q versions a rollout's policy may trail the learner (0 in lock-step)
    queue_depth: int = 2  # batches the model server may prepare ahead
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
    remote_endpoint: str = ""  # tcp://HOST:PORT where remote actors send transitions; empty = none (ray: a free port)
    param_endpoint: str = ""  # tcp://HOST:PORT where remote actors get parameters; empty = none (ray: a free port)
    keys: str = ""  # CurveZMQ key directory (required for non-loopback endpoints; see `mbgen keys`)
    stall_warning_s: float = 30.0  # warn when a process waits this long for another
    heartbeat_timeout_s: float = 120.0  # kill and heal (as a crash) a process that shows no sign of life this long
    engine: str = "local"  # where the actors run: local (this machine) | ray (a Ray cluster, with remote_actors)
    address: str = ""  # the Ray cluster's HOST:PORT (engine ray; the head's `ray start --head --port`)
    remote_actors: int = 0  # engine ray: actor processes placed on the cluster's nodes (instead of local actors)
    actors_per_node: int = 0  # engine ray: actors placed together on one node; 0 = one placement bundle each
    placement: str = "spread"  # engine ray: spread (across nodes where possible) | strict_spread (one bundle a node)

    def validate(self) -> None:
        if self.device not in DEVICES:
            fail("device", "one of " + ", ".join(DEVICES), self.device)
        for key in (
            "actors",
            "envs_per_actor",
            "message_size",
            "queue_depth",
            "publish_period",
            "remote_publish_period",
            "checkpoint_period",
            "diagnostics_period",
        ):
            integer(key, getattr(self, key), 1)
        for key in ("max_restarts", "policy_lag", "workers", "learner_threads", "model_threads"):
            integer(key, getattr(self, key), 0)
        number("tolerance", self.tolerance, 0, strict=False)
        for key in ("stall_warning_s", "heartbeat_timeout_s", "restart_window_s"):
            number(key, getattr(self, key), 0, strict=True)
        for key in ("remote_endpoint", "param_endpoint", "keys"):
            text(key, getattr(self, key))
        for key in ("remote_endpoint", "param_endpoint"):
            v = getattr(self, key)
            if v and not v.startswith(("tcp://", "ipc://")):
                fail(key, "empty, tcp://HOST:PORT or ipc://PATH", v)
            if v and not self.keys and self.engine != "ray":  # remote actors log in only with CurveZMQ keys
                fail(key, "set together with keys (remote actors log in with CurveZMQ keys: mbgen keys DIR)", v)
        if bool(self.remote_endpoint) != bool(self.param_endpoint):
            fail("param_endpoint", "set together with remote_endpoint (remote actors need both)", self.param_endpoint)
        self.validate_engine()

    def validate_engine(self) -> None:
        if self.engine not in ENGINES:
            fail("engine", "one of " + ", ".join(ENGINES), self.engine)
        for key in ("address", "placement"):
            text(key, getattr(self, key))
        for key in ("remote_actors", "actors_per_node"):
            integer(key, getattr(self, key), 0)
        if self.placement not in PLACEMENTS:
            fail("placement", "one of " + ", ".join(PLACEMENTS), self.placement)
        if self.engine == "local":
            for key in ("remote_actors", "actors_per_node", "address"):
                if getattr(self, key):
                    fail(key, f"left out unless engine = ray (engine is {self.engine})", getattr(self, key))
            if self.placement != "spread":
                fail("placement", "left out unless engine = ray", self.placement)
            return
        host, _, port = self.address.rpartition(":")
        if not (host and port.isdigit()):
            fail("address", "HOST:PORT of the Ray cluster's head when engine = ray", self.address)
        if not 1 <= self.remote_actors <= REMOTE_ACTOR_SLOTS // 2:
            fail(
                "remote_actors",
                f"an integer in [1, {REMOTE_ACTOR_SLOTS // 2}] when engine = ray (half the run's "
                f"{REMOTE_ACTOR_SLOTS} remote slots: the rest are for replacements)",
                self.remote_actors,
            )
        if self.actors != 1:
            fail("actors", "1 (the default) when engine = ray: the run's actors are its remote_actors", self.actors)
        if self.keys:
            fail("keys", "empty when engine = ray (the run makes a key pair per actor for itself)", self.keys)

    @property
    def acting_actors(self) -> int:
        """The actors that share the run's steps: local ones, or those placed on a Ray cluster."""
        return self.remote_actors if self.engine == "ray" else self.actors

    @property
    def lockstep(self) -> bool:
        return self.tolerance == 0


@dataclass
class OutputsSection:
    out: str = ""  # run directory; empty = runs/<time>-<agent>-<env>
    tensorboard: bool = False  # write TensorBoard scalars to <run>/tensorboard (the tensorboard package)
    wandb: str = ""  # W&B project to log the same scalars to (the wandb package); empty = none
    share_run_dir: bool = False  # let the umask decide who reads the run directory; default: only you (0700)

    def validate(self) -> None:
        text("out", self.out)
        boolean("tensorboard", self.tensorboard)
        boolean("share_run_dir", self.share_run_dir)
        text("wandb", self.wandb)


SECTIONS = {  # section name -> (its class, its help heading)
    "run": (RunSection, "what to run"),
    "learning": (LearningSection, "learning"),
    "options": (None, "agent options"),  # the agent's own options class (learner/agents.py)
    "system": (SystemSection, "system"),
    "outputs": (OutputsSection, "outputs"),
}


def section_of_key() -> dict[str, str]:
    """Every flat key and the section it lives in (agent options: every agent's, under "options")."""
    where = {}
    for name, (cls, _) in SECTIONS.items():
        for key in option_fields() if cls is None else [f.name for f in dataclasses.fields(cls)]:
            where[key] = name
    return where


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass
class RunConfig:
    run: RunSection = field(default_factory=RunSection)
    learning: LearningSection = field(default_factory=LearningSection)
    options: Any = None  # the agent's options (an instance of its declaration's `options` class)
    system: SystemSection = field(default_factory=SystemSection)
    outputs: OutputsSection = field(default_factory=OutputsSection)

    def __post_init__(self) -> None:
        known = AGENTS.get(self.run.agent)
        if self.options is None and known is not None:
            self.options = known.options()

    # -- building ----------------------------------------------------------------------
    @classmethod
    def build(cls, **flat: Any) -> "RunConfig":
        """A configuration from flat keys (`lr=1e-3, seeds=[0, 1], ensemble_size=3`), not yet resolved."""
        return cls.from_dict(place_keys(flat))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        """The sectioned form (config.toml, `to_dict()`); unknown sections or keys are refused by name."""
        if not isinstance(values, dict):
            raise ValueError("a configuration must be a table of sections")
        unknown = sorted(set(values) - set(SECTIONS))
        if unknown:
            raise ValueError(
                f"unknown config section {', '.join(unknown)}; the sections are {', '.join(SECTIONS)} "
                "(each key belongs to one: `mbgen run --help-all` lists them)"
            )
        parts: dict[str, Any] = {}
        for name, (section_cls, _) in SECTIONS.items():
            table = values.get(name, {})
            if not isinstance(table, dict):
                raise ValueError(f"config section [{name}] must be a table, got {table!r}")
            if section_cls is not None:
                parts[name] = build_section(section_cls, name, table)
        parts["run"].validate_agent()
        parts["options"] = agent_options(parts["run"].agent, values.get("options", {}))
        return cls(**parts)

    def to_dict(self) -> dict[str, Any]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def replace(self, **flat: Any) -> "RunConfig":
        """A copy with flat keys changed (each in its section), not resolved."""
        values = self.to_dict()
        for key, section in place_keys(flat).items():
            values[key] = {**values[key], **section}
        return RunConfig.from_dict(values)

    # -- validation and resolution -------------------------------------------------------
    def validate(self) -> None:
        """Every section, then what spans sections."""
        self.run.validate()
        self.learning.validate()
        self.system.validate()
        self.outputs.validate()
        self.options.validate(self)
        run, system = self.run, self.system
        per_step = system.acting_actors * system.envs_per_actor
        if run.offline and not run.steps:
            fail("steps", "an integer >= 1 (the updates of an offline run)", run.steps)
        if run.steps % per_step:
            actors = "remote_actors" if system.engine == "ray" else "actors"
            fail("steps", f"a multiple of {actors} x envs_per_actor = {per_step}", run.steps)
        eval_period = self.learning.eval_period
        if eval_period and run.steps % eval_period and not run.offline:
            fail("steps", f"a multiple of eval_period = {eval_period}", run.steps)
        if run.steps and run.steps <= self.learning.learning_starts and not run.offline:
            fail("steps", f"more than learning_starts = {self.learning.learning_starts}", run.steps)
        if system.lockstep and system.actors != 1:
            fail("actors", "1 when tolerance is 0 (lock-step runs are reproducible with one actor)", system.actors)
        if system.lockstep and (system.remote_endpoint or system.engine == "ray"):
            fail(
                "remote_endpoint", "empty when tolerance is 0 (remote actors would break lock-step)",
                system.remote_endpoint,
            )  # fmt: skip
        if system.lockstep and system.publish_period != 1:
            fail(
                "publish_period", "1 when tolerance is 0 (lock-step actors wait for every version)",
                system.publish_period,
            )  # fmt: skip

    def resolved(self) -> "RunConfig":
        """A copy with every auto value replaced by a concrete one; validates before and after."""
        self.validate()
        c = RunConfig.from_dict(self.to_dict())
        regime = REGIMES[c.run.regime]
        c.run.steps = c.run.steps or regime["steps"]
        c.learning.updates_per_step = c.learning.updates_per_step or regime["updates_per_step"]
        c.learning.eval_period = c.learning.eval_period or regime["eval_period"]
        lr, temperature = tuned(c.run.agent, c.run.env, c.run.regime)
        c.learning.lr = grid_value(c.learning.lr, lr)
        c.learning.temperature = grid_value(c.learning.temperature, temperature)
        c.run.env_params = dict(c.env_spec.params)
        c.options.resolve()
        c.validate()
        return c

    # -- what the sections imply -----------------------------------------------------------
    @property
    def spec(self) -> AgentSpec:
        """The agent's declaration (learner/agents.py)."""
        return agent_spec(self.run.agent)

    @functools.cached_property
    def env_spec(self) -> EnvSpec:
        """The environment's dimensions and scale, computed once (no environment is built for it)."""
        return envs.spec(self.run.env, **self.run.env_params)

    def q_shape(self) -> MLPShape:
        """The Q-network's layer sizes: what the agent's Q reads, the hidden layers, one value per action."""
        width = self.spec.q_input.width(self.options, self.env_spec.obs_dim)
        return mlp_shape(width, self.learning.hidden, self.env_spec.num_actions)

    def encoder_shape(self) -> MLPShape | None:
        """The encoder actors must run before Q (latent agents), or None."""
        return self.spec.q_input.encoder_shape(self.options, self.learning.hidden, self.env_spec.obs_dim)

    def actor_model_numel(self) -> int:
        """Parameters per member of the model network actors run besides Q (a latent agent's encoder, a
        planner's model; 0: none): the model server publishes them as the learner publishes Q."""
        encoder = self.encoder_shape()
        return (encoder.numel if encoder is not None else 0) + self.spec.acting.model_numel(self)

    @property
    def lockstep(self) -> bool:
        return self.system.lockstep

    @property
    def total_updates(self) -> int:
        return self.run.steps if self.run.offline else self.target_updates(self.run.steps)

    def eval_points(self) -> list[int]:
        """Env steps after which the policy is evaluated: 0, eval_period, ..., steps (none offline)."""
        return [] if self.run.offline else list(range(0, self.run.steps + 1, self.learning.eval_period))

    def target_updates(self, env_steps: int) -> int:
        """Q updates the protocol calls for after `env_steps` steps per member."""
        return protocol_updates(self.learning.updates_per_step, self.learning.learning_starts, env_steps)

    def ratio_policy(self) -> RatioPolicy:
        """The rate limiter's contract for this run (replay/limiter.py)."""
        return RatioPolicy(
            self.learning.updates_per_step, self.learning.learning_starts, self.system.tolerance, self.total_updates
        )

    def digest(self) -> str:
        """SHA-256 of the resolved configuration: a checkpoint resumes only the run that wrote it."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    # What a remote actor needs to act (its hello reply): no paths, keys or endpoints of the run.
    ACTOR_VIEW = {
        "learning": ("lr", "temperature", "hidden", "learning_starts", "updates_per_step", "eval_period", "eval_steps"),
        "system": ("actors", "envs_per_actor", "message_size", "tolerance", "publish_period"),
    }

    def actor_view(self) -> dict[str, Any]:
        values = self.to_dict()
        view = {"run": values["run"], "options": values["options"]}
        for name, keys in self.ACTOR_VIEW.items():
            view[name] = {k: values[name][k] for k in keys}
        return view

    # -- the population: a grid of (lr, temperature) points x seeds --------------------------
    # Members are ordered point-major: lr outermost, then temperature, then seed; member m runs
    # seed seeds[m % S] at point (group) m // S. The same seed under two points starts from the
    # same initialisation and sees the same environments (every stream derives from the seed).
    @property
    def grid_lr(self) -> list[float]:
        """The step sizes of the grid (one value when lr is a number)."""
        lr = self.learning.lr
        return [float(v) for v in lr] if isinstance(lr, list) else [float(lr)]

    @property
    def grid_temperature(self) -> list[float]:
        """The temperatures of the grid (one value when temperature is a number)."""
        t = self.learning.temperature
        return [float(v) for v in t] if isinstance(t, list) else [float(t)]

    def grid_points(self) -> list[tuple[float, float]]:
        """(lr, temperature) of every point, lr outermost; a point's index is its `group`."""
        return [(lr, t) for lr in self.grid_lr for t in self.grid_temperature]

    @property
    def members(self) -> int:
        """P: population members, |lr| x |temperature| x |seeds|."""
        return len(self.grid_points()) * len(self.run.seeds)

    @property
    def member_seeds(self) -> list[int]:
        return [s for _ in self.grid_points() for s in self.run.seeds]

    @property
    def member_lr(self) -> list[float]:
        return [lr for lr, _ in self.grid_points() for _ in self.run.seeds]

    @property
    def member_temperature(self) -> list[float]:
        return [t for _, t in self.grid_points() for _ in self.run.seeds]

    def member_labels(self) -> list[dict[str, Any]]:
        """What each member is: {"member", "group", "lr", "temperature", "seed"}, in member order."""
        S = len(self.run.seeds)
        return [
            {"member": g * S + i, "group": g, "lr": lr, "temperature": t, "seed": seed}
            for g, (lr, t) in enumerate(self.grid_points())
            for i, seed in enumerate(self.run.seeds)
        ]

    def point_labels(self) -> list[dict[str, Any]]:
        """Each grid point: {"group", "lr", "temperature", "members": [indices], "seeds"}."""
        S = len(self.run.seeds)
        return [
            {
                "group": g,
                "lr": lr,
                "temperature": t,
                "members": list(range(g * S, (g + 1) * S)),
                "seeds": list(self.run.seeds),
            }
            for g, (lr, t) in enumerate(self.grid_points())
        ]


def build_section(cls: type, name: str, table: dict[str, Any]):
    """A section from its table; a key of another section is named as such."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        where = section_of_key()
        key = unknown[0]
        hint = f"it belongs in [{where[key]}]" if key in where else "see `mbgen run --help-all` for the keys"
        raise ValueError(f"unknown key {key} in config section [{name}]; {hint}")
    return cls(**table)


def agent_options(agent: str, table: dict[str, Any]):
    """The agent's options from its [options] table; another agent's option is refused by name."""
    if not isinstance(table, dict):
        raise ValueError(f"config section [options] must be a table, got {table!r}")
    cls = agent_spec(agent).options
    known = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(table) - known):
        readers = [a.name for a in AGENTS.values() if key in {f.name for f in dataclasses.fields(a.options)}]
        if not readers:
            raise ValueError(f"unknown agent option {key}; see `mbgen run --help-all` for the keys")
        own = ", ".join(sorted(known)) or "none"
        raise ValueError(
            f"{key} is an option of agent {', '.join(readers)}, not of {agent} (the options of {agent}: {own})"
        )
    return cls(**table)


def place_keys(flat: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat keys sorted into their sections ({"lr": x} -> {"learning": {"lr": x}})."""
    where = section_of_key()
    placed: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        if key not in where:
            raise ValueError(f"unknown config key {key}; see `mbgen run --help-all` for the keys")
        placed.setdefault(where[key], {})[key] = value
    return placed
