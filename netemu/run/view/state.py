"""What the live view knows about a run, built from the run's telemetry messages.

One entry point, :meth:`ViewState.apply` (a topic after ``netemu/<run>/`` and its JSON
payload), serves both a live run (messages from the broker) and a replay (lines of
``events.jsonl``), so the page shows the same thing either way. The state is small: the
links' last state, each node's last counters and app events, and the headline figures.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from typing import Any

LOAD_WINDOW_S = 10.0
"""Scenario seconds over which a link's load (bytes forwarded over it) is averaged."""
MAX_HOPS = 500
"""Bundle hops kept between two updates of the page (the rest are not drawn)."""


def link_id(a: str, b: str) -> str:
    """One id per undirected link, whichever end publishes."""
    return f"{a}|{b}" if a <= b else f"{b}|{a}"


@dataclass
class LinkState:
    """A link's last known state: ``up``, ``half`` (one direction stopped) or ``down``."""

    a: str
    b: str
    kind: str = ""
    state: str = "down"
    rate_bps: float | None = None
    delay_s: float | None = None
    t_s: float | None = None
    sent: deque[tuple[float, int]] = field(default_factory=deque)  # (t_s, bytes) forwarded

    def load(self, now_s: float) -> float | None:
        """Fraction of the link's rate used over the last :data:`LOAD_WINDOW_S` (None:
        nothing known)."""
        while self.sent and self.sent[0][0] < now_s - LOAD_WINDOW_S:
            self.sent.popleft()
        if not self.rate_bps or not self.sent:
            return None
        return min(1.0, 8 * sum(b for _, b in self.sent) / (self.rate_bps * LOAD_WINDOW_S))

    def as_dict(self, now_s: float) -> dict[str, Any]:
        load = self.load(now_s)
        return {"state": self.state, "kind": self.kind, "rate_bps": self.rate_bps,
                "delay_s": self.delay_s, "load": None if load is None else round(load, 3)}


