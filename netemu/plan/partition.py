"""Split an emulation's nodes over the hosts of a cluster.

Every link between nodes on two hosts becomes a tunnel over the hosts' own network, so
the split minimises those cross-host links, while each host gets a share of the nodes in
proportion to its size:

- **Host shares.** A host's weight is the smaller of its cores and its memory, each
  relative to the cluster's mean (a host with twice the cores but the same memory is not
  bigger: memory bounds it); its share of the nodes is its weight over the sum.
- **Whole planes.** Nodes with a plane key (a Walker shell's ``(shell, plane)``) go to
  hosts as whole planes, in plan order, in contiguous blocks: in a Walker shell the ISLs
  within a plane and between neighbouring planes are the links, so a block of adjacent
  planes cuts only the links between the two planes at each of its edges.
- **Nodes of no plane** (ground stations, nodes of a hand-written topology) go one by one
  to the host holding most of their link peers, as long as that host stays within
  ``slack`` of its share; else to the host furthest below its share. Without any planes,
  the nodes are taken in breadth-first order over the links (so neighbours sit together)
  and cut into contiguous blocks by share, then moved one by one where that cuts fewer
  links and the shares allow.

Pure: no I/O. The cluster coordinator computes the split once and hands each host its
part.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from netemu.errors import InputError
from netemu.plan.scenario import Scenario
from netemu.plan.schedule import isl_pairs

SLACK = 0.10
"""A host may hold up to (1 + SLACK) × its share of the nodes."""


@dataclass(frozen=True)
class HostCapacity:
    """What a host's actor reports: its name, cores and memory."""

    name: str
    cores: int
    memory_bytes: int


@dataclass(frozen=True)
class Partition:
    """Nodes by host (host index into the ``hosts`` given) and the links that cross."""

    host_of: dict[str, int]
    cross_links: list[tuple[str, str]]
    hosts: list[HostCapacity]

    def nodes_of(self, host: int) -> list[str]:
        return [n for n, h in self.host_of.items() if h == host]

    def loads(self) -> list[int]:
        out = [0] * len(self.hosts)
        for h in self.host_of.values():
            out[h] += 1
        return out


def host_shares(hosts: Sequence[HostCapacity]) -> list[float]:
    """Each host's share of the nodes (sums to 1): see the module docstring."""
    if not hosts:
        raise InputError("cluster: no hosts to place the nodes on")
    for h in hosts:
        if h.cores < 1 or h.memory_bytes <= 0:
            raise InputError(f"cluster: host {h.name} reports {h.cores} cores and "
                             f"{h.memory_bytes} bytes of memory: needs at least one of each")
    mean_cores = sum(h.cores for h in hosts) / len(hosts)
    mean_mem = sum(h.memory_bytes for h in hosts) / len(hosts)
    weights = [min(h.cores / mean_cores, h.memory_bytes / mean_mem) for h in hosts]
    total = sum(weights)
    return [w / total for w in weights]


