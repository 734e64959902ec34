"""The actor: steps its environments for every member and streams transitions to replay.

Each actor runs `envs_per_actor` copies of the environment for every member
(seeded from the member's seed and the actor's slot), picks actions by softmax
over Q/temperature with the newest parameters it has, and sends each member's
transitions in messages of `message_size`. Every 10 s it logs the behaviour
episodes each member finished (`train_episodes`, actors/episodes.py). In
lock-step mode it sends every step and, before acting at step t, waits for the
parameters of exactly the updates the protocol calls for after t steps, which
makes a run reproducible bit for bit. (Otherwise it waits only for the first
version.)

A message counts as sent (the actor's claim, `claims`) when it enters the
client's outbox. At a checkpoint cut the actor writes its part at a step
boundary, or inside a wait (for parameters, or for acknowledgements while its
window is full): its environments and every random stream, the step it is at,
the transitions it has not sent yet, and the outbox of unacknowledged
messages with their sequence numbers. Restored, it resends that outbox under
the same numbers (the service drops what it already stored) and goes on.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
import zmq
from mbgen.actors.acting import ActingPolicy
from mbgen.actors.episodes import EpisodeReturns
from mbgen.envs.base import TRANSITION_FIELDS
from mbgen.envs.seeding import derive_seed, rng_state, set_rng_state
from mbgen.learner.config import RunConfig
from mbgen.replay.client import ReplayClient
from mbgen.runtime import checkpoints
from mbgen.runtime.counters import RunCounters
from mbgen.runtime.doorbell import Doorbell, wait_until
from mbgen.runtime.logs import get_logger
from mbgen.runtime.params import ParamBlock, ParamReader
from mbgen.runtime.roles import ACTOR, LEARNER, actor_name
from mbgen.runtime.runner import run_role
from mbgen.runtime.security import LocalCredentials
from mbgen.runtime.wiring import Wiring

from mbgen import envs

PROGRESS_PERIOD_S = 10.0
STOP_DRAIN_S = 2.0  # after a stop cut, how long an actor waits for its last acknowledgements


class Actor:
    def __init__(
        self,
        cfg: RunConfig,
        slot: int,
        client: ReplayClient,
        policy: ActingPolicy,
        refresh: Callable[[], None],
        claims: np.ndarray,
        heartbeat: Callable[[], None] = lambda: None,
        await_version: Callable[[int], None] | None = None,
        steps: tuple[int, int] | None = None,
    ):
        self.cfg, self.slot, self.client, self.policy = cfg, slot, client, policy
        self.refresh, self.claims, self.heartbeat, self.await_version = refresh, claims, heartbeat, await_version
        self.log = get_logger()
        self.E = cfg.system.envs_per_actor
        seeds = cfg.member_seeds
        self.envs = [envs.make(cfg.run.env, self.E, derive_seed(s, ACTOR, slot), **cfg.run.env_params) for s in seeds]
        self.rngs = [np.random.default_rng(derive_seed(s, "behaviour", slot)) for s in seeds]
        first, last = steps if steps is not None else (0, cfg.run.steps // (cfg.system.actors * self.E))
        self.step, self.last = first, last  # steps done, and the step to stop at
        self.origin = first  # where this slot's share began: a replacement goes on from origin + stored
        self.buffers: list[list[tuple]] = [[] for _ in seeds]
        self.obs: np.ndarray | None = None
        self.on_boundary: Callable[[], bool] = lambda: False  # checkpoints; True: stop stepping (LocalActor)
        self.returns = EpisodeReturns(cfg.members, self.E, self.envs[0].episodic, cfg.learning.eval_steps)

    def run(self) -> None:
        if self.obs is None:
            self.obs = np.stack([env.reset() for env in self.envs])  # [P, E, D]
        flush_every = 1 if self.cfg.lockstep else max(1, self.cfg.system.message_size // self.E)
        next_report = time.monotonic() + PROGRESS_PERIOD_S
        first = self.step
        while self.step < self.last:
            if self.on_boundary():
                self.log.info("actor_stopped_at_cut", steps=self.step)
                self.client.flush(timeout_s=STOP_DRAIN_S)
                return
            if self.await_version is not None and (self.cfg.lockstep or self.step == first):
                self.await_version(self.cfg.target_updates(self.step * self.E))
            self.refresh()
            uniforms = np.stack([rng.random(self.E) for rng in self.rngs])
            actions = self.policy.behaviour(self.obs, uniforms)
            new_obs = np.empty_like(self.obs)
            for m, env in enumerate(self.envs):
                next_obs, reward, terminal, new_obs[m] = env.step(actions[m])
                self.buffers[m].append((self.obs[m], actions[m], reward, next_obs, terminal))
                self.returns.add(m, reward, terminal)
            self.obs = new_obs
            self.step += 1
            if self.step % flush_every == 0:
                self.flush()
            self.heartbeat()
            if time.monotonic() >= next_report:
                self.log.info("actor_progress", steps=self.step, of=self.last, resends=self.client.resends)
                self.report_returns(self.step)
                next_report = time.monotonic() + PROGRESS_PERIOD_S
        self.flush()
        self.client.flush()
        self.report_returns(self.step)
        self.log.info("actor_finished", steps=self.step, stored=self.client.stored, duplicates=self.client.duplicates)

    def report_returns(self, steps: int) -> None:
        """The behaviour episodes finished since the last report (actors/episodes.py), per member."""
        returns, episodes = self.returns.take()
        if any(episodes):
            self.log.info("train_episodes", steps=steps, returns=returns, episodes=episodes)

    def flush(self) -> None:
        for m, buffer in enumerate(self.buffers):
            if not buffer:
                continue
            self.buffers[m] = []  # taken before sending: a checkpoint inside send() sees it in the outbox
            obs, action, reward, next_obs, terminal = (np.concatenate(x) for x in zip(*buffer))
            self.claims[m] += len(action)
            self.client.send(m, obs, action, reward, next_obs, terminal)

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        out = {"step": np.array(self.step), "last": np.array(self.last), "origin": np.array(self.origin)}
        out["claims"] = self.claims.copy()
        out["obs"] = self.obs if self.obs is not None else np.zeros(0, bool)
        for m, (env, rng) in enumerate(zip(self.envs, self.rngs)):
            out.update({f"env{m}.{k}": v for k, v in env.state_dict().items()})
            out[f"behaviour{m}"] = np.array(rng_state(rng))
            out[f"buffer{m}.steps"] = np.array(len(self.buffers[m]))
            for i, row in enumerate(self.buffers[m]):
                out.update({f"buffer{m}.{i}.{k}": np.asarray(v) for k, v in zip(TRANSITION_FIELDS, row)})
        out["policy_generator"] = self.policy.generator.get_state().numpy()
        out.update({f"client.{k}": v for k, v in self.client.outbox().items()})
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.step, self.last, self.origin = int(state["step"]), int(state["last"]), int(state["origin"])
        self.claims[:] = state["claims"]
        self.obs = state["obs"] if state["obs"].size else None
        for m, (env, rng) in enumerate(zip(self.envs, self.rngs)):
            env.load_state_dict({k: state[f"env{m}.{k}"] for k in ("obs", "rng")})
            set_rng_state(rng, str(state[f"behaviour{m}"]))
            self.buffers[m] = [
                tuple(state[f"buffer{m}.{i}.{k}"] for k in TRANSITION_FIELDS)
                for i in range(int(state[f"buffer{m}.steps"]))
            ]
        self.policy.generator.set_state(torch.from_numpy(state["policy_generator"]))
        prefix = "client."
        self.client.restore({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})


class LocalParams:
    """Parameters from the run's shared-memory blocks (what a local actor or the evaluator reads)."""

    def __init__(self, cfg: RunConfig, wiring: Wiring, policy: ActingPolicy):
        self.q = ParamReader(ParamBlock.attach(wiring.q_params), policy.q_store.flat)
        self.model = (
            ParamReader(ParamBlock.attach(wiring.model_params), policy.model_store.flat)
            if policy.model_store is not None
            else None
        )

    def refresh(self) -> None:
        self.q.refresh()
        if self.model is not None:
            self.model.refresh()

    def published(self, updates: int) -> bool:
        """Whether the parameters of `updates` Q updates are published: Q version `updates`, and the model
        version one behind (the model server publishes model j when it starts model update j + 1)."""
        model = self.model is None or self.model.block.version >= max(0, updates - 1)
        return self.q.block.version >= updates and model

    def close(self) -> None:
        for r in (self.q, self.model):
            if r is not None:
                r.block.close()


