"""Direct: a bundle goes straight to its destination, or to a default next hop.

Routing without a plan (an agent configured by hand): the destination when that node is
a neighbour now, else ``default`` (a neighbour name) when it is one; otherwise the
bundle waits.
"""

from __future__ import annotations

from netemu.plan.contacts import ContactPlan
from netemu.routing.base import BundleInfo, Decision, Hop, Router
from netemu.routing.params import check_params


class DirectRouter(Router):
    """To the destination when it is a neighbour, else to ``default`` if given."""

    name = "direct"
    PARAMS = {"default": "next hop (a neighbour name) for destinations not in contact"}

    def __init__(self, node: str, plan: ContactPlan, **params: object) -> None:
        super().__init__(node, plan, **params)
        check_params(self.name, params, self.PARAMS)

    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        if bundle.destination in neighbours:
            return Decision((Hop(bundle.destination),), reason="neighbour")
        default = self.params.get("default")
        if isinstance(default, str) and default in neighbours:
            return Decision((Hop(default),), reason="default route")
        return Decision(reason="destination not a neighbour")
