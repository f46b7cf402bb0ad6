"""Reference IP routes for tests: shortest-delay next hops on one topology snapshot.

The simple counterpart of :class:`netemu.routing.iproutes.RouteComputer` (which the
emulator uses): for a time ``t_s`` the links up are the plan's contacts active at ``t_s``,
each weighted by its one-way delay at that time. Next hops come from one Dijkstra per
*destination* on the reversed graph (scipy's compiled Dijkstra, or a pure-Python one):
every node's next hop toward ``d`` is its parent in the same shortest-path tree, so
hop-by-hop forwarding can never loop, even where several paths tie (ties go to fewer
hops, then to the lower node name).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable

from netemu.plan.contacts import ContactPlan

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
    method: str = "auto",
) -> dict[str, dict[str, str]]:
    """``{src: {dst: next_hop}}`` for every pair with a path, on the snapshot at ``t_s``.

    ``plan_or_edges`` is a contact plan (its contacts active at ``t_s``) or directed
    edges ``(from, to, delay_s)`` (``t_s`` is then unused). ``destinations`` limits the
    work to routes toward those nodes (e.g. only ground stations). ``method``: "scipy"
    (compiled Dijkstra, ~0.4 s for all pairs of 1,600 nodes), "python" (no scipy, ~30×
    slower), "auto" (scipy when installed).
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
    best: dict[tuple[int, int], float] = {}
    for a, b, d in edges:
        if a == b:
            continue
        if d < 0 or not math.isfinite(d):
            raise ValueError(f"link {a}→{b}: delay must be finite and ≥ 0, got {d}")
        k = (index[a], index[b])
        if d < best.get(k, math.inf):
            best[k] = d
    targets = order if destinations is None else [x for x in destinations if x in index]
    if method == "auto":
        try:
            import scipy.sparse.csgraph  # noqa: F401

            method = "scipy"
        except ImportError:  # pragma: no cover - scipy is a dependency
            method = "python"
    if method == "scipy":
        return _next_hops_scipy(order, best, [index[x] for x in targets])
    if method == "python":
        return _next_hops_python(order, best, [index[x] for x in targets])
    raise ValueError(f"method must be 'auto', 'scipy' or 'python', not {method!r}")


HOP_EPSILON_S = 1e-9
"""Added to every link's delay in the scipy path so that, between paths of equal delay,
the one with fewer hops wins (as in the Python path); 1 ns a hop changes no real choice."""


def _next_hops_scipy(order: list[str], best: dict[tuple[int, int], float],
                     targets: list[int]) -> dict[str, dict[str, str]]:
    import numpy as np
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import dijkstra

    n = len(order)
    out: dict[str, dict[str, str]] = {name: {} for name in order}
    if not best or not targets:
        return out
    keys = sorted(best)
    rows = np.fromiter((v for _, v in keys), dtype=np.int64, count=len(keys))
    cols = np.fromiter((u for u, _ in keys), dtype=np.int64, count=len(keys))
    w = np.fromiter((best[k] + HOP_EPSILON_S for k in keys), dtype=float, count=len(keys))
    reverse = csr_matrix((w, (rows, cols)), shape=(n, n))  # edge v → u for every u → v
    _, pred = dijkstra(reverse, directed=True, indices=targets, return_predecessors=True)
    # pred[i, s]: the node after s on the shortest path from s to targets[i].
    names = np.array(order, dtype=object)
    for i, d in enumerate(targets):
        nh = pred[i]
        ok = np.flatnonzero(nh >= 0)
        dname = order[d]
        for s, h in zip(names[ok], names[nh[ok]], strict=True):
            out[s][dname] = h
    return out


def _next_hops_python(order: list[str], best: dict[tuple[int, int], float],
                      targets: list[int]) -> dict[str, dict[str, str]]:
    n = len(order)
    rev: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (u, v), d in sorted(best.items()):
        rev[v].append((u, d))
    out: dict[str, dict[str, str]] = {name: {} for name in order}
    pop, push = heapq.heappop, heapq.heappush
    for d in targets:
        dname = order[d]
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
