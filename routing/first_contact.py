"""First contact: hand the single copy to whichever node is in contact.

The simplest DTN forwarding (Jain, Fall & Patra, 2004): no knowledge, one copy, forward
to any available contact. Deterministic here: the destination if it is in contact, else
the first neighbour by name that is not the node the bundle came from.
"""

from __future__ import annotations

from netemu.plan.contacts import ContactPlan
from netemu.routing.base import BundleInfo, Decision, Hop, Router
from netemu.routing.params import check_params


class FirstContactRouter(Router):
    """Forward the only copy to the first available neighbour."""

    name = "first-contact"
    PARAMS: dict[str, str] = {}

    def __init__(self, node: str, plan: ContactPlan, **params: object) -> None:
        super().__init__(node, plan, **params)
        check_params(self.name, params, self.PARAMS)

    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        if bundle.destination == self.node:
            return Decision(reason="this node is the destination")
        if bundle.destination in neighbours:
            return Decision(hops=(Hop(bundle.destination),), reason="destination in contact")
        for nb in sorted(neighbours):
            if nb not in (self.node, bundle.previous_hop):
                return Decision(hops=(Hop(nb),), reason=f"first contact: {nb}")
        return Decision(reason="no neighbour in contact; waiting")
