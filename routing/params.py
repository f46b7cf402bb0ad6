"""Router parameters from a scenario's ``routing:`` section: checked, with clear errors.

A misspelt parameter must not be ignored silently (the run would measure the defaults),
so every router lists what it accepts in ``PARAMS`` and unknown keys are refused with a
suggestion.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from netemu.config import describe, suggest
from netemu.errors import InputError


def check_params(router: str, params: Mapping[str, object], allowed: Mapping[str, str]) -> None:
    """Refuse keys of ``params`` that are not in ``allowed`` (name → description)."""
    for key in params:
        if key in allowed:
            continue
        hint = suggest(str(key), sorted(allowed)) if allowed else "; it takes no parameters"
        raise InputError(f"unknown parameter {key!r} for router {router}{hint}",
                         field=f"routing.{key}")


def number(router: str, params: Mapping[str, object], key: str, default: float, *,
           minimum: float | None = None, maximum: float | None = None,
           integer: bool = False) -> float:
    """``params[key]`` as a number (``default`` when absent), within bounds."""
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise InputError(f"{router}: expected a number, got {describe(v)}", field=f"routing.{key}")
    if integer and float(v) != int(v):
        raise InputError(f"{router}: expected a whole number, got {v!r}", field=f"routing.{key}")
    x = int(v) if integer else float(v)
    if minimum is not None and x < minimum:
        raise InputError(f"{router}: must be ≥ {minimum:g}, got {v!r}", field=f"routing.{key}")
    if maximum is not None and x > maximum:
        raise InputError(f"{router}: must be ≤ {maximum:g}, got {v!r}", field=f"routing.{key}")
    return x
