"""The contact plan: the one schedule that links, routing and reports all read.

A :class:`Contact` is one direction of a link being up: from ``src`` to ``dst`` during
[``start_s``, ``end_s``) in seconds from the plan's epoch, at ``rate_bps`` bits per
second, with the one-way light time sampled through the contact. The orbital schedule
produces these; an ION contact plan can be read back into the same objects, so routing
work needs no orbits.

Formats written and read here:

- ION contact-plan lines (``a contact +START +END FROM TO RATE_BYTES_PER_S`` and
  ``a range +START +END A B OWLT_S``), node numbers as ``ipn`` node numbers;
- HDTN's contact-plan JSON (rates in bits/s);
- netemu's own JSON, ``{"epoch", "nodes": {name: ipn}, "contacts": [...]}``, exact to the
  microsecond and carrying the light-time samples.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, TypeVar

from netemu.config import read_text
from netemu.errors import InputError

C_KM_S = 299_792.458
"""Speed of light in vacuum, km/s (exact)."""


@dataclass(frozen=True)
class Node:
    """A node of the plan: a satellite or a ground station.

    ``ipn`` is its ``ipn`` node number (DTN endpoint ``ipn:<ipn>.<service>``);
    ``kind`` is ``"satellite"``, ``"ground"`` or ``"other"`` (plans read from ION);
    ``max_links`` is how many links of kind GSL it can hold at once (a ground station's
    antennas, a satellite's beams), 0 meaning no limit.
    """

    name: str
    ipn: int
    kind: str = "other"
    max_links: int = 0


@dataclass(frozen=True)
class Contact:
    """One direction of a link being up.

    Times are seconds from the plan epoch; ``rate_bps`` is bits per second;
    ``owlt_s`` is the one-way light time used for planning (the largest over the
    contact, as ION expects a bound); ``owlt_samples`` are ``(t_s, owlt_s)`` pairs through
    the contact, for the emulator to follow the true range; ``loss`` is the frame loss
    probability in [0, 1]; ``kind`` is ``"isl"``, ``"gsl"`` or ``"plan"`` (read from a
    plan file); ``confidence`` is ION's contact confidence in (0, 1].

    ``rate_samples`` (a link budget's ground contacts) make the rate a step function:
    ``(t_s, rate_bps)`` pairs, the first at ``start_s``, each rate holding until the next
    pair (the last until ``end_s``); a rate of 0 means the link carries nothing then.
    ``rate_bps`` is then their mean over the contact, so that rate × duration is still
    the contact's volume; the ION and HDTN exports split such a contact at its steps
    (:func:`whole_second_pieces`).
    """

    src: str
    dst: str
    start_s: float
    end_s: float
    rate_bps: float
    owlt_s: float
    kind: str = "plan"
    loss: float = 0.0
    confidence: float = 1.0
    owlt_samples: tuple[tuple[float, float], ...] = field(default=(), compare=False, repr=False)
    rate_samples: tuple[tuple[float, float], ...] = field(default=(), compare=False, repr=False)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    @property
    def volume_bytes(self) -> float:
        """Bytes the contact can carry: the integral of its rate over the contact."""
        if not self.rate_samples:
            return self.rate_bps / 8.0 * self.duration_s
        return rate_integral_bits(self.rate_samples, self.end_s) / 8.0

    def rate_at(self, t_s: float) -> float:
        """Rate (bit/s) at ``t_s``: the rate sample in force, else ``rate_bps``."""
        samples = self.rate_samples
        if not samples:
            return self.rate_bps
        i = bisect.bisect_right([s[0] for s in samples], t_s)
        return samples[max(0, i - 1)][1]

    def active_at(self, t_s: float) -> bool:
        return self.start_s <= t_s < self.end_s

    def owlt_at(self, t_s: float) -> float:
        """One-way light time at ``t_s`` (s), interpolated linearly between samples;
        ``owlt_s`` when the contact carries no samples."""
        samples = self.owlt_samples
        if not samples:
            return self.owlt_s
        times = [s[0] for s in samples]
        i = bisect.bisect_right(times, t_s)
        if i == 0:
            return samples[0][1]
        if i >= len(samples):
            return samples[-1][1]
        (t0, d0), (t1, d1) = samples[i - 1], samples[i]
        if t1 <= t0:
            return d1
        return d0 + (d1 - d0) * (t_s - t0) / (t1 - t0)


def rate_integral_bits(samples: tuple[tuple[float, float], ...], end_s: float) -> float:
    """Bits a step-function rate (``(t_s, rate_bps)`` pairs) carries until ``end_s``."""
    total = 0.0
    for (t0, r), (t1, _) in zip(samples, (*samples[1:], (end_s, 0.0)), strict=True):
        total += r * max(0.0, t1 - t0)
    return total


def whole_second_pieces(c: Contact) -> list[tuple[int, int, float]]:
    """``(start, end, rate_bps)`` in whole seconds for formats with one rate per contact
    (ION, HDTN): the contact shrunk to the whole seconds inside its window and, where it
    has rate samples, split at them: a second that a rate step falls in takes the lower
    of the two rates, pieces of equal rate are merged, and pieces that carry nothing
    (rate 0) are left out. Never more than the contact carries at any instant."""
    start, end = math.ceil(c.start_s - 1e-9), math.floor(c.end_s + 1e-9)
    if end <= start:
        return []
    if not c.rate_samples:
        return [(start, end, c.rate_bps)]
    times = [t for t, _r in c.rate_samples]
    rates = [r for _t, r in c.rate_samples]
    ends = [*times[1:], c.end_s]
    pieces: dict[int, tuple[int, float]] = {}  # first second → (end second, rate)
    for t0, t1, r in zip(times, ends, rates, strict=True):
        a, b = max(start, math.ceil(t0 - 1e-9)), min(end, math.floor(t1 + 1e-9))
        if a < b:
            pieces[a] = (b, r)
    for t in times[1:]:
        sec = math.floor(t + 1e-9)
        if t - sec > 1e-9 and start <= sec < end and sec not in pieces:
            # a second with a step inside: the lowest rate in force during it
            first = max(0, bisect.bisect_right(times, sec + 1e-9) - 1)
            last = bisect.bisect_left(times, sec + 1 - 1e-9)
            pieces[sec] = (sec + 1, min(rates[first:last]))
    out: list[tuple[int, int, float]] = []
    for a in sorted(pieces):
        b, r = pieces[a]
        if out and out[-1][2] == r and out[-1][1] == a:
            out[-1] = (out[-1][0], b, r)
        else:
            out.append((a, b, r))
    return [p for p in out if p[2] > 0]


def mean_rate_bps(samples: tuple[tuple[float, float], ...], start_s: float,
                  end_s: float) -> float:
    """The mean of a step-function rate over [start_s, end_s] (the first sample's rate
    for an empty contact)."""
    if end_s <= start_s:
        return samples[0][1] if samples else 0.0
    return rate_integral_bits(samples, end_s) / (end_s - start_s)


@dataclass
class ContactPlan:
    """Nodes and their contacts, times relative to ``epoch`` (UTC)."""

    epoch: datetime
    nodes: dict[str, Node]
    contacts: list[Contact]
    warnings: list[str] = field(default_factory=list, compare=False, repr=False)
    """What a reader left out or doubted (shown to the user, not an error)."""
    weather: list[dict[str, Any]] = field(default_factory=list, compare=False, repr=False)
    """Rain events that lowered ground links' rates: ``{"station", "start_s", "end_s",
    "atten_db", "p_percent"}`` (attenuation at 45° elevation; see netemu/plan/weather.py)."""

    def __post_init__(self) -> None:
        self.contacts.sort(key=lambda c: (c.start_s, c.src, c.dst, c.end_s))

    # --- queries -------------------------------------------------------------------

    def active_at(self, t_s: float) -> list[Contact]:
        """Contacts up at ``t_s``."""
        return [c for c in self.contacts if c.start_s <= t_s < c.end_s]

    def between(self, src: str, dst: str) -> list[Contact]:
        return [c for c in self.contacts if c.src == src and c.dst == dst]

    def node_by_ipn(self, ipn: int) -> Node:
        for n in self.nodes.values():
            if n.ipn == ipn:
                return n
        raise KeyError(ipn)

    def window(self, start_s: float, end_s: float = math.inf) -> ContactPlan:
        """The plan with only the contacts up at some time in [start_s, end_s)."""
        return ContactPlan(self.epoch, dict(self.nodes),
                           [c for c in self.contacts if c.end_s > start_s and c.start_s < end_s],
                           list(self.warnings),
                           [w for w in self.weather if w["end_s"] > start_s
                            and w["start_s"] < end_s])

    def with_link_kinds(self) -> ContactPlan:
        """The plan with each contact of unknown kind (read from ION) marked "isl" between
        two satellites and "gsl" between a satellite and a ground station, where the
        nodes' kinds are known (netemu writes them as comments)."""
        kinds = {n.name: n.kind for n in self.nodes.values()}
        out = []
        for c in self.contacts:
            if c.kind == "plan":
                pair = {kinds.get(c.src), kinds.get(c.dst)}
                if pair == {"satellite"}:
                    c = replace(c, kind="isl")
                elif pair == {"satellite", "ground"}:
                    c = replace(c, kind="gsl")
            out.append(c)
        return ContactPlan(self.epoch, dict(self.nodes), out, list(self.warnings))

    def __iter__(self) -> Iterator[Contact]:
        return iter(self.contacts)

    def __len__(self) -> int:
        return len(self.contacts)

    # --- netemu JSON -----------------------------------------------------------------

    def to_json_obj(self, *, samples: bool = True) -> dict[str, Any]:
        """netemu's JSON contact plan (the documented contract plus extra keys)."""
        out: list[dict[str, Any]] = []
        for c in self.contacts:
            d = {
                "from": c.src,
                "to": c.dst,
                "start_s": round(c.start_s, 6),
                "end_s": round(c.end_s, 6),
                "rate_bps": c.rate_bps,
                "owlt_s": round(c.owlt_s, 9),
                "kind": c.kind,
                "loss": c.loss,
                "confidence": c.confidence,
            }
            if samples and c.owlt_samples:
                d["owlt_samples"] = [[round(t, 6), round(o, 9)] for t, o in c.owlt_samples]
            if samples and c.rate_samples:
                d["rate_samples"] = [[round(t, 6), r] for t, r in c.rate_samples]
            out.append(d)
        return {
            "epoch": _iso(self.epoch),
            "nodes": {n.name: n.ipn for n in self.nodes.values()},
            "node_info": {
                n.name: {"kind": n.kind, "max_links": n.max_links} for n in self.nodes.values()
            },
            "contacts": out,
            **({"weather": self.weather} if self.weather else {}),
        }

    def to_json(self, *, samples: bool = True) -> str:
        return json.dumps(self.to_json_obj(samples=samples), indent=1)

    @classmethod
    def from_json(cls, text: str, *, source: str = "<json>", strict: bool = False) -> ContactPlan:
        """Read netemu's JSON plan. A contact that ends before it starts is skipped and
        named in :attr:`ContactPlan.warnings` (``strict``: refused)."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"not valid JSON: {e.msg}", source=source, line=e.lineno) from e
        if not isinstance(obj, dict):
            raise InputError("a contact plan is a JSON object", source=source)
        for key in ("epoch", "nodes", "contacts"):
            if key not in obj:
                raise InputError("missing key", source=source, field=key)
        epoch = _parse_epoch(obj["epoch"], source=source)
        info = obj.get("node_info", {})
        nodes: dict[str, Node] = {}
        if not isinstance(obj["nodes"], dict):
            raise InputError("expected an object {name: ipn_number}", source=source, field="nodes")
        for name, ipn in obj["nodes"].items():
            if not isinstance(ipn, int) or ipn < 1:
                raise InputError("ipn node number must be a positive integer", source=source,
                                 field=f"nodes.{name}")
            extra = info.get(name, {})
            nodes[name] = Node(name, ipn, extra.get("kind", "other"), int(extra.get("max_links", 0)))
        contacts = []
        inverted: list[str] = []
        for i, d in enumerate(obj["contacts"]):
            where = f"contacts[{i}]"
            try:
                src, dst = d["from"], d["to"]
                c = Contact(
                    src=src,
                    dst=dst,
                    start_s=float(d["start_s"]),
                    end_s=float(d["end_s"]),
                    rate_bps=float(d["rate_bps"]),
                    owlt_s=float(d["owlt_s"]),
                    kind=str(d.get("kind", "plan")),
                    loss=float(d.get("loss", 0.0)),
                    confidence=float(d.get("confidence", 1.0)),
                    owlt_samples=tuple((float(t), float(o)) for t, o in d.get("owlt_samples", ())),
                    rate_samples=tuple((float(t), float(r)) for t, r in d.get("rate_samples", ())),
                )
            except KeyError as e:
                raise InputError(f"missing key {e.args[0]!r}", source=source, field=where) from e
            except (TypeError, ValueError) as e:
                raise InputError(f"bad value: {e}", source=source, field=where) from e
            for n in (src, dst):
                if n not in nodes:
                    raise InputError(f"node {n!r} is not in 'nodes'", source=source, field=where)
            if c.end_s < c.start_s and not strict and math.isfinite(c.start_s):
                inverted.append(f"{source}: {where} ({src} → {dst}, {c.start_s:g} to "
                                f"{c.end_s:g} s)")
                continue
            _check_contact(c, source=source, field_=where)
            contacts.append(c)
        weather = obj.get("weather", [])
        if not isinstance(weather, list) or not all(
                isinstance(w, dict) and {"station", "start_s", "end_s", "atten_db"} <= w.keys()
                for w in weather):
            raise InputError("expected a list of {station, start_s, end_s, atten_db}",
                             source=source, field="weather")
        return cls(epoch, nodes, contacts, _inverted_warning(inverted), weather)

    # --- ION -------------------------------------------------------------------------

    def to_ion(self) -> str:
        """ION contact-plan lines: relative whole seconds, rates in bytes/s, ranges in
        whole seconds rounded up (ION's ``a range`` takes an integer OWLT).

        Contacts are shrunk to whole seconds inside their true window (start rounded up,
        end rounded down) so a router never plans on a second the link is down; a contact
        with rate samples becomes one ``a contact`` line per rate
        (:func:`whole_second_pieces`), with one ``a range`` over the whole contact.
        """
        lines = [f"# netemu contact plan, epoch {_iso(self.epoch)}"]
        for n in sorted(self.nodes.values(), key=lambda n: n.ipn):
            lines.append(f"# node {n.ipn} {n.name} {n.kind}")
        ranges: list[str] = []
        for c in self.contacts:
            start, end = math.ceil(c.start_s - 1e-9), math.floor(c.end_s + 1e-9)
            if end <= start:
                continue
            a, b = self.nodes[c.src].ipn, self.nodes[c.dst].ipn
            conf = "" if c.confidence == 1.0 else f" {c.confidence:g}"
            for p0, p1, rate_bps in whole_second_pieces(c):
                rate = rate_bps / 8.0
                rate_s = str(int(rate)) if rate == int(rate) else f"{rate:.3f}"
                lines.append(f"a contact +{p0} +{p1} {a} {b} {rate_s}{conf}")
            ranges.append(f"a range +{start} +{end} {a} {b} {max(1, math.ceil(c.owlt_s - 1e-9))}")
        return "\n".join(lines + ranges) + "\n"

    @classmethod
    def from_ion(
        cls,
        text: str,
        *,
        epoch: datetime | None = None,
        names: dict[int, str] | None = None,
        source: str = "<ion>",
        strict: bool = False,
    ) -> ContactPlan:
        """Read ION contact-plan lines (``a contact`` and ``a range``).

        Node names come from ``names`` (ipn → name), else from ``# node N NAME`` comments
        that netemu writes, else ``ipn:N``. Times are ``+seconds`` relative to ``epoch``
        (default: the ``# netemu contact plan, epoch …`` comment, else 2000-01-01) or
        absolute ``yyyy/mm/dd-hh:mm:ss``. Other ionadmin commands are ignored.

        Light times follow ION's CGR: a contact's is that of the range in force when it
        starts (the earliest-starting range of the pair that has not ended by then, even
        one that ends before the contact does). A range declared once for A B applies
        both ways unless B A is declared too. A contact with no range in force is left
        out, as ION does not route over it, and named in :attr:`ContactPlan.warnings`.
        A contact or range that ends before it starts (some published plans have them) is
        skipped and named there too; ``strict`` refuses the file instead.
        """
        names = dict(names or {})
        inverted: list[str] = []
        kinds: dict[int, str] = {}
        raw_contacts: list[tuple[int, float, float, int, int, float, float]] = []
        raw_ranges: list[tuple[float, float, int, int, float]] = []
        for lineno, line in enumerate(text.splitlines(), 1):
            s = line.strip()
            if not s:
                continue
            if s.startswith("#"):
                m = re.match(r"#\s*netemu contact plan, epoch (\S+)", s)
                if m and epoch is None:
                    epoch = _parse_epoch(m.group(1), source=source, line=lineno)
                m = re.match(r"#\s*node (\d+) (\S+)(?: (\S+))?", s)
                if m:
                    names.setdefault(int(m.group(1)), m.group(2))
                    if m.group(3):
                        kinds[int(m.group(1))] = m.group(3)
                continue
            parts = s.split()
            if parts[0] != "a" or len(parts) < 2 or parts[1] not in ("contact", "range"):
                if parts[0] in ("a", "d", "i", "l", "m", "s", "x", "1", "@", "h", "?", "e", "r", "q"):
                    continue  # other ionadmin commands: not part of the plan
                raise InputError(f"unrecognised line {s!r}", source=source, line=lineno)
            kind = parts[1]
            want = 7 if kind == "contact" else 7
            if len(parts) < want or (kind == "contact" and len(parts) > 8) or (
                kind == "range" and len(parts) > 7
            ):
                usage = (
                    "a contact +START +END FROM TO RATE_BYTES_PER_S [CONFIDENCE]"
                    if kind == "contact"
                    else "a range +START +END A B OWLT_S"
                )
                raise InputError(f"expected '{usage}', got {s!r}", source=source, line=lineno)
            try:
                t0 = _ion_time(parts[2], epoch)
                t1 = _ion_time(parts[3], epoch)
                a, b = int(parts[4]), int(parts[5])
                val = float(parts[6])
                conf = float(parts[7]) if len(parts) == 8 else 1.0
            except ValueError as e:
                raise InputError(f"bad number in {s!r}: {e}", source=source, line=lineno) from e
            if not all(math.isfinite(x) for x in (t0, t1, val, conf)):
                raise InputError(f"times, rates and ranges must be finite numbers, got {s!r}",
                                 source=source, line=lineno)
            if a < 1 or b < 1:
                raise InputError("node numbers must be positive", source=source, line=lineno)
            if t1 < t0:
                if strict:
                    raise InputError(f"{kind} ends before it starts: {s!r}", source=source,
                                     line=lineno)
                inverted.append(f"{source}:{lineno} ({kind} ipn {a} → {b}, +{t0:g} to "
                                f"+{t1:g})")
                continue
            if val < 0 or not math.isfinite(val):
                raise InputError("rate and range must be non-negative", source=source, line=lineno)
            if not 0 < conf <= 1:
                raise InputError("confidence must be in (0, 1]", source=source, line=lineno)
            if kind == "contact":
                raw_contacts.append((lineno, t0, t1, a, b, val, conf))
            else:
                raw_ranges.append((t0, t1, a, b, val))
        if epoch is None:
            epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
        ipns = sorted({x for c in raw_contacts for x in (c[3], c[4])} | {x for r in raw_ranges for x in (r[2], r[3])})
        nodes = {}
        for ipn in ipns:
            name = names.get(ipn, f"ipn:{ipn}")
            nodes[name] = Node(name, ipn, kinds.get(ipn, "other"))
        ranges = _RangeIndex(raw_ranges)
        contacts = []
        no_range: list[str] = []
        for lineno, t0, t1, a, b, rate, conf in raw_contacts:
            owlt = 0.0 if a == b else ranges.owlt(a, b, t0)
            if owlt is None:
                no_range.append(f"{source}:{lineno} (ipn {a} → {b} at +{t0:g})")
                continue
            contacts.append(Contact(
                src=names.get(a, f"ipn:{a}"),
                dst=names.get(b, f"ipn:{b}"),
                start_s=t0,
                end_s=t1,
                rate_bps=rate * 8.0,
                owlt_s=owlt,
                confidence=conf,
            ))
        warnings = _inverted_warning(inverted)
        if no_range:
            shown = ", ".join(no_range[:3]) + (", …" if len(no_range) > 3 else "")
            warnings.append(f"{len(no_range)} contact(s) with no range in force at their start "
                            f"left out (ION does not route over them): {shown}")
        return cls(epoch, nodes, contacts, warnings)

    # --- HDTN ------------------------------------------------------------------------

    def to_hdtn_obj(self) -> dict[str, Any]:
        """HDTN's contact-plan JSON: ``{"contacts": [...]}`` with node numbers, whole
        seconds, ``rateBitsPerSec`` and ``owlt`` in seconds; a contact with rate samples
        becomes one entry per rate (:func:`whole_second_pieces`), numbered in order."""
        out: list[dict[str, Any]] = []
        for c in self.contacts:
            dst_ipn = self.nodes[c.dst].ipn
            for start, end, rate_bps in whole_second_pieces(c):
                out.append(
                    {
                        "contact": len(out),
                        "source": self.nodes[c.src].ipn,
                        "dest": dst_ipn,
                        "startTime": start,
                        "endTime": end,
                        "rateBitsPerSec": int(round(rate_bps)),
                        "owlt": max(1, math.ceil(c.owlt_s - 1e-9)),
                        "finalDestination": dst_ipn,
                    }
                )
        return {"contacts": out}

    def to_hdtn(self) -> str:
        return json.dumps(self.to_hdtn_obj(), indent=1)

    # --- files -----------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, epoch: datetime | None = None,
             strict: bool = False) -> ContactPlan:
        """Read a plan file: netemu JSON (``.json``) or ION lines (anything else).
        ``strict``: a contact that ends before it starts is an error, not a warning."""
        p = Path(path)
        text = read_text(p)
        if p.suffix == ".json" or text.lstrip().startswith("{"):
            return cls.from_json(text, source=str(p), strict=strict)
        return cls.from_ion(text, epoch=epoch, source=str(p), strict=strict)


class _RangeIndex:
    """ION ranges by node pair, for the range in force at a time in O(log n).

    Per pair, ranges sorted by start with the running maximum of their ends: the first
    range whose end is not before ``t`` is the first index where that maximum reaches
    ``t``; it is in force if it has started by ``t`` (ION's ``getApplicableRange``).
    """

    def __init__(self, raw: list[tuple[float, float, int, int, float]]) -> None:
        by_pair: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
        for r0, r1, a, b, owlt in raw:
            by_pair.setdefault((a, b), []).append((r0, r1, owlt))
        self._pairs: dict[tuple[int, int], tuple[list[float], list[float], list[float]]] = {}
        for key, rs in by_pair.items():
            rs.sort(key=lambda r: r[0])
            reach: list[float] = []
            top = -math.inf
            for _, r1, _ in rs:
                top = max(top, r1)
                reach.append(top)
            self._pairs[key] = ([r[0] for r in rs], reach, [r[2] for r in rs])

    def owlt(self, a: int, b: int, t: float) -> float | None:
        """The light time from ``a`` to ``b`` in force at ``t``, None when none is (a range
        declared for B A serves A B when A B has none declared)."""
        entry = self._pairs.get((a, b)) or self._pairs.get((b, a))
        if entry is None:
            return None
        starts, reach, owlts = entry
        j = bisect.bisect_left(reach, t)
        if j < len(starts) and starts[j] <= t:
            return owlts[j]
        return None


def _inverted_warning(where: list[str]) -> list[str]:
    """The warning for contacts/ranges skipped because they end before they start."""
    if not where:
        return []
    shown = ", ".join(where[:3]) + (", …" if len(where) > 3 else "")
    return [f"{len(where)} contact(s) or range(s) ending before they start skipped "
            f"(a strict load refuses them): {shown}"]


def _check_contact(c: Contact, *, source: str, field_: str) -> None:
    for key in ("start_s", "end_s", "rate_bps", "owlt_s", "loss", "confidence"):
        if not math.isfinite(getattr(c, key)):
            raise InputError(f"{key} must be a finite number, got {getattr(c, key)!r}",
                             source=source, field=field_)
    if any(not (math.isfinite(t) and math.isfinite(o)) for t, o in c.owlt_samples):
        raise InputError("owlt_samples must be finite numbers", source=source, field=field_)
    if any(not (math.isfinite(t) and math.isfinite(r) and r >= 0) for t, r in c.rate_samples):
        raise InputError("rate_samples must be finite numbers, rates ≥ 0", source=source,
                         field=field_)
    if any(b[0] < a[0] for a, b in zip(c.rate_samples, c.rate_samples[1:], strict=False)):
        raise InputError("rate_samples must be in time order", source=source, field=field_)
    if c.end_s < c.start_s:
        raise InputError("end_s must be ≥ start_s (finite)", source=source, field=field_)
    if c.rate_bps < 0 or c.owlt_s < 0:
        raise InputError("rate_bps and owlt_s must be ≥ 0", source=source, field=field_)
    if not 0.0 <= c.loss <= 1.0:
        raise InputError("loss must be in [0, 1]", source=source, field=field_)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _parse_epoch(s: object, *, source: str, line: int | None = None) -> datetime:
    if isinstance(s, datetime):
        return s if s.tzinfo else s.replace(tzinfo=timezone.utc)
    try:
        t = datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except ValueError as e:
        raise InputError(f"epoch {s!r} is not an ISO 8601 UTC time", source=source, line=line,
                         field="epoch") from e
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _ion_time(tok: str, epoch: datetime | None) -> float:
    if tok.startswith("+"):
        return float(tok[1:])
    t = datetime.strptime(tok, "%Y/%m/%d-%H:%M:%S").replace(tzinfo=timezone.utc)
    base = epoch or datetime(2000, 1, 1, tzinfo=timezone.utc)
    return (t - base).total_seconds()


def merge(plans: Iterable[ContactPlan]) -> ContactPlan:
    """One plan holding every node and contact of ``plans`` (the first one's epoch)."""
    plans = list(plans)
    nodes: dict[str, Node] = {}
    contacts: list[Contact] = []
    for p in plans:
        shift = (p.epoch - plans[0].epoch).total_seconds()
        nodes.update(p.nodes)
        for c in p.contacts:
            if shift:
                c = Contact(c.src, c.dst, c.start_s + shift, c.end_s + shift, c.rate_bps,
                            c.owlt_s, c.kind, c.loss, c.confidence,
                            tuple((t + shift, o) for t, o in c.owlt_samples),
                            tuple((t + shift, r) for t, r in c.rate_samples))
            contacts.append(c)
    return ContactPlan(plans[0].epoch, nodes, contacts)


T = TypeVar("T")


class PerPlan(Generic[T]):
    """A value derived from a plan, built once per live :class:`ContactPlan` object and
    shared by everything that reads it (the agents of a node host, the routers of their
    nodes); forgotten when the plan is. ``fresh(value, plan)`` may refuse a cached value
    (a plan that grew since it was built)."""

    def __init__(self, build: Callable[[ContactPlan], T],
                 fresh: Callable[[T, ContactPlan], bool] | None = None) -> None:
        self._build = build
        self._fresh = fresh
        self._cache: dict[int, tuple[weakref.ref[ContactPlan], T]] = {}

    def get(self, plan: ContactPlan) -> T:
        key = id(plan)
        hit = self._cache.get(key)
        if hit is not None and hit[0]() is plan and (
                self._fresh is None or self._fresh(hit[1], plan)):
            return hit[1]
        value = self._build(plan)
        self._cache[key] = (weakref.ref(plan, lambda ref: self._forget(key, ref)), value)
        return value

    def __len__(self) -> int:
        """Plans with a value held (each is dropped with its plan)."""
        return len(self._cache)

    def _forget(self, key: int, ref: weakref.ref[ContactPlan]) -> None:
        hit = self._cache.get(key)
        if hit is not None and hit[0] is ref:
            del self._cache[key]
