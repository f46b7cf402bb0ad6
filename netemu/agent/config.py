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
      - {name: gs1, ipn: 10, cl: tcpcl, address: "10.0.0.2:4556"}
      - {name: sat2, ipn: 2, cl: udpcl, address: "10.0.1.2:4556", path_mtu: 1500}
    keys: {bib: {"1": "1a2b..."}}                 # BPSec keys by key id, hex; passed to BPA
    keepalive_s: 15
    segment_mru: 16777216
    store_max_bytes: 1073741824
    log: /var/log/netemu/sat1.jsonl               # JSON lines; default stderr

Every bad value raises :class:`netemu.errors.InputError` naming the file and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netemu.errors import InputError
from netemu.runtime.env import socket_dir

CLS = ("tcpcl", "udpcl", "mtcp")


@dataclass(frozen=True)
class NeighbourConfig:
    """A node this agent can reach directly, and how."""

    name: str
    ipn: int
    cl: str = "tcpcl"
    address: str = ""  # "host:port"; empty: only the peer connects to us
    path_mtu: int = 1500  # for udpcl

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host_port(self.address, default_port=4556)


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
    transfer_mru: int = 1 << 32
    store_max_bytes: int = 1 << 30
    durability: str = "disk"  # store: "disk" (fsync per group commit) or "process"
    default_lifetime_s: float = 86400.0
    log: str | None = None
    source: str = "<config>"

    def __post_init__(self) -> None:
        if not self.app_socket:
            self.app_socket = default_socket_path(self.node)
        if not self.store:
            self.store = str(Path(self.app_socket).parent / "store.sqlite")

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
        try:
            text = p.read_text()
        except OSError as e:
            raise InputError(f"cannot read agent config: {e.strerror}", source=str(p)) from e
        obj = _parse(text, str(p))
        if isinstance(obj, dict) and "nodes" in obj and isinstance(obj["nodes"], dict):
            if node is None:
                raise InputError("config holds several nodes; say which with --node",
                                 source=str(p), field="nodes")
            if node not in obj["nodes"]:
                raise InputError(f"node {node!r} not in config (has: "
                                 f"{', '.join(sorted(obj['nodes']))})", source=str(p),
                                 field="nodes")
            shared = {k: v for k, v in obj.items() if k != "nodes"}
            obj = {**shared, **obj["nodes"][node], "node": node}
        cfg = cls.from_obj(obj, source=str(p))
        if node is not None and cfg.node != node:
            raise InputError(f"config is for node {cfg.node!r}, not {node!r}", source=str(p),
                             field="node")
        # Paths in the file are relative to the file.
        if cfg.contact_plan and not Path(cfg.contact_plan).is_absolute():
            cfg.contact_plan = str((p.parent / cfg.contact_plan).resolve())
        return cfg

    @classmethod
    def from_obj(cls, obj: Any, *, source: str = "<config>") -> AgentConfig:
        if not isinstance(obj, dict):
            raise InputError("agent config must be a mapping", source=source)
        known = {"node", "ipn", "listen", "app_socket", "store", "contact_plan", "follow_plan",
                 "routing", "neighbours", "keys", "keepalive_s", "segment_mru",
                 "transfer_mru", "store_max_bytes", "durability", "default_lifetime_s", "log"}
        for k in obj:
            if k not in known:
                raise InputError(f"unknown key (known: {', '.join(sorted(known))})",
                                 source=source, field=str(k))
        g = _Getter(obj, source)
        listen = obj.get("listen", {}) or {}
        if not isinstance(listen, dict):
            raise InputError("must be a mapping of cl → [host:port]", source=source,
                             field="listen")
        for k in listen:
            if k not in CLS:
                raise InputError(f"unknown convergence layer {k!r} (known: {', '.join(CLS)})",
                                 source=source, field=f"listen.{k}")
        lists = {}
        for cl, default in (("tcpcl", ["0.0.0.0:4556"]), ("udpcl", ["0.0.0.0:4556"]),
                            ("mtcp", [])):
            val = listen.get(cl, default)
            if isinstance(val, str):
                val = [val]
            if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
                raise InputError("must be a list of host:port", source=source,
                                 field=f"listen.{cl}")
            for i, v in enumerate(val):
                _checked_host_port(v, source, f"listen.{cl}[{i}]")
            lists[cl] = val
        neighbours = []
        raw_n = obj.get("neighbours", []) or []
        if not isinstance(raw_n, list):
            raise InputError("must be a list", source=source, field="neighbours")
        for i, n in enumerate(raw_n):
            f = f"neighbours[{i}]"
            if not isinstance(n, dict):
                raise InputError("must be a mapping", source=source, field=f)
            ng = _Getter(n, source, prefix=f + ".")
            cl = ng.str("cl", "tcpcl")
            if cl not in CLS:
                raise InputError(f"unknown convergence layer {cl!r} (known: {', '.join(CLS)})",
                                 source=source, field=f + ".cl")
            addr = ng.str("address", "")
            if addr:
                _checked_host_port(addr, source, f + ".address")
            neighbours.append(NeighbourConfig(ng.str("name"), ng.int("ipn", minimum=1), cl, addr,
                                        ng.int("path_mtu", 1500, minimum=68)))
        names = [n.name for n in neighbours]
        dup = {x for x in names if names.count(x) > 1}
        if dup:
            raise InputError(f"neighbour listed twice: {', '.join(sorted(dup))}", source=source,
                             field="neighbours")
        routing = obj.get("routing", {"algorithm": "cgr"})
        if isinstance(routing, str):
            routing = {"algorithm": routing}
        if not isinstance(routing, dict) or not isinstance(routing.get("algorithm"), str):
            raise InputError("must be {algorithm: NAME, ...}", source=source, field="routing")
        keys = obj.get("keys", {}) or {}
        if not isinstance(keys, dict):
            raise InputError("must be a mapping", source=source, field="keys")
        return cls(
            node=g.str("node"),
            ipn=g.int("ipn", minimum=1),
            listen_tcpcl=lists["tcpcl"],
            listen_udpcl=lists["udpcl"],
            listen_mtcp=lists["mtcp"],
            app_socket=g.str("app_socket", ""),
            store=g.str("store", ""),
            contact_plan=g.str("contact_plan", "") or None,
            follow_plan=g.bool("follow_plan", True),
            routing=routing,
            neighbours=neighbours,
            keys=keys,
            keepalive_s=g.int("keepalive_s", 15, minimum=0, maximum=0xFFFF),
            segment_mru=g.int("segment_mru", 16 * 1024 * 1024, minimum=64),
            transfer_mru=g.int("transfer_mru", 1 << 32, minimum=64),
            store_max_bytes=g.int("store_max_bytes", 1 << 30, minimum=1024),
            durability=_choice(g.str("durability", "disk"), ("disk", "process"), source,
                               "durability"),
            default_lifetime_s=g.float("default_lifetime_s", 86400.0),
            log=g.str("log", "") or None,
            source=source,
        )

    @classmethod
    def for_plan_node(cls, plan: Any, node: str, addresses: dict[str, str], *,
                      plan_path: str | None = None, run_dir: str | None = None,
                      routing: dict[str, Any] | None = None, cl: str = "tcpcl",
                      **overrides: Any) -> AgentConfig:
        """The config of ``node`` in an emulation: its neighbours are the nodes it has a
        contact with in ``plan`` (a :class:`netemu.plan.contacts.ContactPlan`), dialled at
        ``addresses[name]`` (``"10.0.0.2"`` or ``"10.0.0.2:4556"``; a neighbour without
        an address only connects to us). ``run_dir`` holds the app socket and store."""
        if node not in plan.nodes:
            raise InputError(f"node {node!r} is not in the contact plan", field="node")
        peers = sorted({c.dst for c in plan.contacts if c.src == node}
                       | {c.src for c in plan.contacts if c.dst == node})
        neighbours = []
        for name in peers:
            addr = addresses.get(name, "")
            if addr and ":" not in addr.strip("[]").split("]")[-1] and not addr.startswith("["):
                addr = f"{addr}:4556"
            neighbours.append(NeighbourConfig(name, plan.nodes[name].ipn, cl, addr))
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
                 "path_mtu": n.path_mtu} for n in self.neighbours
            ],
            "keys": self.keys, "keepalive_s": self.keepalive_s,
            "segment_mru": self.segment_mru, "transfer_mru": self.transfer_mru,
            "store_max_bytes": self.store_max_bytes, "durability": self.durability,
            "default_lifetime_s": self.default_lifetime_s, "log": self.log,
        }

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_obj(), indent=1) + "\n")


