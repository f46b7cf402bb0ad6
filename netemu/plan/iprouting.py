"""A scenario's ``ip_routing:`` section: who sets the IP routes between node addresses.

    ip_routing: oracle          # default: shortest-delay routes, recomputed at each change
    ip_routing: none            # only the direct links (run your own daemons)
    ip_routing:
      plugin: mypkg.routes:compute   # your function returns the forwarding tables
    ip_routing:
      mode: frr                 # FRR's zebra + ospfd (or isisd) in every node
      protocol: ospf            # or ospf6 (OSPFv3, IPv6), isis (hello_s, dead_s, spf_hold_ms, bfd apply)
      hello_s: 1                # OSPF hello and dead intervals (whole seconds)
      dead_s: 4
      retransmit_s: 5           # LSA and database-description retransmission (FRR's 5)
      spf_delay_ms: 0           # SPF throttle: initial delay, hold, maximum hold
      spf_hold_ms: 50
      spf_max_hold_ms: 1000
      bfd: false                # BFD on every OSPF interface (bfdd)
    ip_routing:
      mode: bird                # BIRD 2's OSPF in every node
      protocol: ospf
      hello_s: 1                # hello, dead and retransmit intervals as for frr
      dead_s: 4
      retransmit_s: 2           # BIRD's least, the default here (RETRANSMIT_S)

From 150 nodes on, the daemon timers a section leaves out get defaults for large
networks (:func:`netemu.emulator.frr.scaled`); those it sets always stay.

Any mode may measure what its routes do (:mod:`netemu.emulator.ipmeasure`)::

      probes: [sanya:miyun, tb-0:tb-6]   # UDP probe flows and path samples, src:dst
      probe_interval_s: 0.05    # wall seconds between a flow's datagrams
      sample_s: 0.2             # wall seconds between path samples
      convergence_tolerance: 0.05   # a path within 5 % of the oracle's delay has converged

The command-line override (``--ip-routing``) takes the same words (``frr`` and ``bird``
with the defaults above), and ``plugin:M:F`` for a plug-in. Checked here, before anything is built; the plug-in's module is imported by the
emulator (:mod:`netemu.emulator.iproute_plugin`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from netemu.config.fields import Fields, suggest
from netemu.errors import InputError

MODES = ("oracle", "none", "plugin", "frr", "bird")
"""What ``ip_routing:`` may name."""

WORDS = ("oracle", "none", "frr", "bird")
"""The modes that need nothing else, written as a single word."""
FRR_PROTOCOLS = ("ospf", "ospf6", "isis")
MEASURE_KEYS = ("probes", "probe_interval_s", "sample_s", "convergence_tolerance")
FRR_KEYS = ("protocol", "hello_s", "dead_s", "retransmit_s", "spf_delay_ms", "spf_hold_ms", "spf_max_hold_ms",
            "bfd")
BIRD_PROTOCOLS = ("ospf",)
DAEMON_PROTOCOLS = tuple([f"frr/{p}" for p in FRR_PROTOCOLS] + [f"bird/{p}" for p in BIRD_PROTOCOLS])
"""Option words that name the protocol too (``--ip-routing frr/isis``, a compare list)."""
BIRD_KEYS = ("protocol", "hello_s", "dead_s", "retransmit_s")
"""What mode bird takes: BIRD's OSPF has no SPF throttle to set, and no BFD here."""
RETRANSMIT_S = {"frr": 5, "bird": 2}
"""The retransmit interval when the section gives none: FRR's default; for BIRD its
least, 2 s. BIRD 2 drops an LSA that comes less than MinLSArrival (1 s, built in) after
the previous instance, which happens at nearly every new adjacency (the neighbour's LSA
from the database exchange, then its new one at its next tick); the neighbour sends it
again only after the retransmit interval, and until then the new link is not used."""

_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


@dataclass(frozen=True)
class IpRouting:
    """``mode`` is one of :data:`MODES`; ``plugin`` is ``module:function`` for a plug-in;
    the rest configure the routing daemons (mode ``frr``, or ``bird`` for its subset)."""

    mode: str = "oracle"
    plugin: str | None = None
    protocol: str = "ospf"
    hello_s: int = 1
    dead_s: int = 4
    spf_delay_ms: int = 0
    spf_hold_ms: int = 50
    spf_max_hold_ms: int = 1000
    bfd: bool = False
    retransmit_s: int | None = None
    """None: the daemon's own choice here, :data:`RETRANSMIT_S`."""
    probes: tuple[tuple[str, str], ...] = ()
    probe_interval_s: float = 0.05
    sample_s: float = 0.2
    convergence_tolerance: float = 0.05
    explicit: frozenset[str] = frozenset()
    """The daemon keys the section sets: the others may get scale-aware defaults
    (:func:`netemu.emulator.frr.scaled`)."""

    @property
    def installs_routes(self) -> bool:
        """Whether netemu writes routes beyond the direct links."""
        return self.mode in ("oracle", "plugin")

    @property
    def reaches_nodes(self) -> bool:
        """Whether a node address reaches any node (routes beyond the direct links)."""
        return self.mode != "none"

    @property
    def daemons(self) -> bool:
        """Whether routing daemons run in the nodes."""
        return self.mode in ("frr", "bird")

    def describe(self) -> str:
        if self.mode == "plugin":
            return f"plugin {self.plugin}"
        if self.mode == "frr":
            return f"frr/{self.protocol}" + (" with BFD" if self.bfd else "")
        if self.mode == "bird":
            return f"bird/{self.protocol}"
        return self.mode


