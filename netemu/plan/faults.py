"""A scenario's ``faults:`` section: what goes wrong that the contact plan did not foresee.

The emulator applies these faults; the contact plan that the routers get does not know
them, so a router meets them as it would in orbit. Each item has a ``kind``::

    faults:
      - {kind: link_outage, link: [sat1, sat2], start_s: 120, duration_s: 60}
      - {kind: link_outage, random: isl, rate_per_h: 6, duration_s: 30, seed: 7}
      - {kind: link_degraded, link: [sat1, kashi], start_s: 200, duration_s: 100,
         extra_loss: 0.2, rate_factor: 0.25}
      - {kind: station_outage, station: kashi, start_s: 300, duration_s: 120}
      - {kind: node_crash, node: sat2, start_s: 400, duration_s: 60}

- ``link_outage``: the link between two nodes carries nothing (carrier off, both
  directions) for the interval. With ``random: isl | gsl | any`` instead of ``link``,
  outages start as a Poisson process of ``rate_per_h`` (per scenario hour) over
  [``start_s``, ``end_s``) (default: the emulated window), each on a link of that kind
  picked among those up at that moment, seeded by ``seed`` (default 1): the same file
  gives the same outages.
- ``link_degraded``: the link stays up with ``extra_loss`` (a frame loss probability
  added on top of the link's own) and/or its rate multiplied by ``rate_factor``.
- ``station_outage``: every link of a ground station is out.
- ``node_crash``: the node's bundle agent is killed with SIGKILL at ``start_s`` and
  started again from its store ``duration_s`` later.

Times are scenario seconds from the epoch. :func:`parse_faults` checks the section
(errors name file, line and field); :func:`schedule_faults` turns it into concrete
:class:`Fault` intervals for one contact plan and window (pure: no I/O).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from netemu.config import Fields, suggest
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan

KINDS = ("link_outage", "link_degraded", "station_outage", "node_crash")
LINK_KINDS = ("link_outage", "link_degraded")
"""Faults on one link (``link: [a, b]``)."""
EMULATOR_KINDS = ("link_outage", "link_degraded", "station_outage")
"""Faults the emulator applies to links; ``node_crash`` is the runner's (it owns agents)."""
RANDOM_LINKS = ("isl", "gsl", "any")
ITEM_KEYS = ("kind", "name", "link", "random", "station", "node", "start_s", "end_s",
             "duration_s", "rate_per_h", "seed", "extra_loss", "rate_factor")
DEFAULT_SEED = 1
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class FaultSpec:
    """One checked item of the section (times still relative to nothing: scenario s)."""

    kind: str
    name: str
    nodes: tuple[str, ...] = ()  # (a, b) for a link, (station,) or (node,)
    start_s: float | None = None
    duration_s: float = 0.0
    end_s: float | None = None  # random outages: end of the period they start in
    random: str | None = None  # random outages: isl, gsl or any
    rate_per_h: float = 0.0
    seed: int = DEFAULT_SEED
    extra_loss: float = 0.0
    rate_factor: float = 1.0
    line: int | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Fault:
    """One fault as it happens: ``kind`` on ``nodes`` over [start_s, end_s)."""

    id: str  # the item's name, with .k for the k-th outage of a random item
    kind: str
    nodes: tuple[str, ...]
    start_s: float
    end_s: float
    extra_loss: float = 0.0
    rate_factor: float = 1.0

    def touches_link(self, a: str, b: str) -> bool:
        """Whether this fault acts on the link between ``a`` and ``b``."""
        if self.kind == "station_outage":
            return self.nodes[0] in (a, b)
        if self.kind in LINK_KINDS:
            return set(self.nodes) == {a, b}
        return False

    def to_obj(self) -> dict[str, object]:
        """As recorded in events.jsonl (``fault/<id>``) and shown in the report."""
        out: dict[str, object] = {"id": self.id, "kind": self.kind, "nodes": list(self.nodes),
                                  "start_s": self.start_s, "end_s": self.end_s}
        if self.kind == "link_degraded":
            out.update(extra_loss=self.extra_loss, rate_factor=self.rate_factor)
        return out


def parse_faults(section: Fields, nodes: Sequence[str], stations: Sequence[str]
                 ) -> list[FaultSpec]:
    """Check the ``faults:`` section (a list) against the scenario's node names."""
    if section.is_none():
        return []
    known, ground = set(nodes), set(stations)
    out: list[FaultSpec] = []
    names: set[str] = set()
    for i, item in enumerate(section.items()):
        item.check_keys(ITEM_KEYS, required=("kind",))
        kind = item.enum("kind", KINDS, required=True)
        assert kind is not None
        name = item.string("name", default=f"{kind}-{i}")
        assert name is not None
        if name in names:
            raise item.error(f"fault name {name!r} is used twice", "name")
        if not NAME_RE.match(name):
            raise item.error(f"fault name {name!r}: letters, digits, '_' and '-' only "
                             "(it names the fault's telemetry topic)", "name")
        names.add(name)
        spec = _item(item, kind, name, known, ground)
        out.append(spec)
    return out


def _node(item: Fields, key: str, known: set[str], what: str) -> str:
    v = item.string(key, required=True)
    assert v is not None
    if v not in known:
        raise item.error(f"no {what} named {v!r}{_close(v, known)}", key)
    return v


def _close(name: str, known: set[str]) -> str:
    return suggest(name, sorted(known))


def _only(item: Fields, kind: str, allowed: Sequence[str]) -> None:
    for k in ITEM_KEYS:
        if k in item and k not in ("kind", "name", *allowed):
            raise item.error(f"{k} does not apply to {kind}", k)


