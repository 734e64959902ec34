"""Process entry points and builders shared by the integration tests (importable by spawned children)."""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import psutil

SPAWN = multiprocessing.get_context("spawn")


def busy(a: np.ndarray) -> np.ndarray:
    """One unit of single-threaded work (elementwise, so no BLAS threads fight a loaded machine)."""
    return np.tanh(a + 0.1)


def transitions(seed: int, n: int, obs_dim: int, num_actions: int, tag: float):
    """n deterministic transitions whose rewards tag + 0..n-1 identify them."""
    rng = np.random.default_rng(seed)
    obs = rng.random((n, obs_dim)) < 0.5
    return dict(
        obs=obs,
        action=rng.integers(0, num_actions, n),
        reward=(tag + np.arange(n)).astype(np.float32),
        next_obs=~obs,
        terminal=rng.random(n) < 0.1,
    )


def message(actor: int, seq: int, size: int, obs_dim: int, num_actions: int):
    """Message `seq` of actor `actor`: rewards actor*1e6 + seq*size + i (exact in float32)."""
    return transitions(actor * 1000 + seq, size, obs_dim, num_actions, actor * 1_000_000 + seq * size)


def local_token(endpoint: str, name: str) -> str | None:
    """The per-run token of local actor `name`, from the credentials beside an ipc endpoint."""
    from mbgen.runtime.security import LocalCredentials

    if not endpoint.startswith("ipc://"):
        return None
    return LocalCredentials.in_directory(os.path.dirname(endpoint[len("ipc://") :])).token(name)


def socket_directory() -> str:
    """A private (0700) directory for a test's sockets, removed when the test session ends."""
    from mbgen.runtime.security import private_directory

    directory = private_directory("mbgen-test-")
    atexit.register(shutil.rmtree, directory, True)
    return directory


def private_endpoint(actors=range(10)):
    """A private (0700) directory with an ingest endpoint and tokens for actor0..actor9."""
    from mbgen.runtime.security import LocalCredentials

    directory = socket_directory()
    credentials = LocalCredentials.in_directory(directory)
    for a in actors:
        credentials.issue(f"actor{a}")
    return directory, f"ipc://{directory}/ingest", credentials.path


def send_messages(endpoint, actor, member, first, count, size, obs_dim, num_actions, keys_dir=None, progress=None):
    """Actor process: send messages first..first+count-1 for `member`, wait for all acks.

    Local endpoints: logged in as actor<actor> with its token; remote ones: with the keys, after hello."""
    from mbgen.replay.client import ReplayClient
    from mbgen.runtime.security import ClientKeys

    keys = ClientKeys.load(keys_dir) if keys_dir else None
    name = f"actor{actor}"
    token = None if keys else local_token(endpoint, name)
    client = ReplayClient(endpoint, name, keys=keys, token=token, first_seq=first, resend_after_s=5.0)
    try:
        if keys is not None:
            client.hello(timeout_s=60)
        for seq in range(first, first + count):
            client.send(member, **message(actor, seq, size, obs_dim, num_actions))
            if progress is not None:
                progress.value = seq + 1
        client.flush(60)
    finally:
        client.close()


def run_in_process(target, *args, **kwargs):
    p = SPAWN.Process(target=target, args=args, kwargs=kwargs)
    p.start()
    return p


def stop_process(p, sig=signal.SIGTERM, timeout=15):
    if p.is_alive():
        os.kill(p.pid, sig)
    p.join(timeout)
    assert not p.is_alive(), "process did not stop"
    return p.exitcode


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def consumer(
    counters_name,
    store_name,
    ratio,
    bell,
    service_bell,
    total_updates,
    work,
    out_path,
    log_path=None,
    stall_warning_s=30.0,
    ready=None,
):
    """A learner stand-in: waits on the limiter, samples, does `work` matmuls, counts the update.

    Saves (min inserts seen, update index) per update to `out_path`.
    """
    import zmq
    from mbgen.replay.limiter import RatioPolicy
    from mbgen.replay.store import Batch, ReplayStore
    from mbgen.runtime.counters import RunCounters
    from mbgen.runtime.doorbell import Doorbell, Ringer, wait_until
    from mbgen.runtime.lifecycle import StopRequested, StopSignal
    from mbgen.runtime.logs import configure_logging

    StopSignal().install()
    configure_logging("consumer", log_path)
    policy = RatioPolicy(**ratio)
    ctx = zmq.Context()
    counters = RunCounters.attach(counters_name)
    store = ReplayStore.attach(store_name)
    own, ring = Doorbell(ctx, bell), Ringer(ctx, [service_bell])
    batch = Batch.allocate(store.members, 32, store.obs_dim)
    rngs = [np.random.default_rng(m) for m in range(store.members)]
    a = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    records = []
    if ready is not None:
        ready.set()
    try:
        for u in range(total_updates):
            wait_until(
                lambda: policy.may_update(counters.min_inserts(), u),
                own,
                stall_warning_s=stall_warning_s,
                describe_stall=lambda: {"side": "actors", "inserts": counters.min_inserts(), "updates": u},
            )
            records.append((counters.min_inserts(), u))
            store.sample(rngs, batch)
            for _ in range(work):
                a = busy(a)
            counters.updates = u + 1
            ring.ring()
    except StopRequested:
        pass
    finally:
        np.save(out_path, np.array(records, dtype=np.int64).reshape(-1, 2))
        own.close()
        ring.close()
        store.close()
        counters.close()
        ctx.term()


def paced_sender(endpoint, actor, member, count, size, obs_dim, num_actions, work):
    """Actor process that computes (`work` matmuls) between messages: a slow producer."""
    from mbgen.replay.client import ReplayClient

    a = np.random.default_rng(1).random((256, 256)).astype(np.float32)
    client = ReplayClient(endpoint, f"actor{actor}", token=local_token(endpoint, f"actor{actor}"))
    try:
        for seq in range(count):
            for _ in range(work):
                a = busy(a)
            client.send(member, **message(actor, seq, size, obs_dim, num_actions))
        client.flush(60)
    finally:
        client.close()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_run(agent="er", steps=1500, eval_period=250):
    """`mbgen run` options of a small real run: PanFlute(2), 2 seeds, learning from step 500."""
    return [
        *("--agent", agent, "--env", "panflute", "--env.num_pipes", "2", "--seeds", "2"),
        *("--steps", str(steps), "--learning-starts", "500", "--eval-period", str(eval_period), "--quiet"),
    ]


def mbgen(*args, timeout=240):
    """Run the real `mbgen` command line in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "mbgen.launch.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def mbgen_refusal(*args) -> tuple[int, str]:
    """The `mbgen` command line in this interpreter: (exit code, stderr). For refusals only: they come
    before any process starts, and a fresh interpreter would add seconds of imports to each."""
    import contextlib
    import io

    from mbgen.launch.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse's own refusals
            code = exit_.code
    return code, err.getvalue()


# -- whole runs through the command line -----------------------------------------------------
def start(*args):
    return subprocess.Popen(
        [sys.executable, "-m", "mbgen.launch.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def events(run_dir):
    with open(os.path.join(run_dir, "events.jsonl")) as f:
        return [json.loads(line) for line in f]


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


def descendants(pid):
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(processes):
    out = []
    for p in processes:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:120]}")
        except psutil.NoSuchProcess:
            pass
    return out


def assert_all_gone(processes, grace_s=5.0):
    """Every process of the run has exited, allowing the grace multiprocessing's resource tracker
    needs: it notices its parent's exit through a closed pipe, and exits right after."""
    deadline = time.monotonic() + grace_s
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(processes), f"processes left behind: {alive(processes)}"
