"""FRR routing daemons on every node (``ip_routing: {mode: frr, protocol: ospf | isis}``).

Each node runs zebra and ospfd or isisd (and bfdd with ``bfd: true``) inside its namespace, from
Debian's FRR 8.x, with its own generated configuration. Many instances coexist because
every path a daemon uses is given on its command line: the zebra socket (``-z``), the vty
sockets (``--vty_socket``), the pid files (``-i``) and the log (``--log file:``) all live
in the node's state directory; vty TCP ports are off (``-P 0``). ``vtysh --vty_socket DIR``
reaches them (:meth:`FrrDaemons.vtysh_argv`).

The configuration covers every interface of the node — its ISL interfaces and its GSL
slots, whichever peer a slot has now — as OSPF point-to-point links in area 0. Their /32
addresses make them unnumbered links (ospfd installs its next hops *onlink*). The node
address on the loopback is advertised as a passive stub. IS-IS (level 2 only, wide
metrics) is set up the same way: point-to-point circuits, the loopback passive (the
interface /32s are advertised too). Carrier changes reach the protocol daemon
through zebra as interface up/down, so an adjacency drops when its link ends, not a dead
interval later.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from netemu.emulator.layout import node_addr6
from netemu.errors import NetemuError
from netemu.plan.iprouting import RETRANSMIT_S, IpRouting

FRR_DIR = Path("/usr/lib/frr")
"""Where Debian's ``frr`` package puts its daemons."""
FRR_USER = "frr"
"""The user the daemons run as (Debian's package creates it, in the ``frrvty`` group)."""


@dataclass(frozen=True)
class FrrSettings:
    """The protocol (``ospf`` or ``isis``) and its timers, as the scenario gives
    them."""

    hello_s: int = 1
    dead_s: int = 4
    spf_delay_ms: int = 0
    spf_hold_ms: int = 50
    spf_max_hold_ms: int = 1000
    bfd: bool = False
    retransmit_s: int | None = None
    """None: the daemon's :data:`~netemu.plan.iprouting.RETRANSMIT_S`."""
    protocol: str = "ospf"
    daemon: str = "frr"
    """``frr``, or ``bird`` (:mod:`netemu.emulator.bird`: hello, dead and retransmit)."""
    lsa_hold_ms: int = 0
    """ospfd's ``timers throttle lsa all``: least time between two originations of an LSA."""
    tick_s: int = 1
    """BIRD's ``tick``: the period of its SPF runs and LSA originations."""
    ecmp: int = 1
    """1: equal-cost paths as multipath routes; 0: one next hop (fewer route changes)."""
    explicit: frozenset[str] | None = None
    """The keys the scenario set; the others may be :func:`scaled`. None: every value is
    as given (a Python caller's settings)."""

    @property
    def rxmt_s(self) -> int:
        """The retransmit interval in force."""
        return self.retransmit_s or RETRANSMIT_S[self.daemon]

    @classmethod
    def of(cls, ipr: IpRouting) -> FrrSettings:
        """The settings of an ``ip_routing:`` section in mode frr or bird."""
        return cls(ipr.hello_s, ipr.dead_s, ipr.spf_delay_ms, ipr.spf_hold_ms,
                   ipr.spf_max_hold_ms, ipr.bfd, ipr.retransmit_s, ipr.protocol, ipr.mode,
                   explicit=ipr.explicit)


SCALE_NODES = 150
"""From this many nodes on, :func:`scaled` timers replace the defaults."""
LARGE: dict[str, int] = {"hello_s": 2, "dead_s": 30, "spf_delay_ms": 200, "spf_hold_ms": 1000,
                         "spf_max_hold_ms": 5000, "lsa_hold_ms": 1000, "tick_s": 2, "ecmp": 0}
"""The defaults from :data:`SCALE_NODES` nodes on (docs/routing-protocols.md says why)."""


def scaled(s: FrrSettings, nodes: int) -> FrrSettings:
    """``s`` with :data:`LARGE` timers for those the scenario left out, on a network of
    :data:`SCALE_NODES` nodes or more; the scenario's own values always stay."""
    if s.explicit is None or nodes < SCALE_NODES:
        return s
    new: dict[str, Any] = {k: v for k, v in LARGE.items() if k not in s.explicit}
    if "hello_s" in s.explicit:
        new.pop("dead_s", None)  # the section's default follows its hello (4 hellos)
    elif "dead_s" in s.explicit:
        new["hello_s"] = max(1, min(new["hello_s"], s.dead_s - 1))
    return replace(s, **new)


