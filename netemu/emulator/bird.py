"""BIRD 2's OSPF on every node (``ip_routing: {mode: bird, protocol: ospf}``).

One ``bird`` per node, inside its namespace, from Debian's ``bird2``, with its own
generated configuration; its control socket, pid file and log are in the node's state
directory, so ``birdc -s DIR/bird.ctl`` reaches it (:meth:`BirdDaemons.vtysh_argv`).

Every link interface (ISLs and GSL slots) is an OSPF ``ptp`` interface in area 0. Their
/32 addresses have no peer: BIRD still forms the adjacency, and installs its next hops as
``via <neighbour's interface address> onlink``. Only node addresses (10.0.0.0/16) go to
the kernel, with the node address as source (replies must find their way back: interface
addresses are not advertised as routes to other nodes). BIRD learns carrier changes from
the kernel's netlink notifications at once, so an adjacency drops when its link ends.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from netemu.emulator.frr import (
    START_WAVE,
    WAVE_TIMEOUT_S,
    FrrDaemons,
    FrrSettings,
    scaled,
    waves,
)
from netemu.emulator.layout import IFACE_NET, ip4
from netemu.errors import NetemuError

BIRD = "/usr/sbin/bird"
IFACE_PREFIX = f"{ip4(IFACE_NET)}/9"
"""Where the interface addresses are: BIRD keeps them out of its router LSAs
(:func:`bird_config`)."""
BIRDC = "birdc"
NETLINK_RX_BYTES = 8 << 20
"""The kernel protocol's netlink receive buffer: the default (``rmem_default``, 208 KiB)
overflows when hundreds of nodes change routes at once (``Kernel dropped some netlink
messages, will resync on next scan``), and the resync rewrites the table."""


def bird_missing() -> str | None:
    """Why BIRD cannot run here (None when it can)."""
    if not Path(BIRD).is_file():
        return f"BIRD is not installed ({BIRD} missing; apt-get install bird2)"
    if shutil.which(BIRDC) is None:
        return "birdc is not installed (apt-get install bird2)"
    return None


def bird_config(node_addr: str, ifnames: Sequence[str], s: FrrSettings) -> str:
    """bird.conf: OSPF on every link interface (point-to-point), the loopback a stub; only
    other nodes' addresses exported to the kernel, with the node address as source.

    The interface /32s are hidden stub networks. Otherwise a link interface coming up
    changes the router LSA (its stub, cost 0 while the carrier is down, gets the link's
    cost), and BIRD 2 originates an LSA at most every MinLSInterval (5 s, built in): the
    LSA with the new adjacency, a second later, waited out those 5 s. Nothing needs
    them: next hops are the neighbours' addresses from their hellos, and only node
    addresses go to the kernel."""
    ifaces = ", ".join(f'"{i}"' for i in ifnames) or '"-none-"'
    return f"""log stderr all;
router id {node_addr};
protocol device {{ scan time 60; }}
protocol kernel {{
  netlink rx buffer {NETLINK_RX_BYTES};
  ipv4 {{
    import none;
    export filter {{
      if net ~ [ 10.0.0.0/16{{32,32}} ] && net != {node_addr}/32 then {{
        krt_prefsrc = {node_addr};
        accept;
      }}
      reject;
    }};
  }};
}}
protocol ospf v2 ospf0 {{
  ipv4 {{ import all; export none; }};
  tick {s.tick_s};
  ecmp {"yes" if s.ecmp else "no"};
  area 0 {{
    stubnet {IFACE_PREFIX} {{ hidden yes; summary yes; }};
    interface "lo" {{ stub yes; }};
    interface {ifaces} {{
      type ptp;
      check link yes;
      hello {s.hello_s};
      dead {s.dead_s};
      retransmit {s.rxmt_s};
    }};
  }};
}}
"""


class BirdDaemons(FrrDaemons):
    """One ``bird`` per node; the same life cycle as :class:`FrrDaemons` (start, usage,
    stop with the configuration and log copied to the log directory). It runs as root:
    its socket and files are in a root-only state directory."""

    def daemons(self) -> list[str]:
        return ["bird"]

    def start(self, timeout_s: float = WAVE_TIMEOUT_S) -> None:
        """Write the configurations and start every node's bird in waves of
        :data:`~netemu.emulator.frr.START_WAVE` (each opens its control socket once its
        configuration has been read; the next wave starts then)."""
        why = bird_missing()
        if why:
            raise NetemuError(why)
        t0 = time.monotonic()
        self.settings = scaled(self.settings, len(self.nodes))
        for node, (addr, ifnames) in self.nodes.items():
            d = self.node_dir(node)
            d.mkdir(parents=True, exist_ok=True)
            (d / "bird.conf").write_text(bird_config(addr, ifnames, self.settings))
        for wave in waves(list(self.nodes), START_WAVE):
            for node in wave:
                self.procs[node] = [self._spawn(node, "bird")]
            self._wait_files(wave, ["bird.ctl"], timeout_s)
        self.start_s = time.monotonic() - t0

    def _spawn(self, node: str, daemon: str) -> subprocess.Popen:
        d = self.node_dir(node)
        # -f: in the foreground, so that stop() signals bird itself
        argv = [BIRD, "-f", "-c", str(d / "bird.conf"), "-s", str(d / "bird.ctl"),
                "-P", str(d / "bird.pid")]
        return self.spawn(node, argv, d / "bird.out")

    def vtysh_argv(self, node: str, *args: str) -> list[str]:
        """``birdc`` reaching ``node``'s bird (run it in the node's namespace)."""
        return [BIRDC, "-s", str(self.node_dir(node) / "bird.ctl"), *args]
