"""IP routing figures from a run's ``iproute/`` directory (:mod:`netemu.emulator.ipmeasure`).

- **Convergence** after a topology change, per probe pair: if the pair's path was not
  optimal at some sample before the next change (its delay more than ``tolerance`` above
  the oracle's over the same links, or no path where the oracle has one), the time from
  the change to the first sample from which it stays optimal until the next change. A
  pair that never settles before the next change counts as unconverged, with the time to
  that change. Resolution: the sampling interval.
- **Path stretch**: the used path's delay over the oracle's, per sample where both exist.
- **Probe loss**: datagrams sent while the oracle had a path between the pair (at the
  latest sample before) and not received; a *loss window* is a run of consecutive lost
  datagrams, its *outage* the scenario time from the first lost one to the next received
  one. Datagrams sent while no path existed at all are not counted: no routing could
  have carried them (from the topology change that took the last path away, when a
  sample finds none).
- **Routes**: routes in each node's main table, mean and largest over the samples.
- **Control traffic**: bytes of the protocol's own packets the nodes sent
  (``control.json``), per link and wall second of link-up time.

The routes' *bring-up* (``ip_initial_convergence_s``: from the first sample to the first
moment every pair's path is optimal) is left out of the figures above: a protocol's
first adjacencies are not a reaction to a topology change.
"""

from __future__ import annotations

import bisect
import json
import math
from pathlib import Path
from typing import Any

from netemu.analysis.stats import percentile

DOCS: dict[str, str] = {
    "ip_initial_convergence_s": "from the first path sample until every probe pair's path "
                                "was optimal at once (the routes' bring-up, scenario s)",
    "ip_convergence_p50_s": "median time after a topology change until a probe pair's path "
                            "is within the tolerance of the oracle's (pairs it disturbed)",
    "ip_convergence_p95_s": "95th percentile of the same",
    "ip_convergence_max_s": "largest of the same",
    "ip_convergence_events": "(change, pair) cases the change disturbed",
    "ip_unconverged": "of those, the cases still not converged at the next change",
    "ip_path_stretch_p50": "median delay of the path in use over the oracle's (samples)",
    "ip_path_stretch_p95": "95th percentile of the same",
    "ip_unreachable_fraction": "samples with no working path where the oracle had one",
    "ip_routes_mean": "routes in a node's main table, mean over nodes and samples",
    "ip_routes_max": "largest main table of a node in any sample",
    "ip_control_bytes": "bytes of routing-protocol packets (OSPF, BFD) the nodes sent",
    "ip_control_bytes_per_link_s": "the same per link and per wall second of link-up time",
    "probe_sent": "probe datagrams sent while a path existed (all pairs)",
    "probe_loss_ratio": "of those, the fraction lost",
    "probe_loss_windows": "runs of consecutive lost probe datagrams",
    "probe_outage_p50_s": "median outage of a loss window (scenario s)",
    "probe_outage_max_s": "longest outage of a loss window (scenario s)",
    "probe_outage_total_s": "sum of the outages (scenario s, all pairs)",
}


