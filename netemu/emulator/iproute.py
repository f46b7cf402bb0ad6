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

from netemu.emulator import netlink as nlk
from netemu.emulator.layout import NODE_NET, Layout
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


_ROUTE = np.dtype([
    ("len", "<u4"), ("type", "<u2"), ("flags", "<u2"), ("seq", "<u4"), ("pid", "<u4"),
    ("family", "u1"), ("dst_len", "u1"), ("src_len", "u1"), ("tos", "u1"), ("table", "u1"),
    ("proto", "u1"), ("scope", "u1"), ("rtype", "u1"), ("rflags", "<u4"),
    ("dst_l", "<u2"), ("dst_t", "<u2"), ("dst", ">u4"),
    ("oif_l", "<u2"), ("oif_t", "<u2"), ("oif", "<i4"),
    ("gw_l", "<u2"), ("gw_t", "<u2"), ("gw", ">u4"),
    ("src_l", "<u2"), ("src_t", "<u2"), ("src", ">u4"),
])
_DEL = np.dtype([
    ("len", "<u4"), ("type", "<u2"), ("flags", "<u2"), ("seq", "<u4"), ("pid", "<u4"),
    ("family", "u1"), ("dst_len", "u1"), ("src_len", "u1"), ("tos", "u1"), ("table", "u1"),
    ("proto", "u1"), ("scope", "u1"), ("rtype", "u1"), ("rflags", "<u4"),
    ("dst_l", "<u2"), ("dst_t", "<u2"), ("dst", ">u4"),
])


def route_messages(dst: np.ndarray, oif: np.ndarray, gw: np.ndarray, src: int) -> bytes:
    """``ip route replace DST/32 via GW dev OIF onlink src SRC proto 110`` for every row,
    packed by numpy as one block of rtnetlink messages (no per-route Python)."""
    m = np.zeros(len(dst), dtype=_ROUTE)
    m["len"] = _ROUTE.itemsize
    m["type"] = nlk.RTM_NEWROUTE
    m["flags"] = nlk.NLM_F_REQUEST | nlk.NLM_F_CREATE | nlk.NLM_F_REPLACE
    m["seq"] = np.arange(1, len(dst) + 1)
    m["family"] = 2
    m["dst_len"] = 32
    m["table"] = nlk.RT_TABLE_MAIN
    m["proto"] = nlk.RTPROT_NETEMU
    m["scope"] = nlk.RT_SCOPE_UNIVERSE
    m["rtype"] = nlk.RTN_UNICAST
    m["rflags"] = nlk.RTNH_F_ONLINK
    m["dst_l"], m["dst_t"], m["dst"] = 8, nlk.RTA_DST, dst
    m["oif_l"], m["oif_t"], m["oif"] = 8, nlk.RTA_OIF, oif
    m["gw_l"], m["gw_t"], m["gw"] = 8, nlk.RTA_GATEWAY, gw
    m["src_l"], m["src_t"], m["src"] = 8, nlk.RTA_PREFSRC, src
    return m.tobytes()


def route_del_messages(dst: np.ndarray) -> bytes:
    m = np.zeros(len(dst), dtype=_DEL)
    m["len"] = _DEL.itemsize
    m["type"] = nlk.RTM_DELROUTE
    m["flags"] = nlk.NLM_F_REQUEST
    m["seq"] = np.arange(1, len(dst) + 1)
    m["family"] = 2
    m["dst_len"] = 32
    m["table"] = nlk.RT_TABLE_MAIN
    m["dst_l"], m["dst_t"], m["dst"] = 8, nlk.RTA_DST, dst
    return m.tobytes()


class RouteInstaller:
    """Diffs next-hop tables and sends the changes to each host's netlink socket, as
    numpy-packed message blocks."""

    def __init__(self, layout: Layout, nl: dict[str, Netlink], ifindex: dict[int, int]) -> None:
        self.layout = layout
        self.nl = nl
        n = len(layout.nodes)
        self.ifindex = np.zeros(max(1, len(layout.endpoints)), dtype=np.int64)
        for e, i in ifindex.items():
            self.ifindex[e] = i
        self.addr = NODE_NET + 1 + np.arange(n, dtype=np.int64)  # node address as integer
        self.installed = np.full((n, n), -1, dtype=np.int64)
        self.errors = 0

    def install(self, table: np.ndarray) -> int:
        n = len(self.layout.nodes)
        changed = np.argwhere(table != self.installed)
        if len(changed) == 0:
            return 0
        rows = changed[:, 0]
        cuts = np.flatnonzero(np.diff(rows)) + 1
        for grp in np.split(changed, cuts):
            v = int(grp[0, 0])
            ds = grp[:, 1]
            vals = table[v, ds]
            add = vals >= 0
            nl = self.nl[self.layout.nodes[v]]
            if add.any():
                ep, hop = np.divmod(vals[add], n)
                block = route_messages(self.addr[ds[add]], self.ifindex[ep], self.addr[hop],
                                       int(self.addr[v]))
                self.errors += nl.send_raw(block, _ROUTE.itemsize)
            if (~add).any():
                block = route_del_messages(self.addr[ds[~add]])
                self.errors += nl.send_raw(block, _DEL.itemsize, ignore=(3,))  # ESRCH: gone
        self.installed = table.copy()
        return len(changed)
