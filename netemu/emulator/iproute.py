"""IP routing mode: the next-hop tables of :class:`netemu.routing.iproutes.RouteComputer`,
installed by netlink.

Only entries that changed since the last installation are sent to the kernel
(``ip route replace <d>/32 via <next hop> dev <if> onlink src <v>``, or deleted), in one
netlink batch per host, packed by numpy.
"""

from __future__ import annotations

import numpy as np

from netemu.emulator import netlink as nlk
from netemu.emulator.layout import NODE_NET, Layout
from netemu.emulator.netlink import Netlink
from netemu.routing.iproutes import IntArray

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
    numpy-packed message blocks. Nodes without a socket in ``nl`` (on another host of a
    cluster run) are skipped: every host computes the same tables and installs its own."""

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

    def install(self, table: IntArray) -> int:
        n = len(self.layout.nodes)
        changed = np.argwhere(table != self.installed)
        if len(changed) == 0:
            return 0
        rows = changed[:, 0]
        cuts = np.flatnonzero(np.diff(rows)) + 1
        for grp in np.split(changed, cuts):
            v = int(grp[0, 0])
            ds = grp[:, 1]
            nl = self.nl.get(self.layout.nodes[v])
            if nl is None:  # a node on another host of a cluster run: its host installs it
                continue
            vals = table[v, ds]
            add = vals >= 0
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
