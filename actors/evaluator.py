"""The evaluator: greedy episodes for every member at every evaluation point.

At each point (a policy snapshot the learner pushed), every member plays
`eval_episodes` episodes of at most `eval_steps` steps, all members and
episodes stepped together (envs/scores.py `play`). Episodic environments report
the return (rewards until the first terminal), continuing ones the reward rate
(mean reward per step). Each result is one line of metrics.jsonl, labelled with
the member's grid point (group, lr, temperature) and seed; the `eval` event
reports each point's mean, min and max, never an average over points.
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import zmq

import envs
from actors.acting import ActingPolicy
from envs.scores import play
from envs.seeding import derive_seed
from learner.config import RunConfig
from replay.counters import RunCounters
from replay.runtime.doorbell import Doorbell, Ringer
from replay.runtime.lifecycle import StopSignal
from replay.runtime.logs import get_logger
from replay.runtime.roles import run_role
from replay.runtime.wiring import EVALUATOR_SLOT, Wiring
from replay.slots import SlotQueue

# One line of metrics.jsonl: the evaluation point, the member and its grid point, its score.
METRICS_FIELDS = ("env_steps", "updates", "member", "group", "lr", "temperature", "seed", "eval_return", "wall_s")


def evaluate(cfg: RunConfig, policy: ActingPolicy, env_steps: int) -> np.ndarray:
    """Mean greedy score per member [P]; the episodes' seeds depend on (member seed, env_steps), so
    the same seed under two grid points plays the same episodes."""
    member_envs = [
        envs.make(cfg.env, cfg.eval_episodes, derive_seed(s, "eval", env_steps), **cfg.env_params)
        for s in cfg.member_seeds
    ]
    return play(member_envs, policy.greedy, cfg.eval_steps).mean(axis=1)


def point_scores(cfg: RunConfig, scores: np.ndarray) -> list[dict]:
    """Per grid point: its labels and the mean, min and max of its members' scores."""
    return [
        {
            "group": p["group"],
            "lr": p["lr"],
            "temperature": p["temperature"],
            "mean": float(scores[p["members"]].mean()),
            "min": float(scores[p["members"]].min()),
            "max": float(scores[p["members"]].max()),
        }
        for p in cfg.point_labels()
    ]


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
                        **label,
                        "eval_return": float(scores[label["member"]]),
                        "wall_s": wall,
                    }
                )
                for label in self.cfg.member_labels()
            ]
            self.metrics.write("\n".join(lines) + "\n")
            self.log.info("eval", env_steps=env_steps, updates=updates, points=point_scores(self.cfg, scores))
        self.log.info("evaluator_finished", evaluations=len(self.cfg.eval_points()))


def run_evaluator(config: dict, wiring: dict) -> None:
    """Process entry point."""
    run_role("evaluator", wiring, lambda w, stop: Evaluator(RunConfig(**config), w, stop))
