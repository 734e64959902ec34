"""Studies: a study file's cross product of cells, each cell one ordinary run (DESIGN.md "Above a run").

A study file (TOML) names agents, data regimes, seeds, a step budget and, per
environment, complexity levels as lists:

    agents = ["er", "simple"]
    regimes = ["high", "low"]
    seeds = 30                      # seeds 0..29, or a list of seeds
    steps = 20000                   # optional: default the regime's budget; or {high = .., low = ..}
    lr = [1e-4, 4e-4]               # optional: a step-size x temperature grid in every cell
    hidden = [64, 64]               # any run-config key, for every cell
    [envs.procmaze]
    grid_size = [2, 3, 4, 5, 6]
    [envs.panflute]
    num_pipes = [5, 7, 9]

Its cells are every agent x regime x environment level, where an environment's
levels are the cross product of its parameter lists (a plain value is fixed).
A cell is one population run of all seeds (and grid points), with the tuned
step size and temperature of PAPER.md section 4 unless the file sets them.
Cells are planned here and validated as whole run configurations before
anything starts; launch/studyrun.py runs them, launch/report.py reports them.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

from mbgen.launch.options import dump_toml, load_toml
from mbgen.launch.run.rundir import STUDY_FILE, existing_run
from mbgen.learner.agents import AGENTS, option_names
from mbgen.learner.config import REGIMES, RunConfig, section_of_key
from mbgen.runtime.checkpoints import snapshot_name

from mbgen import envs

# STUDY_FILE (study.toml) in the study directory: the study as planned, what a re-run must match
CELLS_DIR = "cells"  # the study directory's run directories, one per cell
PRESETS = (  # launch/study/presets/<name>.toml
    "figure3", "figure3-small", "agents-small", "claim-complexity", "claim-regimes", "claim-panflute", "claim-structure",
    "claim-frozen",
)

# The study's own keys; every other key must be a run-config key, applied to every cell.
STUDY_KEYS = {
    "title": "a name for the report and figures",
    "agents": "a list of agents",
    "regimes": "a list of data regimes",
    "seeds": "a number of seeds S (0..S-1) or a list of seeds",
    "steps": "env steps per member: a number, or a table {high = N, low = M} (default: the regime's budget)",
    "lr": "Q step size, or a list of grid values (0: the tuned value)",
    "temperature": "softmax temperature, or a list of grid values (0: the tuned value)",
    "envs": "a table per environment of parameter levels, e.g. [envs.procmaze] grid_size = [2, 3, 4]",
    "kind": "grid (the default: every agent x regime x level) or frozen (one run's model frozen at each of "
    "`snapshots`, Q trained from scratch on each: the paper's Figure 4, right)",
    "snapshots": "a frozen study's model-update counts at which the source run's model is frozen, e.g. [500, 5000]",
}
KINDS = ("grid", "frozen")
PER_CELL_KEYS = ("agent", "env", "env_params", "regime", "out")  # what the study sets for each cell


@dataclass(frozen=True)
class Cell:
    name: str  # directory name under cells/, e.g. "simple-procmaze-grid_size4-high"
    agent: str
    env: str
    params: dict[str, Any]  # the environment parameters the study file gives (levels and fixed values)
    regime: str
    config: dict[str, Any]  # the cell's resolved run configuration (sections), without `out`
    needs: str = ""  # a cell that must complete before this one starts (a frozen cell's source run)
    snapshot: int = 0  # a frozen cell: the source model's updates when it was frozen

    def run_config(self, out: str) -> RunConfig:
        return RunConfig.from_dict(self.config).replace(out=out)

    @property
    def level(self) -> tuple:
        """The cell's environment level: its parameter values in the study file's order."""
        return tuple(self.params.values())

    @property
    def grid(self) -> bool:
        """Whether the cell is a step size x temperature grid (several points)."""
        learning = self.config["learning"]
        return isinstance(learning["lr"], list) or isinstance(learning["temperature"], list)


@dataclass
class Study:
    kind: str  # KINDS
    title: str
    spec: dict[str, Any]  # the study file as given, without its title (study.toml keeps both)
    cells: list[Cell]
    levels: dict[str, list[str]]  # per environment: the parameters whose values vary across its cells

    def cell_dir(self, out: str, cell: Cell) -> str:
        return os.path.join(out, CELLS_DIR, cell.name)


def preset_path(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return str(importlib.resources.files("mbgen.launch.study") / "presets" / f"{name}.toml")


def load_study(path: str, out: str | None = None) -> Study:
    """The study in a study file, planned and validated (raises ValueError naming the key); `out` (the
    study directory) is needed by a frozen study, whose cells name files of its source cell."""
    spec = load_toml(path)
    return plan(spec, study_title(path, spec), out)


def study_title(path: str, spec: dict[str, Any]) -> str:
    return spec.pop("title", None) or os.path.splitext(os.path.basename(path))[0]


def _list_of(key: str, value: Any, allowed: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError(f"study: {key} must be {allowed}, got an empty list")
    if len({json.dumps(v) for v in values}) != len(values):
        raise ValueError(f"study: {key} must not repeat a value, got {value!r}")
    return values


def _seeds(value: Any) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise ValueError(f"study: seeds must be a number >= 1 or a list of seeds, got {value!r}")
        return list(range(value))
    return _list_of("seeds", value, "a number >= 1 or a list of seeds")


def _steps(value: Any, regime: str) -> int:
    """The cell's env steps per member: the study's number, its entry for the regime, or 0 (the
    regime's budget, resolved by RunConfig)."""
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(REGIMES))
        if unknown:
            raise ValueError(f"study: steps has unknown regime {', '.join(unknown)}; regimes: {', '.join(REGIMES)}")
        return value.get(regime, 0)
    return value


