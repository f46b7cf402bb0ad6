"""Baselines: a scenario's metrics from a stored run, and the tolerances a new run keeps.

An ``expect:`` item with ``baseline:`` compares a metric with the same metric of a stored
run instead of (or as well as) a fixed value::

    expect:
      - {metric: traffic.delivery_ratio, baseline: -2%}      # may fall by 2 % at most
      - {metric: traffic.latency_s.p95, baseline: +10%}      # may rise by 10 % at most
      - {metric: link_bytes_total, baseline: +5000}          # … by 5000 at most (absolute)

``netemu test --baseline DIR`` reads ``DIR/<scenario name>.json`` and checks these;
``--update-baseline`` writes that file from the run instead. A baseline file records the
netemu version and the scenario file's SHA-256 (and the routing it ran with); a run
whose differ is still compared, and says so.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from netemu import __version__
from netemu.analysis.expect import (
    EXPECT_KEYS,
    Expectation,
    Outcome,
    lookup,
    validate,
)
from netemu.config import Fields
from netemu.errors import InputError

TOLERANCE_RE = re.compile(r"^\s*([+-])\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(%?)\s*$")
FORMAT = 1


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move from its baseline, in one direction: ``sign`` -1 (may
    fall by ``amount``) or +1 (may rise); ``relative``: ``amount`` is a fraction of the
    baseline value."""

    sign: int
    amount: float
    relative: bool

    @property
    def text(self) -> str:
        a = f"{self.amount * 100:g}%" if self.relative else f"{self.amount:g}"
        return ("-" if self.sign < 0 else "+") + a

    def limit(self, base: float) -> float:
        """The worst value still within the tolerance of ``base``."""
        step = abs(base) * self.amount if self.relative else self.amount
        return base + self.sign * step

    def allows(self, base: float, new: float) -> bool:
        lim = self.limit(base)
        eps = 1e-9 * max(1.0, abs(lim))
        return new >= lim - eps if self.sign < 0 else new <= lim + eps


@dataclass(frozen=True)
class BaselineCheck:
    metric: str
    tolerance: Tolerance
    source: str | None = None
    line: int | None = None
    field: str | None = None

    @property
    def text(self) -> str:
        return f"{self.metric} vs baseline ({self.tolerance.text})"


DEFAULT_TOLERANCES: dict[str, str] = {
    # counts and ratios did not move at all over the repeats: a floor of 1 %
    "delivery_ratio": "-1%",
    "bundles_delivered": "-1%",
    "traffic.delivered": "-1%",
    "traffic.delivery_ratio": "-1%",
    "traffic.expected_delivery_ratio": "-1%",
    # bytes did not move either: a floor of 2 % (retransmissions, a session set up again)
    "link_bytes_total": "+2%",
    # latencies: three times the spread seen
    "traffic.latency_s.p50": "+75%",         # spread 23 %
    "traffic.latency_s.p95": "+5%",          # spread 1.3 %
    "bundle_latency_p95_s": "+10%",          # spread 3.4 %
    "traffic.latency_vs_projection_s.p50": "+0.15",  # spread 0.042 s (29 % of 0.14 s)
    "traffic.latency_vs_projection_s.p95": "+4",     # spread 1.18 s (207 % of 0.57 s)
}
"""``baseline: default``: the tolerance for a metric, from its measured spread over five
repeats of a suite scenario on a 2-core machine (docs/ci.md: three times the spread,
rounded up). A per-entry traffic figure (``traffic.by_name.NAME.X``) takes ``traffic.X``'s."""


def default_tolerance(metric: str) -> str | None:
    """The default tolerance text for ``metric`` (None: no default is known)."""
    if metric in DEFAULT_TOLERANCES:
        return DEFAULT_TOLERANCES[metric]
    parts = metric.split(".")
    if len(parts) >= 4 and parts[:2] == ["traffic", "by_name"]:
        for tail in (1, 2):
            got = DEFAULT_TOLERANCES.get(".".join(["traffic", *parts[-tail:]]))
            if got is not None:
                return got
    return None


def parse_tolerance(item: Fields) -> Tolerance:
    """``baseline: -2%`` / ``+10%`` / ``-0.05`` / ``+5000``: the sign is required (which
    way is worse depends on the metric); ``default``: :data:`DEFAULT_TOLERANCES`."""
    v = item.get("baseline")
    if v == "default":
        metric = str(item.get("metric"))
        v = default_tolerance(metric)
        if v is None:
            raise item.error(f"no default tolerance for {metric}; defaults exist for "
                             f"{', '.join(DEFAULT_TOLERANCES)}: give one (-2%, +10%, …)",
                             "baseline")
    text = v if isinstance(v, str) else (repr(v) if isinstance(v, (int, float))
                                         and not isinstance(v, bool) else None)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
        text = None  # YAML reads +5 as 5: the sign is lost, so say how to write it
    m = TOLERANCE_RE.match(text) if text is not None else None
    if m is None:
        raise item.error(f"expected a signed tolerance such as -2% (may fall by 2 %), +10% "
                         f"or +5000 (absolute; quote it: '+5000'), got {v!r}", "baseline")
    sign, num, pct = m.groups()
    amount = float(num) / (100.0 if pct else 1.0)
    if not math.isfinite(amount):
        raise item.error(f"tolerance {v!r} is not a finite number", "baseline")
    return Tolerance(-1 if sign == "-" else 1, amount, bool(pct))


