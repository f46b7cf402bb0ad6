"""CGR routing decisions on 24-hour plans: first decision, cached decision, memory.

    .venv/bin/python bench/bench_cgr.py [--queries N] [--seed S] [--no-baseline]

Plans: three-body-12 and Starlink shell 1 over 24 hours (``compute_plan``), and a
10,000-contact plan (the Starlink one cut to its first 10,000 contacts by start time,
about the first four hours). For each plan, N random (source, destination, time) queries
between ground stations and from satellites to ground stations:

- first decision: a fresh router at the source (the shared contact index already built)
  routes a 100 kB bundle — route list empty, so CGR runs its Dijkstra search (and Yen
  spurs if the first route cannot carry the bundle);
- cached decision: the same router routes a second bundle to the same destination 1 ms
  later — the route list is reused, only the per-bundle checks run.

Baseline, same run, same queries: a plain Dijkstra (networkx) over a time-expanded graph
of the plan. Its vertices are (node, event time) with events at contact starts, at the
earliest arrival of each incoming contact and at the query times; waiting edges join a
node's successive events; a contact joins every event of its sender inside the contact to
the receiver's first event at or after arrival (and to an exact-arrival sink at the
destination). The time to build that graph is reported apart; the ratio printed is
baseline query time / CGR first-decision time (medians).
"""

from __future__ import annotations

import argparse
import bisect
import gc
import math
import os
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

from netemu.plan.contacts import ContactPlan
from netemu.routing.base import BundleInfo
from netemu.routing.cgr import CGRRouter, ContactGraph

ROOT = Path(__file__).resolve().parents[1]

BUNDLE_BYTES = 100_000
BASELINE_EDGE_CAP = 2_500_000


def load_plans() -> list[tuple[str, ContactPlan]]:
    from netemu.plan.scenario import load_scenario
    from netemu.plan.schedule import compute_plan

    plans = []
    for name in ("three-body-12", "starlink-shell1"):
        t = time.perf_counter()
        plan = compute_plan(load_scenario(ROOT / "topologies" / f"{name}.yaml"), duration_s=86400.0)
        print(f"# compute_plan {name} 24 h: {len(plan.contacts)} contacts, {len(plan.nodes)} nodes, "
              f"{time.perf_counter() - t:.1f} s", flush=True)
        plans.append((f"{name} 24 h", plan))
    starlink = plans[1][1]
    cut = ContactPlan(starlink.epoch, dict(starlink.nodes), list(starlink.contacts[:10_000]))
    span = cut.contacts[-1].start_s
    print(f"# 10,000-contact plan: Starlink shell 1 contacts starting before t={span:.0f} s",
          flush=True)
    plans.insert(1, ("starlink-shell1 first 10,000 contacts", cut))
    return plans


def queries(plan: ContactPlan, n: int, seed: int) -> list[tuple[str, str, float]]:
    rnd = random.Random(seed)
    ground = sorted(x for x, v in plan.nodes.items() if v.kind == "ground")
    sats = sorted(x for x, v in plan.nodes.items() if v.kind == "satellite")
    horizon = max(c.start_s for c in plan.contacts)
    out = []
    for i in range(n):
        if i % 2 == 0 and len(ground) >= 2:
            a, b = rnd.sample(ground, 2)
        else:
            a, b = rnd.choice(sats), rnd.choice(ground)
        out.append((a, b, rnd.uniform(0.0, horizon * 0.8)))
    return out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def bench_cgr(plan: ContactPlan, qs) -> dict:
    ContactGraph._cache.clear()
    gc.collect()
    t = time.perf_counter()
    graph = ContactGraph.for_plan(plan)
    build_s = time.perf_counter() - t
    # Memory of the index: build it once more under tracemalloc (which slows it down).
    tracemalloc.start()
    again = ContactGraph(plan)
    index_bytes = tracemalloc.get_traced_memory()[0]  # what the index keeps
    tracemalloc.stop()
    del again
    gc.collect()
    first, cached, first_cpu, cached_cpu, arrivals, found = [], [], [], [], [], 0
    wall, cpu = time.perf_counter, time.process_time
    for i, (a, b, t0) in enumerate(qs):
        router = CGRRouter(a, plan)
        b1 = BundleInfo(f"q{i}a", a, b, BUNDLE_BYTES)
        s, sc = wall(), cpu()
        d = router.route(b1, t0, frozenset())
        first.append(wall() - s)
        first_cpu.append(cpu() - sc)
        b2 = BundleInfo(f"q{i}b", a, b, BUNDLE_BYTES)
        s, sc = wall(), cpu()
        router.route(b2, t0 + 0.001, frozenset())
        cached.append(wall() - s)
        cached_cpu.append(cpu() - sc)
        rl = router._lists.get(graph.index[b])
        arrivals.append(rl.selected[0].arrival_s if rl and rl.selected else None)
        found += bool(d.hops)
    return {"build_s": build_s, "index_mib": index_bytes / 2**20, "first": first,
            "cached": cached, "first_cpu": first_cpu, "cached_cpu": cached_cpu,
            "arrivals": arrivals, "found": found}


def teg_events(plan: ContactPlan, qs) -> dict[str, list[float]]:
    ev: dict[str, set[float]] = {n: set() for n in plan.nodes}
    for c in plan.contacts:
        ev[c.src].add(c.start_s)
        ev[c.dst].add(c.start_s + c.owlt_s)
    for a, _, t0 in qs:
        ev[a].add(t0)
    return {n: sorted(s) for n, s in ev.items()}