def _r(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(x, nd)


def _optimal(s: dict[str, Any], tolerance: float) -> bool:
    od, d = s.get("oracle_delay_s"), s.get("delay_s")
    if od is None:
        return True  # nothing can reach it now
    if d is None:
        return False
    return bool(d <= od * (1.0 + tolerance) + 1e-6)


def warm_up_end(lines: list[dict[str, Any]], tolerance: float) -> float | None:
    """The first sample time at which every pair's latest path is optimal (None: never)."""
    latest: dict[tuple[str, str], bool] = {}
    pairs = {(x["src"], x["dst"]) for x in lines if x.get("kind") == "path"}
    for x in sorted((x for x in lines if x.get("kind") == "path"), key=lambda x: x["t_s"]):
        latest[(x["src"], x["dst"])] = _optimal(x, tolerance)
        if len(latest) == len(pairs) and all(latest.values()):
            return float(x["t_s"])
    return None


def path_metrics(lines: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Convergence, stretch, reachability and table sizes from ``paths.jsonl`` lines
    (those after the bring-up: :func:`warm_up_end`)."""
    samples_all = [x for x in lines if x.get("kind") == "path"]
    t_first = min((float(x["t_s"]) for x in samples_all), default=None)
    t_warm = warm_up_end(lines, tolerance)
    start = t_warm if t_warm is not None else math.inf
    changes = sorted({float(x["t_s"]) for x in lines
                      if x.get("kind") == "change" and float(x["t_s"]) >= start})
    kinds: dict[float, set[str]] = {}  # change time → the kinds of link that changed
    for x in lines:
        if x.get("kind") == "change":
            kinds.setdefault(float(x["t_s"]), set()).add(str(x.get("link") or "other"))
    by_link: dict[str, list[float]] = {}
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for x in samples_all:
        if float(x["t_s"]) >= start:
            by_pair.setdefault((x["src"], x["dst"]), []).append(x)
    conv: list[float] = []
    disturbed = unconverged = 0
    stretch: list[float] = []
    unreachable = total = 0
    for samples in by_pair.values():
        samples.sort(key=lambda s: s["t_s"])
        for s in samples:
            total += 1
            if s.get("oracle_delay_s") is not None and s.get("delay_s") is None:
                unreachable += 1
            od, d = s.get("oracle_delay_s"), s.get("delay_s")
            if od and d is not None:
                stretch.append(d / od)
        for i, tc in enumerate(changes):
            tn = changes[i + 1] if i + 1 < len(changes) else math.inf
            window = [s for s in samples if tc <= s["t_s"] < tn]
            ok = [_optimal(s, tolerance) for s in window]
            if not window or all(ok):
                continue
            disturbed += 1
            last_bad = max(k for k, good in enumerate(ok) if not good)
            if last_bad == len(window) - 1:
                unconverged += 1
                if not math.isfinite(tn):
                    continue
                c = tn - tc
            else:
                c = window[last_bad + 1]["t_s"] - tc
            conv.append(c)
            for k in kinds.get(tc, ()):
                by_link.setdefault(k, []).append(c)
    routes = [x for x in lines if x.get("kind") == "routes"]
    zero = 0.0 if t_warm is not None else None
    return {
        "ip_initial_convergence_s": _r(t_warm - t_first) if t_warm is not None
        and t_first is not None else None,
        # sampled, and no change disturbed a pair for a whole sample: 0
        "ip_convergence_p50_s": _r(percentile(conv, 50)) if conv else zero,
        "ip_convergence_p95_s": _r(percentile(conv, 95)) if conv else zero,
        "ip_convergence_max_s": _r(max(conv)) if conv else zero,
        "ip_convergence_events": disturbed if samples_all else None,
        "ip_unconverged": unconverged if samples_all else None,
        "ip_convergence_by_link": {
            k: {"events": len(v), "p50_s": _r(percentile(v, 50)),
                "p95_s": _r(percentile(v, 95))} for k, v in sorted(by_link.items())} or None,
        "ip_path_stretch_p50": _r(percentile(stretch, 50), 4),
        "ip_path_stretch_p95": _r(percentile(stretch, 95), 4),
        "ip_unreachable_fraction": _r(unreachable / total, 4) if total else None,
        "ip_routes_mean": _r(sum(x["mean"] for x in routes) / len(routes), 1) if routes
        else None,
        "ip_routes_max": max(x["max"] for x in routes) if routes else None,
    }


def _read_log(p: Path) -> list[tuple[int, float]]:
    out = []
    for line in p.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), float(parts[1])))
    return out


def probe_metrics(probe_dir: Path,
                  no_path: dict[tuple[str, str], list[tuple[float, bool]]] | None = None,
                  *, after_s: float = -math.inf) -> dict[str, Any]:
    """Loss and loss windows from each pair's ``.sent`` / ``.recv`` logs; ``no_path``:
    per pair, (sample time, whether the oracle had no path) in time order. Datagrams
    sent before ``after_s`` (the bring-up) or in the last second (they may still be in
    flight) are left out."""
    sent_n = lost_n = 0
    outages: list[float] = []
    try:
        pairs = json.loads((probe_dir / "pairs.json").read_text())
    except (OSError, ValueError):
        pairs = {}
    for tag, (src, dst) in sorted(pairs.items()):
        sent_p = probe_dir / f"{tag}.sent"
        sent = _read_log(sent_p) if sent_p.exists() else []
        recv_p = sent_p.with_suffix(".recv")
        got = {seq for seq, _t in _read_log(recv_p)} if recv_p.exists() else set()
        if not sent:
            continue
        cutoff = sent[-1][1] - 1.0
        gaps = (no_path or {}).get((src, dst), [])
        times = [t for t, _gap in gaps]
        start: float | None = None
        last_t = 0.0
        for q, t in sent:
            if t > cutoff:
                break
            if t < after_s:
                continue
            last_t = t
            if times and gaps[max(0, bisect.bisect_right(times, t) - 1)][1]:
                if start is not None:  # no path from here on: the window ends
                    outages.append(t - start)
                    start = None
                continue
            sent_n += 1
            if q not in got:
                lost_n += 1
                if start is None:
                    start = t
            elif start is not None:
                outages.append(t - start)
                start = None
        if start is not None:
            outages.append(last_t - start)
    if not sent_n:
        return {k: None for k in DOCS if k.startswith("probe_")}
    return {
        "probe_sent": sent_n,
        "probe_loss_ratio": round(lost_n / sent_n, 5),
        "probe_loss_windows": len(outages),
        "probe_outage_p50_s": _r(percentile(outages, 50)),
        "probe_outage_max_s": _r(max(outages)) if outages else 0.0,
        "probe_outage_total_s": _r(sum(outages)),
    }


def control_metrics(iproute_dir: Path, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Routing control traffic from ``control.json`` and the sampler's link-up time."""
    try:
        c = json.loads((iproute_dir / "control.json").read_text())
        total = int(c.get("ospf_bytes", 0)) + int(c.get("bfd_bytes", 0))
    except (OSError, ValueError, AttributeError):
        return {}
    if c.get("counted") is False:  # a protocol the IP counters cannot see (IS-IS)
        return {"ip_control_bytes": None, "ip_control_bytes_per_link_s": None}
    link_s = sum(float(x.get("link_wall_s", 0.0)) for x in lines if x.get("kind") == "links")
    return {"ip_control_bytes": total,
            "ip_control_bytes_per_link_s": round(total / link_s, 2) if link_s > 0 else None}


def iproute_metrics(iproute_dir: Path, *, tolerance: float = 0.05) -> dict[str, Any]:
    """Every figure of :data:`DOCS` (None where the run measured nothing)."""
    out: dict[str, Any] = {k: None for k in DOCS}
    paths = iproute_dir / "paths.jsonl"
    lines = []
    if paths.exists():
        for raw in paths.read_text().splitlines():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue  # a line cut by the end of the run
        out.update(path_metrics(lines, tolerance))
    no_path: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for x in lines:
        if x.get("kind") == "path":
            no_path.setdefault((x["src"], x["dst"]), []).append(
                (float(x["t_s"]), x.get("oracle_delay_s") is None))
    # a path gone at a change is gone from the change on, not from the next sample
    change_times = sorted(float(x["t_s"]) for x in lines if x.get("kind") == "change")
    for key, v in no_path.items():
        v.sort()
        extra = []
        for (t0, gap0), (t1, gap1) in zip(v, v[1:], strict=False):
            if gap1 and not gap0:
                k = bisect.bisect_right(change_times, t1) - 1
                if k >= 0 and change_times[k] > t0:
                    extra.append((change_times[k], True))
        no_path[key] = sorted(v + extra)
    out.update(control_metrics(iproute_dir, lines))
    if (iproute_dir / "probes").is_dir():
        warm = warm_up_end(lines, tolerance) if lines else None
        out.update(probe_metrics(iproute_dir / "probes", no_path,
                                 after_s=warm if warm is not None else -math.inf))
    return out
