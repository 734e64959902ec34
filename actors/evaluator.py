"""The evaluator: greedy episodes for every member at every evaluation point.

At each point (a policy snapshot the learner pushed), every member plays
`eval_episodes` episodes of at most `eval_steps` steps, all members and
episodes stepped together (envs/scores.py `play`). Episodic environments report
the return (rewards until the first terminal), continuing ones the reward rate
(mean reward per step). Each result is one line of metrics.jsonl, labelled with
the member's grid point (group, lr, temperature) and seed; the `eval` event
reports each point's mean, min and max, never an average over points.

A snapshot's slot is released only after its lines are written, so once the
learner sees the queue empty every evaluation it pushed is on disk (what a
checkpoint relies on). A resumed run appends to metrics.jsonl and never writes
a point twice: members already written for a point are skipped.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch
import zmq
from mbgen.actors.acting import ActingPolicy
from mbgen.envs.scores import play
from mbgen.envs.seeding import derive_seed
from mbgen.learner.config import RunConfig
from mbgen.runtime.counters import RunCounters
from mbgen.runtime.doorbell import Doorbell, Ringer
from mbgen.runtime.lifecycle import StopSignal
from mbgen.runtime.logs import get_logger
from mbgen.runtime.roles import EVALUATOR, LEARNER
from mbgen.runtime.runner import run_role
from mbgen.runtime.slots import SlotQueue
from mbgen.runtime.wiring import Wiring

from mbgen import envs

# One line of metrics.jsonl: the evaluation point, the member and its grid point, its score.
METRICS_FIELDS = ("env_steps", "updates", "member", "group", "lr", "temperature", "seed", "eval_return", "wall_s")


def evaluate(cfg: RunConfig, policy: ActingPolicy, env_steps: int) -> np.ndarray:
    """Mean greedy score per member [P]; the episodes' seeds depend on (member seed, env_steps), so
    the same seed under two grid points plays the same episodes."""
    member_envs = [
        envs.make(cfg.run.env, cfg.learning.eval_episodes, derive_seed(s, "eval", env_steps), **cfg.run.env_params)
        for s in cfg.member_seeds
    ]
    return play(member_envs, policy.greedy, cfg.learning.eval_steps).mean(axis=1)


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
        self.policy = ActingPolicy(
            cfg,
            torch.Generator().manual_seed(derive_seed(cfg.member_seeds[0], "eval-latent")),
        )
        self.queue = SlotQueue.attach(wiring.eval_queue)
        self.counters = RunCounters.attach(wiring.counters)
        self.ctx = zmq.Context()
        self.bell = Doorbell(self.ctx, wiring.bell(EVALUATOR))
        self.ring_learner = Ringer(self.ctx, [wiring.bell(LEARNER)])
        self.written = written_points(wiring.metrics)
        self.metrics = open(wiring.metrics, "a", buffering=1)
        if self.metrics.tell() and not ends_with_newline(wiring.metrics):
            self.metrics.write("\n")  # a line cut short by a killed run stays a line of its own
        self.started = time.time() - wiring.elapsed_before

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
        last = self.cfg.eval_points()[-1]
        env_steps = -1
        while env_steps < last:
            slot = self.queue.await_item(
                self.bell,
                heartbeat=lambda: self.counters.beat(EVALUATOR),
                stall_warning_s=max(self.cfg.system.stall_warning_s, 3600.0),
            )
            env_steps, updates = int(slot["env_steps"]), int(slot["updates"])
            self.policy.q_store.flat.copy_(torch.from_numpy(slot["q"]))
            if self.policy.model_store is not None:
                self.policy.model_store.flat.copy_(torch.from_numpy(slot["model"]))
            self.counters.beat(EVALUATOR)
            missing = [m for m in range(self.cfg.members) if m not in self.written.get(env_steps, ())]
            if missing:
                self.write(env_steps, updates, missing)
            self.queue.release()
            self.ring_learner.ring()
        self.log.info("evaluator_finished", evaluations=len(self.cfg.eval_points()))

    def write(self, env_steps: int, updates: int, members: list[int]) -> None:
        with self.stop.deferred():
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
                if label["member"] in members
            ]
            self.metrics.write("\n".join(lines) + "\n")
        self.log.info("eval", env_steps=env_steps, updates=updates, points=point_scores(self.cfg, scores))


def written_points(path: str) -> dict[int, set[int]]:
    """{env_steps: members} already in metrics.jsonl (a resumed run skips them)."""
    points: dict[int, set[int]] = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue  # a line cut short when the run was killed
                points.setdefault(int(row["env_steps"]), set()).add(int(row["member"]))
    return points


def ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def run_evaluator(config: dict, wiring: dict) -> None:
    """Process entry point."""
    w = Wiring(**wiring)
    run_role(EVALUATOR, w.events, lambda stop: Evaluator(RunConfig.from_dict(config), w, stop))
