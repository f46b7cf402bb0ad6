"""Binary spray-and-wait (Spyropoulos, Psounis & Raghavendra, 2005).

The source starts with ``L`` copies (param ``copies``, default 8). Spray phase: a node
holding n > 1 copies that meets a node without the bundle hands it floor(n/2) copies and
keeps ceil(n/2). Wait phase: with a single copy left, the node forwards only to the
destination itself (direct transmission). The copy rights travel in ``Hop.copies``; the
receiving agent passes them back in ``BundleInfo.copies``. The router keeps its own count
per bundle and lowers it when the agent reports a send (``sent``).
"""

from __future__ import annotations

from netemu.plan.contacts import ContactPlan
from netemu.routing.base import BundleInfo, Decision, Hop, Metadata, Router
from netemu.routing.params import check_params, number
from netemu.routing.summary import SummaryVectors, expired


class SprayAndWaitRouter(Router):
    """Binary spray-and-wait with ``copies`` = L."""

    name = "spray-and-wait"
    PARAMS = {"copies": "L, the copies a source starts with, default 8"}

    def __init__(self, node: str, plan: ContactPlan, **params: object) -> None:
        super().__init__(node, plan, **params)
        check_params(self.name, params, self.PARAMS)
        self.initial_copies = int(number(self.name, params, "copies", 8, minimum=1, integer=True))
        self.vectors = SummaryVectors()
        self._copies: dict[str, int] = {}
        self._offered: dict[str, dict[str, int]] = {}  # bundle -> neighbour -> copies

    def copies_held(self, bundle_id: str) -> int:
        return self._copies.get(bundle_id, 0)

    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        bid = bundle.bundle_id
        if bundle.destination == self.node:
            return Decision(reason="this node is the destination")
        if expired(bundle, now_s):
            self._forget(bid)
            return Decision(reason="bundle expired")
        if bid not in self._copies:
            local = bundle.previous_hop is None  # created here: start with L copies
            self._copies[bid] = self.initial_copies if local else max(1, bundle.copies)
            self.vectors.hold(bundle)
            if bundle.previous_hop:
                self.vectors.mark(bundle.previous_hop, bid)
        n = self._copies[bid]
        self._offered[bid] = {}
        if bundle.destination in neighbours and not self.vectors.has(bundle.destination, bid):
            self._offered[bid][bundle.destination] = n
            return Decision(hops=(Hop(bundle.destination, 1),), keep=False,
                            reason="destination in contact: deliver")
        if n <= 1:
            return Decision(keep=True, reason="wait phase: one copy, waiting for the destination")
        hops = []
        for nb in sorted(neighbours):
            if n <= 1:
                break
            if nb in (self.node, bundle.previous_hop) or self.vectors.has(nb, bid):
                continue
            give = n // 2
            hops.append(Hop(nb, give))
            self._offered[bid][nb] = give
            n -= give
        if not hops:
            return Decision(keep=True, reason=f"spray phase: {n} copies, no new neighbour")
        return Decision(hops=tuple(hops), keep=True,
                        reason=f"spray: {sum(h.copies for h in hops)} copies out, {n} kept")

    def sent(self, bundle: BundleInfo, neighbour: str, now_s: float) -> None:
        bid = bundle.bundle_id
        given = self._offered.get(bid, {}).pop(neighbour, 0)
        self.vectors.mark(neighbour, bid)
        if neighbour == bundle.destination:
            self._forget(bid)
        elif bid in self._copies:
            self._copies[bid] = max(1, self._copies[bid] - given)

    def delivered(self, bundle: BundleInfo, now_s: float) -> None:
        self._forget(bundle.bundle_id)

    def _forget(self, bid: str) -> None:
        self._copies.pop(bid, None)
        self._offered.pop(bid, None)
        self.vectors.drop(bid)

    def metadata_for(self, neighbour: str, now_s: float) -> Metadata | None:
        return self.vectors.vector(now_s)

    def metadata_from(self, neighbour: str, metadata: Metadata, now_s: float) -> None:
        self.vectors.learn(neighbour, metadata)
