"""The evaluator: greedy episodes for every member at every evaluation point.

At each point (a policy snapshot the learner pushed), every member plays
`eval_episodes` episodes of at most `eval_steps` steps, all members and
episodes stepped together. Episodic environments report the return (rewards
until the first terminal), continuing ones the reward rate (mean reward per
step). Each result is one line of metrics.jsonl.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import zmq

import envs
from actors.acting import ActingPolicy
from envs.seeding import derive_seed
from learner.config import RunConfig
from replay.counters import RunCounters
from replay.runtime.doorbell import Doorbell, Ringer
from replay.runtime.lifecycle import StopSignal
from replay.runtime.logs import get_logger
from replay.runtime.roles import run_role
from replay.runtime.wiring import EVALUATOR_SLOT, Wiring
from replay.slots import SlotQueue


def evaluate(cfg: RunConfig, policy: ActingPolicy, env_steps: int) -> np.ndarray:
    """Mean greedy score per member [P]; the episodes' seeds depend on (member seed, env_steps)."""
    members = [
        envs.make(cfg.env, cfg.eval_episodes, derive_seed(s, "eval", env_steps), **cfg.env_params) for s in cfg.seeds
    ]
    obs = np.stack([env.reset() for env in members])
    total = np.zeros((cfg.members, cfg.eval_episodes), np.float64)
    alive = np.ones((cfg.members, cfg.eval_episodes), bool)
    for _ in range(cfg.eval_steps):
        actions = policy.greedy(obs)
        for m, env in enumerate(members):
            obs[m], reward, terminal = env.transition(obs[m], actions[m], env.rng)
            total[m] += reward * alive[m]
            if env.episodic:
                alive[m] &= ~terminal
    score = total if members[0].episodic else total / cfg.eval_steps
    return score.mean(axis=1)


class Evaluator:
    def __init__(self, cfg: RunConfig, wiring: Wiring, stop: StopSignal):
        self.cfg, self.wiring, self.stop = cfg, wiring, stop
        self.log = get_logger()
        torch.set_num_threads(1)
        env = envs.make(cfg.env, 1, 0, **cfg.env_params)
        self.policy = ActingPolicy(
            cfg, env.obs_dim, env.num_actions, torch.Generator().manual_seed(derive_seed(cfg.seeds[0], "eval-latent"))
        )
        self.queue = SlotQueue.attach(wiring.eval_queue)
        self.counters = RunCounters.attach(wiring.counters)
        self.ctx = zmq.Context()
        self.bell = Doorbell(self.ctx, wiring.bell("evaluator"))
        self.ring_learner = Ringer(self.ctx, [wiring.bell("learner")])
        self.metrics = open(wiring.metrics, "a", buffering=1)
        self.started = time.time()

    def on_stop(self) -> None:
        pass  # every finished evaluation is already a line of metrics.jsonl

    def close(self) -> None:
        self.metrics.close()
        self.bell.close()
        self.ring_learner.close()
        self.ctx.term()
        self.queue.close()
        self.counters.close()

    def run(self) -> None:
        for _ in self.cfg.eval_points():
            slot = self.queue.await_item(
                self.bell,
                heartbeat=lambda: self.counters.beat(EVALUATOR_SLOT),
                stall_warning_s=max(self.cfg.stall_warning_s, 3600.0),
            )
            env_steps, updates = int(slot["env_steps"]), int(slot["updates"])
            self.policy.q_store.flat.copy_(torch.from_numpy(slot["q"]))
            if self.policy.encoder is not None:
                self.policy.encoder_store.flat.copy_(torch.from_numpy(slot["encoder"]))
            self.queue.release()
            self.ring_learner.ring()
            self.counters.beat(EVALUATOR_SLOT)
            scores = evaluate(self.cfg, self.policy, env_steps)
            wall = round(time.time() - self.started, 3)
            lines = [
                json.dumps(
                    {
                        "env_steps": env_steps,
                        "updates": updates,
                        "member": m,
                        "seed": seed,
                        "eval_return": float(scores[m]),
                        "wall_s": wall,
                    }
                )
                for m, seed in enumerate(self.cfg.seeds)
            ]
            self.metrics.write("\n".join(lines) + "\n")
            self.log.info(
                "eval",
                env_steps=env_steps,
                updates=updates,
                mean=float(scores.mean()),
                min=float(scores.min()),
                max=float(scores.max()),
            )
        self.log.info("evaluator_finished", evaluations=len(self.cfg.eval_points()))


def run_evaluator(config: dict, wiring: dict) -> None:
    """Process entry point."""
    run_role("evaluator", wiring, lambda w, stop: Evaluator(RunConfig(**config), w, stop))
