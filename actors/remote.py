"""`mbgen actor --connect tcp://HOST:PORT --keys DIR`: an actor on another machine joins a run.

It says hello to the run's replay service (CurveZMQ-authenticated), receives the
run's configuration and its actor slot, subscribes to the parameters the learner
publishes, acts with the newest version it has, and streams its transitions
like a local actor. It contributes a local actor's share of steps (or the steps it is given), and
announces its claims before each message so the run's accounting reconciles
even if it dies. The same loop runs in a Ray actor (launch/run/cluster.py).
"""

from __future__ import annotations

import os
import socket

import numpy as np
import torch
import zmq
from mbgen.actors.acting import ActingPolicy
from mbgen.actors.actor import Actor
from mbgen.envs.seeding import derive_seed
from mbgen.learner.config import RunConfig
from mbgen.replay.client import ReplayClient, ReplayClosed, ReplayUnavailable
from mbgen.runtime.lifecycle import StopRequested, StopSignal
from mbgen.runtime.logs import configure_logging, get_logger
from mbgen.runtime.params import ParamSubscriber
from mbgen.runtime.security import ClientKeys

FIRST_PARAMS_TIMEOUT_S = 120.0


class RemoteParams:
    """Parameters received over ZeroMQ PUB/SUB; copies the newest version into the policy."""

    def __init__(self, ctx: zmq.Context, endpoint: str, keys: ClientKeys | None, policy: ActingPolicy):
        self.sub = ParamSubscriber(ctx, endpoint, keys)
        self.policy = policy
        self.versions: dict[str, int] = {}

    def refresh(self, timeout_ms: int = 0) -> None:
        self.sub.poll(timeout_ms)
        for name, store in (("q", self.policy.q_store), ("model", self.policy.model_store)):
            if store is None or name not in self.sub.newest:
                continue
            version, array = self.sub.newest[name]
            if self.versions.get(name) != version:
                store.flat.numpy()[:] = array  # the acting copy lives on the CPU
                self.versions[name] = version

    def ready(self) -> bool:
        needed = ["q"] + (["model"] if self.policy.model_store is not None else [])
        return all(n in self.versions for n in needed)

    def close(self) -> None:
        self.sub.close()


class Acting:
    """What a remote actor is doing, for whoever watches it from another thread (a Ray actor's
    `progress()`): its slot, the Q version it acts with, its steps and its claims per member."""

    def __init__(self):
        self.slot = -1
        self.q_version = -1
        self.steps = 0
        self.sent: list[int] = []


def act_remotely(
    connect: str,
    keys: ClientKeys,
    name: str,
    envs_per_member: int,
    steps: tuple[int, int] | None = None,
    acting: Acting | None = None,
) -> int:
    """Join the run at `connect` and act until its share is done (or `steps` [first, last) of it).

    Claims are announced before each message (the service records them; an announced message
    that never arrives is lost in flight), so a remote actor that dies mid-run is accounted for
    by what it had sent. Returns the number of transitions sent. Raises ReplayUnavailable,
    ReplayClosed (the run ended first) or ValueError (this run takes no remote actors)."""
    log = get_logger()
    acting = acting or Acting()
    ctx = zmq.Context()
    client = ReplayClient(connect, name, keys=keys, ctx=ctx)
    params = None
    try:
        welcome = client.hello(timeout_s=30)
        run, slot = welcome["run"], int(welcome["slot"])
        client.next_seq = int(welcome.get("first_seq", 0))  # a restart under the same name continues there
        acting.slot = slot
        cfg = RunConfig.from_dict(run["config"]).replace(envs_per_actor=envs_per_member)
        if cfg.lockstep:
            raise ValueError("this run is lock-step (tolerance 0): remote actors would break its reproducibility")
        if not run.get("param_endpoint"):
            raise ValueError("this run publishes no parameters for remote actors (start it with --param-endpoint)")
        log = log.bind(actor=name, slot=slot)
        policy = ActingPolicy(
            cfg,
            torch.Generator().manual_seed(derive_seed(cfg.member_seeds[0], "latent", slot)),
        )
        params = RemoteParams(ctx, run["param_endpoint"], keys, policy)
        log.info("remote_actor_joined", agent=cfg.run.agent, env=cfg.run.env, members=cfg.members)
        waited = 0
        while not params.ready():
            params.refresh(1000)
            waited += 1
            if waited > FIRST_PARAMS_TIMEOUT_S:
                raise ReplayUnavailable(f"no parameters from {run['param_endpoint']} within {FIRST_PARAMS_TIMEOUT_S}s")
        sent = np.zeros(cfg.members, np.int64)

        def refresh() -> None:
            params.refresh()
            acting.q_version = params.versions["q"]

        actor = Actor(cfg, slot, AnnouncingClient(client, sent), policy, refresh, sent, steps=steps)

        def count_steps() -> None:
            acting.steps, acting.sent = actor.step - actor.origin, sent.tolist()

        actor.heartbeat = count_steps
        try:
            actor.run()
        finally:
            count_steps()
        log.info("remote_actor_finished", sent=int(sent.sum()))
        return int(sent.sum())
    finally:
        if params is not None:
            params.close()
        client.close()
        ctx.term()


class AnnouncingClient:
    """A ReplayClient whose every message is preceded by the actor's claims, which already count it."""

    def __init__(self, client: ReplayClient, claims: np.ndarray):
        self.client, self.claims = client, claims

    def send(self, member: int, *arrays) -> int:
        self.client.announce(self.claims.tolist())
        return self.client.send(member, *arrays)

    def __getattr__(self, name: str):
        return getattr(self.client, name)


def run_remote_actor(connect: str, keys_dir: str | None, name: str | None, envs_per_member: int) -> int:
    """`mbgen actor --connect URL --keys DIR`: exit code 0 when its share is done or the run ended."""
    stop = StopSignal().install()
    configure_logging("remote-actor", None, echo="info")
    log = get_logger()
    if not keys_dir:
        raise ValueError("keys: a remote actor needs a key directory with server.key and actor.key_secret")
    keys = ClientKeys.load(keys_dir)
    try:
        act_remotely(connect, keys, name or f"{socket.gethostname()}-{os.getpid()}", envs_per_member)
        return 0
    except StopRequested:
        log.info("remote_actor_stopping")
        return stop.exit_code
    except ReplayClosed as error:
        log.info("run_ended", detail=str(error))
        return 0
    except ReplayUnavailable as error:
        log.error("replay_unavailable", error=str(error))
        return 1
