"""Splitting a plan's nodes over cluster hosts (netemu.plan.partition): whole planes in
contiguous blocks, shares by cores and memory, ground stations with their peers, few
cross-host links, clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from netemu.errors import InputError
from netemu.plan.partition import (
    HostCapacity,
    crossing,
    host_shares,
    partition,
    scenario_partition,
)
from netemu.plan.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
GIB = 1 << 30


def equal_hosts(n: int) -> list[HostCapacity]:
    return [HostCapacity(f"h{i}", 4, 16 * GIB) for i in range(n)]


def test_starlink_shell1_three_hosts_whole_planes_and_three_cuts() -> None:
    sc = load_scenario(ROOT / "topologies/starlink-shell1.yaml")
    part = scenario_partition(sc, equal_hosts(3))
    plane_hosts: dict[int | None, set[int]] = {}
    for s in sc.satellites:
        plane_hosts.setdefault(s.plane, set()).add(part.host_of[s.name])
    assert all(len(h) == 1 for h in plane_hosts.values())  # no plane is split
    # 24 planes of 22 each; the stations spread by share
    sat_loads = [sum(1 for s in sc.satellites if part.host_of[s.name] == h) for h in range(3)]
    assert sat_loads == [528, 528, 528]
    assert sorted(part.loads()) == [531, 531, 532]
    # a ring of 72 planes cut in three places: 3 × 22 cross-plane ISLs cross
    assert len(part.cross_links) == 66
    # the first host's planes form one contiguous block
    first = sorted(p for p, h in plane_hosts.items() if h == {0})
    assert first == list(range(first[0], first[0] + 24))


def test_shares_follow_the_scarcer_of_cores_and_memory() -> None:
    hosts = [HostCapacity("big", 8, 32 * GIB), HostCapacity("cpu", 8, 8 * GIB),
             HostCapacity("small", 2, 32 * GIB)]
    shares = host_shares(hosts)
    mean_c, _mean_m = 6, 24 * GIB
    w = [min(8 / mean_c, 32 / 24), min(8 / mean_c, 8 / 24), min(2 / mean_c, 32 / 24)]
    assert shares == pytest.approx([x / sum(w) for x in w])
    sc = load_scenario(ROOT / "topologies/starlink-shell1.yaml")
    part = scenario_partition(sc, hosts)
    for load, share in zip(part.loads(), shares, strict=True):
        assert abs(load - share * 1594) <= 22 + 10  # within a plane (and the stations)


def test_ground_station_goes_to_the_host_of_its_peers() -> None:
    nodes = ["a0", "a1", "b0", "b1", "gs"]
    planes = {"a0": 0, "a1": 0, "b0": 1, "b1": 1}
    links = [("a0", "a1"), ("b0", "b1"), ("a1", "b0"), ("gs", "b0"), ("gs", "b1")]
    part = partition(nodes, links, equal_hosts(2), planes.get, slack=0.5)
    assert part.host_of["gs"] == part.host_of["b0"]
    assert part.cross_links == [("a1", "b0")]


def test_without_planes_two_clusters_split_at_their_bridge() -> None:
    # two 6-cliques joined by one link, listed interleaved so plan order alone would cut
    # most links
    left = [f"l{i}" for i in range(6)]
    right = [f"r{i}" for i in range(6)]
    nodes = [n for pair in zip(left, right, strict=True) for n in pair]
    links = [(a, b) for grp in (left, right) for i, a in enumerate(grp) for b in grp[i + 1:]]
    links.append(("l0", "r0"))
    part = partition(nodes, links, equal_hosts(2))
    assert part.loads() == [6, 6]
    assert part.cross_links == [("l0", "r0")]
    assert len({part.host_of[n] for n in left}) == 1


def test_a_ring_on_two_hosts_is_cut_twice() -> None:
    nodes = [f"n{i}" for i in range(20)]
    links = [(nodes[i], nodes[(i + 1) % 20]) for i in range(20)]
    part = partition(nodes, links, equal_hosts(2))
    assert part.loads() == [10, 10]
    assert len(crossing(part.host_of, links)) == 2


def test_fewer_planes_than_hosts_leaves_a_host_without_satellites() -> None:
    nodes = ["a0", "a1", "b0", "b1"]
    part = partition(nodes, [("a0", "b0")], equal_hosts(3), {"a0": 0, "a1": 0,
                                                             "b0": 1, "b1": 1}.get)
    assert sorted(part.loads()) == [0, 2, 2]


def test_bad_input_is_named() -> None:
    with pytest.raises(InputError, match="link a–zz names node zz"):
        partition(["a", "b"], [("a", "zz")], equal_hosts(2))
    with pytest.raises(InputError, match="host h1 reports 0 cores"):
        partition(["a"], [], [HostCapacity("h0", 1, GIB), HostCapacity("h1", 0, GIB)])
    with pytest.raises(InputError, match="no hosts"):
        partition(["a"], [], [])
