"""IP routes for the emulator's IP mode: shortest-delay next hops on one topology snapshot.

For a time ``t_s`` the links up are the plan's contacts active at ``t_s``, each weighted
by its one-way delay at that time. Next hops come from one Dijkstra per *destination* on
the reversed graph: every node's next hop toward ``d`` is its parent in the same
shortest-path tree, so hop-by-hop forwarding can never loop, even where several paths
tie (ties go to fewer hops, then to the lower node name).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

from netemu.contacts import ContactPlan

Edge = tuple[str, str, float]
"""A directed link up now: (from, to, delay_s)."""


def snapshot_edges(plan: ContactPlan, t_s: float) -> list[Edge]:
    """Links of ``plan`` up at ``t_s``, with their one-way delay at ``t_s`` (the smallest
    where two contacts join the same pair)."""
    best: dict[tuple[str, str], float] = {}
    for c in plan.contacts:
        if c.start_s <= t_s < c.end_s and c.src != c.dst:
            d = c.owlt_at(t_s)
            k = (c.src, c.dst)
            if d < best.get(k, math.inf):
                best[k] = d
    return [(a, b, d) for (a, b), d in best.items()]


def ip_next_hops(
    plan_or_edges: ContactPlan | Iterable[Edge],
    t_s: float = 0.0,
    *,
    destinations: Iterable[str] | None = None,
) -> dict[str, dict[str, str]]:
    """``{src: {dst: next_hop}}`` for every pair with a path, on the snapshot at ``t_s``.

    ``plan_or_edges`` is a contact plan (its contacts active at ``t_s``) or directed
    edges ``(from, to, delay_s)`` (``t_s`` is then unused). ``destinations`` limits the
    work to routes toward those nodes (e.g. only ground stations).
    """
    if isinstance(plan_or_edges, ContactPlan):
        edges = snapshot_edges(plan_or_edges, t_s)
        names = set(plan_or_edges.nodes)
    else:
        edges = list(plan_or_edges)
        names = set()
    for a, b, _ in edges:
        names.add(a)
        names.add(b)
    order = sorted(names)
    index = {n: i for i, n in enumerate(order)}
    n = len(order)
    # Reversed adjacency: rev[v] = [(u, delay)] for every edge u → v.
    best_in: dict[tuple[int, int], float] = {}
    for a, b, d in edges:
        if a == b:
            continue
        if d < 0 or not math.isfinite(d):
            raise ValueError(f"link {a}→{b}: delay must be finite and ≥ 0, got {d}")
        k = (index[a], index[b])
        if d < best_in.get(k, math.inf):
            best_in[k] = d
    rev: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (u, v), d in sorted(best_in.items()):
        rev[v].append((u, d))
    out: dict[str, dict[str, str]] = {name: {} for name in order}
    targets = order if destinations is None else [x for x in destinations if x in index]
    pop, push = heapq.heappop, heapq.heappush
    for dname in targets:
        d = index[dname]
        dist = [math.inf] * n
        hops = [0] * n
        parent = [-1] * n
        done = bytearray(n)
        dist[d] = 0.0
        heap = [(0.0, 0, d)]
        while heap:
            t, h, v = pop(heap)
            if done[v]:
                continue
            done[v] = 1
            if v != d:
                out[order[v]][dname] = order[parent[v]]
            h1 = h + 1
            for u, w in rev[v]:
                if done[u]:
                    continue
                tu = t + w
                if tu < dist[u] or (tu == dist[u] and h1 < hops[u]):
                    dist[u] = tu
                    hops[u] = h1
                    parent[u] = v
                    push(heap, (tu, h1, u))
    return out


def path_delay_s(next_hops: dict[str, dict[str, str]], edges: Iterable[Edge], src: str,
                 dst: str) -> float:
    """Total delay of the path the next hops give from ``src`` to ``dst`` (for checks)."""
    w = {}
    for a, b, d in edges:
        w[(a, b)] = min(d, w.get((a, b), math.inf))
    total, node, seen = 0.0, src, {src}
    while node != dst:
        nh = next_hops[node][dst]
        total += w[(node, nh)]
        if nh in seen:
            raise ValueError(f"routing loop at {nh}")
        seen.add(nh)
        node = nh
    return total
