"""Fault injection on real runs: processes killed with SIGKILL at awkward moments, and what survives.

Every test here starts the real `mbgen run` command and kills real processes; the acceptance of
the resume issue (DESIGN.md "Nothing lost, nothing doubled") is what they check.
"""

import glob
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import sys
import time

import psutil
import pytest
from helpers import assert_all_gone, descendants, events, mbgen, metrics, start, summary, tiny_run, wait_for
from mbgen.runtime.lifecycle import REPRODUCIBLE_MATH_ENV
from mbgen.runtime.shm import leftover_segments

pytestmark = pytest.mark.slow


def run_pids(run_dir, role):
    """The pids of the live processes of `role` in a run (from their start events)."""
    pids = [e["pid"] for e in events(run_dir) if e["role"] == role and e["event"] == f"{role}_started"]
    return [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]


def run_pid(run_dir, role):
    return run_pids(run_dir, role)[-1]


def learner_updates(run_dir):
    """Q updates so far, from the run's status.json (0 before it exists or while it is replaced)."""
    try:
        with open(os.path.join(run_dir, "status.json")) as f:
            return json.load(f)["updates"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def evaluations(run_dir):
    path = os.path.join(run_dir, "metrics.jsonl")
    return len(metrics(run_dir)) if os.path.exists(path) else 0


def run_segments(run_dir):
    """/dev/shm segments of every session of a run (the run ids are in its events)."""
    ids = {e["run_id"] for e in events(run_dir) if e["event"] == "run_started"}
    return [s for s in leftover_segments() if any(i in s for i in ids)]


def points(run_dir):
    return sorted((r["env_steps"], r["member"], r["eval_return"]) for r in metrics(run_dir))


def finish(proc, timeout=240):
    try:
        proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, proc.stderr.read()


def reconciled(s):
    t = s["transitions"]
    return s["reconciled"] and t["sent"] == t["stored"] + t["lost_in_flight"] and t["rejected"] == 0


# ------------------------------------------------------------------------------ resume
LOCK_STEP = [*tiny_run(steps=1500), "--tolerance", "0", "--checkpoint-period", "200"]


def test_a_killed_lock_step_run_resumes_bit_identical(tmp_path):
    """Two fresh lock-step runs at once (their maths does not depend on timing); one is killed mid-run and
    resumed: every evaluation of both agrees bit for bit, so a lock-step run repeats and resumes exactly."""
    whole, killed = str(tmp_path / "whole"), str(tmp_path / "killed")
    whole_proc = start("run", *LOCK_STEP, "--out", whole)
    proc = start("run", *LOCK_STEP, "--out", killed)
    try:
        wait_for(lambda: glob.glob(os.path.join(killed, "checkpoints", "u-*", "MANIFEST.json")), 180, "a checkpoint")
        before = evaluations(killed)
        wait_for(lambda: evaluations(killed) > before, 60, "one more evaluation after the checkpoint")
        children = descendants(proc.pid)
        learner_env = psutil.Process(run_pid(killed, "learner")).environ()  # the maths a lock-step run needs
        assert learner_env.get("MKL_CBWR") == os.environ.get("MKL_CBWR", REPRODUCIBLE_MATH_ENV["MKL_CBWR"])
        os.killpg(proc.pid, signal.SIGKILL)  # everything, at once, mid-run
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert_all_gone(children)
    wait_for(lambda: not run_segments(killed), 10, "the reaper to unlink the run's shared memory")
    resumed = mbgen("run", "--resume", killed)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and summary(killed)["outcome"] == "completed"
    code, stderr = finish(whole_proc)
    assert code == 0, stderr
    assert points(killed) == points(whole)  # every evaluation, bit for bit, and none twice
    assert len(points(killed)) == 2 * 7 and len({p[2] for p in points(whole)}) > 2  # not a trivial constant


def test_resume_refuses_what_it_cannot_use(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = start("run", *tiny_run(steps=400000), "--checkpoint-period", "100", "--out", run_dir)
    try:
        wait_for(lambda: glob.glob(os.path.join(run_dir, "checkpoints", "u-*", "MANIFEST.json")), 180, "a checkpoint")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    cuts = sorted(glob.glob(os.path.join(run_dir, "checkpoints", "u-*")))
    replay = os.path.join(cuts[-1], "replay.npz")
    data = bytearray(open(replay, "rb").read())
    data[len(data) // 2] ^= 0xFF
    for cut in cuts[:-1]:
        shutil.rmtree(cut)
    with open(replay, "wb") as f:
        f.write(data)
    done = mbgen("run", "--resume", run_dir)
    assert done.returncode == 2 and "part replay is corrupt" in done.stderr, done.stderr
    shutil.rmtree(cuts[-1])
    done = mbgen("run", "--resume", run_dir)
    assert done.returncode == 2 and "no checkpoint" in done.stderr, done.stderr
    done = mbgen("run", "--resume", str(tmp_path / "nothing"))
    assert done.returncode == 2 and "holds no run" in done.stderr
    done = mbgen("run", *tiny_run(), "--out", run_dir)
    assert done.returncode == 2 and "already holds a run" in done.stderr and "--resume" in done.stderr


# ------------------------------------------------------------------------------- healing
HEALING = [*tiny_run(steps=3000), "--checkpoint-period", "300"]


def test_a_killed_actor_is_replaced_and_the_run_reconciles(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = start("run", *HEALING, "--actors", "2", "--out", run_dir)
    # Under load the actors may run ahead of the learner up to the ratio's tolerance: kill one that is
    # still alive once learning has begun.
    wait_for(lambda: evaluations(run_dir) >= 3 and run_pids(run_dir, "actor"), 180, "evaluations and a live actor")
    os.kill(run_pid(run_dir, "actor"), signal.SIGKILL)
    code, stderr = finish(proc)
    assert code == 0, stderr
    assert "actor_replaced" in stderr  # a line on the terminal
    s = summary(run_dir)
    assert s["outcome"] == "completed" and reconciled(s) and s["transitions"]["duplicates"] == 0, s
    replaced = [e for e in events(run_dir) if e["event"] == "actor_replaced"]
    assert len(replaced) == 1 and replaced[0]["replacement"] not in ("actor0", "actor1")
    finished = [e for e in events(run_dir) if e["event"] == "learner_finished"][0]
    assert finished["longest_wait_s"] < 60  # logged; the learner waited at most about a restart
    assert len(points(run_dir)) == 2 * 13


def test_a_killed_replay_service_restarts_in_place_and_nothing_is_lost_or_doubled(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = start("run", *HEALING, "--out", run_dir)
    # Learning has started, so the store holds transitions (evaluations alone can all fall in the warm-up,
    # while the first messages may still be queued).
    wait_for(lambda: evaluations(run_dir) >= 6 and learner_updates(run_dir) > 0, 180, "learning under way")
    os.kill(run_pid(run_dir, "replay"), signal.SIGKILL)
    code, stderr = finish(proc)
    assert code == 0, stderr
    s = summary(run_dir)
    t = s["transitions"]
    assert s["outcome"] == "completed" and reconciled(s), s
    assert t["stored"] == t["sent"] == 2 * 3000 and t["lost_in_flight"] == 0  # no actor died: nothing lost
    starts = [e for e in events(run_dir) if e["event"] == "replay_started"]
    assert len(starts) == 2 and starts[1]["attached"] and starts[1]["stored"] > 0


def test_a_killed_learner_resumes_the_run_from_its_checkpoint(tmp_path):
    """...and an actor killed after that resume is replaced from the right step: its share's stored
    prefix is counted over both sessions (a replacement once started past its share's end, and the
    learner waited forever for steps nobody would take)."""
    run_dir = str(tmp_path / "run")
    proc = start("run", *HEALING, "--out", run_dir)
    wait_for(lambda: glob.glob(os.path.join(run_dir, "checkpoints", "u-*", "MANIFEST.json")), 180, "a checkpoint")
    os.kill(run_pid(run_dir, "learner"), signal.SIGKILL)
    wait_for(lambda: sum(e["event"] == "actor_started" for e in events(run_dir)) == 2, 180, "the resumed actor")
    actor = run_pid(run_dir, "actor")
    wait_for(lambda: evaluations(run_dir) >= 2 * 9, 180, "progress after the resume")
    os.kill(actor, signal.SIGKILL)
    code, stderr = finish(proc)
    assert code == 0, stderr
    assert "run_restarting" in stderr and "actor_replaced" in stderr
    s = summary(run_dir)
    assert s["outcome"] == "completed" and s["restarts"] == 1 and reconciled(s)
    assert len(points(run_dir)) == 2 * 13  # no gap and no duplicate evaluation point
    resumed = [e for e in events(run_dir) if e["event"] == "run_started"][-1]
    assert resumed["resumed_from"] is not None and resumed["resumed_from"] > 0
    replaced = [e for e in events(run_dir) if e["event"] == "actor_started"][-1]["steps"]
    assert 0 < replaced[0] <= replaced[1] == 3000  # one actor: its share is every step


def test_a_killed_supervisor_leaves_no_process_and_no_shared_memory(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = start("run", *tiny_run(steps=400000), "--out", run_dir)
    try:
        wait_for(lambda: evaluations(run_dir) >= 2, 180, "the run to be under way")
        children = descendants(proc.pid)
        socket_dir = [p for p in glob.glob("/tmp/mbgen-*") if any(p in " ".join(c.cmdline()) for c in children)]
        os.kill(proc.pid, signal.SIGKILL)  # the supervisor alone
        t = time.monotonic()
        proc.wait(10)
        assert_all_gone(children, grace_s=10.0 - (time.monotonic() - t))
        assert not run_segments(run_dir)
        assert socket_dir and not os.path.exists(socket_dir[0])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_chaos_an_actor_the_replay_service_and_the_model_server_each_die_once(tmp_path):
    """A short model-agent run during which one random actor, the replay service and the model server
    are each killed once (in a random order): the run completes, and its accounting reconciles."""
    run_dir = str(tmp_path / "run")
    seed = int(os.environ.get("MBGEN_CHAOS_SEED", os.getpid()))  # set it to replay a failing order
    rng = random.Random(seed)
    proc = start(
        "run",
        *tiny_run("simple", steps=3000),
        *("--hidden", "32,32", "--actors", "2", "--checkpoint-period", "200", "--out", run_dir),
    )
    victims = ["actor", "replay", "modelserver"]
    rng.shuffle(victims)
    try:
        for i, role in enumerate(victims):
            wait_for(lambda: evaluations(run_dir) >= 4 + 2 * i, 240, f"progress before killing the {role}")
            if role == "modelserver":
                wait_for(lambda: glob.glob(os.path.join(run_dir, "checkpoints", "u-*", "MANIFEST.json")), 120, "a cut")
            # After a model server's death the run restarts from its checkpoint: wait for the new processes.
            wait_for(lambda: run_pids(run_dir, role), 120, f"a live {role}")
            pid = rng.choice(run_pids(run_dir, role))
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 10, "the kill")
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)  # a clean stop: no shared memory left to fail the next test
        proc.wait(30)
        raise
    code, stderr = finish(proc, timeout=400)
    assert code == 0, f"MBGEN_CHAOS_SEED={seed} killed {victims}\n{stderr}"
    s = summary(run_dir)
    assert s["outcome"] == "completed" and reconciled(s), json.dumps(s, indent=1)
    assert len(points(run_dir)) == 2 * 13


def test_a_hung_learner_is_killed_and_the_run_heals_as_after_a_crash(tmp_path):
    """SIGSTOP is a hang: no exit to see, only a heartbeat that stops. The supervisor says so at half the
    timeout, kills the learner at the timeout, and the run resumes from its newest cut."""
    run_dir = str(tmp_path / "run")
    proc = start("run", *HEALING, "--heartbeat-timeout-s", "20", "--out", run_dir)
    wait_for(lambda: glob.glob(os.path.join(run_dir, "checkpoints", "u-*", "MANIFEST.json")), 180, "a checkpoint")
    os.kill(run_pid(run_dir, "learner"), signal.SIGSTOP)
    code, stderr = finish(proc)
    assert code == 0, stderr
    assert "process_silent" in stderr and "process_hung" in stderr and "run_restarting" in stderr, stderr
    s = summary(run_dir)
    assert s["outcome"] == "completed" and s["restarts"] == 1 and reconciled(s), s
    assert len(points(run_dir)) == 2 * 13


def test_a_corrupt_newest_cut_resumes_from_the_one_before(tmp_path):
    """The two newest complete cuts are kept: a newest one damaged after it was verified (a disk fault, a
    partial copy) leaves the previous one, and the resume says which it used. A completed run leaves
    complete cuts only."""
    run_dir = str(tmp_path / "run")
    complete = lambda: sorted(  # noqa: E731
        (os.path.dirname(m) for m in glob.glob(os.path.join(run_dir, "checkpoints", "u-*", "MANIFEST.json"))),
        key=lambda cut: int(cut.rsplit("-", 1)[1]),
    )
    proc = start("run", *HEALING, "--out", run_dir)
    try:
        wait_for(lambda: len(complete()) >= 2, 180, "two complete cuts")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    cuts = complete()
    assert len(cuts) == 2, cuts  # the older ones were deleted as newer ones completed
    replay = os.path.join(cuts[-1], "replay.npz")
    data = bytearray(open(replay, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(replay, "wb") as f:
        f.write(data)
    wait_for(lambda: not run_segments(run_dir), 10, "the reaper to clean the killed session")
    done = mbgen("run", "--resume", run_dir)
    assert done.returncode == 0, done.stderr
    assert "resume_from_older_cut" in done.stderr and "part replay is corrupt" in done.stderr, done.stderr
    resumed = [e for e in events(run_dir) if e["event"] == "run_started"][-1]
    assert resumed["resumed_from"] == int(cuts[0].rsplit("-", 1)[1])
    s = summary(run_dir)
    assert s["outcome"] == "completed" and reconciled(s), s
    assert len(points(run_dir)) == 2 * 13
    left = glob.glob(os.path.join(run_dir, "checkpoints", "u-*"))
    assert 1 <= len(left) <= 2 and all(os.path.exists(os.path.join(c, "MANIFEST.json")) for c in left), left


WHOLE_COMMAND_S = 30  # a refused `mbgen run`, start to exit, on a loaded machine (see the uses)


def test_a_full_dev_shm_is_a_clean_refusal(tmp_path):
    """/dev/shm of 1 MB (a tmpfs in a private mount namespace): the run ends at once with one line naming
    /dev/shm and the room needed, a summary, no process and no segment left; the run directory and its
    files are private (0700, 0600)."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare of a user and mount namespace is not allowed here")
    run_dir = str(tmp_path / "run")
    script = f"mount -t tmpfs -o size=1m tmpfs /dev/shm && exec {sys.executable} -m mbgen.launch.cli run " + " ".join(
        [*tiny_run(), "--out", run_dir]
    )
    private_before = set(glob.glob("/tmp/mbgen-*"))
    t = time.monotonic()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    # The command's whole life, interpreter and imports included: about 3 s on an idle machine, 10 s at a
    # load of 10; the refusal itself takes milliseconds (summary.json's wall_s).
    assert time.monotonic() - t < WHOLE_COMMAND_S
    assert done.returncode == 1, done.stderr
    assert "/dev/shm has no room for segment" in done.stderr and "MiB are free" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    s = summary(run_dir)
    assert s["outcome"] == "failed" and "/dev/shm" in s["reason"]
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(run_dir, "summary.json")).st_mode) == 0o600
    assert set(glob.glob("/tmp/mbgen-*")) <= private_before  # the session's private directory is gone


FILL_MID_RUN = """
set -u
mount -t tmpfs -o size=64m tmpfs "$1"
shift
"$@" &
run=$!
until ls "$OUT"/checkpoints/u-*/MANIFEST.json >/dev/null 2>&1; do
    kill -0 $run 2>/dev/null || break
    sleep 0.2
done
free=$(df --output=avail -B1 "$(dirname "$OUT")" | tail -1)
fallocate -l $((free - 6 * 1024 * 1024)) "$(dirname "$OUT")/filler"
date +%s.%N > "$MARK"
wait $run
"""


def test_a_full_disk_is_a_clean_stop(tmp_path):
    """A 2 MB --out (a tmpfs in a private mount namespace) is refused at once; a disk filled during a run
    stops it within seconds with one line naming the room needed, a summary and nothing left behind."""
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode != 0:
        pytest.skip("unshare of a user and mount namespace is not allowed here")
    private_before = set(glob.glob("/tmp/mbgen-*"))
    small = tmp_path / "small"
    small.mkdir()
    run_dir = str(small / "run")
    command = [sys.executable, "-m", "mbgen.launch.cli", "run", *tiny_run(), "--out", run_dir]
    t = time.monotonic()
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f'mount -t tmpfs -o size=2m tmpfs {small} && exec "$@"', "sh", *command],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert time.monotonic() - t < WHOLE_COMMAND_S and done.returncode == 1, done.stderr
    assert "disk full: " in done.stderr and "MiB free, the next checkpoint needs about" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

    filled = tmp_path / "filled"
    filled.mkdir()
    run_dir, mark = str(filled / "run"), str(tmp_path / "filled-at")
    command = [sys.executable, "-m", "mbgen.launch.cli", "run", *tiny_run(steps=40000), "--checkpoint-period", "300"]
    done = subprocess.run(
        ["unshare", "-rm", "sh", "-c", FILL_MID_RUN, "sh", str(filled), *command, "--out", run_dir],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "OUT": run_dir, "MARK": mark},
    )
    stopped_after = time.time() - float(open(mark).read())
    assert done.returncode == 1 and stopped_after < 15, (stopped_after, done.stderr)
    assert "disk full: " in done.stderr and f"mbgen run --resume {run_dir}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert set(glob.glob("/tmp/mbgen-*")) <= private_before  # every session's private directory is gone
