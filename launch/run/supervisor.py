"""The supervisor: starts a run's processes, heals them, checkpoints them, stops them, always cleans up.

Start. Everything that must outlive one process is the supervisor's: the
private socket directory (mode 0700: every ipc endpoint and the local actors'
per-run tokens), and every shared-memory segment (replay store, counters,
parameter blocks, queues). Then the replay service, the learner, the model
server, the evaluator and the actors. Offline (`cfg.offline`) the supervisor
fills the store with the dataset and starts only the learner and model server.
A resumed run (`resume=True`, or an automatic restart) first restores the
store and counters from the newest complete checkpoint cut, and every process
restores its own part (replay/runtime/checkpoints.py).

Watch. It waits on the children's exit sentinels and heartbeats:
  - an actor that dies is replaced by a new actor (a new slot, new credentials)
    doing the rest of its steps; its unacknowledged messages are accounted as
    lost in flight;
  - the replay service is restarted in place: it re-attaches to the store and
    counters, completes or rolls back the insert it was committing, and the
    actors resend what it had not acknowledged;
  - the evaluator is restarted (it skips points already in metrics.jsonl);
  - if the learner or model server dies, the whole run resumes from the newest
    complete cut, at most `max_restarts` times within `restart_window_s`; past
    that it stops with a resumable directory.
Every restart is an event and a line on the terminal. Complete cuts get a
manifest, after which older cuts are deleted.

Stop. Ctrl-C or SIGTERM reach the supervisor only (its children ignore
SIGINT): it asks for a stop cut and has the replay service drain (stop pausing
inserts), waits for the cut's parts, terminates the actors (they wait briefly
for their last acknowledgements), then everyone else, all within STOP_BUDGET_S.
Whatever happens, every segment is unlinked, the private directory removed, and
the summary and plot written from what the run produced. A reaper process in
its own session does the cleaning if the supervisor itself is killed. Exit code
0 only for a completed run.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from mbgen import envs
from mbgen.actors.actor import run_actor
from mbgen.actors.evaluator import run_evaluator
from mbgen.launch.run import plots  # noqa: F401  (imported now, not in the stop budget: matplotlib takes seconds)
from mbgen.launch.options import dump_toml
from mbgen.launch.run.monitor import RunMonitor
from mbgen.launch.run.results import session_wall_s, write_summary
from mbgen.learner.agents import encoder_shape, q_shape
from mbgen.learner.config import RunConfig
from mbgen.learner.dqn import BATCH_FIELDS
from mbgen.runtime.params import ParamBlock
from mbgen.learner.process import eval_snapshot_spec, next_cut, run_learner
from mbgen.runtime.counters import DEAD, FINISHED, FREE, LIVE, PROCESS_SLOTS, RunCounters
from mbgen.runtime import checkpoints, reaper
from mbgen.runtime.lifecycle import REPRODUCIBLE_MATH_ENV, StopRequested, StopSignal, child_environment
from mbgen.runtime.logs import configure_logging, get_logger
from mbgen.runtime.wiring import (
    EVALUATOR_SLOT,
    FIRST_ACTOR_SLOT,
    LEARNER_SLOT,
    LOCAL_ACTOR_SLOTS,
    MODELSERVER_SLOT,
    REPLAY_SLOT,
    Wiring,
    actor_name,
)
from mbgen.runtime.security import LocalCredentials, private_directory
from mbgen.replay.service import ServiceConfig, serve
from mbgen.runtime.shm import new_run_id, unlink_segment
from mbgen.runtime.slots import SlotQueue
from mbgen.replay.store import ReplayStore

EVAL_QUEUE_DEPTH = 4
STOP_BUDGET_S = 9.0  # from Ctrl-C to every process gone
STOP_CUT_S = 5.0  # of which the stop cut may take this long
ACTOR_DRAIN_S = 2.5  # and the actors' last acknowledgements this long
SPAWN = multiprocessing.get_context("spawn")


def imagined_batch_spec(cfg: RunConfig, width: int) -> dict:
    """One imagined batch: what a Q update reads, [P, B] transitions of Q-input width `width`."""
    P, B = cfg.members, cfg.batch_size
    shapes = {"obs": (P, B, width), "next_obs": (P, B, width)}
    return {k: (np.int64 if k == "action" else np.float32, shapes.get(k, (P, B))) for k in BATCH_FIELDS}


class RunFailed(RuntimeError):
    pass


class RestartNeeded(RuntimeError):
    """The learner or model server died: the run goes on from its newest complete checkpoint."""


class Supervisor:
    def __init__(
        self, cfg: RunConfig, run_dir: str, progress: bool = True, dataset: list | None = None, resume: bool = False
    ):
        if cfg.offline and dataset is None:
            raise ValueError("an offline run needs a dataset (one Transitions per member)")
        self.cfg = cfg
        self.dataset = dataset
        self.run_dir = os.path.abspath(run_dir)
        self.show_progress = progress
        self.resume = resume
        self.digest = cfg.digest()
        self.children: dict[str, multiprocessing.Process] = {}
        self.slots: dict[str, int] = {}
        self.launched: dict[str, float] = {}  # start time per child: its heartbeat grace begins there
        self.actor_steps: dict[int, tuple[int, int]] = {}  # slot -> (origin, last): its share of steps
        self.segments: list = []
        self.counters: RunCounters | None = None
        self.wiring: Wiring | None = None
        self.reaper: subprocess.Popen | None = None
        self.log = None
        self.outcome = "failed"
        self.reason = ""
        self.restarts: list[float] = []
        self.latest_cut = -1  # updates of the newest complete checkpoint cut
        self.reaped: set[str] = set()  # children whose exit was handled
        self.summary: dict = {}
        self.monitor: RunMonitor | None = None  # progress line, status.json, TensorBoard (launch/monitor.py)

    # -- public ----------------------------------------------------------------------
    def run(self) -> int:
        os.makedirs(os.path.join(self.run_dir, "checkpoints"), exist_ok=True)
        config_path = os.path.join(self.run_dir, "config.toml")
        if not self.resume:
            with open(config_path, "w") as f:
                f.write(dump_toml(self.cfg.to_dict()))
        configure_logging("supervisor", os.path.join(self.run_dir, "events.jsonl"))
        self.log = get_logger()
        stop = StopSignal().install()
        self.started = time.time()
        cut = self.newest_cut() if self.resume else None
        try:
            while True:
                try:
                    self.start_session(cut)
                    self.watch()
                    self.outcome = "completed"
                    break
                except RestartNeeded as why:
                    self.restart_budget(str(why))
                    self.stop_children(stop_cut=False)
                    self.teardown()
                    cut = self.newest_cut(required=False)
                    self.announce("run_restarting", reason=str(why), from_updates=cut and checkpoints.cut_updates(cut))
        except StopRequested:
            self.outcome = "interrupted"
            self.reason = f"signal {stop.signum}"
        except RunFailed as error:
            self.outcome, self.reason = "failed", str(error)
        except Exception as error:  # a bug of ours: still clean up
            self.outcome, self.reason = "failed", f"{type(error).__name__}: {error}"
            self.log.exception("supervisor_error")
        finally:
            with stop.deferred():
                self.stop_children(stop_cut=self.outcome != "completed")
                self.finish()
        if self.outcome == "completed":
            return 0
        return 128 + stop.signum if self.outcome == "interrupted" and stop.signum else 1

    def announce(self, event: str, **fields) -> None:
        """An event that the person at the terminal should see as well."""
        self.log.warning(event, **fields)

    # -- sessions --------------------------------------------------------------------
    def start_session(self, cut: str | None) -> None:
        cfg = self.cfg
        socket_dir = private_directory()
        self.wiring = Wiring(
            run_id=new_run_id(),
            run_dir=self.run_dir,
            socket_dir=socket_dir,
            resume_from=cut or "",
            elapsed_before=session_wall_s(os.path.join(self.run_dir, "events.jsonl")),
        )
        self.start_reaper()
        self.credentials = LocalCredentials(self.wiring.credentials)
        env = envs.make(cfg.env, 1, 0, **cfg.env_params)
        self.obs_dim, self.num_actions, self.reward_range = env.obs_dim, env.num_actions, env.reward_range
        self.create_segments(cut)
        self.start_children(cut)
        if cut:
            self.forget_cuts_after(cut)

    def start_reaper(self) -> None:
        self.reaper = subprocess.Popen(
            [sys.executable, "-m", "mbgen.runtime.reaper", str(os.getpid()), self.wiring.socket_dir],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )

    def update_reaper(self) -> None:
        pids = [p.pid for p in self.children.values() if p.pid is not None]
        reaper.write_state(self.wiring.socket_dir, pids, self.wiring.all_segments())

    def create_segments(self, cut: str | None) -> None:
        cfg, w = self.cfg, self.wiring
        q_numel = cfg.members * q_shape(cfg, self.obs_dim, self.num_actions).numel
        enc = encoder_shape(cfg, self.obs_dim)
        enc_numel = cfg.members * enc.numel if enc else 0
        self.segments.append(ParamBlock.create(w.q_params, q_numel))
        if enc is not None:
            self.segments.append(ParamBlock.create(w.model_params, enc_numel))
        self.segments.append(SlotQueue.create(w.eval_queue, EVAL_QUEUE_DEPTH, eval_snapshot_spec(q_numel, enc_numel)))
        if cfg.spec.model_server:
            width = cfg.spec.q_input.width(cfg, self.obs_dim)
            self.segments.append(SlotQueue.create(w.imagined, cfg.queue_depth, imagined_batch_spec(cfg, width)))
        capacity = max(len(d) for d in self.dataset) if cfg.offline else cfg.capacity
        store = ReplayStore.create(w.store, cfg.members, self.obs_dim, self.num_actions, capacity)
        self.segments.append(store)
        self.counters = c = RunCounters.create(w.counters, cfg.members)
        self.update_reaper()
        if cut:
            self.restore_segments(cut, store)
        else:
            c.cut_id = -1
            c.actor_cut[:] = -1
            c.part_done[:] = -1
            c.cut_at = next_cut(0, cfg.checkpoint_period, cfg.total_updates)
        if cfg.offline:
            self.load_dataset(store)

    def restore_segments(self, cut: str, store: ReplayStore) -> None:
        """The store and counters as the cut's replay part holds them, then the cut's own counts."""
        c, part = self.counters, checkpoints.read_part(cut, "replay")
        for k, array in store.segment.arrays.items():
            array[...] = part[f"store.{k}"]
        for k, array in c.segment.arrays.items():
            array[...] = part[f"counters.{k}"]
        u = checkpoints.cut_updates(cut)
        c.updates = u
        if self.cfg.spec.model_server:
            c.model_updates = int(checkpoints.read_part(cut, "modelserver")["done"])
        c.heartbeat[:] = 0
        c.part_done[:] = u
        c.actor_cut[:LOCAL_ACTOR_SLOTS] = np.where(c.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE, u, -1)
        c.cut_id, c.cut_at = u, next_cut(u, self.cfg.checkpoint_period, self.cfg.total_updates)
        c.stop_requested, c.draining, c.inserts_paused_since = False, False, 0.0

    def load_dataset(self, store: ReplayStore) -> None:
        """Offline: one store partition per member, holding that member's dataset."""
        cfg, c = self.cfg, self.counters
        if len(self.dataset) != cfg.members:
            raise ValueError(f"dataset: one Transitions per member expected, got {len(self.dataset)} for {cfg.members}")
        for m, data in enumerate(self.dataset):
            store.add(m, data.obs, data.action, data.reward, data.next_obs, data.terminal)
            c.stored[m] = len(data)

    def start_children(self, cut: str | None) -> None:
        """Online: the replay service first, then everyone else. Offline: the learner and model server only."""
        cfg = self.cfg
        if not cfg.offline:
            self.start_replay()
        self.spawn("learner", LEARNER_SLOT, run_learner, cfg.to_dict(), self.wiring_dict())
        if cfg.spec.model_server:
            from mbgen.modelserver.process import run_modelserver

            self.spawn("modelserver", MODELSERVER_SLOT, run_modelserver, cfg.to_dict(), self.wiring_dict())
        if not cfg.offline:
            self.spawn("evaluator", EVALUATOR_SLOT, run_evaluator, cfg.to_dict(), self.wiring_dict())
            if cut:
                live = np.flatnonzero(self.counters.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE).tolist()
                for slot in live:
                    self.start_actor(slot, None)  # its part holds its share and where it was
            else:
                share = cfg.steps // (cfg.actors * cfg.envs_per_actor)
                for slot in range(cfg.actors):
                    self.start_actor(slot, (0, share))
        self.log.info(
            "run_started",
            run_dir=self.run_dir,
            run_id=self.wiring.run_id,
            agent=cfg.agent,
            env=cfg.env,
            members=cfg.members,
            steps=cfg.steps,
            offline=cfg.offline,
            resumed_from=checkpoints.cut_updates(cut) if cut else None,
            processes=list(self.children),
        )

    def wiring_dict(self) -> dict:
        return dataclasses.asdict(self.wiring)

    def start_replay(self) -> None:
        cfg, w = self.cfg, self.wiring
        service = ServiceConfig(
            run_id=w.run_id,
            endpoint=w.ingest,
            credentials=w.credentials,
            members=cfg.members,
            obs_dim=self.obs_dim,
            num_actions=self.num_actions,
            reward_range=self.reward_range,
            capacity=cfg.capacity,
            ratio=dataclasses.asdict(cfg.ratio_policy()),
            owns_memory=False,
            bell=w.bell("replay"),
            ring_on_insert=[w.bell("learner")] + ([w.bell("modelserver")] if cfg.spec.model_server else []),
            remote_endpoint=cfg.remote_endpoint or None,
            keys_dir=cfg.keys or None,
            run_info={"config": cfg.actor_view(), "param_endpoint": cfg.param_endpoint},
            checkpoints=w.checkpoints,
            log_path=w.events,
            managed=True,
            stall_warning_s=cfg.stall_warning_s,
        )
        ready = SPAWN.Event()
        self.spawn("replay", REPLAY_SLOT, serve, service.to_dict(), ready)
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            self.check_replay_started()
            if time.monotonic() > deadline:
                raise RunFailed("the replay service did not start within 60 s")

    def check_replay_started(self) -> None:
        process = self.children["replay"]
        if process.exitcode is not None:
            raise RunFailed(f"the replay service (pid {process.pid}) failed to start: {describe_exit(process)}")

    def start_actor(self, slot: int, steps: tuple[int, int] | None) -> None:
        """A local actor in `slot` doing steps [first, last) (None: as its checkpoint part says)."""
        self.credentials.issue(actor_name(slot))
        self.counters.slot_state[slot] = LIVE
        if steps is not None:
            self.actor_steps[slot] = steps
        else:
            part = checkpoints.read_part(self.wiring.resume_from, actor_name(slot))
            self.actor_steps[slot] = (int(part["origin"]), int(part["last"]))
        wiring = self.wiring_dict()
        if steps is not None:
            wiring["resume_from"] = ""  # a new actor (or a replacement) starts afresh
        self.spawn(actor_name(slot), FIRST_ACTOR_SLOT + slot, run_actor, self.cfg.to_dict(), wiring, slot, steps)

    def spawn(self, name: str, heartbeat_slot: int, target, *args) -> None:
        process = SPAWN.Process(target=target, args=args, name=f"mbgen-{name}")
        with child_environment(REPRODUCIBLE_MATH_ENV if self.cfg.lockstep else {}):
            process.start()
        self.children[name] = process
        self.slots[name] = heartbeat_slot
        self.launched[name] = time.time()
        self.update_reaper()

    # -- watch -----------------------------------------------------------------------
    def watch(self) -> None:
        cfg = self.cfg
        self.monitor = RunMonitor(cfg, self.run_dir, progress=self.show_progress)
        while True:
            alive = [p.sentinel for p in self.children.values() if p.exitcode is None]
            multiprocessing.connection.wait(alive, timeout=0.5)
            self.handle_exits()
            self.check_steps_remain()
            self.assemble_cuts()
            steps = self.counters.updates if cfg.offline else self.counters.min_inserts()
            self.monitor.update(steps, self.counters.updates, self.process_health(), self.counters.accounting())
            if self.finished():
                return
            self.check_heartbeats()

    def check_steps_remain(self) -> None:
        """Local actors that all finished short of the step budget leave the learner waiting forever:
        say so instead (a share miscounted, or steps lost for good)."""
        cfg = self.cfg
        if cfg.offline or cfg.remote_endpoint or (self.counters.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE).any():
            return
        stored = self.counters.min_inserts()
        if stored < cfg.steps and self.counters.updates < cfg.total_updates:
            raise RunFailed(
                f"every actor finished, but only {stored:,} of {cfg.steps:,} env steps per member were stored"
            )

    def finished(self) -> bool:
        """The learner did every update, every point is evaluated, every local actor is done."""
        work = [n for n in self.children if n != "replay" and not n.startswith("actor")]
        if any(self.children[n].exitcode != 0 for n in work):
            return False
        return not (self.counters.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE).any()

    def handle_exits(self) -> None:
        for name, process in list(self.children.items()):
            if process.exitcode is None or name in self.reaped:
                continue
            self.reaped.add(name)
            if name.startswith("actor"):
                slot = int(name[len("actor") :])
                if process.exitcode == 0:
                    self.counters.slot_state[slot] = FINISHED
                else:
                    self.replace_actor(slot, process)
            elif process.exitcode == 0 and name != "replay":
                continue  # finished its work
            elif name == "replay":
                self.restart_in_place("replay", process, self.start_replay)
            elif name == "evaluator":
                self.restart_in_place(
                    "evaluator",
                    process,
                    lambda: self.spawn(
                        "evaluator", EVALUATOR_SLOT, run_evaluator, self.cfg.to_dict(), self.wiring_dict()
                    ),
                )
            else:
                raise RestartNeeded(f"{name} (pid {process.pid}) stopped unexpectedly: {describe_exit(process)}")

    def restart_in_place(self, name: str, process, start) -> None:
        self.announce("process_restarted", process=name, pid=process.pid, how=describe_exit(process))
        del self.children[name]
        self.reaped.discard(name)
        start()

    def replace_actor(self, slot: int, process) -> None:
        """A dead actor's slot is retired; a new actor in a new slot does the rest of its share."""
        c = self.counters
        c.slot_state[slot] = DEAD
        # Stored steps of a share are a prefix of it (messages are stored in order, duplicates dropped),
        # counted over every session of the run: the replacement starts where that prefix ends.
        origin, last = self.actor_steps[slot]
        first = origin + int(c.stored_by_actor[slot].min()) // self.cfg.envs_per_actor
        free = [s for s in range(LOCAL_ACTOR_SLOTS) if c.slot_state[s] == FREE and actor_name(s) not in self.children]
        if not free:
            raise RunFailed(f"actor{slot} died and no actor slot is left for a replacement")
        new = free[0]
        self.announce(
            "actor_replaced",
            dead=actor_name(slot),
            pid=process.pid,
            how=describe_exit(process),
            replacement=actor_name(new),
            steps_left=last - first,
        )
        self.start_actor(new, (first, last))

    def check_heartbeats(self) -> None:
        now = time.time()
        for name, process in self.children.items():
            if process.exitcode is not None:
                continue
            last = max(float(self.counters.heartbeat[self.slots[name]]), self.launched[name])
            if now - last > self.cfg.heartbeat_timeout_s:
                raise RunFailed(f"{name} (pid {process.pid}) showed no sign of life for {now - last:.0f} s")

    def restart_budget(self, why: str) -> None:
        now = time.time()
        self.restarts = [t for t in self.restarts if now - t < self.cfg.restart_window_s] + [now]
        if len(self.restarts) > self.cfg.max_restarts:
            raise RunFailed(
                f"{why}; {self.cfg.max_restarts} automatic restarts within {self.cfg.restart_window_s:.0f} s are used "
                f"up: the run stopped, resume it with `mbgen run --resume {self.run_dir}`"
            )

    # -- checkpoint cuts --------------------------------------------------------------
    def required_parts(self, cut: str) -> list[str]:
        """The parts a cut needs: learner, replay, model server, and every actor the replay part saw live."""
        names = ["learner", "replay"] + (["modelserver"] if self.cfg.spec.model_server else [])
        return names + [actor_name(s) for s in checkpoints.part_meta(cut, "replay")["live_actors"]]

    def verify_cut(self, cut: str) -> dict[str, dict]:
        """Every part of a cut, verified; raises CheckpointError naming what is wrong."""
        for name in ("learner", "replay"):
            if not checkpoints.has_part(cut, name):
                raise checkpoints.CheckpointError(f"{cut}: part {name} is missing")
        if checkpoints.part_meta(cut, "learner").get("config") != self.digest:
            raise checkpoints.CheckpointError(f"{cut} was written by a run with another configuration")
        names = self.required_parts(cut)
        missing = [n for n in names if not checkpoints.has_part(cut, n)]
        if missing:
            raise checkpoints.CheckpointError(f"{cut}: part {missing[0]} is missing")
        return {name: checkpoints.verify_part(cut, name) for name in names}

    def assemble_cuts(self) -> None:
        """Give every newly complete cut its manifest, then delete the older ones."""
        if self.cfg.offline:
            return
        for cut in checkpoints.list_cuts(self.wiring.checkpoints):
            u = checkpoints.cut_updates(cut)
            if u <= self.latest_cut or not checkpoints.has_part(cut, "replay"):
                continue
            try:
                parts = self.verify_cut(cut)
            except checkpoints.CheckpointError:
                continue  # parts still being written
            checkpoints.write_manifest(cut, parts, {"config": self.digest})
            self.latest_cut = u
            self.log.info("checkpoint", updates=u, bytes=sum(p["bytes"] for p in parts.values()), parts=len(parts))
            for older in checkpoints.list_cuts(self.wiring.checkpoints):
                if checkpoints.cut_updates(older) < u:
                    shutil.rmtree(older, ignore_errors=True)

    def newest_cut(self, required: bool = True) -> str | None:
        """The newest cut whose parts all verify (raises, naming why, when `required` and there is none)."""
        root = os.path.join(self.run_dir, "checkpoints")
        problems = []
        for cut in reversed(checkpoints.list_cuts(root)):
            try:
                self.verify_cut(cut)
                return cut
            except checkpoints.CheckpointError as error:
                problems.append(str(error))
        if required:
            detail = "; ".join(problems) if problems else f"no checkpoint in {root}"
            raise RunFailed(f"cannot resume {self.run_dir}: {detail}")
        return None

    def forget_cuts_after(self, cut: str) -> None:
        """Cuts newer than the one resumed from belong to a history that did not happen: remove them."""
        u = checkpoints.cut_updates(cut)
        for other in checkpoints.list_cuts(self.wiring.checkpoints):
            if checkpoints.cut_updates(other) > u:
                shutil.rmtree(other, ignore_errors=True)
        self.latest_cut = u

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
    def stop_children(self, stop_cut: bool) -> None:
        """A stop cut if the learner can still make one, the actors' last acknowledgements, then everyone."""
        deadline = time.monotonic() + STOP_BUDGET_S
        c = self.counters
        if c is not None and self.children:
            c.draining = True
            learner = self.children.get("learner")
            if stop_cut and not self.cfg.offline and learner is not None and learner.exitcode is None:
                c.stop_requested = True
                self.ring_everyone()
                cut_deadline = time.monotonic() + STOP_CUT_S
                while time.monotonic() < cut_deadline and c.cut_id < c.cut_at:
                    self.wait_children(0.1)
                stop_at = c.cut_at
                while time.monotonic() < cut_deadline and self.latest_cut < stop_at:
                    self.wait_children(0.1)
                    self.assemble_cuts_quietly()
                if self.latest_cut < stop_at:
                    self.log.warning("stop_cut_incomplete", updates=stop_at, kept=self.latest_cut)
            actors = [p for n, p in self.children.items() if n.startswith("actor")]
            self.terminate(actors, min(deadline, time.monotonic() + ACTOR_DRAIN_S))
        self.terminate(list(self.children.values()), deadline)

    def assemble_cuts_quietly(self) -> None:
        try:
            self.assemble_cuts()
        except (OSError, ValueError) as error:
            self.log.warning("checkpoint_assembly_failed", error=str(error))

    def ring_everyone(self) -> None:
        import zmq

        from mbgen.runtime.doorbell import Ringer

        ctx = zmq.Context()
        owners = ["learner", "modelserver", "evaluator", "replay"] + [n for n in self.children if n.startswith("actor")]
        ringer = Ringer(ctx, [self.wiring.bell(o) for o in owners])
        ringer.ring()
        ringer.close()
        ctx.term()

    def wait_children(self, timeout: float) -> None:
        alive = [p.sentinel for p in self.children.values() if p.exitcode is None]
        if alive:
            multiprocessing.connection.wait(alive, timeout=timeout)

    def terminate(self, processes: list, deadline: float) -> None:
        """SIGTERM each, then SIGKILL what has not exited by `deadline`."""
        for process in processes:
            if process.exitcode is None:
                try:
                    os.kill(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                self.log.warning("killing", process=process.name, pid=process.pid)
                process.kill()
                process.join()

    def teardown(self) -> None:
        """Release this session's shared memory and private directory (the run directory stays)."""
        for segment in self.segments:
            segment.close()
        self.segments = []
        if self.counters is not None:
            self.counters.close()
            self.counters = None
        if self.wiring is not None:
            removed = [name for name in self.wiring.all_segments() if unlink_segment(name)]
            if removed:
                self.log.warning("unlinked_leftovers", segments=removed)
            shutil.rmtree(self.wiring.socket_dir, ignore_errors=True)  # the reaper then has nothing to do
        if self.reaper is not None:
            self.reaper.kill()
            self.reaper.wait()
            self.reaper = None
        self.children, self.reaped, self.actor_steps = {}, set(), {}

    def finish(self) -> None:
        summary = write_summary(
            self.run_dir, self.cfg, self.counters, self.started, self.outcome, self.reason, self.restarts
        )
        if self.monitor is not None:  # before the counters close: it reads the last heartbeats
            self.monitor.finish(self.outcome, summary, self.process_health(), summary["transitions"])
        self.teardown()
        self.summary = summary
        self.log.info("run_finished", outcome=self.outcome, reason=self.reason, wall_s=summary["throughput"]["wall_s"])


def describe_exit(process) -> str:
    code = process.exitcode
    if code is None:
        return "still running"
    return f"exit code {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


assert PROCESS_SLOTS >= FIRST_ACTOR_SLOT + LOCAL_ACTOR_SLOTS
