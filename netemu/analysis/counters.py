"""The agents' ``counters/<node>`` samples, summed per node kind (satellite, ground).

Each sample holds a node's cumulative counters (received, forwarded, delivered, deleted,
expired, sent, refused: they restart from 0 when the agent restarts) and its gauges now
(stored bundles and bytes, bundles queued for neighbours, sessions up). A node's totals
are its last sample's counters plus, for every restart seen (a counter that went down),
the value it had reached before; gauges are forward-filled between samples (an agent
skips a sample that did not change). Periodic samples carry ``grid_s``, the instant all
nodes' samples share: storage summed per kind at each instant gives the series and its
peak, and the per-node storage at the satellites' peak is what the report draws on the
map.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

CUMULATIVE = ("received", "forwarded", "delivered", "deleted", "expired", "sent", "refused")
GAUGES = ("stored_bundles", "stored_bytes", "queued", "sessions_up")
TOP_NODES = 10
"""Nodes listed in ``metrics.json`` as those holding the most bundles at the peak."""


def expect_paths() -> list[str]:
    """Every number of ``node_counters`` that ``expect:`` may name (``KIND``: a node kind,
    or ``all``)."""
    fields = ("nodes", *CUMULATIVE, *(f"{g}_end" for g in GAUGES), "stored_bundles_peak",
              "stored_bundles_peak_t_s", "stored_bytes_peak")
    return ["node_counters.nodes", "node_counters.samples",
            *(f"node_counters.by_kind.KIND.{f}" for f in fields)]


def _topic_parts(ev: dict[str, Any]) -> list[str]:
    parts = str(ev.get("topic", "")).split("/")
    return parts[2:] if len(parts) > 2 and parts[0] == "netemu" else parts


def node_kinds(plan: dict[str, Any] | None) -> dict[str, str]:
    """{node: kind} from plan.json's ``node_info``."""
    info = (plan or {}).get("node_info") or {}
    return {n: str(i.get("kind") or "unknown") for n, i in info.items() if isinstance(i, dict)}


@dataclass
class CounterScan:
    """One pass over the samples: totals per node, storage per kind over time and the
    per-node storage at each kind's peak."""

    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    gauges: dict[str, dict[str, int]] = field(default_factory=dict)
    series: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)
    """kind -> [(instant t_s, stored bundles, stored bytes)] summed over the kind's nodes."""
    peak: dict[str, tuple[float, int, dict[str, int]]] = field(default_factory=dict)
    """kind -> (t_s, stored bundles, {node: stored bundles at that instant})."""
    node_peak: dict[str, tuple[float, int]] = field(default_factory=dict)
    """node -> (t_s, its largest stored bundles)."""
    samples: int = 0


def scan(events: list[dict[str, Any]], kinds: dict[str, str]) -> CounterScan:
    """Scan the ``counters/<node>`` samples among ``events`` (any order)."""
    rows: list[tuple[float, int, str, dict[str, Any]]] = []
    for i, ev in enumerate(events):
        parts = _topic_parts(ev)
        if len(parts) < 2 or parts[0] != "counters":
            continue
        p = ev.get("payload")
        if not isinstance(p, dict):
            continue
        t = p.get("grid_s", p.get("t_s", ev.get("t_s")))
        if not isinstance(t, (int, float)):
            continue
        rows.append((float(t), i, parts[1], p))
    rows.sort(key=lambda r: (r[0], r[1]))
    out = CounterScan(samples=len(rows))
    base: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CUMULATIVE, 0))
    last: dict[str, dict[str, int]] = {}
    stored: dict[str, dict[str, int]] = defaultdict(dict)  # kind -> node -> bundles
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # kind -> [bundles, bytes]
    stored_bytes: dict[str, int] = {}
    k = 0
    while k < len(rows):
        t = rows[k][0]
        touched: set[str] = set()
        while k < len(rows) and rows[k][0] == t:
            _, _, node, p = rows[k]
            k += 1
            kind = kinds.get(node, "unknown")
            prev = last.get(node)
            cur = {c: int(p.get(c) or 0) for c in CUMULATIVE}
            if prev is not None and any(cur[c] < prev[c] for c in CUMULATIVE):
                for c in CUMULATIVE:  # the agent restarted: keep what it had counted
                    base[node][c] += prev[c]
            last[node] = cur
            out.gauges[node] = {g: int(p.get(g) or 0) for g in GAUGES}
            nb, nbytes = out.gauges[node]["stored_bundles"], out.gauges[node]["stored_bytes"]
            s = sums[kind]
            s[0] += nb - stored[kind].get(node, 0)
            s[1] += nbytes - stored_bytes.get(node, 0)
            stored[kind][node] = nb
            stored_bytes[node] = nbytes
            if nb > out.node_peak.get(node, (0.0, -1))[1]:
                out.node_peak[node] = (t, nb)
            touched.add(kind)
        for kind in touched:
            nb, nbytes = sums[kind]
            out.series.setdefault(kind, []).append((t, nb, nbytes))
            if kind not in out.peak or nb > out.peak[kind][1]:
                out.peak[kind] = (t, nb, {n: v for n, v in stored[kind].items() if v})
    for node, cur in last.items():
        out.totals[node] = {c: base[node][c] + cur[c] for c in CUMULATIVE} if node in base \
            else dict(cur)
    return out


