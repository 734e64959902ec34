"""The supervisor: starts a run's processes, heals them, checkpoints them, stops them, always cleans up.

Start. Everything that must outlive one process is the supervisor's: the
private socket directory (mode 0700: every ipc endpoint and the local actors'
per-run tokens), and every shared-memory segment (replay store, counters,
parameter blocks, queues). Then the replay service, the learner, the model
server, the evaluator and the actors. Offline (`cfg.run.offline`) the supervisor
fills the store with the dataset and starts only the learner and model server.
A resumed run (`resume=True`, or an automatic restart) first restores the
store and counters from the newest complete checkpoint cut, and every process
restores its own part (runtime/checkpoints.py). The process table
(launch/run/processes.py) holds the children, the checkpoint keeper
(launch/run/keeper.py) the cuts, launch/run/summary.py writes what the run leaves.

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
  - a process whose heartbeat stops (a hang, a SIGSTOP) is killed at
    `heartbeat_timeout_s` and then healed as a crash is; at half the timeout
    an event and a terminal line say who is silent.
Every restart is an event and a line on the terminal. Complete cuts get a
manifest; the two newest complete ones are kept (launch/run/keeper.py).

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
import os
import shutil
import subprocess
import sys
import time

import numpy as np
from mbgen.actors.actor import run_actor
from mbgen.actors.evaluator import run_evaluator
from mbgen.launch.options import dump_toml
from mbgen.launch.run.keeper import CheckpointKeeper
from mbgen.launch.run.monitor import RunMonitor, history
from mbgen.launch.run.processes import SPAWN, ProcessTable, describe_exit
from mbgen.launch.run.results import session_wall_s
from mbgen.launch.run.summary import write_summary  # now, not in the stop budget: matplotlib takes seconds
from mbgen.learner.config import RunConfig
from mbgen.learner.process import eval_snapshot_spec, next_cut, run_learner
from mbgen.replay.service import ServiceConfig, serve
from mbgen.replay.store import ReplayStore
from mbgen.runtime import checkpoints, reaper
from mbgen.runtime.counters import DEAD, FINISHED, FREE, LIVE, RunCounters
from mbgen.runtime.lifecycle import REPRODUCIBLE_MATH_ENV, StopRequested, StopSignal
from mbgen.runtime.logs import configure_logging, get_logger
from mbgen.runtime.params import ParamBlock
from mbgen.runtime.roles import (
    EVALUATOR,
    LEARNER,
    LOCAL_ACTOR_SLOTS,
    MODELSERVER,
    REPLAY,
    SUPERVISOR,
    actor_name,
    actor_slot,
)
from mbgen.runtime.security import LocalCredentials, private_directory
from mbgen.runtime.shm import SharedMemoryFull, new_run_id, unlink_segment
from mbgen.runtime.slots import SlotQueue
from mbgen.runtime.wiring import Wiring

EVAL_QUEUE_DEPTH = 4
DISK_MARGIN_BYTES = 4 << 20  # room kept beside a checkpoint cut: events, metrics, status and the summary
STOP_BUDGET_S = 9.0  # from Ctrl-C to every process gone
STOP_CUT_S = 5.0  # of which the stop cut may take this long
ACTOR_DRAIN_S = 2.5  # and the actors' last acknowledgements this long
# counters a cut written before the per-slot accounting lacks (restored as zeros)
NEWER_COUNTERS = ("refused_by_actor", "duplicates_by_actor", "largest_message", "retired")


class RunFailed(RuntimeError):
    pass


class RestartNeeded(RuntimeError):
    """The learner or model server died: the run goes on from its newest complete checkpoint."""


class Supervisor:
    def __init__(
        self, cfg: RunConfig, run_dir: str, progress: bool = True, dataset: list | None = None, resume: bool = False
    ):
        if cfg.run.offline and dataset is None:
            raise ValueError("an offline run needs a dataset (one Transitions per member)")
        self.cfg = cfg
        self.dataset = dataset
        self.run_dir = os.path.abspath(run_dir)
        self.show_progress = progress
        self.resume = resume
        self.digest = cfg.digest()
        self.table: ProcessTable | None = None
        self.keeper = CheckpointKeeper(self.run_dir, self.digest, cfg.spec.model_server)
        self.actor_steps: dict[int, tuple[int, int]] = {}  # slot -> (origin, last): its share of steps
        self.segments: list = []
        self.counters: RunCounters | None = None
        self.wiring: Wiring | None = None
        self.reaper: subprocess.Popen | None = None
        self.log = None
        self.outcome = "failed"
        self.reason = ""
        self.restarts: list[float] = []
        self.summary: dict = {}
        self.monitor: RunMonitor | None = None  # progress line, status.json, TensorBoard (launch/monitor.py)
        self.history: dict[str, int] | None = None  # a resumed session: what earlier ones wrote (monitor.history)
        self.session_started = 0.0  # when this session began, before its setup
        self.silent_warned: set[str] = set()  # processes said to be silent (check_heartbeats)
        self.disk_full = False  # no stop cut then: it could not be written
        self.cluster = None  # RayActors of a run whose actors are on a Ray cluster (launch/run/cluster.py)

    # -- public ----------------------------------------------------------------------
    def run(self) -> int:
        os.makedirs(os.path.join(self.run_dir, "checkpoints"), exist_ok=True)
        config_path = os.path.join(self.run_dir, "config.toml")
        if not self.resume:
            with open(config_path, "w") as f:
                f.write(dump_toml(self.cfg.to_dict()))
        configure_logging(SUPERVISOR, os.path.join(self.run_dir, "events.jsonl"))
        self.log = get_logger()
        environment = REPRODUCIBLE_MATH_ENV if self.cfg.lockstep else {}
        self.table = ProcessTable(environment, self.update_reaper, self.log)
        if self.cfg.system.engine == "ray":
            from mbgen.launch.run.cluster import RayActors

            self.cluster = RayActors(self.cfg, self.log, self.announce)  # a refusal here is one line
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
                self.stop_children(stop_cut=self.outcome != "completed" and not self.disk_full)
                if self.outcome == "completed":
                    self.keeper.finish()
                self.finish()
        if self.outcome == "completed":
            return 0
        return 128 + stop.signum if self.outcome == "interrupted" and stop.signum else 1

    def announce(self, event: str, **fields) -> None:
        """An event that the person at the terminal should see as well."""
        self.log.warning(event, **fields)

    # -- sessions --------------------------------------------------------------------
    def start_session(self, cut: str | None) -> None:
        self.session_started = time.time()  # the session's clock starts with its setup (restoring a cut)
        socket_dir = private_directory()
        system = self.cfg.system
        remote = {k: getattr(system, k) for k in ("remote_endpoint", "param_endpoint", "keys")}
        if self.cluster is not None:
            remote = self.cluster.endpoints(socket_dir)
        self.wiring = Wiring(
            run_id=new_run_id(),
            run_dir=self.run_dir,
            socket_dir=socket_dir,
            resume_from=cut or "",
            elapsed_before=session_wall_s(os.path.join(self.run_dir, "events.jsonl")),
            **remote,
        )
        self.history = history(self.run_dir) if cut else None  # before any process of the session writes
        self.start_reaper()
        self.credentials = LocalCredentials(self.wiring.credentials)
        try:
            self.create_segments(cut)
        except SharedMemoryFull as error:
            raise RunFailed(error.strerror) from None
        self.check_disk_room()
        self.start_children(cut)
        if cut:
            self.keeper.forget_after(cut)

    def start_reaper(self) -> None:
        self.reaper = subprocess.Popen(
            [sys.executable, "-m", "mbgen.runtime.reaper", str(os.getpid()), self.wiring.socket_dir],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
        )

    def update_reaper(self, pids: list[int]) -> None:
        reaper.write_state(self.wiring.socket_dir, pids, self.wiring.all_segments())

    def create_segments(self, cut: str | None) -> None:
        cfg, w, env = self.cfg, self.wiring, self.cfg.env_spec
        q_numel = cfg.members * cfg.q_shape().numel
        model_numel = cfg.members * cfg.actor_model_numel()
        self.update_reaper(self.table.pids())  # the reaper knows every name before the first exists
        self.segments.append(ParamBlock.create(w.q_params, q_numel))
        if model_numel:
            self.segments.append(ParamBlock.create(w.model_params, model_numel))
        self.segments.append(SlotQueue.create(w.eval_queue, EVAL_QUEUE_DEPTH, eval_snapshot_spec(q_numel, model_numel)))
        if cfg.spec.model_server:  # the model server's batch per update, as the agent's training declares it
            spec = cfg.spec.trains_on.batch_spec(cfg)
            self.segments.append(SlotQueue.create(w.model_batches, cfg.system.queue_depth, spec))
        capacity = max(len(d) for d in self.dataset) if cfg.run.offline else cfg.learning.capacity
        store = ReplayStore.create(w.store, cfg.members, env.obs_dim, env.num_actions, capacity)
        self.segments.append(store)
        self.counters = c = RunCounters.create(w.counters, cfg.members)
        if cut:
            self.restore_segments(cut, store)
        else:
            c.cut_id = -1
            c.actor_cut[:] = -1
            c.part_done[:] = -1
            c.cut_at = next_cut(0, cfg.system.checkpoint_period, cfg.total_updates)
        if cfg.run.offline:
            self.load_dataset(store)

    def restore_segments(self, cut: str, store: ReplayStore) -> None:
        """The store and counters as the cut's replay part holds them, then the cut's own counts."""
        c, part = self.counters, checkpoints.read_part(cut, REPLAY)
        for k, array in store.segment.arrays.items():
            array[...] = part[f"store.{k}"]
        for k, array in c.segment.arrays.items():
            if f"counters.{k}" in part or k not in NEWER_COUNTERS:
                array[...] = part[f"counters.{k}"]
        u = checkpoints.cut_updates(cut)
        c.updates = u
        if self.cfg.spec.model_server:
            c.model_updates = int(checkpoints.read_part(cut, MODELSERVER)["done"])
        c.heartbeat[:] = 0
        c.part_done[:] = u
        c.actor_cut[:LOCAL_ACTOR_SLOTS] = np.where(c.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE, u, -1)
        c.cut_id, c.cut_at = u, next_cut(u, self.cfg.system.checkpoint_period, self.cfg.total_updates)
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
        if not cfg.run.offline:
            self.start_replay()
        self.table.spawn(LEARNER, run_learner, cfg.to_dict(), self.wiring_dict())
        if cfg.spec.model_server:
            from mbgen.modelserver.process import run_modelserver

            self.table.spawn(MODELSERVER, run_modelserver, cfg.to_dict(), self.wiring_dict())
        if not cfg.run.offline:
            self.start_evaluator()
            if self.cluster is not None:
                self.on_cluster(self.cluster.place, self.counters.min_inserts())
            elif cut:
                live = np.flatnonzero(self.counters.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE).tolist()
                for slot in live:
                    self.start_actor(slot, None)  # its part holds its share and where it was
            else:
                share = cfg.run.steps // (cfg.system.actors * cfg.system.envs_per_actor)
                for slot in range(cfg.system.actors):
                    self.start_actor(slot, (0, share))
        self.log.info(
            "run_started",
            run_dir=self.run_dir,
            run_id=self.wiring.run_id,
            agent=cfg.run.agent,
            env=cfg.run.env,
            members=cfg.members,
            steps=cfg.run.steps,
            offline=cfg.run.offline,
            resumed_from=checkpoints.cut_updates(cut) if cut else None,
            processes=list(self.table.children),
        )

    def wiring_dict(self) -> dict:
        return dataclasses.asdict(self.wiring)

    def start_evaluator(self) -> None:
        self.table.spawn(EVALUATOR, run_evaluator, self.cfg.to_dict(), self.wiring_dict())

    def start_replay(self) -> None:
        cfg, w, env = self.cfg, self.wiring, self.cfg.env_spec
        service = ServiceConfig(
            run_id=w.run_id,
            endpoint=w.ingest,
            credentials=w.credentials,
            members=cfg.members,
            obs_dim=env.obs_dim,
            num_actions=env.num_actions,
            reward_range=env.reward_range,
            capacity=cfg.learning.capacity,
            ratio=dataclasses.asdict(cfg.ratio_policy()),
            owns_memory=False,
            bell=w.bell(REPLAY),
            ring_on_insert=[w.bell(LEARNER)] + ([w.bell(MODELSERVER)] if cfg.spec.model_server else []),
            remote_endpoint=w.remote_endpoint or None,
            keys_dir=w.keys or None,
            run_info={"config": cfg.actor_view(), "param_endpoint": w.param_endpoint},
            checkpoints=w.checkpoints,
            log_path=w.events,
            managed=True,
            stall_warning_s=cfg.system.stall_warning_s,
        )
        ready = SPAWN.Event()
        process = self.table.spawn(REPLAY, serve, service.to_dict(), ready)
        deadline = time.monotonic() + 60
        while not ready.wait(0.1):
            if process.exitcode is not None:
                raise RunFailed(f"the replay service (pid {process.pid}) failed to start: {describe_exit(process)}")
            if time.monotonic() > deadline:
                raise RunFailed("the replay service did not start within 60 s")

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
        self.table.spawn(actor_name(slot), run_actor, self.cfg.to_dict(), wiring, slot, steps)

    # -- watch -----------------------------------------------------------------------
    def watch(self) -> None:
        cfg = self.cfg
        if self.monitor is not None:  # an automatic restart: the last session's monitor
            self.monitor.close()
        self.monitor = RunMonitor(
            cfg,
            self.run_dir,
            progress=self.show_progress,
            before=self.history,
            elapsed_before=self.wiring.elapsed_before,
            started=self.session_started,
        )
        while True:
            self.table.wait(0.5)
            self.handle_exits()
            self.check_steps_remain()
            self.check_disk_room()
            if not cfg.run.offline:
                self.keeper.assemble()
            if self.cluster is not None:
                self.on_cluster(self.cluster.watch, self.counters)
            steps = self.counters.updates if cfg.run.offline else self.counters.min_inserts()
            self.monitor.update(steps, self.counters.updates, self.table.health(self.counters), self.counters.accounting())
            if self.finished():
                return
            self.check_heartbeats()

    def on_cluster(self, step, *args) -> None:
        """A step of the actors on the cluster (placing, watching); what stops it stops the run."""
        from mbgen.launch.run.cluster import ClusterFailed

        try:
            step(*args)
        except ClusterFailed as error:
            raise RunFailed(str(error)) from None

    def check_steps_remain(self) -> None:
        """Local actors that all finished short of the step budget leave the learner waiting forever:
        say so instead (a share miscounted, or steps lost for good)."""
        cfg = self.cfg
        if cfg.run.offline or cfg.system.remote_endpoint or (self.counters.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE).any():
            return
        if self.cluster is not None and self.cluster.running():
            return
        stored = self.counters.min_inserts()
        if stored < cfg.run.steps and self.counters.updates < cfg.total_updates:
            raise RunFailed(
                f"every actor finished, but only {stored:,} of {cfg.run.steps:,} env steps per member were stored"
            )

    def finished(self) -> bool:
        """The learner did every update, every point is evaluated, every local actor is done. Actors on a
        cluster are not waited for: with the learner gone no parameters reach them (a replacement still
        starting, or one finishing the last steps the tolerance let the learner do without); they are
        stopped with the run."""
        children = self.table.children
        work = [n for n in children if n != REPLAY and actor_slot(n) is None]
        if any(children[n].exitcode != 0 for n in work):
            return False
        return not (self.counters.slot_state[:LOCAL_ACTOR_SLOTS] == LIVE).any()

    def handle_exits(self) -> None:
        """What each exit means: an actor is done or replaced; the replay service and the evaluator are
        restarted in place; the learner or model server failing restarts the run from its newest cut."""
        restart_in_place = {REPLAY: self.start_replay, EVALUATOR: self.start_evaluator}
        for name, process in self.table.new_exits():
            slot = actor_slot(name)
            if slot is not None:
                if process.exitcode == 0:
                    self.counters.slot_state[slot] = FINISHED
                else:
                    self.replace_actor(slot, process)
            elif process.exitcode == 0 and name != REPLAY:
                continue  # finished its work
            elif name in restart_in_place:
                self.announce("process_restarted", process=name, process_pid=process.pid, how=describe_exit(process))
                self.table.forget(name)
                restart_in_place[name]()
            else:
                raise RestartNeeded(f"{name} (pid {process.pid}) stopped unexpectedly: {describe_exit(process)}")

    def replace_actor(self, slot: int, process) -> None:
        """A dead actor's slot is retired; a new actor in a new slot does the rest of its share."""
        c = self.counters
        c.slot_state[slot] = DEAD
        # Stored steps of a share are a prefix of it (messages are stored in order, duplicates dropped),
        # counted over every session of the run: the replacement starts where that prefix ends.
        origin, last = self.actor_steps[slot]
        first = origin + int(c.stored_by_actor[slot].min()) // self.cfg.system.envs_per_actor
        taken = self.table.children
        free = [s for s in range(LOCAL_ACTOR_SLOTS) if c.slot_state[s] == FREE and actor_name(s) not in taken]
        if not free:
            raise RunFailed(f"{actor_name(slot)} died and no actor slot is left for a replacement")
        new = free[0]
        self.announce(
            "actor_replaced",
            dead=actor_name(slot),
            dead_pid=process.pid,
            how=describe_exit(process),
            replacement=actor_name(new),
            steps_left=last - first,
        )
        self.start_actor(new, (first, last))

    def check_heartbeats(self) -> None:
        """A silent process is a hung one: warned about at half the timeout, killed at the timeout, so that
        its exit is healed as a crash is (handle_exits, on the next turn of the watch loop)."""
        timeout = self.cfg.system.heartbeat_timeout_s
        silence = self.table.silence(self.counters)
        for name in list(self.silent_warned):
            if silence.get(name, 0.0) < timeout / 2:
                self.silent_warned.discard(name)  # it came back
        for name, silent in silence.items():
            process = self.table.children[name]
            if silent > timeout and process.exitcode is None:
                self.announce("process_hung", process=name, process_pid=process.pid, silent_s=round(silent, 1), action="killed")
                self.table.kill(name)
            elif silent > timeout / 2 and name not in self.silent_warned:
                self.silent_warned.add(name)
                self.announce("process_silent", process=name, process_pid=process.pid, silent_s=round(silent, 1),
                              killed_at_s=timeout)  # fmt: skip

    def check_disk_room(self) -> None:
        """Stop cleanly before a full disk stops the run messily: the next checkpoint cut (as large as the
        last one, or as the memory it saves before there is one) must fit under the run directory."""
        need = self.keeper.latest_bytes or self.cut_bytes_estimate()
        free = shutil.disk_usage(self.run_dir).free
        if free < need + DISK_MARGIN_BYTES:
            self.disk_full = True
            then = f"resume it with `mbgen run --resume {self.run_dir}`" if self.keeper.latest >= 0 else "start it again"
            raise RunFailed(
                f"disk full: {self.run_dir} has {free / 2**20:,.1f} MiB free, the next checkpoint needs about "
                f"{(need + DISK_MARGIN_BYTES) / 2**20:,.1f} MiB; free some space, then {then}"
            )

    def cut_bytes_estimate(self) -> int:
        """A cut before the first: the store and counters, and each parameter block about four times
        (online and target networks, the optimiser's two moments)."""
        saved = [s.segment.nbytes for s in self.segments if isinstance(s, ReplayStore)]
        params = [s.segment.nbytes for s in self.segments if isinstance(s, ParamBlock)]
        return sum(saved) + (self.counters.segment.nbytes if self.counters is not None else 0) + 4 * sum(params)

    def restart_budget(self, why: str) -> None:
        now = time.time()
        self.restarts = [t for t in self.restarts if now - t < self.cfg.system.restart_window_s] + [now]
        if len(self.restarts) > self.cfg.system.max_restarts:
            raise RunFailed(
                f"{why}; {self.cfg.system.max_restarts} automatic restarts within {self.cfg.system.restart_window_s:.0f} s are used "
                f"up: the run stopped, resume it with `mbgen run --resume {self.run_dir}`"
            )

    def newest_cut(self, required: bool = True) -> str | None:
        """The newest cut whose parts all verify (raises RunFailed, naming why, when `required` and none does)."""
        try:
            return self.keeper.newest(required)
        except checkpoints.CheckpointError as error:
            raise RunFailed(str(error)) from None

    # -- stop ------------------------------------------------------------------------
    def stop_children(self, stop_cut: bool) -> None:
        """A stop cut if the learner can still make one, the actors' last acknowledgements, then everyone."""
        deadline = time.monotonic() + STOP_BUDGET_S
        c, table = self.counters, self.table
        if self.cluster is not None:
            self.cluster.stop(c)  # first: an actor on the cluster needs nothing more from the run
        if table is None:
            return
        if c is not None and table.children:
            c.draining = True
            learner = table.children.get(LEARNER)
            if stop_cut and not self.cfg.run.offline and learner is not None and learner.exitcode is None:
                c.stop_requested = True
                self.ring_everyone()
                cut_deadline = time.monotonic() + STOP_CUT_S
                while time.monotonic() < cut_deadline and c.cut_id < c.cut_at:
                    table.wait(0.1)
                stop_at = c.cut_at
                while time.monotonic() < cut_deadline and self.keeper.latest < stop_at:
                    table.wait(0.1)
                    self.keeper.assemble_quietly()
                if self.keeper.latest < stop_at:
                    self.log.warning("stop_cut_incomplete", updates=stop_at, kept=self.keeper.latest)
            table.terminate(table.actors(), min(deadline, time.monotonic() + ACTOR_DRAIN_S))
        table.terminate(list(table.children), deadline)

    def ring_everyone(self) -> None:
        import zmq
        from mbgen.runtime.doorbell import Ringer

        ctx = zmq.Context()
        owners = [LEARNER, MODELSERVER, EVALUATOR, REPLAY] + self.table.actors()
        ringer = Ringer(ctx, [self.wiring.bell(o) for o in owners])
        ringer.ring()
        ringer.close()
        ctx.term()

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
        if self.table is not None:
            self.table.clear()
        self.actor_steps = {}

    def finish(self) -> None:
        summary = write_summary(
            self.run_dir, self.cfg, self.counters, self.started, self.outcome, self.reason, self.restarts, self.cluster
        )
        if self.monitor is not None:  # before the counters close: it reads the last heartbeats
            self.monitor.finish(self.outcome, summary, self.table.health(self.counters), summary["transitions"])
        self.teardown()
        self.summary = summary
        if self.cluster is not None:
            self.cluster.close()
        self.log.info("run_finished", outcome=self.outcome, reason=self.reason, wall_s=summary["throughput"]["wall_s"])
