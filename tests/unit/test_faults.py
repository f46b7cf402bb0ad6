"""The ``faults:`` section: checked with file/line/field errors, scheduled (random outages
seeded), and applied by the link timeline while the contact plan stays as it was."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from netemu.config import Fields, parse_yaml
from netemu.emulator.faults import FaultTimeline
from netemu.emulator.layout import plan_layout
from netemu.emulator.timeline import Timeline
from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.plan.faults import Fault, parse_faults, schedule_faults

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
NODES = ["s1", "s2", "s3", "gs1"]


def both(a, b, s, e, kind="isl", rate=1e6):
    return [Contact(a, b, s, e, rate, 0.01, kind), Contact(b, a, s, e, rate, 0.01, kind)]


def plan() -> ContactPlan:
    nodes = {n: Node(n, i + 1, "ground" if n.startswith("gs") else "satellite",
                     1 if n.startswith("gs") else 0) for i, n in enumerate(NODES)}
    return ContactPlan(EPOCH, nodes, both("s1", "s2", 0, 1000) + both("s2", "s3", 0, 1000)
                       + both("gs1", "s1", 100, 400, kind="gsl"))


def section(text: str) -> Fields:
    doc = parse_yaml("x: 0\nfaults:\n" + text, source="sc.yaml")
    return Fields(doc["faults"], source="sc.yaml", path="faults", line=2)


def parse(text: str):
    return parse_faults(section(text), NODES, ["gs1"])


def test_every_kind_parses():
    specs = parse("""\
  - {kind: link_outage, link: [s1, s2], start_s: 10, duration_s: 20}
  - {kind: link_outage, random: isl, rate_per_h: 60, duration_s: 5, seed: 4}
  - {kind: link_degraded, link: [s1, gs1], start_s: 0, duration_s: 9, extra_loss: 0.5}
  - {kind: station_outage, station: gs1, start_s: 1, duration_s: 2, name: rain}
  - {kind: node_crash, node: s2, start_s: 30, duration_s: 40}
