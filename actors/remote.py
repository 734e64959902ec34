"""`mbgen actor --connect tcp://HOST:PORT --keys DIR`: an actor on another machine joins a run.

It says hello to the run's replay service (CurveZMQ-authenticated), receives the
run's configuration and its actor slot, subscribes to the parameters the learner
publishes, acts with the newest version it has, and streams its transitions
like a local actor. It contributes a local actor's share of steps, then reports
how many transitions it sent so the run's accounting can reconcile.
"""

from __future__ import annotations

import os
import socket
import time

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
REPORT_PERIOD_S = 5.0  # how often the run hears how much this actor sent
# A report waits behind the inserts the service has not read: while the rate limiter pauses
# inserts (a learner lagging on a busy machine) it reads nothing, so allow a long pause.
REPORT_TIMEOUT_S = 120.0


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


def run_remote_actor(connect: str, keys_dir: str | None, name: str | None, envs_per_member: int) -> int:
    stop = StopSignal().install()
    configure_logging("remote-actor", None, echo="info")
    log = get_logger()
    keys = ClientKeys.load(keys_dir) if keys_dir else None
    name = name or f"{socket.gethostname()}-{os.getpid()}"
    ctx = zmq.Context()
    client = ReplayClient(connect, name, keys=keys, ctx=ctx)
    params = None
    sent: np.ndarray | None = None
    try:
        welcome = client.hello(timeout_s=30)
        run, slot = welcome["run"], int(welcome["slot"])
        client.next_seq = int(welcome.get("first_seq", 0))  # a restart under the same name continues there
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
        last_report = time.monotonic()

        def report_now_and_then() -> None:
            nonlocal last_report
            if time.monotonic() - last_report > REPORT_PERIOD_S:
                client.report(sent.tolist(), REPORT_TIMEOUT_S)
                last_report = time.monotonic()

        Actor(cfg, slot, client, policy, params.refresh, sent, report_now_and_then).run()
        client.report(sent.tolist(), REPORT_TIMEOUT_S)
        log.info("remote_actor_finished", sent=int(sent.sum()))
        return 0
    except StopRequested:
        log.info("remote_actor_stopping")
        return stop.exit_code
    except ReplayClosed as error:
        log.info("run_ended", detail=str(error), sent=int(sent.sum()) if sent is not None else 0)
        return 0
    except ReplayUnavailable as error:
        log.error("replay_unavailable", error=str(error))
        return 1
    finally:
        if params is not None:
            params.close()
        client.close()
        ctx.term()
