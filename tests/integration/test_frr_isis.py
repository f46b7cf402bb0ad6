"""FRR IS-IS in every node (``ip_routing: {mode: frr, protocol: isis}``) on real
namespaces: adjacencies on a ring over the /32 point-to-point links, LSPs that carry the
node addresses, ping across, traffic round the other way after an ISL
ends (carrier-down, long before the hold time), IS-IS frames counted as control traffic,
and nothing left after the run. Run names
start with ``ti``."""

from __future__ import annotations

import json

import pytest
from routing_ring import RING, daemon_pids, goes_the_other_way_round, ring_emulation, wait_for
from test_ip_routing_plugin import hops

from netemu.emulator import Emulation
from netemu.emulator.frr import FrrSettings, frr_missing
from netemu.emulator.ipmeasure import ControlCounters

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(frr_missing() is not None, reason=str(frr_missing()))]

# a hold time (hello × multiplier) far longer than the test's waits
SLOW_HOLD = FrrSettings(hello_s=2, dead_s=60, protocol="isis")


def up_neighbours(emu: Emulation, node: str) -> int:
    return emu.vtysh(node, "-c", "show isis neighbor").count(" Up ")


def test_isis_ring_lsps_ping_and_the_other_way_round_after_an_isl_ends(tmp_path):
    with ring_emulation("tiring", SLOW_HOLD, tmp_path / "frr") as emu:
        assert emu.frr is not None and len(daemon_pids(emu)) == 8
        # IS-IS frames are not IP: counted on the interfaces (netdev egress)
        counters = ControlCounters(emu, tmp_path)
        counters.start()
        assert wait_for(lambda: all(up_neighbours(emu, n) == 2 for n in RING), 30), \
            emu.vtysh("s1", "-c", "show isis neighbor")
        s3 = emu.node_addr("s3")
        # s3's LSP, as s1 holds it, carries s3's node address (not empty: see isis_config)
        assert wait_for(lambda: f"Extended IP Reachability: {s3}/32" in emu.vtysh(
            "s1", "-c", "show isis database detail"), 20)
        assert wait_for(lambda: "proto isis" in emu.run_cmd(
            "s1", ["ip", "route", "show", s3]).stdout, 20)
        route = emu.run_cmd("s1", ["ip", "route", "show", emu.node_addr("s2")]).stdout
        assert f"src {emu.node_addr('s1')}" in route
        ping = emu.run_cmd("s1", ["ping", "-c", "2", "-W", "2", s3])
        assert ping.returncode == 0, ping.stdout
        assert hops(emu, "s1", "s2") == ["s2"]
        counters.stop()
        control = json.loads((tmp_path / "control.json").read_text())
        # hellos and LSPs from four nodes, each at least an Ethernet frame; no IP counted
        assert control["isis_packets"] >= 8 and control["isis_bytes"] >= 60 * 8, control
        assert control["ospf_packets"] == 0
        goes_the_other_way_round(emu, lambda n: up_neighbours(emu, n))
    conf = (tmp_path / "frr" / "s1" / "isisd.conf").read_text()
    assert "interface s1-eth0\n ip router isis 1\n isis network point-to-point" in conf
