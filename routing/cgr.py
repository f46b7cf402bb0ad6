"""Contact graph routing (CGR) the way ION does it.

The search runs over *contacts*, not nodes: a route is a sequence of contacts, each
leaving the node the previous one reached. For a bundle that is at node ``S`` at time
``t`` (the *root contact*: S to itself, arriving at ``t``), the best-case arrival through
contact ``c`` reached at time ``a`` is ``max(a, c.start_s) + c.owlt_s``, and ``c`` is
usable only while ``a < c.end_s`` (ION's ``computeDistanceToTerminus``). Yen's routes are
ranked by arrival time, ties by fewer hops, then by the sequence of contact indices
(deterministic); the search's own tie-break is narrower (see :meth:`ContactGraph.search`).

Why a node-level heap: arrival through a contact only grows with the time the bundle
reaches its sender (FIFO), so the first time a node is settled it is settled with its
best (arrival, hops); relaxing its outgoing contacts again from a later label can never
help. Each node is therefore expanded once: the contacts running at that time come from a
precomputed snapshot of the node's links (one binary search), and contacts that start
later are taken one at a time, in start order, only when the search's clock reaches their
start — so contacts that begin after the destination is reached (most of a 24-hour plan)
are never looked at, and contacts that ended before now are skipped by the binary search.
Same routes as the contact-by-contact search, far fewer steps on plans with 10^5–10^6
contacts.

Alternatives come from Yen's k-shortest-paths with Lawler's modification, computed
lazily as ION does (``computeAnotherRoute``): a new route is computed only when none of
the routes already selected for the destination can carry the bundle. The list is cached
per destination and dropped when one of its routes ends (``to_time_s``, the earliest end
among its contacts) or when one of its contacts runs out of volume.

Per bundle (ION's ``checkRoute`` / ``computePBAT``): routes whose best-case arrival is
after the deadline, whose first contact is not certain (confidence below
``min_first_confidence``, 1.0 like ION), or whose first hop is the previous hop are
skipped; for the rest the projected bundle arrival time counts the queue already
committed to the first neighbour (backlog, at this and higher priority), the
transmission time of the estimated size at every hop and the volume left on every
contact. The best projected arrival wins (then fewer hops, later route end, lower
neighbour ipn), and its estimated size — ``size + max(size/16, 36)`` bytes, ION's
ECCC — is reserved on every contact of the route, and given back by ``failed``.
"""

from __future__ import annotations

import heapq
import math
import weakref
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, PerPlan
from netemu.routing.base import BundleInfo, Decision, Hop, Router
from netemu.routing.params import check_params, number

INF = math.inf
RankKey = tuple[float, int, float, int, tuple[int, ...]]
"""How routes rank: projected arrival, hops, latest end first, first hop's ipn, contacts."""
Statics = tuple[Any, ...]
"""What :meth:`CGRRouter._statics` gives route_many: a fixed 10-field record, see there."""
STACK_OVERHEAD_BYTES = 36
"""ION's TYPICAL_STACK_OVERHEAD: fixed per-bundle overhead in the size estimate."""
OVERHEAD_FRACTION = 1 / 16
"""ION's proportional overhead in the size estimate (6.25 %)."""


def estimated_size_bytes(
    size_bytes: float,
    *,
    overhead_fraction: float = OVERHEAD_FRACTION,
    stack_overhead_bytes: float = STACK_OVERHEAD_BYTES,
) -> float:
    """ION's estimated capacity consumption: size + max(size/16, 36) bytes."""
    return size_bytes + max(size_bytes * overhead_fraction, stack_overhead_bytes)


# --------------------------------------------------------------------------------------
# The graph: an index of the plan, shared by every router that reads the same plan