def default_socket_path(node: str) -> str:
    """Where node ``node``'s agent listens unless its config says otherwise:
    ``<socket dir>/<node>/bp.sock`` (``$NETEMU_SOCKET_DIR``, else ``/run/netemu``)."""
    return str(socket_dir() / node / "bp.sock")


def _choice(v: str, options: tuple[str, ...], source: str, field_: str) -> str:
    if v not in options:
        raise InputError(f"must be one of {', '.join(options)}, got {v!r}", source=source,
                         field=field_)
    return v


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


def _checked_host_port(text: str, source: str, field_: str) -> tuple[str, int]:
    try:
        host, port = split_host_port(text)
    except ValueError:
        raise InputError(f"not host:port: {text!r}", source=source, field=field_) from None
    if not host or not 0 <= port <= 65535:
        raise InputError(f"not host:port: {text!r}", source=source, field=field_)
    return host, port


def _parse(text: str, source: str) -> Any:
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"invalid JSON: {e.msg}", source=source, line=e.lineno) from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(f"invalid YAML: {getattr(e, 'problem', e)}", source=source,
                         line=mark.line + 1 if mark else None) from None


class _Getter:
    def __init__(self, obj: dict, source: str, prefix: str = "") -> None:
        self.obj, self.source, self.prefix = obj, source, prefix

    def _err(self, key: str, msg: str) -> InputError:
        return InputError(msg, source=self.source, field=self.prefix + key)

    def str(self, key: str, default: str | None = None) -> str:
        v = self.obj.get(key)
        if v is None:
            v = default
        if v is None:
            raise self._err(key, "required")
        if not isinstance(v, str):
            raise self._err(key, f"must be a string, got {v!r}")
        return v

    def int(self, key: str, default: int | None = None, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
        v = self.obj.get(key, default)
        if v is None:
            raise self._err(key, "required")
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._err(key, f"must be an integer, got {v!r}")
        if minimum is not None and v < minimum:
            raise self._err(key, f"must be ≥ {minimum}, got {v}")
        if maximum is not None and v > maximum:
            raise self._err(key, f"must be ≤ {maximum}, got {v}")
        return v

    def float(self, key: str, default: float) -> float:
        v = self.obj.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
            raise self._err(key, f"must be a positive number, got {v!r}")
        return float(v)

    def bool(self, key: str, default: bool) -> bool:
        v = self.obj.get(key, default)
        if not isinstance(v, bool):
            raise self._err(key, f"must be true or false, got {v!r}")
        return v
