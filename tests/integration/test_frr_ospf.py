"""FRR OSPF in every node (``ip_routing: {mode: frr}``) on real namespaces: adjacencies on
a ring, traffic round the other way after an ISL ends (at carrier-down, long before the
dead interval), vtysh from the host shell, and nothing left after the run, after a failed
test body or after ``netemu clean``. Run names start with ``tf``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from routing_ring import RING, daemon_pids, goes_the_other_way_round, ring, ring_emulation, wait_for
from test_emulator import assert_clean
from test_ip_routing_plugin import hops

from netemu.emulator import Emulation
from netemu.emulator.frr import FrrSettings, frr_missing

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(frr_missing() is not None, reason=str(frr_missing()))]

# A dead interval far longer than the test's waits: what the test sees happen comes from
# the interface going down, not from missed hellos.
SLOW_DEAD = FrrSettings(hello_s=2, dead_s=60)


def full_neighbours(emu: Emulation, node: str) -> int:
    return emu.vtysh(node, "-c", "show ip ospf neighbor").count("Full/")


def test_adjacencies_come_up_and_traffic_goes_round_the_other_way_after_an_isl_ends(tmp_path):
    with ring_emulation("tfring", SLOW_DEAD, tmp_path / "frr") as emu:
        assert wait_for(lambda: all(full_neighbours(emu, n) == 2 for n in RING), 30), \
            emu.vtysh("s1", "-c", "show ip ospf neighbor")
        # the routes are OSPF's (zebra's), the node address their source
        assert wait_for(lambda: "proto ospf" in emu.run_cmd(
            "s1", ["ip", "route", "show", emu.node_addr("s3")]).stdout, 20)
        route = emu.run_cmd("s1", ["ip", "route", "show", emu.node_addr("s2")]).stdout
        assert f"src {emu.node_addr('s1')}" in route
        assert hops(emu, "s1", "s2") == ["s2"]
        # the Mininet shell of a host reaches its node's daemons with plain vtysh
        assert emu.host("s3").cmd("vtysh -c 'show ip ospf neighbor'").count("Full/") == 2
        # carrier down at the contact's end: the adjacency and the route go with it,
        # 60 s of dead interval notwithstanding
        goes_the_other_way_round(emu, lambda n: full_neighbours(emu, n))
    # the configurations and logs stay in the routing directory
    conf = (tmp_path / "frr" / "s1" / "ospfd.conf").read_text()
    assert "interface s1-eth0\n ip ospf network point-to-point" in conf
    assert "ospfd 8." in (tmp_path / "frr" / "s1" / "ospfd.log").read_text()


def test_failing_test_body_leaves_no_daemon():
    pids: list[int] = []
    with pytest.raises(RuntimeError), Emulation(ring(), run_name="tffail",
                                                frr=FrrSettings()) as emu:
        pids = daemon_pids(emu)
        assert len(pids) == 8
        raise RuntimeError("test body failed")
    assert_clean("tffail", pids)


def test_netemu_clean_kills_the_daemons_of_a_crashed_run(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "from routing_ring import ring\n"
        "from netemu.emulator import Emulation\n"
        "from netemu.emulator.frr import FrrSettings\n"
        "emu = Emulation(ring(), run_name='tfcrash', frr=FrrSettings()).start()\n"
        "print(' '.join(str(p.pid) for ps in emu.frr.procs.values() for p in ps), flush=True)\n"
        "time.sleep(600)\n")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE)
    try:
        pids = [int(x) for x in p.stdout.readline().split()]
        assert len(pids) == 8
        p.kill()  # SIGKILL: no cleanup code runs, the daemons live on
        p.wait()
        r = subprocess.run([sys.executable, "-m", "netemu", "clean"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert_clean("tfcrash", pids)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        subprocess.run([sys.executable, "-m", "netemu", "clean", "--quiet", "--run", "tfcrash"],
                       capture_output=True)


def test_netemu_run_cli_reaches_a_nodes_daemons_with_vtysh(tmp_path):
    """`netemu run plan --ip-routing frr --cli`: `s1 vtysh -c '...'` talks to s1's ospfd."""
    path = tmp_path / "plan.json"
    path.write_text(ring().to_json())
    cmds = "sh sleep 4\ns1 vtysh -c 'show ip ospf neighbor'\ns1 ping -c 1 -W 2 s3\n"
    r = subprocess.run([sys.executable, "-m", "netemu", "run", str(path), "--cli",
                        "--ip-routing", "frr", "--run-name", "tfcli"], input=cmds,
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-800:]
    assert "IP routing frr/ospf" in out
    assert out.count("Full/") == 2, out[-1500:]  # s1's two ring neighbours
    assert "1 received" in out, out[-800:]
    assert_clean("tfcli")
