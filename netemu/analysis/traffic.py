"""Figures of the scenario's ``traffic:`` flows, from what the agents recorded.

Inputs (in the run directory):

- ``traffic.json`` — ``{"service": N, "flows": [...]}``, each flow exactly the fields of
  :class:`netemu.plan.traffic.Flow`;
- ``agents/<node>/traffic.jsonl`` — one object a line: ``{"ev": "sent", "flow", "t_s",
  "size", "id"}`` at the sender (``t_s``: when the bundle was created) and ``{"ev":
  "delivered", "flow", "sent_s", "t_s", "size"}`` at the receiver. A line may repeat after
  a restart (one send is one ``(flow, send time)``; a delivery whose ``sent_s`` is a
  millisecond off its send's ``t_s`` still finds it) and a file's last line may be cut
  short: neither is counted twice or at all;
- ``plan.json`` and ``run.json`` — the contact plan, and the window and routing of the run.

For every send (and every delivery whose send record is missing), the arrival CGR
projects at send time (:class:`netemu.routing.projection.Projector`, with the run's CGR
parameters) is the yardstick: a send is *expected* when that arrival falls inside the
run's window, and each delivered bundle's lateness is its delivery time minus that
arrival (``latency_vs_projection_s``). The totals go into metrics.json under ``traffic``
(per entry name under ``traffic.by_name``); one row per flow goes to
``traffic_flows.csv``.
"""

from __future__ import annotations

import bisect
import csv
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from netemu.errors import InputError
from netemu.plan.traffic import Flow
from netemu.runtime.rundir import RunDir

CSV_COLUMNS = ("id", "name", "key", "src", "dst", "scheduled", "sent", "delivered",
               "delivery_ratio", "latency_p50_s", "latency_p95_s", "latency_max_s",
               "expected", "expected_delivered", "late_p95_s")
"""Columns of ``traffic_flows.csv`` (``late_p95_s``: p95 of delivery − projected arrival)."""

STAT_KEYS = ("scheduled", "sent", "delivered", "delivery_ratio", "latency_s", "expected",
             "expected_delivered", "expected_delivery_ratio", "no_route",
             "latency_vs_projection_s")
"""Figures given in total and per entry name (``latency_s`` and
``latency_vs_projection_s`` are ``{p50, p95, max}``)."""
TOTAL_KEYS = (*STAT_KEYS, "flows", "service", "window_s", "records_skipped",
              "duplicates", "projection", "by_name")
PERCENTILE_KEYS = ("p50", "p95", "max")
MATCH_S = 0.0015
"""How far a delivery's ``sent_s`` may be from its send's ``t_s`` (rounding to ms)."""
_SCALARS = ("scheduled", "sent", "delivered", "delivery_ratio", "expected",
            "expected_delivered", "expected_delivery_ratio", "no_route")
_PCTS = ("latency_s", "latency_vs_projection_s")


def expect_paths() -> list[str]:
    """Every number of ``traffic`` that ``expect:`` may name (``NAME``: an entry name)."""
    stats = [*_SCALARS, *(f"{k}.{p}" for k in _PCTS for p in PERCENTILE_KEYS)]
    return ([f"traffic.{k}" for k in (*stats, "flows", "records_skipped", "duplicates")]
            + [f"traffic.by_name.NAME.{k}" for k in (*stats, "flows")])


def load_flows(run: Path) -> tuple[int | None, list[Flow]] | None:
    """The run's flows from traffic.json (None without one); a malformed file is an
    :class:`InputError` naming it."""
    path = RunDir(run).traffic_json
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
        rows: list[dict[str, Any]] = [
            {k: tuple(v) if isinstance(v, list) else v for k, v in f.items()}
            for f in obj["flows"]]
        flows = [Flow(**r) for r in rows]
    except json.JSONDecodeError as e:
        raise InputError(f"not valid JSON: {e.msg}", source=str(path), line=e.lineno) from e
    except (KeyError, TypeError, AttributeError) as e:
        raise InputError(f"not a traffic file ({{'service', 'flows': [Flow fields]}}): {e}",
                         source=str(path)) from e
    service = obj.get("service")
    return (int(service) if isinstance(service, int) else None), flows


