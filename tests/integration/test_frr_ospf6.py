"""FRR OSPFv3 in every node (``ip_routing: {mode: frr, protocol: ospf6}``) on real
namespaces: IPv6 on in the hosts of that run only, adjacencies over the link-local
addresses of a ring, a route to every other node's IPv6 node address with the node's own
as source, the path sampler following the IPv6 routes hop by hop, traffic round the
other way after an ISL ends, and nothing left after the run. Run names start with ``t6``."""

from __future__ import annotations

import json

import pytest
from routing_ring import RING, goes_the_other_way_round, ring_emulation, wait_for

from netemu.emulator import Emulation
from netemu.emulator.frr import FrrSettings, frr_missing
from netemu.emulator.ipmeasure import ControlCounters, PathSampler

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(frr_missing() is not None, reason=str(frr_missing()))]

SLOW_DEAD = FrrSettings(hello_s=2, dead_s=60, protocol="ospf6")


def full_neighbours(emu: Emulation, node: str) -> int:
    return emu.vtysh(node, "-c", "show ipv6 ospf6 neighbor").count("Full/")


def test_ospf6_adjacencies_and_a_route_to_every_nodes_ipv6_address(tmp_path):
    with ring_emulation("t6ring", SLOW_DEAD, tmp_path / "frr") as emu:
        counters = ControlCounters(emu, tmp_path)
        counters.start()
        s1 = emu.node_addr6("s1")
        assert s1.startswith("fd") and s1 in emu.run_cmd(
            "s1", ["ip", "-6", "addr", "show", "dev", "lo"]).stdout
        assert wait_for(lambda: all(full_neighbours(emu, n) == 2 for n in RING), 30), \
            emu.vtysh("s1", "-c", "show ipv6 ospf6 neighbor")
        for other in RING[1:]:
            addr = emu.node_addr6(other)
            assert wait_for(lambda a=addr: "proto ospf" in emu.run_cmd(
                "s1", ["ip", "-6", "route", "show", a]).stdout, 20), other
        route = emu.run_cmd("s1", ["ip", "-6", "route", "show", emu.node_addr6("s3")]).stdout
        # zebra names OSPFv3 routes "ospf" too (RTPROT_OSPF)
        assert f"src {s1}" in route and "via fe80::" in route, route
        ping = emu.run_cmd("s1", ["ping", "-6", "-c", "2", "-W", "2", emu.node_addr6("s3")])
        assert ping.returncode == 0, ping.stdout
        # what `probes:` measures in an ospf6 run: the sampler walks the IPv6 routes,
        # naming each next hop (a link-local address) by its node
        sampler = PathSampler(emu, [("s1", "s2")], tmp_path / "iproute")
        try:
            assert sampler.walk("s1", "s2") == ["s1", "s2"]
            goes_the_other_way_round(emu, lambda n: full_neighbours(emu, n),
                                     path=lambda: sampler.walk("s1", "s2"))
        finally:
            sampler.stop()
        counters.stop()
        control = json.loads((tmp_path / "control.json").read_text())
        assert control["ospf_packets"] > 0  # OSPFv3 is IP protocol 89 too, over IPv6
    assert "ipv6 ospf6 network point-to-point" in (
        tmp_path / "frr" / "s1" / "ospf6d.conf").read_text()
