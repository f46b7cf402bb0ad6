"""From a contact plan to the network that realises it: interfaces, addresses, link periods.

Pure planning, no I/O, so it is unit-tested and runs before anything is built (a plan the
kernel cannot realise is refused here).

- Interfaces are named ``<node>-eth<k>`` as in Mininet when that fits the kernel's 15
  characters, ``eth<k>`` otherwise.
- Every node gets a *node address* (a /32 on its loopback, 10.0.0.0/16) that stays the
  same whatever links are up; every interface gets its own /32 *interface address*
  (10.128.0.0/9).
- ISLs (and any non-GSL pair) get one dedicated point-to-point link per node pair.
- GSLs do not get a link per station–satellite pair that ever meets (millions in a large
  constellation): each node has a few GSL *slot* interfaces — as many as it ever uses at
  once (at least a station's ``max_links`` antennas) — and each pass (a *period*) is
  assigned a free slot on both sides. The shaper connects slot to slot while the pass is
  up, so a station's antenna "moves" from satellite to satellite.
- A *period* is an interval during which a node pair's link is up in at least one
  direction (the union of its two directions' contacts); carrier is up for the period.
"""

from __future__ import annotations

import ipaddress
import re
from collections import defaultdict
from dataclasses import dataclass, field

from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan

IFNAMSIZ = 15
MAX_NAME_LEN = 200  # /run/netns/<run>-<node> must fit NAME_MAX (255)
NODE_NET = 0x0A000000  # 10.0.0.0/16: node addresses
IFACE_NET = 0x0A800000  # 10.128.0.0/9: interface addresses
MAX_NODES = 65_534
MAX_ENDPOINTS = (1 << 23) - 2
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RUN_RE = re.compile(r"^[a-z][a-z0-9]{0,7}$")


def ip4(n: int) -> str:
    return f"{n >> 24 & 255}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"


NODE_NET6 = "fd6e:656d::"
"""A ULA /96 for IPv6 node addresses (runs with OSPFv3 only): the IPv4 node address in its
last 32 bits, so 10.0.0.3 is fd6e:656d::a00:3."""


def node_addr6(node_addr: str) -> str:
    """The IPv6 node address of an IPv4 node address (:data:`NODE_NET6`)."""
    v4 = int(ipaddress.IPv4Address(node_addr))
    return str(ipaddress.IPv6Address(int(ipaddress.IPv6Address(NODE_NET6)) | v4))


def link_local(mac: str) -> str:
    """The kernel's EUI-64 link-local address of an interface with this MAC (how the
    next hops of an OSPFv3 route name a neighbour)."""
    o = [int(x, 16) for x in mac.split(":")]
    eui = [o[0] ^ 2, o[1], o[2], 0xFF, 0xFE, o[3], o[4], o[5]]
    return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + bytes(eui)))


@dataclass(frozen=True)
class Endpoint:
    """One end of an emulated link: an interface in a host (and its twin in the shaper)."""

    index: int
    node: str
    ifname: str
    kind: str  # "isl" (dedicated pair link) or "gsl" (slot)
    mac: str
    addr: str

    @property
    def shaper_name(self) -> str:
        """The interface's twin in the shaper namespace."""
        return f"e{self.index}"


@dataclass(frozen=True)
class Period:
    """A link up between ``a`` and ``b`` over [start_s, end_s), on endpoints ``ep_a``/``ep_b``."""

    index: int
    a: str
    b: str
    ep_a: int
    ep_b: int
    start_s: float
    end_s: float
    kind: str


@dataclass
class Layout:
    nodes: list[str]
    node_addr: dict[str, str]
    endpoints: list[Endpoint]
    node_endpoints: dict[str, list[int]]
    periods: list[Period]
    contact_period: list[int] = field(default_factory=list)
    """For ``plan.contacts[i]``, the index of the period that carries it."""

    def endpoint_of(self, contact_index: int, node: str) -> int:
        p = self.periods[self.contact_period[contact_index]]
        return p.ep_a if p.a == node else p.ep_b


def check_run_name(run: str) -> str:
    if not RUN_RE.match(run):
        raise InputError(f"run name {run!r} must be 1–8 characters: a lowercase letter, then "
                         "lowercase letters or digits", field="run_name")
    return run