def frr_missing(daemon: str = "frr") -> str | None:
    """Why FRR (or with ``daemon="bird"``, BIRD) cannot run here (None when it can)."""
    if daemon == "bird":
        from netemu.emulator.bird import bird_missing

        return bird_missing()
    for exe in ("zebra", "ospfd", "ospf6d", "isisd"):
        if not (FRR_DIR / exe).is_file():
            return f"FRR is not installed ({FRR_DIR / exe} missing; apt-get install frr)"
    if shutil.which("vtysh") is None:
        return "vtysh is not installed (apt-get install frr)"
    return None


def zebra_config(node: str, node_addr: str, protocol: str = "ospf") -> str:
    """zebra's configuration: routes from the protocol get the node address as their
    source, so that replies find their way back (interface addresses are not advertised).
    OSPFv3's routes are IPv6: the source is the IPv6 node address."""
    if protocol == "ospf6":
        return (f"frr defaults traditional\nhostname {node}\nipv6 forwarding\n!\n"
                f"route-map NODE-SRC permit 10\n set src {node_addr6(node_addr)}\n!\n"
                f"ipv6 protocol ospf6 route-map NODE-SRC\n!\n")
    return (f"frr defaults traditional\nhostname {node}\nno ipv6 forwarding\n!\n"
            f"route-map NODE-SRC permit 10\n set src {node_addr}\n!\n"
            f"ip protocol {protocol} route-map NODE-SRC\n!\n")


def ospf_config(node: str, router_id: str, ifnames: Sequence[str], s: FrrSettings) -> str:
    """ospfd's configuration: every link interface point-to-point, the loopback passive."""
    lines = ["frr defaults traditional", f"hostname {node}", "!"]
    for ifn in ifnames:
        lines += [f"interface {ifn}", " ip ospf network point-to-point", " ip ospf area 0",
                  f" ip ospf hello-interval {s.hello_s}",
                  f" ip ospf dead-interval {s.dead_s}",
                  f" ip ospf retransmit-interval {s.rxmt_s}"]
        if s.bfd:
            lines.append(" ip ospf bfd")
        lines.append("!")
    lines += ["interface lo", " ip ospf area 0", " ip ospf passive", "!",
              "router ospf", f" ospf router-id {router_id}",
              f" timers throttle spf {s.spf_delay_ms} {s.spf_hold_ms} {s.spf_max_hold_ms}",
              f" timers throttle lsa all {s.lsa_hold_ms}", " timers lsa min-arrival 0"]
    lines += [] if s.ecmp else [" maximum-paths 1"]
    lines.append("!")
    return "\n".join(lines) + "\n"


def ospf6_config(node: str, router_id: str, ifnames: Sequence[str], s: FrrSettings) -> str:
    """ospf6d's configuration (OSPFv3): as :func:`ospf_config`; the neighbours are
    reached at their link-local addresses, the loopback (with the IPv6 node address) is
    passive. No BFD."""
    lines = ["frr defaults traditional", f"hostname {node}", "!"]
    for ifn in ifnames:
        lines += [f"interface {ifn}", " ipv6 ospf6 area 0", " ipv6 ospf6 network point-to-point",
                  f" ipv6 ospf6 hello-interval {s.hello_s}",
                  f" ipv6 ospf6 dead-interval {s.dead_s}",
                  f" ipv6 ospf6 retransmit-interval {s.rxmt_s}", "!"]
    lines += ["interface lo", " ipv6 ospf6 area 0", " ipv6 ospf6 passive", "!",
              "router ospf6", f" ospf6 router-id {router_id}",
              f" timers throttle spf {s.spf_delay_ms} {s.spf_hold_ms} {s.spf_max_hold_ms}",
              " timers lsa min-arrival 0", "!"]
    return "\n".join(lines) + "\n"


def isis_system_id(node_addr: str) -> str:
    """The IS-IS system id of a node address: 10.0.0.1 → 0100.0000.0001 (each octet in
    three digits, as is customary)."""
    digits = "".join(f"{int(o):03d}" for o in node_addr.split("."))
    return ".".join(digits[i:i + 4] for i in range(0, 12, 4))


