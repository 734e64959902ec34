"""The vector-environment contract every mbgen environment follows.

An environment holds E independent copies of one task. Its whole state is its
observation (every environment is fully observable and Markov), so the true
dynamics are a plain function `transition(obs, actions, rng)` of boolean arrays,
and `step` is that same function plus automatic reset of finished episodes.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import numpy as np
from mbgen.envs.seeding import rng_state, set_rng_state

TRANSITION_FIELDS = ("obs", "action", "reward", "next_obs", "terminal")  # what replay stores, in wire order


@dataclass(frozen=True)
class Transitions:
    """A batch of K transitions as arrays; the schema replay stores and datasets use."""

    obs: np.ndarray  # bool [K, D]: what the agent acted on
    action: np.ndarray  # int64 [K]
    reward: np.ndarray  # float32 [K]
    next_obs: np.ndarray  # bool [K, D]: what the action led to
    terminal: np.ndarray  # bool [K]: the episode ended with this transition

    def __len__(self) -> int:
        return int(self.action.shape[0])

    @staticmethod
    def concat(parts: list["Transitions"]) -> "Transitions":
        return Transitions(
            obs=np.concatenate([p.obs for p in parts]),
            action=np.concatenate([p.action for p in parts]),
            reward=np.concatenate([p.reward for p in parts]),
            next_obs=np.concatenate([p.next_obs for p in parts]),
            terminal=np.concatenate([p.terminal for p in parts]),
        )


@dataclass(frozen=True)
class EnvSpec:
    """What every process needs to know of an environment setting, computed once (`envs.spec`)."""

    name: str
    params: dict[str, Any]  # every parameter, defaults included: `envs.make(name, E, seed, **params)`
    obs_dim: int  # observation bits
    num_actions: int
    episodic: bool  # episodes end (scores are returns); otherwise continuing (scores are reward rates)
    reward_range: tuple[float, float]  # every reward lies in [low, high] (replay refuses others)

    @property
    def unit(self) -> str:
        """What a score is, for axis labels and reports."""
        return "return per episode" if self.episodic else "reward per step"

    def score_range(self, steps: int) -> tuple[float, float]:
        """The interval every protocol score lies in, for evaluation episodes of `steps` steps (rewards
        are 0/1 in the continuing environments and -1 per step in the episodic ones)."""
        return (-float(steps), 0.0) if self.episodic else (0.0, 1.0)


def require_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """Validate an integer parameter; the error names the parameter and its range."""
    allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer {allowed}, got {value!r}")
    if value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an integer {allowed}, got {value}")
    return int(value)


def require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return bool(value)


class VectorEnv(abc.ABC):
    """E copies of one environment, stepped together with array operations.

    Subclasses set `name`, `episodic`, `obs_dim`, `num_actions`, `reward_range` and implement
    `initial_obs` and `transition`.
    """

    name: str = ""
    episodic: bool = False
    obs_dim: int = 0
    num_actions: int = 0
    reward_range: tuple[float, float] = (0.0, 0.0)  # every reward lies in [low, high] (replay refuses others)

    def __init__(self, num_envs: int, seed: int, spontaneous: bool = True):
        self.num_envs = require_int("num_envs", num_envs, 1)
        self.seed = require_int("seed", seed, 0)
        self.spontaneous = require_bool("spontaneous", spontaneous)
        self.rng = np.random.default_rng(self.seed)
        self._obs: np.ndarray | None = None

    # -- to implement -------------------------------------------------------
    @abc.abstractmethod
    def initial_obs(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n fresh start observations, bool [n, obs_dim]."""

    @abc.abstractmethod
    def transition(
        self, obs: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """True dynamics from any observations: (next_obs bool, reward float32, terminal bool)."""

    @abc.abstractmethod
    def render_text(self, obs: np.ndarray) -> str:
        """One observation (bool [obs_dim]) drawn as lines of text (envs/render.py)."""

    @abc.abstractmethod
    def render_rgb(self, obs: np.ndarray) -> np.ndarray:
        """One observation drawn as an image, uint8 [H, W, 3]."""

    def optimal_actions(self, obs: np.ndarray) -> np.ndarray:
        """An optimal policy's actions for observations [K, obs_dim], where one is known; envs/scores.py
        plays it to put scores on a scale. Environments without one raise NotImplementedError."""
        raise NotImplementedError(f"{self.name}: no optimal policy is known")

    # -- the contract -------------------------------------------------------
    @property
    def spec(self) -> EnvSpec:
        return EnvSpec(
            self.name, dict(self.params), self.obs_dim, self.num_actions, self.episodic, tuple(self.reward_range)
        )

    @property
    def params(self) -> dict[str, Any]:
        """The keyword parameters that rebuild this environment with `envs.make`."""
        return {"spontaneous": self.spontaneous}

    def state_dict(self) -> dict[str, np.ndarray]:
        """The whole state of the E copies: current observations and the random stream (checkpoints)."""
        obs = self._obs if self._obs is not None else np.zeros((0, self.obs_dim), bool)
        return {"obs": obs.copy(), "rng": np.array(rng_state(self.rng))}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self._obs = state["obs"].copy() if len(state["obs"]) else None
        set_rng_state(self.rng, str(state["rng"]))

    def reset(self) -> np.ndarray:
        self._obs = self.initial_obs(self.num_envs, self.rng)
        return self._obs.copy()

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance all E copies: (next_obs, reward, terminal, obs).

        `next_obs` is what each action led to (what replay stores); `obs` is what
        the agent acts on next, equal to `next_obs` except where an episode
        ended, where it is a fresh start.
        """
        if self._obs is None:
            raise RuntimeError(f"{self.name}: call reset() before step()")
        actions = self.check_actions(actions, self.num_envs)
        next_obs, reward, terminal = self.transition(self._obs, actions, self.rng)
        obs = next_obs
        if self.episodic:
            done = np.flatnonzero(terminal)
            if done.size:
                obs = next_obs.copy()
                obs[done] = self.initial_obs(done.size, self.rng)
        self._obs = obs
        return next_obs, reward, terminal, obs.copy()

    # -- helpers for subclasses ----------------------------------------------
    def check_actions(self, actions: np.ndarray, n: int) -> np.ndarray:
        actions = np.asarray(actions)
        if actions.shape != (n,):
            raise ValueError(f"{self.name}: actions must have shape ({n},), got {actions.shape}")
        if not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"{self.name}: actions must be integers, got dtype {actions.dtype}")
        if n and (actions.min() < 0 or actions.max() >= self.num_actions):
            raise ValueError(
                f"{self.name}: actions must be in [0, {self.num_actions - 1}], "
                f"got values in [{actions.min()}, {actions.max()}]"
            )
        return actions.astype(np.int64, copy=False)

    def check_obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"{self.name}: obs must have shape [K, {self.obs_dim}], got {obs.shape}")
        if obs.dtype != np.bool_:
            raise ValueError(f"{self.name}: obs must be a bool array, got dtype {obs.dtype}")
        return obs

    def events(self, n: int, probability: float, rng: np.random.Generator) -> np.ndarray:
        """Which of n copies have a spontaneous event this step (none when switched off)."""
        if not self.spontaneous or probability <= 0.0:
            return np.zeros(n, dtype=bool)
        return rng.random(n) < probability
