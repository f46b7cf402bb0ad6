"""BIRD 2's OSPF in every node (``ip_routing: {mode: bird}``) on real namespaces: full
adjacencies on a ring over the /32 point-to-point links, ping across it from node address
to node address, traffic round the other way after an ISL ends (carrier-down, long before
the dead interval), birdc from the host shell, and nothing left after the run or after a
failed test body. Run names start with ``tb``."""

from __future__ import annotations

import pytest
from routing_ring import RING, daemon_pids, goes_the_other_way_round, ring, ring_emulation, wait_for
from test_emulator import assert_clean
from test_ip_routing_plugin import hops

from netemu.emulator import Emulation
from netemu.emulator.bird import bird_missing
from netemu.emulator.frr import FrrSettings

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(bird_missing() is not None, reason=str(bird_missing()))]

# hellos every 2 s, a dead interval far longer than the test's waits: what the test sees
# after the ISL ends comes from the carrier going down, not from missed hellos
SLOW_DEAD = FrrSettings(hello_s=2, dead_s=60, daemon="bird")


def full_neighbours(emu: Emulation, node: str) -> int:
    return emu.vtysh(node, "show", "ospf", "neighbors").count("Full/PtP")


def test_bird_ring_adjacencies_ping_and_the_other_way_round_after_an_isl_ends(tmp_path):
    with ring_emulation("tbring", SLOW_DEAD, tmp_path / "bird") as emu:
        assert len(daemon_pids(emu)) == 4
        assert wait_for(lambda: all(full_neighbours(emu, n) == 2 for n in RING), 30), \
            emu.vtysh("s1", "show", "ospf", "neighbors")
        # BIRD's routes to the other node addresses, the node address their source
        assert wait_for(lambda: "proto bird" in emu.run_cmd(
            "s1", ["ip", "route", "show", emu.node_addr("s3")]).stdout, 20)
        route = emu.run_cmd("s1", ["ip", "route", "show", emu.node_addr("s2")]).stdout
        assert f"src {emu.node_addr('s1')}" in route
        ping = emu.run_cmd("s1", ["ping", "-c", "2", "-W", "2", emu.node_addr("s3")])
        assert ping.returncode == 0, ping.stdout
        assert hops(emu, "s1", "s2") == ["s2"]
        # the Mininet shell of a host reaches its node's bird with plain birdc
        assert emu.host("s3").cmd("birdc show protocols").count("ospf0") == 1
        goes_the_other_way_round(emu, lambda n: full_neighbours(emu, n))
    conf = (tmp_path / "bird" / "s1" / "bird.conf").read_text()
    assert 'type ptp;' in conf and "s1-eth0" in conf
    assert "<INFO> Started" in (tmp_path / "bird" / "s1" / "bird.out").read_text()


def test_bird_failing_test_body_leaves_no_daemon():
    pids: list[int] = []
    with pytest.raises(RuntimeError), Emulation(ring(), run_name="tbfail",
                                                frr=FrrSettings(daemon="bird")) as emu:
        assert emu.frr is not None
        pids = [p.pid for ps in emu.frr.procs.values() for p in ps]
        assert len(pids) == 4
        raise RuntimeError("test body failed")
    assert_clean("tbfail", pids)