def _merge(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(intervals):
        if out and s <= out[-1][1] + 1e-9:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def plan_layout(plan: ContactPlan) -> Layout:
    """Interfaces, addresses and link periods for ``plan`` (raises InputError if the
    kernel could not realise it)."""
    nodes = list(plan.nodes)
    if len(nodes) > MAX_NODES:
        raise InputError(f"{len(nodes)} nodes: at most {MAX_NODES} fit the address plan",
                         field="nodes")
    for n in nodes:
        if len(n) > MAX_NAME_LEN:
            raise InputError(f"node name {n!r} is {len(n)} characters: at most {MAX_NAME_LEN} "
                             "(it names the host's network namespace)", field=f"nodes.{n}")
        if not NAME_RE.match(n):
            raise InputError(f"node name {n!r}: use letters, digits, '-', '_' and '.', "
                             "starting with a letter or digit (it names a host and its "
                             "interfaces)", field=f"nodes.{n}")
    node_addr = {n: ip4(NODE_NET + 1 + i) for i, n in enumerate(nodes)}

    # Group contacts by unordered pair and link class.
    pair_ivals: dict[tuple[str, str, str], list[tuple[float, float]]] = defaultdict(list)
    for c in plan.contacts:
        if c.src == c.dst:
            raise InputError(f"contact from {c.src!r} to itself", field="contacts")
        for n in (c.src, c.dst):
            if n not in plan.nodes:
                raise InputError(f"contact names unknown node {n!r}", field="contacts")
        if c.end_s <= c.start_s:
            continue
        a, b = sorted((c.src, c.dst))
        cls = "gsl" if c.kind == "gsl" else "isl"
        pair_ivals[(a, b, cls)].append((c.start_s, c.end_s))

    raw_periods: list[tuple[float, float, str, str, str]] = []
    for (a, b, cls), ivals in pair_ivals.items():
        for s, e in _merge(ivals):
            raw_periods.append((s, e, a, b, cls))
    raw_periods.sort()

    # Dedicated links for ISL-class pairs, one per pair.
    iface_count: dict[str, int] = defaultdict(int)
    endpoints: list[Endpoint] = []
    node_eps: dict[str, list[int]] = {n: [] for n in nodes}

    def new_ep(node: str, kind: str) -> int:
        iface_count[node] += 1
        i = len(endpoints)
        mac = "02:6e:" + ":".join(f"{i >> s & 255:02x}" for s in (24, 16, 8, 0))
        endpoints.append(Endpoint(i, node, "", kind, mac, ip4(IFACE_NET + 1 + i)))
        node_eps[node].append(i)
        return i

    pair_eps: dict[tuple[str, str], tuple[int, int]] = {}
    for a, b, cls in sorted(pair_ivals):
        if cls == "isl":
            pair_eps[(a, b)] = (new_ep(a, "isl"), new_ep(b, "isl"))

    # GSL slots: greedy interval colouring in start order uses the fewest slots.
    slot_free_at: dict[str, list[float]] = defaultdict(list)  # per node: slot -> free time
    assignment: list[tuple[int, int]] = []
    gsl_periods = [p for p in raw_periods if p[4] == "gsl"]
    for s, e, a, b, _ in gsl_periods:
        pair_slots = []
        for n in (a, b):
            free = slot_free_at[n]
            for k, t in enumerate(free):
                if t <= s + 1e-9:
                    free[k] = e
                    break
            else:
                free.append(e)
                k = len(free) - 1
            pair_slots.append(k)
        assignment.append((pair_slots[0], pair_slots[1]))
    slot_ep: dict[tuple[str, int], int] = {}
    for n in nodes:
        want = len(slot_free_at.get(n, ()))
        if want and plan.nodes[n].kind == "ground":
            want = max(want, plan.nodes[n].max_links)
        for k in range(want):
            slot_ep[(n, k)] = new_ep(n, "gsl")
    if len(endpoints) > MAX_ENDPOINTS:
        raise InputError(f"{len(endpoints)} interfaces: too many for the address plan")
    # Interface names: Mininet's <node>-eth<k> where it fits the kernel's 15 characters,
    # else eth<k> (names are per namespace, so eth<k> is unique too).
    for n, eps in node_eps.items():
        mininet_style = len(f"{n}-eth{max(0, len(eps) - 1)}") <= IFNAMSIZ
        for k, e in enumerate(eps):
            ep = endpoints[e]
            endpoints[e] = Endpoint(ep.index, n, f"{n}-eth{k}" if mininet_style else f"eth{k}",
                                    ep.kind, ep.mac, ep.addr)

    periods: list[Period] = []
    gsl_i = 0
    for s, e, a, b, cls in raw_periods:
        if cls == "isl":
            ea, eb = pair_eps[(a, b)]
        else:
            ka, kb = assignment[gsl_i]
            gsl_i += 1
            ea, eb = slot_ep[(a, ka)], slot_ep[(b, kb)]
        periods.append(Period(len(periods), a, b, ea, eb, s, e, cls))

    # Contact → period.
    by_pair: dict[tuple[str, str, str], list[Period]] = defaultdict(list)
    for p in periods:
        by_pair[(p.a, p.b, p.kind)].append(p)
    contact_period = []
    for c in plan.contacts:
        a, b = sorted((c.src, c.dst))
        cls = "gsl" if c.kind == "gsl" else "isl"
        found = -1
        for p in by_pair.get((a, b, cls), ()):
            if p.start_s - 1e-9 <= c.start_s and c.end_s <= p.end_s + 1e-9:
                found = p.index
                break
        contact_period.append(found)
    return Layout(nodes, node_addr, endpoints, node_eps, periods, contact_period)


def estimate_memory_bytes(layout: Layout, *, ip_routing: bool) -> int:
    """Rough kernel + process memory the network needs (namespace, veth pairs, routes,
    relay buffers), for refusing plans that cannot fit before building anything."""
    n, e = len(layout.nodes), len(layout.endpoints)
    routes = n * n if ip_routing else 0
    return n * 600_000 + e * 120_000 + routes * 250
