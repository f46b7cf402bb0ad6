"""Bulk bring-up and teardown of the emulated network: namespaces, veth pairs, addresses.

Plain Mininet runs a shell command per link end and per address, and tears each link
down one by one; with thousands of links that is most of its start and stop time. Here:

- all namespaces come from one ``ip -batch`` (``<run>-<node>`` for hosts, ``<run>+sw``
  for the shaper), all veth pairs from another (created in the shaper namespace with the
  host end placed straight into its host, MAC set);
- addresses, links up and routes go through one netlink socket per namespace, opened by
  entering the namespace from this process (no helper process per host);
- teardown kills what runs in the namespaces and deletes them in one batch: deleting the
  shaper namespace removes every veth pair with it.

Every host interface is one end of a veth pair whose twin ``e<index>`` sits in the shaper
namespace; a link's carrier is the twin's admin state (down twin = NO-CARRIER in the host).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import subprocess
import time

from netemu.emulator.layout import Layout, node_addr6
from netemu.emulator.netlink import Netlink
from netemu.emulator.netns import entered, ip_batch, ns_path
from netemu.emulator.registry import Registry, kill_pids, pids_in_namespaces, proc_start_time
from netemu.emulator.tunnels import LINK_MTU, VXLAN_PORT, HostShare, Tunnel
from netemu.runtime.fdlimit import raise_fd_limit

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17
ETHTOOL_STSO = 0x1F
ETHTOOL_SGSO = 0x24

HOST_SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/ipv4/conf/all/rp_filter": "0",
    "net/ipv4/conf/default/rp_filter": "0",
    "net/ipv6/conf/all/disable_ipv6": "1",
    "net/ipv6/conf/default/disable_ipv6": "1",
}
IPV6_HOST_SYSCTLS = {
    **HOST_SYSCTLS,
    "net/ipv6/conf/all/disable_ipv6": "0",
    "net/ipv6/conf/default/disable_ipv6": "0",
    "net/ipv6/conf/all/forwarding": "1",
    "net/ipv6/conf/default/forwarding": "1",
    # no duplicate address detection: a link-local address stays tentative (unusable for
    # OSPFv3) for a second after every carrier-up otherwise
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/accept_dad": "0",
}
"""Hosts of an OSPFv3 run: IPv6 on, every interface with its link-local address."""
SHAPER_SYSCTLS = {
    "net/ipv6/conf/all/disable_ipv6": "1",
    "net/ipv6/conf/default/disable_ipv6": "1",
    "net/ipv4/conf/all/arp_ignore": "8",
    "net/ipv4/conf/default/arp_ignore": "8",
}


class _EthtoolValue(ctypes.Structure):
    _fields_ = [("cmd", ctypes.c_uint32), ("data", ctypes.c_uint32)]


class _IfReq(ctypes.Structure):
    _fields_ = [("ifr_name", ctypes.c_char * 16), ("ifr_data", ctypes.c_void_p),
                ("pad", ctypes.c_char * 16)]


def ethtool_set(sock: socket.socket, ifname: str, cmd: int, value: int) -> None:
    ev = _EthtoolValue(cmd, value)
    req = _IfReq(ifname.encode(), ctypes.addressof(ev))
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, req)


class Network:
    """The namespaces and veth pairs of one run."""

    def __init__(self, layout: Layout, run: str, registry: Registry, *,
                 tx_offload: bool = False, share: HostShare | None = None,
                 ipv6: bool = False) -> None:
        """``ipv6``: IPv6 in the hosts (off otherwise), each node's IPv6 node address
        (:func:`~netemu.emulator.layout.node_addr6`) on its loopback: for OSPFv3."""
        self.layout = layout
        self.ipv6 = ipv6
        self.run = run
        self.registry = registry
        self.tx_offload = tx_offload
        self.share = share  # None: every node here; else this host's nodes (tunnels.py)
        self.shaper_ns = f"{run}+sw"
        self.host_ns = {n: f"{run}-{n}" for n in layout.nodes
                        if share is None or n in share.local}
        self.local_endpoints = [ep for ep in layout.endpoints if ep.node in self.host_ns]
        self.tunnels: list[Tunnel] = share.tunnels(layout) if share is not None else []
        self.ns_fd: dict[str, int] = {}
        self.nl: dict[str, Netlink] = {}  # node -> netlink socket in its namespace
        self.nl_shaper: Netlink | None = None
        self.ifindex: dict[int, int] = {}  # endpoint -> ifindex in its host
        self.shaper_ifindex: dict[int, int] = {}  # endpoint -> ifindex of its twin
        self.built = False
        self.timings: dict[str, float] = {}

    # --- bring-up --------------------------------------------------------------------

    def build(self) -> None:
        lay = self.layout
        raise_fd_limit(4 * len(lay.nodes) + 4 * len(lay.endpoints) + 1024)
        t0 = time.monotonic()
        ip_batch([f"netns add {self.shaper_ns}"] + [f"netns add {ns}" for ns in
                                                    self.host_ns.values()])
        t1 = time.monotonic()
        for node, ns in list(self.host_ns.items()) + [("", self.shaper_ns)]:
            fd = os.open(ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
            self.ns_fd[node] = fd
            with entered(fd):
                host = IPV6_HOST_SYSCTLS if self.ipv6 else HOST_SYSCTLS
                for key, val in (SHAPER_SYSCTLS if node == "" else host).items():
                    with open(f"/proc/sys/{key}", "w") as f:
                        f.write(val)
                nl = Netlink(label=ns)
            if node == "":
                self.nl_shaper = nl
            else:
                self.nl[node] = nl
        t2 = time.monotonic()
        lines = [
            f"link add {ep.shaper_name} type veth peer name {ep.ifname} address {ep.mac} "
            f"netns {self.host_ns[ep.node]}"
            for ep in self.local_endpoints
        ]
        if lines:
            ip_batch(lines, netns=self.shaper_ns)
        if self.tunnels:
            self._build_tunnels()
        t3 = time.monotonic()
        self._configure_hosts()
        t4 = time.monotonic()
        self.built = True
        self.timings.update(netns_s=t1 - t0, sysctl_s=t2 - t1, veth_s=t3 - t2, config_s=t4 - t3)

    def _build_tunnels(self) -> None:
        """A VXLAN device per other host, made here (its socket stays in this namespace,
        the underlay) and moved into the shaper namespace, named ``e<i>`` (altnames) for
        each remote endpoint ``i`` it carries (see tunnels.py)."""
        tmp = f"{self.run}x"
        ip_batch([f"link add {tmp}{t.peer_host} netns {self.shaper_ns} type vxlan id {t.vni} "
                  f"local {t.local_addr} remote {t.remote_addr} dstport {VXLAN_PORT} "
                  "nolearning" for t in self.tunnels])
        lines: list[str] = []
        for t in self.tunnels:
            lines.append(f"link set {tmp}{t.peer_host} name {t.name} mtu {LINK_MTU}")
            lines += [f"link property add dev {t.name} altname e{e}"
                      for e in t.remote_endpoints]
            lines.append(f"link set {t.name} up")
        ip_batch(lines, netns=self.shaper_ns)

    def _configure_hosts(self) -> None:
        lay = self.layout
        assert self.nl_shaper is not None
        sh = self.nl_shaper.links()
        for ep in self.local_endpoints:
            self.shaper_ifindex[ep.index] = sh[ep.shaper_name]
        for node in self.host_ns:
            nl = self.nl[node]
            idx = nl.links()
            nl.link_set(idx["lo"], up=True)
            nl.addr_add(idx["lo"], lay.node_addr[node], 32)
            if self.ipv6:
                nl.addr_add(idx["lo"], node_addr6(lay.node_addr[node]), 128)
            eps = lay.node_endpoints[node]
            if eps and not self.tx_offload:
                with entered(self.ns_fd[node]):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    for e in eps:
                        ethtool_set(s, lay.endpoints[e].ifname, ETHTOOL_STXCSUM, 0)
                finally:
                    s.close()
            for e in eps:
                ep = lay.endpoints[e]
                i = idx[ep.ifname]
                self.ifindex[e] = i
                nl.addr_add(i, ep.addr, 32)
                nl.link_set(i, up=True)
            nl.flush()

    # --- carrier ---------------------------------------------------------------------

    def set_carrier(self, endpoints: list[int], up: bool) -> None:
        """Carrier of host interfaces: the shaper twin's admin state (queued). A remote
        endpoint's carrier is its own host's to switch."""
        nl = self.nl_shaper
        assert nl is not None
        for e in endpoints:
            i = self.shaper_ifindex.get(e)
            if i is not None:
                nl.link_set(i, up=up)

    # --- processes ---------------------------------------------------------------------

    def exec_argv(self, node: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.host_ns[node], *argv]

    def track(self, proc: subprocess.Popen, kind: str) -> None:
        self.registry.add_pid(proc.pid, kind)

    # --- teardown --------------------------------------------------------------------

    def teardown(self, extra_pids: list[int] = ()) -> dict[str, float]:  # type: ignore[assignment]
        t0 = time.monotonic()
        names = [self.shaper_ns, *self.host_ns.values()]
        pids = [(p, proc_start_time(p)) for p in extra_pids]
        pids += [(p, None) for p in pids_in_namespaces(names)]
        kill_pids(pids, grace_s=1.0)
        t1 = time.monotonic()
        for nl in list(self.nl.values()) + ([self.nl_shaper] if self.nl_shaper else []):
            nl.close()
        self.nl.clear()
        self.nl_shaper = None
        for fd in self.ns_fd.values():
            os.close(fd)
        self.ns_fd.clear()
        ip_batch([f"netns del {n}" for n in names], force=True)
        t2 = time.monotonic()
        self.built = False
        return {"kill_s": t1 - t0, "netns_del_s": t2 - t1}
