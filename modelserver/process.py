"""The model-server process: one model update, and the agent's work with the model, per Q update.

For model update j+1 it waits until (a) the rate limiter allows update j+1, (b)
the queue of its batches has a free slot, and (c) the learner has published Q
parameters no more than `policy_lag` versions behind (0 in lock-step: exactly
j, which keeps lock-step runs reproducible; 1 by default, so the next batch is
prepared while the learner trains on the current one). Then it publishes model
j for the actors (a latent encoder, a planner's model: the model after j updates,
which the actors need for the Q of j + 1 updates), samples real transitions from
the replay store in place, takes one gradient step on the model, does the
agent's work (modelserver/work.py: imagined transitions, value-expansion paths,
or nothing) with the newest Q parameters, and commits the batch: one item per Q
update, which is what paces the learner, even when it holds no field.

Checkpoints: the model server writes its part of the cut at update u (the
learner publishes the next cut's u in counters.cut_at ahead of time) just before
committing batch u, so the learner cannot have consumed past it: the model and
its optimiser, every random stream, and j = u. A stop cut may come at an update
the model server has passed (it prepares batches ahead); its part then also
holds the batches after u still waiting in the queue, which the resumed model
server puts back in order.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import zmq
from mbgen.envs.seeding import derive_seed, rng_state, set_rng_state
from mbgen.learner.config import RunConfig
from mbgen.learner.dqn import q_network
from mbgen.learner.shards import ShardPool
from mbgen.modelserver import diagnostics
from mbgen.modelserver.frozen import freeze
from mbgen.modelserver.interface import ModelContext, build_model
from mbgen.modelserver.work import WorkContext
from mbgen.replay.store import Batch, ReplayStore
from mbgen.runtime import checkpoints
from mbgen.runtime.counters import LIVE, RunCounters
from mbgen.runtime.devices import choose_device, parallelism
from mbgen.runtime.doorbell import ActorRinger, Doorbell, Ringer, wait_until
from mbgen.runtime.lifecycle import StopSignal
from mbgen.runtime.logs import get_logger
from mbgen.runtime.params import ParamBlock, ParamReader
from mbgen.runtime.roles import LEARNER, MODELSERVER, actor_name, process_slot
from mbgen.runtime.runner import run_role
from mbgen.runtime.slots import SlotQueue
from mbgen.runtime.timing import PhaseTimer
from mbgen.runtime.wiring import Wiring

DIAGNOSTIC_BATCH = 1024


class ModelServer:
    def __init__(self, cfg: RunConfig, wiring: Wiring, stop: StopSignal):
        self.cfg, self.wiring, self.stop = cfg, wiring, stop
        self.log = get_logger()
        env = cfg.env_spec
        self.device = choose_device(cfg.system.device)
        self.workers, self.threads = parallelism(cfg.members, cfg.system.workers, cfg.system.model_threads, 2)
        self.shards = ShardPool(cfg.members, self.workers)
        self.generator = torch.Generator(device=self.device).manual_seed(
            derive_seed(cfg.member_seeds[0], "model-server")
        )
        self.model = build_model(ModelContext(cfg, self.device, self.generator, self.shards))
        if cfg.options.frozen_model:
            freeze(self.model, cfg.options.frozen_model, cfg.members)
        shape = cfg.q_shape()
        self.q_host_store, q_host = q_network(shape, cfg.member_seeds)  # the published Q parameters, in host memory
        self.q_params = ParamReader(ParamBlock.attach(wiring.q_params), self.q_host_store.flat)
        if self.device.type == "cpu":
            self.q_store, self.q = self.q_host_store, q_host
        else:
            self.q_store, self.q = q_network(shape, cfg.member_seeds, self.device)
        self.temperature = torch.tensor(cfg.member_temperature, dtype=torch.float32, device=self.device)
        self.policy = cfg.ratio_policy()
        self.lag = 0 if cfg.lockstep else cfg.system.policy_lag
        self.counters = RunCounters.attach(wiring.counters)
        self.store = ReplayStore.attach(wiring.store)
        self.queue = SlotQueue.attach(wiring.model_batches)
        self.fields = list(cfg.spec.trains_on.batch_spec(cfg))
        self.acting_block = ParamBlock.attach(wiring.model_params) if cfg.actor_model_numel() else None
        self.rngs = [np.random.default_rng(derive_seed(s, "model-sample")) for s in cfg.member_seeds]
        self.ctx = zmq.Context()
        self.bell = Doorbell(self.ctx, wiring.bell(MODELSERVER))
        self.ring_learner = Ringer(self.ctx, [wiring.bell(LEARNER)])
        self.ring_actors = ActorRinger(
            self.ctx, lambda slot: wiring.bell(actor_name(slot)), self.counters.slot_state, LIVE
        )
        self.timer = PhaseTimer()
        work = WorkContext(
            cfg, self.model, self.q, self.temperature, self.generator, self.shards, self.timer,
            train=not cfg.options.frozen_model,
        )  # fmt: skip
        self.work = cfg.spec.work_class()(work)  # what this agent does with its model per update (modelserver/work.py)
        self.batch = Batch.allocate(cfg.members, self.work.samples, env.obs_dim)
        self.batch_tensors = self.batch.tensors()
        # The batch is built on the device, then copied into the queue's slot in host memory.
        self.device_batch = None
        if self.device.type != "cpu":
            self.device_batch = {
                k: torch.empty(shape, dtype=torch.from_numpy(np.zeros(0, dtype)).dtype, device=self.device)
                for k, (dtype, shape) in cfg.spec.trains_on.batch_spec(cfg).items()
            }
        self.done = 0
        self.parts: set[int] = set()  # cuts this process wrote its part for
        self.base = 0  # model updates before this session's first queue item
        self.wait_s = 0.0
        self.losses: list[torch.Tensor] = []
        self.probe = diagnostics.panflute_probe(env.num_actions) if cfg.run.env == "panflute" else None
        self.diagnostic_batch = Batch.allocate(cfg.members, DIAGNOSTIC_BATCH, env.obs_dim)
        self.diagnostic_rngs = [np.random.default_rng(derive_seed(s, "model-diagnostics")) for s in cfg.member_seeds]
        if wiring.resume_from:
            self.load_part(checkpoints.read_part(wiring.resume_from, MODELSERVER))

    def close(self) -> None:
        for closable in (self.bell, self.ring_learner, self.ring_actors):
            closable.close()
        self.ctx.term()
        for segment in (self.counters, self.store, self.queue, self.q_params.block, self.acting_block):
            if segment is not None:
                segment.close()

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        total = self.cfg.total_updates
        self.publish_acting_params(self.done)
        self.log.info(
            "modelserver_started",
            agent=self.cfg.run.agent,
            device=str(self.device),
            workers=self.workers,
            threads=self.threads,
            model_parameters=self.model.store.total if self.model.store is not None else 0,
            policy_lag=self.lag,
        )
        while self.done < total:
            with self.timer.phase("wait"):
                self.await_turn()
            with self.stop.deferred():
                self.update_and_roll_out()
            self.timer.tick()
            self.counters.model_updates = self.done
            self.ring_learner.ring()
            self.counters.beat(MODELSERVER)
            if self.done % self.cfg.system.diagnostics_period == 0:
                self.report()
            if self.done in self.cfg.options.model_snapshots:  # a model to freeze later (--frozen-model)
                self.export_model(checkpoints.snapshot_name(self.done))
        self.publish_acting_params(self.done)  # the last model: nothing starts after it
        self.ring_learner.ring()
        self.report()
        self.export_model()
        self.log.info("modelserver_finished", updates=self.done, wait_s=round(self.wait_s, 3))
        # Stay until the learner has consumed every batch: a stop cut before that needs this part.
        wait_until(
            lambda: self.counters.updates >= total or self.cfg.total_updates in self.parts,
            self.bell,
            heartbeat=self.idle,
            stall_warning_s=float("inf"),
        )

    def on_stop(self) -> None:
        self.export_model()

    def idle(self) -> None:
        """Inside every wait: heartbeat, and this process's part of a stop cut it has passed."""
        self.counters.beat(MODELSERVER)
        cut = self.counters.cut_at
        if self.counters.stop_requested and cut <= self.done and cut not in self.parts:
            self.write_part(cut)

    # -- checkpoints -------------------------------------------------------------------
    def write_part(self, cut: int) -> None:
        """This process's part of the cut at Q update `cut` (see the module docstring)."""
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out["done"] = np.array(self.done)
        out["generator"] = self.generator.get_state().cpu().numpy()
        for i, g in enumerate(self.work.generators):
            if g is not None:
                out[f"engine_generator{i}"] = g.get_state().cpu().numpy()
        out["sample_rngs"] = np.array([rng_state(r) for r in self.rngs])
        out["diagnostic_rngs"] = np.array([rng_state(r) for r in self.diagnostic_rngs])
        pending = range(cut + 1, self.done + 1)  # batches after the cut, still in the queue
        assert self.queue.consumed + self.base <= cut, "a batch after the cut was consumed"
        for j in pending:
            for k, v in self.queue.slot(j - self.base - 1).items():
                out[f"pending{j - cut - 1}.{k}"] = v
        out["pending"] = np.array(len(pending))
        with self.stop.deferred():
            info = checkpoints.write_part(checkpoints.cut_dir(self.wiring.checkpoints, cut), MODELSERVER, out)
            self.parts.add(cut)
            self.counters.part_done[process_slot(MODELSERVER)] = cut
        self.log.info("checkpoint_part", part=MODELSERVER, updates=cut, bytes=info["bytes"], pending=len(pending))

    def load_part(self, part: dict[str, np.ndarray]) -> None:
        self.model.load_state_dict({k[len("model.") :]: v for k, v in part.items() if k.startswith("model.")})
        self.generator.set_state(torch.from_numpy(part["generator"]))
        for i, g in enumerate(self.work.generators):
            if g is not None:
                g.set_state(torch.from_numpy(part[f"engine_generator{i}"]))
        for rng, state in zip(self.rngs, part["sample_rngs"].tolist()):
            set_rng_state(rng, state)
        for rng, state in zip(self.diagnostic_rngs, part["diagnostic_rngs"].tolist()):
            set_rng_state(rng, state)
        self.done = int(part["done"])
        pending = int(part["pending"])
        self.base = self.done - pending
        for i in range(pending):  # put the prepared batches back, in order
            slot = self.queue.slot(self.queue.produced)
            for k in slot:
                slot[k][...] = part[f"pending{i}.{k}"]
            self.queue.commit()
        self.counters.model_updates = self.done
        self.log.info("modelserver_resumed", updates=self.done, pending=pending)

    def export_model(self, name: str = checkpoints.FINAL_MODEL) -> None:
        """The model's state (parameters, optimiser, tables), for tools: checkpoints/model-final.npz, or a
        snapshot (model-<updates>.npz) on the way."""
        os.makedirs(self.wiring.checkpoints, exist_ok=True)
        path = os.path.join(self.wiring.checkpoints, name)
        with self.stop.deferred():
            np.savez(
                path + ".tmp.npz",
                **{f"model.{k}": v for k, v in self.model.state_dict().items()},
                updates=np.array(self.done),
                seeds=np.array(self.cfg.member_seeds),
            )
            os.replace(path + ".tmp.npz", path)
        self.log.info("model_exported", path=path, updates=self.done)

    def ready(self) -> bool:
        allowed = self.cfg.run.offline or self.policy.may_update(self.counters.min_inserts(), self.done)
        return allowed and self.queue.has_room() and self.q_params.block.version >= self.done - self.lag

    def await_turn(self) -> None:
        def stall() -> dict:
            if not self.policy.may_update(self.counters.min_inserts(), self.done):
                side = "actors"
            elif not self.queue.has_room():
                side = "learner (batches unconsumed)"
            else:
                side = "learner (Q parameters)"
            return {"side": side, "model_updates": self.done, "q_version": self.q_params.block.version}

        self.wait_s += wait_until(
            self.ready,
            self.bell,
            heartbeat=self.idle,
            stall_warning_s=self.cfg.system.stall_warning_s,
            describe_stall=stall,
        )

    def update_and_roll_out(self) -> None:
        self.publish_acting_params(self.done)  # model `done`, now that model update done + 1 may start
        with self.timer.phase("sample"):
            self.store.sample(self.rngs, self.batch)
        real = {k: v.to(self.device, non_blocking=True) for k, v in self.batch_tensors.items()}
        slot = self.queue.slot(self.queue.produced)
        host = {k: torch.from_numpy(slot[k]) for k in self.fields}
        loss = self.work(real, self.device_batch or host, before_rollout=self.refresh_policy)
        if self.device_batch is not None:
            for k, v in self.device_batch.items():
                host[k].copy_(v.cpu())
        if loss is not None:
            self.losses.append(loss)
        self.done += 1
        if self.done == self.counters.cut_at and self.done not in self.parts and not self.cfg.run.offline:
            self.write_part(self.done)  # before the commit: the learner cannot have consumed batch `done`
        self.queue.commit()

    def refresh_policy(self) -> None:
        """After model update done+1: read the newest Q for the rollouts."""
        if self.q_params.refresh() and self.q_store is not self.q_host_store:
            self.q_store.flat.copy_(self.q_host_store.flat)

    def publish_acting_params(self, version: int) -> None:
        if self.acting_block is not None:
            self.acting_block.publish(self.model.acting_params(), version)
            if self.cfg.lockstep:  # lock-step actors wait for every version
                self.ring_actors.ring()

    def report(self) -> None:
        fields: dict = {"model_updates": self.done, "wait_s": round(self.wait_s, 3), **self.timer.report()}
        if self.losses:
            fields["loss"] = torch.stack(self.losses).mean(0).tolist()
            self.losses.clear()
        cut = self.work.take_cut_fraction()
        if cut is not None:
            fields["rollout_cut_fraction"] = cut
        if self.model.learned and self.store.sizes().min() > 0:
            self.store.sample(self.diagnostic_rngs, self.diagnostic_batch)
            held_out = {k: v.to(self.device) for k, v in self.diagnostic_batch.tensors().items()}
            fields.update(
                diagnostics.accuracy(
                    self.model,
                    held_out["obs"],
                    held_out["action"],
                    held_out["reward"],
                    held_out["next_obs"],
                    held_out["continuation"],
                )
            )
            fields.update(self.model.diagnostics(held_out["obs"], held_out["action"]))
            if self.probe is not None:
                fields.update(diagnostics.smoothing(self.model, self.probe, self.cfg.members, self.device))
        self.log.info("model_diagnostics", **fields)


def run_modelserver(config: dict, wiring: dict) -> None:
    """Process entry point."""
    w = Wiring(**wiring)
    run_role(MODELSERVER, w.events, lambda stop: ModelServer(RunConfig.from_dict(config), w, stop))
