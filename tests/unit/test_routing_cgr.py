"""Contact graph routing: the CGR tutorial's worked example, hand-built plans for the
per-bundle checks, and random plans against an independent brute-force search."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.routing.base import BundleInfo
from netemu.routing.cgr import CGRRouter, best_route, estimated_size_bytes, k_routes

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
VECTOR = Path(__file__).resolve().parents[1] / "data" / "cgr-tutorial.md"

# The plan of Fraire, De Jonckère & Burleigh, "Routing in the Space Internet: a contact
# graph routing tutorial" (JNCA 2021), as in tests/data/cgr-tutorial.md.
TUTORIAL_ION = """\
a contact +0 +60 1 2 1
a contact +0 +60 2 1 1
a contact +0 +60 2 3 1
a contact +0 +60 3 2 1
a contact +0 +60 1 3 1
a contact +0 +60 3 1 1
a contact +0 +30 3 4 1
a contact +0 +30 4 3 1
a contact +10 +20 1 5 1
a contact +10 +20 5 1 1
a contact +0 +10 4 5 1
a contact +0 +10 5 4 1
a contact +30 +40 4 5 1
a contact +30 +40 5 4 1
a contact +50 +60 4 5 1
a contact +50 +60 5 4 1
a range +0 +60 1 2 1
a range +0 +60 1 3 1
a range +0 +60 2 3 1
a range +0 +60 3 4 1
a range +0 +60 1 5 1
a range +0 +60 4 5 1
"""

# (arrival, [(from, to, start, end), ...]) — the tutorial's 7 routes for K = 10.
TUTORIAL_ROUTES = [
    (3, [(1, 3, 0, 60), (3, 4, 0, 30), (4, 5, 0, 10)]),
    (4, [(1, 2, 0, 60), (2, 3, 0, 60), (3, 4, 0, 30), (4, 5, 0, 10)]),
    (11, [(1, 5, 10, 20)]),
    (31, [(1, 3, 0, 60), (3, 4, 0, 30), (4, 5, 30, 40)]),
    (31, [(1, 2, 0, 60), (2, 3, 0, 60), (3, 4, 0, 30), (4, 5, 30, 40)]),
    (51, [(1, 2, 0, 60), (2, 3, 0, 60), (3, 4, 0, 30), (4, 5, 50, 60)]),
    (51, [(1, 3, 0, 60), (3, 4, 0, 30), (4, 5, 50, 60)]),
]


def tutorial_plan(unit_bytes: float = 1.0) -> ContactPlan:
    """The tutorial plan; ``unit_bytes`` scales its unit of volume (rate 1 unit/s)."""
    plan = ContactPlan.from_ion(TUTORIAL_ION)
    if unit_bytes != 1.0:
        plan.contacts[:] = [
            Contact(c.src, c.dst, c.start_s, c.end_s, c.rate_bps * unit_bytes, c.owlt_s)
            for c in plan.contacts
        ]
    return plan


def as_hops(route) -> list[tuple[int, int, float, float]]:
    return [(int(c.src[4:]), int(c.dst[4:]), c.start_s, c.end_s) for c in route.hops]


def bundle(dest: str, size: int = 1, *, deadline: float = 1e9, prev: str | None = None,
           bid: str = "b1", priority: int = 1) -> BundleInfo:
    return BundleInfo(bid, "src", dest, size, priority=priority, deadline_s=deadline,
                      previous_hop=prev)


def test_embedded_plan_is_the_shared_vector():
    block = re.search(r"```\n(.*?)```", VECTOR.read_text(), re.S).group(1)
    assert block.split() == TUTORIAL_ION.split()


def test_tutorial_best_route():
    r = best_route(tutorial_plan(), "ipn:1", "ipn:5", 0.0)
    assert r is not None
    assert r.arrival_s == 3
    assert as_hops(r) == [(1, 3, 0, 60), (3, 4, 0, 30), (4, 5, 0, 10)]
    assert r.next_hop == "ipn:3"


def test_tutorial_yen_routes_k10():
    routes = k_routes(tutorial_plan(), "ipn:1", "ipn:5", 0.0, k=10)
    assert len(routes) == 7
    assert [r.arrival_s for r in routes] == [a for a, _ in TUTORIAL_ROUTES]
    # Routes of equal arrival may come in either order: compare per arrival time.
    for arrival in {a for a, _ in TUTORIAL_ROUTES}:
        got = sorted(as_hops(r) for r in routes if r.arrival_s == arrival)
        want = sorted(h for a, h in TUTORIAL_ROUTES if a == arrival)
        assert got == want, arrival


def test_tutorial_forwarding_in_tutorial_units():
    """The tutorial's own model: unit volume, no per-bundle overhead. Route 1 wins;
    the projected arrival adds 1 s of transmission per hop to its best case of 3 s."""
    router = CGRRouter("ipn:1", tutorial_plan(), overhead_fraction=0, stack_overhead_bytes=0)
    d = router.route(bundle("ipn:5", 1, deadline=60), 0.0, frozenset({"ipn:2", "ipn:3"}))
    assert [h.node for h in d.hops] == ["ipn:3"]
    assert d.route == ("ipn:1", "ipn:3", "ipn:4", "ipn:5")
    assert d.projected_arrival_s == 6
    assert not d.keep


def test_tutorial_forwarding_with_ion_size_estimate():
    """With ION's estimate (size + max(size/16, 36) bytes) a unit of 1 kB: route 1."""
    router = CGRRouter("ipn:1", tutorial_plan(unit_bytes=1000))
    d = router.route(bundle("ipn:5", 1000, deadline=60), 0.0, frozenset())
    assert [h.node for h in d.hops] == ["ipn:3"]
    assert d.route == ("ipn:1", "ipn:3", "ipn:4", "ipn:5")
    # 1062.5 bytes at 1000 B/s per hop, 1 s light time per hop.
    assert d.projected_arrival_s == pytest.approx(3 * 1.0625 + 3)


