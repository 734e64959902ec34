"""The actor: steps its environments for every member and streams transitions to replay.

Each actor runs `envs_per_actor` copies of the environment for every member
(seeded from the member's seed and the actor's index), picks actions by
softmax over Q/temperature with the newest parameters it has, and sends each
member's transitions in messages of `message_size`. Every 10 s it logs the
behaviour episodes each member finished (`train_episodes`, actors/episodes.py). In lock-step mode it sends
every step and, before acting at step t, waits for the parameters of exactly
the updates the protocol calls for after t steps, which makes a run
reproducible bit for bit. (Otherwise it waits only for the first version.)
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import zmq

import envs
from actors.acting import ActingPolicy
from actors.episodes import EpisodeReturns
from envs.seeding import derive_seed
from learner.config import RunConfig
from learner.params import ParamBlock, ParamReader
from replay.client import ReplayClient
from replay.counters import RunCounters
from replay.limiter import wait_until
from replay.runtime.doorbell import Doorbell
from replay.runtime.logs import get_logger
from replay.runtime.roles import run_role
from replay.runtime.wiring import FIRST_ACTOR_SLOT, Wiring

PROGRESS_PERIOD_S = 10.0


class Actor:
    def __init__(
        self,
        cfg: RunConfig,
        index: int,
        client: ReplayClient,
        policy: ActingPolicy,
        refresh: Callable[[], None],
        on_sent: Callable[[int, int], None],
        heartbeat: Callable[[], None] = lambda: None,
        await_version: Callable[[int], None] | None = None,
    ):
        self.cfg, self.index, self.client, self.policy = cfg, index, client, policy
        self.refresh, self.on_sent, self.heartbeat, self.await_version = refresh, on_sent, heartbeat, await_version
        self.log = get_logger()
        self.E = cfg.envs_per_actor
        self.envs = [
            envs.make(cfg.env, self.E, derive_seed(s, "actor", index), **cfg.env_params) for s in cfg.member_seeds
        ]
        self.rngs = [np.random.default_rng(derive_seed(s, "behaviour", index)) for s in cfg.member_seeds]
        self.steps = cfg.steps // (cfg.actors * self.E)
        self.buffers: list[list[tuple]] = [[] for _ in cfg.member_seeds]
        self.returns = EpisodeReturns(cfg.members, self.E, self.envs[0].episodic, cfg.eval_steps)

    def run(self) -> None:
        obs = np.stack([env.reset() for env in self.envs])  # [P, E, D]
        flush_every = 1 if self.cfg.lockstep else max(1, self.cfg.message_size // self.E)
        next_report = time.monotonic() + PROGRESS_PERIOD_S
        for t in range(self.steps):
            if self.await_version is not None and (self.cfg.lockstep or t == 0):
                self.await_version(self.cfg.target_updates(t * self.E))
            self.refresh()
            uniforms = np.stack([rng.random(self.E) for rng in self.rngs])
            actions = self.policy.behaviour(obs, uniforms)
            new_obs = np.empty_like(obs)
            for m, env in enumerate(self.envs):
                next_obs, reward, terminal, new_obs[m] = env.step(actions[m])
                self.buffers[m].append((obs[m], actions[m], reward, next_obs, terminal))
                self.returns.add(m, reward, terminal)
            obs = new_obs
            if (t + 1) % flush_every == 0:
                self.flush()
            self.heartbeat()
            if time.monotonic() >= next_report:
                self.log.info("actor_progress", steps=t + 1, of=self.steps, resends=self.client.resends)
                self.report_returns(t + 1)
                next_report = time.monotonic() + PROGRESS_PERIOD_S
        self.flush()
        self.client.flush()
        self.report_returns(self.steps)
        self.log.info("actor_finished", steps=self.steps, stored=self.client.stored, duplicates=self.client.duplicates)

    def report_returns(self, steps: int) -> None:
        """The behaviour episodes finished since the last report (actors/episodes.py), per member."""
        returns, episodes = self.returns.take()
        if any(episodes):
            self.log.info("train_episodes", steps=steps, returns=returns, episodes=episodes)

    def flush(self) -> None:
        for m, buffer in enumerate(self.buffers):
            if not buffer:
                continue
            obs, action, reward, next_obs, terminal = (np.concatenate(x) for x in zip(*buffer))
            self.client.send(m, obs, action, reward, next_obs, terminal)
            self.on_sent(m, len(action))
            buffer.clear()


class LocalParams:
    """Parameters from the run's shared-memory blocks (what a local actor or the evaluator reads)."""

    def __init__(self, cfg: RunConfig, wiring: Wiring, policy: ActingPolicy):
        self.q = ParamReader(ParamBlock.attach(wiring.q_params), policy.q_store.flat)
        self.encoder = (
            ParamReader(ParamBlock.attach(wiring.model_params), policy.encoder_store.flat)
            if policy.encoder_store is not None
            else None
        )

    def refresh(self) -> None:
        self.q.refresh()
        if self.encoder is not None:
            self.encoder.refresh()

    def versions(self) -> list[int]:
        """Versions currently published (not necessarily read yet)."""
        return [r.block.version for r in (self.q, self.encoder) if r is not None]

    def close(self) -> None:
        for r in (self.q, self.encoder):
            if r is not None:
                r.block.close()


class LocalActor:
    """A local actor process: shared-memory parameters and accounting, the run's ipc ingest endpoint."""

    def __init__(self, cfg: RunConfig, wiring: Wiring, stop, index: int):
        torch.set_num_threads(1)
        self.cfg, self.index = cfg, index
        self.ctx = zmq.Context()
        self.counters = RunCounters.attach(wiring.counters)
        env = envs.make(cfg.env, 1, 0, **cfg.env_params)
        generator = torch.Generator().manual_seed(derive_seed(cfg.seeds[0], "latent", index))
        self.policy = ActingPolicy(cfg, env.obs_dim, env.num_actions, generator)
        self.params = LocalParams(cfg, wiring, self.policy)
        self.slot = FIRST_ACTOR_SLOT + index
        self.client = ReplayClient(
            wiring.ingest, f"actor{index}", ctx=self.ctx, on_wait=self.beat, stall_warning_s=cfg.stall_warning_s
        )
        self.bell = Doorbell(self.ctx, wiring.bell(f"actor{index}"))

    def beat(self) -> None:
        self.counters.beat(self.slot)

    def await_version(self, version: int) -> None:
        wait_until(
            lambda: min(self.params.versions()) >= version,
            self.bell,
            heartbeat=self.beat,
            stall_warning_s=self.cfg.stall_warning_s,
            describe_stall=lambda: {"side": "learner", "version": version},
        )

    def on_sent(self, member: int, n: int) -> None:
        self.counters.sent[self.index, member] += n

    def run(self) -> None:
        Actor(
            self.cfg,
            self.index,
            self.client,
            self.policy,
            self.params.refresh,
            self.on_sent,
            self.beat,
            self.await_version,
        ).run()

    def on_stop(self) -> None:
        pass  # unacknowledged messages are lost with the process and accounted by the run

    def close(self) -> None:
        self.client.close()
        self.bell.close()
        self.ctx.term()
        self.params.close()
        self.counters.close()


def run_actor(config: dict, wiring: dict, index: int) -> None:
    """Process entry point of local actor `index`."""
    run_role("actor", wiring, lambda w, stop: LocalActor(RunConfig(**config), w, stop, index), actor=index)