def total_series(sc: CounterScan) -> tuple[list[float], list[int], list[int]]:
    """Storage summed over every kind at each instant (each kind forward-filled):
    (instants, stored bundles, stored bytes)."""
    instants = sorted({t for series in sc.series.values() for t, _, _ in series})
    cur = dict.fromkeys(sc.series, (0, 0))
    idx = dict.fromkeys(sc.series, 0)
    bundles: list[int] = []
    nbytes: list[int] = []
    for t in instants:
        for kind, series in sc.series.items():
            while idx[kind] < len(series) and series[idx[kind]][0] <= t:
                cur[kind] = series[idx[kind]][1:]
                idx[kind] += 1
        bundles.append(sum(v[0] for v in cur.values()))
        nbytes.append(sum(v[1] for v in cur.values()))
    return instants, bundles, nbytes


def counter_metrics(events: list[dict[str, Any]], plan: dict[str, Any] | None) -> dict[str, Any]:
    """``node_counters`` of metrics.json: per kind (and ``all``) the nodes that published
    counters, the summed totals, storage at the end and at its peak; empty without
    samples."""
    kinds = node_kinds(plan)
    sc = scan(events, kinds)
    if not sc.totals:
        return {}
    by_kind: dict[str, dict[str, Any]] = {}
    for node, tot in sc.totals.items():
        kind = kinds.get(node, "unknown")
        for key in (kind, "all"):
            agg = by_kind.setdefault(key, {"nodes": 0, **dict.fromkeys(CUMULATIVE, 0),
                                           **{f"{g}_end": 0 for g in GAUGES}})
            agg["nodes"] += 1
            for c in CUMULATIVE:
                agg[c] += tot[c]
            for g in GAUGES:
                agg[f"{g}_end"] += sc.gauges[node][g]
    for kind, series in sc.series.items():
        kagg = by_kind.get(kind)
        if kagg is not None:
            t_peak, nb_peak, _ = sc.peak[kind]
            kagg["stored_bundles_peak"] = nb_peak
            kagg["stored_bundles_peak_t_s"] = t_peak
            kagg["stored_bytes_peak"] = max(b for _, _, b in series)
    t_all, nb_all, bytes_all = total_series(sc)
    if nb_all:
        i = max(range(len(nb_all)), key=lambda j: (nb_all[j], -j))
        by_kind["all"]["stored_bundles_peak"] = nb_all[i]
        by_kind["all"]["stored_bundles_peak_t_s"] = t_all[i]
        by_kind["all"]["stored_bytes_peak"] = max(bytes_all)
    top = sorted(sc.node_peak.items(), key=lambda kv: (-kv[1][1], kv[0]))[:TOP_NODES]
    return {
        "nodes": len(sc.totals),
        "samples": sc.samples,
        "by_kind": dict(sorted(by_kind.items())),
        "top_stored": [{"node": n, "kind": kinds.get(n, "unknown"), "stored_bundles": v,
                        "t_s": t} for n, (t, v) in top if v > 0],
    }
