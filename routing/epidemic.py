"""Epidemic routing: every neighbour that lacks a bundle gets a copy.

Vahdat & Becker (2000): at each encounter the two nodes swap summary vectors and each
sends what the other is missing. Here the agent swaps the vectors through
``metadata_for`` / ``metadata_from`` at contact start; a neighbour that sent no vector is
assumed to lack every bundle. A node never resends a bundle to a neighbour that has it
(known from its vector or from our own earlier send), never sends it back to the node it
came from, and always keeps its own copy.
"""

from __future__ import annotations

from netemu.plan.contacts import ContactPlan
from netemu.routing.base import BundleInfo, Decision, Hop, Metadata, Router
from netemu.routing.params import check_params
from netemu.routing.summary import SummaryVectors, expired


class EpidemicRouter(Router):
    """Flood to every neighbour that does not have the bundle yet."""

    name = "epidemic"
    PARAMS: dict[str, str] = {}

    def __init__(self, node: str, plan: ContactPlan, **params: object) -> None:
        super().__init__(node, plan, **params)
        check_params(self.name, params, self.PARAMS)
        self.vectors = SummaryVectors()

    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        if bundle.destination == self.node:
            return Decision(reason="this node is the destination")
        if expired(bundle, now_s):
            self.vectors.drop(bundle.bundle_id)
            return Decision(reason="bundle expired")
        self.vectors.hold(bundle)
        if bundle.previous_hop:
            self.vectors.mark(bundle.previous_hop, bundle.bundle_id)
        targets = [
            n for n in sorted(neighbours)
            if n != self.node and n != bundle.previous_hop
            and not self.vectors.has(n, bundle.bundle_id)
        ]
        if not targets:
            return Decision(keep=True, reason="every neighbour has it; waiting for new contacts")
        return Decision(hops=tuple(Hop(n) for n in targets), keep=True,
                        reason=f"epidemic: copy to {len(targets)} neighbour(s)")

    def sent(self, bundle: BundleInfo, neighbour: str, now_s: float) -> None:
        self.vectors.mark(neighbour, bundle.bundle_id)

    def delivered(self, bundle: BundleInfo, now_s: float) -> None:
        self.vectors.drop(bundle.bundle_id)

    def metadata_for(self, neighbour: str, now_s: float) -> Metadata | None:
        return self.vectors.vector(now_s)

    def metadata_from(self, neighbour: str, metadata: Metadata, now_s: float) -> None:
        self.vectors.learn(neighbour, metadata)
