"""Run configuration from a TOML file plus command-line flags.

Every RunConfig key is a `--key value` flag (dashes for underscores), in one section each
(learner/config.py: run, learning, options, system, outputs); environment parameters are
`--env.PARAM value`; `--seeds S` means seeds F..F+S-1 (`--first-seed F`, default 0) and
`--seed-list a,b,c` names them. `--lr` and `--temperature` take one number or a comma-separated
list of grid values: the run is their cross product with the seeds. `--config FILE` is a
sectioned TOML file; flags override it. The field comments of the sections are the help text,
so the documentation lives in one place. `mbgen run --help` shows what to run and the options
most people set; `--help-all` every key.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import re
import sys
from typing import Any

from mbgen.learner.agents import AGENTS
from mbgen.learner.config import SECTIONS, RunConfig, place_keys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPECIAL = {"seeds", "env_params"}  # keys with their own command-line forms
# What `mbgen run --help` shows besides what to run: the options most people set.
COMMON = ("lr", "temperature", "hidden", "tensorboard", "out")
# What a value is, where its type does not say it well enough.
METAVARS = {
    "agent": "AGENT",
    "env": "ENV",
    "regime": "high|low",
    "steps": "N",
    "lr": "LR[,LR...]",
    "temperature": "T[,T...]",
    "hidden": "N[,N...]",
    "device": "auto|cpu|cuda",
    "out": "DIR",
    "keys": "DIR",
    "frozen_model": "FILE",
    "model_snapshots": "U[,U...]",
    "remote_endpoint": "URL",
    "param_endpoint": "URL",
    "wandb": "PROJECT",
}
TYPE_METAVARS = {"int": "N", "float": "X", "str": "TEXT", "bool": "true|false"}


def section_classes() -> list[tuple[str, type]]:
    """(help heading, dataclass) of every section; agent options: every agent's class, each once."""
    out = []
    for name, (cls, heading) in SECTIONS.items():
        if cls is not None:
            out.append((heading, cls))
        else:
            seen = []
            for spec in AGENTS.values():
                if spec.options not in seen:
                    seen.append(spec.options)
            out += [(heading, c) for c in seen]
    return out


def field_docs() -> dict[str, tuple[str, str, Any, str]]:
    """Each key's (section heading, comment, default, type) from the sections' sources."""
    docs = {}
    for heading, cls in section_classes():
        defaults = cls()
        for klass in reversed(cls.__mro__):  # an options class inherits its parents' fields
            if not dataclasses.is_dataclass(klass):
                continue
            for line in inspect.getsource(klass).splitlines():
                found = re.match(r"^\s+(\w+): ([^#=\n]*?)\s*=[^#\n]*#\s*(.*)$", line)
                if found and found.group(1) not in docs and hasattr(defaults, found.group(1)):
                    name = found.group(1)
                    docs[name] = (heading, found.group(3).strip(), getattr(defaults, name), found.group(2).strip())
    return docs


def default_text(value: Any) -> str:
    """A default as a user types it on the command line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        flat = value and not any(isinstance(v, (list, tuple)) for v in value)
        return ",".join(map(str, value)) if flat else json.dumps(value)
    if isinstance(value, str):
        return value or '""'
    return f"{value:g}" if isinstance(value, float) else str(value)


def parse_value(text: str) -> Any:
    """A command-line value: JSON literal when it parses (numbers, true/false, lists), else the string."""
    if "," in text and not text.startswith("["):
        return [parse_value(part) for part in text.split(",")]
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"config file {path} is not valid TOML: {error}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"cannot write {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ValueError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(values: dict[str, Any], table: str = "") -> str:
    """TOML for a mapping of values and (nested) tables: RunConfig, a study file."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in values.items() if not isinstance(value, dict)]
    for key, value in values.items():
        if isinstance(value, dict):
            name = f"{table}.{key}" if table else key
            lines.append(f"\n[{name}]\n" + dump_toml(value, name).rstrip("\n"))
    return "\n".join(lines) + "\n"


def add_seed_options(parser, where: str) -> None:
    """--seeds S, --first-seed F (seeds F..F+S-1) and --seed-list A,B,... (mbgen run and offline)."""
    parser.add_argument("--seeds", type=int, metavar="S", help=f"run S seeds, F..F+S-1 {where}")
    parser.add_argument("--first-seed", type=int, metavar="F", help="the first of the S seeds (default: 0)")
    parser.add_argument("--seed-list", metavar="A,B,...", help="run exactly these distinct seeds (instead of S and F)")


def seeds_from_args(args: argparse.Namespace, default_count: int) -> list[int] | None:
    """The seeds --seeds/--first-seed/--seed-list name (None when none is given), validated."""
    count, first, listed = args.seeds, args.first_seed, args.seed_list
    if listed is not None:
        if count is not None or first is not None:
            raise ValueError("give either --seed-list A,B,... or --seeds S / --first-seed F, not both")
        try:
            seeds = [int(x) for x in str(listed).split(",")]
        except ValueError:
            seeds = []
        if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
            raise ValueError(f"--seed-list must be distinct integers >= 0, comma-separated, got {listed!r}")
        return seeds
    if count is None and first is None:
        return None
    if count is not None and count < 1:
        raise ValueError(f"--seeds must be an integer >= 1, got {count}")
    if first is not None and first < 0:
        raise ValueError(f"--first-seed must be an integer >= 0, got {first}")
    first = first or 0
    return list(range(first, first + (default_count if count is None else count)))