def crossing(host_of: dict[str, int], links: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The links whose two ends are on different hosts."""
    return [(a, b) for a, b in links if host_of[a] != host_of[b]]


def partition(nodes: Sequence[str], links: Sequence[tuple[str, str]],
              hosts: Sequence[HostCapacity],
              plane_of: Callable[[str], Hashable | None] | None = None,
              *, slack: float = SLACK) -> Partition:
    """Split ``nodes`` (plan order) over ``hosts``; ``links`` are every node pair that is
    ever linked in the plan; ``plane_of`` gives a node's plane key (None: no plane)."""
    shares = host_shares(hosts)
    known = set(nodes)
    for a, b in links:
        for n in (a, b):
            if n not in known:
                raise InputError(f"cluster: link {a}–{b} names node {n}, not in the plan")
    peers: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in links:
        peers[a].append(b)
        peers[b].append(a)
    planes: dict[Hashable, list[str]] = {}
    loners: list[str] = []
    for n in nodes:
        key = plane_of(n) if plane_of is not None else None
        if key is None:
            loners.append(n)
        else:
            planes.setdefault(key, []).append(n)
    host_of: dict[str, int] = {}
    if planes:
        _place_planes(list(planes.values()), shares, host_of)
        _place_loners(loners, peers, shares, len(nodes), slack, host_of)
    else:
        order = _bfs_order(list(nodes), peers)
        _place_blocks(order, shares, host_of)
        _refine(order, peers, shares, len(nodes), slack, host_of)
    return Partition(host_of, crossing(host_of, links), list(hosts))


def scenario_partition(scenario: Scenario, hosts: Sequence[HostCapacity],
                       gsl_links: Sequence[tuple[str, str]] = (), *,
                       slack: float = SLACK) -> Partition:
    """The split of a scenario: its satellites by ``(group, plane)``, its ISLs by topology,
    and its ground-station links as given (a computed plan's GSL windows; none: the
    stations spread over the hosts by share)."""
    names = [s.name for s in scenario.satellites]
    links = [(names[p.a], names[p.b]) for p in isl_pairs(scenario)] + list(gsl_links)
    planes = {s.name: (s.group, s.plane) for s in scenario.satellites if s.plane is not None}
    nodes = names + [g.name for g in scenario.ground_stations]
    return partition(nodes, links, hosts, planes.get, slack=slack)


def _place_planes(planes: list[list[str]], shares: list[float],
                  host_of: dict[str, int]) -> None:
    """Contiguous blocks of planes; each block ends where the running count is nearest to
    the cumulative share, and every host gets a plane while there are planes enough."""
    total = sum(len(p) for p in planes)
    n_hosts = len(shares)
    host, done, bound = 0, 0, shares[0] * total
    for i, plane in enumerate(planes):
        left_planes = len(planes) - i
        hosts_after = n_hosts - 1 - host
        if host < n_hosts - 1 and done > 0 and (
                left_planes <= hosts_after
                or abs(done + len(plane) - bound) > abs(done - bound)):
            host += 1
            bound += shares[host] * total
        for n in plane:
            host_of[n] = host
        done += len(plane)


def _place_loners(loners: list[str], peers: dict[str, list[str]], shares: list[float],
                  n_nodes: int, slack: float, host_of: dict[str, int]) -> None:
    load = [0] * len(shares)
    for h in host_of.values():
        load[h] += 1
    cap = [s * n_nodes * (1 + slack) for s in shares]
    for n in loners:
        votes = [0] * len(shares)
        for p in peers[n]:
            if p in host_of:
                votes[host_of[p]] += 1
        fits = [h for h in range(len(shares)) if load[h] + 1 <= cap[h]]
        if fits and max(votes[h] for h in fits) > 0:
            best = max(fits, key=lambda h: (votes[h], shares[h] * n_nodes - load[h]))
        else:
            best = max(range(len(shares)), key=lambda h: shares[h] * n_nodes - load[h])
        host_of[n] = best
        load[best] += 1


def _bfs_order(nodes: list[str], peers: dict[str, list[str]]) -> list[str]:
    seen: set[str] = set()
    order: list[str] = []
    for start in nodes:
        if start in seen:
            continue
        seen.add(start)
        queue = deque([start])
        while queue:
            n = queue.popleft()
            order.append(n)
            for p in peers[n]:
                if p not in seen:
                    seen.add(p)
                    queue.append(p)
    return order


def _place_blocks(order: list[str], shares: list[float], host_of: dict[str, int]) -> None:
    bound, host = shares[0] * len(order), 0
    for i, n in enumerate(order):
        while host < len(shares) - 1 and i >= round(bound):
            host += 1
            bound += shares[host] * len(order)
        host_of[n] = host


def _refine(order: list[str], peers: dict[str, list[str]], shares: list[float],
            n_nodes: int, slack: float, host_of: dict[str, int]) -> None:
    """Move single nodes to the host of most of their peers while that cuts links and the
    hosts stay within their shares (one pass more while any node moved, at most 8)."""
    load = [0] * len(shares)
    for h in host_of.values():
        load[h] += 1
    cap = [s * n_nodes * (1 + slack) for s in shares]
    floor = [s * n_nodes * (1 - slack) for s in shares]
    for _ in range(8):
        moved = False
        for n in order:
            here = host_of[n]
            votes = [0] * len(shares)
            for p in peers[n]:
                votes[host_of[p]] += 1
            best = max(range(len(shares)), key=lambda h: votes[h])
            if (votes[best] > votes[here] and load[best] + 1 <= cap[best]
                    and load[here] - 1 >= floor[here]):
                host_of[n] = best
                load[here] -= 1
                load[best] += 1
                moved = True
        if not moved:
            return


__all__ = ["SLACK", "HostCapacity", "Partition", "crossing", "host_shares", "partition",
           "scenario_partition"]
