"""What the IP routes do, measured while the emulation runs, whoever sets them.

- :class:`PathSampler`: every ``sample_s`` wall seconds, for each probe pair, the path the
  kernels' routes take now (walked hop by hop with a route lookup in each node, as the
  packets go), its delay over the links up now, and the oracle's shortest path and delay
  over the same links; every ``routes_every`` samples the size of each node's main
  routing table; and every topology change. One JSON line each, in ``paths.jsonl``.
- probe flows (:mod:`netemu.emulator.udpprobe`): UDP at a fixed rate between the same
  pairs, through the data plane; each side logs what it sent and received.
- :class:`ControlCounters`: nftables counters, in every node, of the routing protocol's
  own packets (OSPF, BFD) sent, into ``control.json``.

:mod:`netemu.analysis.iproute` turns both into convergence, stretch and loss figures.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from netemu.emulator.events import LinkEvent
from netemu.emulator.layout import link_local, node_addr6
from netemu.emulator.netlink import Netlink
from netemu.emulator.netns import entered
from netemu.errors import NetemuError
from netemu.routing.iproutes import RouteComputer

if TYPE_CHECKING:
    from netemu.emulator.emulation import Emulation

class PathSampler:
    """Samples the paths of ``pairs`` (see the module docstring) into ``out/paths.jsonl``."""

    def __init__(self, emu: Emulation, pairs: Sequence[tuple[str, str]], out: Path, *,
                 sample_s: float = 0.2, routes_every: int = 10) -> None:
        assert emu.net is not None and emu.clock is not None, "start the emulation first"
        self.emu = emu
        self.pairs = list(pairs)
        self.sample_s = sample_s
        self.routes_every = routes_every
        lay = emu.layout
        self.nodes = list(lay.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        fs = emu.frr_settings
        self.ipv6 = fs is not None and fs.protocol == "ospf6"
        """OSPFv3 routes IPv6 only: the walk follows the IPv6 node addresses, and next
        hops are the neighbours' link-local addresses."""
        self.owner = {a: n for n, a in lay.node_addr.items()}
        self.owner.update({e.addr: e.node for e in lay.endpoints})
        if self.ipv6:
            self.owner.update({link_local(e.mac): e.node for e in lay.endpoints})
        self.oracle = RouteComputer(self.nodes, emu.ground)
        # sockets of our own: the driver's are used from its threads
        self.nl: dict[str, Netlink] = {}
        for n in self.nodes:
            with entered(emu.net.ns_fd[n]):
                self.nl[n] = Netlink(label=f"sampler {n}")
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "paths.jsonl"
        self._f = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed by stop()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._unsub = emu.subscribe(self._on_link)
        self.samples = 0
        self.link_wall_s = 0.0  # link-up time summed over links, wall seconds
        self._last_wall: float | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"netemu-paths-{emu.run}")

    def start(self) -> PathSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._unsub()
        self._write({"kind": "links", "link_wall_s": round(self.link_wall_s, 3)})
        with self._lock:
            self._f.close()
        for nl in self.nl.values():
            nl.close()

    def _write(self, obj: dict[str, Any]) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.write(json.dumps(obj, separators=(",", ":")) + "\n")

    def _on_link(self, ev: LinkEvent) -> None:
        if ev.kind in ("up", "down"):
            self._write({"kind": "change", "t_s": ev.t_s, "event": ev.kind, "a": ev.a,
                         "b": ev.b, "link": ev.link})

    def _loop(self) -> None:
        while not self._stop.wait(self.sample_s):
            if self.emu.finished:
                break
            with contextlib.suppress(Exception):  # a namespace torn down under us
                self.sample()

    def sample(self) -> None:
        t_s = self.emu.now_s()
        links = self.emu.links_now()
        now = time.monotonic()
        if self._last_wall is not None:
            self.link_wall_s += len(links) * (now - self._last_wall)
        self._last_wall = now
        delay: dict[tuple[int, int], float] = {}
        for (u, v), (w, _a, _b) in links.items():
            delay[(u, v)] = delay[(v, u)] = w
        table = self.oracle.compute(links)
        n = len(self.nodes)
        for src, dst in self.pairs:
            used = self.walk(src, dst)
            s, d = self.index[src], self.index[dst]
            orc = [src]
            v = s
            while v != d and table[v, d] >= 0 and len(orc) <= n:
                v = int(table[v, d]) % n
                orc.append(self.nodes[v])
            self._write({"kind": "path", "t_s": round(t_s, 4), "src": src, "dst": dst,
                         "path": used, "delay_s": self._delay(used, delay),
                         "oracle_path": orc if v == d else None,
                         "oracle_delay_s": self._delay(orc, delay) if v == d else None})
        if self.samples % self.routes_every == 0:
            family = socket.AF_INET6 if self.ipv6 else socket.AF_INET
            sizes = [self.nl[n].route_count(family) for n in self.nodes]
            self._write({"kind": "routes", "t_s": round(t_s, 4), "mean": sum(sizes) / n,
                         "max": max(sizes)})
        self.samples += 1

    def walk(self, src: str, dst: str) -> list[str] | None:
        """The nodes a packet from ``src`` to ``dst``'s node address goes through now
        (both included), following each node's kernel route; None if it is dropped (no
        route, a loop, a next hop that is not a neighbour)."""
        addr = self.emu.layout.node_addr[dst]
        if self.ipv6:
            addr = node_addr6(addr)
        path = [src]
        v = src
        while v != dst:
            r = self.nl[v].route_get(addr)
            if r is None:
                return None
            gw, _oif = r
            nxt = self.owner.get(gw) if gw is not None else dst
            if nxt is None or nxt in path:
                return None
            path.append(nxt)
            v = nxt
        return path

    def _delay(self, path: list[str] | None,
               delay: dict[tuple[int, int], float]) -> float | None:
        if path is None:
            return None
        total = 0.0
        for a, b in zip(path, path[1:], strict=False):
            w = delay.get((self.index[a], self.index[b]))
            if w is None:  # the route names a neighbour whose link is down
                return None
            total += w
        return round(total, 6)


