"""`mbgen bench`: throughput of every layer, each figure beside its reference, measured in one run.

  matmul         float32 [320,200]x[200,200] FLOP/s with every core (the update's widest product), and
                 [2048,2048]x[2048,2048] (the machine's top rate): the arithmetic ceilings
  envs           env steps/s at E=1 and E=256 (python -m envs.bench)
  replay         ingest and sampling transitions/s (python -m replay.bench)
  floor          the matrix products of one update alone, back to back (update_products): the
                 member-updates/s no implementation of the same float32 products exceeds here, beside
                 the reference and the goal (a goal above it cannot be met on this machine)
  single process the same ER / simple-model update loop in one process, no sockets: the floor the
                 distributed system must not fall below by more than 10%
  agents         the single-process figure of every agent (learner/agents.py) at P=1, beside ER's and
                 the simple model's
  acting         env steps/s of one actor's acting loop on Q (ER) and by planning (mpc)
  end to end     real multi-process runs (actors, replay service, learner, model server, evaluator at
                 protocol settings, evaluation every 500 steps, ratio 1 enforced) on ProcMaze(4), counted
                 from the first update to the last
FLOP efficiency = network FLOPs per member-update x member-updates/s / matmul FLOP/s. The same
arithmetic is printed for every end-to-end figure, the reference's and the goal's (`arithmetic`). The
matmul rates are guides, not bounds (one product per core can beat both cores in one product at these
sizes); the bound on an update is `floor`.

Every throughput is in member-updates per second (updates/s x population members), the unit of the
authors' code's timer (which vmaps its seeds): each end-to-end figure is printed beside the
reference figure for the same agent and population and their ratio. By default the reference is
docs/reference.md's (the authors' JAX code on the 2-core CI machine, 2026-11-21); `--reference
FILE.json` takes the JSON the authors' code's timer printed on this machine (docs/reference.md says
how), which is the only honest comparison: these machines drift 10-30% from hour to hour, so run
both together.

A busy machine makes every figure low and the matmul ceiling unreliable: the CPU that other
processes (not this bench and its children) use is sampled before and throughout (psutil), a
warning is printed when it exceeds BUSY_CORES, and an efficiency above 100% (a ceiling measured
under load) is never printed as a result. `--quick` takes about 1.5 minutes on an idle 2-core
machine; the bench reports its own duration and says when --quick ran past 2 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np
import torch
from mbgen.launch.bench.options import SECTIONS

# The authors' JAX code on the 2-core CI machine, 2026-11-21 (docs/reference.md), member-updates/s.
REFERENCE = {
    "er_p1_member_updates_per_s": 412.0,
    "simple_p1_member_updates_per_s": 67.0,
    "er_p30_member_updates_per_s": 348.0,
    "simple_p30_member_updates_per_s": 101.0,
}
RATIO_GOALS = {  # mbgen / reference, end to end (issue 13)
    "er_p1_member_updates_per_s": 1.0,
    "simple_p1_member_updates_per_s": 1.5,
    "er_p30_member_updates_per_s": 1.5,
    "simple_p30_member_updates_per_s": 2.0,
}
PEAK_SHAPE = (2048, 2048, 2048)  # a product large enough to run at the machine's top float32 rate
PEAK_NAME = "[{0},{1}]x[{1},{2}]".format(*PEAK_SHAPE)
EFFICIENCY_GOAL = 0.60  # simple model, 30 members: share of the machine's matmul rate
PLAN = (("er", 1), ("simple", 1), ("er", 30), ("simple", 30))  # the end-to-end figures: agent, members
BENCH_ENV = {"env": "procmaze", "env_params": {"grid_size": 4}}
BUSY_CORES = 0.25  # other processes using more than this many cores on average: a busy machine
QUICK_LIMIT_S = 120.0  # what --quick promises on an idle machine
LOAD_SAMPLE_S = 1.0


class OtherLoad(threading.Thread):
    """Samples, every LOAD_SAMPLE_S, the CPU (in cores) used by processes outside this bench's
    process tree; `mean` and `peak` summarise it."""

    def __init__(self):
        super().__init__(daemon=True, name="bench-load")
        self.samples: list[float] = []
        self.done = threading.Event()
        self.sample()  # prime every process's cpu_percent

    def sample(self) -> float:
        import psutil

        me = psutil.Process()
        ours = {me.pid} | {c.pid for c in me.children(recursive=True)}
        total = 0.0
        for process in psutil.process_iter():
            if process.pid in ours or process.pid == 0:
                continue
            try:
                total += process.cpu_percent(None)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total / 100.0

    def run(self) -> None:
        while not self.done.wait(LOAD_SAMPLE_S):
            self.samples.append(self.sample())

    def stop(self) -> dict:
        self.done.set()
        self.join()
        s = self.samples or [0.0]
        return {"mean_cores": sum(s) / len(s), "peak_cores": max(s), "samples": len(self.samples)}


def load_warning(load: dict, when: str) -> str | None:
    if load["mean_cores"] <= BUSY_CORES:
        return None
    return (
        f"warning: the machine is busy {when}: other processes used {load['mean_cores']:.2f} cores on average "
        f"(peak {load['peak_cores']:.2f}) of {os.cpu_count()}; every figure is low and FLOP efficiencies are "
        "unreliable. Measure on an idle machine."
    )


def best_rate(work, seconds: float, slices: int = 5) -> float:
    """Calls of `work` per second: the best of `slices` slices of `seconds`, after one call that warms up."""
    work()
    best = 0.0
    for _ in range(slices):
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / slices:
            work()
            count += 1
        best = max(best, count / (time.perf_counter() - start))
    return best


def matmul_gflops(seconds: float, m: int = 320, k: int = 200, n: int = 200) -> float:
    """Best float32 FLOP/s of an [m,k]x[k,n] product with every core."""
    torch.set_num_threads(os.cpu_count() or 1)
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = a @ b
    return 2 * m * k * n * best_rate(lambda: torch.mm(a, b, out=out), seconds) / 1e9


def mlp_products(shape, batch: int, backward: bool = False) -> list[tuple[int, int, int]]:
    """The matrix products (M, K, N) of one member's MLP pass on `batch` inputs: the forward products;
    with `backward`, also the weight gradients (h^T g) and the input gradients (g w^T; none for layer 1)."""
    out = [(batch, i, o) for i, o in shape.layers]
    if backward:
        out += [(i, batch, o) for i, o in shape.layers] + [(batch, o, i) for i, o in shape.layers[1:]]
    return out


def update_products(cfg) -> list[tuple[int, int, int]]:
    """The matrix products of one update of one member: the Q-network's forward and backward on the rows it
    trains (learner/training.py rows) and the target network's forward on as many next states; for an agent
    with a model, the simple model's three heads' training step on `model_batch` transitions, and the
    steps its model server imagines (training rollout_shape: states x steps of Q and the three heads).
    Other models count as the simple model."""
    from mbgen.learner.shapes import simple_model_shapes

    env, options, training = cfg.env_spec, cfg.options, cfg.spec.trains_on
    q, rows = cfg.q_shape(), training.rows(cfg)
    dqn = mlp_products(q, rows, backward=True) + mlp_products(q, rows)
    if not cfg.spec.model_server:
        return dqn
    heads = simple_model_shapes(env.obs_dim, env.num_actions, cfg.learning.hidden)
    train = [p for h in heads for p in mlp_products(h, options.model_batch, backward=True)]
    states, steps = training.rollout_shape(cfg)
    step = mlp_products(q, states) + [p for h in heads for p in mlp_products(h, states)] if states else []
    return dqn + train + steps * step


def update_flops(cfg) -> float:
    """Network FLOPs of one update per member: 2*M*K*N per matrix product (update_products)."""
    return float(sum(2 * m * k * n for m, k, n in update_products(cfg)))


def bench_config(agent: str, members: int = 1, **flat):
    """The setting every figure of the bench measures (ProcMaze(4), the paper's networks), resolved."""
    from mbgen.learner.config import RunConfig

    return RunConfig.build(agent=agent, seeds=list(range(members)), **BENCH_ENV, **flat).resolved()


def gemm_floor(agent: str, members: int, seconds: float) -> float:
    """Member-updates/s if an update were nothing but its matrix products (update_products; batched over
    members, [P,M,K]x[P,K,N]), run back to back in float32: the faster of every core inside each product,
    and one core's rate times the cores (the work split between the cores with no cost at all). For a
    population, `run` also takes one member's figure (one member's products after another's)."""
    products = update_products(bench_config(agent))
    pairs = [(torch.randn(members, m, k), torch.randn(members, k, n)) for m, k, n in products]
    if members == 1:
        pairs = [(a[0], b[0]) for a, b in pairs]
    multiply = torch.mm if members == 1 else torch.bmm
    outs = [multiply(a, b) for a, b in pairs]

    def one_update():
        for (a, b), out in zip(pairs, outs):
            multiply(a, b, out=out)

    def rate(threads: int) -> float:
        torch.set_num_threads(threads)
        return members * best_rate(one_update, seconds / 2)

    cores = os.cpu_count() or 1
    try:
        return max(rate(cores), cores * rate(1))
    finally:
        torch.set_num_threads(cores)


# -- single process ---------------------------------------------------------------------
def single_process(agent: str, members: int, seconds: float) -> float:
    """Member-updates/s of the processes' own update code in one process, no sockets and no other
    processes: the agent's learner update (learner/training.py) and, for an agent with a model, the model
    server's work per update (modelserver/work.py), on replay samples of ProcMaze(4)."""
    from mbgen.envs.seeding import derive_seed
    from mbgen.learner.dqn import DQN
    from mbgen.learner.training import LearnerContext
    from mbgen.modelserver.interface import ModelContext, build_model
    from mbgen.modelserver.work import WorkContext
    from mbgen.replay.store import Batch, ReplayStore
    from mbgen.runtime.lifecycle import tune_allocator
    from mbgen.runtime.shm import new_run_id, segment_name
    from mbgen.runtime.timing import PhaseTimer

    tune_allocator()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = bench_config(agent, members)
    env, cpu = cfg.env_spec, torch.device("cpu")
    store = ReplayStore.create(segment_name(new_run_id(), "bench"), members, env.obs_dim, env.num_actions, 20_000)
    try:
        pool = {k: v for k, v in procmaze_single(cfg).items()}
        for m in range(members):
            store.add(m, **pool)
        dqn = DQN(cfg.q_shape(), cfg.member_seeds, cfg.member_lr)
        update = cfg.spec.trains_on.learner_step(LearnerContext(cfg, dqn, store, cpu, PhaseTimer()))
        if cfg.spec.model_server:
            gen = torch.Generator().manual_seed(0)
            model = build_model(ModelContext(cfg, cpu, gen))
            temperature = torch.tensor(cfg.member_temperature)
            work = cfg.spec.work_class()(WorkContext(cfg, model, dqn.q, temperature, gen, None, PhaseTimer()))
            rngs = [np.random.default_rng(derive_seed(s, "bench")) for s in cfg.member_seeds]
            batch = Batch.allocate(members, work.samples, env.obs_dim)
            real = batch.tensors()
            out = {
                k: torch.from_numpy(np.zeros(shape, dtype)) for k, (dtype, shape) in cfg.spec.trains_on.batch_spec(cfg).items()
            }

            def one():
                store.sample(rngs, batch)
                work(real, out)
                update(out)

        else:

            def one():
                update(None)

        for _ in range(3):
            one()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            one()
            n += 1
        return n * members / (time.perf_counter() - start)
    finally:
        store.close()


def acting_rate(agent: str, seconds: float) -> float:
    """Env steps/s of one actor's acting loop, one member, one environment copy: the agent's behaviour
    policy (learner/acting.py: Q, or planning through the model) and the environment step, no sockets."""
    from mbgen import envs
    from mbgen.actors.acting import ActingPolicy

    torch.set_num_threads(1)  # as an actor runs
    cfg = bench_config(agent)
    policy = ActingPolicy(cfg, torch.Generator().manual_seed(0))
    env = envs.make(cfg.run.env, 1, 0, **cfg.run.env_params)
    obs, rng = env.reset()[None], np.random.default_rng(0)
    n, start = 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            actions = policy.behaviour(obs, rng.random((1, 1)))
            obs = env.step(actions[0])[3][None]
            n += 1
    finally:
        torch.set_num_threads(os.cpu_count() or 1)
    return n / (time.perf_counter() - start)


def procmaze_single(cfg) -> dict:
    from mbgen import envs

    env = envs.make(cfg.run.env, 256, 0, **cfg.run.env_params)
    obs, rng, parts = env.reset(), np.random.default_rng(0), []
    for _ in range(40):
        a = rng.integers(0, env.num_actions, 256)
        nxt, r, term, obs2 = env.step(a)
        parts.append((obs, a, r, nxt, term))
        obs = obs2
    from mbgen.envs.base import TRANSITION_FIELDS

    return {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(TRANSITION_FIELDS)}


# -- end to end ---------------------------------------------------------------------------
def end_to_end(agent: str, members: int, updates: int, device: str) -> dict:
    """A real run; returns update-phase updates/s (first update to last) and wall time."""
    from mbgen.launch.run.supervisor import Supervisor

    steps = 500 * (1 + (updates + 499) // 500)  # a whole number of evaluation periods, after >= 500 steps
    cfg = bench_config(
        agent, members, steps=steps, learning_starts=steps - updates, device=device, checkpoint_period=10**9
    )
    with tempfile.TemporaryDirectory(prefix="mbgen-bench-") as run_dir:
        supervisor = Supervisor(cfg, run_dir, progress=False)
        code = supervisor.run()
        if code != 0:
            raise RuntimeError(f"bench run {agent} P={members} failed: {supervisor.summary['reason']}")
        tp = supervisor.summary["throughput"]
    return {"updates_per_s": tp["update_phase_updates_per_s"], "wall_s": tp["wall_s"], "updates": tp["updates"]}


def run(quick: bool, sections: set[str], device: str, log=print) -> dict:
    results: dict = {}
    scale = 0.5 if quick else 1.0
    if "matmul" in sections:
        results["matmul_gflops"] = matmul_gflops(2.0 * scale)
        log(f"matmul [320,200]x[200,200] {results['matmul_gflops']:.1f} GFLOP/s")
        results["matmul_peak_gflops"] = matmul_gflops(2.0 * scale, *PEAK_SHAPE)
        log(f"matmul {PEAK_NAME} {results['matmul_peak_gflops']:.1f} GFLOP/s")
    if "envs" in sections:
        from mbgen.envs.bench import run as env_bench

        results["envs"] = env_bench(0.3 if quick else 1.0)
        log(f"envs {results['envs']}")
    if "replay" in sections:
        from mbgen.replay.bench import run as replay_bench

        results["replay"] = replay_bench(0.7 if quick else 2.0)
        log(f"replay {results['replay']}")
    if "floor" in sections:
        for agent, members in sorted(PLAN, key=lambda plan: plan[1]):  # one member first: populations reuse it
            key = f"gemm_floor_{agent}_p{members}_member_updates_per_s"
            # a population can also run one member's products after another's, weights in cache
            one_member = results.get(f"gemm_floor_{agent}_p1_member_updates_per_s", 0.0)
            results[key] = max(gemm_floor(agent, members, 2.0 * scale), one_member)
            log(f"matrix products alone {agent} P={members} {results[key]:.1f} member-updates/s")
    if "single" in sections:
        for agent in ("er", "simple"):
            key = f"single_process_{agent}_p1_member_updates_per_s"
            results[key] = single_process(agent, 1, 3.0 * scale)
            log(f"single process {agent} P=1 {results[key]:.1f} member-updates/s")
    if "agents" in sections:
        from mbgen.learner.agents import AGENTS

        for agent in AGENTS:
            key = f"single_process_{agent}_p1_member_updates_per_s"
            results[key] = results.get(key) or single_process(agent, 1, 3.0 * scale)
            log(f"single process {agent} P=1 {results[key]:.1f} member-updates/s")
    if "acting" in sections:
        for agent in ("er", "mpc"):
            results[f"acting_{agent}_steps_per_s"] = acting_rate(agent, 2.0 * scale)
            log(f"acting {agent}: {results[f'acting_{agent}_steps_per_s']:.1f} env steps/s (one actor, E=1)")
    if "e2e" in sections:
        updates = {("er", 1): 8000, ("simple", 1): 4000, ("er", 30): 500, ("simple", 30): 300}
        quick_updates = {("er", 1): 1500, ("simple", 1): 600, ("er", 30): 100, ("simple", 30): 60}
        for agent, members in PLAN:
            r = end_to_end(agent, members, (quick_updates if quick else updates)[agent, members], device)
            key = f"{agent}_p{members}_member_updates_per_s"
            results[key] = r["updates_per_s"] * members
            log(
                f"end to end {agent} P={members}: {results[key]:.1f} member-updates/s "
                f"({r['updates']} updates, {r['wall_s']:.0f} s with start-up)"
            )
        flops = {agent: update_flops(bench_config(agent)) for agent in ("er", "simple")}
        results["er_update_gflop"] = flops["er"] / 1e9
        results["simple_update_gflop"] = flops["simple"] / 1e9
    results["device"] = device
    results["cpus"] = os.cpu_count()
    results["quick"] = quick
    return results


def load_reference(path: str | None) -> tuple[dict, str]:
    """(reference figures in member-updates/s, where they come from)."""
    if path is None:
        return dict(REFERENCE), "docs/reference.md (authors' JAX code, 2-core CI machine, 2026-11-21)"
    try:
        with open(path) as f:
            figures = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"--reference: cannot read {path}: {error}") from None
    known = {k: float(v) for k, v in figures.items() if k in REFERENCE and isinstance(v, (int, float))}
    if not known:
        raise ValueError(
            f"--reference: {path} has none of {', '.join(REFERENCE)}; write it with the authors' code's timer (docs/reference.md)"
        )
    return known, path


def ratios(r: dict, reference: dict) -> dict:
    """mbgen / reference for every end-to-end figure both have."""
    return {k: r[k] / reference[k] for k in RATIO_GOALS if k in r and k in reference and reference[k] > 0}


def arithmetic(r: dict) -> dict:
    """Network arithmetic (GFLOP per member-update x member-updates/s) of each end-to-end figure: mbgen's,
    the reference's and what the goal asks, in GFLOP/s and as shares of the matmul rates measured."""
    out = {}
    reference = r.get("reference", {})
    for key, goal in RATIO_GOALS.items():
        agent = key.split("_")[0]
        if key not in r or f"{agent}_update_gflop" not in r:
            continue
        gflop = r[f"{agent}_update_gflop"]
        row = {"mbgen_gflops": r[key] * gflop}
        if key in reference:
            row["reference_gflops"] = reference[key] * gflop
            row["goal_gflops"] = goal * reference[key] * gflop
        for ceiling in ("matmul_gflops", "matmul_peak_gflops"):
            if r.get(ceiling):
                row |= {
                    f"{k[:-7]}_share_of_{ceiling[:-7]}": v / r[ceiling]
                    for k, v in list(row.items())
                    if k.endswith("_gflops")
                }
        out[key] = row
    return out


def arithmetic_lines(r: dict) -> list[str]:
    rows = r.get("arithmetic", {})
    if not rows:
        return []
    names = {"er": "ER", "simple": "simple model"}
    ceilings = [f"{r['matmul_gflops']:.1f} GFLOP/s ([320,200]x[200,200])"] if r.get("matmul_gflops") else []
    if r.get("matmul_peak_gflops"):
        ceilings.append(f"{r['matmul_peak_gflops']:.1f} ({PEAK_NAME})")
    lines = ["network arithmetic, GFLOP/s (GFLOP per member-update x member-updates/s)"]
    if ceilings:
        lines[0] += "; matmul rate " + ", ".join(ceilings)
    for key, row in rows.items():
        agent, members = key.split("_")[:2]
        parts = []
        for who in ("mbgen", "reference", "goal"):
            if f"{who}_gflops" in row:
                share = row.get(f"{who}_share_of_matmul")
                parts.append(f"{who} {row[f'{who}_gflops']:.1f}" + (f" ({share:.0%})" if share is not None else ""))
        lines.append(f"  {names[agent]} P={members[1:]}: " + ", ".join(parts))
    return lines


def table(r: dict) -> str:
    """The figures as a table: each throughput beside the reference, their ratio and the goal."""
    reference, ratio = r.get("reference", {}), r.get("ratios", {})
    rows = [("figure", "mbgen", "reference", "ratio", "goal")]

    def add(name: str, key: str, unit: str, beside: str | None = None) -> None:
        """A row for r[key], beside the reference figure and goal of `beside` (default: key itself)."""
        if key not in r:
            return
        beside = beside or key
        ref, goal = reference.get(beside), RATIO_GOALS.get(beside)
        shown_ratio = ratio.get(key, r[key] / ref if beside != key and ref else None)
        rows.append(
            (
                f"{name} ({unit})",
                f"{r[key]:,.1f}",
                "" if ref is None else f"{ref:,.1f}",
                "" if shown_ratio is None else f"{shown_ratio:.2f}x",
                f">= {goal:.1f}x" if goal is not None else "",
            )
        )

    add("matmul [320,200]x[200,200]", "matmul_gflops", "GFLOP/s")
    add(f"matmul {PEAK_NAME}", "matmul_peak_gflops", "GFLOP/s")
    for agent, name in (("er", "ER"), ("simple", "simple model")):
        for members in (1, 30):
            key, unit = f"{agent}_p{members}_member_updates_per_s", "member-updates/s"
            add(f"{name} P={members}, end to end", key, unit)
            add(f"{name} P={members}, single process", f"single_process_{key}", unit)
            add(f"{name} P={members}, matrix products alone", f"gemm_floor_{key}", unit, beside=key)
    for name, agent in (("simple model", "simple"), ("ER", "er")):
        key = f"{agent}_p30_flop_efficiency"
        if key in r:
            shown = f"{r[key]:.1%}" if r[key] is not None else "n/a: over 100%, the ceiling was measured under load"
            goal = f">= {EFFICIENCY_GOAL:.0%}" if agent == "simple" else ""
            rows.append((f"{name} P=30, share of the matmul rate", shown, "", "", goal))
    from mbgen.learner.agents import AGENTS

    for agent in AGENTS:
        if agent not in ("er", "simple"):
            key = f"single_process_{agent}_p1_member_updates_per_s"
            if key in r:
                beside = [f"{r[key] / r[k]:.2f}x {name}" for k, name in (
                    ("single_process_er_p1_member_updates_per_s", "ER's"),
                    ("single_process_simple_p1_member_updates_per_s", "the simple model's"),
                ) if r.get(k)]  # fmt: skip
                rows.append((f"{agent} P=1, single process (member-updates/s)", f"{r[key]:,.1f}", "", ", ".join(beside), ""))
    if "acting_er_steps_per_s" in r and "acting_mpc_steps_per_s" in r:
        er, mpc = r["acting_er_steps_per_s"], r["acting_mpc_steps_per_s"]
        rows.append(("acting on Q, ER (env steps/s)", f"{er:,.1f}", "", "", ""))
        rows.append(("acting by planning, mpc (env steps/s)", f"{mpc:,.1f}", "", f"{mpc / er:.2f}x ER's", ""))
    if "envs" in r:
        for name, v in r["envs"].items():
            rows.append((f"env {name}, E=256 (steps/s)", f"{v['E256']:,}", "", "", ""))
    if "replay" in r:
        for k, v in r["replay"].items():
            rows.append((f"replay {k} (transitions/s)", f"{v:,}", "", "", ""))
    width = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, width))) for row in rows
    ]
    if reference:
        lines.append(f"reference: {r.get('reference_source', '')}")
    return "\n".join(lines + arithmetic_lines(r))


