"""IP routing mode: shortest-delay routes between node addresses, installed by netlink.

At every topology change the driver asks for the routes of the links up now, weighted by
their current one-way delay. Satellites (and plain nodes) form the *core*: all-pairs
shortest paths over it (scipy's Dijkstra) are recomputed only when a core link comes or
goes. Ground stations are end systems that do not carry transit traffic; their routes
follow from the core distances and their current attachments, so a ground-link
handover — by far the most frequent change — costs a few vector operations, not an
all-pairs run.

The result is, for each node ``v`` and destination ``d``, the egress endpoint and next-hop
node; only entries that changed since the last installation are sent to the kernel
(``ip route replace <d>/32 via <next hop> dev <if> onlink src <v>``, or deleted), in one
netlink batch per host.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from netemu.emulator.layout import Layout
from netemu.emulator.netlink import Netlink

MIN_W = 1e-9


class RouteComputer:
    """Pure computation: next hops from the set of up links and their delays."""

    def __init__(self, layout: Layout, ground: set[str]) -> None:
        self.layout = layout
        self.nodes = layout.nodes
        self.index = {n: i for i, n in enumerate(self.nodes)}
        n = len(self.nodes)
        self.is_ground = np.array([nd in ground for nd in self.nodes], dtype=bool)
        self.core = np.nonzero(~self.is_ground)[0]
        self.core_pos = {int(v): k for k, v in enumerate(self.core)}
        self._core_key: frozenset | None = None
        self.core_dist = np.zeros((0, 0))
        self.core_nh = np.zeros((0, 0), dtype=np.int64)
        self.n = n

    def compute(self, links: dict[tuple[int, int], tuple[float, int, int]]) -> np.ndarray:
        """``links``: (u, v) node indices (u < v) → (delay_s, endpoint at u, endpoint at v).

        Returns an (N, N) int64 matrix: ``ep * N + next_hop`` for each (v, d), -1 where d is
        unreachable or d == v.
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
        # attachments of ground stations: (core pos, weight, core node)
        att: dict[int, list[tuple[int, float, int]]] = {}
        for (u, v), w in wgt.items():
            if self.is_ground[u] and not self.is_ground[v]:
                att.setdefault(u, []).append((self.core_pos[v], w, v))
        ar = np.arange(nc)
        for g, lst in att.items():
            pos = np.array([p for p, _w, _v in lst])
            ws = np.array([w for _p, w, _v in lst])
            # core v -> ground g: best attachment s minimising dist(v, s) + w(s, g)
            cost = cd[:, pos] + ws[None, :]  # (nc, k)
            best = np.argmin(cost, axis=1)
            s_pos = pos[best]
            reach = np.isfinite(cost[ar, best])
            direct = s_pos == ar
            hop = np.where(direct, g, core[np.where(cnh[ar, s_pos] >= 0, cnh[ar, s_pos], 0)])
            e = eg[core, hop]
            out[core, g] = np.where(reach & (e >= 0), e * n + hop, -1)
            # ground g -> core d: best attachment s minimising w(g, s) + dist(s, d)
            cost_from = cd[pos, :] + ws[:, None]  # (k, nc)
            bestf = np.argmin(cost_from, axis=0)
            s_node = np.array([v for _p, _w, v in lst])[bestf]
            e = eg[g, s_node]
            ok = np.isfinite(cost_from[bestf, ar])
            out[g, core] = np.where(ok, e * n + s_node, -1)
        # ground -> ground
        for g1, l1 in att.items():
            for g2, l2 in att.items():
                if g1 == g2:
                    continue
                best_c, best_s = np.inf, -1
                for p1, w1, s1 in l1:
                    for p2, w2, _s2 in l2:
                        c = w1 + cd[p1, p2] + w2
                        if c < best_c:
                            best_c, best_s = c, s1
                if best_s >= 0 and np.isfinite(best_c):
                    out[g1, g2] = eg[g1, best_s] * n + best_s
        # direct ground-ground links (no core in between)
        for (u, v), _w in wgt.items():
            if self.is_ground[u] and self.is_ground[v]:
                out[u, v] = eg[u, v] * n + v
        np.fill_diagonal(out, -1)
        return out

    def _recompute_core(self, core_links: dict[tuple[int, int], tuple[float, int, int]]) -> None:
        nc = len(self.core)
        if nc == 0:
            self.core_dist = np.zeros((0, 0))
            self.core_nh = np.zeros((0, 0), dtype=np.int64)
            return
        rows, cols, vals = [], [], []
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


class RouteInstaller:
    """Diffs next-hop tables and sends the changes to each host's netlink socket."""

    def __init__(self, layout: Layout, nl: dict[str, Netlink], ifindex: dict[int, int]) -> None:
        self.layout = layout
        self.nl = nl
        self.ifindex = ifindex
        n = len(layout.nodes)
        self.installed = np.full((n, n), -1, dtype=np.int64)

    def install(self, table: np.ndarray) -> int:
        lay = self.layout
        n = len(lay.nodes)
        changed = np.argwhere(table != self.installed)
        if len(changed) == 0:
            return 0
        addr = [lay.node_addr[x] for x in lay.nodes]
        touched = set()
        for v, d in changed:
            v, d = int(v), int(d)
            val = int(table[v, d])
            nl = self.nl[lay.nodes[v]]
            if val < 0:
                nl.route_del(addr[d], 32)
            else:
                ep, h = divmod(val, n)
                nl.route_replace(addr[d], 32, oif=self.ifindex[ep], gateway=addr[h], src=addr[v])
            touched.add(v)
        for v in touched:
            self.nl[lay.nodes[v]].flush()
        self.installed = table.copy()
        return len(changed)