def parse_ip_routing(section: Fields | Any, *, source: str = "scenario",
                     line: int | None = None, nodes: Sequence[str] | None = None) -> IpRouting:
    """The section (a word or a mapping) as an :class:`IpRouting`; absent means oracle.
    ``nodes``: the scenario's node names, which probe pairs must name."""
    f = section if isinstance(section, Fields) else Fields(section, source=source,
                                                            path="ip_routing", line=line)
    if f.is_none():
        return IpRouting()
    if isinstance(f.value, str):
        if f.value not in WORDS:
            raise f.error(f"must be oracle, none, frr, bird or a mapping, got {f.value!r}"
                          f"{suggest(f.value, WORDS)}")
        return IpRouting(str(f.value))
    if not isinstance(f.value, dict):
        raise f.error(f"expected oracle, none, frr, bird or a mapping, got "
                      f"{type(f.value).__name__}")
    f.check_keys(("mode", "plugin", *FRR_KEYS, *MEASURE_KEYS))
    measure = _measure(f, nodes)
    mode = f.enum("mode", MODES, default="plugin" if "plugin" in f else "oracle")
    assert mode is not None
    ref = f.string("plugin")
    if mode == "plugin":
        if ref is None:
            raise f.error("mode plugin needs plugin: module:function", "mode")
        if not _REF.match(ref):
            raise f.error(f"expected module:function (e.g. mypkg.routes:compute), got {ref!r}",
                          "plugin")
    elif ref is not None:
        raise f.error(f"plugin: is for mode plugin, not {mode}", "plugin")
    if mode not in ("frr", "bird"):
        for k in FRR_KEYS:
            if k in f:
                raise f.error(f"{k}: is for mode frr, not {mode}", k)
        return replace(IpRouting(mode, ref), **measure)
    if mode == "bird":
        for k in FRR_KEYS:
            if k not in BIRD_KEYS and k in f:
                raise f.error(f"{k}: is for mode frr, not bird (bird takes "
                              f"{', '.join(BIRD_KEYS)})", k)
    d = IpRouting(mode)
    hello = f.integer("hello_s", default=d.hello_s, lo=1, hi=65535)
    dead = f.integer("dead_s", default=max(d.dead_s, 4 * (hello or 1)), lo=1, hi=65535)
    assert hello is not None and dead is not None
    if dead <= hello:
        raise f.error(f"must be more than hello_s ({hello}), got {dead}", "dead_s")
    delay = f.integer("spf_delay_ms", default=d.spf_delay_ms, lo=0, hi=600000)
    hold = f.integer("spf_hold_ms", default=d.spf_hold_ms, lo=0, hi=600000)
    max_hold = f.integer("spf_max_hold_ms", default=max(d.spf_max_hold_ms, hold or 0),
                         lo=0, hi=600000)
    assert delay is not None and hold is not None and max_hold is not None
    if max_hold < hold:
        raise f.error(f"must be at least spf_hold_ms ({hold}), got {max_hold}",
                      "spf_max_hold_ms")
    protocol = f.enum("protocol", BIRD_PROTOCOLS if mode == "bird" else FRR_PROTOCOLS,
                      default="ospf")
    bfd = f.boolean("bfd", default=False)
    if bfd and protocol == "ospf6":
        raise f.error("BFD is for ospf and isis here, not ospf6", "bfd")
    # BIRD refuses a retransmit interval of 1 s
    retransmit = f.integer("retransmit_s", default=None, lo=2 if mode == "bird" else 1,
                           hi=65535)
    assert protocol is not None and bfd is not None
    return replace(IpRouting(mode, None, protocol, hello, dead, delay, hold, max_hold, bfd,
                             retransmit, explicit=frozenset(k for k in FRR_KEYS if k in f)),
                   **measure)


def _measure(f: Fields, nodes: Sequence[str] | None) -> dict[str, Any]:
    """The measurement keys: probe pairs (``src:dst``, different known nodes) and rates."""
    pairs = []
    for i, text in enumerate(f.string_list("probes")):
        a, sep, b = text.partition(":")
        if not sep or not a or not b or a == b:
            raise f.error(f"expected SRC:DST (two different nodes), got {text!r}", "probes")
        for n in (a, b):
            if nodes is not None and n not in nodes:
                raise f.error(f"probes[{i}]: no node named {n!r}{suggest(n, list(nodes))}",
                              "probes")
        pairs.append((a, b))
    d = IpRouting()
    interval = f.number("probe_interval_s", default=d.probe_interval_s, lo=0.001, hi=60)
    sample = f.number("sample_s", default=d.sample_s, lo=0.01, hi=60)
    tol = f.number("convergence_tolerance", default=d.convergence_tolerance, lo=0, hi=10)
    return {"probes": tuple(pairs), "probe_interval_s": interval, "sample_s": sample,
            "convergence_tolerance": tol}


def parse_ip_routing_option(value: str, *, option: str = "--ip-routing") -> IpRouting:
    """The command-line override: ``oracle``, ``none``, ``frr``, ``bird``, ``frr/isis``
    (a daemon and its protocol) or ``plugin:module:function``."""
    if value.startswith("plugin:"):
        ref = value[len("plugin:"):]
        if not _REF.match(ref):
            raise InputError(f"expected plugin:module:function, got {value!r}", field=option)
        return IpRouting("plugin", ref)
    if value in WORDS:
        return IpRouting(value)
    if value in DAEMON_PROTOCOLS:
        mode, _, protocol = value.partition("/")
        return IpRouting(mode, protocol=protocol)
    raise InputError(f"must be oracle, none, frr, bird, {', '.join(DAEMON_PROTOCOLS)} or "
                     f"plugin:module:function, got {value!r}"
                     f"{suggest(value, (*WORDS, *DAEMON_PROTOCOLS))}", field=option)
