"""Configuration of one node's bundle agent, read from a JSON or YAML file.

The emulator writes one file per node; a person can write one by hand. Example (YAML)::

    node: sat1
    ipn: 1
    listen: {tcpcl: ["0.0.0.0:4556"], udpcl: ["0.0.0.0:4556"], mtcp: []}
    app_socket: /run/netemu/sat1/bp.sock         # default: $NETEMU_SOCKET_DIR/<node>/bp.sock
    store: /var/lib/netemu/sat1/store.sqlite      # default: next to the app socket
    contact_plan: plan.json                       # netemu JSON or ION; optional
    routing: {algorithm: cgr}                     # any netemu.routing router name + params
    neighbours:
      - {name: gs1, ipn: 10, cl: tcpcl, address: "10.0.0.2:4556"}  # dial: both|lower|never
      - {name: sat2, ipn: 2, cl: udpcl, address: "10.0.1.2:4556", path_mtu: 1500}
      - {name: d3, ipn: 3, cl: mtcp, address: "10.0.2.2:4224", max_bundle_bytes: 65536}
    keys:                                         # BPSec (RFC 9172/9173); keys in hex
      sign_key: "8f3a0c1b5d7e9f2a4c6e8a0b2d4f6a8c"  # BIB over bundles this node creates
      verify: {"ipn:2.0": "5e1d7c9b3a5f7e9d1c3b5a7f9e1d3c5b"}   # per security source, or "*"
      require_bib_from: ["ipn:2.0"]               # node IDs or "*": no verifying BIB, dropped
      decrypt: {"ipn:2.0": "00112233445566778899aabbccddeeff"}  # BCB-AES-GCM key per source
    keepalive_s: 15
    segment_mru: 16777216
    transfer_mru: 16777216                        # largest bundle a peer may send us
    tls: required                                 # off | optional | required (RFC 9174 4.4)
    tls_ca: ca.pem                                # the CA that vouches for neighbours
    tls_cert: node.pem                            # this node's certificate (its node ID)
    tls_key: node.key
    accept_unknown_peers: false                   # sessions only with listed neighbours
    rx_in_progress_max_bytes: 67108864            # unfinished incoming bundles, all peers
    reassembly_max_bytes: 67108864                # fragments of bundles not yet whole
    transfer_stall_s: 30                          # an incoming transfer silent this long ends
    app_users: [daemon]                           # other users whose apps may use the socket
    reserved_endpoints: {"ipn:1.5": nobody}       # that user's apps alone register / send from
    store_max_bytes: 1073741824
    store_reserve_bytes: 8388608                  # free space new bundles leave the store
    log: /var/log/netemu/sat1.jsonl               # JSON lines; default stderr
    traffic: traffic.json                         # flows to send and take (netemu.agent.traffic)
    traffic_records: traffic.jsonl                # their records; default next to the store

Every bad value raises :class:`netemu.errors.InputError` naming the file, line and field
(checked with :class:`netemu.config.Fields`).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from netemu.config import Fields, LineMap, load_yaml, suggest
from netemu.dtn.bpsec import SecurityPolicy
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError
from netemu.errors import InputError
from netemu.runtime.env import socket_dir

T = TypeVar("T")

CLS = ("tcpcl", "udpcl", "mtcp")
DURABILITIES = ("disk", "process")
KNOWN_KEYS = ("node", "ipn", "listen", "app_socket", "store", "contact_plan", "follow_plan",
              "routing", "neighbours", "keys", "keepalive_s", "segment_mru", "transfer_mru",
              "store_max_bytes", "store_reserve_bytes", "durability", "default_lifetime_s",
              "log", "traffic", "traffic_records")
TRUST_KEYS = ("tls", "tls_ca", "tls_cert", "tls_key", "accept_unknown_peers",
              "rx_in_progress_max_bytes", "reassembly_max_bytes", "transfer_stall_s",
              "app_users", "reserved_endpoints")
TLS_MODES = ("off", "optional", "required")
DEFAULT_TRANSFER_MRU = 16 * 1024 * 1024
"""The largest bundle a peer may send unless the config says otherwise: far above what
the shipped workloads send (eo-filter's tiles are 4 KiB) and above HDTN's default
10,000,000-byte MRU, so a whole raw image fits; the old default, 4 GiB, let one peer
make the node hold that much for a single transfer. A node that must take more says so
(``transfer_mru``); a larger bundle for a peer is split into fragments of its MRU."""
DEFAULT_RX_IN_PROGRESS_MAX_BYTES = 4 * DEFAULT_TRANSFER_MRU
DEFAULT_REASSEMBLY_MAX_BYTES = 4 * DEFAULT_TRANSFER_MRU
"""The most bytes that fragments of bundles not yet whole may hold at this node."""
NEIGHBOUR_KEYS = ("name", "ipn", "cl", "address", "path_mtu", "links", "dial",
                  "max_bundle_bytes")
DIAL_MODES = ("both", "lower", "never")
"""Who dials a neighbour's TCPCL/MTCP sessions: ``both`` sides at once (a collision is
resolved: see ``Agent.session_started``), the ``lower`` ipn (the higher one only if no
session came within the dial grace), or ``never`` (the neighbour dials us)."""
SECURITY_KEYS = ("sign_key", "verify", "require_bib_from", "decrypt")
AES_KEY_BYTES = (16, 24, 32)  # BCB content keys (16, 32) and key-encryption keys


MAX_LIFETIME_S = 100 * 365.25 * 86400.0
"""Longest bundle lifetime a client asks for: 100 years (the agent keeps lifetimes and
expiry times as whole milliseconds in 64-bit integers)."""


def check_lifetime(lifetime_s: Any) -> float:
    """``lifetime_s`` when it is a finite number of seconds in (0, MAX_LIFETIME_S]."""
    ok = (isinstance(lifetime_s, (int, float)) and not isinstance(lifetime_s, bool)
          and math.isfinite(lifetime_s) and 0 < lifetime_s <= MAX_LIFETIME_S)
    if not ok:
        raise InputError(f"must be a finite number of seconds, > 0 and ≤ {MAX_LIFETIME_S:g} "
                         f"(100 years), got {lifetime_s!r}", field="lifetime_s")
    return float(lifetime_s)


@dataclass(frozen=True)
class NeighbourConfig:
    """A node this agent can reach directly, and how."""

    name: str
    ipn: int
    cl: str = "tcpcl"
    address: str = ""  # "host:port"; empty: only the peer connects to us
    path_mtu: int = 1500  # for udpcl
    #: direct links to the neighbour, by time: (start_s, end_s, "host:port" of the peer's
    #: end of the link), sorted by start_s. While one is current the agent dials it rather
    #: than ``address``, so the session runs over that link and needs no IP routes.
    links: tuple[tuple[float, float, str], ...] = ()
    dial: str = "both"  # DIAL_MODES
    #: the largest bundle to send it whole (larger ones go in fragments), for a peer
    #: whose CL announces no limit (MTCP); TCPCL peers announce theirs (transfer MRU)
    max_bundle_bytes: int | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.address, default_port=4556)

    def address_at(self, t_s: float) -> str:
        """Where to dial at scenario time ``t_s``: the current link's peer end, else
        ``address``."""
        links = self.links  # sorted, not overlapping: only the last to start can be current
        i = bisect.bisect_right(links, (t_s, math.inf, "")) - 1
        return links[i][2] if i >= 0 and t_s < links[i][1] else self.address

    def is_link_host(self, host: str) -> bool:
        """Whether ``host`` is the peer's end of one of the direct links."""
        return any(split_host_port(a)[0] == host for _, _, a in self.links)