class ContactGraph:
    """Read-only index of a plan's contacts for route search.

    Contacts keep their position in ``plan.contacts`` as their index. Contacts with no
    rate (no volume) are left out, as ION requires a transmission rate.
    """

    def __init__(self, plan: ContactPlan) -> None:
        # (weakly: the shared cache of for_plan must not keep the plan alive)
        self._plan = weakref.ref(plan)
        names = set(plan.nodes)
        for c in plan.contacts:
            names.add(c.src)
            names.add(c.dst)
        self.names: list[str] = sorted(names, key=lambda n: (_ipn(plan, n), n))
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        self.ipn: list[int] = [_ipn(plan, n) for n in self.names]
        self.contacts: list[Contact] = plan.contacts
        n_c = len(plan.contacts)
        self.src = [0] * n_c
        self.dst = [0] * n_c
        self.start = [0.0] * n_c
        self.end = [0.0] * n_c
        self.owlt = [0.0] * n_c
        self.rate_Bps = [0.0] * n_c
        self.volume = [0.0] * n_c
        self.confidence = [1.0] * n_c
        pairs: dict[tuple[int, int], list[int]] = {}
        idx = self.index
        for i, c in enumerate(plan.contacts):
            s, d = idx[c.src], idx[c.dst]
            self.src[i], self.dst[i] = s, d
            self.start[i], self.end[i] = c.start_s, c.end_s
            self.owlt[i] = c.owlt_s
            self.rate_Bps[i] = c.rate_bps / 8.0
            self.volume[i] = c.volume_bytes  # the integral of a sampled rate
            self.confidence[i] = c.confidence
            if c.rate_bps > 0 and c.end_s > c.start_s and s != d:
                pairs.setdefault((s, d), []).append(i)
        # Per sender→receiver pair: contact ids by start, and their starts.
        self.pair: dict[tuple[int, int], tuple[list[int], list[float]]] = {}
        out_by_node: list[list[int]] = [[] for _ in self.names]
        for (s, d), cids in sorted(pairs.items()):
            cids.sort(key=lambda i: (self.start[i], self.end[i], i))
            self.pair[(s, d)] = (cids, [self.start[i] for i in cids])
            out_by_node[s].extend(cids)
        # Per sender, for the search:
        # - bounds[u], active[u]: the times where u's set of running outgoing contacts
        #   changes, and for each interval [bounds[i], bounds[i+1]) the contacts up
        #   through all of it (a snapshot of u's links);
        # - fut[u], fut_start[u]: u's outgoing contacts by start, to take later ones
        #   one at a time, only as the search's clock reaches their start.
        self.bounds: list[list[float]] = []
        self.active: list[list[tuple[int, ...]]] = []
        self.fut: list[list[int]] = []
        self.fut_start: list[list[float]] = []
        for cids in out_by_node:
            cids.sort(key=lambda i: (self.start[i], self.dst[i], i))
            self.fut.append(cids)
            self.fut_start.append([self.start[i] for i in cids])
            bounds = sorted({self.start[i] for i in cids} | {self.end[i] for i in cids})
            running: set[int] = set()
            by_start = sorted(cids, key=lambda i: self.start[i])
            by_end = sorted(cids, key=lambda i: self.end[i])
            act: list[tuple[int, ...]] = []
            js = je = 0
            for t in bounds:
                while js < len(by_start) and self.start[by_start[js]] <= t:
                    running.add(by_start[js])
                    js += 1
                while je < len(by_end) and self.end[by_end[je]] <= t:
                    running.discard(by_end[je])
                    je += 1
                act.append(tuple(sorted(running, key=lambda i: (self.dst[i], self.start[i], i))))
            self.bounds.append(bounds)
            self.active.append(act)

    # id(plan) -> (the plan, weakly; its graph): one graph per live plan object, dropped
    # with the plan (a node host's nodes all route on one)

    @classmethod
    def for_plan(cls, plan: ContactPlan) -> ContactGraph:
        """The graph of ``plan``, built once per plan object and shared by the routers of
        every node that routes on it (read only: routes, reservations and volumes are
        each router's own)."""
        return _GRAPHS.get(plan)

    @property
    def plan(self) -> ContactPlan | None:
        """The plan this graph indexes (None once no one holds it)."""
        return self._plan()

    @property
    def _n_contacts(self) -> int:
        return len(self.src)

    # --- search ----------------------------------------------------------------------

    def search(
        self,
        source: int,
        t0_s: float,
        dest: int,
        *,
        blocked: set[int] | frozenset[int] = frozenset(),
        skip: set[int] | frozenset[int] = frozenset(),
    ) -> tuple[float, list[int]] | None:
        """Earliest best-case arrival at ``dest`` leaving ``source`` at ``t0_s``.

        ``blocked`` nodes may not be entered, ``skip`` contacts may not be used.
        Returns (arrival time, contact ids in order) or None when ``dest`` is out of
        reach. Each node is settled once, at its earliest arrival: ties in arrival go to
        fewer hops among routes that reach every node on the way at its earliest time,
        then to the node settled first; a route reaching a node later with fewer hops and
        arriving at the same time is not preferred, as in ION's search, which keeps the
        first predecessor found (docs/routing.md, "Ties in arrival").
        """
        n = len(self.names)
        best = [INF] * n
        hops = [0] * n
        pred = [-1] * n
        done = bytearray(n)
        best[source] = t0_s
        # Heap entries (key, hops, node, j): j < 0 is node's label; j ≥ 0 means "take
        # node's j-th outgoing contact by start, which starts at key".
        heap = [(t0_s, 0, source, -1)]
        dst, owlt = self.dst, self.owlt
        bounds_all, active_all = self.bounds, self.active
        fut_all, fut_start_all = self.fut, self.fut_start
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            a, h, u, j = pop(heap)
            bound = best[dest]
            if a > bound:
                break
            h1 = h + 1
            if j < 0:
                if done[u]:
                    continue
                done[u] = 1
                if u == dest:
                    break
                # Contacts already running at a: all usable now.
                bnd = bounds_all[u]
                i = bisect_right(bnd, a) - 1
                if i >= 0:
                    for c in active_all[u][i]:
                        v = dst[c]
                        if done[v] or v in blocked or c in skip:
                            continue
                        t = a + owlt[c]
                        if t < best[v] or (t == best[v] and h1 < hops[v]):
                            best[v] = t
                            hops[v] = h1
                            pred[v] = c
                            push(heap, (t, h1, v, -1))
                # Contacts starting later: the first one now, the rest in turn.
                fs = fut_start_all[u]
                k = bisect_right(fs, a)
                if k < len(fs) and fs[k] <= bound:
                    push(heap, (fs[k], h, u, k))
                continue
            # The j-th contact of u by start begins at a (> u's settling time).
            c = fut_all[u][j]
            fs = fut_start_all[u]
            if j + 1 < len(fs) and fs[j + 1] <= bound:
                push(heap, (fs[j + 1], h, u, j + 1))
            v = dst[c]
            if done[v] or v in blocked or c in skip:
                continue
            t = a + owlt[c]
            if t < best[v] or (t == best[v] and h1 < hops[v]):
                best[v] = t
                hops[v] = h1
                pred[v] = c
                push(heap, (t, h1, v, -1))
        if best[dest] == INF or dest == source:
            return None
        path: list[int] = []
        v = dest
        while v != source:
            c = pred[v]
            path.append(c)
            v = self.src[c]
        path.reverse()
        return best[dest], path

    def arrival_times(self, cids: Iterable[int], t0_s: float) -> list[float]:
        """Best-case arrival after each contact of a path leaving at ``t0_s``."""
        out = []
        t = t0_s
        for c in cids:
            st = self.start[c]
            t = (st if st > t else t) + self.owlt[c]
            out.append(t)
        return out


