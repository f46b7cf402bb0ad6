"""One host's share of an emulation that spans several hosts, and its VXLAN tunnels.

Every host builds the namespaces of its own nodes only; the layout (interfaces, addresses,
link periods, endpoint indices) is the whole plan's, computed the same on every host, so
an endpoint index and its MAC (``02:6e:<index>``) name the same interface everywhere.

A link between nodes on two hosts runs through the relay of each host and one VXLAN
tunnel per pair of hosts, whose device sits in the shaper namespace (its UDP socket stays
in the host's own namespace, where it was created: the underlay):

- the tunnel device carries, as alternative names, ``e<index>`` of every remote endpoint
  that is ever the peer of a local one; the relay sends a frame for endpoint ``e<i>`` to
  the interface of that name, so a frame for a remote endpoint enters the tunnel;
- frames out of the tunnel are read by the relay like any other: their source MAC names
  the remote endpoint, whose table row sends them on to its local peer;
- each host shapes the direction that leaves its own node (delay less the underlay's own
  one-way delay, rate, loss) and passes the arriving direction through unshaped, so each
  direction is shaped once; each host switches the carrier of its own node's interface.

Pure planning here (which tunnels, which names); :class:`netemu.emulator.network.Network`
builds them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netemu.emulator.layout import Layout
from netemu.errors import InputError

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
"""Bytes VXLAN adds to each frame (outer IPv4, UDP, VXLAN header, inner Ethernet)."""
LINK_MTU = 1500


@dataclass(frozen=True)
class Tunnel:
    """The VXLAN device towards one other host."""

    peer_host: int
    vni: int
    local_addr: str
    remote_addr: str
    remote_endpoints: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"vx{self.peer_host}"


@dataclass
class HostShare:
    """What one host builds: its index, its nodes, the underlay addresses of all hosts,
    and the underlay's one-way delay (subtracted from the emulated delay)."""

    index: int
    host_of: dict[str, int]
    addrs: list[str]
    underlay_delay_s: float = 0.0
    local: set[str] = field(init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index < len(self.addrs):
            raise InputError(f"host index {self.index} outside 0..{len(self.addrs) - 1}",
                             field="cluster")
        self.local = {n for n, h in self.host_of.items() if h == self.index}

    def is_local_endpoint(self, layout: Layout, e: int) -> bool:
        return layout.endpoints[e].node in self.local

    def tunnels(self, layout: Layout) -> list[Tunnel]:
        """One tunnel per other host that this host's nodes ever link to."""
        remote: dict[int, set[int]] = {}
        for p in layout.periods:
            a_here, b_here = p.a in self.local, p.b in self.local
            if a_here != b_here:
                far_node, far_ep = (p.b, p.ep_b) if a_here else (p.a, p.ep_a)
                remote.setdefault(self.host_of[far_node], set()).add(far_ep)
        n = len(self.addrs)
        out = []
        for h in sorted(remote):
            lo, hi = min(h, self.index), max(h, self.index)
            out.append(Tunnel(h, 1 + lo * n + hi, self.addrs[self.index], self.addrs[h],
                              tuple(sorted(remote[h]))))
        return out


def smallest_link_delay_s(layout: Layout, owlt_s: list[float], host_of: dict[str, int],
                          ) -> float | None:
    """The smallest one-way delay of a link whose ends sit on different hosts (``owlt_s``:
    the plan's contacts' smallest delays, by contact index); None when no link crosses."""
    best: float | None = None
    for ci, pi in enumerate(layout.contact_period):
        p = layout.periods[pi]
        if host_of[p.a] != host_of[p.b]:
            d = owlt_s[ci]
            best = d if best is None else min(best, d)
    return best


__all__ = ["LINK_MTU", "VXLAN_OVERHEAD", "VXLAN_PORT", "HostShare", "Tunnel",
           "smallest_link_delay_s"]