""")
    assert [s.kind for s in specs] == ["link_outage", "link_outage", "link_degraded",
                                       "station_outage", "node_crash"]
    assert specs[0].nodes == ("s1", "s2") and specs[1].random == "isl"
    assert specs[3].name == "rain" and specs[4].duration_s == 40


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("  - {kind: link_outage, link: [s1, s9], start_s: 1, duration_s: 2}\n", 3,
     "faults[0].link", "no node named 's9'"),
    ("  - {kind: link_outrage, link: [s1, s2], start_s: 1, duration_s: 2}\n", 3,
     "faults[0].kind", "did you mean 'link_outage'"),
    ("  - {kind: link_outage, link: [s1, s2], start_s: 1}\n", 3,
     "faults[0].duration_s", "missing required key"),
    ("  - {kind: link_outage, link: [s1, s2], start_s: 1, duration_s: 1}\n"
     "  - {kind: station_outage, station: s1, start_s: 1, duration_s: 2}\n", 4,
     "faults[1].station", "no ground station named 's1'"),
    ("  - {kind: node_crash, node: s1, start_s: 1, duration_s: 2, extra_loss: 0.1}\n", 3,
     "faults[0].extra_loss", "does not apply to node_crash"),
    ("  - {kind: link_degraded, link: [s1, s2], start_s: 1, duration_s: 2}\n", 3,
     "faults[0]", "extra_loss > 0 or rate_factor < 1"),
    ("  - {kind: link_degraded, link: [s1, s2], start_s: 1, duration_s: 2, rate_factor: 2}\n",
     3, "faults[0].rate_factor", "must be ≤ 1"),
    ("  - {kind: link_outage, random: laser, rate_per_h: 1, duration_s: 2}\n", 3,
     "faults[0].random", "not allowed"),
    ("  - {kind: link_outage, link: [s1, s2], start_s: 1, duration_s: 2, name: a/b}\n", 3,
     "faults[0].name", "letters, digits"),
])
def test_bad_items_name_file_line_and_field(text, line, field, words):
    with pytest.raises(InputError) as e:
        parse(text)
    assert e.value.source == "sc.yaml" and e.value.line == line, str(e.value)
    assert e.value.field == field and words in str(e.value), str(e.value)


def test_a_fault_on_a_link_the_plan_never_has_is_refused():
    specs = parse("  - {kind: link_outage, link: [s1, s3], start_s: 1, duration_s: 2}\n")
    with pytest.raises(InputError, match="s1 and s3 have no contact"):
        schedule_faults(specs, plan(), 0, 1000)


def test_random_outages_are_seeded_and_fall_on_links_that_are_up():
    text = "  - {kind: link_outage, random: gsl, rate_per_h: 360, duration_s: 5, seed: %d}\n"
    a = schedule_faults(parse(text % 1), plan(), 0, 1000)
    assert a == schedule_faults(parse(text % 1), plan(), 0, 1000)
    assert a != schedule_faults(parse(text % 2), plan(), 0, 1000)
    # the only GSL is up over [100, 400): every outage starts then, on that link
    assert a and all(100 <= f.start_s < 400 and f.nodes == ("gs1", "s1") for f in a)
    assert [f.id for f in a[:2]] == ["link_outage-0.0", "link_outage-0.1"]


def _tl(faults):
    p = plan()
    lay = plan_layout(p)
    period = {frozenset((q.a, q.b)): q.index for q in lay.periods}
    return FaultTimeline(p, lay, faults), lay, period


def test_outage_takes_the_link_down_and_back_while_the_plan_keeps_it():
    out = Fault("cut", "link_outage", ("s1", "s2"), 50.0, 80.0)
    tl, lay, period = _tl([out])
    s12 = period[frozenset(("s1", "s2"))]
    ch = tl.advance(0.0)
    assert s12 in ch.up and not ch.faults
    ch = tl.advance(60.0)
    assert ch.down == [s12] and s12 in ch.faulted and ch.faults == [("started", out)]
    assert s12 not in tl.effective and s12 in tl.up_periods  # the plan still has it up
    ch = tl.advance(70.0)
    assert not ch.params or all(lay.contact_period[d.contact] != s12 for d in ch.params)
    ch = tl.advance(80.0)
    assert ch.up == [s12] and ch.faults == [("ended", out)]
    # both directions configured again, as the plan says
    assert {(d.rate_bps, d.loss) for d in ch.params
            if lay.contact_period[d.contact] == s12} == {(1e6, 0.0)}
    assert len([d for d in ch.params if lay.contact_period[d.contact] == s12]) == 2


def test_station_outage_hides_a_pass_that_starts_during_it():
    out = Fault("rain", "station_outage", ("gs1",), 90.0, 150.0)
    tl, _lay, period = _tl([out])
    gsl = period[frozenset(("gs1", "s1"))]
    tl.advance(0.0)
    ch = tl.advance(100.0)  # the pass starts under the outage: no carrier
    assert gsl not in ch.up and gsl not in tl.effective
    ch = tl.advance(150.0)
    assert ch.up == [gsl] and gsl in ch.faulted
    ch = tl.advance(400.0)  # the planned end: down, not a fault's doing
    assert ch.down == [gsl] and gsl not in ch.faulted


def test_degraded_link_gets_lower_rate_and_more_loss_then_its_own_again():
    deg = Fault("fade", "link_degraded", ("s2", "s3"), 10.0, 20.0, extra_loss=0.5,
                rate_factor=0.25)
    tl, lay, period = _tl([deg])
    s23 = period[frozenset(("s2", "s3"))]
    tl.advance(0.0)
    ch = tl.advance(10.0)
    mine = [d for d in ch.params if lay.contact_period[d.contact] == s23]
    assert len(mine) == 2 and {(d.rate_bps, d.loss) for d in mine} == {(250000.0, 0.5)}
    assert not ch.up and not ch.down
    ch = tl.advance(20.0)
    assert {(d.rate_bps, d.loss) for d in ch.params
            if lay.contact_period[d.contact] == s23} == {(1e6, 0.0)}


def test_a_new_time_scale_reshapes_what_carries_now_with_its_faults():
    """What the driver shapes anew when the run's time scale changes: every direction
    carrying now with its scenario values, none on a link that is out, degraded ones
    degraded."""
    out = Fault("cut", "link_outage", ("s1", "s2"), 50.0, 80.0)
    deg = Fault("fade", "link_degraded", ("s2", "s3"), 10.0, 200.0, extra_loss=0.5,
                rate_factor=0.25)
    tl, lay, period = _tl([out, deg])
    s12, s23, gsl = (period[frozenset(k)] for k in (("s1", "s2"), ("s2", "s3"), ("gs1", "s1")))

    def now() -> set:
        return {(lay.contact_period[d.contact], d.rate_bps, d.loss, d.delay_s)
                for d in tl.current_params()}

    tl.advance(0.0)
    tl.advance(60.0)  # s1-s2 out, s2-s3 degraded
    assert now() == {(s23, 250000.0, 0.5, 0.01)} and len(tl.current_params()) == 2
    tl.advance(150.0)  # s1-s2 back, the pass up
    assert now() == {(s12, 1e6, 0.0, 0.01), (s23, 250000.0, 0.5, 0.01), (gsl, 1e6, 0.0, 0.01)}
    assert len(tl.current_params()) == 6  # both directions of each
    plain = Timeline(plan(), lay)
    assert plain.current_params() == []  # nothing reported yet: nothing to reshape
    plain.advance(500.0)
    assert {lay.contact_period[d.contact] for d in plain.current_params()} == {s12, s23}


def test_without_faults_the_changes_are_the_plain_timelines():
    p = plan()
    lay = plan_layout(p)
    plain, faulty = Timeline(p, lay), FaultTimeline(p, lay, [])
    for t in (0.0, 100.0, 250.0, 400.0, 999.0):
        a, b = plain.advance(t), faulty.advance(t)
        assert (sorted(a.up), sorted(a.down), a.params) == (sorted(b.up), sorted(b.down),
                                                             b.params)
    assert faulty.next_event_s() == plain.next_event_s()


def test_fault_times_wake_the_driver():
    tl, _lay, _p = _tl([Fault("cut", "link_outage", ("s1", "s2"), 50.0, 80.0)])
    tl.advance(0.0)
    assert tl.next_event_s() == 50.0


def test_fault_records_and_what_each_fault_caught():
    import numpy as np

    from netemu.analysis.metrics import fault_records
    from netemu.analysis.traffic import fault_cost

    def ev(event, t, **kw):
        return {"topic": f"netemu/r1/fault/{kw.get('id', 'cut')}", "payload": {
            "event": event, "t_s": t, "id": "cut", "kind": "link_outage",
            "nodes": ["s1", "s2"], **kw}}

    recs = fault_records([ev("started", 100.0), ev("ended", 200.0)])
    assert recs == {"cut": {"kind": "link_outage", "nodes": ["s1", "s2"], "start_s": 100.0,
                            "end_s": 200.0}}
    assert fault_records([ev("started", 100.0)])["cut"]["end_s"] is None  # not ended
    # sends at 50, 90, 150, 250; the one at 50 arrived before the fault, the one at 250
    # was sent after it; 90 came 30 s late, 150 never came
    t = np.array([50.0, 90.0, 150.0, 250.0])
    sent = np.ones(4, dtype=bool)
    delivered = np.array([60.0, 220.0, np.nan, 260.0])
    arrival = np.array([60.0, 190.0, 160.0, 260.0])
    assert fault_cost(100.0, 200.0, t, sent, delivered, arrival) == {
        "in_transit": 2, "late": 1, "undelivered": 1}


def test_each_fault_counts_the_bundles_it_made_agents_hand_back_to_their_router(tmp_path):
    """``rerouted``: what the agents' logs say they gave back to the router because of
    the fault — about each other for a link fault's two ends; by or about the node for a
    station outage or a node crash — from its start to 30 s after its end."""
    import json

    from netemu.analysis.metrics import fault_rerouted

    def log(node, *lines):
        d = tmp_path / "agents" / node
        d.mkdir(parents=True, exist_ok=True)
        (d / "agent.jsonl").write_text("".join(
            json.dumps({"ts": ts, "node": node, "event": "returned_to_router",
                        "neighbour": nb, "bundles": n, "reason": "contact ended"}) + "\n"
            for ts, nb, n in lines) + '{"ts": 150, "event": "session_down"}\nnot json\n')

    log("s1", (120.0, "s2", 3), (125.0, "gs", 4), (229.0, "s2", 1), (400.0, "s2", 7))
    log("s2", (130.0, "s1", 2))
    log("gs", (110.0, "s1", 5))
    faults = {
        "cut": {"kind": "link_outage", "nodes": ["s1", "s2"], "start_s": 100.0,
                "end_s": 200.0},
        "rain": {"kind": "station_outage", "nodes": ["gs"], "start_s": 100.0,
                 "end_s": 150.0},
        "open": {"kind": "node_crash", "nodes": ["s2"], "start_s": 300.0, "end_s": None},
    }
    assert fault_rerouted(tmp_path, faults) == {
        "cut": 3 + 1 + 2,  # s1<->s2 within [100, 230]; not 400 (long after), not gs's
        "rain": 4 + 5,  # s1 about gs, and gs's own
        "open": 7,  # s1 about s2 at 400: the crash had not ended
    }
    assert fault_rerouted(tmp_path, {}) == {}
