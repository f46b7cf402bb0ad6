"""The opportunistic routers' defining behaviour, and the router registry."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.routing import available_routers, check_router_params, get_router
from netemu.routing.base import BundleInfo, Router
from netemu.routing.direct import DirectRouter
from netemu.routing.epidemic import EpidemicRouter
from netemu.routing.first_contact import FirstContactRouter
from netemu.routing.prophet import ProphetRouter
from netemu.routing.spray import SprayAndWaitRouter
from netemu.routing.static import StaticRouter

PLAN = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc), {}, [])


def b(dest="d", *, bid="b1", prev=None, copies=1, deadline=1e9) -> BundleInfo:
    return BundleInfo(bid, "a", dest, 1000, deadline_s=deadline, previous_hop=prev, copies=copies)


def nodes(d) -> list[tuple[str, int]]:
    return [(h.node, h.copies) for h in d.hops]


# --- registry ---------------------------------------------------------------------------


def test_registry_names_and_classes():
    assert available_routers() == ["cgr", "direct", "epidemic", "first-contact", "prophet",
                                   "spray-and-wait", "static"]
    for name in available_routers():
        cls = get_router(name)
        assert issubclass(cls, Router) and cls.name == name
    assert get_router("Spray_And_Wait") is SprayAndWaitRouter


def test_registry_unknown_name_lists_choices():
    with pytest.raises(InputError, match="cgr, direct, epidemic"):
        get_router("ospf")


# --- epidemic ---------------------------------------------------------------------------


def test_epidemic_copies_to_every_neighbour_lacking_the_bundle():
    r = EpidemicRouter("a", PLAN)
    r.metadata_from("b", {"summary": ["b1"]}, 0.0)  # b already has it
    d = r.route(b(prev="p"), 0.0, frozenset({"b", "c", "e", "p"}))
    assert nodes(d) == [("c", 1), ("e", 1)]  # not b (has it), not p (sent it to us)
    assert d.keep


def test_epidemic_does_not_resend_to_a_node_that_has_it():
    r = EpidemicRouter("a", PLAN)
    r.route(b(), 0.0, frozenset({"c"}))
    r.sent(b(), "c", 1.0)
    d = r.route(b(), 2.0, frozenset({"c"}))
    assert d.hops == () and d.keep
    # A new contact later still gets it.
    assert nodes(r.route(b(), 3.0, frozenset({"c", "e"}))) == [("e", 1)]


def test_epidemic_summary_vector_lists_held_bundles_and_drops_expired():
    r = EpidemicRouter("a", PLAN)
    r.route(b(bid="x", deadline=100), 0.0, frozenset())
    r.route(b(bid="y", deadline=10), 0.0, frozenset())
    assert r.metadata_for("c", 5.0) == {"summary": ["x", "y"]}
    assert r.metadata_for("c", 50.0) == {"summary": ["x"]}


# --- spray-and-wait ----------------------------------------------------------------------


def test_spray_and_wait_halves_copies_then_waits_for_destination():
    r = SprayAndWaitRouter("a", PLAN, copies=8)
    d = r.route(b(), 0.0, frozenset({"n1"}))
    assert nodes(d) == [("n1", 4)] and d.keep
    r.sent(b(), "n1", 0.0)
    assert r.copies_held("b1") == 4
    d = r.route(b(), 10.0, frozenset({"n2"}))
    assert nodes(d) == [("n2", 2)]
    r.sent(b(), "n2", 10.0)
    d = r.route(b(), 20.0, frozenset({"n3"}))
    assert nodes(d) == [("n3", 1)]
    r.sent(b(), "n3", 20.0)
    assert r.copies_held("b1") == 1
    # Wait phase: one copy left, only the destination gets it.
    d = r.route(b(), 30.0, frozenset({"n4", "n5"}))
    assert d.hops == () and d.keep and "wait" in d.reason
    d = r.route(b(), 40.0, frozenset({"n4", "d"}))
    assert nodes(d) == [("d", 1)] and not d.keep


def test_spray_and_wait_splits_among_several_neighbours_at_once():
    r = SprayAndWaitRouter("a", PLAN, copies=8)
    d = r.route(b(), 0.0, frozenset({"x", "y", "z", "w"}))
    assert nodes(d) == [("w", 4), ("x", 2), ("y", 1)]  # 1 left: z must wait


def test_spray_and_wait_relay_uses_the_copies_it_was_given():
    r = SprayAndWaitRouter("r", PLAN, copies=8)
    d = r.route(b(prev="a", copies=1), 0.0, frozenset({"x", "a"}))
    assert d.hops == ()  # a relay with one copy waits
    r2 = SprayAndWaitRouter("r", PLAN, copies=8)
    d = r2.route(b(prev="a", copies=4), 0.0, frozenset({"x", "a"}))
    assert nodes(d) == [("x", 2)]


# --- PRoPHET -----------------------------------------------------------------------------


def test_prophet_encounter_aging_and_repeat_encounter():
    r = ProphetRouter("a", PLAN)
    assert r.encounter("b", 0.0) == 0.5  # first encounter: P_encounter_first
    # 600 s later: 20 time units of 30 s age it to 0.5 * 0.999^20 = 0.490094;
    # intvl 600 s ≥ I_typ 300 s so P_encounter = 0.7:
    # 0.490094 + (1 - 0.01 - 0.490094) * 0.7 = 0.840028
    assert r.encounter("b", 600.0) == pytest.approx(0.8400283, abs=1e-7)


def test_prophet_encounter_soon_after_the_last_scales_p_encounter():
    r = ProphetRouter("a", PLAN, time_unit_s=1e9)  # no aging in this test
    r.encounter("b", 0.0)
    # 150 s after the last encounter (< I_typ = 300 s): P_encounter = 0.7 * 150/300 = 0.35
    # 0.5 + (0.99 - 0.5) * 0.35 = 0.6715
    assert r.encounter("b", 150.0) == pytest.approx(0.6715)


def test_prophet_transitivity_takes_the_max():
    r = ProphetRouter("a", PLAN, time_unit_s=1e9)
    r.encounter("b", 0.0)  # P(a,b) = 0.5
    r.p["e"] = 0.4
    r.metadata_from("b", {"p": {"c": 0.8, "e": 0.3, "a": 0.9}}, 0.0)
    assert r.p["c"] == pytest.approx(0.5 * 0.8 * 0.9)  # 0.36
    assert r.p["e"] == 0.4  # 0.5 * 0.3 * 0.9 = 0.135 < 0.4: kept
    assert "a" not in r.p  # never a predictability for itself


def test_prophet_aging_forgets_below_threshold():
    r = ProphetRouter("a", PLAN)
    r.encounter("b", 0.0)
    # 0.5 * 0.999^K < 0.1 once K > ln(0.2)/ln(0.999) = 1608.6 units
    r.age(1608 * 30.0)
    assert r.predictability("b") == pytest.approx(0.5 * 0.999**1608)
    r.age(1609 * 30.0)
    assert r.predictability("b") == 0.0


def test_prophet_grtr_forwards_only_to_better_neighbours():
    r = ProphetRouter("a", PLAN, time_unit_s=1e9)
    r.metadata_from("n1", {"p": {"d": 0.6}}, 0.0)
    r.metadata_from("n2", {"p": {"d": 0.2}}, 0.0)
    r.p["d"] = 0.3
    d = r.route(b(), 0.0, frozenset({"n1", "n2"}))
    assert nodes(d) == [("n1", 1)] and d.keep
    d = r.route(b(), 0.0, frozenset({"n2", "d"}))
    assert nodes(d) == [("d", 1)]


def test_prophet_metadata_carries_predictabilities():
    r = ProphetRouter("a", PLAN)
    r.contact_started("b", 0.0)
    assert r.metadata_for("b", 0.0)["p"] == {"b": 0.5}


def test_unknown_or_bad_params_are_clear_errors():
    with pytest.raises(InputError, match="did you mean 'gamma'") as e:
        ProphetRouter("a", PLAN, gama=0.9)
    assert e.value.field == "routing.gama"
    with pytest.raises(InputError, match="unknown parameter 'copy'"):
        SprayAndWaitRouter("a", PLAN, copy=4)
    with pytest.raises(InputError, match="≥ 1"):
        SprayAndWaitRouter("a", PLAN, copies=0)
    with pytest.raises(InputError, match="max_routes"):
        get_router("cgr")("a", PLAN, max_route=3)
    with pytest.raises(InputError, match="whole number"):
        get_router("cgr")("a", PLAN, max_routes=2.5)
    with pytest.raises(InputError, match="expected a number"):
        ProphetRouter("a", PLAN, beta="high")
    with pytest.raises(InputError):
        EpidemicRouter("a", PLAN, copies=3)
    with pytest.raises(InputError, match="unknown parameter"):
        check_router_params("static", {"algorithm": "static", "route": {}})
    check_router_params("cgr", {"algorithm": "cgr", "max_routes": 3})


# --- static, first contact ---------------------------------------------------------------


def test_static_routes_follow_the_table():
    r = StaticRouter("a", PLAN, routes={"d": ["x", "y"]}, default="gw")
    assert nodes(r.route(b(), 0.0, frozenset({"x", "y"}))) == [("x", 1)]
    assert nodes(r.route(b(), 0.0, frozenset({"y"}))) == [("y", 1)]
    assert r.route(b(), 0.0, frozenset({"z"})).hops == ()
    assert nodes(r.route(b("q"), 0.0, frozenset({"gw"}))) == [("gw", 1)]
    assert nodes(r.route(b(), 0.0, frozenset({"d", "x"}))) == [("d", 1)]


def test_first_contact_hands_over_its_only_copy():
    r = FirstContactRouter("a", PLAN)
    d = r.route(b(prev="m"), 0.0, frozenset({"m", "q", "p"}))
    assert nodes(d) == [("p", 1)] and not d.keep
    assert nodes(r.route(b(), 0.0, frozenset({"q", "d"}))) == [("d", 1)]
    assert r.route(b(prev="m"), 0.0, frozenset({"m"})).hops == ()


def test_direct_goes_to_the_destination_or_the_default():
    r = DirectRouter("a", PLAN, default="gw")
    assert nodes(r.route(b(), 0.0, frozenset({"d", "gw"}))) == [("d", 1)]
    assert nodes(r.route(b(), 0.0, frozenset({"gw"}))) == [("gw", 1)]
    assert r.route(b(), 0.0, frozenset({"x"})).hops == ()
    assert DirectRouter("a", PLAN).route(b(), 0.0, frozenset({"gw"})).hops == ()
    with pytest.raises(InputError, match="unknown parameter 'defualt'"):
        DirectRouter("a", PLAN, defualt="gw")
