"""IP routes for the emulator's IP mode: shortest-delay next hops between nodes.

At every topology change the emulator asks for the routes of the links up now, weighted by
their current one-way delay. Satellites (and plain nodes) form the *core*: all-pairs
shortest paths over it (scipy's Dijkstra) are recomputed only when a core link comes or
goes. Ground stations are end systems that do not carry transit traffic (but for a
station's wired neighbour, an internet host behind a gateway: it reaches the satellites
through the gateway); their routes follow from the core distances and their current
attachments, so a ground-link
handover — by far the most frequent change — costs a few vector operations, not an
all-pairs run.

The result is a table: for each node ``v`` and destination ``d``, the egress endpoint and
next-hop node. Installing it in the kernel is the emulator's part
(:mod:`netemu.emulator.iproute`); :func:`next_hops` reads it by name.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
import numpy.typing as npt
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

MIN_W = 1e-9
"""Smallest link weight (s): a zero-delay link still counts as a hop."""

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
Links = dict[tuple[int, int], tuple[float, int, int]]
"""(u, v) node indices, u < v → (delay_s, endpoint at u, endpoint at v)."""


class RouteComputer:
    """Next hops of every node toward every other, from the links up now and their delays.

    ``nodes`` are the node names (their positions are the indices in ``links`` and in the
    table), ``ground`` the names of the ground stations (end systems: no transit).
    """

    def __init__(self, nodes: Sequence[str], ground: Collection[str]) -> None:
        self.nodes = list(nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        n = len(self.nodes)
        self.is_ground = np.array([nd in ground for nd in self.nodes], dtype=bool)
        self.core = np.nonzero(~self.is_ground)[0]
        self.core_pos = {int(v): k for k, v in enumerate(self.core)}
        self._core_key: frozenset[tuple[int, int]] | None = None
        self.core_dist: FloatArray = np.zeros((0, 0))
        self.core_nh: IntArray = np.zeros((0, 0), dtype=np.int64)
        self.n = n

    def compute(self, links: Links) -> IntArray:
        """``links``: (u, v) node indices (u < v) → (delay_s, endpoint at u, endpoint at v);
        an endpoint is the caller's number for the interface at that end.

        Returns an (N, N) int64 table: ``ep * N + next_hop`` for each (v, d), where ``ep``
        is v's endpoint toward the next hop; -1 where d is unreachable or d == v.
        """
        n = self.n
        core_links = {k: w for k, w in links.items()
                      if not self.is_ground[k[0]] and not self.is_ground[k[1]]}
        key = frozenset(core_links)
        if key != self._core_key:
            self._recompute_core(core_links)
            self._core_key = key
        cd, cnh = self.core_dist, self.core_nh  # core-position indexed
        nc = len(self.core)
        core = self.core
        out = np.full((n, n), -1, dtype=np.int64)
        # eg[u, v]: egress endpoint at u toward neighbour v (lightest link when several)
        eg = np.full((n, n), -1, dtype=np.int64)
        wgt: dict[tuple[int, int], float] = {}
        for (u, v), (w, eu, ev) in links.items():
            if (u, v) not in wgt or w < wgt[(u, v)]:
                wgt[(u, v)] = wgt[(v, u)] = w
                eg[u, v] = eu
                eg[v, u] = ev
        # core -> core
        if nc:
            hop = core[np.where(cnh >= 0, cnh, 0)]  # next-hop node indices
            e = eg[core[:, None], hop]
            out[np.ix_(core, core)] = np.where(cnh >= 0, e * n + hop, -1)
        # attachments of ground stations: (core pos, weight, core node, the node g sends
        # to, the node the core node delivers to); a station on a wired link also reaches
        # its neighbour's satellites through that neighbour (one wired hop: an internet
        # host behind a gateway)
        att: dict[int, list[tuple[int, float, int, int, int]]] = {}
        for (u, v), w in wgt.items():
            if self.is_ground[u] and not self.is_ground[v]:
                att.setdefault(u, []).append((self.core_pos[v], w, v, v, u))
        wired = [(u, v, max(w, MIN_W)) for (u, v), w in wgt.items()
                 if self.is_ground[u] and self.is_ground[v]]
        for u, v, w in wired:
            for p, w_s, s, _gh, _ch in att.get(v, ()):
                if _ch == v:  # the neighbour's own satellite links only
                    att.setdefault(u, []).append((p, w + w_s, s, v, v))
        ar = np.arange(nc)
        for g, lst in att.items():
            pos = np.array([a[0] for a in lst])
            ws = np.array([a[1] for a in lst])
            g_hop = np.array([a[3] for a in lst])
            c_hop = np.array([a[4] for a in lst])
            # core v -> ground g: best attachment s minimising dist(v, s) + w(s, g)
            cost = cd[:, pos] + ws[None, :]  # (nc, k)
            best = np.argmin(cost, axis=1)
            s_pos = pos[best]
            reach = np.isfinite(cost[ar, best])
            direct = s_pos == ar
            hop = np.where(direct, c_hop[best],
                           core[np.where(cnh[ar, s_pos] >= 0, cnh[ar, s_pos], 0)])
            e = eg[core, hop]
            out[core, g] = np.where(reach & (e >= 0), e * n + hop, -1)
            # ground g -> core d: best attachment s minimising w(g, s) + dist(s, d)
            cost_from = cd[pos, :] + ws[:, None]  # (k, nc)
            bestf = np.argmin(cost_from, axis=0)
            first = g_hop[bestf]
            e = eg[g, first]
            ok = np.isfinite(cost_from[bestf, ar])
            out[g, core] = np.where(ok, e * n + first, -1)
        # ground -> ground
        for g1, l1 in att.items():
            for g2, l2 in att.items():
                if g1 == g2:
                    continue
                best_c, best_h = np.inf, -1
                for p1, w1, _s1, h1, _c1 in l1:
                    for p2, w2, _s2, _h2, _c2 in l2:
                        c = w1 + cd[p1, p2] + w2
                        if c < best_c:
                            best_c, best_h = c, h1
                if best_h >= 0 and np.isfinite(best_c):
                    out[g1, g2] = eg[g1, best_h] * n + best_h
        # direct ground-ground links (no core in between)
        for (u, v), _w in wgt.items():
            if self.is_ground[u] and self.is_ground[v]:
                out[u, v] = eg[u, v] * n + v
        np.fill_diagonal(out, -1)
        return out

    def _recompute_core(self, core_links: Links) -> None:
        nc = len(self.core)
        if nc == 0:
            self.core_dist = np.zeros((0, 0))
            self.core_nh = np.zeros((0, 0), dtype=np.int64)
            return
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for (u, v), (w, _eu, _ev) in core_links.items():
            a, b = self.core_pos[u], self.core_pos[v]
            rows += [a, b]
            cols += [b, a]
            vals += [max(w, MIN_W)] * 2
        g = csr_matrix((vals, (rows, cols)), shape=(nc, nc))
        g.sum_duplicates()
        dist, pred = dijkstra(g, directed=True, return_predecessors=True)
        # next hop from a toward b = predecessor of a on the path from b (symmetric graph)
        nh = pred.T.astype(np.int64)
        nh[nh < 0] = -1
        np.fill_diagonal(nh, -1)
        self.core_dist = dist
        self.core_nh = nh


def next_hops(table: IntArray, nodes: Sequence[str]) -> dict[str, dict[str, str]]:
    """``{src: {dst: next_hop}}`` by name, from a :meth:`RouteComputer.compute` table."""
    n = len(nodes)
    out: dict[str, dict[str, str]] = {a: {} for a in nodes}
    for v, d in np.argwhere(table >= 0):
        out[nodes[v]][nodes[d]] = nodes[int(table[v, d]) % n]
    return out
