"""The ``traffic:`` section: bundle flows between selected nodes, generated without apps.

Each entry of ``traffic.flows`` (or of ``traffic:`` given as a list) names senders
(``from``) and receivers (``to``) with node selectors (:mod:`netemu.plan.selectors`), how
they pair up (``pairs``), when bundles are sent (``periodic`` every ``interval_s`` or
``poisson`` at ``rate_per_s``), their size, priority and lifetime, and the part of the
scenario they run in (``start_s`` to ``end_s``). An entry expands into one :class:`Flow`
per sender–receiver pair; ``flows(spec)`` lists them.

The send schedule is a pure function of the section: the section's ``seed`` (fixed by
default) and the entry's name seed each flow, and time is cut into blocks of
:data:`BLOCK_S` seconds on a grid from the epoch, each block drawn from its own generator.
The same file therefore gives the same sends in every run, on every machine, and any
window of a flow's schedule costs only the blocks it touches: a node host asks for the
next minute of its own nodes' sends (:func:`flows_from`, :func:`node_sends`) without
drawing anyone else's.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from netemu.config import Fields, describe, suggest
from netemu.plan.selectors import NodeIndex, select

if TYPE_CHECKING:
    from netemu.plan.contacts import ContactPlan
    from netemu.plan.scenario import Scenario

PATTERNS = ("periodic", "poisson")
PRIORITIES = {"bulk": 0, "normal": 1, "expedited": 2}
"""BPv7 class of service by name; 0, 1, 2 are accepted too."""
PAIRINGS = ("all", "one-to-one", "random")
FLOW_KEYS = ("name", "from", "to", "pairs", "pattern", "interval_s", "rate_per_s", "phase_s",
             "size_bytes", "priority", "lifetime_s", "start_s", "end_s", "seed")
SECTION_KEYS = ("seed", "flows")

DEFAULT_SEED = 1
"""The section's seed when it sets none: runs of one file send the same bundles."""
DEFAULT_LIFETIME_S = 3600.0
BLOCK_S = 600.0
"""Length of the time blocks each drawn from their own generator (scenario seconds)."""
MAX_FLOWS = 100_000
"""Most flows one entry may expand to (``pairs: all`` over large selections)."""
MAX_SIZE_BYTES = 1 << 31
MIN_INTERVAL_S = 0.001
"""Shortest mean time between one flow's sends (1,000 bundles per second)."""
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Send(NamedTuple):
    """One bundle to originate: at ``t_s`` (scenario seconds), of ``size_bytes`` payload
    bytes, BPv7 ``priority`` (0 bulk, 1 normal, 2 expedited), living ``lifetime_s``."""

    t_s: float
    size_bytes: int
    priority: int
    lifetime_s: float


@dataclass(frozen=True)
class FlowSpec:
    """One entry of the section, its selectors already resolved to node names.

    ``size_bytes`` is ``(lo, hi)``: a fixed size has ``lo == hi``, a range is drawn
    uniformly (whole bytes, both ends included). ``phase_s`` (periodic) is the delay of
    the first send after ``start_s``; None means a phase drawn per flow in
    [0, interval_s). ``pair_count`` is N of ``pairs: random N``.
    """

    name: str
    sources: tuple[str, ...]
    destinations: tuple[str, ...]
    pairs: str
    pattern: str
    size_bytes: tuple[int, int]
    priority: int
    lifetime_s: float
    start_s: float
    end_s: float
    seed: int
    interval_s: float | None = None
    rate_per_s: float | None = None
    phase_s: float | None = 0.0
    pair_count: int | None = None
    line: int = field(default=0, compare=False)