class ViewState:
    """Links, per-node counters and app events, headline figures; fed by :meth:`apply`.

    ``changed_links`` collects the ids changed since the last :meth:`take_changes`, so the
    server sends deltas only.
    """

    def __init__(self) -> None:
        self.links: dict[str, LinkState] = {}
        self.counters: dict[str, dict[str, Any]] = {}
        self.apps: dict[str, dict[str, dict[str, Any]]] = {}  # node -> app -> last event
        self.eo_stats: dict[str, dict[str, Any]] = {}  # node -> last eo-filter stats
        self.latencies_s: list[float] = []  # sorted query -> answer latencies
        self.run_event: str | None = None
        self.t_s: float | None = None  # the latest t_s seen
        self.changed_links: set[str] = set()
        self.changed_nodes: set[str] = set()
        self.hops: list[tuple[str, str]] = []  # bundles forwarded since the last take
        self.messages = 0

    # ------------------------------------------------------------------ input

    def apply(self, suffix: str, payload: Any) -> None:
        """One telemetry message: ``suffix`` is its topic after ``netemu/<run>/``."""
        if not isinstance(payload, dict):
            return
        self.messages += 1
        t = payload.get("t_s")
        if isinstance(t, (int, float)):
            self.t_s = float(t) if self.t_s is None else max(self.t_s, float(t))
        parts = suffix.split("/")
        kind = parts[0]
        if kind == "link" and len(parts) == 3:
            self._link(parts[1], parts[2], payload)
        elif kind == "counters" and len(parts) == 2:
            self.counters[parts[1]] = payload
            self.changed_nodes.add(parts[1])
        elif kind == "bundle" and len(parts) == 2:
            self._bundle(parts[1], payload)
        elif kind == "app" and len(parts) == 3:
            self._app(parts[1], parts[2], payload)
        elif kind == "run":
            self.run_event = str(payload.get("event"))

    def _link(self, a: str, b: str, p: dict[str, Any]) -> None:
        lid = link_id(a, b)
        ls = self.links.get(lid)
        if ls is None:
            lo, hi = sorted((a, b))
            ls = self.links[lid] = LinkState(lo, hi)
        ev = p.get("event")
        if ev == "up" or ev == "update":
            ls.state = "up"
        elif ev == "down":
            ls.state = "half" if p.get("direction") and ls.state == "up" else "down"
        ls.kind = str(p.get("link") or ls.kind)
        for k in ("rate_bps", "delay_s"):
            if isinstance(p.get(k), (int, float)):
                setattr(ls, k, float(p[k]))
        ls.t_s = p.get("t_s") if isinstance(p.get("t_s"), (int, float)) else ls.t_s
        self.changed_links.add(lid)

    def _bundle(self, node: str, p: dict[str, Any]) -> None:
        hop = p.get("next_hop")
        if p.get("event") != "forwarded" or not isinstance(hop, str):
            return
        if len(self.hops) < MAX_HOPS:
            self.hops.append((node, hop))
        ls = self.links.get(link_id(node, hop))
        t, size = p.get("t_s"), p.get("size_bytes")
        if ls is not None and isinstance(t, (int, float)) and isinstance(size, int):
            ls.sent.append((float(t), size))
            self.changed_links.add(link_id(node, hop))

    def _app(self, app: str, node: str, p: dict[str, Any]) -> None:
        self.apps.setdefault(node, {})[app] = p
        self.changed_nodes.add(node)
        if app == "eo-filter" and p.get("event") == "stats":
            self.eo_stats[node] = p
        elif app == "orbit-query" and p.get("event") == "answer":
            lat = p.get("latency_s")
            if isinstance(lat, (int, float)):
                bisect.insort(self.latencies_s, float(lat))

    # ------------------------------------------------------------------ output

    def headline(self) -> dict[str, Any]:
        """The figures the page's header shows; None where the run has none yet."""
        sent = sum(int(c.get("sent", 0)) for c in self.counters.values())
        delivered = sum(int(c.get("delivered", 0)) for c in self.counters.values())
        cap = sum(int(s.get("bytes_captured", 0)) for s in self.eo_stats.values())
        down = sum(int(s.get("bytes_sent", 0)) for s in self.eo_stats.values())
        lat = self.latencies_s
        return {
            "delivery_ratio": round(delivered / sent, 4) if sent else None,
            "bundles_sent": sent,
            "bundles_delivered": delivered,
            "stored_bundles": sum(int(c.get("stored_bundles", 0))
                                  for c in self.counters.values()),
            "query_latency_p50_s": round(lat[len(lat) // 2], 3) if lat else None,
            "queries_answered": len(lat),
            "downlink_saved_fraction": round(1 - down / cap, 4) if cap else None,
            "links_up": sum(1 for ls in self.links.values() if ls.state != "down"),
        }

    def links_dict(self, ids: set[str] | None = None, now_s: float = 0.0) -> dict[str, Any]:
        keys = self.links.keys() if ids is None else ids
        return {k: self.links[k].as_dict(now_s) for k in keys if k in self.links}

    def take_changes(self, now_s: float) -> tuple[dict[str, Any], list[str], list[tuple[str, str]]]:
        """The links changed since the last call (as dicts), the nodes whose counters
        or apps changed, and the hops bundles were forwarded over (``(from, to)``)."""
        links = self.links_dict(self.changed_links, now_s)
        nodes = sorted(self.changed_nodes)
        hops = self.hops
        self.changed_links = set()
        self.changed_nodes = set()
        self.hops = []
        return links, nodes, hops

    def node(self, name: str) -> dict[str, Any]:
        """A node's panel: its last counters, its apps' last events, its links now up."""
        up = sorted(ls.b if ls.a == name else ls.a for ls in self.links.values()
                    if name in (ls.a, ls.b) and ls.state != "down")
        return {"counters": self.counters.get(name), "apps": self.apps.get(name, {}),
                "links_up": up}
