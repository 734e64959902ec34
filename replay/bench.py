"""Replay throughput on ProcMaze(10) transitions (400-bit observations).

`python -m replay.bench` prints one JSON object:
  ingest_1actor_tps, ingest_2actors_tps   transitions/s stored by the service from 1 or 2 actor
                                          processes over ipc://, 256 per message, acknowledged
  remote_ingest_1actor_tps, remote_ingest_2actors_tps
                                          the same from remote actors over loopback TCP with
                                          CurveZMQ keys (`--remote-only`: only these two)
  sample_32_tps, sample_320_tps           transitions/s sampled in place as float32 batches, P=1
  sample_30x320_tps                       the same for [30, 320] batches (P=30)
  bytes_per_transition                    shared memory per stored transition
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import time

import numpy as np
from mbgen.envs.base import TRANSITION_FIELDS
from mbgen.replay.client import ReplayClient
from mbgen.replay.service import ServiceConfig, start
from mbgen.replay.store import Batch, ReplayStore, bytes_per_transition
from mbgen.runtime.counters import RunCounters
from mbgen.runtime.roles import actor_name
from mbgen.runtime.security import ClientKeys, LocalCredentials, make_keys, private_directory
from mbgen.runtime.shm import new_run_id, segment_name

from mbgen import envs

GRID = 10
MESSAGE = 256


def procmaze_transitions(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """n real ProcMaze(10) transitions under uniform random actions."""
    env = envs.make("procmaze", 256, seed, grid_size=GRID)
    obs = env.reset()
    rng = np.random.default_rng(seed)
    parts = {k: [] for k in TRANSITION_FIELDS}
    while sum(len(a) for a in parts["action"]) < n:
        actions = rng.integers(0, env.num_actions, 256)
        next_obs, reward, terminal, new_obs = env.step(actions)
        for k, v in zip(parts, (obs, actions, reward, next_obs, terminal)):
            parts[k].append(v)
        obs = new_obs
    return {k: np.concatenate(v)[:n] for k, v in parts.items()}


def _actor(endpoint: str, token: str | None, actor: int, ready, go, keys_dir: str | None = None) -> None:
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    pool = procmaze_transitions(MESSAGE * 16, seed=actor)
    if keys_dir is None:
        client = ReplayClient(endpoint, actor_name(actor), window=32, token=token)
    else:  # a remote actor: CurveZMQ over TCP, slot from its hello
        client = ReplayClient(endpoint, f"bench{actor}", window=32, keys=ClientKeys.load(keys_dir))
        client.hello(timeout_s=30)
    messages = [{k: v[i * MESSAGE : (i + 1) * MESSAGE] for k, v in pool.items()} for i in range(16)]
    ready.set()
    go.wait()
    i = 0
    while True:
        client.send(0, **messages[i % 16])
        i += 1


def ingest_tps(actors: int, seconds: float, remote: bool = False) -> float:
    run_id, directory = new_run_id(), private_directory("mbgen-bench-")
    keys_dir = None
    if remote:
        keys_dir = os.path.join(directory, "keys")
        make_keys(keys_dir)
    credentials = LocalCredentials.in_directory(directory)
    tokens = [credentials.issue(actor_name(a)) for a in range(actors)]
    obs_dim = GRID * GRID * 4
    cfg = ServiceConfig(
        run_id=run_id,
        endpoint=f"ipc://{directory}/ingest",
        credentials=credentials.path,
        reward_range=envs.ENVIRONMENTS["procmaze"].reward_range,
        members=1,
        obs_dim=obs_dim,
        num_actions=5,
        accounting_period_s=3600,
        log_path=os.devnull,
        remote_endpoint=f"tcp://127.0.0.1:{free_port()}" if remote else None,
        keys_dir=keys_dir,
    )
    mp = multiprocessing.get_context("spawn")
    service = start(cfg)
    counters = RunCounters.attach(cfg.counters_name)
    go = mp.Event()
    readies = [mp.Event() for _ in range(actors)]
    endpoint = cfg.remote_endpoint if remote else cfg.endpoint
    procs = [
        mp.Process(target=_actor, args=(endpoint, tokens[a], a, readies[a], go, keys_dir)) for a in range(actors)
    ]
    try:
        for p in procs:
            p.start()
        for r in readies:
            r.wait(120)
        go.set()
        time.sleep(0.5)  # reach steady state before measuring
        n0, t0 = int(counters.stored[0]), time.perf_counter()
        time.sleep(seconds)
        n1, t1 = int(counters.stored[0]), time.perf_counter()
        return (n1 - n0) / (t1 - t0)
    finally:
        for p in procs:
            p.terminate()
            p.join()
        counters.close()
        service.terminate()
        service.join()
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_tps(members: int, batch: int, seconds: float) -> float:
    pool = procmaze_transitions(20_000)
    store = ReplayStore.create(segment_name(new_run_id(), "bench"), members, GRID * GRID * 4, 5, capacity=100_000)
    try:
        for m in range(members):
            for _ in range(5):
                store.add(m, **pool)
        out = Batch.allocate(members, batch, store.obs_dim)
        rngs = [np.random.default_rng(m) for m in range(members)]
        for _ in range(5):
            store.sample(rngs, out)
        calls, start_t = 0, time.perf_counter()
        while time.perf_counter() - start_t < seconds:
            store.sample(rngs, out)
            calls += 1
        return calls * members * batch / (time.perf_counter() - start_t)
    finally:
        store.close()


def remote_run(seconds: float = 2.0) -> dict[str, float]:
    return {
        "remote_ingest_1actor_tps": round(ingest_tps(1, seconds, remote=True)),
        "remote_ingest_2actors_tps": round(ingest_tps(2, seconds, remote=True)),
    }


def run(seconds: float = 2.0) -> dict[str, float]:
    return {
        "ingest_1actor_tps": round(ingest_tps(1, seconds)),
        "ingest_2actors_tps": round(ingest_tps(2, seconds)),
        "sample_32_tps": round(sample_tps(1, 32, seconds)),
        "sample_320_tps": round(sample_tps(1, 320, seconds)),
        "sample_30x320_tps": round(sample_tps(30, 320, seconds)),
        "bytes_per_transition": bytes_per_transition(GRID * GRID * 4, 5),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--remote-only", action="store_true", help="only the remote (CurveZMQ) ingest rates")
    args = parser.parse_args(argv)
    rates = remote_run(args.seconds) if args.remote_only else {**run(args.seconds), **remote_run(args.seconds)}
    print(json.dumps(rates))


if __name__ == "__main__":
    main()