def test_tutorial_one_byte_bundle_does_not_fit_ion_estimate():
    """Read literally (rate 1 byte/s), a 1-byte bundle is estimated at 37 bytes; every
    route ends in a 10-byte contact, so ION's CGR finds no usable route."""
    assert estimated_size_bytes(1) == 37
    router = CGRRouter("ipn:1", tutorial_plan())
    d = router.route(bundle("ipn:5", 1, deadline=60), 0.0, frozenset())
    assert d.hops == ()
    assert "volume" in d.reason


# --------------------------------------------------------------------------------------
# Hand-built plans


def plan_of(contacts: list[tuple[str, str, float, float, float, float]], conf=None) -> ContactPlan:
    names = sorted({c[0] for c in contacts} | {c[1] for c in contacts})
    nodes = {n: Node(n, i + 1) for i, n in enumerate(names)}
    out = []
    for i, (a, b, t0, t1, rate_Bps, owlt) in enumerate(contacts):
        out.append(Contact(a, b, t0, t1, rate_Bps * 8, owlt,
                           confidence=(conf or {}).get(i, 1.0)))
    return ContactPlan(EPOCH, nodes, out)


def two_paths() -> ContactPlan:
    # a→b directly (short, fast: 1,000 bytes of volume) or a→c→b (slower, plenty).
    return plan_of([
        ("a", "b", 0, 1, 1000, 0.1),
        ("a", "c", 0, 100, 1000, 1.0),
        ("c", "b", 0, 100, 1000, 1.0),
    ])


def test_contact_running_out_of_volume_moves_traffic_to_the_other_route():
    router = CGRRouter("a", two_paths())
    size = 500
    eccc = estimated_size_bytes(size)  # 536 bytes: the 1,000-byte contact holds one
    d1 = router.route(bundle("b", size, bid="b1"), 0.0, frozenset({"b", "c"}))
    assert d1.hops[0].node == "b"
    assert d1.projected_arrival_s == pytest.approx(eccc / 1000 + 0.1)
    d2 = router.route(bundle("b", size, bid="b2"), 0.0, frozenset({"b", "c"}))
    assert d2.hops[0].node == "c"
    assert d2.route == ("a", "c", "b")
    assert router.residual_volume(0) == pytest.approx(1000 - eccc)
    # The first send fails: its volume comes back and the direct contact is usable again.
    router.failed(bundle("b", size, bid="b1"), "b", 0.1)
    assert router.residual_volume(0) == pytest.approx(1000)
    d3 = router.route(bundle("b", size, bid="b3"), 0.1, frozenset({"b", "c"}))
    assert d3.hops[0].node == "b"