@dataclass(frozen=True)
class TrafficSpec:
    """A parsed ``traffic:`` section: its seed and its entries, in file order."""

    seed: int
    entries: tuple[FlowSpec, ...]
    source: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Flow:
    """Bundles from ``src`` to ``dst``: one sender–receiver pair of an entry.

    ``id`` is the flow's position in :func:`flows` (stable for a given file); ``key``
    names it in records (``entry:src>dst``, with ``#k`` when a pair repeats). ``seed``
    is the flow's own, derived from the section's seed, the entry's name and the pair.
    """

    id: int
    name: str
    key: str
    src: str
    dst: str
    pattern: str
    size_bytes: tuple[int, int]
    priority: int
    lifetime_s: float
    start_s: float
    end_s: float
    seed: int
    interval_s: float | None = None
    rate_per_s: float | None = None
    phase_s: float = 0.0

    @property
    def mean_rate_per_s(self) -> float:
        """Bundles per second on average."""
        if self.pattern == "poisson":
            return float(self.rate_per_s or 0.0)
        return 1.0 / float(self.interval_s or math.inf)

    def expected_sends(self, start_s: float = -math.inf, end_s: float = math.inf) -> float:
        """Mean number of sends in [start_s, end_s) (exact for periodic)."""
        lo, hi = max(start_s, self.start_s), min(end_s, self.end_s)
        if hi <= lo:
            return 0.0
        if self.pattern == "periodic":
            iv = float(self.interval_s or math.inf)
            first = self.start_s + self.phase_s
            k_lo = max(0, math.ceil((lo - first) / iv))
            return float(max(0, math.ceil((hi - first) / iv) - k_lo))
        return (hi - lo) * self.mean_rate_per_s

    def sends(self, start_s: float = -math.inf, end_s: float = math.inf) -> Iterator[Send]:
        """The flow's sends with ``start_s <= t_s < end_s``, in time order; the same
        sends whatever window asks for them."""
        lo, hi = max(start_s, self.start_s), min(end_s, self.end_s)
        if hi <= lo:
            return
        prio, life = self.priority, self.lifetime_s
        b = math.floor(lo / BLOCK_S)
        while b * BLOCK_S < hi:
            times, sizes = self._block(b)
            b += 1
            for t, s in zip(times, sizes, strict=True):
                if lo <= t < hi:
                    yield Send(t, s, prio, life)

    def _block(self, b: int) -> tuple[list[float], list[int]]:
        """Send times of block ``b`` ([b·BLOCK_S, (b+1)·BLOCK_S)) within the flow's span,
        and their sizes."""
        rng = np.random.default_rng((self.seed, b & 0xFFFFFFFF, b >> 32 & 0xFFFFFFFF))
        b0, b1 = b * BLOCK_S, (b + 1) * BLOCK_S
        if self.pattern == "poisson":
            n = int(rng.poisson(float(self.rate_per_s or 0.0) * BLOCK_S))
            t = b0 + np.sort(rng.random(n)) * BLOCK_S
            t = t[(t >= self.start_s) & (t < self.end_s)]
        else:
            iv = float(self.interval_s or math.inf)
            first = self.start_s + self.phase_s
            k_lo = max(0, math.floor((max(b0, first) - first) / iv) - 1)
            k_hi = max(0, math.ceil((min(b1, self.end_s) - first) / iv) + 1)
            t = first + np.arange(k_lo, k_hi + 1, dtype=np.float64) * iv
            t = t[(np.floor(t / BLOCK_S) == b) & (t >= self.start_s) & (t < self.end_s)]
        lo, hi = self.size_bytes
        sizes = [lo] * len(t) if lo == hi else rng.integers(lo, hi + 1, size=len(t)).tolist()
        return t.tolist(), sizes


# --------------------------------------------------------------------------------------
# Expansion


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from text parts, the same on every machine and Python run."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big") >> 1


def _pairs(e: FlowSpec) -> list[tuple[str, str]]:
    """The entry's sender–receiver pairs, in plan order (a pair may repeat)."""
    if e.pairs == "one-to-one":
        return list(zip(e.sources, e.destinations, strict=True))
    all_pairs = [(s, d) for s in e.sources for d in e.destinations if s != d]
    if e.pairs == "all":
        return all_pairs
    # random N: every pair once per full round, the rest drawn without replacement
    rounds, rest = divmod(e.pair_count or 0, len(all_pairs))
    counts = np.full(len(all_pairs), rounds, dtype=np.int64)
    if rest:
        rng = np.random.default_rng(derive_seed(e.seed, e.name, "pairs"))
        counts[rng.choice(len(all_pairs), size=rest, replace=False)] += 1
    return [p for p, c in zip(all_pairs, counts.tolist(), strict=True) for _ in range(c)]


def flows(spec: TrafficSpec) -> list[Flow]:
    """Every flow of the section, entry by entry, pairs in plan order (a pair drawn
    more than once by ``random N`` gives flows ``#0``, ``#1``, …)."""
    return list(_flows(spec))


@lru_cache(maxsize=8)
def _flows(spec: TrafficSpec) -> tuple[Flow, ...]:
    out: list[Flow] = []
    for e in spec.entries:
        repeat: dict[tuple[str, str], int] = {}
        for s, d in _pairs(e):
            k = repeat.get((s, d), 0)
            repeat[(s, d)] = k + 1
            seed = derive_seed(e.seed, e.name, s, d, k)
            key = f"{e.name}:{s}>{d}" + (f"#{k}" if k else "")
            phase = e.phase_s
            if phase is None:  # drawn per flow
                phase = derive_seed(seed, "phase") / 2.0**63 * float(e.interval_s or 0.0)
            out.append(Flow(len(out), e.name, key, s, d, e.pattern, e.size_bytes, e.priority,
                            e.lifetime_s, e.start_s, e.end_s, seed, e.interval_s,
                            e.rate_per_s, phase))
    return tuple(out)