def run_window(run: Path) -> tuple[float, float] | None:
    """(start_s, end_s) of the run's window from run.json (None without one)."""
    rd = RunDir(run)
    try:
        w = json.loads(rd.run_json.read_text()).get("window") or {}
        return float(w["start_s"]), float(w["start_s"]) + float(w["duration_s"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        pass
    return None


def run_routing(run: Path) -> dict[str, Any]:
    """The agents' routing from run.json (``{"algorithm": "cgr"}`` without one)."""
    try:
        r = json.loads(RunDir(run).run_json.read_text()).get("routing")
    except (OSError, json.JSONDecodeError, AttributeError):
        r = None
    return r if isinstance(r, dict) and isinstance(r.get("algorithm"), str) \
        else {"algorithm": "cgr"}


class Records:
    """The flows' sends and deliveries, deduplicated: ``sends[(flow, t_s)] = size`` and
    ``deliveries[(flow, sent_s)] = (t_s, size)`` (the earliest delivery)."""

    def __init__(self) -> None:
        self.sends: dict[tuple[int, float], int] = {}
        self.deliveries: dict[tuple[int, float], tuple[float, int]] = {}
        self.skipped = 0  # lines that were not a whole record
        self.duplicates = 0
        self._times: dict[int, list[float]] | None = None

    def read(self, path: Path) -> None:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return
        loads = json.loads
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                r = loads(line)
                ev, flow = r["ev"], int(r["flow"])
                if ev == "sent":
                    key, size = (flow, float(r["t_s"])), int(r["size"])
                    if key in self.sends:
                        self.duplicates += 1
                    else:
                        self.sends[key] = size
                elif ev == "delivered":
                    key, t, size = (flow, float(r["sent_s"])), float(r["t_s"]), int(r["size"])
                    old = self.deliveries.get(key)
                    if old is not None:
                        self.duplicates += 1
                        if old[0] <= t:
                            continue
                    self.deliveries[key] = (t, size)
                else:
                    self.skipped += 1
            except (ValueError, KeyError, TypeError):  # a cut line (killed writer)
                self.skipped += 1

    def match(self, key: tuple[int, float]) -> tuple[int, float] | None:
        """The send a delivery's key belongs to: the same send time, else the nearest
        one of the flow within :data:`MATCH_S` (a receiver that learnt the send time from
        the bundle's creation time, in milliseconds); None when there is none."""
        if key in self.sends:
            return key
        if self._times is None:
            times: dict[int, list[float]] = defaultdict(list)
            for f, t in self.sends:
                times[f].append(t)
            self._times = {f: sorted(v) for f, v in times.items()}
        flow, t = key
        ts = self._times.get(flow)
        if not ts:
            return None
        i = bisect.bisect_left(ts, t)
        near = [ts[j] for j in (i - 1, i) if 0 <= j < len(ts)]
        best = min(near, key=lambda x: abs(x - t))
        return (flow, best) if abs(best - t) <= MATCH_S else None


def _pct(values: np.ndarray) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if not len(v):
        return dict.fromkeys(PERCENTILE_KEYS, None)
    p50, p95 = np.percentile(v, [50, 95])
    return {"p50": round(float(p50), 6), "p95": round(float(p95), 6),
            "max": round(float(v.max()), 6)}


def _stats(sel: np.ndarray, is_sent: np.ndarray, delivered_t: np.ndarray, t: np.ndarray,
           arrival: np.ndarray | None, expected: np.ndarray | None,
           scheduled: int | None) -> dict[str, Any]:
    """The figures of the rows ``sel``; those of the projection are None without one."""
    sent = int(is_sent[sel].sum())
    dl = np.isfinite(delivered_t[sel])
    n_dl = int(dl.sum())
    out: dict[str, Any] = {
        "scheduled": scheduled, "sent": sent, "delivered": n_dl,
        "delivery_ratio": (n_dl / sent) if sent else None,
        "latency_s": _pct(delivered_t[sel] - t[sel]),
        "expected": None, "expected_delivered": None, "expected_delivery_ratio": None,
        "no_route": None, "latency_vs_projection_s": dict.fromkeys(PERCENTILE_KEYS),
    }
    if arrival is not None and expected is not None:
        n_exp = int(expected[sel].sum())
        exp_dl = int((expected[sel] & dl).sum())
        out.update(expected=n_exp, expected_delivered=exp_dl,
                   expected_delivery_ratio=(exp_dl / n_exp) if n_exp else None,
                   no_route=int((~np.isfinite(arrival[sel]) & is_sent[sel]).sum()),
                   latency_vs_projection_s=_pct(delivered_t[sel] - arrival[sel]))
    return out


def traffic_metrics(run: Path, *, flows_out: list[dict[str, Any]] | None = None,
                    faults: list[tuple[str, float, float]] = (),  # type: ignore[assignment]
                    fault_costs: dict[str, dict[str, int]] | None = None
                    ) -> dict[str, Any] | None:
    """metrics.json's ``traffic`` (None when the run has no traffic.json); one row per
    flow (:data:`CSV_COLUMNS`) is appended to ``flows_out`` when given; what each of
    ``faults`` (id, start_s, end_s) cost (:func:`fault_cost`) goes into ``fault_costs``."""
    loaded = load_flows(run)
    if loaded is None:
        return None
    service, flows = loaded
    by_id = {f.id: f for f in flows}
    rec = Records()
    for path in RunDir(run).traffic_logs():
        rec.read(path)
    # one row per send (and per delivery whose send was not recorded)
    keys = [k for k in rec.sends if k[0] in by_id]
    matched: dict[tuple[int, float], tuple[int, float] | None] = {
        k: rec.match(k) for k in rec.deliveries if k[0] in by_id}
    orphans = [k for k, m in matched.items() if m is None]
    n = len(keys) + len(orphans)
    flow_ix = np.empty(n, dtype=np.int64)
    t = np.empty(n)
    size = np.empty(n, dtype=np.int64)
    is_sent = np.zeros(n, dtype=bool)
    is_sent[:len(keys)] = True
    delivered_t = np.full(n, np.nan)
    row_of: dict[tuple[int, float], int] = {}
    for i, k in enumerate(keys):
        flow_ix[i], t[i], size[i] = k[0], k[1], rec.sends[k]
        row_of[k] = i
    for j, k in enumerate(orphans, start=len(keys)):
        flow_ix[j], t[j], size[j] = k[0], k[1], rec.deliveries[k][1]
        row_of[k] = j
    for k, m in matched.items():
        i = row_of[m if m is not None else k]
        t_dl = rec.deliveries[k][0]
        if not (delivered_t[i] <= t_dl):  # (two deliveries a millisecond apart: the first)
            delivered_t[i] = t_dl
    window = run_window(run)
    arrival, projection = _project(run, by_id, flow_ix, t, size)
    end = window[1] if window is not None else math.inf
    expected = None if arrival is None else (
        np.isfinite(arrival) & (arrival <= end + 1e-9) & is_sent)
    scheduled_by_flow: dict[int, int] = {}
    if window is not None:
        for f in flows:
            scheduled_by_flow[f.id] = sum(1 for _ in f.sends(window[0], window[1]))
    order = np.argsort(flow_ix, kind="stable")
    names: dict[str, list[np.ndarray]] = defaultdict(list)
    sched_by_name: dict[str, int] = defaultdict(int)
    for f in flows:
        lo, hi = np.searchsorted(flow_ix[order], [f.id, f.id + 1])
        sel = order[lo:hi]
        names[f.name].append(sel)
        sched_by_name[f.name] += scheduled_by_flow.get(f.id, 0)
        if flows_out is not None:
            st = _stats(sel, is_sent, delivered_t, t, arrival, expected,
                        scheduled_by_flow.get(f.id))
            flows_out.append({
                "id": f.id, "name": f.name, "key": f.key, "src": f.src, "dst": f.dst,
                "scheduled": st["scheduled"], "sent": st["sent"],
                "delivered": st["delivered"], "delivery_ratio": st["delivery_ratio"],
                "latency_p50_s": st["latency_s"]["p50"],
                "latency_p95_s": st["latency_s"]["p95"],
                "latency_max_s": st["latency_s"]["max"], "expected": st["expected"],
                "expected_delivered": st["expected_delivered"],
                "late_p95_s": st["latency_vs_projection_s"]["p95"]})
    if fault_costs is not None:
        for fid, f0, f1 in faults:
            fault_costs[fid] = fault_cost(f0, f1, t, is_sent, delivered_t, arrival)
    everything = np.arange(n)
    total = _stats(everything, is_sent, delivered_t, t, arrival, expected,
                   sum(scheduled_by_flow.values()) if window is not None else None)
    by_name = {}
    for name, sels in names.items():
        sel = np.concatenate(sels) if sels else np.empty(0, dtype=np.int64)
        by_name[name] = {"flows": len(sels), **_stats(
            sel, is_sent, delivered_t, t, arrival, expected,
            sched_by_name[name] if window is not None else None)}
    return {
        "flows": len(flows), "service": service,
        "window_s": list(window) if window is not None else None,
        **total,
        "records_skipped": rec.skipped, "duplicates": rec.duplicates,
        "projection": projection,
        "by_name": by_name,
    }


LATE_S = 1.0
"""A bundle delivered this much later than CGR projected is late."""


def fault_cost(start_s: float, end_s: float, t: np.ndarray, is_sent: np.ndarray,
               delivered_t: np.ndarray, arrival: np.ndarray | None) -> dict[str, int]:
    """The bundles a fault over [start_s, end_s) caught: sent before it ended, not yet
    delivered when it started, and (with a projection) projected to arrive after it
    started — they were on their way. Of those: ``late`` (delivered more than
    :data:`LATE_S` after the projection) and ``undelivered`` (not delivered in the run:
    expired, or still held at its end). An overlap in time, not a traced path: a bundle
    on a route the fault did not touch counts too."""
    caught = is_sent & (t < end_s) & ~(delivered_t < start_s)
    if arrival is not None:
        caught &= ~(arrival < start_s)  # NaN (no route) stays caught
    dl = np.isfinite(delivered_t)
    late = caught & dl
    if arrival is not None:
        late &= np.isfinite(arrival) & (delivered_t - arrival > LATE_S)
    else:
        late &= np.zeros_like(dl)
    return {"in_transit": int(caught.sum()), "late": int(late.sum()),
            "undelivered": int((caught & ~dl).sum())}


def _project(run: Path, by_id: dict[int, Flow], flow_ix: np.ndarray, t: np.ndarray,
             size: np.ndarray) -> tuple[np.ndarray | None, dict[str, Any]]:
    """Projected arrival of each row (NaN: no route in time); None without a plan."""
    n = len(t)
    info: dict[str, Any] = {"sends": n, "seconds": None, "routing": None}
    path = RunDir(run).plan_json
    if not path.exists():
        return None, info
    from netemu.plan.contacts import ContactPlan
    from netemu.routing.projection import Projector

    t0 = time.monotonic()
    plan = ContactPlan.load(str(path))
    routing = run_routing(run)
    params = {k: v for k, v in routing.items() if k != "algorithm"} \
        if routing["algorithm"] == "cgr" else {}
    try:
        proj = Projector(plan, **params)
        proj.router(next(iter(plan.nodes)))  # (bad parameters fail here, not mid-way)
    except Exception:  # noqa: BLE001 - parameters CGR does not take: its defaults
        proj, params = Projector(plan), {}
    flows = [by_id[int(i)] for i in flow_ix.tolist()]
    arrival = proj.arrivals([f.src for f in flows], [f.dst for f in flows], t, size,
                            [f.priority for f in flows], [f.lifetime_s for f in flows])
    info.update(seconds=round(time.monotonic() - t0, 3), routing="cgr",
                cgr_params=params or None, fresh_route_lists=proj.fresh)
    return arrival, info


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``traffic_flows.csv``: one row per flow, :data:`CSV_COLUMNS`."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r[k]) for k in CSV_COLUMNS})


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a ``traffic_flows.csv`` (empty when missing)."""
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
