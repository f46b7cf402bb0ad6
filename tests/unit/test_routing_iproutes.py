"""netemu.routing.iproutes: the emulator's IP next hops (shortest delay, ground stations as
end systems), and on random core graphs the same path delays as the reference routes."""

from __future__ import annotations

import random

import numpy as np
import pytest
from iproute_oracle import ip_next_hops, path_delay_s

from netemu.routing.iproutes import RouteComputer, next_hops


def links_of(comp: RouteComputer, weighted: dict[tuple[str, str], float]):
    """``{(a, b): delay_s}`` → the ``links`` argument; endpoint numbers 2·i (toward the
    higher index) and 2·i + 1 of link i."""
    idx = comp.index
    out = {}
    for i, ((a, b), w) in enumerate(sorted(weighted.items())):
        u, v = sorted((idx[a], idx[b]))
        out[(u, v)] = (w, 2 * i, 2 * i + 1)
    return out


def test_routes_follow_the_shortest_delay_and_stations_do_not_transit():
    # gs1 - a - b - gs2 and a long direct a - gs2 link
    nodes = ["gs1", "gs2", "a", "b"]
    comp = RouteComputer(nodes, {"gs1", "gs2"})
    links = links_of(comp, {("gs1", "a"): 0.01, ("a", "b"): 0.01, ("b", "gs2"): 0.01,
                            ("a", "gs2"): 0.05})
    table = comp.compute(links)
    hops = next_hops(table, nodes)
    assert hops["gs1"]["gs2"] == "a"
    assert hops["a"]["gs2"] == "b"  # 0.02 via b beats 0.05 direct
    assert hops["gs2"]["gs1"] == "b"
    assert hops["b"]["gs1"] == "a"
    assert table[comp.index["a"], comp.index["a"]] == -1
    # the entry names the egress endpoint too: a's end of the a - b link
    u, v = sorted((comp.index["a"], comp.index["b"]))
    ep_a = links[(u, v)][1 if comp.index["a"] == u else 2]
    assert divmod(int(table[comp.index["a"], comp.index["gs2"]]), len(nodes)) == (
        ep_a, comp.index["b"])


def test_a_station_is_no_transit_even_when_it_is_shorter():
    # a - gs - b is 0.002; a - c - b is 0.2: the emulator goes through c
    nodes = ["a", "b", "c", "gs"]
    comp = RouteComputer(nodes, {"gs"})
    hops = next_hops(comp.compute(links_of(comp, {("a", "gs"): 0.001, ("gs", "b"): 0.001,
                                                   ("a", "c"): 0.1, ("c", "b"): 0.1})), nodes)
    assert hops["a"]["b"] == "c"
    assert hops["a"]["gs"] == "gs" and hops["gs"]["b"] == "b"


def test_unreachable_nodes_have_no_route():
    nodes = ["a", "b", "c"]
    comp = RouteComputer(nodes, set())
    table = comp.compute(links_of(comp, {("a", "b"): 0.01}))
    assert next_hops(table, nodes) == {"a": {"b": "b"}, "b": {"a": "a"}, "c": {}}
    assert (table[comp.index["c"]] == -1).all()


@pytest.mark.parametrize("seed", range(5))
def test_core_routes_have_the_reference_path_delay(seed):
    rng = random.Random(seed)
    nodes = [f"n{i:02d}" for i in range(30)]
    weighted = {}
    for _ in range(80):
        a, b = rng.sample(nodes, 2)
        weighted[tuple(sorted((a, b)))] = rng.uniform(0.001, 0.05)
    edges = [(a, b, w) for (a, b), w in weighted.items()]
    edges += [(b, a, w) for a, b, w in edges]
    comp = RouteComputer(nodes, set())
    emu = next_hops(comp.compute(links_of(comp, weighted)), nodes)
    ref = ip_next_hops(edges)
    for src in nodes:
        assert set(emu[src]) == set(ref.get(src, {}))
        for dst in emu[src]:
            assert path_delay_s(emu, edges, src, dst) == pytest.approx(
                path_delay_s(ref, edges, src, dst), abs=1e-9)


def test_only_a_core_change_recomputes_the_core():
    nodes = ["gs", "a", "b"]
    comp = RouteComputer(nodes, {"gs"})
    comp.compute(links_of(comp, {("a", "b"): 0.01, ("gs", "a"): 0.01}))
    core_dist = comp.core_dist
    comp.compute(links_of(comp, {("a", "b"): 0.01, ("gs", "b"): 0.02}))  # a handover
    assert comp.core_dist is core_dist
    comp.compute(links_of(comp, {("gs", "b"): 0.02}))  # the ISL went down
    assert comp.core_dist is not core_dist and np.isinf(comp.core_dist).any()


def test_a_wired_neighbour_is_reached_through_its_station_and_no_route_loops():
    """An internet host (no satellite links) wired to two gateways that both have
    satellites, and a terminal under a ring: every pair is reached by walking the next
    hops, without a loop; the host goes out through the gateway whose satellite is
    nearer the terminal; a gateway never goes through the host (an end system), even
    where the fibre to the other gateway would be shorter."""
    nodes = ["ut", "gw1", "gw2", "inet", "s0", "s1", "s2", "s3"]
    ground = {"ut", "gw1", "gw2", "inet"}
    comp = RouteComputer(nodes, ground)
    w = {("s0", "s1"): 0.01, ("s1", "s2"): 0.01, ("s2", "s3"): 0.01, ("s3", "s0"): 0.01,
         ("ut", "s0"): 0.003, ("gw1", "s1"): 0.003, ("gw2", "s2"): 0.003,
         ("gw1", "inet"): 0.002, ("gw2", "inet"): 0.001}
    hops = next_hops(comp.compute(links_of(comp, w)), nodes)
    for a in nodes:
        for b in nodes:
            if a == b:
                continue
            path = [a]
            while path[-1] != b:
                path.append(hops[path[-1]][b])
                assert len(path) <= len(nodes), (a, b, path)
    assert [hops["ut"]["inet"], hops["s0"]["inet"], hops["s1"]["inet"]] == ["s0", "s1", "gw1"]
    assert hops["inet"]["ut"] == "gw1" and hops["gw1"]["ut"] == "s1"
    # ut -> s0 -> s1 -> gw1 -> inet: 0.018 s, against 0.027 s through gw2
    assert hops["s2"]["inet"] == "gw2"  # its own gateway, 0.004
    # gw1 -> inet -> gw2 -> s2 would take 0.006 s, but the host carries no transit
    assert hops["gw1"]["s2"] == "s1" and hops["gw1"]["gw2"] == "s1"
    assert all(hops[g][d] != "inet" for g in ("gw1", "gw2") for d in nodes if d not in (g, "inet"))