_GRAPHS: PerPlan[ContactGraph] = PerPlan(
    ContactGraph, fresh=lambda g, plan: g._n_contacts == len(plan.contacts))


def _ipn(plan: ContactPlan, name: str) -> int:
    node = plan.nodes.get(name)
    return node.ipn if node is not None else 1 << 62


# --------------------------------------------------------------------------------------
# Routes and the per-destination route list (Yen with Lawler's modification)


@dataclass(frozen=True)
class Route:
    """A route: contacts in order, with best-case figures computed when it was found.

    ``arrival_s`` is the best-case arrival (no queue, no transmission time);
    ``times_s`` the best-case arrival at the receiver of each contact; ``to_time_s`` the
    earliest end among its contacts (ION: the route is unusable after it);
    ``confidence`` the product of its contacts' confidences.
    """

    cids: tuple[int, ...]
    hops: tuple[Contact, ...] = field(compare=False)
    arrival_s: float = field(compare=False)
    times_s: tuple[float, ...] = field(compare=False)
    to_time_s: float = field(compare=False)
    confidence: float = field(compare=False)
    spur_from: int = field(default=0, compare=False)

    @property
    def next_hop(self) -> str:
        return self.hops[0].dst

    @property
    def nodes(self) -> tuple[str, ...]:
        return (self.hops[0].src, *(c.dst for c in self.hops))

    @property
    def n_hops(self) -> int:
        return len(self.cids)

    def describe(self) -> str:
        parts = [f"{c.src}→{c.dst} ({_fmt_t(c.start_s)}–{_fmt_t(c.end_s)})" for c in self.hops]
        return ", ".join(parts)


def _fmt_t(t: float) -> str:
    return f"{t:g}"


def _make_route(g: ContactGraph, cids: list[int] | tuple[int, ...], t0_s: float,
                spur_from: int) -> Route:
    times = g.arrival_times(cids, t0_s)
    conf = 1.0
    for c in cids:
        conf *= g.confidence[c]
    return Route(
        cids=tuple(cids),
        hops=tuple(g.contacts[c] for c in cids),
        arrival_s=times[-1],
        times_s=tuple(times),
        to_time_s=min(g.end[c] for c in cids),
        confidence=conf,
        spur_from=spur_from,
    )


