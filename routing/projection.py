"""Projected arrival: when CGR expects a bundle to arrive, judged at the moment it is sent.

For a send (source, destination, time, size, priority, lifetime) on a contact plan, the
projected arrival is what the source's :class:`~netemu.routing.cgr.CGRRouter` answers
at the send time with nothing else queued: the route it picks (Yen's routes from its
route list, the first usable one, ranked by projected arrival) and that route's
projected bundle arrival time (ION's computePBAT: waiting for each contact, the
transmission time of the estimated size at every hop, light time). None when no route
delivers before the bundle's lifetime ends.

This is the yardstick a run's deliveries are measured against (delivered late or not
at all, compared with what the plan promised). The router is CGR's own, not a second
implementation: one router per source node keeps its route lists between sends, as an
agent's does, so a source's sends cost a route search only when its route list for that
destination runs out (a contact of it ends); each send's volume is reserved and given
back at once, so one send never delays another. When a source's route list, made for an
earlier send, has no usable route for this one (its routes all share a contact that ends
in a moment), the agent holds the bundle until the list is rebuilt, moments later; the
projection then comes from a route list made at the send time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from netemu.plan.contacts import ContactPlan
from netemu.routing.base import BundleInfo
from netemu.routing.cgr import CGRRouter

NO_NEIGHBOURS: frozenset[str] = frozenset()
"""CGR plans from the contact plan alone: the neighbours up now do not enter."""


class Projector:
    """Projected arrivals on one contact plan; CGR parameters (``max_routes``, …) as the
    agents' ``routing:`` section gives them.

    The plan's contact index is shared with every router on the same plan object
    (:meth:`ContactGraph.for_plan`); one router is made per source node on first use.
    """

    def __init__(self, plan: ContactPlan, **cgr_params: Any) -> None:
        self.plan = plan
        self.cgr_params = cgr_params
        self._routers: dict[str, CGRRouter] = {}
        self._seq = 0
        self._retired_searches = 0
        self.fresh = 0
        """Sends projected from a fresh route list (the source's cached one had no usable
        route for them)."""

    def router(self, src: str) -> CGRRouter:
        """The CGR router projections from ``src`` use (made once)."""
        r = self._routers.get(src)
        if r is None:
            r = self._routers[src] = CGRRouter(src, self.plan, **self.cgr_params)
        return r

    @property
    def searches(self) -> int:
        """Route searches run so far (all sources)."""
        return sum(r.searches for r in self._routers.values()) + self._retired_searches

    def arrival(self, src: str, dst: str, t_s: float, size_bytes: int, priority: int = 1,
                lifetime_s: float = math.inf) -> float | None:
        """The arrival CGR projects for one send, or None when no route delivers within
        ``lifetime_s``. A node not in the plan has no route; ``src == dst`` arrives at
        once."""
        if src == dst:
            return t_s
        router = self.router(src)
        self._seq += 1
        bundle = BundleInfo(f"projection-{self._seq}", src, dst, int(size_bytes),
                            priority=int(priority), deadline_s=t_s + lifetime_s)
        d = router.route(bundle, t_s, NO_NEIGHBOURS)
        if not d.hops:
            # The route list was made earlier and every route of it fails this bundle
            # (all share a contact that ends in a moment): the agent holds the bundle
            # until the list is rebuilt, moments later. Project from a list made now.
            router = CGRRouter(src, self.plan, **self.cgr_params)
            self.fresh += 1
            d = router.route(bundle, t_s, NO_NEIGHBOURS)
            self._retired_searches += router.searches
            if not d.hops:
                return None
        # Give the reservation back: a projection reserves nothing for later sends.
        router.failed(bundle, d.hops[0].node, t_s)
        return d.projected_arrival_s

    def arrivals(self, src: Sequence[str], dst: Sequence[str], t_s: npt.ArrayLike,
                 size_bytes: npt.ArrayLike, priority: npt.ArrayLike = 1,
                 lifetime_s: npt.ArrayLike = math.inf) -> npt.NDArray[np.float64]:
        """Projected arrivals of many sends (arrays of equal length; scalars for
        ``priority``/``lifetime_s`` apply to all), NaN where no route delivers.

        Sends are projected source by source in time order, whatever the order given,
        so the answer does not depend on it; results come back in the order given.
        """
        n = len(src)
        t = np.broadcast_to(np.asarray(t_s, dtype=np.float64), (n,))
        size = np.broadcast_to(np.asarray(size_bytes, dtype=np.int64), (n,))
        prio = np.broadcast_to(np.asarray(priority, dtype=np.int64), (n,))
        life = np.broadcast_to(np.asarray(lifetime_s, dtype=np.float64), (n,))
        if len(dst) != n:
            raise ValueError(f"{n} sources but {len(dst)} destinations")
        out = np.full(n, np.nan)
        src_codes: dict[str, int] = {}
        codes = np.fromiter((src_codes.setdefault(s, len(src_codes)) for s in src),
                            dtype=np.int64, count=n)
        order = np.lexsort((t, codes))
        tl, sl, pl, ll = t.tolist(), size.tolist(), prio.tolist(), life.tolist()
        arrival = self.arrival
        for i in order.tolist():
            a = arrival(src[i], dst[i], tl[i], sl[i], pl[i], ll[i])
            if a is not None:
                out[i] = a
        return out


def project_arrivals(plan: ContactPlan,
                     sends: Iterable[tuple[str, str, float, int, int, float]],
                     **cgr_params: Any) -> list[float | None]:
    """Projected arrival of each ``(src, dst, t_s, size_bytes, priority, lifetime_s)``
    (None where no route delivers in time), in the order given."""
    rows = list(sends)
    if not rows:
        return []
    src, dst, t, size, prio, life = zip(*rows, strict=True)
    arr = Projector(plan, **cgr_params).arrivals(src, dst, t, size, prio, life)
    return [None if math.isnan(a) else float(a) for a in arr.tolist()]