def test_depleted_contact_triggers_a_new_route_search():
    # The direct contact holds exactly one 464-byte bundle (estimated 500 bytes).
    plan = plan_of([("a", "b", 0, 10, 50, 0.1), ("a", "c", 0, 100, 1000, 1), ("c", "b", 0, 100, 1000, 1)])
    router = CGRRouter("a", plan, max_routes=1)
    d1 = router.route(bundle("b", 464, bid="x"), 0.0, frozenset())
    assert d1.route == ("a", "b")
    assert router.residual_volume(0) == 0
    # With one route per destination, only a recomputation can find the path via c.
    d2 = router.route(bundle("b", 100, bid="y"), 0.0, frozenset())
    assert d2.route == ("a", "c", "b")


def test_deadline_that_no_route_meets():
    router = CGRRouter("ipn:1", tutorial_plan(unit_bytes=1000))
    d = router.route(bundle("ipn:5", 1000, deadline=2.5), 0.0, frozenset())
    assert d.hops == ()
    assert "deadline" in d.reason
    assert router.backlog_bytes("ipn:3") == 0  # nothing reserved


def test_previous_hop_is_excluded():
    router = CGRRouter("ipn:1", tutorial_plan(unit_bytes=1000))
    d = router.route(bundle("ipn:5", 1000, deadline=60, prev="ipn:3"), 0.0, frozenset())
    assert d.hops[0].node == "ipn:2"
    assert d.route == ("ipn:1", "ipn:2", "ipn:3", "ipn:4", "ipn:5")


def test_only_route_through_previous_hop_gives_no_route():
    plan = plan_of([("a", "b", 0, 100, 1000, 1), ("b", "a", 0, 100, 1000, 1), ("b", "d", 0, 100, 1000, 1)])
    router = CGRRouter("a", plan)
    d = router.route(bundle("d", 100, prev="b"), 0.0, frozenset({"b"}))
    assert d.hops == ()
    assert "previous hop" in d.reason


def test_uncertain_first_contact_is_skipped():
    plan = plan_of([("a", "b", 0, 100, 1000, 0.1), ("a", "c", 0, 100, 1000, 1), ("c", "b", 0, 100, 1000, 1)],
                   conf={0: 0.5})
    d = CGRRouter("a", plan).route(bundle("b", 100), 0.0, frozenset())
    assert d.hops[0].node == "c"


def test_backlog_delays_the_projected_arrival():
    plan = plan_of([("a", "b", 0, 1000, 100, 0.5)])
    router = CGRRouter("a", plan)
    eccc = estimated_size_bytes(1600)  # 1,700 bytes = 17 s at 100 B/s
    d1 = router.route(bundle("b", 1600, bid="1"), 0.0, frozenset({"b"}))
    d2 = router.route(bundle("b", 1600, bid="2"), 0.0, frozenset({"b"}))
    assert d1.projected_arrival_s == pytest.approx(17 + 0.5)
    assert d2.projected_arrival_s == pytest.approx(34 + 0.5)
    assert router.backlog_bytes("b") == pytest.approx(2 * eccc)
    router.sent(bundle("b", 1600, bid="1"), "b", 17.0)
    assert router.backlog_bytes("b") == pytest.approx(eccc)
    assert router.residual_volume(0) == pytest.approx(100 * 1000 - 2 * eccc)  # still used


def test_asking_again_for_the_same_bundle_does_not_double_book():
    plan = plan_of([("a", "b", 0, 1000, 100, 0.5)])
    router = CGRRouter("a", plan)
    for _ in range(3):
        router.route(bundle("b", 1600, bid="same"), 0.0, frozenset({"b"}))
    assert router.backlog_bytes("b") == pytest.approx(estimated_size_bytes(1600))