class RouteList:
    """Routes from one node to one destination, in Yen order, computed on demand.

    ``selected`` is Yen's list A (routes handed out, ascending best-case arrival);
    candidates are list B. ``skip`` are contacts left out of every search (those that
    ran out of volume when the list was started).
    """

    def __init__(self, g: ContactGraph, source: int, dest: int, t0_s: float,
                 skip: frozenset[int] | set[int] = frozenset()) -> None:
        self.g = g
        self.source = source
        self.dest = dest
        self.t0_s = t0_s
        self.skip = frozenset(skip)
        self.selected: list[Route] = []
        self._spurs_done = 0  # selected[:_spurs_done] have had their spurs computed
        self._candidates: list[tuple[float, int, tuple[int, ...], Route]] = []
        self._seen: set[tuple[int, ...]] = set()
        self.exhausted = False
        self.contact_set: set[int] = set()
        self.searches = 0

    @property
    def to_time_s(self) -> float:
        """When the first of the selected routes ends (the list must be rebuilt)."""
        return min((r.to_time_s for r in self.selected), default=INF)

    def next_route(self) -> Route | None:
        """Select one more route (Yen's next shortest), or None when there is none."""
        if self.exhausted:
            return None
        g = self.g
        if not self.selected:
            self.searches += 1
            found = g.search(self.source, self.t0_s, self.dest,
                             blocked=frozenset((self.source,)), skip=self.skip)
            if found is None:
                self.exhausted = True
                return None
            return self._select(_make_route(g, found[1], self.t0_s, 0))
        while self._spurs_done < len(self.selected):
            self._spurs(self.selected[self._spurs_done])
            self._spurs_done += 1
        while self._candidates:
            _, _, key, route = heapq.heappop(self._candidates)
            return self._select(route)
        self.exhausted = True
        return None

    def _select(self, route: Route) -> Route:
        self.selected.append(route)
        self._seen.add(route.cids)
        self.contact_set.update(route.cids)
        return route

    def _spurs(self, last: Route) -> None:
        g = self.g
        cids = last.cids
        for i in range(last.spur_from, len(cids)):
            root = cids[:i]
            if i == 0:
                spur_node, spur_t = self.source, self.t0_s
            else:
                spur_node, spur_t = g.dst[cids[i - 1]], last.times_s[i - 1]
            if spur_node == self.dest:
                break
            suppressed = set(self.skip)
            for r in self.selected:
                if len(r.cids) > i and r.cids[:i] == root:
                    suppressed.add(r.cids[i])
            blocked = {self.source}
            blocked.update(g.dst[c] for c in root[:-1])
            blocked.discard(spur_node)
            self.searches += 1
            found = g.search(spur_node, spur_t, self.dest, blocked=blocked, skip=suppressed)
            if found is None:
                continue
            path = (*root, *found[1])
            if path in self._seen:
                continue
            self._seen.add(path)
            route = _make_route(g, path, self.t0_s, i)
            heapq.heappush(self._candidates, (route.arrival_s, route.n_hops, path, route))

    def take(self, k: int) -> list[Route]:
        """The first ``k`` routes (computing them as needed)."""
        while len(self.selected) < k and self.next_route() is not None:
            pass
        return self.selected[:k]


def k_routes(plan: ContactPlan, source: str, dest: str, t_s: float, k: int = 10) -> list[Route]:
    """Yen's first ``k`` routes from ``source`` to ``dest`` leaving at ``t_s``, in order
    of best-case arrival (then hops). No bundle checks, no volume."""
    g = ContactGraph.for_plan(plan)
    if source not in g.index or dest not in g.index or source == dest:
        return []
    return RouteList(g, g.index[source], g.index[dest], t_s).take(k)


def best_route(plan: ContactPlan, source: str, dest: str, t_s: float) -> Route | None:
    """The earliest-arrival route (CGR's first Dijkstra search), or None."""
    routes = k_routes(plan, source, dest, t_s, 1)
    return routes[0] if routes else None


# --------------------------------------------------------------------------------------
# The router


@dataclass(slots=True)
class _Reservation:
    """Volume a bundle holds on its route's contacts and on its neighbour's queue
    (slotted: one is made per bundle routed)."""

    neighbour: int
    priority: int
    eccc: float
    cids: tuple[int, ...]
    deadline_s: float = INF


@dataclass
class RouteCheck:
    """How one route fared for one bundle (for ``netemu route`` and logs)."""

    route: Route
    projected_arrival_s: float | None
    verdict: str  # "chosen", "usable" or why not
    #: Whether the router looked at this route for this bundle: it computes a further
    #: route only while none of those found so far can carry the bundle (as ION does).
    considered: bool = True


