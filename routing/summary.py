"""Summary vectors: which bundles this node holds and which each neighbour holds.

Epidemic routing (Vahdat & Becker, 2000) starts every encounter with an exchange of
summary vectors, so that only bundles the other side lacks are sent. Spray-and-wait and
PRoPHET use the same bookkeeping so that they never hand a node a bundle it already has.
The agent carries the vectors as router metadata (``metadata_for`` / ``metadata_from``).
"""

from __future__ import annotations

import math

from netemu.routing.base import BundleInfo, Metadata


class SummaryVectors:
    """Bundle ids held here (with their deadlines) and ids known held by neighbours."""

    def __init__(self) -> None:
        self.held: dict[str, float] = {}  # bundle id -> deadline (s)
        self.known: dict[str, set[str]] = {}  # neighbour -> bundle ids it has

    def hold(self, bundle: BundleInfo) -> None:
        self.held[bundle.bundle_id] = bundle.deadline_s

    def drop(self, bundle_id: str) -> None:
        self.held.pop(bundle_id, None)

    def expire(self, now_s: float) -> None:
        for bid in [b for b, d in self.held.items() if d < now_s]:
            del self.held[bid]

    def has(self, neighbour: str, bundle_id: str) -> bool:
        """True when ``neighbour`` is known to hold ``bundle_id``."""
        return bundle_id in self.known.get(neighbour, ())

    def mark(self, neighbour: str, bundle_id: str) -> None:
        self.known.setdefault(neighbour, set()).add(bundle_id)

    def vector(self, now_s: float) -> Metadata:
        """This node's summary vector (JSON-able)."""
        self.expire(now_s)
        return {"summary": sorted(self.held)}

    def learn(self, neighbour: str, metadata: Metadata) -> None:
        """Replace what we know of ``neighbour`` with the vector it sent."""
        ids = metadata.get("summary")
        if isinstance(ids, list):
            self.known[neighbour] = {str(i) for i in ids}


def expired(bundle: BundleInfo, now_s: float) -> bool:
    return math.isfinite(bundle.deadline_s) and now_s > bundle.deadline_s
