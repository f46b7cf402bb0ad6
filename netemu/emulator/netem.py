"""The kernel shaper: tc netem for delay, loss and rate; tc mirred to connect links.

Same topology as the relay (every host interface has a twin ``e<i>`` in the shaper
namespace), with the kernel doing the work:

- each host interface's egress has a root netem qdisc (handle 1:) whose delay, loss, rate
  and limit are *changed in place* (``RTM_NEWQDISC`` without create, i.e. ``tc qdisc
  change``) — never deleted and recreated, so queued frames survive an update;
- each twin has an ingress qdisc with one filter (prio 1, handle 1) whose action
  (u32, matching every frame) is ``mirred egress redirect`` to the peer's twin, or ``drop`` while the direction is
  not connected; a GSL handover replaces that filter in place (``tc filter replace``).

Netlink through pyroute2, one socket per namespace. Needs sch_netem (the Vagrant VM, most
Linux machines). ``netem=False`` wires the links with mirred but applies no netem (tests
of the wiring on kernels without netem).
"""

from __future__ import annotations

import contextlib

from netemu.emulator.network import Network
from netemu.emulator.shaper import Shaper, ShaperError

INGRESS = 0xFFFF0000
ETH_P_ALL = 0x0003
FILTER_PRIO = 1
FILTER_HANDLE = 0x80000800  # u32 node 800::800, the first node of prio 1's hash table


class NetemShaper(Shaper):
    name = "netem"

    def __init__(self, net: Network, *, netem: bool = True, qlimit_s: float = 0.1,
                 **_ignored: object) -> None:
        super().__init__(net)
        self.use_netem = netem
        self.qlimit_s = qlimit_s
        self.ipr: dict[str, object] = {}  # namespace -> IPRoute
        self._peer: dict[int, int] = {}  # src endpoint -> dst endpoint now connected
        self._params: dict[int, tuple[float, float, float]] = {}
        self._pending: dict[int, tuple[int, float, float, float] | None] = {}
        self._gact = True
        self._blackhole = 0

    # --- plumbing --------------------------------------------------------------------

    def _ipr(self, ns: str):
        from pyroute2 import IPRoute

        ipr = self.ipr.get(ns)
        if ipr is None:
            ipr = self.ipr[ns] = IPRoute(netns=ns)
        return ipr

    def start(self) -> None:
        net, lay = self.net, self.net.layout
        try:
            sh = self._ipr(net.shaper_ns)
            # Where disconnected directions go when act_gact (drop) is missing: a veth
            # whose ends stay down, so mirred's redirect fails and drops the frame.
            sh.link("add", ifname="nx0", kind="veth", peer="nx1")
            self._blackhole = sh.link_lookup(ifname="nx0")[0]
            for ep in lay.endpoints:
                tw = net.shaper_ifindex[ep.index]
                sh.tc("add", "ingress", tw, INGRESS)
                self._filter(tw, None, verb="add-filter")
                if self.use_netem:
                    h = self._ipr(net.host_ns[ep.node])
                    h.tc("add", "netem", net.ifindex[ep.index], "1:", delay=0, limit=1000)
        except Exception as e:
            raise ShaperError(f"kernel shaper: setting up tc failed: {e}") from e

    def _filter(self, twin: int, dst_twin: int | None, *, verb: str = "replace-filter") -> None:
        """Replace the twin's one ingress filter (u32, matching every frame; matchall is
        not in every kernel): redirect to ``dst_twin``, or drop."""
        sh = self._ipr(self.net.shaper_ns)
        if dst_twin is None and self._gact:
            action: dict[str, object] = {"kind": "gact", "action": "drop"}
            try:
                sh.tc(verb, "u32", twin, parent=INGRESS, prio=FILTER_PRIO, handle=FILTER_HANDLE,
                      protocol=ETH_P_ALL, keys=["0x0/0x0+0"], target=0, action=action)
                return
            except Exception:
                self._gact = False  # no act_gact in this kernel
        if dst_twin is None:
            action = {"kind": "mirred", "direction": "egress", "action": "redirect",
                      "ifindex": self._blackhole}
        else:
            action = {"kind": "mirred", "direction": "egress", "action": "redirect",
                      "ifindex": dst_twin}
        sh.tc(verb, "u32", twin, parent=INGRESS, prio=FILTER_PRIO, handle=FILTER_HANDLE,
              protocol=ETH_P_ALL, keys=["0x0/0x0+0"], target=0, action=action)

    # --- the shaper interface -----------------------------------------------------------

    def set_dir(self, src: int, dst: int, delay_s: float, rate_bps: float, loss: float) -> None:
        self._pending[src] = (dst, delay_s, rate_bps, loss)

    def clear_dir(self, src: int) -> None:
        self._pending[src] = None

    def commit(self) -> None:
        net, lay = self.net, self.net.layout
        pending, self._pending = self._pending, {}
        for src, val in pending.items():
            if val is None:
                if self._peer.pop(src, None) is not None:
                    self._filter(net.shaper_ifindex[src], None)
                continue
            dst, delay_s, rate_bps, loss = val
            if self._peer.get(src) != dst:
                self._filter(net.shaper_ifindex[src], net.shaper_ifindex[dst])
                self._peer[src] = dst
            if self.use_netem and self._params.get(src) != (delay_s, rate_bps, loss):
                ep = lay.endpoints[src]
                kw: dict[str, object] = {"delay": int(round(delay_s * 1e6)),
                                         "loss": loss * 100.0}
                pkts = 1000
                # always send the rate: an absent TCA_NETEM_RATE would keep the old one;
                # 0 means unlimited
                kw["rate"] = f"{int(min(max(rate_bps, 0.0), 8 * (2**32 - 1)))}bit"
                if rate_bps > 0:
                    pkts += int(rate_bps * (delay_s + self.qlimit_s) / 8 / 1500)
                kw["limit"] = min(pkts, 1_000_000)
                self._ipr(net.host_ns[ep.node]).tc("change", "netem", net.ifindex[src], "1:",
                                                   **kw)
                self._params[src] = (delay_s, rate_bps, loss)

    def stop(self) -> None:
        for ipr in self.ipr.values():
            with contextlib.suppress(Exception):
                ipr.close()  # type: ignore[attr-defined]
        self.ipr.clear()
