"""Run configuration from a TOML file plus command-line overrides.

Every RunConfig field is a `--key value` option (underscores or dashes);
environment parameters are `--env.PARAM value`; `--seeds S` means seeds
F..F+S-1 (`--first-seed F`, default 0) and `--seed-list a,b,c` names them.
`--lr` and `--temperature` take one number or a comma-separated list of grid
values: the run is their cross product with the seeds. The field comments in learner/config.py are the help text and
its section lines (`# -- what to run ---`) the help groups, so the documentation
lives in one place.
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

from mbgen.learner.config import RunConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPECIAL = {"seeds", "env_params"}  # fields with their own command-line forms


def field_help() -> dict[str, str]:
    """Each RunConfig field's trailing comment, read from its source."""
    return {name: text for name, (_, text) in field_docs().items()}


def field_docs() -> dict[str, tuple[str, str]]:
    """Each RunConfig field's (section, comment): sections are the `# -- name ---` lines above them."""
    section, docs = "", {}
    for line in inspect.getsource(RunConfig).splitlines():
        header = re.match(r"^\s+# -- (.+?) -+$", line)
        if header:
            section = re.sub(r"\s*\(.*\)$", "", header.group(1))
            continue
        found = re.match(r"^\s+(\w+): [^#\n]*#\s*(.*)$", line)
        if found:
            docs[found.group(1)] = (section, found.group(2).strip())
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


def add_run_options(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """Every RunConfig field as a flag, grouped by the sections of learner/config.py, defaults shown;
    returns the groups by name (what to run, learning, system)."""
    docs = field_docs()
    defaults = RunConfig()
    groups: dict[str, argparse._ArgumentGroup] = {}

    def group(name: str) -> argparse._ArgumentGroup:
        if name not in groups:
            groups[name] = parser.add_argument_group(name)
        return groups[name]

    run = group("what to run")
    run.add_argument("--config", metavar="FILE", help="TOML file of config keys; flags override it")
    add_seed_options(run, "at every grid point (default: 1 seed, 0)")
    run.add_argument(
        "--env.PARAM",
        dest="_env_param_doc",
        metavar="VALUE",
        help="an environment parameter, e.g. --env.grid_size 4 (repeatable; see the list below)",
    )
    for f in dataclasses.fields(RunConfig):
        if f.name in SPECIAL:
            continue
        section, text = docs.get(f.name, ("system", ""))
        flag = "--" + f.name.replace("_", "-")
        shown = f"{text} (default: {default_text(getattr(defaults, f.name))})"
        if str(f.type) == "bool":  # a bare --flag means true
            group(section).add_argument(flag, dest=f.name, nargs="?", const="true", metavar="true|false", help=shown)
        else:
            group(section).add_argument(flag, dest=f.name, metavar="V", default=None, help=shown)
    return groups


def run_epilog() -> str:
    """The agents and environments, with each environment's parameters and its score scale."""
    from mbgen import envs
    from mbgen.envs.scores import reference_scores
    from mbgen.learner.agents import AGENTS

    lines = ["agents (--agent):"]
    lines += [f"  {name:<13} {spec.description}" for name, spec in AGENTS.items()]
    lines.append("")
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


_TYPES = {f.name: str(f.type) for f in dataclasses.fields(RunConfig)}


def _coerce(key: str, value: Any) -> Any:
    """Fit command-line spellings to a field's type: 3e4 for an int, a scalar for a list."""
    kind = _TYPES.get(key, "")
    if kind.startswith("list") and not isinstance(value, list):
        return [value]
    if kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def config_from_args(args: argparse.Namespace, extra: list[str], base: dict[str, Any] | None = None) -> RunConfig:
    """Merge defaults < `base` (or the TOML file) < flags; the result is validated."""
    values: dict[str, Any] = load_toml(args.config) if args.config else dict(base or {})
    if "env" in values and isinstance(values["env"], dict):
        raise ValueError('config file: put environment parameters under [env_params], and env = "name"')
    env_params = dict(values.get("env_params", {}))
    names = {f.name for f in dataclasses.fields(RunConfig)}
    for f in dataclasses.fields(RunConfig):
        raw = None if f.name in SPECIAL else getattr(args, f.name, None)
        if raw is not None:
            values[f.name] = parse_value(raw)
    seeds = seeds_from_args(args, default_count=1)
    if seeds is not None:
        values["seeds"] = seeds
    env_params.update(env_params_from_extra(extra))
    values["env_params"] = env_params
    for key in ("lr", "temperature"):
        if isinstance(values.get(key), list) and len(values[key]) == 1:
            values[key] = values[key][0]
    values = {k: _coerce(k, v) for k, v in values.items()}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown config key {', '.join(unknown)}; see `mbgen run --help` for the keys")
    return RunConfig.from_dict(values).resolved()