def test_route_list_is_rebuilt_when_a_route_ends():
    router = CGRRouter("ipn:1", tutorial_plan(unit_bytes=1000))
    d0 = router.route(bundle("ipn:5", 1000, deadline=60, bid="1"), 0.0, frozenset())
    assert d0.hops[0].node == "ipn:3"
    # At t = 12 the 4→5 (0–10) contact is over; the direct 1→5 (10–20) contact is best.
    d1 = router.route(bundle("ipn:5", 1000, deadline=60, bid="2"), 12.0, frozenset())
    assert d1.route == ("ipn:1", "ipn:5")
    assert d1.projected_arrival_s == pytest.approx(12 + 1.0625 + 1)


def test_priority_sees_only_equal_or_higher_backlog():
    plan = plan_of([("a", "b", 0, 1000, 100, 0)])
    router = CGRRouter("a", plan)
    router.route(bundle("b", 1600, bid="bulk", priority=0), 0.0, frozenset())
    d = router.route(bundle("b", 1600, bid="exp", priority=2), 0.0, frozenset())
    assert d.projected_arrival_s == pytest.approx(17)


def test_unknown_destination_and_self():
    router = CGRRouter("a", two_paths())
    assert router.route(bundle("zz"), 0.0, frozenset()).hops == ()
    assert "not in the contact plan" in router.route(bundle("zz"), 0.0, frozenset()).reason
    assert router.route(bundle("a"), 0.0, frozenset()).hops == ()


def test_next_hop_can_be_a_future_contact():
    plan = plan_of([("a", "b", 50, 100, 1000, 1)])
    d = CGRRouter("a", plan).route(bundle("b", 100), 0.0, frozenset())
    assert d.hops[0].node == "b"
    assert "t=50" in d.reason
    assert d.projected_arrival_s == pytest.approx(50 + estimated_size_bytes(100) / 1000 + 1)


# --------------------------------------------------------------------------------------
# Random plans against independent brute force


def brute_earliest_arrival(contacts, source, dest, t0, horizon):
    """Breadth-first search over the time-expanded graph with 1-second steps: vertex
    (node, t); waiting moves to (node, t+1); a contact up at t moves to (dst, t+owlt).
    Integer times only. Returns the earliest t at which ``dest`` is reached."""
    reached = {source: t0}
    for t in range(t0, horizon + 1):
        changed = True
        while changed:  # zero light-time hops within the same second
            changed = False
            for a, b, s, e, owlt in contacts:
                if a in reached and reached[a] <= t and s <= t < e:
                    arr = t + owlt
                    if arr < reached.get(b, horizon + 10**6):
                        reached[b] = arr
                        changed = True
    return reached.get(dest) if dest != source else None


def brute_all_paths(contacts, source, dest, t0):
    """Every feasible node-simple sequence of contacts from source to dest, by DFS."""
    out = {}

    def dfs(node, t, path, visited):
        for i, (a, b, s, e, owlt) in enumerate(contacts):
            if a != node or b in visited or e <= t:
                continue
            arr = max(t, s) + owlt
            if b == dest:
                out[(*path, i)] = arr
            else:
                dfs(b, arr, (*path, i), visited | {b})

    dfs(source, t0, (), {source})
    return out


contact_st = st.tuples(
    st.integers(0, 4), st.integers(0, 4),  # from, to
    st.integers(0, 20), st.integers(1, 12),  # start, duration
    st.integers(0, 3),  # light time
)


