"""`mbgen run` as a user runs it: real processes, sockets and shared memory, end to end."""

import glob
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import (
    ROOT,
    assert_all_gone,
    descendants,
    events,
    mbgen,
    mbgen_refusal,
    metrics,
    start,
    summary,
    tiny_run,
    wait_for,
)
from mbgen.launch.options import load_toml
from mbgen.learner.config import RunConfig
from mbgen.runtime.security import make_keys

pytestmark = pytest.mark.slow
TINY = tiny_run()


def test_small_run_end_to_end(tmp_path):
    run_dir = str(tmp_path / "run")
    done = mbgen("run", *TINY, "--out", run_dir)
    assert done.returncode == 0, done.stderr
    assert "completed" in done.stderr and "(reconciled)" in done.stderr
    s = summary(run_dir)
    assert s["outcome"] == "completed"
    assert s["transitions"] == {
        "sent": 3000,
        "stored": 3000,
        "rejected": 0,
        "rejected_messages": 0,
        "duplicates": 0,
        "lost_in_flight": 0,
    }
    assert s["reconciled"] and s["reconciliation"] == "" and s["restarts"] == 0
    assert len(s["final"]["per_member"]) == 2 and s["final"]["ci95"][0] <= s["final"]["mean"] <= s["final"]["ci95"][1]
    assert s["throughput"]["updates"] == 1000 and s["throughput"]["wall_s"] > 0
    rows = metrics(run_dir)
    assert len(rows) == 2 * 7  # points 0, 250, ..., 1500 for 2 members
    cfg = RunConfig.from_dict(load_toml(os.path.join(run_dir, "config.toml")))
    assert cfg == cfg.resolved() and cfg.run.seeds == [0, 1] and cfg.run.env_params["num_pipes"] == 2
    for row in rows:
        assert set(row) == {
            "env_steps",
            "updates",
            "member",
            "group",
            "lr",
            "temperature",
            "seed",
            "eval_return",
            "wall_s",
        }
        # evaluation at t sees the policy after exactly the updates the protocol calls for at t
        assert row["updates"] == cfg.target_updates(row["env_steps"])
        assert 0.0 <= row["eval_return"] <= 1.0
    log = events(run_dir)
    roles = {e["role"] for e in log}
    assert {"supervisor", "replay", "learner", "actor", "evaluator"} <= roles
    assert all({"t", "level", "role", "pid", "event"} <= set(e) for e in log)
    final = [e for e in log if e["event"] == "final_accounting"][0]
    assert final["stored"] == 3000 and final["rejected"] == 0
    checkpoint = np.load(os.path.join(run_dir, "checkpoints", "learner-final.npz"))
    assert int(checkpoint["updates"]) == 1000 and checkpoint["seeds"].tolist() == [0, 1]
    assert checkpoint["q"].shape == checkpoint["target"].shape == checkpoint["adam_m"].shape
    assert {"q", "target", "adam_m", "adam_v", "adam_t", "env_steps"} <= set(checkpoint.files)
    with open(os.path.join(run_dir, "curve.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    plot = mbgen("plot", run_dir, run_dir, "--out", str(tmp_path / "both.png"))
    assert plot.returncode == 0 and (tmp_path / "both.png").exists()


def test_ctrl_c_stops_cleanly_and_keeps_partial_metrics(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = start(
        "run",
        *TINY[:-5],
        "--steps",
        "400000",
        "--learning-starts",
        "500",
        "--eval-period",
        "250",
        "--quiet",
        "--out",
        run_dir,
    )
    try:
        wait_for(
            lambda: os.path.exists(os.path.join(run_dir, "metrics.jsonl")) and len(metrics(run_dir)) >= 8,
            120,
            "a few evaluations",
        )
        children = descendants(proc.pid)
        assert len(children) >= 4
        t = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        proc.wait(15)
        assert time.monotonic() - t < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGINT
    assert_all_gone(children)
    s = summary(run_dir)
    assert s["outcome"] == "interrupted"
    assert len(metrics(run_dir)) >= 8 and s["final"]["mean"] is not None
    # an interrupted run's score is partial, from evaluations after learning started (step 500)
    assert s["final"]["partial"] and s["final"]["from_env_steps"][0] > 500
    assert s["reconciled"], s["reconciliation"]  # Ctrl-C drained what was in flight
    assert glob.glob(os.path.join(run_dir, "checkpoints", "u-*", "MANIFEST.json"))  # the stop cut
    assert os.path.exists(os.path.join(run_dir, "checkpoints", "learner-final.npz"))


def test_past_its_restarts_a_run_stops_resumable_and_everything_is_cleaned(tmp_path):
    """With --max-restarts 0 a killed learner stops the run (exit 1), names how to resume it, and leaves
    no process or shared memory; the directory then resumes and completes."""
    run_dir = str(tmp_path / "run")
    args = [*TINY[:-5], "--steps", "3000", "--learning-starts", "500", "--checkpoint-period", "300", "--quiet"]
    proc = start("run", *args, "--max-restarts", "0", "--out", run_dir)
    try:
        wait_for(lambda: glob.glob(os.path.join(run_dir, "checkpoints", "u-*", "MANIFEST.json")), 180, "a checkpoint")
        learner = [e["pid"] for e in events(run_dir) if e["event"] == "learner_started"][0]
        children = descendants(proc.pid)
        t = time.monotonic()
        os.kill(learner, signal.SIGKILL)
        proc.wait(15)
        assert time.monotonic() - t < 12
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1
    stderr = proc.stderr.read()
    assert "learner" in stderr and f"mbgen run --resume {run_dir}" in stderr
    assert_all_gone(children)
    s = summary(run_dir)
    assert s["outcome"] == "failed" and "SIGKILL" in s["reason"] and s["final"]["partial"]
    resumed = mbgen("run", "--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert summary(run_dir)["outcome"] == "completed" and len(metrics(run_dir)) == 2 * 7


def test_remote_actor_joins_over_tcp_with_keys(tmp_path):
    keys = str(tmp_path / "keys")
    make_keys(keys)
    port = 21000 + os.getpid() % 20000
    run_dir = str(tmp_path / "run")
    proc = start(
        "run",
        *TINY[:-5],
        "--steps",
        "2000",
        "--learning-starts",
        "500",
        "--quiet",
        "--out",
        run_dir,
        "--remote-endpoint",
        f"tcp://127.0.0.1:{port}",
        "--param-endpoint",
        f"tcp://127.0.0.1:{port + 1}",
        "--keys",
        keys,
    )
    try:
        remote = subprocess.run(
            [
                sys.executable,
                "-m",
                "mbgen.launch.cli",
                "actor",
                "--connect",
                f"tcp://127.0.0.1:{port}",
                "--keys",
                keys,
                "--name",
                "faraway",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        proc.wait(120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, proc.stderr.read()
    assert remote.returncode == 0, remote.stderr
    joined = [e for e in events(run_dir) if e["event"] == "actor_joined"]
    assert joined and joined[0]["actor"] == "faraway"
    s = summary(run_dir)
    assert s["transitions"]["stored"] > 2 * 2000  # the remote actor's transitions landed too


@pytest.mark.parametrize(
    "args,message",
    [
        (["--steps", "-5"], "steps must be an integer >= 1, or 0 for the regime's budget, got -5"),
        (
            ["--agent", "dreamer"],
            "agent must be one of er, simple, perfect, latent-cat, latent-gauss, ensemble, table, mve, steve, mpc, got 'dreamer'",
        ),
        (["--env", "panflute", "--env.num_pipes", "0"], "env_params: num_pipes must be an integer >= 1, got 0"),
        (["--tolerance", "lots"], "tolerance must be a number >= 0, got 'lots'"),
        (["--regime", "medium"], "regime must be one of high, low, got 'medium'"),
        (["--device", "tpu"], "device must be one of auto, cpu, cuda, got 'tpu'"),
        (["--bogus", "3"], "unknown option --bogus"),
        (["--lr", "1e-4,1e-4", "--seeds", "3"], "lr must be a list of distinct grid values, got [0.0001, 0.0001]"),
        (["--seed-list", "1,1"], "--seed-list must be distinct integers >= 0, comma-separated, got '1,1'"),
        (["--first-seed", "-1"], "--first-seed must be an integer >= 0, got -1"),
        (["--seed-list", "4,5", "--first-seed", "3"], "give either --seed-list A,B,... or --seeds S / --first-seed F"),
        (["--config", "/nonexistent.toml"], "config file /nonexistent.toml does not exist"),
        (["--gamma", "nan"], "gamma must be a number in [0, 1), got 'nan'"),
        (["--tolerance", "NaN"], "tolerance must be a number >= 0, got nan"),
        (
            ["--remote-endpoint", "tcp://0.0.0.0:5555", "--param-endpoint", "tcp://0.0.0.0:5556"],
            "remote_endpoint must be set together with keys",
        ),
        (  # loopback too: the service admits remote actors only by their CurveZMQ keys
            ["--remote-endpoint", "tcp://127.0.0.1:5555", "--param-endpoint", "tcp://127.0.0.1:5556"],
            "remote_endpoint must be set together with keys",
        ),
        (["--remote-actors", "4"], "remote_actors must be left out unless engine = ray (engine is local), got 4"),
        (["--engine", "slurm"], "engine must be one of local, ray, got 'slurm'"),
        (["--engine", "ray", "--remote-actors", "4"], "address must be HOST:PORT of the Ray cluster's head"),
        (["--engine", "ray", "--address", "h:6379"], "remote_actors must be an integer in [1, 16] when engine = ray"),
        (
            ["--engine", "ray", "--address", "h:6379", "--remote-actors", "4", "--placement", "pack"],
            "placement must be one of spread, strict_spread, got 'pack'",
        ),
        (
            ["--engine", "ray", "--address", "h:6379", "--remote-actors", "2", "--keys", "DIR"],
            "keys must be empty when engine = ray (the run makes a key pair per actor for itself)",
        ),
    ],
)
def test_bad_options_are_refused_before_anything_starts(tmp_path, args, message):
    run_dir = tmp_path / "never"
    code, stderr = mbgen_refusal("run", *args, "--out", str(run_dir))
    assert code == 2
    assert message in stderr
    assert not run_dir.exists()


def test_engine_ray_without_ray_is_refused_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: `import ray` fails
    run_dir = tmp_path / "never"
    args = ("--engine", "ray", "--address", "h:6379", "--remote-actors", "2", "--steps", "2000", "--out", str(run_dir))
    code, stderr = mbgen_refusal("run", *args)
    assert code == 2 and stderr.strip() == "mbgen run: error: --engine ray needs Ray: pip install 'mbgen[ray]'"
    assert not run_dir.exists()


def test_engine_ray_with_no_cluster_at_the_address_is_refused_at_once(tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_dir = tmp_path / "never"
    args = ("--engine", "ray", "--address", f"127.0.0.1:{port}", "--remote-actors", "2", "--steps", "2000")
    code, stderr = mbgen_refusal("run", *args, "--out", str(run_dir))
    assert code == 2 and f"address: no Ray cluster answers at 127.0.0.1:{port}" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not run_dir.exists()


def test_help_documents_every_key():
    from mbgen.learner.config import section_of_key

    done = mbgen("run", "--help-all")
    assert done.returncode == 0
    for field in section_of_key():
        if field not in ("seeds", "env_params"):
            assert "--" + field.replace("_", "-") in done.stdout, field
    assert "--seeds" in done.stdout and "--seed-list" in done.stdout and "--env.PARAM" in done.stdout


def test_an_unwritable_out_is_refused_before_anything_starts():
    done = mbgen("run", *TINY, "--out", "/proc/mbgen-run")
    assert done.returncode == 2 and "out: cannot write to /proc/mbgen-run" in done.stderr
    assert "Traceback" not in done.stderr
