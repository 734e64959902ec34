"""Run configuration from a TOML file plus command-line overrides.

Every RunConfig field is a `--key value` option (underscores or dashes);
environment parameters are `--env.PARAM value`; `--seeds S` means seeds
0..S-1 and `--seed-list a,b,c` names them. Per-member values (`--lr`,
`--temperature`) take one number or a comma-separated list. The field comments
in learner/config.py are the help text, so the documentation lives in one place.
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

from learner.config import RunConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPECIAL = {"seeds", "env_params"}  # fields with their own command-line forms


def field_help() -> dict[str, str]:
    """Each RunConfig field's trailing comment, read from its source."""
    source = inspect.getsource(RunConfig)
    return {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s+(\w+): [^#\n]*#\s*(.*)$", source, re.M)}


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


def dump_toml(values: dict[str, Any]) -> str:
    """TOML for a flat mapping with nested tables (enough for RunConfig)."""
    lines, tables = [], []
    for key, value in values.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, table in tables:
        lines.append(f"\n[{key}]")
        lines.extend(f"{k} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def add_run_options(parser: argparse.ArgumentParser) -> None:
    helps = field_help()
    parser.add_argument("--config", metavar="FILE", help="TOML file of config keys; flags override it")
    parser.add_argument("--seeds", type=int, metavar="S", help="run seeds 0..S-1 as one population")
    parser.add_argument("--seed-list", metavar="A,B,...", help="run these seeds as one population")
    parser.add_argument(
        "--env.PARAM",
        dest="_env_param_doc",
        metavar="VALUE",
        help="an environment parameter, e.g. --env.grid_size 4 (repeatable)",
    )
    for f in dataclasses.fields(RunConfig):
        if f.name in SPECIAL:
            continue
        flag = "--" + f.name.replace("_", "-")
        parser.add_argument(flag, dest=f.name, metavar="V", default=None, help=helps.get(f.name, ""))


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


def config_from_args(args: argparse.Namespace, extra: list[str]) -> RunConfig:
    """Merge defaults < TOML file < flags; the result is validated."""
    values: dict[str, Any] = load_toml(args.config) if args.config else {}
    if "env" in values and isinstance(values["env"], dict):
        raise ValueError('config file: put environment parameters under [env_params], and env = "name"')
    env_params = dict(values.get("env_params", {}))
    names = {f.name for f in dataclasses.fields(RunConfig)}
    for f in dataclasses.fields(RunConfig):
        raw = None if f.name in SPECIAL else getattr(args, f.name, None)
        if raw is not None:
            values[f.name] = parse_value(raw)
    if args.seeds is not None and args.seed_list is not None:
        raise ValueError("give either --seeds S or --seed-list A,B,..., not both")
    if args.seeds is not None:
        if args.seeds < 1:
            raise ValueError(f"--seeds must be an integer >= 1, got {args.seeds}")
        values["seeds"] = list(range(args.seeds))
    if args.seed_list is not None:
        seeds = parse_value(args.seed_list)
        values["seeds"] = seeds if isinstance(seeds, list) else [seeds]
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