@dataclass
class AgentConfig:
    node: str
    ipn: int
    listen_tcpcl: list[str] = field(default_factory=lambda: ["0.0.0.0:4556"])
    listen_udpcl: list[str] = field(default_factory=lambda: ["0.0.0.0:4556"])
    listen_mtcp: list[str] = field(default_factory=list)
    app_socket: str = ""
    store: str = ""
    contact_plan: str | None = None
    follow_plan: bool = True  # open sessions only while the plan has a contact up
    routing: dict[str, Any] = field(default_factory=lambda: {"algorithm": "cgr"})
    neighbours: list[NeighbourConfig] = field(default_factory=list)
    keys: dict[str, Any] = field(default_factory=dict)
    keepalive_s: int = 15
    segment_mru: int = 16 * 1024 * 1024
    transfer_mru: int = DEFAULT_TRANSFER_MRU
    store_max_bytes: int = 1 << 30
    store_reserve_bytes: int = 8 << 20  # free space kept for acks, tombstones, the WAL
    durability: str = "disk"  # store: "disk" (fsync per group commit) or "process"
    default_lifetime_s: float = 86400.0
    log: str | None = None
    traffic: str | None = None  # the run's traffic.json: flows this node sends and takes
    traffic_records: str = ""  # their records (default: traffic.jsonl next to the store)
    source: str = "<config>"
    # whom the agent talks to, and what a peer can make it hold (docs/security.md)
    tls: str = "off"
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    accept_unknown_peers: bool = False
    rx_in_progress_max_bytes: int = DEFAULT_RX_IN_PROGRESS_MAX_BYTES
    reassembly_max_bytes: int = DEFAULT_REASSEMBLY_MAX_BYTES
    transfer_stall_s: float = 30.0
    app_users: tuple[int, ...] = ()  # uids that may use the app socket besides root and us
    reserved_endpoints: dict[str, int] = field(default_factory=dict)  # endpoint -> its uid

    @property
    def app_uids(self) -> frozenset[int]:
        """The users who may connect to the app socket: root, the agent's own user, the
        ``app_users`` and the owners of ``reserved_endpoints``."""
        return frozenset({0, os.geteuid(), *self.app_users,
                          *self.reserved_endpoints.values()})

    def __post_init__(self) -> None:
        if not self.app_socket:
            self.app_socket = default_socket_path(self.node)
        if not self.store:
            self.store = str(Path(self.app_socket).parent / "store.sqlite")
        if not self.traffic_records:
            self.traffic_records = str(Path(self.store).parent / "traffic.jsonl")

    def neighbour(self, name: str) -> NeighbourConfig | None:
        for n in self.neighbours:
            if n.name == name:
                return n
        return None

    @property
    def node_eid(self) -> str:
        return f"ipn:{self.ipn}.0"

    # --- loading ----------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path, *, node: str | None = None) -> AgentConfig:
        """Read a JSON or YAML config. A file with a ``nodes:`` map holds several nodes;
        ``node`` picks one."""
        p = Path(path)
        doc = Fields(load_yaml(p), source=str(p), line=1)
        nodes = doc.get("nodes") if isinstance(doc.value, dict) else None
        if isinstance(nodes, dict):
            if node is None:
                raise doc.error("config holds several nodes; say which with --node", "nodes")
            if node not in nodes:
                raise doc.error(f"node {node!r} not in config (has: "
                                f"{', '.join(sorted(nodes))})", "nodes")
            entry = doc.child("nodes").mapping(node)
            shared = {k: v for k, v in doc.value.items() if k != "nodes"}
            doc = Fields(LineMap({**shared, **entry.value, "node": node}, line=entry.line or 0,
                                 key_lines={**doc.value.key_lines, **entry.value.key_lines}),
                         source=str(p), line=entry.line)
        cfg = cls.from_fields(doc)
        if node is not None and cfg.node != node:
            raise doc.error(f"config is for node {cfg.node!r}, not {node!r}", "node")
        # Paths in the file are relative to the file.
        if cfg.contact_plan and not Path(cfg.contact_plan).is_absolute():
            cfg.contact_plan = str((p.parent / cfg.contact_plan).resolve())
        if cfg.traffic and not Path(cfg.traffic).is_absolute():
            cfg.traffic = str((p.parent / cfg.traffic).resolve())
        for key in ("tls_ca", "tls_cert", "tls_key"):
            if getattr(cfg, key) and not Path(getattr(cfg, key)).is_absolute():
                setattr(cfg, key, str((p.parent / getattr(cfg, key)).resolve()))
        return cfg

    @classmethod
    def from_obj(cls, obj: Any, *, source: str = "<config>") -> AgentConfig:
        """The config from a mapping (what :meth:`to_obj` gives, or a parsed file)."""
        return cls.from_fields(Fields(obj, source=source))

    @classmethod
    def from_fields(cls, f: Fields) -> AgentConfig:
        """The config from a document being checked; every bad value is an
        :class:`InputError` naming the file, line and field."""
        f.check_keys(KNOWN_KEYS + TRUST_KEYS)
        listen = (f.mapping("listen") if f.get("listen") is not None
                  else Fields(LineMap(), source=f.source, path="listen", line=f.line))
        for k in listen:
            if k not in CLS:
                raise listen.error(f"unknown convergence layer {k!r}{suggest(k, CLS)}", k)
        lists: dict[str, list[str]] = {}
        for cl, default in (("tcpcl", ["0.0.0.0:4556"]), ("udpcl", ["0.0.0.0:4556"]),
                            ("mtcp", [])):
            addrs = listen.string_list(cl, default=default)
            for i, a in enumerate(addrs):
                _checked_host_port(a, listen.child(cl), i)
            lists[cl] = addrs
        neighbours = [_neighbour(n) for n in f.items("neighbours")]
        names = [n.name for n in neighbours]
        dup = {x for x in names if names.count(x) > 1}
        if dup:
            raise f.error(f"neighbour listed twice: {', '.join(sorted(dup))}", "neighbours")
        routing = f.get("routing", {"algorithm": "cgr"})
        if isinstance(routing, str):
            routing = {"algorithm": routing}
        if not isinstance(routing, dict) or not isinstance(routing.get("algorithm"), str):
            raise f.error("expected {algorithm: NAME, ...} or a router name", "routing")
        keys = f.mapping("keys").value if f.get("keys") is not None else {}
        if keys:
            read_security(f.child("keys"))  # checked now; the core builds the policy
        return cls(
            node=_required(f.string("node", required=True)),
            ipn=_required(f.integer("ipn", lo=1, required=True)),
            listen_tcpcl=lists["tcpcl"],
            listen_udpcl=lists["udpcl"],
            listen_mtcp=lists["mtcp"],
            app_socket=_text(f, "app_socket"),
            store=_text(f, "store"),
            contact_plan=_text(f, "contact_plan") or None,
            follow_plan=_required(f.boolean("follow_plan", default=True)),
            routing=dict(routing),
            neighbours=neighbours,
            keys=dict(keys),
            keepalive_s=_required(f.integer("keepalive_s", default=15, lo=0, hi=0xFFFF)),
            segment_mru=_required(f.integer("segment_mru", default=16 * 1024 * 1024, lo=64)),
            transfer_mru=_required(f.integer("transfer_mru", default=DEFAULT_TRANSFER_MRU,
                                             lo=64)),
            store_max_bytes=_required(f.integer("store_max_bytes", default=1 << 30, lo=1024)),
            store_reserve_bytes=_required(f.integer("store_reserve_bytes", default=8 << 20,
                                                    lo=0)),
            durability=_required(f.enum("durability", DURABILITIES, default="disk")),
            default_lifetime_s=_required(f.number("default_lifetime_s", default=86400.0, lo=0,
                                                  lo_open=True)),
            log=_text(f, "log") or None,
            traffic=_text(f, "traffic") or None,
            traffic_records=_text(f, "traffic_records"),
            source=f.source,
            **_trust(f),
        )

    @classmethod
    def for_plan_node(cls, plan: Any, node: str, addresses: dict[str, str], *,
                      plan_path: str | None = None, run_dir: str | None = None,
                      routing: dict[str, Any] | None = None, cl: str = "tcpcl",
                      peers: dict[str, list[str]] | None = None,
                      links: dict[str, list[tuple[float, float, str]]] | None = None,
                      **overrides: Any) -> AgentConfig:
        """The config of ``node`` in an emulation: its neighbours are the nodes it has a
        contact with in ``plan`` (a :class:`netemu.plan.contacts.ContactPlan`), dialled at
        ``addresses[name]`` (``"10.0.0.2"`` or ``"10.0.0.2:4556"``; a neighbour without
        an address only connects to us). ``run_dir`` holds the app socket and store.
        ``peers`` (:func:`plan_peers` of ``plan``) saves a scan of every contact per node
        when writing the configs of many nodes. ``links`` (neighbour → direct links by
        time, see :attr:`NeighbourConfig.links`) makes the agent dial each contact's own
        link."""
        if node not in plan.nodes:
            raise InputError(f"node {node!r} is not in the contact plan", field="node")
        if peers is None:
            peers = plan_peers(plan)
        neighbours = []
        for name in peers.get(node, []):
            addr = addresses.get(name, "")
            if addr and ":" not in addr.strip("[]").split("]")[-1] and not addr.startswith("["):
                addr = f"{addr}:4556"
            # both ends are netemu agents with the same rule: one dials, no collisions
            # (at contact start on a constellation, both dialling doubles the handshakes)
            neighbours.append(NeighbourConfig(name, plan.nodes[name].ipn, cl, addr,
                                              links=tuple((links or {}).get(name, ())),
                                              dial="lower"))
        base = Path(run_dir) if run_dir else None
        return cls(
            node=node, ipn=plan.nodes[node].ipn, neighbours=neighbours,
            contact_plan=plan_path, routing=routing or {"algorithm": "cgr"},
            app_socket=str(base / "bp.sock") if base else "",
            store=str(base / "store.sqlite") if base else "",
            **overrides,
        )

    def to_obj(self) -> dict[str, Any]:
        """The config as a plain mapping (what :meth:`from_obj` reads)."""
        return {
            "node": self.node, "ipn": self.ipn,
            "listen": {"tcpcl": self.listen_tcpcl, "udpcl": self.listen_udpcl,
                       "mtcp": self.listen_mtcp},
            "app_socket": self.app_socket, "store": self.store,
            "contact_plan": self.contact_plan, "follow_plan": self.follow_plan,
            "routing": self.routing,
            "neighbours": [
                {"name": n.name, "ipn": n.ipn, "cl": n.cl, "address": n.address,
                 "path_mtu": n.path_mtu, "dial": n.dial,
                 **({"max_bundle_bytes": n.max_bundle_bytes} if n.max_bundle_bytes else {}),
                 **({"links": [list(x) for x in n.links]} if n.links else {})}
                for n in self.neighbours
            ],
            "keys": self.keys, "keepalive_s": self.keepalive_s,
            "segment_mru": self.segment_mru, "transfer_mru": self.transfer_mru,
            "store_max_bytes": self.store_max_bytes,
            "store_reserve_bytes": self.store_reserve_bytes, "durability": self.durability,
            "default_lifetime_s": self.default_lifetime_s, "log": self.log,
            "traffic": self.traffic, "traffic_records": self.traffic_records,
            "tls": self.tls, "tls_ca": self.tls_ca, "tls_cert": self.tls_cert,
            "tls_key": self.tls_key, "accept_unknown_peers": self.accept_unknown_peers,
            "app_users": list(self.app_users),
            "reserved_endpoints": dict(self.reserved_endpoints),
            "rx_in_progress_max_bytes": self.rx_in_progress_max_bytes,
            "reassembly_max_bytes": self.reassembly_max_bytes,
            "transfer_stall_s": self.transfer_stall_s,
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_obj(), indent=1) + "\n")


