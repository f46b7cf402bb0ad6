"""The link timeline: what the links must look like at scenario time ``t`` — pure logic.

``Timeline.advance(t_s)`` returns the changes since the previous call: link periods that
came up or went down (carrier), directions whose parameters changed (delay by at least
``delay_step_s``; rate and loss at each step of a contact's rate samples) and directions
that stopped carrying. A rate sample of 0 (no MODCOD closes) is applied as loss 1. No sockets, no clock:
the real-time driver feeds it the scenario clock, tests feed it chosen times.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from netemu.emulator.layout import Layout
from netemu.plan.contacts import ContactPlan
from netemu.plan.faults import Fault

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
    faulted: set[int] = field(default_factory=set)  # periods in up/down because of a fault
    faults: list[tuple[str, Fault]] = field(default_factory=list)  # ("started" | "ended", f)

    @property
    def topology_changed(self) -> bool:
        return bool(self.up or self.down)

    def __len__(self) -> int:
        return (len(self.up) + len(self.down) + len(self.params) + len(self.stopped)
                + len(self.faults))


class Timeline:
    """Light times of every contact are kept as one flat array of samples; the active
    contacts' delays are interpolated together with numpy each tick (a Starlink shell has
    thousands of links up at once), and only those that moved by ``delay_step_s`` are
    reported."""

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
        n = len(plan.contacts)
        lo = np.zeros(n, dtype=np.int64)
        hi = np.zeros(n, dtype=np.int64)
        times: list[float] = []
        vals: list[float] = []
        for i, c in enumerate(plan.contacts):
            lo[i] = len(times)
            samples = c.owlt_samples or ((c.start_s, c.owlt_s),)
            for t, v in samples:
                times.append(t)
                vals.append(v)
            hi[i] = len(times)
            if layout.contact_period[i] < 0:
                continue
            ev.append((c.end_s, 1, i))
            ev.append((c.start_s, 3, i))
        ev.sort()
        self.events = ev
        self.cursor = 0
        self.t_s = float("-inf")
        self._T = np.array(times + [np.inf])
        self._V = np.array(vals + [0.0])
        self._last = hi - 1  # index of each contact's last sample
        self._cur = lo.copy()  # each contact's current sample index
        self._applied = np.full(n, np.nan)  # delay last reported per contact
        # rate steps, flat like the light times: contact i's at [rlo[i], rlast[i]]
        rlo = np.zeros(n, dtype=np.int64)
        rlast = np.zeros(n, dtype=np.int64)
        rtimes: list[float] = []
        rvals: list[float] = []
        for i, c in enumerate(plan.contacts):
            rlo[i] = len(rtimes)
            for t, r in c.rate_samples or ((c.start_s, c.rate_bps),):
                rtimes.append(t)
                rvals.append(r)
            rlast[i] = len(rtimes) - 1
        self._RT = np.array(rtimes + [np.inf])
        self._RV = np.array(rvals + [0.0])
        self._rlast = rlast
        self._rcur = rlo
        self._base_rate = np.array([c.rate_bps for c in plan.contacts])
        self._base_loss = np.array([c.loss for c in plan.contacts])
        self._rate = self._base_rate.copy()  # rate and loss last reported per contact
        self._loss = self._base_loss.copy()
        self._src = np.array([layout.endpoint_of(i, c.src) if layout.contact_period[i] >= 0
                              else -1 for i, c in enumerate(plan.contacts)], dtype=np.int64)
        self._dst = np.array([layout.endpoint_of(i, c.dst) if layout.contact_period[i] >= 0
                              else -1 for i, c in enumerate(plan.contacts)], dtype=np.int64)
        self.up_periods: set[int] = set()
        self.active: set[int] = set()
        self._ids = np.zeros(0, dtype=np.int64)

    @property
    def applied(self) -> dict[int, tuple[float, float, float]]:
        """contact → (delay_s, rate_bps, loss) as last reported, for active contacts."""
        return {int(i): (float(self._applied[i]), float(self._rate[i]), float(self._loss[i]))
                for i in self._ids}

    def delay_of(self, contact: int) -> float:
        return float(self._applied[contact])

    def advance(self, t_s: float) -> Changes:
        """Move to scenario time ``t_s`` (not earlier than the last call)."""
        ch = Changes(t_s)
        ev = self.events
        layout = self.layout
        dirty = False
        stopped: list[int] = []
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
                if idx in self.active:
                    self.active.discard(idx)
                    self._applied[idx] = np.nan
                    stopped.append(int(self._src[idx]))
                    dirty = True
            elif self.plan.contacts[idx].end_s > t_s:
                self.active.add(idx)
                self._applied[idx] = np.nan
                dirty = True
        if dirty:
            self._ids = np.array(sorted(self.active), dtype=np.int64)
        # A direction that stopped and restarted in the same step is not stopped.
        if stopped:
            live = set(self._src[self._ids].tolist())
            ch.stopped = [e for e in stopped if e not in live]
        ids = self._ids
        if len(ids):
            T, V = self._T, self._V
            cur = self._cur[ids]
            last = self._last[ids]
            while True:
                m = (cur < last) & (T[cur + 1] <= t_s)
                if not m.any():
                    break
                cur[m] += 1
            self._cur[ids] = cur
            t0, v0 = T[cur], V[cur]
            has = cur < last
            t1 = np.where(has, T[cur + 1], t0 + 1.0)
            v1 = np.where(has, V[cur + 1], v0)
            span = np.where(t1 > t0, t1 - t0, 1.0)
            frac = np.clip((t_s - t0) / span, 0.0, 1.0)
            d = v0 + (v1 - v0) * frac
            old = self._applied[ids]
            changed = np.isnan(old) | (np.abs(d - old) >= self.delay_step_s)
            RT = self._RT
            rcur = self._rcur[ids]
            rlast = self._rlast[ids]
            while True:
                m = (rcur < rlast) & (RT[rcur + 1] <= t_s)
                if not m.any():
                    break
                rcur[m] += 1
            self._rcur[ids] = rcur
            r = self._RV[rcur]
            dead = r <= 0.0
            rate = np.where(dead, self._base_rate[ids], r)
            loss = np.where(dead, 1.0, self._base_loss[ids])
            changed |= (rate != self._rate[ids]) | (loss != self._loss[ids])
            self._rate[ids] = rate
            self._loss[ids] = loss
            if changed.any():
                sel = ids[changed]
                dsel = d[changed]
                self._applied[sel] = dsel
                src, dst = self._src[sel], self._dst[sel]
                rate, loss = self._rate[sel], self._loss[sel]
                ch.params = [DirParams(int(a), int(b), float(x), float(r), float(lo), int(c))
                             for a, b, x, r, lo, c in zip(src.tolist(), dst.tolist(),
                                                           dsel.tolist(), rate.tolist(),
                                                           loss.tolist(), sel.tolist(), strict=True)]
        self.t_s = t_s
        return ch

    def current_params(self) -> list[DirParams]:
        """Every direction carrying now, as last reported (scenario values): what a
        change of time scale shapes anew."""
        out = []
        for ci in self._ids.tolist():
            d = float(self._applied[ci])
            if d == d:  # not NaN: reported
                out.append(DirParams(int(self._src[ci]), int(self._dst[ci]), d,
                                     float(self._rate[ci]), float(self._loss[ci]), ci))
        return out

    def next_event_s(self) -> float | None:
        return self.events[self.cursor][0] if self.cursor < len(self.events) else None

    def end_s(self) -> float:
        return max((p.end_s for p in self.layout.periods), default=0.0)