def parse(section: Fields) -> list[BaselineCheck]:
    """The ``expect:`` items with ``baseline:`` (the others are :mod:`.expect`'s)."""
    if section.is_none():
        return []
    out = []
    for item in section.items():
        item.check_keys(EXPECT_KEYS, required=("metric",))
        if "baseline" not in item:
            continue
        metric = item.string("metric", required=True)
        assert metric is not None
        out.append(BaselineCheck(metric, parse_tolerance(item), item.source, item.line,
                                 item.path))
    validate([Expectation(c.metric, ">=", 0.0, c.source, c.line, c.field) for c in out])
    return out


# --------------------------------------------------------------------------- the file


def scenario_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def baseline_path(directory: str | Path, scenario: str) -> Path:
    return Path(directory) / f"{scenario}.json"


def _numbers(metrics: Mapping[str, Any], names: Sequence[str]) -> dict[str, float]:
    """Top-level numbers of ``metrics`` and those of ``names`` (dotted paths)."""
    out: dict[str, float] = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = v
    for name in names:
        found, v = lookup(metrics, name)
        if found and isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = v
    return dict(sorted(out.items()))


def _traffic_paths(metrics: Mapping[str, Any]) -> list[str]:
    """Every number under ``traffic`` (but its per-entry detail), as dotted paths."""
    out: list[str] = []

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                if k not in ("by_name", "projection"):
                    walk(f"{prefix}.{k}", v)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out.append(prefix)

    walk("traffic", metrics.get("traffic"))
    return out


def make(metrics: Mapping[str, Any], *, scenario: str, scenario_path: str | Path,
         routing: str | None, checks: Sequence[BaselineCheck] = ()) -> dict[str, Any]:
    """A baseline from a run's metrics: every top-level number, the traffic totals and
    whatever ``checks`` name."""
    names = [*_traffic_paths(metrics), *(c.metric for c in checks)]
    return {"format": FORMAT, "scenario": scenario,
            "scenario_sha256": scenario_sha256(scenario_path),
            "netemu_version": __version__, "routing": routing,
            "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "run": metrics.get("run"), "metrics": _numbers(metrics, names)}


def write(directory: str | Path, baseline: Mapping[str, Any]) -> Path:
    p = baseline_path(directory, str(baseline["scenario"]))
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(baseline, indent=1) + "\n")
    return p


def load(directory: str | Path, scenario: str) -> dict[str, Any] | None:
    """``DIR/<scenario>.json``, None when there is none; a broken one is an error."""
    p = baseline_path(directory, scenario)
    if not p.exists():
        return None
    try:
        obj = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", source=str(p), line=e.lineno) from e
    if not isinstance(obj, dict) or not isinstance(obj.get("metrics"), dict):
        raise InputError("not a netemu baseline (no metrics object)", source=str(p))
    return obj


def differences(baseline: Mapping[str, Any], *, scenario_path: str | Path,
                routing: str | None) -> list[str]:
    """What differs between the baseline's run and this one (version, scenario, routing)."""
    out = []
    if baseline.get("netemu_version") != __version__:
        out.append(f"the baseline was made by netemu {baseline.get('netemu_version')}, "
                   f"this is {__version__}")
    if baseline.get("scenario_sha256") != scenario_sha256(scenario_path):
        out.append("the scenario file changed since the baseline was made "
                   f"(SHA-256 {str(baseline.get('scenario_sha256'))[:12]}… then, "
                   f"{scenario_sha256(scenario_path)[:12]}… now)")
    if routing is not None and baseline.get("routing") not in (None, routing):
        out.append(f"the baseline ran with routing {baseline.get('routing')}, "
                   f"this run with {routing}")
    return out


def compare(checks: Sequence[BaselineCheck], baseline: Mapping[str, Any] | None,
            metrics: Mapping[str, Any], *, where: str = "") -> list[Outcome]:
    """One outcome per check: passed, failed (message: baseline value, new value,
    tolerance) or skipped (no baseline, or the baseline lacks the metric)."""
    out = []
    for c in checks:
        exp = Expectation(c.metric, "baseline", 0.0, c.source, c.line, c.field, label=c.text)
        if baseline is None:
            out.append(Outcome(exp, None, True, f"{c.text}: no baseline{where} "
                               "(make one with --update-baseline)", skipped=True))
            continue
        base = baseline["metrics"].get(c.metric)
        if not isinstance(base, (int, float)) or isinstance(base, bool):
            out.append(Outcome(exp, None, True, f"{c.text}: the baseline has no value for "
                               f"{c.metric} (update it with --update-baseline)", skipped=True))
            continue
        found, new = lookup(metrics, c.metric)
        if not found or not isinstance(new, (int, float)) or isinstance(new, bool):
            out.append(Outcome(exp, None, False, f"{c.text}: baseline {base:.6g}, not "
                               "measured in this run (no data)"))
            continue
        tol = c.tolerance
        ok = tol.allows(float(base), float(new))
        bound = "≥" if tol.sign < 0 else "≤"
        change = (f"{(new - base) / abs(base) * 100:+.1f}%" if base else f"{new - base:+.6g}")
        out.append(Outcome(exp, float(new), ok, (
            f"{c.metric}: baseline {base:.6g}, new {new:.6g} ({change}), tolerance {tol.text} "
            f"(allowed {bound} {tol.limit(float(base)):.6g}) — {'ok' if ok else 'FAILED'}")))
    return out


__all__ = ["BaselineCheck", "Tolerance", "compare", "differences", "load", "make", "parse",
           "parse_tolerance", "write"]