@lru_cache(maxsize=8)
def _by_source(spec: TrafficSpec) -> dict[str, tuple[Flow, ...]]:
    out: dict[str, list[Flow]] = {}
    for fl in _flows(spec):
        out.setdefault(fl.src, []).append(fl)
    return {k: tuple(v) for k, v in out.items()}


def flows_from(spec: TrafficSpec, node: str) -> list[Flow]:
    """The flows ``node`` sends, by flow id (a dictionary look-up after the first call)."""
    return list(_by_source(spec).get(node, ()))


def node_sends(node_flows: Iterable[Flow], start_s: float,
               end_s: float) -> Iterator[tuple[Send, Flow]]:
    """The sends of several flows (one node's) in [start_s, end_s), merged in time order
    (ties: lower flow id first).

    Lazy: each flow's blocks are drawn as the stream reaches them, so with ``end_s``
    infinite this is the node's whole schedule from ``start_s`` on, to keep and pull
    from as time advances (each block drawn once)."""
    def stream(fl: Flow) -> Iterator[tuple[float, int, Send, Flow]]:
        for s in fl.sends(start_s, end_s):
            yield s.t_s, fl.id, s, fl

    for _, _, s, fl in heapq.merge(*(stream(fl) for fl in node_flows)):
        yield s, fl


# --------------------------------------------------------------------------------------
# Parsing


def parse_traffic(f: Fields, nodes: Scenario | ContactPlan | Iterable[Any] | NodeIndex, *,
                  duration_s: float | None = None) -> TrafficSpec:
    """Check a ``traffic:`` section (``Scenario.section("traffic")``) against ``nodes``.

    ``duration_s`` is the scenario's length (flows must end within it; a Scenario
    given as ``nodes`` supplies it). Errors name ``file:line`` and the field.
    """
    if duration_s is None:
        duration_s = getattr(nodes, "duration_s", None)
    index = nodes if isinstance(nodes, NodeIndex) else NodeIndex(nodes)
    if isinstance(f.value, list):
        seed = DEFAULT_SEED
        items = f.items()
        where = f
    elif isinstance(f.value, dict):
        f.check_keys(SECTION_KEYS, required=("flows",))
        seed = f.integer("seed", default=DEFAULT_SEED, lo=0)  # type: ignore[assignment]
        items = f.items("flows", non_empty=True)
        where = f.child("flows")
    else:
        raise f.error("expected a list of flows, or a mapping with 'seed' and 'flows', "
                      f"got {describe(f.value)}")
    if not items:
        raise where.error("at least one flow is needed")
    entries: list[FlowSpec] = []
    names: dict[str, int] = {}
    for item in items:
        e = _parse_flow(item, index, seed, duration_s)
        if e.name in names:
            raise item.error(f"flow name {e.name!r} is used twice (first at line "
                             f"{names[e.name]})", "name")
        names[e.name] = item.line_of("name") or 0
        entries.append(e)
    return TrafficSpec(seed=seed, entries=tuple(entries), source=f.source)


def _parse_flow(f: Fields, index: NodeIndex, section_seed: int,
                duration_s: float | None) -> FlowSpec:
    f.check_keys(FLOW_KEYS, required=("name", "from", "to", "size_bytes"))
    name = f.string("name", required=True)
    assert name is not None
    if not NAME_RE.match(name):
        raise f.error(f"flow name {name!r} may hold only letters, digits, '_', '.' and "
                      "'-', starting with a letter or digit", "name")
    sources = select(f.child("from"), index)
    dests = select(f.child("to"), index)
    pairs, count = _parse_pairs(f)
    if pairs == "one-to-one" and len(sources) != len(dests):
        raise f.error(f"one-to-one pairs need as many senders as receivers: 'from' selects "
                      f"{len(sources)}, 'to' {len(dests)}", "pairs")
    if pairs == "one-to-one":
        for s, d in zip(sources, dests, strict=True):
            if s == d:
                raise f.error(f"one-to-one pairs {s!r} with itself", "pairs")
    n_pairs = len(sources) * len(dests) - len(set(sources) & set(dests))
    if n_pairs <= 0:
        raise f.error(f"'from' and 'to' select only {sources[0]!r}: no pair of distinct "
                      "nodes", "to")
    n_flows = {"all": n_pairs, "one-to-one": len(sources), "random": count}[pairs]
    if n_flows is not None and n_flows > MAX_FLOWS:
        raise f.error(f"{n_flows:,} flows (at most {MAX_FLOWS:,}); use 'pairs: random N' "
                      "or narrower selectors", "pairs")

    pattern, interval, rate = _parse_pattern(f)
    phase: float | None = 0.0
    if "phase_s" in f:
        if pattern != "periodic":
            raise f.error("phase_s is for the periodic pattern", "phase_s")
        if f.get("phase_s") == "random":
            phase = None
        else:
            phase = f.number("phase_s", lo=0, hi=interval, hi_open=True)
    size = _parse_size(f)
    priority = _parse_priority(f)
    lifetime = f.number("lifetime_s", default=DEFAULT_LIFETIME_S, lo=0, lo_open=True)
    start = f.number("start_s", default=0.0, lo=0)
    assert start is not None and lifetime is not None
    if duration_s is not None:
        if start >= duration_s:
            raise f.error(f"starts at {start:g} s, at or after the scenario's end "
                          f"({duration_s:g} s)", "start_s")
        end = f.number("end_s", default=duration_s, lo=start, lo_open=True, hi=duration_s)
    else:
        end = f.number("end_s", default=math.inf, lo=start, lo_open=True)
    assert end is not None
    seed = f.integer("seed", default=section_seed, lo=0)
    assert seed is not None
    return FlowSpec(name=name, sources=tuple(sources), destinations=tuple(dests),
                    pairs=pairs, pattern=pattern, size_bytes=size, priority=priority,
                    lifetime_s=lifetime, start_s=start, end_s=end, seed=seed,
                    interval_s=interval, rate_per_s=rate, phase_s=phase, pair_count=count,
                    line=f.line_of() or 0)


