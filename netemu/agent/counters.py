"""Per-node counters, sampled on one timer and published as ``counters/<node>``.

A bundle event per bundle is millions of messages at constellation scale; a sample of
each node's counters every ``counters_s`` scenario seconds is a few hundred a second
whatever the load. One :class:`CountersTimer` serves a single agent or every node of a
node host: it wakes on the scenario-time grid (multiples of ``counters_s``, so the
nodes' samples line up), reads each node's counters (a few dictionary reads) and queues
the sample on the node's publisher, skipping a node whose sample has not changed since
the last one it published. A periodic sample carries ``grid_s``, the grid instant it
belongs to (``t_s`` is when it was taken), so samples of nodes served by different
processes line up. :meth:`CountersTimer.publish` with ``final=True`` (at stop)
publishes every node's last sample, so the record ends with exact totals.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable
from typing import Any

from netemu.runtime.clock import ScenarioClock

CUMULATIVE = ("received", "forwarded", "delivered", "deleted", "expired", "sent", "refused")
"""Counters that only grow while the agent runs (they restart from 0 with the process)."""
GAUGES = ("stored_bundles", "stored_bytes", "queued", "sessions_up")
"""Values now: bundles and bytes held in the store, bundles queued for neighbours,
neighbours with an established session."""


def sample(agent: Any) -> dict[str, int]:
    """``agent``'s counters now (see :data:`CUMULATIVE` and :data:`GAUGES`).

    ``sent`` counts bundles this node originated; ``deleted`` excludes the ``expired``
    ones (as the ``bundle/<node>`` events tell them apart)."""
    core = agent.core
    c = core.bpa.counters
    expired = int(getattr(core, "expired", 0))
    queued = sessions = 0
    for st in agent.neighbours.values():
        queued += len(st.queue)
        for ch in st.sessions:
            if ch.established:
                sessions += 1
                break
    return {"received": c["received"], "forwarded": c["forwarded"],
            "delivered": c["delivered"], "deleted": max(0, c["deleted"] - expired),
            "expired": expired, "sent": c["originated"], "refused": c["refused"],
            "stored_bundles": int(core.store.held_bundles),
            "stored_bytes": int(core.store.held_bytes),
            "queued": queued, "sessions_up": sessions}


class CountersTimer:
    """Publishes the counters of ``agents()`` (each with ``cfg.node``, ``telemetry``,
    ``core`` and ``neighbours``) every ``interval_s`` scenario seconds."""

    def __init__(self, agents: Callable[[], Iterable[Any]], interval_s: float,
                 clock: ScenarioClock) -> None:
        if not interval_s > 0:
            raise ValueError(f"counters interval must be > 0 s, not {interval_s!r}")
        self.agents = agents
        self.interval_s = float(interval_s)
        self.clock = clock
        self._last: dict[str, dict[str, int]] = {}
        self.samples = 0  # published (for tests and status)
        self.grid_s: float | None = None  # the grid instant the timer last woke for

    def next_delay_s(self) -> float:
        """Wall seconds until the next multiple of ``interval_s`` in scenario time."""
        now = self.clock.now_s()
        self.grid_s = (math.floor(now / self.interval_s) + 1) * self.interval_s
        return self.clock.timer_s(self.grid_s)

    async def run(self) -> None:
        """Sample on the grid until cancelled."""
        while True:
            await asyncio.sleep(self.next_delay_s())
            # a sleep under way when the run paused or changed its time scale ends early
            # or late: wait for the grid instant itself, so the sample is taken when its
            # grid_s says (timer_s reads a clock that may change again every RECHECK_S)
            while self.grid_s is not None and (left := self.clock.timer_s(self.grid_s)) > 1e-3:
                await asyncio.sleep(left)
            self.publish()

    def publish(self, *, final: bool = False) -> int:
        """Queue one sample per node whose counters changed (every node when ``final``);
        returns how many were queued. A node whose counters cannot be read (stopping) is
        skipped."""
        t_s = round(self.clock.now_s(), 3)
        n = 0
        for agent in self.agents():
            pub = agent.telemetry
            if pub is None:
                continue
            try:
                s = sample(agent)
            except Exception:  # noqa: BLE001 - a node half torn down: no sample this time
                continue
            node = agent.cfg.node
            if not final and self._last.get(node) == s:
                continue
            self._last[node] = s
            payload: dict[str, Any] = {"t_s": t_s, **s}
            if final:
                payload["final"] = True
            elif self.grid_s is not None:  # the instant the samples of all nodes share
                payload["grid_s"] = round(self.grid_s, 3)
            pub.emit_counters(payload)
            n += 1
        self.samples += n
        return n