def _interval(item: Fields) -> tuple[float, float]:
    start = item.number("start_s", required=True, lo=0.0)
    dur = item.number("duration_s", required=True, lo=0.0, lo_open=True)
    assert start is not None and dur is not None
    return start, dur


def _item(item: Fields, kind: str, name: str, known: set[str], ground: set[str]) -> FaultSpec:
    line = item.line
    if kind == "station_outage":
        _only(item, kind, ("station", "start_s", "duration_s"))
        station = _node(item, "station", ground, "ground station")
        start, dur = _interval(item)
        return FaultSpec(kind, name, (station,), start, dur, line=line)
    if kind == "node_crash":
        _only(item, kind, ("node", "start_s", "duration_s"))
        node = _node(item, "node", known, "node")
        start, dur = _interval(item)
        return FaultSpec(kind, name, (node,), start, dur, line=line)
    extra_loss, factor = 0.0, 1.0
    if kind == "link_degraded":
        _only(item, kind, ("link", "start_s", "duration_s", "extra_loss", "rate_factor"))
        extra_loss = item.number("extra_loss", default=0.0, lo=0.0, hi=1.0) or 0.0
        got = item.number("rate_factor", default=1.0, lo=0.0, hi=1.0, lo_open=True)
        factor = 1.0 if got is None else got
        if extra_loss == 0.0 and factor == 1.0:
            raise item.error("a degraded link needs extra_loss > 0 or rate_factor < 1")
    if kind == "link_outage" and "random" in item:
        _only(item, kind, ("random", "rate_per_h", "duration_s", "start_s", "end_s", "seed"))
        which = item.enum("random", RANDOM_LINKS, required=True)
        rate = item.number("rate_per_h", required=True, lo=0.0, lo_open=True)
        r_dur = item.number("duration_s", required=True, lo=0.0, lo_open=True)
        r_start = item.number("start_s", lo=0.0)
        r_end = item.number("end_s", lo=0.0)
        if r_start is not None and r_end is not None and r_end <= r_start:
            raise item.error(f"end_s ({r_end:g}) must be after start_s ({r_start:g})",
                             "end_s")
        seed = item.integer("seed", default=DEFAULT_SEED)
        assert rate is not None and r_dur is not None and seed is not None
        return FaultSpec(kind, name, (), r_start, r_dur, r_end, which, rate, seed, line=line)
    if kind == "link_outage":
        _only(item, kind, ("link", "start_s", "duration_s"))
    if "link" not in item:
        raise item.error("missing required key 'link' (two node names: [a, b])"
                         + (" or 'random'" if kind == "link_outage" else ""), "link")
    ends = item.string_list("link")
    if len(ends) != 2 or ends[0] == ends[1]:
        raise item.error(f"link must be two different node names [a, b], got {ends!r}", "link")
    for n in ends:
        if n not in known:
            raise item.error(f"no node named {n!r}{_close(n, known)}", "link")
    if set(ends) <= ground:
        raise item.error("two ground stations are never linked", "link")
    start, dur = _interval(item)
    return FaultSpec(kind, name, (ends[0], ends[1]), start, dur, extra_loss=extra_loss,
                     rate_factor=factor, line=line)


def schedule_faults(specs: Sequence[FaultSpec], plan: ContactPlan, start_s: float,
                    end_s: float, *, source: str = "scenario") -> list[Fault]:
    """The faults of ``specs`` in [start_s, end_s) of ``plan`` (random outages drawn),
    sorted by start. A link fault on two nodes that have no contact in the plan is an
    error: it could change nothing."""
    linked = {frozenset((c.src, c.dst)) for c in plan.contacts}
    out: list[Fault] = []
    for s in specs:
        if s.random is not None:
            out += _random_outages(s, plan, start_s, end_s)
            continue
        assert s.start_s is not None
        if s.kind in LINK_KINDS and frozenset(s.nodes) not in linked:
            raise InputError(f"fault {s.name!r}: {s.nodes[0]} and {s.nodes[1]} have no "
                             "contact in the emulated window, so it would change nothing",
                             source=source, line=s.line, field="faults")
        out.append(Fault(s.name, s.kind, s.nodes, s.start_s, s.start_s + s.duration_s,
                         s.extra_loss, s.rate_factor))
    return sorted(out, key=lambda f: (f.start_s, f.id))


def _random_outages(s: FaultSpec, plan: ContactPlan, start_s: float, end_s: float
                    ) -> list[Fault]:
    """Poisson arrivals of ``rate_per_h`` over the item's period; each on a link of the
    item's kind that is up at that moment (none up: no outage then)."""
    lo = start_s if s.start_s is None else max(start_s, s.start_s)
    hi = end_s if s.end_s is None else min(end_s, s.end_s)
    rng = random.Random(f"{s.seed}:{s.name}")
    contacts: list[tuple[float, float, str, str]] = sorted(
        (c.start_s, c.end_s, min(c.src, c.dst), max(c.src, c.dst)) for c in plan.contacts
        if s.random == "any" or c.kind == s.random)
    out: list[Fault] = []
    t = lo
    while True:
        t += rng.expovariate(s.rate_per_h / 3600.0)
        if not t < hi or not math.isfinite(t):
            break
        up = sorted({(a, b) for c0, c1, a, b in contacts if c0 <= t < c1})
        if not up:
            continue
        a, b = rng.choice(up)
        out.append(Fault(f"{s.name}.{len(out)}", s.kind, (a, b), t, t + s.duration_s))
    return out


__all__ = ["EMULATOR_KINDS", "KINDS", "Fault", "FaultSpec", "parse_faults",
           "schedule_faults"]