def random_plan(raw):
    contacts = [(f"n{a}", f"n{b}", s, s + d, o) for a, b, s, d, o in raw if a != b]
    nodes = {f"n{i}": Node(f"n{i}", i + 1) for i in range(5)}
    plan = ContactPlan(EPOCH, nodes, [Contact(a, b, s, e, 8000.0, o) for a, b, s, e, o in contacts])
    # ContactPlan sorts its contacts; read them back in that order for the brute force.
    flat = [(c.src, c.dst, int(c.start_s), int(c.end_s), int(c.owlt_s)) for c in plan.contacts]
    return plan, flat


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(contact_st, max_size=14), st.integers(0, 15), st.integers(1, 4))
def test_best_arrival_matches_time_expanded_brute_force(raw, t0, dest_i):
    plan, flat = random_plan(raw)
    want = brute_earliest_arrival(flat, "n0", f"n{dest_i}", t0, horizon=60)
    got = best_route(plan, "n0", f"n{dest_i}", t0)
    if want is None:
        assert got is None
    else:
        assert got is not None
        assert got.arrival_s == want
        # and the route is a real one: chained contacts, each used while up
        t, node = t0, "n0"
        for c in got.hops:
            assert c.src == node and c.end_s > t
            t, node = max(t, c.start_s) + c.owlt_s, c.dst
        assert node == f"n{dest_i}" and t == want


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(contact_st, max_size=10), st.integers(0, 15), st.integers(1, 4))
def test_exhaustive_yen_enumerates_every_simple_route_in_order(raw, t0, dest_i):
    plan, flat = random_plan(raw)
    want = brute_all_paths(flat, "n0", f"n{dest_i}", t0)
    routes = k_routes(plan, "n0", f"n{dest_i}", t0, k=10_000)
    index = {id(c): i for i, c in enumerate(plan.contacts)}
    got = {tuple(index[id(c)] for c in r.hops): r.arrival_s for r in routes}
    assert len(got) == len(routes)  # no duplicates
    assert got == want
    arrivals = [(r.arrival_s, r.n_hops) for r in routes]
    assert [a for a, _ in arrivals] == sorted(a for a, _ in arrivals)


def test_contact_lost_early_is_routed_around_until_it_comes_back():
    router = CGRRouter("a", two_paths())
    assert router.route(bundle("b", 100, bid="1"), 0.0, frozenset()).hops[0].node == "b"
    router.failed(bundle("b", 100, bid="1"), "b", 0.2)
    router.contact_ended("b", 0.2)  # planned until t=1: a failure
    assert router.route(bundle("b", 100, bid="2"), 0.3, frozenset()).route == ("a", "c", "b")
    router.contact_started("b", 0.4)
    assert router.route(bundle("b", 100, bid="3"), 0.4, frozenset()).hops[0].node == "b"


def test_reservations_of_expired_bundles_are_given_back():
    plan = plan_of([("a", "b", 0, 1000, 100, 0.5)])
    router = CGRRouter("a", plan)
    router.route(bundle("b", 1600, bid="old", deadline=30), 0.0, frozenset())
    assert router.backlog_bytes("b") == pytest.approx(1700)
    d = router.route(bundle("b", 1600, bid="new"), 40.0, frozenset({"b"}))
    assert router.backlog_bytes("b") == pytest.approx(1700)  # only the new one
    assert router.residual_volume(0) == pytest.approx(100 * 1000 - 1700)
    assert d.projected_arrival_s == pytest.approx(40 + 17 + 0.5)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(contact_st, max_size=12), st.lists(st.integers(1, 400), min_size=1, max_size=12),
       st.integers(1, 4))
def test_reservations_never_overbook_a_contact(raw, sizes, dest_i):
    plan, _ = random_plan(raw)
    # 8000 bit/s = 1,000 bytes/s: a few bundles fill a contact
    router = CGRRouter("n0", plan)
    for i, size in enumerate(sizes):
        d = router.route(bundle(f"n{dest_i}", size, bid=str(i), deadline=40), 0.0, frozenset())
        if d.hops:
            assert d.projected_arrival_s <= 40
    for c in range(len(plan.contacts)):
        assert router.residual_volume(c) >= -1e-9


# --- route_many: a batch gives exactly what route() gives bundle by bundle ---------------

