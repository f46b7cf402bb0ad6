"""Emulator planning without namespaces: interfaces, GSL slots, the link timeline, IP
next hops, packed netlink messages."""

from __future__ import annotations

import socket
import struct
from datetime import datetime, timezone

import numpy as np
import pytest

from netemu.emulator.iproute import route_messages
from netemu.emulator.layout import check_run_name, plan_layout
from netemu.emulator.timeline import Timeline
from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, Node

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def both(a, b, s, e, owlt=0.01, kind="gsl", samples=()):
    return [Contact(a, b, s, e, 1e6, owlt, kind, owlt_samples=samples),
            Contact(b, a, s, e, 1e6, owlt, kind, owlt_samples=samples)]


def nodes(*names, max_links=1):
    return {n: Node(n, i + 1, "ground" if n.startswith("gs") else "satellite",
                    max_links if n.startswith("gs") else 0) for i, n in enumerate(names)}


def test_station_uses_one_antenna_interface_across_passes():
    # three passes over one station, one at a time: one slot, not three links
    plan = ContactPlan(EPOCH, nodes("gs1", "s1", "s2", "s3"),
                       both("gs1", "s1", 0, 10) + both("gs1", "s2", 10, 20)
                       + both("gs1", "s3", 25, 30))
    lay = plan_layout(plan)
    assert len(lay.node_endpoints["gs1"]) == 1
    assert {lay.periods[i].ep_a for i in range(3)} | {lay.periods[i].ep_b for i in range(3)} \
        >= set(lay.node_endpoints["gs1"])
    assert [lay.endpoints[e].ifname for e in lay.node_endpoints["gs1"]] == ["gs1-eth0"]


def test_overlapping_passes_get_separate_slots_and_isls_dedicated_links():
    plan = ContactPlan(EPOCH, nodes("gs1", "s1", "s2", max_links=2),
                       both("gs1", "s1", 0, 10) + both("gs1", "s2", 5, 15)
                       + both("s1", "s2", 0, 30, kind="isl"))
    lay = plan_layout(plan)
    assert len(lay.node_endpoints["gs1"]) == 2
    isl = [p for p in lay.periods if p.kind == "isl"]
    assert len(isl) == 1 and lay.endpoints[isl[0].ep_a].kind == "isl"
    # every contact maps to the period that carries it
    assert all(i >= 0 for i in lay.contact_period)


def test_long_names_fall_back_to_eth_and_bad_names_are_refused():
    plan = ContactPlan(EPOCH, nodes("puntaarenas", "sat1"), both("puntaarenas", "sat1", 0, 5))
    lay = plan_layout(plan)
    assert lay.endpoints[lay.node_endpoints["puntaarenas"][0]].ifname == "eth0"
    assert lay.endpoints[lay.node_endpoints["sat1"][0]].ifname == "sat1-eth0"
    bad = ContactPlan(EPOCH, nodes("gs/1", "sat1"), both("gs/1", "sat1", 0, 5))
    with pytest.raises(InputError, match="gs/1"):
        plan_layout(bad)
    with pytest.raises(InputError, match="run name"):
        check_run_name("Bad-Run-Name")


def test_timeline_reports_carrier_changes_and_delay_steps():
    samples = ((0.0, 0.010), (10.0, 0.020))
    plan = ContactPlan(EPOCH, nodes("gs1", "s1"),
                       both("gs1", "s1", 0, 10, samples=samples) + both("gs1", "s1", 15, 20))
    tl = Timeline(plan, plan_layout(plan))
    ch = tl.advance(0.0)
    assert len(ch.up) == 1 and len(ch.params) == 2
    assert ch.params[0].delay_s == pytest.approx(0.010)
    assert len(tl.advance(0.005)) == 0  # 5 µs of change: below the 100 µs step
    ch = tl.advance(5.0)
    assert [p.delay_s for p in ch.params] == pytest.approx([0.015, 0.015])
    ch = tl.advance(12.0)
    assert len(ch.down) == 1 and ch.up == []
    ch = tl.advance(15.0)
    assert len(ch.up) == 1 and ch.params[0].delay_s == pytest.approx(0.010)


def test_timeline_applies_rate_steps_within_a_contact():
    rates = ((0.0, 0.0), (2.0, 4e6), (5.0, 8e6), (8.0, 4e6))
    cs = [Contact(a, b, 0, 10, 5e6, 0.01, "gsl", 0.01, rate_samples=rates)
          for a, b in (("gs1", "s1"), ("s1", "gs1"))]
    plan = ContactPlan(EPOCH, nodes("gs1", "s1"), cs)
    tl = Timeline(plan, plan_layout(plan))
    ch = tl.advance(0.0)
    # below every MODCOD: the link is up but carries nothing
    assert [(p.rate_bps, p.loss) for p in ch.params] == [(5e6, 1.0)] * 2
    assert len(tl.advance(1.9)) == 0
    ch = tl.advance(2.0)
    assert [(p.rate_bps, p.loss, p.delay_s) for p in ch.params] == [(4e6, 0.01, 0.01)] * 2
    assert len(tl.advance(4.0)) == 0
    assert [p.rate_bps for p in tl.advance(6.5).params] == [8e6, 8e6]  # a step skipped over
    assert [p.rate_bps for p in tl.advance(9.0).params] == [4e6, 4e6]
    assert tl.applied[0][1:] == (4e6, 0.01)


def test_one_way_contact_end_stops_only_that_direction():
    cs = [Contact("gs1", "s1", 0, 5, 1e6, 0.01, "gsl"), Contact("s1", "gs1", 0, 10, 1e6, 0.01, "gsl")]
    plan = ContactPlan(EPOCH, nodes("gs1", "s1"), cs)
    lay = plan_layout(plan)
    tl = Timeline(plan, lay)
    tl.advance(0)
    ch = tl.advance(6)
    assert ch.down == [] and len(ch.stopped) == 1
    assert lay.endpoints[ch.stopped[0]].node == "gs1"


def test_route_messages_are_valid_rtnetlink():
    blob = route_messages(np.array([0x0A000005]), np.array([7]), np.array([0x0A000002]), 0x0A000001)
    ln, mtype, flags = struct.unpack_from("=LHH", blob, 0)
    assert ln == len(blob) == 60 and mtype == 24
    assert blob[-4:] == socket.inet_aton("10.0.0.1")
    assert socket.inet_aton("10.0.0.5") in blob and socket.inet_aton("10.0.0.2") in blob


def test_plan_too_big_for_memory_is_refused_before_building(monkeypatch):
    from netemu.emulator import emulation

    plan = ContactPlan(EPOCH, nodes("gs1", "s1"), both("gs1", "s1", 0, 10))
    monkeypatch.setattr(emulation, "_mem_available", lambda: 1_000_000)
    with pytest.raises(InputError, match="GiB"):
        emulation.Emulation(plan, run_name="temem")
    monkeypatch.undo()
    e = emulation.Emulation(plan, run_name="temem")  # constructing builds nothing
    assert not e._started
