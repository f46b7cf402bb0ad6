"""Benchmark: what CGR's route searches cost a burst at each hop of a scenario's plan.

    .venv/bin/python bench/bench_hop_searches.py --scenario topologies/star-compute-2800.yaml \\
        [--plan-s 7200] [--queries 40] [--seed 1] [--json]

Each node on a bundle's path searches its own routes to the destination when the first
bundle for it arrives (then the list is cached until one of its routes ends). For random
ground-station pairs at random times in the first half of the plan, this computes the
first route at the source, then at each node of that route a fresh router's first
decision at the time the route reaches it — what a burst costs the nodes it crosses.

Figures (``--json``: one object): ``contacts``, ``nodes``, ``plan_compute_s``;
``search_ms_p50``/``_p90``/``_max`` (CPU of one first decision at the source);
``route_hops_p50``/``_max``; ``path_search_ms_p50``/``_max`` (CPU of the first decisions
at every node of the route, together); ``list_life_s_p10``/``_p50`` (how long the
source's route list stays valid: until the earliest end among its routes' contacts).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netemu.plan.scenario import load_scenario  # noqa: E402
from netemu.plan.schedule import compute_plan  # noqa: E402
from netemu.routing.base import BundleInfo  # noqa: E402
from netemu.routing.cgr import CGRRouter, ContactGraph  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def first_decision_ms(plan, node: str, dest: str, t_s: float) -> tuple[float, CGRRouter]:
    r = CGRRouter(node, plan)
    c0 = time.process_time()
    r.route(BundleInfo("b", node, dest, 1000, 1, t_s + 3600, None, 1), t_s, frozenset())
    return 1000 * (time.process_time() - c0), r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", required=True, type=Path)
    ap.add_argument("--plan-s", type=float, default=7200.0)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    scenario = load_scenario(args.scenario)
    t0 = time.perf_counter()
    plan = compute_plan(scenario, duration_s=args.plan_s)
    plan_s = time.perf_counter() - t0
    ContactGraph.for_plan(plan)  # shared index built once, as in a node host
    stations = [g.name for g in scenario.ground_stations]
    if len(stations) < 2:
        print(f"{args.scenario}: needs two ground stations", file=sys.stderr)
        return 2
    rnd = random.Random(args.seed)
    search, path, hops, life = [], [], [], []
    for _ in range(args.queries):
        src, dst = rnd.sample(stations, 2)
        t_s = rnd.uniform(0.05, 0.5) * args.plan_s
        ms, r = first_decision_ms(plan, src, dst, t_s)
        search.append(ms)
        rl = r._lists.get(r.graph.index[dst])
        if rl is None or not rl.selected:
            continue
        route = rl.selected[0]
        life.append(rl.to_time_s - t_s)
        hops.append(route.n_hops)
        path.append(ms + sum(first_decision_ms(plan, c.dst, dst, route.times_s[k])[0]
                             for k, c in enumerate(route.hops[:-1])))
    out = {"scenario": str(args.scenario), "contacts": len(plan.contacts),
           "nodes": len(plan.nodes), "plan_compute_s": round(plan_s, 1),
           "queries": args.queries, "routed": len(path),
           "search_ms_p50": round(statistics.median(search), 2),
           "search_ms_p90": round(pct(search, 0.9), 2), "search_ms_max": round(max(search), 2),
           "route_hops_p50": statistics.median(hops) if hops else None,
           "route_hops_max": max(hops, default=None),
           "path_search_ms_p50": round(statistics.median(path), 1) if path else None,
           "path_search_ms_max": round(max(path), 1) if path else None,
           "list_life_s_p10": round(pct(life, 0.1), 1), "list_life_s_p50":
               round(statistics.median(life), 1) if life else None}
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:>20}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