def plan(spec: dict[str, Any], title: str, out: str | None = None) -> Study:
    """Every cell of a study file, each a validated run configuration: a grid study's cross product,
    or a frozen study's source run and one run per snapshot (`plan_frozen`)."""
    kind = spec.get("kind", "grid")
    if kind not in KINDS:
        raise ValueError(f"study: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if kind == "grid" and "snapshots" in spec:
        raise ValueError('study: snapshots is a key of frozen studies (kind = "frozen")')
    run_keys = set(section_of_key())
    for key in spec:
        if key in PER_CELL_KEYS:
            raise ValueError(
                f"study: {key} is set per cell by the study; use agents, regimes and [envs.NAME] tables"
                if key != "out"
                else "study: out is the study's --out"
            )
        if key not in STUDY_KEYS and key not in run_keys:
            raise ValueError(
                f"study: unknown key {key}; study keys: {', '.join(STUDY_KEYS)}, or any run-config key "
                "(`mbgen run --help`)"
            )
    for key in ("agents", "envs"):
        if key not in spec:
            raise ValueError(f"study: {key} is required ({STUDY_KEYS[key]})")
    agents = _list_of("agents", spec["agents"], "a list of agents")
    regimes = _list_of("regimes", spec.get("regimes", ["high"]), "a list of regimes")
    for regime in regimes:
        if regime not in REGIMES:
            raise ValueError(f"study: regimes must be among {', '.join(REGIMES)}, got {regime!r}")
    seeds = _seeds(spec.get("seeds", 1))
    if not isinstance(spec["envs"], dict) or not spec["envs"]:
        raise ValueError("study: envs must hold a table per environment, e.g. [envs.procmaze] grid_size = [2, 3]")
    common = {
        k: v for k, v in spec.items() if k in run_keys and k not in ("steps", "lr", "temperature", "seeds", "kind")
    }
    for key in common:  # an agent option applies to the study's agents that have it; one of them must
        if section_of_key()[key] == "options" and not any(key in option_names(a) for a in agents if a in AGENTS):
            raise ValueError(f"study: {key} is an option of none of the study's agents ({', '.join(agents)})")
    cells, levels = [], {}
    for env, table in spec["envs"].items():
        if env not in envs.ENVIRONMENTS:
            raise ValueError(f"study: envs.{env} is not an environment; choose from {', '.join(envs.ENVIRONMENTS)}")
        if not isinstance(table, dict):
            raise ValueError(f"study: envs.{env} must be a table of parameters, e.g. grid_size = [2, 3]")
        known = envs.env_params(env)
        for param in table:
            if param not in known:
                raise ValueError(f"study: envs.{env}.{param} is not a parameter of {env}; it has {', '.join(known)}")
        lists = {p: _list_of(f"envs.{env}.{p}", v, "a value or a list of levels") for p, v in table.items()}
        levels[env] = [p for p, v in lists.items() if len(v) > 1]
        for regime in regimes:
            for values in itertools.product(*lists.values()):
                params = dict(zip(lists, values))
                for agent in agents:
                    cells.append(_cell(agent, env, params, regime, seeds, spec, common))
    if kind == "frozen":
        cells = plan_frozen(spec, cells, out)
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError("study: two cells share a name (repeated agents or levels?)")
    return Study(kind=kind, title=title, spec=spec, cells=cells, levels=levels)


def plan_frozen(spec: dict[str, Any], cells: list[Cell], out: str | None) -> list[Cell]:
    """A frozen study (the paper's Figure 4, right): its one agent, regime and level give a source run
    that keeps its model at each of `snapshots` model updates (--model-snapshots), then one run per
    snapshot that trains Q from scratch on rollouts of that model, frozen (--frozen-model)."""
    if len(cells) != 1:
        raise ValueError(
            f"study: a frozen study has one agent, one regime and one environment level, got {len(cells)} cells"
        )
    if out is None:
        raise ValueError("study: a frozen study is planned in its directory (--out)")
    (base,) = cells
    if "frozen_model" not in option_names(base.agent):
        raise ValueError(f"study: a frozen study's agent must learn a model to freeze, got {base.agent!r}")
    if "snapshots" not in spec:
        raise ValueError(f"study: snapshots is required ({STUDY_KEYS['snapshots']})")
    snapshots = _list_of("snapshots", spec["snapshots"], "a list of model-update counts")
    if not all(isinstance(u, int) and not isinstance(u, bool) and u >= 1 for u in snapshots):
        raise ValueError(f"study: snapshots must be model-update counts >= 1, got {snapshots!r}")
    snapshots = sorted(snapshots)
    updates = RunConfig.from_dict(base.config).total_updates
    if snapshots[-1] > updates:
        raise ValueError(f"study: snapshots must be at most the source run's {updates:,} model updates")
    source_name = f"{base.name}-source"
    source = _with_options(base, source_name, {"model_snapshots": snapshots})
    source_dir = os.path.join(os.path.abspath(out), CELLS_DIR, source_name)
    frozen = [
        _with_options(
            base,
            f"{base.name}-frozen{u}",
            {"frozen_model": os.path.join(source_dir, "checkpoints", snapshot_name(u))},
            needs=source_name,
            snapshot=u,
        )
        for u in snapshots
    ]
    return [source, *frozen]


def _with_options(base: Cell, name: str, options: dict[str, Any], **fields) -> Cell:
    """`base` renamed, with agent options set after validation (a frozen model's file appears only when
    its source cell has run; `mbgen run` checks it then)."""
    config = json.loads(json.dumps(base.config))
    config["options"].update(options)
    return Cell(name=name, agent=base.agent, env=base.env, params=base.params, regime=base.regime, config=config, **fields)


def cell_name(agent: str, env: str, params: dict[str, Any], regime: str) -> str:
    level = "-".join(f"{k}{str(v).lower()}" for k, v in params.items())
    return "-".join(part for part in (agent, env, level, regime) if part)


def _cell(agent, env, params, regime, seeds, spec, common) -> Cell:
    name = cell_name(agent, env, params, regime)
    own = option_names(agent) if agent in AGENTS else set()
    where = section_of_key()
    values = {
        **{k: v for k, v in common.items() if where[k] != "options" or k in own},
        "agent": agent,
        "env": env,
        "env_params": dict(params),
        "regime": regime,
        "seeds": list(seeds),
        "steps": _steps(spec.get("steps", 0), regime),
    }
    for key in ("lr", "temperature"):
        if key in spec:
            values[key] = spec[key][0] if isinstance(spec[key], list) and len(spec[key]) == 1 else spec[key]
    try:
        cfg = RunConfig.build(**values).resolved()
    except (ValueError, TypeError) as error:
        raise ValueError(f"study: cell {name}: {error}") from None
    return Cell(name=name, agent=agent, env=env, params=dict(params), regime=regime, config=without_out(cfg))


# -- the study directory ------------------------------------------------------------------
def write_plan(study: Study, out: str) -> None:
    """study.toml (the study as given) and each cell's cell.toml (its resolved configuration); both are
    checked against a re-run's plan by `check_directory` first."""
    os.makedirs(os.path.join(out, CELLS_DIR), exist_ok=True)
    path = os.path.join(out, STUDY_FILE)
    text = dump_toml({"title": study.title, **study.spec})
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(text)
    for cell in study.cells:  # written once: a completed cell's directory is never touched again
        path = os.path.join(study.cell_dir(out, cell), "cell.toml")
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(dump_toml(cell.config))


def check_directory(study: Study, out: str) -> None:
    """Refuse a study directory that holds a run, another study, or a cell run with another
    configuration: a re-run continues the same study, it never mixes two."""
    path = os.path.join(out, STUDY_FILE)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"out: {out} exists and is not a directory")
    found = existing_run(out)
    if found:
        raise ValueError(f"out: {out} holds a run ({', '.join(found)}), not a study; choose another --out")
    if os.path.exists(path):
        before = load_toml(path)
        now = {"title": study.title, **study.spec}
        if before != now:
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            raise ValueError(
                f"out: {out} holds another study (its study.toml differs in {', '.join(changed)}); "
                "re-run it with its own study file, or choose another --out"
            )
    for cell in study.cells:
        config_path = os.path.join(study.cell_dir(out, cell), "config.toml")
        if os.path.exists(config_path):
            ran = flat(without_out(RunConfig.from_dict(load_toml(config_path))))  # keys added since: their defaults
            planned = flat(cell.config)
            if ran != planned:
                changed = sorted(k for k in set(ran) | set(planned) if ran.get(k) != planned.get(k))
                raise ValueError(
                    f"out: cell {cell.name} in {out} ran with another configuration ({', '.join(changed)}); "
                    "choose another --out"
                )


def load_directory(out: str) -> Study:
    """The study planned in a study directory (for `mbgen report`)."""
    path = os.path.join(out, STUDY_FILE)
    if not os.path.exists(path):
        raise ValueError(f"{out} holds no study (no {STUDY_FILE})")
    spec = load_toml(path)
    return plan(spec, spec.pop("title", os.path.basename(out)), out)


def level_text(params: dict, varied: list[str]) -> str:
    """An environment level as a reader names it: the parameters the study varies (or all of them)."""
    shown = {k: v for k, v in params.items() if k in varied} or params
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or "default"


def without_out(cfg: RunConfig) -> dict[str, Any]:
    """A configuration's sections without `out` (where a cell runs is the study's business)."""
    values = cfg.to_dict()
    values["outputs"].pop("out")
    return values


def flat(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sections flattened to their keys (every key lives in one section)."""
    return {k: v for section in values.values() for k, v in section.items()}