batch_bundle_st = st.tuples(
    st.sampled_from(["n0", "n1", "n2", "n3", "n4", "elsewhere"]),  # destination
    st.integers(1, 3000),  # size: a few fill a 1,000 B/s contact
    st.integers(0, 2),  # priority
    st.sampled_from([math.inf, 8.0, 20.0, 45.0]),  # deadline
    st.sampled_from([None, "n1", "n2", "n3"]),  # previous hop
    st.integers(0, 15),  # bundle id: repeats re-route a bundle holding a reservation
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(contact_st, st.sampled_from([800.0, 8000.0, 80000.0])), max_size=12),
    st.lists(st.tuples(st.integers(0, 3), st.lists(batch_bundle_st, max_size=12)),
             min_size=1, max_size=4),
    st.integers(1, 4),
    st.sampled_from([(), ("n2",)]),
    st.lists(st.tuples(st.integers(0, 15), st.booleans()), max_size=4),
)
def test_route_many_equals_route_one_by_one(raw, steps, max_routes, excluded, events):
    contacts = [Contact(f"n{a}", f"n{b}", s, s + d, rate, o)
                for (a, b, s, d, o), rate in raw if a != b]
    nodes = {f"n{i}": Node(f"n{i}", i + 1) for i in range(5)}
    plan = ContactPlan(EPOCH, nodes, contacts)
    params = {"max_routes": max_routes, "excluded": list(excluded)}
    one, many = CGRRouter("n0", plan, **params), CGRRouter("n0", plan, **params)
    t = 0.0
    for dt, raw_batch in steps:
        t += dt
        batch = [BundleInfo(f"b{i}", "n0", dest, size, priority=prio, deadline_s=deadline,
                            previous_hop=prev)
                 for dest, size, prio, deadline, prev, i in raw_batch]
        want = [one.route(b, t, frozenset()) for b in batch]
        got = many.route_many(batch, t, frozenset())
        assert got == want
        assert [d.route for d in got] == [d.route for d in want]
        assert many._consumed == one._consumed
        assert many._backlog == one._backlog
        assert many._reservations == one._reservations
        # between batches: some sent, some failed (volume given back)
        for i, ok in events:
            b = BundleInfo(f"b{i}", "n0", "n1", 1)
            for r in (one, many):
                (r.sent if ok else r.failed)(b, "n1", t)


def test_a_tie_in_arrival_keeps_the_route_reaching_each_node_earliest():
    """docs/routing.md, "Ties in arrival": 1→2→3 reaches 3 at 0.2 and 1→3 at 0.5; both
    wait there for 3→4 at t=10. The search (like ION's, which keeps the first predecessor
    found) returns the route reaching 3 first, though it has one hop more; Yen's second
    route is the other."""
    plan = ContactPlan.from_ion(
        "a contact +0 +100 1 2 1000\na contact +0 +100 2 3 1000\n"
        "a contact +0 +100 1 3 1000\na contact +10 +100 3 4 1000\n"
        "a range +0 +100 1 2 0.1\na range +0 +100 2 3 0.1\n"
        "a range +0 +100 1 3 0.5\na range +0 +100 3 4 1\n")
    routes = k_routes(plan, "ipn:1", "ipn:4", 0.0, 3)
    assert [(r.nodes, r.arrival_s) for r in routes] == [
        (("ipn:1", "ipn:2", "ipn:3", "ipn:4"), 11.0), (("ipn:1", "ipn:3", "ipn:4"), 11.0)]


def test_largest_piece_is_what_the_contact_volume_carries():
    """A 10,000-byte contact (1,000 B/s for 10 s): the largest piece is the largest size
    whose estimate (size + size/16) fits it; a bundle that fits whole gets None."""
    plan = ContactPlan(EPOCH, {"A": Node("A", 1), "B": Node("B", 2)},
                       [Contact("A", "B", 0, 10, 8_000.0, 0.01)])
    r = CGRRouter("A", plan)
    big = BundleInfo("b1", "A", "B", 25_000, deadline_s=3600)
    assert not r.route(big, 0.0, frozenset({"B"})).hops
    piece = r.largest_piece(big, 0.0, frozenset({"B"}))
    assert piece is not None
    assert estimated_size_bytes(piece) <= 10_000 < estimated_size_bytes(piece + 1)
    assert r.largest_piece(BundleInfo("b3", "A", "B", 100, deadline_s=3600), 0.0,
                           frozenset({"B"})) is None  # fits whole
    assert r.route(BundleInfo("b2", "A", "B", piece, deadline_s=3600), 0.0,
                   frozenset({"B"})).hops
    assert r.largest_piece(big, 0.0, frozenset({"B"})) is None  # volume all booked
