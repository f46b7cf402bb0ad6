"""Where a bundle held at a node stands, and the record a store keeps of it.

The core (:mod:`netemu.dtn.bpa`) decides the state; a store (the agent's
:class:`~netemu.agent.store.BundleStore`, or a test's) keeps it and hands the records
back at start-up (:meth:`netemu.dtn.bpa.BundleAgent.restore`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class BundleState(IntEnum):
    """Where a stored bundle stands."""

    PENDING = 1     # waiting to be forwarded
    LOCAL = 2       # for a local endpoint, waiting for the application to take it
    FORWARDED = 3   # handed on (tombstone unless kept for more copies)
    DELIVERED = 4   # taken by the application (tombstone)
    DELETED = 5     # deleted with a reason (tombstone)
    FRAGMENT = 6    # a fragment for a local endpoint, waiting for the rest of its bundle


#: The states in which a node still holds the bundle's bytes (the others are tombstones).
HELD_STATES = (BundleState.PENDING, BundleState.LOCAL, BundleState.FRAGMENT)


@dataclass(frozen=True)
class StoredBundle:
    """One record of a store, as the core restores it."""

    id: str
    state: BundleState
    destination: str
    data: bytes | None
    size: int
    expiry_ms: int
    received_ms: int
    age_at_receipt_ms: int
    previous_hop: str | None
    reason: int | None = None