def isis_config(node: str, node_addr: str, ifnames: Sequence[str], s: FrrSettings) -> str:
    """isisd's configuration: one level-2 area, every link interface a point-to-point
    circuit, the loopback passive. The interfaces' /32s are advertised too (8.4's
    ``advertise-passive-only`` left them in the LSPs).
    The router settings come before ``is-type``: its change schedules the first regeneration
    with the interval set at that moment (FRR's default is 30 s: LSPs stay empty that long)."""
    mult = max(2, min(100, -(-s.dead_s // s.hello_s)))  # dead interval in hellos
    lines = ["frr defaults traditional", f"hostname {node}", "!", "router isis 1",
             " lsp-gen-interval 1", " metric-style wide",
             f" spf-interval {max(1, -(-s.spf_hold_ms // 1000))}",
             f" net 49.0001.{isis_system_id(node_addr)}.00", " is-type level-2-only", "!",
             "interface lo", " ip router isis 1", " isis passive", "!"]
    for ifn in ifnames:
        lines += [f"interface {ifn}", " ip router isis 1", " isis network point-to-point",
                  f" isis hello-interval {s.hello_s}", f" isis hello-multiplier {mult}"]
        if s.bfd:
            lines.append(" isis bfd")
        lines.append("!")
    return "\n".join(lines) + "\n"


def bfd_config(node: str) -> str:
    return f"frr defaults traditional\nhostname {node}\n!\n"


NETLINK_RX_BYTES = 8 << 20
"""zebra's netlink receive buffer (``-s``), as BIRD's: the kernel drops notifications
that do not fit, and the daemon then rereads the whole table."""
START_WAVE = 16
"""Nodes whose daemons start at a time (:meth:`FrrDaemons.start`)."""
WAVE_TIMEOUT_S = 60.0
"""How long a wave's daemons may take to open their sockets: a wave's zebras (and birds)
wait for the kernel's RTNL lock behind every other namespace's route writes (10 s was
too short for IS-IS at 488 nodes)."""


def waves(items: Sequence[str], size: int) -> list[list[str]]:
    """``items`` in consecutive groups of at most ``size``."""
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


Spawn = Callable[[str, list[str], Path], subprocess.Popen]
"""``spawn(node, argv, log)``: start ``argv`` in ``node``'s namespace, output to ``log``."""


class FrrDaemons:
    """zebra + ospfd or isisd (+ bfdd) per node. ``state_dir/<node>/`` holds each node's
    configurations, sockets, pid files and logs while they run (short paths: a Unix
    socket's path has at most 107 bytes; a directory the ``frr`` user can reach, which a
    run directory under a private home may not be). :meth:`stop` copies the
    configurations and logs to ``log_dir/<node>/`` when one is given."""

    def __init__(self, nodes: dict[str, tuple[str, list[str]]], state_dir: Path,
                 settings: FrrSettings, spawn: Spawn, *, log_dir: Path | None = None) -> None:
        """``nodes``: node → (its node address, also the router id; its link interfaces)."""
        self.nodes = nodes
        self.state_dir = state_dir
        self.log_dir = log_dir
        self.settings = settings
        self.spawn = spawn
        self.procs: dict[str, list[subprocess.Popen]] = {}
        self.final_usage: dict[str, float] = {}
        self.start_s: float | None = None
        """Wall seconds :meth:`start` took."""

    def daemons(self) -> list[str]:
        proto = {"isis": "isisd", "ospf6": "ospf6d"}.get(self.settings.protocol, "ospfd")
        return ["zebra", proto] + (["bfdd"] if self.settings.bfd else [])

    def node_dir(self, node: str) -> Path:
        """Where ``node``'s sockets are (``vtysh --vty_socket``)."""
        return self.state_dir / node


    def start(self, timeout_s: float = WAVE_TIMEOUT_S) -> None:
        """Write the configurations, then start the daemons in waves of :data:`START_WAVE`
        nodes: a wave's zebras, once each one's socket exists (a client that finds none
        retries only 10 s later) its protocol daemons, and the next wave once those have
        opened their vty sockets. Hundreds of daemons started at once on a few cores
        starve each other (and the emulator) for minutes; a wave at a time they come up
        in a steady stream. ``timeout_s`` is per wave (:data:`WAVE_TIMEOUT_S`)."""
        why = frr_missing()
        if why:
            raise NetemuError(why)
        t0 = time.monotonic()
        self.settings = scaled(self.settings, len(self.nodes))
        for node, (rid, ifnames) in self.nodes.items():
            d = self.node_dir(node)
            d.mkdir(parents=True, exist_ok=True)
            shutil.chown(d, FRR_USER, FRR_USER)  # the daemons drop to this user
            (d / "zebra.conf").write_text(zebra_config(node, rid, self.settings.protocol))
            if self.settings.protocol == "isis":
                (d / "isisd.conf").write_text(isis_config(node, rid, ifnames, self.settings))
            elif self.settings.protocol == "ospf6":
                (d / "ospf6d.conf").write_text(ospf6_config(node, rid, ifnames, self.settings))
            else:
                (d / "ospfd.conf").write_text(ospf_config(node, rid, ifnames, self.settings))
            if self.settings.bfd:
                (d / "bfdd.conf").write_text(bfd_config(node))
        daemons = self.daemons()
        for wave in waves(list(self.nodes), START_WAVE):
            for node in wave:
                self.procs[node] = [self._spawn(node, daemons[0])]
            self._wait_files(wave, [self._ready_file(daemons[0])], timeout_s)
            for node in wave:
                for daemon in daemons[1:]:
                    self.procs[node].append(self._spawn(node, daemon))
            self._wait_files(wave, [self._ready_file(d) for d in daemons[1:]], timeout_s)
        self.start_s = time.monotonic() - t0

    def timers(self) -> dict[str, int]:
        """The timers in force (the scenario's, or :func:`scaled` defaults)."""
        s = self.settings
        return {"hello_s": s.hello_s, "dead_s": s.dead_s, "retransmit_s": s.rxmt_s,
                "spf_delay_ms": s.spf_delay_ms, "spf_hold_ms": s.spf_hold_ms,
                "spf_max_hold_ms": s.spf_max_hold_ms, "lsa_hold_ms": s.lsa_hold_ms,
                "tick_s": s.tick_s, "ecmp": s.ecmp}

    def _ready_file(self, daemon: str) -> str:
        """The file a daemon creates once it is up: zebra's client socket, the others'
        vty sockets."""
        return "zserv.api" if daemon == "zebra" else f"{daemon}.vty"

    def _wait_files(self, nodes: Sequence[str], names: Sequence[str],
                    timeout_s: float) -> None:
        """Wait until every node's directory has all ``names``; an exited daemon or the
        timeout raises, naming the nodes."""
        deadline = time.monotonic() + timeout_s
        waiting = set(nodes)
        while waiting:
            waiting = {n for n in waiting
                       if not all((self.node_dir(n) / f).exists() for f in names)}
            dead = self.dead()
            if dead:
                raise NetemuError(f"{self.settings.daemon} daemons exited at start: "
                                  f"{', '.join(dead[:5])} (see {self.state_dir}/<node>/*.out)")
            if waiting and time.monotonic() > deadline:
                raise NetemuError(f"{' and '.join(names)} not there after {timeout_s:g} s "
                                  f"on {', '.join(sorted(waiting)[:5])}")
            if waiting:
                time.sleep(0.02)

    def _spawn(self, node: str, daemon: str) -> subprocess.Popen:
        d = logs = self.node_dir(node)
        argv = [str(FRR_DIR / daemon), "-f", str(logs / f"{daemon}.conf"),
                "-i", str(d / f"{daemon}.pid"), "--vty_socket", str(d),
                "-P", "0", "-u", FRR_USER, "-g", FRR_USER,
                "--log", f"file:{logs / f'{daemon}.log'}", "--log-level", "info"]
        if daemon in ("zebra", "ospfd", "ospf6d", "isisd", "bfdd"):
            argv += ["-z", str(d / "zserv.api")]
        if daemon == "zebra":  # room for the route notifications of a large network
            argv += ["-s", str(NETLINK_RX_BYTES)]
        if daemon == "bfdd":
            argv += ["--bfdctl", str(d / "bfdd.sock")]
        return self.spawn(node, argv, logs / f"{daemon}.out")

    def vtysh_argv(self, node: str, *args: str) -> list[str]:
        """``vtysh`` reaching ``node``'s daemons (run it in the node's namespace)."""
        return ["vtysh", "--vty_socket", str(self.node_dir(node)), *args]

    def dead(self) -> list[str]:
        """``node:daemon`` for every daemon that has exited."""
        out = []
        for node, procs in self.procs.items():
            for daemon, p in zip(self.daemons(), procs, strict=False):
                if p.poll() is not None:
                    out.append(f"{node}:{daemon}")
        return out

    def usage(self) -> dict[str, float]:
        """CPU seconds and proportional set size (PSS) of the running daemons, summed."""
        tick = os.sysconf("SC_CLK_TCK")
        cpu = pss_kib = 0.0
        n = 0
        for p in (p for ps in self.procs.values() for p in ps):
            try:
                stat = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu += (int(stat[11]) + int(stat[12])) / tick  # utime, stime
                for line in Path(f"/proc/{p.pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        pss_kib += int(line.split()[1])
                n += 1
            except (OSError, IndexError, ValueError):
                continue  # exited
        return {"daemons": n, "cpu_s": round(cpu, 2), "pss_bytes": int(pss_kib * 1024)}

    def stop(self) -> None:
        """SIGTERM to all, then SIGKILL to what is left after 2 s; the configurations and
        logs copied to the log directory."""
        self.final_usage = self.usage()
        procs = [p for ps in self.procs.values() for p in ps]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=2)
        if self.log_dir is not None:
            for node in self.procs:
                out = self.log_dir / node
                out.mkdir(parents=True, exist_ok=True)
                for f in self.node_dir(node).iterdir():
                    if f.suffix in (".conf", ".log", ".out") and f.is_file():
                        shutil.copyfile(f, out / f.name)