def _parse_pairs(f: Fields) -> tuple[str, int | None]:
    v = f.get("pairs", "all")
    if isinstance(v, str):
        words = v.split()
        if len(words) == 1 and words[0] in ("all", "one-to-one"):
            return words[0], None
        if len(words) == 2 and words[0] == "random":
            try:
                n = int(words[1].replace("_", "").replace(",", ""))
            except ValueError:
                n = 0
            if n < 1:
                raise f.error(f"'random N' needs a whole number N ≥ 1, got {words[1]!r}",
                              "pairs")
            return "random", n
        if words and words[0] == "random":
            raise f.error("write 'random N' (e.g. random 1000)", "pairs")
    raise f.error(f"{describe(v)} is not a pairing{suggest(str(v), ('all', 'one-to-one', 'random N'))}",
                  "pairs")


def _parse_pattern(f: Fields) -> tuple[str, float | None, float | None]:
    pattern = f.enum("pattern", PATTERNS)
    if pattern is None:
        if "interval_s" in f and "rate_per_s" not in f:
            pattern = "periodic"
        elif "rate_per_s" in f and "interval_s" not in f:
            pattern = "poisson"
        else:
            raise f.error("give 'interval_s' (periodic) or 'rate_per_s' (poisson)"
                          + (", not both" if "interval_s" in f else ""))
    if pattern == "periodic":
        if "rate_per_s" in f:
            raise f.error("rate_per_s is for the poisson pattern; periodic takes interval_s",
                          "rate_per_s")
        interval = f.number("interval_s", lo=MIN_INTERVAL_S, required=True)
        return pattern, interval, None
    if "interval_s" in f:
        raise f.error("interval_s is for the periodic pattern; poisson takes rate_per_s",
                      "interval_s")
    rate = f.number("rate_per_s", lo=0, lo_open=True, hi=1 / MIN_INTERVAL_S, required=True)
    return pattern, None, rate


def _parse_size(f: Fields) -> tuple[int, int]:
    v = f.get("size_bytes")
    if isinstance(v, list) and len(v) == 2:
        lo, hi = v
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (lo, hi)):
            raise f.error(f"a size range is two whole numbers [min, max], got {v!r}",
                          "size_bytes")
        if lo < 1 or hi < lo or hi > MAX_SIZE_BYTES:
            raise f.error(f"a size range needs 1 ≤ min ≤ max ≤ {MAX_SIZE_BYTES}, got "
                          f"[{lo}, {hi}]", "size_bytes")
        return lo, hi
    if isinstance(v, list):
        raise f.error(f"a size range is two whole numbers [min, max], got {len(v)} items",
                      "size_bytes")
    n = f.integer("size_bytes", lo=1, hi=MAX_SIZE_BYTES, required=True)
    assert n is not None
    return n, n


def _parse_priority(f: Fields) -> int:
    v = f.get("priority", "normal")
    if isinstance(v, int) and not isinstance(v, bool):
        if not 0 <= v <= 2:
            raise f.error(f"must be 0 (bulk), 1 (normal) or 2 (expedited), got {v}",
                          "priority")
        return v
    p = f.enum("priority", tuple(PRIORITIES), default="normal")
    assert p is not None
    return PRIORITIES[p]