class CGRRouter(Router):
    """Contact graph routing from one node (ION's CGR, Yen alternatives).

    Params: ``max_routes`` (routes per destination, default 10), ``min_first_confidence``
    (1.0: ION's "initial contact of route must be certain"), ``overhead_fraction``
    (1/16) and ``stack_overhead_bytes`` (36) for the size estimate, ``excluded`` (nodes
    never used as next hop).

    The next hop may be a neighbour whose contact starts later: the agent keeps the
    bundle in that neighbour's queue until the contact is up (ION does the same). Asking
    again for a bundle that holds a reservation gives the old reservation back first.
    """

    name = "cgr"
    PARAMS = {
        "max_routes": "routes kept per destination (Yen's K), default 10",
        "min_first_confidence": "least confidence of a route's first contact, default 1.0",
        "overhead_fraction": "proportional part of the size estimate, default 1/16",
        "stack_overhead_bytes": "least overhead in the size estimate, default 36",
        "excluded": "nodes never used as next hop",
    }

    def __init__(self, node: str, plan: ContactPlan, **params: object) -> None:
        super().__init__(node, plan, **params)
        check_params(self.name, params, self.PARAMS)
        n = self.name
        self.max_routes = int(number(n, params, "max_routes", 10, minimum=1, integer=True))
        self.min_first_confidence = number(n, params, "min_first_confidence", 1.0,
                                           minimum=0.0, maximum=1.0)
        self.overhead_fraction = number(n, params, "overhead_fraction", OVERHEAD_FRACTION,
                                        minimum=0.0)
        self.stack_overhead_bytes = number(n, params, "stack_overhead_bytes",
                                           STACK_OVERHEAD_BYTES, minimum=0.0)
        excluded = params.get("excluded", ()) or ()
        if (isinstance(excluded, str) or not isinstance(excluded, Iterable)
                or not all(isinstance(x, str) for x in excluded)):
            raise InputError("cgr: 'excluded' is a list of node names", field="routing.excluded")
        self.excluded: frozenset[str] = frozenset(excluded)
        self._reset(plan)

    def _reset(self, plan: ContactPlan) -> None:
        self.graph = ContactGraph.for_plan(plan)
        self._me = self.graph.index.get(self.node, -1)
        self._lists: dict[int, RouteList] = {}
        self._consumed: dict[int, float] = {}  # contact id -> bytes reserved on it
        self._depleted: set[int] = set()
        self._lost: set[int] = set()  # planned contacts that went down early
        self._backlog: dict[int, list[float]] = {}  # neighbour -> bytes queued by priority
        self._reservations: dict[str, _Reservation] = {}
        self._expiries: list[tuple[float, str]] = []  # (deadline, bundle id) heap
        self.searches = 0

    def update_plan(self, plan: ContactPlan) -> None:
        super().update_plan(plan)
        self._reset(plan)

    # --- size, volume ----------------------------------------------------------------

    def estimated_size(self, size_bytes: float) -> float:
        return estimated_size_bytes(size_bytes, overhead_fraction=self.overhead_fraction,
                                    stack_overhead_bytes=self.stack_overhead_bytes)

    def residual_volume(self, cid: int) -> float:
        """Bytes still free on contact ``cid`` (its volume less what is reserved)."""
        return self.graph.volume[cid] - self._consumed.get(cid, 0.0)

    def backlog_bytes(self, neighbour: str, priority: int = 0) -> float:
        """Bytes this router has committed to ``neighbour``'s queue at ``priority`` and
        above, not yet sent."""
        q = self._backlog.get(self.graph.index.get(neighbour, -1))
        return sum(q[priority:]) if q else 0.0

    # --- route lists ------------------------------------------------------------------

    def route_list(self, dest: str, now_s: float) -> RouteList | None:
        """The cached route list to ``dest``, rebuilt if one of its routes has ended or
        run out of volume."""
        d = self.graph.index.get(dest)
        if d is None or self._me < 0 or d == self._me:
            return None
        rl = self._lists.get(d)
        if rl is not None and (now_s >= rl.to_time_s or now_s < rl.t0_s):
            rl = None
        if rl is None:
            self._prune(now_s)
            rl = RouteList(self.graph, self._me, d, now_s, self._depleted | self._lost)
            self._lists[d] = rl
        return rl

    def _prune(self, now_s: float) -> None:
        """Forget reservations on contacts that have ended."""
        end = self.graph.end
        for c in [c for c in self._consumed if end[c] <= now_s]:
            del self._consumed[c]
            self._depleted.discard(c)

    # --- per bundle -------------------------------------------------------------------

    def _pbat(self, r: Route, eccc: float, priority: int, now_s: float) -> tuple[float | None, str]:
        """Projected bundle arrival time on ``r`` (ION's computePBAT), or None and why."""
        g = self.graph
        c0 = r.cids[0]
        nb = g.dst[c0]
        q = self._backlog.get(nb)
        claims = sum(q[priority:]) if q else 0.0
        if claims > 0:
            # Part of the queue leaves during earlier contacts with the same neighbour.
            cids, starts = g.pair[(self._me, nb)]
            for c, st in zip(cids, starts, strict=True):
                if st >= g.start[c0] or claims <= 0:
                    break
                if g.end[c] <= now_s:
                    continue
                claims -= g.rate_Bps[c] * (g.end[c] - max(now_s, g.start[c]))
            claims = max(claims, 0.0)
        n = len(r.cids)
        stop = [0.0] * n
        m = INF
        for k in range(n - 1, -1, -1):
            m = min(m, g.end[r.cids[k]])
            stop[k] = m
        acq = now_s
        for k, c in enumerate(r.cids):
            rate = g.rate_Bps[c]
            # The first hop waits for the queue ahead of it; later hops for the bundle.
            first = max(now_s, g.start[c]) + claims / rate if k == 0 else max(acq, g.start[c])
            if g.end[c] <= first:
                return None, "contact ends before the bundle can be sent" if k else \
                    "queue to first hop outlasts its contact"
            residual = g.volume[c] - self._consumed.get(c, 0.0)
            if residual <= 0:
                return None, "a contact is fully booked"
            limit = min(residual, (stop[k] - first) * rate)
            if limit < eccc:
                return None, "not enough volume left"
            acq = first + eccc / rate + g.owlt[c]
        return acq, ""

    def check_routes(self, bundle: BundleInfo, now_s: float, *, k: int | None = None) -> list[RouteCheck]:
        """The first ``k`` routes to the bundle's destination (default ``max_routes``),
        each with its projected arrival and verdict; "chosen" marks the route
        :meth:`route` would take now (the best of those it looks at: it computes further
        routes only while none can carry the bundle). Reserves nothing."""
        if bundle.destination == self.node:
            return []
        rl = self.route_list(bundle.destination, now_s)
        if rl is None:
            return []
        eccc = self.estimated_size(bundle.size_bytes)
        _, chosen, _ = self._choose(bundle, rl, eccc, now_s)
        looked_at = len(rl.selected)
        routes = rl.take(k or self.max_routes)
        out: list[RouteCheck] = []
        for i, r in enumerate(routes):
            pbat, why = self._check(r, bundle, eccc, now_s)
            verdict = "chosen" if r is chosen else why or "usable"
            out.append(RouteCheck(r, pbat, verdict, considered=i < looked_at))
        return out

    def _choose(self, bundle: BundleInfo, rl: RouteList, eccc: float,
                now_s: float) -> tuple[RankKey | None, Route | None, dict[str, int]]:
        """The route for ``bundle``: the best-ranked of the routes selected so far that
        can carry it, computing one more (Yen) only while none can, up to
        ``max_routes`` (ION's lazy ``computeAnotherRoute``); with how many were unusable
        and why. Reserves nothing."""
        best: RankKey | None = None
        best_route: Route | None = None
        why: dict[str, int] = {}
        i = 0
        while True:
            while i < len(rl.selected):
                r = rl.selected[i]
                i += 1
                pbat, reason = self._check(r, bundle, eccc, now_s)
                if pbat is None:
                    why[reason] = why.get(reason, 0) + 1
                    continue
                key = self._rank(r, pbat)
                if best is None or key < best:
                    best, best_route = key, r
            if best is not None or len(rl.selected) >= self.max_routes:
                break
            before = rl.searches
            nxt = rl.next_route()
            self.searches += rl.searches - before
            if nxt is None or nxt.arrival_s > bundle.deadline_s:
                # Yen hands routes out by best-case arrival: none after this one is
                # in time either.
                if nxt is not None:
                    i += 1
                    why["arrives after the deadline"] = why.get("arrives after the deadline", 0) + 1
                break
        return best, best_route, why

    def _check(self, r: Route, bundle: BundleInfo, eccc: float, now_s: float) -> tuple[float | None, str]:
        if r.to_time_s <= now_s:
            return None, "route has ended"
        if self._lost and self._lost.intersection(r.cids):
            return None, "a contact of the route went down"
        if r.arrival_s > bundle.deadline_s:
            return None, "arrives after the deadline"
        g = self.graph
        c0 = r.cids[0]
        if g.confidence[c0] < self.min_first_confidence:
            return None, "first contact is not certain"
        nh = g.names[g.dst[c0]]
        if nh == bundle.previous_hop:
            return None, "first hop is the previous hop"
        if nh in self.excluded:
            return None, "first hop is excluded"
        pbat, why = self._pbat(r, eccc, max(0, min(2, bundle.priority)), now_s)
        if pbat is None:
            return None, why
        if pbat > bundle.deadline_s:
            return None, "projected arrival after the deadline"
        return pbat, ""

    def _rank(self, r: Route, pbat: float) -> RankKey:
        return (pbat, r.n_hops, -r.to_time_s, self.graph.ipn[self.graph.dst[r.cids[0]]], r.cids)

    def _expire(self, now_s: float) -> None:
        """Give back reservations of bundles past their deadline: the agent drops them
        without telling the router."""
        ex = self._expiries
        while ex and ex[0][0] < now_s:
            deadline, bid = heapq.heappop(ex)
            res = self._reservations.get(bid)
            if res is not None and res.deadline_s == deadline:
                self._release(bid, restore=True)

    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        self._release(bundle.bundle_id, restore=True)
        self._expire(now_s)
        if bundle.destination == self.node:
            return Decision(reason="this node is the destination")
        rl = self.route_list(bundle.destination, now_s)
        if rl is None:
            return Decision(reason=f"{bundle.destination} is not in the contact plan")
        eccc = self.estimated_size(bundle.size_bytes)
        best, best_route, why = self._choose(bundle, rl, eccc, now_s)
        if best_route is None or best is None:
            if not rl.selected:
                return Decision(reason=f"no route to {bundle.destination} from t={now_s:g}")
            detail = "; ".join(f"{n} {w}" for w, n in sorted(why.items()))
            return Decision(reason=f"no usable route to {bundle.destination}: {detail}")
        self._reserve(bundle, best_route, eccc)
        nh = best_route.next_hop
        c0 = best_route.hops[0]
        when = "now" if c0.start_s <= now_s else f"at t={c0.start_s:g}"
        return Decision(
            hops=(Hop(nh),),
            keep=False,
            projected_arrival_s=best[0],
            reason=f"CGR: via {nh} ({when}), {best_route.n_hops} hops, "
                   f"projected arrival t={best[0]:.6g}",
            route=best_route.nodes,
        )

    def largest_piece(self, bundle: BundleInfo, now_s: float,
                      neighbours: frozenset[str]) -> int | None:
        """The largest part of ``bundle`` that one of the routes selected so far can
        carry now (volume left, queue, deadline: the checks :meth:`route` makes), by
        bisection on the size; None when no route carries even one byte, or when the
        whole bundle fits one (then splitting is not the answer)."""
        if bundle.destination == self.node:
            return None
        rl = self.route_list(bundle.destination, now_s)
        if rl is None:
            return None
        best = 0
        for r in rl.selected[: self.max_routes]:
            def fits(size: int, r: Route = r) -> bool:
                b = BundleInfo(bundle.bundle_id, bundle.source, bundle.destination, size,
                               bundle.priority, bundle.deadline_s, bundle.previous_hop,
                               bundle.copies)
                return self._check(r, b, self.estimated_size(size), now_s)[0] is not None
            if not fits(1):
                continue
            lo, hi = 1, bundle.size_bytes  # fits(lo); find the largest size that fits
            if fits(hi):
                return None
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if fits(mid):
                    lo = mid
                else:
                    hi = mid
            best = max(best, lo)
        return best or None

    def route_many(self, bundles: Iterable[BundleInfo], now_s: float,
                   neighbours: frozenset[str]) -> list[Decision]:
        """:meth:`route` for a batch at one time, with the same results as calling it
        bundle by bundle (``tests/unit/test_routing_cgr.py`` checks that on random plans).

        What the batch shares: expiry of old reservations (once), the route list of each
        destination and, per route, the checks that do not depend on the bundle (route
        ended, contact lost, first contact uncertain, first hop excluded) and the figures
        the projected arrival needs (first neighbour, earliest end from each hop on).
        Per bundle, as before: deadline and previous hop, the projected arrival against
        the current queue and volume, the choice, the reservation (so a batch moves to
        the next route when the first runs out of volume). A bundle with no usable route
        among those already selected is handed to :meth:`route`, which may search more.
        """
        if not isinstance(bundles, list | tuple):
            bundles = list(bundles)
        if not bundles:
            return []  # (no route() calls: nothing expires, as bundle by bundle)
        self._expire(now_s)
        g = self.graph
        index = g.index
        me = self._me
        lists = self._lists
        consumed = self._consumed
        backlog = self._backlog
        volume, rate_Bps, start, end, owlt = g.volume, g.rate_Bps, g.start, g.end, g.owlt
        # dest index -> (route list, routes selected when cached, per-route statics)
        cache: dict[int, tuple[RouteList, int, list[Statics]]] = {}
        eccc_of: dict[float, float] = {}
        out: list[Decision] = []
        for b in bundles:
            if b.bundle_id in self._reservations:
                self._release(b.bundle_id, restore=True)
            d = index.get(b.destination)
            if d is None or me < 0 or d == me:
                out.append(self.route(b, now_s, neighbours))
                continue
            hit = cache.get(d)
            if hit is None or lists.get(d) is not hit[0] or len(hit[0].selected) != hit[1]:
                rl = self.route_list(b.destination, now_s)
                if rl is None or not rl.selected:
                    out.append(self.route(b, now_s, neighbours))
                    continue
                hit = (rl, len(rl.selected), [self._statics(r, now_s) for r in rl.selected])
                cache[d] = hit
            size = b.size_bytes
            eccc = eccc_of.get(size)
            if eccc is None:
                eccc = eccc_of[size] = self.estimated_size(size)
            prio = b.priority
            if not 0 <= prio <= 2:
                prio = max(0, min(2, prio))
            deadline = b.deadline_s
            prev = b.previous_hop
            best: tuple[Any, ...] | None = None  # (projected arrival, *rank tail)
            best_st: Statics | None = None
            for st in hit[2]:
                r, static_why, nb, nh, stop, pair, rank_tail = st[:7]
                if static_why or r.arrival_s > deadline or nh == prev:
                    continue
                # ION's computePBAT, as _pbat computes it (same operations, same order).
                q = backlog.get(nb)
                claims = sum(q[prio:]) if q else 0.0
                cids = r.cids
                c0 = cids[0]
                if claims > 0:
                    for c, s in zip(pair[0], pair[1], strict=True):
                        if s >= start[c0] or claims <= 0:
                            break
                        if end[c] <= now_s:
                            continue
                        claims -= rate_Bps[c] * (end[c] - max(now_s, start[c]))
                    claims = max(claims, 0.0)
                acq = now_s
                ok = True
                for k, c in enumerate(cids):
                    rate = rate_Bps[c]
                    first = max(now_s, start[c]) + claims / rate if k == 0 else \
                        max(acq, start[c])
                    if end[c] <= first:
                        ok = False
                        break
                    residual = volume[c] - consumed.get(c, 0.0)
                    if residual <= 0 or min(residual, (stop[k] - first) * rate) < eccc:
                        ok = False
                        break
                    acq = first + eccc / rate + owlt[c]
                if not ok or acq > deadline:
                    continue
                key = (acq, *rank_tail)
                if best is None or key < best:
                    best, best_st = key, st
            if best is None or best_st is None:
                # Nothing usable among the routes selected: route() gives the reasons
                # and computes further routes (its own checks find the same state).
                out.append(self.route(b, now_s, neighbours))
                continue
            self._reserve(b, best_st[0], eccc)
            # (route() writes the same reason: f"CGR: via … projected arrival t={x:.6g}")
            out.append(Decision(best_st[7], False, best[0], best_st[8] + format(best[0], ".6g"),
                                best_st[9]))
        return out

    def _statics(self, r: Route, now_s: float) -> Statics:
        """What :meth:`route_many` needs of route ``r`` at ``now_s`` that no bundle
        changes: (route, why it is unusable or "", first neighbour index, its name,
        earliest end from each hop on, the contacts to that neighbour, rank tail, and the
        decision's hops, reason up to the projected arrival, and node sequence)."""
        g = self.graph
        c0 = r.cids[0]
        nb = g.dst[c0]
        nh = g.names[nb]
        why = ""
        if r.to_time_s <= now_s:
            why = "route has ended"
        elif self._lost and self._lost.intersection(r.cids):
            why = "a contact of the route went down"
        elif g.confidence[c0] < self.min_first_confidence:
            why = "first contact is not certain"
        elif nh in self.excluded:
            why = "first hop is excluded"
        n = len(r.cids)
        stop = [0.0] * n
        m = INF
        for k in range(n - 1, -1, -1):
            m = min(m, g.end[r.cids[k]])
            stop[k] = m
        pair = g.pair.get((self._me, nb), ((), ()))
        c0s = r.hops[0].start_s
        when = "now" if c0s <= now_s else f"at t={c0s:g}"
        return (r, why, nb, nh, stop, pair, (r.n_hops, -r.to_time_s, g.ipn[nb], r.cids),
                (Hop(nh),), f"CGR: via {nh} ({when}), {r.n_hops} hops, projected arrival t=",
                r.nodes)

    def _reserve(self, bundle: BundleInfo, r: Route, eccc: float) -> None:
        g = self.graph
        prio = bundle.priority
        if not 0 <= prio <= 2:
            prio = max(0, min(2, prio))
        cids = r.cids
        nb = g.dst[cids[0]]
        consumed, volume = self._consumed, g.volume
        for c in cids:
            used = consumed.get(c, 0.0)
            left = volume[c] - used - eccc
            consumed[c] = used + eccc
            if left <= 0 and c not in self._depleted:
                self._depleted.add(c)
                # A contact ran out of volume: routes through it are recomputed.
                for d, rl in list(self._lists.items()):
                    if c in rl.contact_set:
                        del self._lists[d]
        q = self._backlog.setdefault(nb, [0.0, 0.0, 0.0])
        q[prio] += eccc
        self._reservations[bundle.bundle_id] = _Reservation(nb, prio, eccc, r.cids,
                                                            bundle.deadline_s)
        if math.isfinite(bundle.deadline_s):
            heapq.heappush(self._expiries, (bundle.deadline_s, bundle.bundle_id))

    def _release(self, bundle_id: str, *, restore: bool) -> None:
        res = self._reservations.pop(bundle_id, None)
        if res is None:
            return
        q = self._backlog.get(res.neighbour)
        if q is not None:
            q[res.priority] = max(0.0, q[res.priority] - res.eccc)
        if restore:
            freed = False
            for c in res.cids:
                if c in self._consumed:
                    self._consumed[c] -= res.eccc
                    if self._consumed[c] <= 1e-9:
                        del self._consumed[c]
                    if c in self._depleted and self.residual_volume(c) > 0:
                        self._depleted.discard(c)
                        freed = True
            if freed:
                self._lists.clear()

    # --- events -----------------------------------------------------------------------

    def sent(self, bundle: BundleInfo, neighbour: str, now_s: float) -> None:
        """The bundle left the queue: the backlog shrinks, the volume stays used."""
        self._release(bundle.bundle_id, restore=False)

    def failed(self, bundle: BundleInfo, neighbour: str, now_s: float) -> None:
        """Sending failed: give back the volume reserved on every contact of its route."""
        self._release(bundle.bundle_id, restore=True)

    def contact_ended(self, neighbour: str, now_s: float) -> None:
        """A contact went down. If the plan says it should still be up (a failure: a
        ground station dropped out), the rest of it is left out of every route until the
        plan is replaced; route lists through it are recomputed."""
        g = self.graph
        nb = g.index.get(neighbour)
        if nb is None or self._me < 0:
            return
        entry = g.pair.get((self._me, nb))
        if entry is None:
            return
        lost = [c for c in entry[0] if g.start[c] <= now_s < g.end[c] - 1e-3]
        if not lost:
            return
        self._lost.update(lost)
        for d, rl in list(self._lists.items()):
            if rl.contact_set.intersection(lost):
                del self._lists[d]

    def contact_started(self, neighbour: str, now_s: float) -> None:
        """A contact came (back) up: planned contacts to it that were marked lost and
        are still running become usable again."""
        g = self.graph
        nb = g.index.get(neighbour)
        entry = g.pair.get((self._me, nb)) if nb is not None else None
        if not entry or not self._lost:
            return
        back = {c for c in entry[0] if c in self._lost and g.end[c] > now_s}
        if back:
            self._lost -= back
            self._lists.clear()