def main(args: argparse.Namespace) -> int:
    sections = set(args.only.split(",")) if args.only else set(SECTIONS)
    unknown = sections - set(SECTIONS)
    if unknown:
        raise ValueError(f"--only: unknown sections {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}")
    if args.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be one of auto, cpu, cuda, got {args.device!r}")
    reference, source = load_reference(args.reference)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    started = time.monotonic()
    before = OtherLoad()
    before.start()
    time.sleep(2.5 * LOAD_SAMPLE_S)  # two samples of an idle bench
    before_load = before.stop()
    if load_warning(before_load, "before the bench"):
        print(load_warning(before_load, "before the bench"), file=sys.stderr)
    during = OtherLoad()
    during.start()
    try:
        results = run(args.quick, sections, args.device, log)
    finally:
        during_load = during.stop()
    results["reference"], results["reference_source"] = reference, source
    results["ratios"] = ratios(results, reference)
    results["arithmetic"] = arithmetic(results)
    for agent in ("er", "simple"):  # the 30-member share of the matmul rate, under its earlier name
        share = results["arithmetic"].get(f"{agent}_p30_member_updates_per_s", {}).get("mbgen_share_of_matmul")
        if share is not None:
            results[f"{agent}_p30_flop_efficiency"] = share
    results["other_load_before"] = before_load
    results["other_load_during"] = during_load
    results["busy"] = bool(load_warning(during_load, "") or load_warning(before_load, ""))
    results["wall_s"] = time.monotonic() - started
    for key in [k for k in results if k.endswith("_flop_efficiency")]:
        if results[key] > 1.0:  # impossible on a steady machine: the ceiling was measured under load
            results[key + "_measured"] = results.pop(key)
            results[key] = None
    print(json.dumps(results) if args.json else "\n" + table(results))
    notes = [load_warning(during_load, "during the bench")]
    if args.quick and results["wall_s"] > QUICK_LIMIT_S:
        notes.append(
            f"note: --quick took {results['wall_s']:.0f} s, more than its {QUICK_LIMIT_S:.0f} s on an idle machine"
            + (" (the machine was busy)" if results["busy"] else "")
        )
    for note in filter(None, notes):
        print(note, file=sys.stderr)
    return 0
