"""Link events the driver publishes to subscribers (telemetry, logs, tests)."""

from __future__ import annotations

from dataclasses import dataclass

from netemu.plan.faults import Fault


@dataclass(frozen=True)
class LinkEvent:
    """Something changed on a link at scenario time ``t_s`` (for up/down: the scheduled
    time of the change; the driver applies it at the next tick).

    ``kind``: ``"up"`` / ``"down"`` — carrier of the link between ``a`` and ``b`` (on
    interfaces ``if_a``/``if_b``); ``"params"`` — the direction ``a`` → ``b`` now has
    ``delay_s``, ``rate_bps``, ``loss``; ``"stopped"`` — the direction ``a`` → ``b`` no
    longer carries frames (its contact ended while the reverse one goes on).
    ``link`` is ``"isl"`` or ``"gsl"``.
    """

    kind: str
    t_s: float
    a: str
    b: str
    if_a: str
    if_b: str
    link: str
    delay_s: float | None = None
    rate_bps: float | None = None
    loss: float | None = None


@dataclass(frozen=True)
class Neighbour:
    """A node reachable over a link that is up now."""

    node: str
    node_addr: str  # its node address (loopback /32)
    link_addr: str  # the address of its interface on this link
    ifname: str  # our interface toward it
    peer_ifname: str
    link: str  # "isl" or "gsl"


@dataclass(frozen=True)
class FaultEvent:
    """A link fault (:mod:`netemu.plan.faults`) ``"started"`` or ``"ended"`` at scenario
    time ``t_s`` (its scheduled time; the driver applies it at that moment)."""

    kind: str
    t_s: float
    fault: Fault


@dataclass(frozen=True)
class RouteEvent:
    """The IP routes at scenario time ``t_s``: ``"installed"`` (``changed`` entries sent to
    the kernel) or ``"error"`` (a routing plug-in failed: ``message`` says how; the routes
    in place stay)."""

    kind: str
    t_s: float
    changed: int = 0
    message: str = ""