def add_run_options(parser: argparse.ArgumentParser, show_all: bool) -> dict[str, argparse._ArgumentGroup]:
    """Every config key as a flag, grouped by section, defaults shown; with `show_all` False the help
    lists only what to run and COMMON (the rest still parse). Returns the groups by heading."""
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group(name: str) -> argparse._ArgumentGroup:
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        return groups[name]

    run = group("what to run")
    run.add_argument("--config", metavar="FILE", help="TOML file of config sections; flags override it")
    add_seed_options(run, "at every grid point (default: 1 seed, 0)")
    run.add_argument(
        "--env.PARAM",
        dest="_env_param_doc",
        metavar="VALUE",
        help="an environment parameter, e.g. --env.grid_size 4 (repeatable; see the list below)",
    )
    for name, (heading, text, default, kind) in field_docs().items():
        if name in SPECIAL:
            continue
        shown = show_all or (heading == "what to run" and name != "offline") or name in COMMON
        where = group(heading if shown else "more options (--help-all)")
        flag = "--" + name.replace("_", "-")
        help_text = f"{text} (default: {default_text(default)})" if shown else argparse.SUPPRESS
        metavar = METAVARS.get(name, TYPE_METAVARS.get(kind, "V"))
        if kind == "bool":  # a bare --flag means true
            where.add_argument(flag, dest=name, nargs="?", const="true", metavar=metavar, help=help_text)
        else:
            where.add_argument(flag, dest=name, metavar=metavar, default=None, help=help_text)
    return groups


def given_keys(args: argparse.Namespace) -> list[str]:
    """The config keys set by flags (seeds and environment parameters have their own forms)."""
    return [name for name in field_docs() if name not in SPECIAL and getattr(args, name, None) is not None]


def run_epilog(show_all: bool) -> str:
    """The agents and environments; with `show_all`, each environment's parameters and score scale."""
    from mbgen.envs.scores import reference_scores

    from mbgen import envs

    lines = ["agents (--agent):"]
    lines += [f"  {name:<13} {spec.description}" for name, spec in AGENTS.items()]
    lines.append("")
    if not show_all:
        lines.append(f"environments (--env): {', '.join(envs.ENVIRONMENTS)}")
        lines.append("")
        lines.append("--help-all lists every option, each environment's parameters and its score scale.")
        return "\n".join(lines)
    lines.append(
        "environments (--env), their parameters (--env.PARAM VALUE) with defaults, and scores at the defaults:"
    )
    for name in envs.ENVIRONMENTS:
        params = ", ".join(
            f"{k}={default_text(list(v) if isinstance(v, tuple) else v)}" for k, v in envs.env_params(name).items()
        )
        scale = reference_scores(name)
        random, optimal = scale["random"]["score"], scale["optimal"]["score"]
        lines.append(f"  {name:<12} {params}")
        lines.append(f"  {'':<12} random {random:.3g}, optimal {optimal:.3g} ({scale['unit']})")
    lines.append("")
    lines.append(
        "grids: --lr a,b --temperature x,y --seeds S runs every (lr, temperature) point with every seed:"
        " |lr| x |temperature| x S members, reported point by point."
    )
    lines.append(
        "budget: the default --steps is the paper's: 1,000,000 env steps per member in the high-data regime, "
        "100,000 in the low (hours on a laptop)."
    )
    lines.append(
        "config files (--config) are TOML in sections: [run], [learning], [options] (the agent's own), [system], "
        "[outputs]; a run's resolved config.toml is one."
    )
    return "\n".join(lines)


def env_params_from_extra(extra: list[str]) -> dict[str, Any]:
    """`--env.PARAM VALUE` (or `--env.PARAM=VALUE`) options, which argparse leaves over."""
    params, i = {}, 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--env."):
            raise ValueError(f"unknown option {token}; see --help")
        key = token[len("--env.") :]
        if "=" in key:
            key, raw = key.split("=", 1)
        else:
            if i + 1 >= len(extra):
                raise ValueError(f"{token} needs a value")
            raw = extra[i + 1]
            i += 1
        params[key.replace("-", "_")] = parse_value(raw)
        i += 1
    return params


def _coerce(kind: str, value: Any) -> Any:
    """Fit command-line spellings to a key's type: 3e4 for an int, a scalar for a list."""
    if kind.startswith("list") and not isinstance(value, list):
        return [value]
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def config_from_args(args: argparse.Namespace, extra: list[str], base: dict[str, Any] | None = None) -> RunConfig:
    """Merge defaults < `base` (flat keys) or the TOML file (sections) < flags; the result is resolved."""
    values: dict[str, Any] = load_toml(args.config) if args.config else place_keys(dict(base or {}))
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    docs = field_docs()
    flat: dict[str, Any] = {}
    for name in given_keys(args):
        flat[name] = _coerce(docs[name][3], parse_value(getattr(args, name)))
    for key in ("lr", "temperature"):
        if isinstance(flat.get(key), list) and len(flat[key]) == 1:
            flat[key] = flat[key][0]
    seeds = seeds_from_args(args, default_count=1)
    if seeds is not None:
        flat["seeds"] = seeds
    for section, table in place_keys(flat).items():
        if section in values and not isinstance(values[section], dict):
            raise ValueError(f"config section [{section}] must be a table")
        values[section] = {**values.get(section, {}), **table}
    env_params = env_params_from_extra(extra)
    if env_params:
        run = values.setdefault("run", {})
        run["env_params"] = {**run.get("env_params", {}), **env_params}
    return RunConfig.from_dict(values).resolved()