class Probes:
    """UDP probe flows (:mod:`netemu.emulator.udpprobe`) between ``pairs``: a receiver in
    each destination, a sender in each source; logs ``out/probes/<i>.sent`` and
    ``<i>.recv`` for pair ``i`` of ``pairs.json``."""

    def __init__(self, emu: Emulation, pairs: Sequence[tuple[str, str]], out: Path, *,
                 interval_s: float = 0.05) -> None:
        self.emu = emu
        self.pairs = list(pairs)
        self.interval_s = interval_s
        self.dir = out / "probes"
        self.procs: list[subprocess.Popen] = []
        fs = emu.frr_settings
        self.ipv6 = fs is not None and fs.protocol == "ospf6"  # OSPFv3: over IPv6

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "pairs.json").write_text(json.dumps(
            {f"{i}": [src, dst] for i, (src, dst) in enumerate(self.pairs)}))
        py = [sys.executable, "-m", "netemu.emulator.udpprobe"]
        for i, (_src, dst) in enumerate(self.pairs):  # a port per pair
            self.procs.append(self.emu.popen(dst, [*py, "recv", str(40000 + i),
                                                   str(self.dir / f"{i}.recv"),
                                                   *(["ipv6"] if self.ipv6 else [])]))
        # the first probe leaves once every receiver is bound (it opens its log then):
        # on a busy machine a Python process can take seconds to start
        deadline = time.monotonic() + 60
        while not all((self.dir / f"{i}.recv").exists() for i in range(len(self.pairs))):
            if time.monotonic() > deadline:
                raise NetemuError("the probe receivers did not start within 60 s")
            time.sleep(0.05)
        for i, (src, dst) in enumerate(self.pairs):
            addr = self.emu.node_addr6(dst) if self.ipv6 else self.emu.node_addr(dst)
            self.procs.append(self.emu.popen(src, [
                *py, "send", addr, str(40000 + i), str(self.interval_s),
                str(self.dir / f"{i}.sent")]))

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=2)


CONTROL_NFT = """table inet netemu_ctl {
  counter ospf { }
  counter bfd { }
  chain out {
    type filter hook output priority 0; policy accept;
    meta l4proto 89 counter name "ospf"
    udp dport { 3784, 3785, 4784 } counter name "bfd"
  }
}
"""
"""Counts what a node sends of OSPF (IP protocol 89: OSPFv2, and OSPFv3 over IPv6) and BFD
(UDP 3784/3785/4784), IP packets from their IP header on."""


def isis_nft(ifnames: Sequence[str]) -> str:
    """Counts the IS-IS frames a node sends on its link interfaces: IS-IS is not IP, so
    the ``inet`` table never sees it; a ``netdev`` egress chain sees every frame. IS-IS
    frames are 802.3 (a length, not an EtherType, after the addresses) with the ISO LLC
    header FE FE 03; counted whole, Ethernet header included."""
    devs = ", ".join(f'"{i}"' for i in ifnames)
    return f"""table netdev netemu_ctl_l2 {{
  counter isis {{ }}
  chain out {{
    type filter hook egress devices = {{ {devs} }} priority 0; policy accept;
    @ll,96,16 < 0x0600 @ll,112,16 0xfefe counter name "isis"
  }}
}}
"""


class ControlCounters:
    """The routing protocol's packets sent by every node, counted by nftables in its
    namespace; :meth:`stop` sums them into ``out/control.json``."""

    def __init__(self, emu: Emulation, out: Path) -> None:
        self.emu = emu
        self.path = out / "control.json"

    def start(self) -> None:
        assert self.emu.net is not None
        lay = self.emu.layout
        for n in lay.nodes:
            rules = CONTROL_NFT
            ifnames = [lay.endpoints[e].ifname for e in lay.node_endpoints[n]]
            if self.isis and ifnames:
                rules += isis_nft(ifnames)
            subprocess.run(self.emu.net.exec_argv(n, ["nft", "-f", "-"]), input=rules,
                           text=True, check=True, capture_output=True, timeout=30)

    @property
    def isis(self) -> bool:
        fs = self.emu.frr_settings
        return fs is not None and fs.protocol == "isis"

    def stop(self) -> None:
        net = self.emu.net
        if net is None:
            return
        total = {f"{c}_{k}": 0 for c in ("ospf", "bfd", "isis") for k in ("bytes", "packets")}
        tables = [("inet", "netemu_ctl")] + ([("netdev", "netemu_ctl_l2")] if self.isis else [])
        for n in self.emu.layout.nodes:
            for family, table in tables:
                r = subprocess.run(net.exec_argv(n, ["nft", "-j", "list", "counters", "table",
                                                     family, table]),
                                   text=True, capture_output=True, timeout=30)
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    for item in json.loads(r.stdout)["nftables"]:
                        c = item.get("counter")
                        if c and c.get("name") in ("ospf", "bfd", "isis"):
                            total[f"{c['name']}_bytes"] += int(c["bytes"])
                            total[f"{c['name']}_packets"] += int(c["packets"])
        out: dict[str, object] = dict(total)
        self.path.write_text(json.dumps(out) + "\n")
