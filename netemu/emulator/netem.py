"""The kernel shaper: tc netem for delay, loss and rate; tc mirred to connect links.

Same topology as the relay (every host interface has a twin ``e<i>`` in the shaper
namespace), with the kernel doing the work:

- each host interface's egress has a root netem qdisc (handle 1:) whose delay, loss, rate
  and limit are *changed in place* (``RTM_NEWQDISC`` without create, i.e. ``tc qdisc
  change``) — never deleted and recreated, so queued frames survive an update;
- each twin has an ingress qdisc with one filter (prio 1, handle 1) whose action
  (u32, matching every frame) is ``mirred egress redirect`` to the peer's twin, or ``drop`` while the direction is
  not connected; a GSL handover replaces that filter in place (``tc filter replace``).

The netem qdiscs are packed here (:func:`netem_request`) and sent through each host's
batched netlink socket (:class:`~netemu.emulator.netlink.Netlink`): one ``send()`` per
namespace and update, and exact attributes (pyroute2's ``rate`` keyword also becomes a
``TCA_RATE`` estimator, which the kernel refuses with ERANGE). The shaper namespace's
ingress qdiscs and filters go through pyroute2. Needs sch_netem (the Vagrant VM, most
Linux machines). ``netem=False`` wires the links with mirred but applies no netem (tests
of the wiring on kernels without netem).
"""

from __future__ import annotations

import contextlib
import struct

from netemu.emulator.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NetlinkError
from netemu.emulator.network import Network
from netemu.emulator.shaper import Shaper, ShaperError

INGRESS = 0xFFFF0000
ETH_P_ALL = 0x0003
FILTER_PRIO = 1
FILTER_HANDLE = 0x80000800  # u32 node 800::800, the first node of prio 1's hash table

# rtnetlink tc: RTM_NEWQDISC, struct tcmsg, TCA_* and TCA_NETEM_* (linux/pkt_sched.h)
RTM_NEWQDISC = 36
TC_H_ROOT = 0xFFFFFFFF
NETEM_HANDLE = 0x10000  # 1:
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_NETEM_RATE, TCA_NETEM_RATE64, TCA_NETEM_LATENCY64 = 6, 8, 10
U32_MAX = 2**32 - 1
_TCMSG = struct.Struct("=BxxxiIII")
_NETEM_QOPT = struct.Struct("=IIIIII")  # latency (ticks), limit, loss, gap, duplicate, jitter
_NETEM_RATE = struct.Struct("=IiIi")  # rate (bytes/s), packet overhead, cell size, overhead


def _attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * ((4 - n % 4) % 4)


def netem_request(ifindex: int, delay_s: float, rate_bps: float, loss: float,
                  limit_pkts: int) -> bytes:
    """Body of an RTM_NEWQDISC for the root netem qdisc 1: of ``ifindex``: delay in
    nanoseconds (TCA_NETEM_LATENCY64), rate in bytes/s (0: unlimited; TCA_NETEM_RATE64
    above 2^32-1), loss as a fraction of 2^32-1, queue limit in packets."""
    delay_ns = max(0, int(round(delay_s * 1e9)))
    rate_Bps = max(0, int(rate_bps // 8))
    qopt = _NETEM_QOPT.pack(min(delay_ns >> 6, U32_MAX), max(1, min(limit_pkts, U32_MAX)),
                            int(round(min(max(loss, 0.0), 1.0) * U32_MAX)), 0, 0, 0)
    opts = qopt + _attr(TCA_NETEM_RATE, _NETEM_RATE.pack(min(rate_Bps, U32_MAX), 0, 0, 0))
    if rate_Bps > U32_MAX:
        opts += _attr(TCA_NETEM_RATE64, struct.pack("=Q", rate_Bps))
    opts += _attr(TCA_NETEM_LATENCY64, struct.pack("=q", delay_ns))
    return (_TCMSG.pack(0, ifindex, NETEM_HANDLE, TC_H_ROOT, 0)
            + _attr(TCA_KIND, b"netem\0") + _attr(TCA_OPTIONS, opts))


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
                    net.nl[ep.node].request(
                        RTM_NEWQDISC, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                        netem_request(net.ifindex[ep.index], 0.0, 0.0, 0.0, 1000),
                        f"tc qdisc add dev {ep.ifname} root handle 1: netem")
            if self.use_netem:
                for node in {ep.node for ep in lay.endpoints}:
                    net.nl[node].flush()
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
        changed: set[str] = set()
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
                pkts = 1000
                if rate_bps > 0:
                    pkts += int(rate_bps * (delay_s + self.qlimit_s) / 8 / 1500)
                # "tc qdisc change": no NLM_F_CREATE, so the qdisc is changed in place
                net.nl[ep.node].request(
                    RTM_NEWQDISC, NLM_F_ACK,
                    netem_request(net.ifindex[src], delay_s, rate_bps, loss, min(pkts, 1_000_000)),
                    f"tc qdisc change dev {ep.ifname} root netem")
                changed.add(ep.node)
                self._params[src] = (delay_s, rate_bps, loss)
        try:
            for node in changed:
                net.nl[node].flush()
        except NetlinkError as e:
            raise ShaperError(f"netem: changing a qdisc failed: {e}") from e

    def stop(self) -> None:
        for ipr in self.ipr.values():
            with contextlib.suppress(Exception):
                ipr.close()  # type: ignore[attr-defined]
        self.ipr.clear()
