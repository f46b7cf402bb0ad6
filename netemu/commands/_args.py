"""Argument types for the command line: numbers are finite and in range, or argparse
refuses them naming the option (``float("nan")`` would otherwise pass every comparison
and end as ``NaN`` in the output)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def seconds(*, lo: float | None = None, hi: float | None = None, lo_open: bool = False
            ) -> Callable[[str], float]:
    """An argparse ``type``: a finite number of seconds in [lo, hi] (``lo_open``: > lo)."""
    return number(lo=lo, hi=hi, lo_open=lo_open, unit=" seconds")


def number(*, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           unit: str = "") -> Callable[[str], float]:
    """An argparse ``type``: a finite number in [lo, hi] (``lo_open``: > lo)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number{unit and ' of'}{unit}"
                                             ) from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number{unit and ' of'}{unit}, "
                                             f"got {text!r}")
        if lo is not None and (v < lo or (lo_open and v == lo)):
            raise argparse.ArgumentTypeError(
                f"must be {'>' if lo_open else '≥'} {lo:g}{unit}{_upto(hi, unit)}, got {text}")
        if hi is not None and v > hi:
            raise argparse.ArgumentTypeError(f"must be ≤ {hi:g}{unit}, got {text}")
        return v

    parse.__name__ = "number"  # argparse names the type in "invalid number value"
    return parse


def _upto(hi: float | None, unit: str) -> str:
    return "" if hi is None else f" and ≤ {hi:g}{unit}"
