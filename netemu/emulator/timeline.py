"""The link timeline: what the links must look like at scenario time ``t`` — pure logic.

``Timeline.advance(t_s)`` returns the changes since the previous call: link periods that
came up or went down (carrier), directions whose parameters changed (delay by at least
``delay_step_s``, rate, loss) and directions that stopped carrying. No sockets, no clock:
the real-time driver feeds it the scenario clock, tests feed it chosen times.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from netemu.contacts import ContactPlan
from netemu.emulator.layout import Layout

DELAY_STEP_S = 100e-6


@dataclass(frozen=True)
class DirParams:
    """How frames from endpoint ``src`` to endpoint ``dst`` are treated now."""

    src: int
    dst: int
    delay_s: float
    rate_bps: float
    loss: float
    contact: int  # index into plan.contacts


@dataclass
class Changes:
    t_s: float
    up: list[int] = field(default_factory=list)  # period indices whose carrier came up
    down: list[int] = field(default_factory=list)  # … went down
    params: list[DirParams] = field(default_factory=list)  # directions (re)configured
    stopped: list[int] = field(default_factory=list)  # source endpoints no longer carrying

    @property
    def topology_changed(self) -> bool:
        return bool(self.up or self.down)

    def __len__(self) -> int:
        return len(self.up) + len(self.down) + len(self.params) + len(self.stopped)


class _Track:
    """Interpolates one contact's light time with a moving cursor (time goes forward)."""

    __slots__ = ("times", "vals", "i", "const")

    def __init__(self, samples: tuple[tuple[float, float], ...], owlt_s: float) -> None:
        self.times = [s[0] for s in samples]
        self.vals = [s[1] for s in samples]
        self.const = owlt_s if len(samples) == 0 else None
        self.i = 0

    def at(self, t: float) -> float:
        if self.const is not None:
            return self.const
        times, vals = self.times, self.vals
        n = len(times)
        i = self.i
        if i + 1 < n and t >= times[i + 1]:
            if i + 2 < n and t >= times[i + 2]:
                i = max(0, bisect.bisect_right(times, t) - 1)
            else:
                i += 1
        elif t < times[i]:
            i = max(0, bisect.bisect_right(times, t) - 1)
        self.i = i
        if t <= times[0]:
            return vals[0]
        if i + 1 >= n:
            return vals[-1]
        t0, t1 = times[i], times[i + 1]
        if t1 <= t0:
            return vals[i + 1]
        return vals[i] + (vals[i + 1] - vals[i]) * (t - t0) / (t1 - t0)


class Timeline:
    def __init__(self, plan: ContactPlan, layout: Layout, *,
                 delay_step_s: float = DELAY_STEP_S) -> None:
        self.plan = plan
        self.layout = layout
        self.delay_step_s = delay_step_s
        ev: list[tuple[float, int, int]] = []
        # order at equal times: period ends, contact ends, period starts, contact starts
        for p in layout.periods:
            ev.append((p.end_s, 0, p.index))
            ev.append((p.start_s, 2, p.index))
        for i, c in enumerate(plan.contacts):
            if layout.contact_period[i] < 0:
                continue
            ev.append((c.end_s, 1, i))
            ev.append((c.start_s, 3, i))
        ev.sort()
        self.events = ev
        self.cursor = 0
        self.t_s = float("-inf")
        self.up_periods: set[int] = set()
        self.active: dict[int, tuple[int, int, _Track]] = {}  # contact -> (src ep, dst ep, track)
        self.applied: dict[int, tuple[float, float, float]] = {}  # contact -> delay, rate, loss

    def advance(self, t_s: float) -> Changes:
        """Move to scenario time ``t_s`` (not earlier than the last call)."""
        ch = Changes(t_s)
        ev = self.events
        plan, layout = self.plan, self.layout
        new_contacts: list[int] = []
        while self.cursor < len(ev) and ev[self.cursor][0] <= t_s:
            _t, kind, idx = ev[self.cursor]
            self.cursor += 1
            if kind == 0:
                if idx in self.up_periods:
                    self.up_periods.discard(idx)
                    ch.down.append(idx)
            elif kind == 2:
                if layout.periods[idx].end_s > t_s:
                    self.up_periods.add(idx)
                    ch.up.append(idx)
            elif kind == 1:
                if self.active.pop(idx, None) is not None:
                    self.applied.pop(idx, None)
                    ch.stopped.append(layout.endpoint_of(idx, plan.contacts[idx].src))
            else:
                c = plan.contacts[idx]
                if c.end_s > t_s:
                    src = layout.endpoint_of(idx, c.src)
                    dst = layout.endpoint_of(idx, c.dst)
                    self.active[idx] = (src, dst, _Track(c.owlt_samples, c.owlt_s))
                    new_contacts.append(idx)
        # A direction that stopped and restarted in the same step is not stopped.
        if ch.stopped:
            live = {s for s, _d, _t in self.active.values()}
            ch.stopped = [e for e in ch.stopped if e not in live]
        contacts = plan.contacts
        step = self.delay_step_s
        for idx, (src, dst, track) in self.active.items():
            c = contacts[idx]
            d = track.at(t_s)
            old = self.applied.get(idx)
            if old is None or abs(d - old[0]) >= step or old[1] != c.rate_bps or old[2] != c.loss:
                self.applied[idx] = (d, c.rate_bps, c.loss)
                ch.params.append(DirParams(src, dst, d, c.rate_bps, c.loss, idx))
        self.t_s = t_s
        return ch

    def next_event_s(self) -> float | None:
        return self.events[self.cursor][0] if self.cursor < len(self.events) else None

    def end_s(self) -> float:
        return max((p.end_s for p in self.layout.periods), default=0.0)
