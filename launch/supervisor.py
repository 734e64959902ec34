"""The supervisor: starts a run's processes, watches them, stops them, and always cleans up.

Order of start: the shared-memory blocks the learner and model server publish
into, then the replay service (which creates the store and counters), then the
learner, model server, evaluator and actors. Offline (`cfg.offline`), the
supervisor itself creates the store, fills it with the dataset (one partition
per member) and starts only the learner and model server. It waits on the children's exit
sentinels and checks their heartbeats; Ctrl-C/SIGTERM, a child that dies
unexpectedly or goes silent stops everything. Whatever happens, every
shared-memory segment of the run is unlinked and the summary and plot are
written from what the run produced. Exit code 0 only for a completed run.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import signal
import time

import numpy as np

import envs
from actors.actor import run_actor
from actors.evaluator import run_evaluator
from launch.config import dump_toml
from launch.monitor import RunMonitor
from launch.results import write_summary
from learner.agents import encoder_shape, q_shape
from learner.config import RunConfig
from learner.dqn import BATCH_FIELDS
from learner.params import ParamBlock
from learner.process import eval_snapshot_spec, run_learner
from replay.counters import RunCounters
from replay.runtime.lifecycle import StopRequested, StopSignal
from replay.runtime.logs import configure_logging, get_logger
from replay.runtime.wiring import EVALUATOR_SLOT, FIRST_ACTOR_SLOT, LEARNER_SLOT, MODELSERVER_SLOT, REPLAY_SLOT, Wiring
from replay.service import ServiceConfig, serve
from replay.shm import new_run_id, unlink_segment
from replay.slots import SlotQueue
from replay.store import ReplayStore

EVAL_QUEUE_DEPTH = 4
STOP_GRACE_S = 8.0
SPAWN = multiprocessing.get_context("spawn")


def imagined_batch_spec(cfg: RunConfig, width: int) -> dict:
    """One imagined batch: what a Q update reads, [P, B] transitions of Q-input width `width`."""
    P, B = cfg.members, cfg.batch_size
    shapes = {"obs": (P, B, width), "next_obs": (P, B, width)}
    return {k: (np.int64 if k == "action" else np.float32, shapes.get(k, (P, B))) for k in BATCH_FIELDS}


class RunFailed(RuntimeError):
    pass


class Supervisor:
    def __init__(self, cfg: RunConfig, run_dir: str, progress: bool = True, dataset: list | None = None):
        if cfg.offline and dataset is None:
            raise ValueError("an offline run needs a dataset (one Transitions per member)")
        self.cfg = cfg
        self.dataset = dataset
        self.run_dir = os.path.abspath(run_dir)
        self.show_progress = progress
        self.wiring = Wiring(run_id=new_run_id(), run_dir=self.run_dir, actors=cfg.actors)
        self.children: dict[str, multiprocessing.Process] = {}
        self.slots: dict[str, int] = {}
        self.launched: dict[str, float] = {}  # start time per child: its heartbeat grace begins there
        self.segments: list = []
        self.counters: RunCounters | None = None
        self.log = None
        self.outcome = "failed"
        self.reason = ""
        self.monitor: RunMonitor | None = None  # progress line, status.json, TensorBoard (launch/monitor.py)

    # -- public ----------------------------------------------------------------------
    def run(self) -> int:
        os.makedirs(self.run_dir, exist_ok=True)
        with open(os.path.join(self.run_dir, "config.toml"), "w") as f:
            f.write(dump_toml(self.cfg.to_dict()))
        configure_logging("supervisor", self.wiring.events)
        self.log = get_logger()
        stop = StopSignal().install()
        self.started = time.time()
        try:
            self.create_blocks()
            self.start_children()
            self.watch()
            self.outcome = "completed"
        except StopRequested:
            self.outcome = "interrupted"
            self.reason = f"signal {stop.signum}"
        except RunFailed as error:
            self.outcome, self.reason = "failed", str(error)
        except Exception as error:  # a bug of ours: still clean up
            self.outcome, self.reason = "failed", f"{type(error).__name__}: {error}"
            self.log.exception("supervisor_error")
        finally:
            self.stop_children()
            self.finish()
        if self.outcome == "completed":
            return 0
        return 128 + stop.signum if self.outcome == "interrupted" and stop.signum else 1

    # -- start -----------------------------------------------------------------------
    def create_blocks(self) -> None:
        cfg, w = self.cfg, self.wiring
        env = envs.make(cfg.env, 1, 0, **cfg.env_params)
        self.obs_dim, self.num_actions = env.obs_dim, env.num_actions
        q_numel = cfg.members * q_shape(cfg, env.obs_dim, env.num_actions).numel
        enc = encoder_shape(cfg, env.obs_dim)
        enc_numel = cfg.members * enc.numel if enc else 0
        self.segments.append(ParamBlock.create(w.q_params, q_numel))
        if enc is not None:
            self.segments.append(ParamBlock.create(w.model_params, enc_numel))
        self.segments.append(SlotQueue.create(w.eval_queue, EVAL_QUEUE_DEPTH, eval_snapshot_spec(q_numel, enc_numel)))
        if cfg.spec.model_server:
            width = cfg.spec.q_input.width(cfg, env.obs_dim)
            self.segments.append(SlotQueue.create(w.imagined, cfg.queue_depth, imagined_batch_spec(cfg, width)))
        if cfg.offline:
            self.load_dataset(env.obs_dim, env.num_actions)

    def load_dataset(self, obs_dim: int, num_actions: int) -> None:
        """Offline: the store, one partition per member, holding that member's dataset."""
        cfg, w = self.cfg, self.wiring
        if len(self.dataset) != cfg.members:
            raise ValueError(f"dataset: one Transitions per member expected, got {len(self.dataset)} for {cfg.members}")
        capacity = max(len(d) for d in self.dataset)
        store = ReplayStore.create(w.store, cfg.members, obs_dim, num_actions, capacity)
        self.segments.append(store)
        self.counters = RunCounters.create(w.counters, cfg.members)
        for m, data in enumerate(self.dataset):
            store.add(m, data.obs, data.action, data.reward, data.next_obs, data.terminal)
            self.counters.stored[m] = len(data)

    def start_children(self) -> None:
        """Online: the replay service first (it creates the store), then everyone else. Offline: the
        learner and model server only, on the store this process filled."""
        cfg, w = self.cfg, self.wiring
        config, wiring = cfg.to_dict(), w.__dict__.copy()
        if not cfg.offline:
            self.start_replay()
        self.spawn("learner", LEARNER_SLOT, run_learner, config, wiring)
        if cfg.spec.model_server:
            from modelserver.process import run_modelserver

            self.spawn("modelserver", MODELSERVER_SLOT, run_modelserver, config, wiring)
        if not cfg.offline:
            self.spawn("evaluator", EVALUATOR_SLOT, run_evaluator, config, wiring)
            for i in range(cfg.actors):
                self.spawn(f"actor{i}", FIRST_ACTOR_SLOT + i, run_actor, config, wiring, i)
        self.log.info(
            "run_started",
            run_dir=self.run_dir,
            run_id=w.run_id,
            agent=cfg.agent,
            env=cfg.env,
            members=cfg.members,
            steps=cfg.steps,
            offline=cfg.offline,
            processes=list(self.children),
        )

    def start_replay(self) -> None:
        cfg, w = self.cfg, self.wiring
        service = ServiceConfig(
            run_id=w.run_id,
            endpoint=w.ingest,
            members=cfg.members,
            obs_dim=self.obs_dim,
            num_actions=self.num_actions,
            capacity=cfg.capacity,
            ratio=dataclasses.asdict(cfg.ratio_policy()),
            bell=w.bell("replay"),
            ring_on_insert=[w.bell("learner")] + ([w.bell("modelserver")] if cfg.spec.model_server else []),
            remote_endpoint=cfg.remote_endpoint or None,
            keys_dir=cfg.keys or None,
            run_info={"config": cfg.to_dict(), "param_endpoint": cfg.param_endpoint},
            log_path=w.events,
            heartbeat_slot=REPLAY_SLOT,
            first_remote_slot=cfg.actors,
            stall_warning_s=cfg.stall_warning_s,
        )
        ready = SPAWN.Event()
        self.spawn("replay", REPLAY_SLOT, serve, service.to_dict(), ready)
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            self.check_children()
            if time.monotonic() > deadline:
                raise RunFailed("the replay service did not start within 60 s")
        self.counters = RunCounters.attach(w.counters)

    def spawn(self, name: str, slot: int, target, *args) -> None:
        process = SPAWN.Process(target=target, args=args, name=f"mbgen-{name}")
        process.start()
        self.children[name] = process
        self.slots[name] = slot
        self.launched[name] = time.time()

    # -- watch -----------------------------------------------------------------------
    def check_children(self) -> list[str]:
        """Names of children that finished cleanly; raises RunFailed for any other exit."""
        done = []
        for name, process in self.children.items():
            if process.exitcode is None:
                continue
            if process.exitcode != 0 or name == "replay":
                how = (
                    f"exit code {process.exitcode}"
                    if process.exitcode >= 0
                    else f"killed by {signal.Signals(-process.exitcode).name}"
                )
                raise RunFailed(f"{name} (pid {process.pid}) stopped unexpectedly: {how}")
            done.append(name)
        return done

    def watch(self) -> None:
        cfg = self.cfg
        work = [n for n in self.children if n != "replay"]
        self.monitor = RunMonitor(cfg, self.run_dir, progress=self.show_progress)
        while True:
            alive = [p.sentinel for p in self.children.values() if p.exitcode is None]
            multiprocessing.connection.wait(alive, timeout=0.5)
            done = self.check_children()
            steps = self.counters.updates if cfg.offline else self.counters.min_inserts()
            self.monitor.update(steps, self.counters.updates, self.process_health(), self.counters.accounting())
            if set(work) <= set(done):
                return
            now = time.time()
            for name, process in self.children.items():
                if process.exitcode is not None:
                    continue
                last = max(float(self.counters.heartbeat[self.slots[name]]), self.launched[name])
                if now - last > cfg.heartbeat_timeout_s:
                    raise RunFailed(f"{name} (pid {process.pid}) showed no sign of life for {now - last:.0f} s")

    def process_health(self) -> dict[str, dict]:
        """Per child: pid, whether it runs, its exit code, seconds since its last heartbeat."""
        now = time.time()
        health = {}
        for name, process in self.children.items():
            beat = float(self.counters.heartbeat[self.slots[name]]) if self.counters is not None else 0.0
            health[name] = {
                "pid": process.pid,
                "alive": process.exitcode is None,
                "exitcode": process.exitcode,
                "heartbeat_age_s": now - max(beat, self.launched[name]),
            }
        return health

    # -- stop ------------------------------------------------------------------------
    def stop_children(self) -> None:
        """SIGTERM every child still running, then SIGKILL what has not exited in time."""
        for process in self.children.values():
            if process.exitcode is None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for name, process in self.children.items():
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                self.log.warning("killing", process=name, pid=process.pid)
                process.kill()
                process.join()

    def finish(self) -> None:
        summary = write_summary(self.run_dir, self.cfg, self.counters, self.started, self.outcome, self.reason)
        if self.monitor is not None:  # before the counters close: it reads the last heartbeats
            self.monitor.finish(self.outcome, summary, self.process_health(), summary["transitions"])
        for segment in self.segments:
            segment.close()
        if self.counters is not None:
            self.counters.close()
        removed = [name for name in self.wiring.all_segments() if unlink_segment(name)]
        if removed:
            self.log.warning("unlinked_leftovers", segments=removed)
        self.summary = summary
        self.log.info("run_finished", outcome=self.outcome, reason=self.reason, wall_s=summary["throughput"]["wall_s"])
