"""What a running run reports, from the supervisor's process: the progress line, status.json (what
`mbgen watch` shows from another terminal), TensorBoard scalars and, if asked and installed, W&B.

The monitor reads what the run already writes (metrics.jsonl, events.jsonl) and what the supervisor
passes it (counters, per-process heartbeats), so no training process knows about any of it.
Every score is reported per grid point, never averaged over points.

TensorBoard tags (x axis: env steps per member); POINT is "/lr=..." etc. when the run has several
grid points, empty otherwise:
  eval{POINT}/mean, /min, /max          greedy evaluation over the point's members
  train{POINT}/episode_score            behaviour episodes (actors/episodes.py), mean over members
  reference/random, reference/optimal   the environment's scale (envs/scores.py)
  loss{POINT}/q, loss{POINT}/model      mean over the point's members since the last report
  model{POINT}/NAME                     the model server's numeric diagnostics
  throughput/updates_per_s, throughput/env_steps_per_s
  accounting/sent, /stored, /rejected, /duplicates
  time/learner/PHASE_ms, time/modelserver/PHASE_ms   per-update time breakdowns
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections import deque
from typing import Any

import numpy as np
from mbgen.launch.run.progress import Progress
from mbgen.launch.run.results import MetricsTail, point_names, scale_of
from mbgen.learner.config import RunConfig
from mbgen.runtime.roles import ACTOR, LEARNER, MODELSERVER, actor_name

STATUS_FILE = "status.json"  # in the run directory, rewritten about once a second
TENSORBOARD_DIR = "tensorboard"  # in the run directory
STATUS_PERIOD_S = 1.0
SCALAR_PERIOD_S = 5.0  # throughput and accounting scalars
RECENT_WARNINGS = 5


def check_sinks(cfg: RunConfig) -> None:
    """Refuse, before anything starts, a sink whose package is missing."""
    if cfg.outputs.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("tensorboard: the tensorboard package is not installed (pip install 'mbgen[tensorboard]')")
    if cfg.outputs.wandb and importlib.util.find_spec("wandb") is None:
        raise ValueError("wandb: the wandb package is not installed (pip install wandb), or leave wandb empty")


class EventsTail:
    """New lines of events.jsonl since the last call, parsed (a line cut short is left for later);
    `until`: read no further than that byte offset."""

    def __init__(self, path: str):
        self.path, self.offset = path, 0

    def poll(self, until: int | None = None) -> list[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read() if until is None else f.read(max(0, until - self.offset))
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        out = []
        for line in chunk[:end].splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


class Scalars:
    """TensorBoard (torch's SummaryWriter) and W&B, each if the run asked for it."""

    def __init__(self, cfg: RunConfig, run_dir: str):
        self.tensorboard = self.wandb = None
        if cfg.outputs.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(os.path.join(run_dir, TENSORBOARD_DIR))
        if cfg.outputs.wandb:
            import wandb

            self.wandb = wandb.init(
                project=cfg.outputs.wandb, dir=run_dir, name=os.path.basename(run_dir), config=cfg.to_dict(), reinit=True
            )

    def add(self, values: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in values.items() if v is not None and np.isfinite(v)}
        if not values:
            return
        if self.tensorboard is not None:
            for tag, value in values.items():
                self.tensorboard.add_scalar(tag, value, step)
        if self.wandb is not None:
            self.wandb.log({**values, "env_steps": step})

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def history(run_dir: str) -> dict[str, int]:
    """How much of metrics.jsonl and events.jsonl earlier sessions wrote (bytes), taken before a
    resumed session starts its processes: RunMonitor's `before`."""
    sizes = {}
    for name in ("metrics.jsonl", "events.jsonl"):
        path = os.path.join(run_dir, name)
        sizes[name] = os.path.getsize(path) if os.path.exists(path) else 0
    return sizes


class RunMonitor:
    """`before` (a resumed session: `history()` taken before its processes started): what earlier
    sessions wrote is read for the view (latest scores, last events) but not sent to TensorBoard or
    W&B again, which hold it already: a resumed run adds only new points. `elapsed_before`: wall
    seconds of the earlier sessions, so the run's clock goes on; `started`: when this session began
    (default now)."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: str,
        progress: bool = True,
        before: dict[str, int] | None = None,
        elapsed_before: float = 0.0,
        started: float | None = None,
    ):
        self.started = started or time.time()  # before the writers' imports, which take seconds
        self.cfg, self.run_dir = cfg, run_dir
        self.points = cfg.point_labels()
        self.names = point_names(self.points)
        self.groups = np.array([label["group"] for label in cfg.member_labels()])
        self.scale = scale_of(cfg)
        self.metrics = MetricsTail(os.path.join(run_dir, "metrics.jsonl"), self.groups.tolist())
        self.events = EventsTail(os.path.join(run_dir, "events.jsonl"))
        self.progress = Progress(cfg.run.steps, cfg.total_updates, progress, names=self.names, scale=self.scale)
        self.scalars = Scalars(cfg, run_dir) if cfg.outputs.tensorboard or cfg.outputs.wandb else None
        self.elapsed_before = elapsed_before
        self.last_status = self.last_scalars = 0.0
        self.latest_eval: dict | None = None
        self.last_train: list[float | None] = [None] * len(self.points)
        self.last_event: dict[str, tuple[str, float]] = {}  # role -> (event, time)
        self.warnings: deque = deque(maxlen=RECENT_WARNINGS)
        self.steps = self.updates = 0
        if before is not None:
            self.catch_up(before)
        elif self.scalars is not None:
            self.scalars.add(self.reference_values(), 0)
        from mbgen.runtime.logs import get_logger

        get_logger().info("population", members=cfg.members, points=cfg.point_labels(), scale=self.scale)
        # matplotlib now, while the run goes, so the plot at the end (often under a stop signal,
        # within the stop budget) does not wait seconds for its import
        import mbgen.launch.run.plots  # noqa: F401

    def catch_up(self, before: dict[str, int]) -> None:
        """Read what earlier sessions wrote without sending it to the scalar sinks again."""
        scalars, self.scalars = self.scalars, None
        try:
            for env_steps, _, scores in self.metrics.poll(until=before.get("metrics.jsonl", 0)):
                self.on_evaluation(env_steps, scores)
            for event in self.events.poll(until=before.get("events.jsonl", 0)):
                self.on_event(event)
        finally:
            self.scalars = scalars

    # -- helpers ---------------------------------------------------------------------------------
    def tag(self, family: str, group: int, name: str) -> str:
        """family[/point]/name: the point part only when the run has several points."""
        point = f"/{self.names[group].replace(' ', ',')}" if len(self.points) > 1 else ""
        return f"{family}{point}/{name}"

    def by_point(self, values) -> list[float | None]:
        """Mean over each point's members of a per-member list (None entries skipped)."""
        v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
        if v.ndim != 1 or v.size != self.groups.size:
            return [None] * len(self.points)
        out = []
        for g in range(len(self.points)):
            chosen = v[self.groups == g]
            chosen = chosen[np.isfinite(chosen)]
            out.append(float(chosen.mean()) if chosen.size else None)
        return out

    def reference_values(self) -> dict[str, float]:
        return {f"reference/{k}": self.scale[k]["score"] for k in ("random", "optimal")}

    # -- what the supervisor calls --------------------------------------------------------------
    def update(self, steps: int, updates: int, processes: dict[str, dict], accounting: dict[str, int]) -> None:
        """Once per watch-loop turn: read what is new, draw the progress line, write status and scalars."""
        self.steps, self.updates = steps, updates
        for env_steps, _, scores in self.metrics.poll():
            self.on_evaluation(env_steps, scores)
        for event in self.events.poll():
            self.on_event(event)
        self.progress.show(steps, updates, self.metrics.latest())
        now = time.time()
        if self.scalars is not None and now - self.last_scalars >= SCALAR_PERIOD_S:
            self.last_scalars = now
            steps_rate, update_rate, _ = self.progress.rates(steps, updates)
            values = {"throughput/updates_per_s": update_rate, "throughput/env_steps_per_s": steps_rate}
            values.update({f"accounting/{k}": accounting.get(k) for k in ("sent", "stored", "rejected", "duplicates")})
            self.scalars.add(values, steps)
        if now - self.last_status >= STATUS_PERIOD_S:
            self.last_status = now
            self.write_status("running", processes, accounting)

    def on_evaluation(self, env_steps: int, scores: np.ndarray) -> None:
        points = []
        values = {}
        for g, point in enumerate(self.points):
            chosen = scores[point["members"]]
            entry = {"group": g, "mean": float(chosen.mean()), "min": float(chosen.min()), "max": float(chosen.max())}
            points.append(entry)
            values.update({self.tag("eval", g, k): entry[k] for k in ("mean", "min", "max")})
        self.latest_eval = {"env_steps": env_steps, "points": points}
        if self.scalars is not None:
            self.scalars.add(values, env_steps)

    def on_event(self, event: dict) -> None:
        role, name = event.get("role", "?"), event.get("event", "")
        key = actor_name(event.get("actor", "")) if role == ACTOR else role
        self.last_event[key] = (name, float(event.get("t", 0.0)))
        if event.get("level") in ("warning", "error", "critical"):
            detail = {k: v for k, v in event.items() if k not in ("t", "level", "role", "pid", "event")}
            self.warnings.append({"t": event.get("t"), "role": role, "event": name, "detail": detail})
        values: dict[str, Any] = {}
        if name == "train_episodes":
            self.last_train = self.by_point(event.get("returns", []))
            values.update({self.tag("train", g, "episode_score"): v for g, v in enumerate(self.last_train)})
        elif name in ("learner_progress", "model_diagnostics"):
            process = LEARNER if name == "learner_progress" else MODELSERVER
            loss = event.get("loss")
            if isinstance(loss, list) and loss:
                per_member = [float(np.mean(x)) if isinstance(x, list) else x for x in loss]
                kind = "q" if process == LEARNER else "model"
                values.update({self.tag("loss", g, kind): v for g, v in enumerate(self.by_point(per_member))})
            for k, v in event.items():
                if k.endswith("_ms") and isinstance(v, (int, float)):
                    values[f"time/{process}/{k}"] = v
                elif name == "model_diagnostics" and k not in ("t", "pid", "model_updates", "loss", "wait_s"):
                    if isinstance(v, (int, float)) and not isinstance(v, bool):
                        values[f"model/{k}"] = v
                    elif (
                        isinstance(v, list)
                        and len(v) == self.groups.size
                        and all(isinstance(x, (int, float)) for x in v)
                    ):
                        values.update({self.tag("model", g, k): x for g, x in enumerate(self.by_point(v))})
        if values and self.scalars is not None:
            self.scalars.add(values, self.steps)

    def write_status(self, outcome: str, processes: dict[str, dict], accounting: dict[str, int]) -> None:
        """status.json, replaced atomically: what `mbgen watch` shows. Ages (heartbeats, last events)
        are as of `updated`; a run that has ended says when (`ended`) and how long it ran in all its
        sessions (`elapsed_s`)."""
        steps_rate, update_rate, eta = self.progress.rates(self.steps, self.updates)
        now = time.time()
        status = {
            "outcome": outcome,
            "supervisor_pid": os.getpid(),
            "updated": now,
            "started": self.started,  # this session's start
            "elapsed_s": self.elapsed_before + now - self.started,  # the run's own wall time, all sessions
            "ended": now if outcome != "running" else None,
            "agent": self.cfg.run.agent,
            "env": self.cfg.run.env,
            "env_params": self.cfg.run.env_params,
            "regime": self.cfg.run.regime,
            "members": self.cfg.members,
            "points": [{**p, "name": n} for p, n in zip(self.points, self.names)],
            "steps": self.steps,
            "total_steps": self.cfg.run.steps,
            "updates": self.updates,
            "total_updates": self.cfg.total_updates,
            "updates_per_s": update_rate,
            "env_steps_per_s": steps_rate,
            "eta_s": eta if np.isfinite(eta) else None,
            "latest_eval": self.latest_eval,
            "train_scores": self.last_train,
            "scale": self.scale,
            "processes": {
                name: {
                    **info,
                    "last_event": self.last_event.get(name, (None, None))[0],
                    "last_event_age_s": now - self.last_event[name][1] if name in self.last_event else None,
                }
                for name, info in processes.items()
            },
            "warnings": list(self.warnings),
            "transitions": accounting,
        }
        path = os.path.join(self.run_dir, STATUS_FILE)
        try:
            with open(path + ".tmp", "w") as f:
                json.dump(status, f)
            os.replace(path + ".tmp", path)
        except OSError:  # a full disk: status.json is a view; the supervisor's disk check says what happened
            pass

    def finish(self, outcome: str, summary: dict, processes: dict[str, dict], accounting: dict[str, int]) -> None:
        """After the summary: read what the processes wrote last, the final status, close the writers."""
        for env_steps, _, scores in self.metrics.poll():
            self.on_evaluation(env_steps, scores)
        for event in self.events.poll():
            self.on_event(event)
        self.progress.close()
        self.write_status(outcome, processes, accounting)
        if self.scalars is not None:
            self.scalars.add(self.reference_values(), self.steps)
            values = {f"accounting/{k}": accounting.get(k) for k in ("sent", "stored", "rejected", "duplicates")}
            self.scalars.add(values, self.steps)
        self.close()

    def close(self) -> None:
        """Close the scalar writers (once)."""
        if self.scalars is not None:
            self.scalars.close()
            self.scalars = None
