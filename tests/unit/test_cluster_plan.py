"""The cluster coordinator's checks and a host's tunnels (netemu.run.cluster,
netemu.emulator.tunnels): clock offsets from Ray round trips, refusals with the reason,
one tunnel per other host carrying the remote ends of the links that cross."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from netemu.emulator.layout import plan_layout
from netemu.emulator.tunnels import HostShare, smallest_link_delay_s
from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.run.cluster import (
    ClusterError,
    check_clocks,
    check_underlay,
    clock_offset,
    parse_ping_min_s,
)


def chain(names: list[str], owlt_s: list[float]) -> ContactPlan:
    contacts = [Contact(a, b, 0.0, 100.0, 1e6, d, kind="isl")
                for (x, y), d in zip(zip(names, names[1:], strict=False), owlt_s, strict=True)
                for a, b in ((x, y), (y, x))]
    return ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc),
                       {n: Node(n, i + 1, "satellite", 0) for i, n in enumerate(names)},
                       contacts)


def test_clock_offset_takes_the_sample_of_least_round_trip() -> None:
    # remote clock 5 ms ahead; the slow sample (10 ms round trip) would say 0 ms
    samples = [(100.0, 100.010, 100.010), (200.0, 200.006, 200.002)]
    offset, rtt = clock_offset(samples)
    assert offset == pytest.approx(0.005)
    assert rtt == pytest.approx(0.002)


def test_clocks_beyond_the_bound_are_refused_naming_the_host() -> None:
    check_clocks({"10.0.0.1": 0.0002, "10.0.0.2": -0.0009})
    with pytest.raises(ClusterError, match=r"host 10.0.0.2's clock is -2.500 ms off.*chrony"):
        check_clocks({"10.0.0.1": 0.0002, "10.0.0.2": -0.0025})
    # a reading 2.5 ms off whose best sample took 4 ms there and back may be 0.5 ms off
    check_clocks({"10.0.0.2": -0.0025}, round_trips={"10.0.0.2": 0.004})
    with pytest.raises(ClusterError, match="10.0.0.2"):
        check_clocks({"10.0.0.2": -0.0025}, round_trips={"10.0.0.2": 0.002})


def test_underlay_slower_than_the_smallest_crossing_link_is_refused() -> None:
    check_underlay(0.0001, 0.002)
    check_underlay(0.5, None)  # no link crosses hosts
    with pytest.raises(ClusterError, match=r"takes 3.000 ms one way.*\(2.000 ms\)"):
        check_underlay(0.003, 0.002)


def test_ping_summary_parsed_and_garbage_refused() -> None:
    text = "5 packets transmitted, 5 received\nrtt min/avg/max/mdev = 0.037/0.05/0.07/0.01 ms\n"
    assert parse_ping_min_s(text) == pytest.approx(37e-6)
    with pytest.raises(ClusterError, match="no round trip"):
        parse_ping_min_s("ping: connect: Network is unreachable")


def test_each_host_gets_one_tunnel_per_other_host_with_the_remote_ends() -> None:
    plan = chain(["a", "b", "c", "d"], [0.01, 0.002, 0.03])
    lay = plan_layout(plan)
    host_of = {"a": 0, "b": 0, "c": 1, "d": 2}
    addrs = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    shares = [HostShare(i, host_of, addrs) for i in range(3)]
    t0, t1, t2 = (s.tunnels(lay) for s in shares)
    assert [t.peer_host for t in t0] == [1]
    assert [t.peer_host for t in t1] == [0, 2]
    assert [t.peer_host for t in t2] == [1]
    # both ends of a host pair's tunnel use the same VNI; the remote ends are the far
    # interfaces of the crossing links
    assert t0[0].vni == t1[0].vni and t1[1].vni == t2[0].vni and t0[0].vni != t2[0].vni
    bc = next(p for p in lay.periods if {p.a, p.b} == {"b", "c"})
    c_ep = bc.ep_b if bc.b == "c" else bc.ep_a
    b_ep = bc.ep_a if c_ep == bc.ep_b else bc.ep_b
    assert t0[0].remote_endpoints == (c_ep,)
    assert b_ep in t1[0].remote_endpoints
    assert (t0[0].local_addr, t0[0].remote_addr) == ("192.0.2.1", "192.0.2.2")
    # the smallest delay of a crossing link: b–c (2 ms), not a–b within host 0
    owlt = [c.owlt_s for c in plan.contacts]
    assert smallest_link_delay_s(lay, owlt, host_of) == pytest.approx(0.002)
    assert smallest_link_delay_s(lay, owlt, dict.fromkeys(host_of, 0)) is None


def test_host_index_outside_the_cluster_is_refused() -> None:
    with pytest.raises(InputError, match="host index 3 outside 0..1"):
        HostShare(3, {"a": 0}, ["192.0.2.1", "192.0.2.2"])
