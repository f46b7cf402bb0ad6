"""The router interface: how a bundle agent asks where a bundle goes.

Routers are pure decision logic, without sockets or clocks: the agent (or a simulator)
tells a router the time, the neighbours it has now and what happened, and the router
answers with :class:`Decision` objects. The same router object therefore runs in an
emulated host on the wall clock and in tests on a virtual clock.

Node names are those of the contact plan (:class:`netemu.plan.contacts.Node.name`). Times are
seconds from the plan epoch (scenario time).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from netemu.plan.contacts import ContactPlan

Metadata = dict[str, Any]
"""What routers exchange at contact start: a JSON-able mapping, each router its own keys."""


@dataclass(frozen=True, init=False)
class BundleInfo:
    """What a router needs to know of a bundle.

    ``bundle_id`` is unique per bundle (source, creation time, sequence, fragment);
    ``size_bytes`` is the encoded bundle size; ``priority`` is 0 bulk, 1 normal,
    2 expedited; ``deadline_s`` is when the bundle expires (scenario seconds, creation
    plus lifetime); ``previous_hop`` is the node it came from (None when local);
    ``copies`` is the number of copies this node holds the right to spread
    (spray-and-wait), 1 otherwise.
    """

    bundle_id: str
    source: str
    destination: str
    size_bytes: int
    priority: int = 1
    deadline_s: float = math.inf
    previous_hop: str | None = None
    copies: int = 1

    def __init__(  # hand-written: the frozen dataclass __init__ costs 3x (once per bundle)
        self, bundle_id: str, source: str, destination: str, size_bytes: int,
        priority: int = 1, deadline_s: float = math.inf, previous_hop: str | None = None,
        copies: int = 1,
    ) -> None:
        self.__dict__.update(bundle_id=bundle_id, source=source, destination=destination,
                             size_bytes=size_bytes, priority=priority, deadline_s=deadline_s,
                             previous_hop=previous_hop, copies=copies)


@dataclass(frozen=True)
class Hop:
    """Send a copy to ``node``, handing it ``copies`` copy rights (spray-and-wait)."""

    node: str
    copies: int = 1


@dataclass(frozen=True, init=False)
class Decision:
    """A router's answer for one bundle.

    ``hops`` empty means: no usable next hop now, keep the bundle and ask again at the
    next event (contact start, new plan). ``keep`` says whether this node keeps its copy
    after sending (epidemic, spray-and-wait keep theirs; CGR forwards and lets go).
    ``projected_arrival_s`` is CGR's expected delivery time at the destination (None for
    routers that don't predict); ``reason`` is a short human explanation for logs.
    """

    hops: tuple[Hop, ...] = ()
    keep: bool = False
    projected_arrival_s: float | None = None
    reason: str = ""
    route: tuple[str, ...] = field(default=(), compare=False)

    def __init__(  # hand-written, as BundleInfo's (one per bundle routed)
        self, hops: tuple[Hop, ...] = (), keep: bool = False,
        projected_arrival_s: float | None = None, reason: str = "",
        route: tuple[str, ...] = (),
    ) -> None:
        self.__dict__.update(hops=hops, keep=keep, projected_arrival_s=projected_arrival_s,
                             reason=reason, route=route)


class Router(ABC):
    """Decides where bundles go from one node.

    Subclasses set ``name`` (what a scenario's ``routing: {algorithm: …}`` selects).
    """

    name: str = "base"

    def __init__(self, node: str, plan: ContactPlan, **params: object) -> None:
        self.node = node
        self.plan = plan
        self.params = params

    @abstractmethod
    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        """Where ``bundle`` goes now; ``neighbours`` are the nodes with a contact up."""

    def route_many(self, bundles: Iterable[BundleInfo], now_s: float,
                   neighbours: frozenset[str]) -> list[Decision]:
        """Decisions for several bundles at one time, in order: the same as calling
        :meth:`route` for each in turn (reservations of earlier ones count for later
        ones). Routers override it when a batch can share work (CGR: one route list
        look-up and the route checks that do not depend on the bundle)."""
        route = self.route
        return [route(b, now_s, neighbours) for b in bundles]

    def largest_piece(self, bundle: BundleInfo, now_s: float,
                      neighbours: frozenset[str]) -> int | None:
        """For a bundle :meth:`route` found no usable route for: the largest fragment of
        it (bytes) that a route could carry now, so that the agent splits the bundle
        (proactive fragmentation, RFC 9171 section 5.8); None: splitting would not help.
        Reserves nothing. Routers that know contact volumes (CGR) override it."""
        return None

    # Events: the default is to ignore them; routers that learn override.
    def contact_started(self, neighbour: str, now_s: float) -> None:
        """A contact to ``neighbour`` came up."""

    def contact_ended(self, neighbour: str, now_s: float) -> None:
        """A contact to ``neighbour`` went down."""

    def sent(self, bundle: BundleInfo, neighbour: str, now_s: float) -> None:
        """``bundle`` was handed to ``neighbour`` (convergence layer acknowledged it)."""

    def failed(self, bundle: BundleInfo, neighbour: str, now_s: float) -> None:
        """Sending ``bundle`` to ``neighbour`` failed or was refused: undo any reservation."""

    def delivered(self, bundle: BundleInfo, now_s: float) -> None:
        """``bundle`` reached its destination (for routers that track acknowledgements)."""

    # Metadata exchanged with a neighbour at contact start (PRoPHET's predictabilities,
    # epidemic summary vectors). Plain JSON-able values; the agent carries them.
    def metadata_for(self, neighbour: str, now_s: float) -> Metadata | None:
        return None

    def metadata_from(self, neighbour: str, metadata: Metadata, now_s: float) -> None:
        """Metadata that ``neighbour`` sent at contact start."""

    def update_plan(self, plan: ContactPlan) -> None:
        """A new contact plan replaces the old one (caches must be dropped)."""
        self.plan = plan