def teg_edge_count(plan: ContactPlan, ev) -> int:
    n = sum(max(0, len(v) - 1) for v in ev.values())
    for c in plan.contacts:
        e = ev[c.src]
        n += bisect.bisect_left(e, c.end_s) - bisect.bisect_left(e, c.start_s)
    return n


def bench_baseline(plan: ContactPlan, qs) -> dict | None:
    import networkx as nx

    ev = teg_events(plan, qs)
    n_edges = teg_edge_count(plan, ev)
    if n_edges > BASELINE_EDGE_CAP:
        return {"skipped": f"time-expanded graph would have {n_edges:,} edges "
                           f"(cap {BASELINE_EDGE_CAP:,})"}
    dests = {b for _, b, _ in qs}
    t = time.perf_counter()
    g = nx.DiGraph()
    for node, times in ev.items():
        for t1, t2 in zip(times, times[1:], strict=False):
            g.add_edge((node, t1), (node, t2), weight=t2 - t1)
    for c in plan.contacts:
        if c.rate_bps <= 0:
            continue
        e_src, e_dst = ev[c.src], ev[c.dst]
        i = bisect.bisect_left(e_src, c.start_s)
        while i < len(e_src) and e_src[i] < c.end_s:
            ts = e_src[i]
            arr = ts + c.owlt_s
            j = bisect.bisect_left(e_dst, arr)
            if j < len(e_dst):
                g.add_edge((c.src, ts), (c.dst, e_dst[j]), weight=e_dst[j] - ts)
            if c.dst in dests:
                w = c.owlt_s
                old = g.get_edge_data((c.src, ts), ("sink", c.dst))
                if old is None or old["weight"] > w:
                    g.add_edge((c.src, ts), ("sink", c.dst), weight=w)
            i += 1
    build_s = time.perf_counter() - t
    times, times_cpu, arrivals = [], [], []
    for a, b, t0 in qs:
        s, sc = time.perf_counter(), time.process_time()
        try:
            dist = nx.dijkstra_path_length(g, (a, t0), ("sink", b))
            arrivals.append(t0 + dist)
        except (nx.NetworkXNoPath, nx.NodeNotFound):
            arrivals.append(None)
        times.append(time.perf_counter() - s)
        times_cpu.append(time.process_time() - sc)
    return {"build_s": build_s, "edges": g.number_of_edges(), "vertices": g.number_of_nodes(),
            "times": times, "times_cpu": times_cpu, "arrivals": arrivals}


def ms(x: float) -> str:
    return f"{x * 1e3:.3f} ms"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--no-baseline", action="store_true")
    args = ap.parse_args()
    try:
        import psutil

        proc = psutil.Process(os.getpid())
    except ImportError:  # pragma: no cover
        proc = None
    print(f"# bench_cgr: {args.queries} queries per plan, bundle {BUNDLE_BYTES} B, "
          f"seed {args.seed}, python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for name, plan in load_plans():
        qs = queries(plan, args.queries, args.seed)
        r = bench_cgr(plan, qs)
        print(f"\n## {name}: {len(plan.contacts)} contacts, {len(plan.nodes)} nodes")
        print(f"contact index: built in {r['build_s'] * 1e3:.0f} ms, holds {r['index_mib']:.1f} MiB "
              f"(shared by every router on the plan)")
        for label, key in (("first decision ", "first"), ("cached decision", "cached")):
            w, c = r[key], r[key + "_cpu"]
            print(f"{label}: CPU median {ms(statistics.median(c))}, p99 {ms(pct(c, 0.99))}; "
                  f"wall median {ms(statistics.median(w))}, p99 {ms(pct(w, 0.99))}")
        print(f"routes found: {r['found']}/{len(qs)}")
        if proc is not None:
            print(f"process RSS: {proc.memory_info().rss / 2**20:.0f} MiB")
        if args.no_baseline:
            continue
        base = bench_baseline(plan, qs)
        if base is None or "skipped" in base:
            print(f"baseline: skipped — {base['skipped'] if base else 'n/a'}")
            continue
        med_b = statistics.median(base["times_cpu"])
        med_c = statistics.median(r["first_cpu"])
        same = sum(1 for x, y in zip(base["arrivals"], r["arrivals"], strict=True)
                   if (x is None and y is None) or (x is not None and y is not None
                                                    and abs(x - y) < 1e-6))
        later = sum(1 for x, y in zip(base["arrivals"], r["arrivals"], strict=True)
                    if x is not None and y is not None and x > y + 1e-6)
        print(f"baseline networkx time-expanded graph: {base['vertices']:,} vertices, "
              f"{base['edges']:,} edges, built in {base['build_s']:.1f} s; Dijkstra CPU "
              f"median {ms(med_b)}, p99 {ms(pct(base['times_cpu'], 0.99))}")
        print(f"ratio baseline / CGR first decision (CPU medians): {med_b / med_c:.1f}x; "
              f"same arrival {same}/{len(qs)}, baseline later (event rounding) {later}")
        if proc is not None:
            print(f"process RSS after baseline: {proc.memory_info().rss / 2**20:.0f} MiB")
        del base
        gc.collect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