def plan_peers(plan: Any) -> dict[str, list[str]]:
    """Each node of ``plan`` → the nodes it has a contact with, sorted: one pass over the
    contacts for every node's :meth:`AgentConfig.for_plan_node`."""
    sets: dict[str, set[str]] = {}
    for c in plan.contacts:
        sets.setdefault(c.src, set()).add(c.dst)
        sets.setdefault(c.dst, set()).add(c.src)
    return {n: sorted(s) for n, s in sets.items()}


def default_socket_path(node: str) -> str:
    """Where node ``node``'s agent listens unless its config says otherwise:
    ``<socket dir>/<node>/bp.sock`` (``$NETEMU_SOCKET_DIR``, else ``/run/netemu``)."""
    return str(socket_dir() / node / "bp.sock")


def split_host_port(text: str, *, default_port: int = 4556) -> tuple[str, int]:
    """``"10.0.0.1:4556"`` / ``"[fd00::1]:4556"`` / ``"host"`` → (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    return host, int(port) if port else default_port


def _checked_host_port(text: str, where: Fields, key: str | int) -> tuple[str, int]:
    """``text`` as (host, port), else an error about ``key`` of ``where``."""
    try:
        host, port = split_host_port(text)
    except ValueError:
        raise where.error(f"not host:port: {text!r}", key) from None
    if not host or not 0 <= port <= 65535:
        raise where.error(f"not host:port: {text!r}", key)
    return host, port


def _trust(f: Fields) -> dict[str, Any]:
    """The peer-trust and memory-bound keys: TLS needs all three files."""
    # (YAML 1.1 reads a bare `off` as false)
    tls = "off" if f.get("tls") is False else _required(f.enum("tls", TLS_MODES,
                                                                 default="off"))
    files = {k: _text(f, k) for k in ("tls_ca", "tls_cert", "tls_key")}
    missing = [k for k, v in files.items() if not v]
    if tls != "off" and missing:
        raise f.error(f"tls: {tls} needs {', '.join(missing)} (the CA certificate, this "
                      "node's certificate and its key, PEM files)", "tls")
    return {
        "tls": tls, **files,
        "accept_unknown_peers": _required(f.boolean("accept_unknown_peers", default=False)),
        "rx_in_progress_max_bytes": _required(f.integer(
            "rx_in_progress_max_bytes", default=DEFAULT_RX_IN_PROGRESS_MAX_BYTES, lo=64)),
        "reassembly_max_bytes": _required(f.integer(
            "reassembly_max_bytes", default=DEFAULT_REASSEMBLY_MAX_BYTES, lo=0)),
        "transfer_stall_s": _required(f.number("transfer_stall_s", default=30.0, lo=0,
                                               lo_open=True)),
        "app_users": tuple(_uid(e) for e in f.items("app_users")),
        "reserved_endpoints": _reserved_endpoints(f),
    }


def _uid(f: Fields) -> int:
    """A user as a name (looked up now) or a uid."""
    v = f.value
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 1 << 32:
        return v
    if isinstance(v, str) and v:
        try:
            return pwd.getpwnam(v).pw_uid
        except KeyError:
            raise f.error(f"no user {v!r} on this machine") from None
    raise f.error(f"expected a user name or a uid, got {v!r}")


def _reserved_endpoints(f: Fields) -> dict[str, int]:
    """``reserved_endpoints: {ENDPOINT: USER}``: only that user's apps may register the
    endpoint or send from it."""
    if f.get("reserved_endpoints") is None:
        return {}
    where = f.mapping("reserved_endpoints")
    out: dict[str, int] = {}
    for key in where.value:
        try:
            eid = str(EID.parse(str(key)))
        except BundleError as e:
            raise where.error(str(e), key) from None
        out[eid] = _uid(where.child(key))
    return out


def _neighbour(n: Fields) -> NeighbourConfig:
    n.check_keys(NEIGHBOUR_KEYS, required=("name", "ipn"))
    cl = _required(n.string("cl", default="tcpcl"))
    if cl not in CLS:
        raise n.error(f"unknown convergence layer {cl!r}{suggest(cl, CLS)}", "cl")
    addr = _text(n, "address")
    if addr:
        _checked_host_port(addr, n, "address")
    dial = _required(n.string("dial", default="both"))
    if dial not in DIAL_MODES:
        raise n.error(f"must be one of {', '.join(DIAL_MODES)}, got {dial!r}"
                      f"{suggest(dial, DIAL_MODES)}", "dial")
    return NeighbourConfig(_required(n.string("name", required=True)),
                           _required(n.integer("ipn", lo=1, required=True)), cl, addr,
                           _required(n.integer("path_mtu", default=1500, lo=68)),
                           _links(n), dial, n.integer("max_bundle_bytes", lo=256))


def _links(n: Fields) -> tuple[tuple[float, float, str], ...]:
    """A neighbour's ``links:`` ``[[start_s, end_s, "host:port"], ...]``: finite times,
    start < end, sorted and not overlapping."""
    if n.get("links") is None:
        return ()
    out: list[tuple[float, float, str]] = []
    where = n.child("links")
    for i, e in enumerate(n.items("links")):
        v = e.value
        ok = (isinstance(v, list) and len(v) == 3 and isinstance(v[2], str)
              and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                      and math.isfinite(x) for x in v[:2]))
        if not ok:
            raise where.error('expected [start_s, end_s, "host:port"]', i)
        start, end, addr = float(v[0]), float(v[1]), v[2]
        if not start < end:
            raise where.error(f"ends ({end:g} s) before it starts ({start:g} s)", i)
        if out and start < out[-1][1]:
            raise where.error(f"starts at {start:g} s, before the previous link ends "
                              f"({out[-1][1]:g} s): links must be sorted and apart", i)
        _checked_host_port(addr, where, i)
        out.append((start, end, addr))
    return tuple(out)


def read_security(f: Fields, *, node_id: EID | None = None) -> SecurityPolicy | None:
    """The BPSec policy of a ``keys:`` section (None when it is empty): ``sign_key`` (hex),
    ``verify`` {security source or "*": hex}, ``require_bib_from`` [node ID or "*"],
    ``decrypt`` {security source or "*": hex AES key}. A rule that requires BIBs from a
    source no verify key serves is refused: every bundle from it would be dropped."""
    if f.is_none() or not f.check_keys(SECURITY_KEYS).value:
        return None
    sign_key = _hex_key(f, "sign_key") if "sign_key" in f else None
    verify = _key_map(f, "verify")
    decrypt = _key_map(f, "decrypt", sizes=AES_KEY_BYTES)
    required = f.string_list("require_bib_from") if f.get("require_bib_from") is not None else []
    rules = f.child("require_bib_from")
    for i, text in enumerate(required):
        if text == "*":
            continue
        eid = _eid(rules, i, text)
        if eid.node_id() != eid:
            raise rules.error(f"{text!r} is an endpoint, not a node; write "
                              f"{str(eid.node_id())!r}", i)
    policy = SecurityPolicy(node_id=node_id, sign_key=sign_key, verify_keys=verify,
                            require_bib_from=frozenset(required), decrypt_keys=decrypt)
    unserved = policy.sources_without_key()
    if unserved:
        who = ("any node" if unserved == ["*"] else ", ".join(unserved))
        raise f.error(f"bundles from {who} must carry a BIB, but keys.verify holds no key"
                      f"{'' if unserved == ['*'] else ' for it'} (nor one for \"*\"): every "
                      "such bundle would be dropped; add its key to keys.verify",
                      "require_bib_from")
    return policy


def _eid(where: Fields, key: str | int, text: str) -> EID:
    try:
        eid = EID.parse(text)
    except BundleError as e:
        raise where.error(f"{text!r} is not an endpoint ID nor \"*\": {e.reason}", key) from None
    if eid.is_none:
        raise where.error("dtn:none signs nothing: name a node or \"*\"", key)
    return eid


def _hex_key(f: Fields, key: str, *, sizes: tuple[int, ...] = ()) -> bytes:
    text = f.string(key)
    try:
        raw = bytes.fromhex(text or "")
    except ValueError:
        raw = b""
    if not raw:
        raise f.error(f"not a hex key: {text!r}", key)
    if sizes and len(raw) not in sizes:
        raise f.error(f"an AES key is {', '.join(map(str, sizes))} bytes, got {len(raw)}", key)
    return raw


def _key_map(f: Fields, key: str, *, sizes: tuple[int, ...] = ()) -> dict[str, bytes]:
    """``{security source or "*": hex}`` of ``key`` (absent or empty: none)."""
    if f.get(key) is None:
        return {}
    m = f.mapping(key)
    out = {}
    for source in m:
        if source != "*":
            _eid(m, source, str(source))
        out[str(source)] = _hex_key(m, source, sizes=sizes)
    return out


def _text(f: Fields, key: str) -> str:
    """An optional text field: absent or empty (``key:`` alone, ``null``) is ""."""
    return "" if f.get(key) is None else _required(f.string(key))


def _required(v: T | None) -> T:
    """A getter's value that has a default or is required, hence never None."""
    assert v is not None
    return v
