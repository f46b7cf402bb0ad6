"""Link faults on top of the link timeline — pure logic, like :mod:`.timeline`.

:class:`FaultTimeline` is a :class:`~netemu.emulator.timeline.Timeline` whose changes also
carry the scenario's link faults (:mod:`netemu.plan.faults`): a link period under an
outage (``link_outage``, or ``station_outage`` on one of its ends) is reported down
while the plan has it up, and up again when the fault ends (if the plan still has it
up); a degraded link's directions get their rate multiplied and the extra loss added.
The contact plan itself is not touched: routers keep planning with the contacts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from netemu.emulator.layout import Layout
from netemu.emulator.timeline import DELAY_STEP_S, Changes, DirParams, Timeline
from netemu.plan.contacts import ContactPlan
from netemu.plan.faults import EMULATOR_KINDS, Fault


class FaultTimeline(Timeline):
    """The plan's timeline with ``faults`` applied (faults of other kinds are ignored)."""

    def __init__(self, plan: ContactPlan, layout: Layout, faults: Sequence[Fault], *,
                 delay_step_s: float = DELAY_STEP_S) -> None:
        super().__init__(plan, layout, delay_step_s=delay_step_s)
        self.faults = [f for f in faults if f.kind in EMULATOR_KINDS]
        # the periods each fault acts on
        self._periods: list[list[int]] = [
            [p.index for p in layout.periods if f.touches_link(p.a, p.b)] for f in self.faults]
        self._contacts: dict[int, list[int]] = defaultdict(list)  # period → contacts
        for ci, pi in enumerate(layout.contact_period):
            if pi >= 0:
                self._contacts[pi].append(ci)
        fev: list[tuple[float, int, int]] = []  # (t, 0 end / 1 start, fault index)
        for i, f in enumerate(self.faults):
            fev.append((f.start_s, 1, i))
            fev.append((f.end_s, 0, i))
        fev.sort()
        self._fev = fev
        self._fcursor = 0
        self._blocked: dict[int, int] = defaultdict(int)  # period → outages on it now
        self._degraded: dict[int, list[int]] = defaultdict(list)  # period → degrading faults
        self.effective: set[int] = set()  # periods up as reported (plan up, no outage)

    def is_blocked(self, period: int) -> bool:
        return self._blocked.get(period, 0) > 0

    def _shape(self, period: int, rate_bps: float, loss: float) -> tuple[float, float]:
        """A direction's rate and loss with the degradations of its period applied."""
        for fi in self._degraded.get(period, ()):
            f = self.faults[fi]
            rate_bps *= f.rate_factor
            loss = round(1.0 - (1.0 - loss) * (1.0 - f.extra_loss), 12)
        return rate_bps, loss

    def advance(self, t_s: float) -> Changes:
        ch = super().advance(t_s)
        touched: set[int] = set()  # periods whose fault state changed
        fev = self._fev
        while self._fcursor < len(fev) and fev[self._fcursor][0] <= t_s:
            _t, starts, fi = fev[self._fcursor]
            self._fcursor += 1
            f = self.faults[fi]
            ch.faults.append(("started" if starts else "ended", f))
            for pi in self._periods[fi]:
                touched.add(pi)
                if f.kind == "link_degraded":
                    if starts:
                        self._degraded[pi].append(fi)
                    else:
                        self._degraded[pi].remove(fi)
                else:
                    self._blocked[pi] += 1 if starts else -1
        planned_up, planned_down = ch.up, ch.down
        ch.up, ch.down = [], []
        for pi in sorted({*planned_up, *planned_down, *touched}):
            was = pi in self.effective
            now = pi in self.up_periods and not self.is_blocked(pi)
            if was and not now:
                self.effective.discard(pi)
                ch.down.append(pi)
            elif now and not was:
                self.effective.add(pi)
                ch.up.append(pi)
            else:
                continue
            if pi in touched:
                ch.faulted.add(pi)
        # directions: none on a period that is out; degraded ones shaped; a period that
        # came back or whose degradation changed gets all its active directions again
        lp = self.layout.contact_period
        params: dict[int, DirParams] = {}
        for dp in ch.params:
            if lp[dp.contact] in self.effective:
                params[dp.contact] = dp
        for pi in touched:
            if pi not in self.effective:
                continue
            for ci in self._contacts.get(pi, ()):
                if ci in self.active and ci not in params:
                    d = self.delay_of(ci)
                    if d == d:  # not NaN: reported before
                        params[ci] = DirParams(int(self._src[ci]), int(self._dst[ci]), d,
                                               float(self._rate[ci]), float(self._loss[ci]), ci)
        out = []
        for ci, dp in sorted(params.items()):
            rate, loss = self._shape(lp[ci], dp.rate_bps, dp.loss)
            out.append(DirParams(dp.src, dp.dst, dp.delay_s, rate, loss, ci))
        ch.params = out
        return ch

    def current_params(self) -> list[DirParams]:
        """As :meth:`Timeline.current_params`, without the periods that are out and with
        the degradations applied."""
        lp = self.layout.contact_period
        out = []
        for dp in super().current_params():
            if lp[dp.contact] in self.effective:
                rate, loss = self._shape(lp[dp.contact], dp.rate_bps, dp.loss)
                out.append(DirParams(dp.src, dp.dst, dp.delay_s, rate, loss, dp.contact))
        return out

    def next_event_s(self) -> float | None:
        nxt = super().next_event_s()
        if self._fcursor < len(self._fev):
            t = self._fev[self._fcursor][0]
            nxt = t if nxt is None else min(nxt, t)
        return nxt


__all__ = ["FaultTimeline"]
