"""The learner process: DQN updates at the enforced ratio, parameter publishing, eval snapshots, checkpoints.

Per update: wait until the rate limiter allows update u+1 (and, for model agents,
until the model server has the imagined batch u+1 ready), train on it, count
it, publish the Q parameters every `publish_period` updates (version = u), ring
the processes waiting on the count or the version, then
  - push an evaluation snapshot when u equals the updates the protocol calls for
    at an evaluation point t (k * max(0, t - learning_starts)), so evaluation at
    t always sees the policy after exactly that many updates;
  - at a checkpoint cut (every `checkpoint_period` updates, at the end, and when
    the supervisor asks for a stop): wait until every evaluation pushed so far is
    written, write the learner's part (networks, optimiser, sampling streams,
    evaluation position), then announce the cut (counters.cut_id = u) so the
    actors and the replay service write theirs (replay/runtime/checkpoints.py).
    The next cut's u is published in counters.cut_at ahead of time, so the model
    server can write its part when it reaches it.
After a stop cut the learner does no more updates and waits to be terminated.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch
import zmq
from mbgen.learner.config import RunConfig
from mbgen.learner.dqn import DQN
from mbgen.learner.training import LearnerContext
from mbgen.replay.store import ReplayStore
from mbgen.runtime import checkpoints
from mbgen.runtime.counters import LIVE, RunCounters
from mbgen.runtime.devices import choose_device, parallelism
from mbgen.runtime.doorbell import ActorRinger, Doorbell, Ringer, wait_until
from mbgen.runtime.lifecycle import StopSignal
from mbgen.runtime.logs import get_logger
from mbgen.runtime.params import ParamBlock, ParamPublisher
from mbgen.runtime.roles import EVALUATOR, LEARNER, MODELSERVER, REPLAY, actor_name, process_slot
from mbgen.runtime.runner import run_role
from mbgen.runtime.security import ServerKeys
from mbgen.runtime.slots import SlotQueue
from mbgen.runtime.timing import PhaseTimer
from mbgen.runtime.wiring import Wiring

PROGRESS_PERIOD_S = 10.0
STOP_EVALUATIONS_S = 4.0  # a stop cut waits this long for pending evaluations, else it is skipped
REMOTE_REPUBLISH_S = 1.0  # remote actors also get the current version this often while nothing changes


def eval_snapshot_spec(q_numel: int, model_numel: int) -> dict:
    """An evaluation point's policy: Q (and the actors' model network) parameter buffers, all members."""
    spec = {"env_steps": (np.int64, ()), "updates": (np.int64, ()), "q": (np.float32, (q_numel,))}
    if model_numel:
        spec["model"] = (np.float32, (model_numel,))
    return spec


class Learner:
    def __init__(self, cfg: RunConfig, wiring: Wiring, stop: StopSignal):
        self.cfg, self.wiring, self.stop = cfg, wiring, stop
        self.log = get_logger()
        self.device = choose_device(cfg.system.device)
        self.model_agent = cfg.spec.model_server
        self.workers, self.threads = parallelism(
            cfg.members, cfg.system.workers, cfg.system.learner_threads, 2 if cfg.spec.model_server else 1
        )
        self.dqn = DQN(
            cfg.q_shape(),
            cfg.member_seeds,
            cfg.member_lr,
            gamma=cfg.learning.gamma,
            target_period=cfg.learning.target_period,
            device=self.device,
            workers=self.workers,
        )
        self.policy = cfg.ratio_policy()
        self.total = cfg.total_updates
        self.timer = PhaseTimer()
        self.counters = RunCounters.attach(wiring.counters)
        self.params = ParamBlock.attach(wiring.q_params)
        self.eval_queue = SlotQueue.attach(wiring.eval_queue)
        self.model_block = ParamBlock.attach(wiring.model_params) if cfg.actor_model_numel() else None
        self.ctx = zmq.Context()
        self.bell = Doorbell(self.ctx, wiring.bell(LEARNER))
        waiting_on_updates = [wiring.bell(REPLAY)] + ([wiring.bell(MODELSERVER)] if self.model_agent else [])
        self.ring_updates = Ringer(self.ctx, waiting_on_updates)
        self.ring_evaluator = Ringer(self.ctx, [wiring.bell(EVALUATOR)])
        self.ring_actors = ActorRinger(
            self.ctx, lambda slot: wiring.bell(actor_name(slot)), self.counters.slot_state, LIVE
        )
        self.publisher = None
        if wiring.param_endpoint:
            keys = ServerKeys.load(wiring.keys) if wiring.keys else None
            self.publisher = ParamPublisher(self.ctx, wiring.param_endpoint, keys)
        # The model server's batches (its work per update: learner/training.py), and the replay store when
        # the agent's Q trains on replay samples.
        training = cfg.spec.trains_on
        self.batches = SlotQueue.attach(wiring.model_batches) if self.model_agent else None
        self.fields = list(training.batch_spec(cfg))
        self.store = ReplayStore.attach(wiring.store) if training.samples_replay else None
        self.update = training.learner_step(LearnerContext(cfg, self.dqn, self.store, self.device, self.timer))
        self.last_remote = 0.0
        self.eval_points = cfg.eval_points()
        self.next_eval = 0
        self.wait_s = 0.0
        self.longest_wait_s = 0.0
        self.stopped = False
        if wiring.resume_from:
            self.load_part(checkpoints.read_part(wiring.resume_from, LEARNER))
        self.losses: list[torch.Tensor] = []

    def close(self) -> None:
        for closable in (self.ring_updates, self.ring_evaluator, self.ring_actors, self.bell):
            closable.close()
        if self.publisher is not None:
            self.publisher.close()
        self.ctx.term()
        segments = [
            self.counters,
            self.params,
            self.eval_queue,
            self.model_block,
            self.batches,
            self.store,
        ]
        for segment in segments:
            if segment is not None:
                segment.close()

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        self.publish()
        self.push_due_evals()
        self.log.info(
            "learner_started",
            total_updates=self.total,
            device=str(self.device),
            workers=self.workers,
            threads=self.threads,
            q_parameters=self.dqn.shape.numel,
            members=self.cfg.members,
        )
        next_report = time.monotonic() + PROGRESS_PERIOD_S
        timer = self.timer
        while self.dqn.updates < self.total:
            with timer.phase("wait"):
                self.await_next()
            if self.counters.stop_requested:
                break
            with self.stop.deferred():
                self.update_once()
                self.counters.updates = self.dqn.updates
            if self.dqn.updates == 1:
                self.counters.update_times[0] = time.time()
            self.counters.update_times[1] = time.time()
            if self.dqn.updates % self.cfg.system.publish_period == 0:  # before the ring: a lock-step model server
                with timer.phase("publish"):  # waits for this version, and the ring is what wakes it
                    self.publish()
            with timer.phase("notify"):
                self.ring_updates.ring()
            with timer.phase("eval_snapshot"):
                self.push_due_evals()
            if self.dqn.updates == self.counters.cut_at:
                self.cut()
            self.tick()
            timer.tick()
            if time.monotonic() >= next_report:
                self.report()
                next_report = time.monotonic() + PROGRESS_PERIOD_S
        if self.counters.stop_requested and self.dqn.updates < self.total:
            self.stop_cut()
            self.export_policy("learner-final.npz")
            return
        self.publish()
        self.export_policy("learner-final.npz")
        self.report()
        self.log.info(
            "learner_finished",
            updates=self.dqn.updates,
            wait_s=round(self.wait_s, 3),
            longest_wait_s=round(self.longest_wait_s, 3),
        )

    def await_next(self) -> None:
        u = self.dqn.updates
        if self.cfg.run.offline:  # a fixed dataset: no ratio to keep
            allowed = lambda: True  # noqa: E731
        else:
            allowed = lambda: self.policy.may_update(self.counters.min_inserts(), u)  # noqa: E731
        ready = (lambda: allowed() and self.batches.has_item()) if self.model_agent else allowed
        waited = wait_until(
            lambda: ready() or self.counters.stop_requested,
            self.bell,
            heartbeat=self.tick,
            stall_warning_s=self.cfg.system.stall_warning_s,
            describe_stall=lambda: {
                "side": "model server" if self.model_agent and allowed() else "actors",
                "updates": u,
                "inserts": self.counters.min_inserts(),
                "target": self.policy.target(self.counters.min_inserts()),
            },
        )
        self.wait_s += waited
        if u > 0:  # waits before the first update are for learning_starts, not for another process
            self.longest_wait_s = max(self.longest_wait_s, waited)

    def update_once(self) -> None:
        if self.batches is None:
            loss = self.update(None)
        else:
            slot = self.batches.slot(self.batches.consumed)
            t = {k: torch.from_numpy(slot[k]).to(self.device, non_blocking=True) for k in self.fields}
            loss = self.update(t)
            self.batches.release()
        self.losses.append(loss)

    # -- outputs --------------------------------------------------------------------------
    def tick(self) -> None:
        """Liveness: the heartbeat, and a periodic copy of the parameters for remote actors."""
        self.counters.beat(LEARNER)
        if self.publisher is not None and time.monotonic() - self.last_remote > REMOTE_REPUBLISH_S:
            self.publish_remote()

    def publish(self) -> None:
        self.params.publish(self.dqn.flat, self.dqn.updates)
        if self.cfg.lockstep:  # lock-step actors wait for every version
            self.ring_actors.ring()
        if self.publisher is not None and self.dqn.updates % self.cfg.system.remote_publish_period == 0:
            self.publish_remote()

    def publish_remote(self) -> None:
        self.publisher.publish("q", self.dqn.flat, self.dqn.updates)
        if self.model_block is not None:
            model = np.empty(self.model_block.shape, np.float32)
            version = self.model_block.read(model)
            self.publisher.publish("model", torch.from_numpy(model), version)
        self.last_remote = time.monotonic()

    def push_due_evals(self) -> None:
        """Snapshot the policy for every evaluation point whose update count is now reached."""
        while (
            self.next_eval < len(self.eval_points)
            and self.cfg.target_updates(self.eval_points[self.next_eval]) <= self.dqn.updates
        ):
            env_steps = self.eval_points[self.next_eval]
            self.eval_queue.wait(
                lambda: self.eval_queue.has_room() or self.counters.stop_requested,
                self.bell,
                heartbeat=self.tick,
                stall_warning_s=self.cfg.system.stall_warning_s,
                describe_stall=lambda: {"side": EVALUATOR},
            )
            if not self.eval_queue.has_room():
                return  # stopping: this point is pushed by the resumed run (next_eval is in the cut)
            slot = self.eval_queue.slot(self.eval_queue.produced)
            slot["env_steps"][...] = env_steps
            slot["updates"][...] = self.dqn.updates
            slot["q"][...] = self.dqn.flat.cpu().numpy()
            if self.model_block is not None:
                # The model after as many updates as Q: the model server publishes model u when it starts
                # model update u + 1 (or ends), and cannot pass u + 1 before this learner's next update.
                u = self.dqn.updates
                wait_until(
                    lambda: self.model_block.version >= u or self.counters.stop_requested,
                    self.bell,
                    heartbeat=self.tick,
                    stall_warning_s=self.cfg.system.stall_warning_s,
                    describe_stall=lambda: {"side": MODELSERVER, "model_version": self.model_block.version},
                )
                self.model_block.read(slot["model"])
            self.eval_queue.commit()
            self.ring_evaluator.ring()
            self.next_eval += 1

    # -- checkpoints -------------------------------------------------------------------------
    def on_stop(self) -> None:
        """Terminated: a stop cut, if one was asked for and not made yet; the policy exported."""
        if self.counters.stop_requested and not self.stopped:
            self.stop_cut()
        self.export_policy("learner-final.npz")

    def stop_cut(self) -> None:
        """A cut at the current update, after which this learner does no more updates."""
        u = self.dqn.updates
        self.stopped = True
        if self.counters.cut_id == u:
            self.counters.cut_at = u  # the periodic cut at u is already written: it is the stop cut
            return
        self.counters.cut_at = u  # first, so the model server can write its part meanwhile
        self.cut(evaluations_timeout_s=STOP_EVALUATIONS_S)

    def cut(self, evaluations_timeout_s: float | None = None) -> None:
        u = self.dqn.updates
        if self.cfg.run.offline:  # a fixed dataset, minutes long: policy snapshots (the budget study), no parts
            self.export_policy(f"learner-{u:09d}.npz")
            self.counters.cut_at = next_cut(u, self.cfg.system.checkpoint_period, self.total)
            return
        drained = lambda: self.eval_queue.pending() == 0  # noqa: E731  (every pushed evaluation written)
        if evaluations_timeout_s is None:
            self.eval_queue.wait(drained, self.bell, heartbeat=self.tick, describe_stall=lambda: {"side": EVALUATOR})
        else:
            deadline = time.monotonic() + evaluations_timeout_s
            self.eval_queue.wait(lambda: drained() or time.monotonic() > deadline, self.bell, heartbeat=self.tick)
            if not drained():
                self.log.warning("cut_skipped", updates=u, reason="pending evaluations were not written in time")
                return
        with self.stop.deferred():
            info = checkpoints.write_part(
                checkpoints.cut_dir(self.wiring.checkpoints, u),
                LEARNER,
                self.part(),
                {"updates": u, "config": self.cfg.digest()},
            )
            self.counters.part_done[process_slot(LEARNER)] = u
            self.counters.cut_id = u  # the announcement: actors and the replay service write theirs now
            if not self.stopped:
                self.export_policy(f"learner-{u:09d}.npz")
                self.counters.cut_at = next_cut(u, self.cfg.system.checkpoint_period, self.total)
        self.ring_actors.ring()
        self.ring_updates.ring()
        self.log.info("checkpoint_part", part=LEARNER, updates=u, bytes=info["bytes"], seconds=info["seconds"])

    def part(self) -> dict[str, np.ndarray]:
        out = {f"dqn.{k}": v for k, v in self.dqn.state().items()}
        out["next_eval"] = np.array(self.next_eval)
        out.update({f"update.{k}": v for k, v in self.update.state_dict().items()})
        return out

    def load_part(self, part: dict[str, np.ndarray]) -> None:
        self.dqn.load_state({k[len("dqn.") :]: v for k, v in part.items() if k.startswith("dqn.")})
        self.next_eval = int(part["next_eval"])
        self.update.load_state_dict({k[len("update.") :]: v for k, v in part.items() if k.startswith("update.")})
        self.log.info("learner_resumed", updates=self.dqn.updates, next_eval=self.next_eval)

    def export_policy(self, name: str) -> None:
        """The policy alone (Q, target, optimiser), for tools: `checkpoints/learner-<u>.npz`, learner-final.npz."""
        os.makedirs(self.wiring.checkpoints, exist_ok=True)
        path = os.path.join(self.wiring.checkpoints, name)
        with self.stop.deferred():
            np.savez(
                path + ".tmp.npz",
                **self.dqn.state(),
                env_steps=self.counters.inserts().copy(),
                seeds=np.array(self.cfg.member_seeds),
            )
            os.replace(path + ".tmp.npz", path)

    def report(self) -> None:
        loss = torch.stack(self.losses).mean(0).cpu().tolist() if self.losses else None
        self.losses.clear()
        self.log.info(
            "learner_progress",
            updates=self.dqn.updates,
            inserts=self.counters.min_inserts(),
            wait_s=round(self.wait_s, 3),
            loss=loss,
            **self.update.report(),
            **self.timer.report(),
        )


def next_cut(updates: int, period: int, total: int) -> int:
    """The update count of the first periodic checkpoint cut after `updates` (the run's end at the latest)."""
    return min(total, (updates // period + 1) * period)


def run_learner(config: dict, wiring: dict) -> None:
    """Process entry point."""
    w = Wiring(**wiring)
    run_role(LEARNER, w.events, lambda stop: Learner(RunConfig.from_dict(config), w, stop))
