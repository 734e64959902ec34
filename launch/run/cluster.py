"""A run's actors on a Ray cluster (`mbgen run --engine ray --address HOST:PORT --remote-actors N`).

Ray is the control plane only. The supervisor, replay service, learner, model
server and evaluator run where the command runs; N Ray actors are placed on the
cluster through a placement group (one bundle of one CPU per actor, or of
`actors_per_node` CPUs holding that many; SPREAD or STRICT_SPREAD), and each runs
the acting loop of `mbgen actor --connect` (actors/remote.py): transitions go to
the replay service's CurveZMQ endpoint, parameters come from the learner's PUB
socket, never through Ray's object store. Ray's task arguments are plain strings,
bytes and ints.

Credentials are the run's own: the server key pair and one key pair per Ray actor
are made for the session, the public keys authorised in the run's private
directory on this machine (removed when the run ends), each secret key handed to
its actor as a task argument and never written anywhere.

Health: an actor is lost when Ray says it died (its node left, its process was
killed) or when, once acting, it shows no progress for `heartbeat_timeout_s`
while the replay service is reading (then it is killed). Its slot is marked DEAD, so what it
announced but the service never stored counts as lost in flight
(runtime/counters.py); a replacement (a new name, a new key) does the rest of
its share in the same placement bundle, which Ray moves to a live node when the
node left. Each loss is an event and a terminal line naming the node.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import zmq
import zmq.auth
from mbgen.actors.remote import Acting, act_remotely
from mbgen.learner.config import RunConfig
from mbgen.launch.raycluster import join_cluster
from mbgen.replay.client import ReplayClosed
from mbgen.runtime.counters import DEAD
from mbgen.runtime.logs import configure_logging
from mbgen.runtime.roles import REMOTE_ACTOR_SLOTS
from mbgen.runtime.security import AUTHORIZED, SERVER, ClientKeys

RAY_ACTOR_PREFIX = "ray"  # Ray actors are ray0, ray1, ... in the order they were started (replacements too)
PROGRESS_PERIOD_S = 1.0  # how often the driver asks each actor what it is doing
PLACEMENT_TIMEOUT_S = 120.0  # the placement group must be placed within this long
STRATEGIES = {"spread": "SPREAD", "strict_spread": "STRICT_SPREAD"}  # system.placement -> Ray's name


class ClusterFailed(RuntimeError):
    """The cluster cannot carry the run (its actors cannot be placed, no slot is left for a replacement)."""


class ClusterActor:
    """The body of each Ray actor (wrapped by `ray.remote` on the driver): one remote actor process."""

    def __init__(self):
        configure_logging("remote-actor", None, echo="warning")
        self.acting = Acting()

    def node(self) -> list[str]:
        """[Ray node id, IP address, host name] of the node this actor was placed on."""
        import ray

        return [ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address(), socket.gethostname()]

    def act(self, connect: str, server_public: bytes, public: bytes, secret: bytes, name: str, first: int, last: int,
            envs: int) -> int:  # fmt: skip
        """Act until steps [first, last) of the share are sent (or the run ends); the transitions sent."""
        keys = ClientKeys(public, secret, server_public)
        try:
            return act_remotely(connect, keys, name, envs, (first, last), self.acting)
        except ReplayClosed:
            return sum(self.acting.sent)

    def progress(self) -> list[int]:
        """[slot, Q version acted with, steps done, then the transitions it sent per member]."""
        a = self.acting
        return [a.slot, a.q_version, a.steps, *a.sent]


@dataclass
class Placed:
    """One Ray actor of the run."""

    name: str
    bundle: int
    steps: tuple[int, int]  # its share [first, last) of env steps
    handle: object
    done: object  # the ObjectRef of act()
    node: str = ""  # where it runs, once it said (or the placement group said)
    node_ip: str = ""
    where: object = None  # the pending ObjectRef of node()
    asked: object = None  # the pending ObjectRef of progress()
    asked_at: float = 0.0
    q_version: int = -1
    moved_at: float = 0.0  # when its steps last went up
    steps_done: int = 0
    sent: list[int] = field(default_factory=list)  # per member, as it last told (at most PROGRESS_PERIOD_S old)
    slot: int = -1
    state: str = "running"  # running | finished | lost


class RayActors:
    """The run's actors on the cluster: placed, watched, replaced; what each node did."""

    def __init__(self, cfg: RunConfig, log, announce):
        self.cfg, self.log, self.announce = cfg, log, announce
        self.ray = join_cluster(cfg.system.address)
        self.actor_class = self.ray.remote(ClusterActor)
        self.group = None
        self.placed: list[Placed] = []
        self.lag_samples: list[int] = []
        self.lost_nodes: list[str] = []
        self.started = 0
        self.keys_dir = ""
        self.server_public = b""
        self.connect = ""

    # -- a session ---------------------------------------------------------------------
    def endpoints(self, socket_dir: str) -> dict[str, str]:
        """The session's remote endpoints (system.remote_endpoint and param_endpoint, or free ports on this
        node's address) and its key directory in the run's private directory: the server key pair, and
        authorized/ for the actors' public keys."""
        system = self.cfg.system
        ip = self.ray.util.get_node_ip_address()
        self.connect = system.remote_endpoint or f"tcp://{ip}:{free_port(ip)}"
        params = system.param_endpoint or f"tcp://{ip}:{free_port(ip)}"
        self.keys_dir = os.path.join(socket_dir, "keys")
        os.makedirs(os.path.join(self.keys_dir, AUTHORIZED), mode=0o700)
        zmq.auth.create_certificates(self.keys_dir, SERVER)
        self.server_public = zmq.auth.load_certificate(os.path.join(self.keys_dir, f"{SERVER}.key"))[0]
        return {"remote_endpoint": self.connect, "param_endpoint": params, "keys": self.keys_dir}

    def place(self, stored: int) -> None:
        """The placement group, then one actor per share of the steps still to do (`stored`: per member,
        what a checkpoint cut already holds)."""
        from ray.util.placement_group import placement_group

        system = self.cfg.system
        per_bundle = system.actors_per_node or 1
        bundles = -(-system.remote_actors // per_bundle)
        self.group = placement_group([{"CPU": per_bundle}] * bundles, strategy=STRATEGIES[system.placement])
        ready, _ = self.ray.wait([self.group.ready()], timeout=PLACEMENT_TIMEOUT_S)
        if not ready:
            raise ClusterFailed(
                f"remote_actors: the cluster at {system.address} could not place {bundles} bundles of "
                f"{per_bundle} CPU ({system.placement}) within {PLACEMENT_TIMEOUT_S:.0f} s"
            )
        share = (self.cfg.run.steps - stored) // (system.remote_actors * system.envs_per_actor)
        for i in range(system.remote_actors):
            self.start(i // per_bundle, (0, share))
        self.log.info("remote_actors_placed", actors=system.remote_actors, bundles=bundles,
                      strategy=STRATEGIES[system.placement], nodes=self.bundle_nodes())  # fmt: skip

    def bundle_nodes(self) -> list[str]:
        from ray.util.placement_group import placement_group_table

        table = placement_group_table(self.group)
        return [table["bundles_to_node_id"].get(b, "") for b in range(len(table["bundles"]))]

    def start(self, bundle: int, steps: tuple[int, int]) -> Placed:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        name = f"{RAY_ACTOR_PREFIX}{self.started}"
        self.started += 1
        public, secret = zmq.curve_keypair()
        write_public_key(os.path.join(self.keys_dir, AUTHORIZED, f"{name}.key"), public)
        strategy = PlacementGroupSchedulingStrategy(placement_group=self.group, placement_group_bundle_index=bundle)
        handle = self.actor_class.options(
            num_cpus=1, max_concurrency=2, max_restarts=0, scheduling_strategy=strategy
        ).remote()
        done = handle.act.remote(
            self.connect, self.server_public, public, secret, name, steps[0], steps[1], self.cfg.system.envs_per_actor
        )
        # Where its bundle is now (it says itself once it runs: a replacement's bundle may be moving).
        placed = Placed(name, bundle, steps, handle, done, node=self.bundle_nodes()[bundle], where=handle.node.remote())
        self.placed.append(placed)
        return placed

    # -- watch -------------------------------------------------------------------------
    def running(self) -> bool:
        return any(p.state == "running" for p in self.placed)

    def watch(self, counters) -> None:
        """One turn of the supervisor's watch: finished, dead and silent actors; progress and lag."""
        ray, now = self.ray, time.monotonic()
        identities = counters.identities()
        for p in [p for p in self.placed if p.state == "running"]:
            p.slot = identities.get(f"key/{p.name}/{p.name}", -1)
            if p.where is not None and ray.wait([p.where], timeout=0)[0]:
                try:
                    node_id, p.node_ip, _ = ray.get(p.where)
                    p.node = node_id
                except Exception:  # died before saying: its bundle's node when it was started stands
                    pass
                p.where = None
            if ray.wait([p.done], timeout=0)[0]:
                try:
                    sent = ray.get(p.done)
                    p.state = "finished"
                    self.ask(p, counters.updates, wait=True)
                    p.steps_done = sent // E_of(self.cfg)
                except Exception as error:
                    self.lose(p, counters, why_lost(error))
                continue
            self.ask(p, counters.updates, wait=False)
            silent = now - p.moved_at  # counted once it acts: starting a Ray worker can take long on a busy node
            if p.steps_done and silent > self.cfg.system.heartbeat_timeout_s and not counters.inserts_paused_since:
                ray.kill(p.handle, no_restart=True)
                self.lose(p, counters, f"silent for {silent:.0f} s (killed)")

    def ask(self, p: Placed, updates: int, wait: bool) -> None:
        """Collect its answer to progress() if there is one (its lag: `updates`, the learner's Q version
        now, less the version it acts with), and ask again every PROGRESS_PERIOD_S."""
        ray = self.ray
        if p.asked is not None and (wait or ray.wait([p.asked], timeout=0)[0]):
            try:
                slot, version, steps, *sent = ray.get(p.asked, timeout=10)
            except Exception:  # it died meanwhile: what it said before stands
                slot, version, steps, sent = p.slot, p.q_version, p.steps_done, p.sent
            acting = steps != p.steps_done
            if acting:
                p.moved_at = time.monotonic()
                if version >= 0:  # a sample of the lag of the parameters it is acting with
                    self.lag_samples.append(max(0, updates - version))
            p.slot = slot if slot >= 0 else p.slot
            p.q_version, p.steps_done, p.sent = version, steps, sent or p.sent
            p.asked = None
        if p.state == "running" and p.asked is None and time.monotonic() - p.asked_at >= PROGRESS_PERIOD_S:
            p.asked, p.asked_at = p.handle.progress.remote(), time.monotonic()

    def lose(self, p: Placed, counters, why: str) -> None:
        """A dead actor: its slot DEAD (what it announced but was never stored is lost in flight), a
        replacement for the rest of its share in the same bundle (Ray moves the bundle off a dead node)."""
        p.state = "lost"
        p.where = None  # if it never said where it ran, its bundle's node when it was started stands
        E = self.cfg.system.envs_per_actor
        first = p.steps[0]
        if p.slot >= 0:
            counters.slot_state[p.slot] = DEAD
            first = p.steps[0] + int(counters.stored_by_actor[p.slot].min()) // E
        unstored = self.lost_in_flight(p, counters)
        node_alive = self.node_alive(p.node)
        if p.node and not node_alive and p.node not in self.lost_nodes:
            self.lost_nodes.append(p.node)
            self.announce("node_left", node=p.node, node_ip=p.node_ip)
        replacement = None
        if first < p.steps[1]:
            if self.started >= REMOTE_ACTOR_SLOTS:
                raise ClusterFailed(
                    f"{p.name} was lost ({why}) and all {REMOTE_ACTOR_SLOTS} remote actor slots of the run are used"
                )
            replacement = self.start(p.bundle, (first, p.steps[1]))
        self.announce(
            "remote_actor_lost",
            actor=p.name,
            slot=p.slot,
            node=p.node,
            node_ip=p.node_ip,
            node_left=bool(p.node) and not node_alive,
            why=why,
            unstored=unstored,  # not stored when it was lost: some may still arrive (summary.json: what never did)
            replacement=replacement.name if replacement else None,
            steps_left=p.steps[1] - first,
        )

    def unannounced(self, p: Placed, counters) -> int:
        """Transitions an actor told the driver (over Ray) it sent whose announcements never reached the
        service: they were in flight behind its messages when it died."""
        if p.slot < 0 or not p.sent:
            return 0
        return int(sum(max(0, told - int(known)) for told, known in zip(p.sent, counters.sent[p.slot])))

    def lost_in_flight(self, p: Placed, counters) -> int:
        """What a dead actor sent (as the service and the driver last heard) that was never stored."""
        if p.slot < 0:
            return 0
        announced = int((counters.sent[p.slot] - counters.stored_by_actor[p.slot]).clip(0).sum())
        return announced + self.unannounced(p, counters)

    def accounting(self, totals: dict[str, int], counters) -> dict[str, int]:
        """The run's transition totals with the claims only the driver heard: a dead actor's messages whose
        announcements died with them count as sent and lost in flight (as of its last progress answer,
        at most PROGRESS_PERIOD_S before it died, so a lower bound)."""
        extra = sum(self.unannounced(p, counters) for p in self.placed if p.state in ("lost", "stopped"))
        return {**totals, "sent": totals["sent"] + extra, "lost_in_flight": totals["lost_in_flight"] + extra}

    def node_alive(self, node: str) -> bool:
        return any(n["NodeID"] == node and n["Alive"] for n in self.ray.nodes())

    # -- what it did -------------------------------------------------------------------
    def nodes(self, counters) -> dict[str, dict[str, int]]:
        """Per node: the actors placed there, their env steps, transitions sent (claimed) and stored."""
        out: dict[str, dict[str, int]] = {}
        for p in self.placed:
            node = p.node or "unplaced"
            row = out.setdefault(node, {"actors": 0, "env_steps": 0, "sent": 0, "stored": 0})
            row["actors"] += 1
            sent = 0
            if p.slot >= 0 and counters is not None:
                unannounced = self.unannounced(p, counters) if p.state != "finished" else 0
                sent = int(counters.sent[p.slot].sum()) + unannounced
                row["sent"] += sent
                row["stored"] += int(counters.stored_by_actor[p.slot].sum())
            # Its last progress answer may be older than its last claim: at least what it sent was stepped.
            row["env_steps"] += max(p.steps_done * E_of(self.cfg), sent)
        return out

    def policy_lag(self) -> dict:
        """Q updates the remote actors' acting parameters trailed the learner by, over progress samples."""
        s = self.lag_samples
        if not s:
            return {"mean": None, "max": None, "samples": 0}
        return {"mean": sum(s) / len(s), "max": max(s), "samples": len(s)}

    def stop(self, counters) -> None:
        """Every actor still running killed (its slot DEAD: what it announced and was never stored is lost
        in flight), the placement group removed."""
        stopped = []
        for p in self.placed:
            if p.state == "running":
                self.ray.kill(p.handle, no_restart=True)
                p.state = "stopped"
                stopped.append(p.name)
                if p.slot >= 0 and counters is not None:
                    counters.slot_state[p.slot] = DEAD
        if stopped:
            self.log.info("remote_actors_stopped", actors=stopped)
        if self.group is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.group)
            self.group = None

    def close(self) -> None:
        self.ray.shutdown()


def E_of(cfg: RunConfig) -> int:
    """Environment steps of one actor step: a copy per member and per env of the actor."""
    return cfg.members * cfg.system.envs_per_actor


def why_lost(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def write_public_key(path: str, public: bytes) -> None:
    """An authorised public key as `zmq.auth.load_certificate` reads it."""
    with open(path, "w") as f:
        f.write(f'metadata\ncurve\n    public-key = "{public.decode("ascii")}"\n')
