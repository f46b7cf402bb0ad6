"""Static routes: a fixed table destination → next hop(s), from the scenario.

Params: ``routes`` maps a destination to a next hop or a list of next hops in order of
preference (the first one in contact now is used); ``default`` is the next hop (or list)
for destinations not in the table. A destination that is a neighbour right now is
reached directly. With no next hop in contact the bundle waits.
"""

from __future__ import annotations

from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.routing.base import BundleInfo, Decision, Hop, Router
from netemu.routing.params import check_params


def _as_list(v: object) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [v]
    if isinstance(v, (list, tuple)):
        return [str(x) for x in v]
    raise InputError(f"static: a next hop is a node name or a list of them, got {v!r}",
                     field="routing.routes")


class StaticRouter(Router):
    """Next hop from a fixed table."""

    name = "static"
    PARAMS = {"routes": "{destination: next hop or [next hops]}",
              "default": "next hop (or list) for other destinations"}

    def __init__(self, node: str, plan: ContactPlan, **params: object) -> None:
        super().__init__(node, plan, **params)
        check_params(self.name, params, self.PARAMS)
        routes = params.get("routes", {}) or {}
        if not isinstance(routes, dict):
            raise InputError("static: 'routes' maps destination → next hop",
                             field="routing.routes")
        self.table = {str(d): _as_list(nh) for d, nh in routes.items()}
        self.default = _as_list(params.get("default"))

    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        dest = bundle.destination
        if dest == self.node:
            return Decision(reason="this node is the destination")
        if dest in neighbours:
            return Decision(hops=(Hop(dest),), reason="destination in contact")
        choices = self.table.get(dest, self.default)
        if not choices:
            return Decision(reason=f"no static route to {dest}")
        for nh in choices:
            if nh in neighbours and nh != bundle.previous_hop:
                return Decision(hops=(Hop(nh),), reason=f"static route via {nh}")
        return Decision(reason=f"static next hop {'/'.join(choices)} not in contact; waiting")
