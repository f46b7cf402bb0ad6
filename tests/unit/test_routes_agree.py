"""The emulator's IP routes (netemu.routing.iproutes, on the emulator's layout) and the
reference routes (tests/unit/iproute_oracle.py) read the same plan: they must agree on path
delay (the emulator only refuses transit through ground stations, which can make its paths
longer, never shorter)."""

from __future__ import annotations

from pathlib import Path

import pytest
from iproute_oracle import ip_next_hops, path_delay_s, snapshot_edges

from netemu.emulator.layout import plan_layout
from netemu.plan.scenario import load_scenario
from netemu.plan.schedule import compute_plan
from netemu.routing.iproutes import RouteComputer, next_hops

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def plan():
    return compute_plan(load_scenario(ROOT / "topologies" / "three-body-12.yaml"), duration_s=3000)


def emulator_next_hops(plan, t_s):
    layout = plan_layout(plan)
    ground = {n.name for n in plan.nodes.values() if n.kind == "ground"}
    comp = RouteComputer(layout.nodes, ground)
    idx = comp.index
    delay = {}
    for c in plan.active_at(t_s):
        delay[(c.src, c.dst)] = min(c.owlt_at(t_s), delay.get((c.src, c.dst), float("inf")))
    links = {}
    for p in layout.periods:
        if not (p.start_s <= t_s < p.end_s) or (p.a, p.b) not in delay:
            continue
        u, v = idx[p.a], idx[p.b]
        eu, ev = (p.ep_a, p.ep_b) if u < v else (p.ep_b, p.ep_a)
        links[(min(u, v), max(u, v))] = (delay[(p.a, p.b)], eu, ev)
    return next_hops(comp.compute(links), layout.nodes), ground


@pytest.mark.parametrize("t_s", [120.0, 700.0, 1500.0, 2600.0])
def test_emulator_routes_match_the_reference_on_path_delay(plan, t_s):
    edges = snapshot_edges(plan, t_s)
    ref = ip_next_hops(edges)
    emu, ground = emulator_next_hops(plan, t_s)
    compared = 0
    for src in ref:
        for dst, _ in ref[src].items():
            assert dst in emu[src], f"emulator has no route {src} → {dst} at t={t_s}"
            d_ref = path_delay_s(ref, edges, src, dst)
            d_emu = path_delay_s(emu, edges, src, dst)
            assert d_emu >= d_ref - 1e-9
            # where the best path does not transit a ground station, both must be equal
            node, transit_ground = src, False
            while node != dst:
                node = ref[node][dst]
                transit_ground |= node in ground and node != dst
            if not transit_ground:
                assert d_emu == pytest.approx(d_ref, abs=1e-7), (src, dst, t_s)
                compared += 1
    assert compared > 100
