"""The link shapers by name, and the probe that picks one.

- ``relay`` (:class:`~netemu.emulator.relayshaper.RelayShaper`): userspace relay workers,
  parameters through a shared-memory table. Works on any kernel with veth and AF_PACKET.
- ``netem`` (:class:`~netemu.emulator.netem.NetemShaper`): tc netem + mirred, changed in
  place through netlink. Needs sch_netem.

``probe_netem()`` tries a netem qdisc in a scratch namespace; ``make_shaper("auto")``
takes netem when it works and the relay otherwise, and says why.
"""

from __future__ import annotations

import subprocess

from netemu.emulator.netem import NetemShaper
from netemu.emulator.network import Network
from netemu.emulator.relayshaper import RelayShaper
from netemu.emulator.shaper import Shaper, ShaperError


def probe_netem(scratch_ns: str) -> str | None:
    """None when a netem qdisc can be created (in namespace ``scratch_ns``), else why not."""
    p = subprocess.run(["tc", "-n", scratch_ns, "qdisc", "add", "dev", "lo", "root", "netem",
                        "delay", "1ms"], capture_output=True, text=True)
    if p.returncode == 0:
        subprocess.run(["tc", "-n", scratch_ns, "qdisc", "del", "dev", "lo", "root"],
                       capture_output=True)
        return None
    return (p.stderr.strip().splitlines() or ["tc failed"])[0]


def make_shaper(kind: str, net: Network, **opts: object) -> tuple[Shaper, str]:
    """The shaper for ``kind`` ("auto", "relay", "netem") and a line saying why."""
    if kind not in ("auto", "relay", "netem", "mirred"):
        raise ShaperError(f"unknown shaper {kind!r}: use auto, relay or netem")
    if kind == "mirred":  # tests: the kernel backend's wiring, without netem
        return NetemShaper(net, netem=False), "mirred (kernel wiring only: no delay, loss, rate)"
    if kind == "relay":
        return RelayShaper(net, **opts), "relay (requested)"  # type: ignore[arg-type]
    why = probe_netem(net.shaper_ns)
    if why is None:
        return NetemShaper(net), "netem (kernel has sch_netem)" + (
            "" if kind == "auto" else " (requested)")
    if kind == "netem":
        raise ShaperError(f"--shaper netem: this kernel cannot create a netem qdisc ({why}); "
                          "use --shaper relay (or auto) here, or run on a kernel with sch_netem")
    return RelayShaper(net, **opts), f"relay (netem unavailable: {why})"  # type: ignore[arg-type]
