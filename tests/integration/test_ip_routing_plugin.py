"""A routing plug-in's tables on real namespaces: traceroute follows them, and a plug-in
that fails later leaves the routes in place and the emulation running. Run names start
with ``tp``."""

from __future__ import annotations

import re
import shutil

import networkx as nx
import pytest
from test_emulator import EPOCH, assert_clean, nodes, pair

from netemu.emulator import Emulation
from netemu.emulator.events import RouteEvent
from netemu.plan.contacts import ContactPlan

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("traceroute") is None,
                                 reason="traceroute not installed (scripts/dev setup)")]

RING = ["s1", "s2", "s3", "s4"]


def clockwise(graph: nx.Graph, plan: ContactPlan) -> dict[str, dict[str, str]]:
    """Every packet goes clockwise round the ring: s1 → s4 takes three hops, not one."""
    if graph.graph["t_s"] >= 4.0:
        raise RuntimeError("the plug-in broke")
    out: dict[str, dict[str, str]] = {}
    for i, n in enumerate(RING):
        nxt = RING[(i + 1) % len(RING)]
        assert graph.has_edge(n, nxt) and graph.edges[n, nxt]["kind"] == "isl"
        out[n] = {d: nxt for d in RING if d != n}
    return out


def hops(emu: Emulation, src: str, dst: str) -> list[str]:
    """The nodes traceroute sees between ``src`` and ``dst`` (``dst`` last)."""
    owner = {a: n for n, a in emu.layout.node_addr.items()}
    owner.update({e.addr: e.node for e in emu.layout.endpoints})
    out = emu.run_cmd(src, ["traceroute", "-n", "-q", "1", "-w", "2", "-m", "6",
                            emu.node_addr(dst)], timeout=30).stdout
    addrs = re.findall(r"^\s*\d+\s+(\d+\.\d+\.\d+\.\d+)", out, re.M)
    return [owner.get(a, a) for a in addrs]


def test_plugin_tables_are_installed_and_traceroute_follows_them():
    contacts = []
    for i, a in enumerate(RING):
        contacts += pair(a, RING[(i + 1) % 4], 0, 30, owlt_s=0.002, kind="isl")
    contacts += pair("s1", "s3", 5, 30, owlt_s=0.002, kind="isl")  # a change at t = 5 s
    emu = Emulation(ContactPlan(EPOCH, nodes(*RING), contacts), run_name="tpcw",
                    time_scale=1.0, route_function=clockwise)
    events: list[RouteEvent] = []
    emu.subscribe_routes(events.append)
    try:
        emu.start()
        assert hops(emu, "s1", "s4") == ["s2", "s3", "s4"]
        assert hops(emu, "s4", "s1") == ["s1"]
        emu.wait(until_s=6.0)
        # the plug-in raised at the change: reported, the clockwise routes stay
        errors = [e for e in events if e.kind == "error"]
        assert len(errors) == 1 and "RuntimeError: the plug-in broke" in errors[0].message
        assert errors[0].t_s >= 5.0
        assert hops(emu, "s1", "s4") == ["s2", "s3", "s4"]
        assert not emu.finished and emu.driver_error is None
    finally:
        pids = emu.shaper.pids() if emu.shaper else []
        emu.stop()
        assert_clean(emu.run, pids)
