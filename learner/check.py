"""Validation of configuration values: each refusal is one line naming the key and what is allowed."""

from __future__ import annotations

import math
from typing import Any, NoReturn


def fail(key: str, allowed: str, value: Any) -> NoReturn:
    raise ValueError(f"{key} must be {allowed}, got {value!r}")


def integer(key: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        fail(key, f"an integer >= {low}", value)


def number(key: str, value: Any, low: float, strict: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        fail(key, f"a number {'>' if strict else '>='} {low}", value)


def boolean(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(key, "true or false", value)


def text(key: str, value: Any) -> None:
    if not isinstance(value, str):
        fail(key, "a string", value)


def integer_list(key: str, value: Any, low: int) -> None:
    ok = isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not ok or min(value) < low:
        fail(key, f"a non-empty list of integers >= {low}", value)