class LocalActor:
    """A local actor process: shared-memory parameters and claims, the run's private ingest endpoint."""

    def __init__(self, cfg: RunConfig, wiring: Wiring, stop, slot: int, steps: tuple[int, int] | None):
        torch.set_num_threads(1)
        self.cfg, self.wiring, self.stop, self.slot = cfg, wiring, stop, slot
        self.log = get_logger()
        self.ctx = zmq.Context()
        self.counters = RunCounters.attach(wiring.counters)
        generator = torch.Generator().manual_seed(derive_seed(cfg.member_seeds[0], "latent", slot))
        self.policy = ActingPolicy(cfg, generator)
        self.params = LocalParams(cfg, wiring, self.policy)
        self.name = name = actor_name(slot)
        self.client = ReplayClient(
            wiring.ingest,
            name,
            token=LocalCredentials(wiring.credentials).token(name),
            ctx=self.ctx,
            on_wait=self.idle,
            stall_warning_s=cfg.system.stall_warning_s,
        )
        self.bell = Doorbell(self.ctx, wiring.bell(name))
        self.actor = Actor(
            cfg,
            slot,
            self.client,
            self.policy,
            self.params.refresh,
            self.counters.sent[slot],
            self.beat,
            self.await_version,
            steps,
        )
        self.actor.on_boundary = self.at_boundary
        self.last_part = int(self.counters.actor_cut[slot])
        if wiring.resume_from:
            self.actor.load_state_dict(checkpoints.read_part(wiring.resume_from, name))
            self.log.info("actor_resumed", step=self.actor.step, unacked=len(self.client.unacked))

    def beat(self) -> None:
        self.counters.beat(self.name)

    def idle(self) -> None:
        """Called inside every wait: heartbeats, and a checkpoint part if a cut was announced."""
        self.beat()
        self.maybe_write_part()

    def at_boundary(self) -> bool:
        """Between steps: write a checkpoint part if one is due; True once the stop cut has this actor's part."""
        self.maybe_write_part()
        c = self.counters
        return c.stop_requested and c.cut_id == c.cut_at and self.last_part == c.cut_id

    def maybe_write_part(self) -> None:
        cut = self.counters.cut_id
        if cut <= self.last_part:
            return
        with self.stop.deferred():
            name = actor_name(self.slot)
            info = checkpoints.write_part(
                checkpoints.cut_dir(self.wiring.checkpoints, cut), name, self.actor.state_dict()
            )
            self.last_part = cut
            self.counters.actor_cut[self.slot] = cut  # after the file: the service waits for this
        self.log.info("checkpoint_part", part=name, updates=cut, bytes=info["bytes"], seconds=info["seconds"])

    def await_version(self, version: int) -> None:
        wait_until(
            lambda: self.params.published(version),
            self.bell,
            heartbeat=self.idle,
            stall_warning_s=self.cfg.system.stall_warning_s,
            describe_stall=lambda: {"side": LEARNER, "version": version},
        )

    def run(self) -> None:
        self.log.info("actor_started", slot=self.slot, steps=[self.actor.step, self.actor.last])
        self.actor.run()

    def on_stop(self) -> None:
        """Asked to stop: give what is in flight a moment to be acknowledged (the service is draining)."""
        try:
            self.client.flush(timeout_s=STOP_DRAIN_S)
        except Exception as error:  # what is still unacknowledged is accounted as lost in flight
            self.log.info("actor_stopped_unacknowledged", unacked=len(self.client.unacked), detail=str(error))

    def close(self) -> None:
        self.client.close()
        self.bell.close()
        self.ctx.term()
        self.params.close()
        self.counters.close()


def run_actor(config: dict, wiring: dict, slot: int, steps: tuple[int, int] | None) -> None:
    """Process entry point of the local actor in `slot`, doing steps [first, last) (None: resumed from
    its checkpoint part)."""
    w = Wiring(**wiring)
    cfg = RunConfig.from_dict(config)
    run_role(ACTOR, w.events, lambda stop: LocalActor(cfg, w, stop, slot, None if steps is None else tuple(steps)), actor=slot)
