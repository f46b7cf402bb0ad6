"""metrics.json's ``traffic`` and ``node_counters`` from a synthetic run directory: the
flows' sends and deliveries as the agents record them (restarts, cut lines, send times a
millisecond apart), CGR's projected arrivals as the yardstick, and the counters summed
per node kind."""

from __future__ import annotations

import csv
import json
import math

import pytest
from synthetic_run import add_counters, add_traffic, make_run

from netemu.analysis import expect, metrics
from netemu.analysis.traffic import traffic_metrics
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.routing.projection import Projector


@pytest.fixture
def run(tmp_path):
    r = make_run(tmp_path)
    add_traffic(r)
    add_counters(r)
    return r


def _projected(run, src: str, dst: str, t: float) -> float:
    a = Projector(ContactPlan.load(str(run / "plan.json"))).arrival(src, dst, t, 1000, 1, 3600)
    assert a is not None
    return a


def test_totals_count_each_send_once_and_judge_against_the_projection(run):
    m = metrics.compute(run)
    tr = m["traffic"]
    assert tr["flows"] == 3 and tr["service"] == 7 and tr["window_s"] == [0.0, 550.0]
    assert tr["scheduled"] == 6 and tr["sent"] == 6 and tr["delivered"] == 4
    assert tr["delivery_ratio"] == pytest.approx(4 / 6)
    assert tr["duplicates"] == 2 and tr["records_skipped"] == 1
    assert tr["latency_s"] == {"p50": pytest.approx(1.0, abs=1e-3), "p95": pytest.approx(1.85),
                               "max": pytest.approx(2.0)}
    # sends at 500 (down) and 450 (late) wait for the 600 s pass: after the window
    assert _projected(run, "sat-2", "gs-a", 500.0) > 550
    assert tr["expected"] == 4 and tr["expected_delivered"] == 4
    assert tr["expected_delivery_ratio"] == 1.0 and tr["no_route"] == 0
    late = sorted([150.5 - _projected(run, "gs-a", "sat-2", 150.0),
                   251.0 - _projected(run, "gs-a", "sat-2", 250.0),
                   101.0 - _projected(run, "sat-2", "gs-a", 100.0004),
                   302.0 - _projected(run, "sat-2", "gs-a", 300.0)])
    assert tr["latency_vs_projection_s"]["max"] == pytest.approx(late[-1], abs=1e-6)
    assert tr["latency_vs_projection_s"]["p50"] == pytest.approx(
        (late[1] + late[2]) / 2, abs=1e-6)
    assert tr["projection"]["sends"] == 6 and tr["projection"]["routing"] == "cgr"


def test_per_entry_name_and_per_flow_table(run):
    out = metrics.write(run)
    m = json.loads(out.read_text())
    down = m["traffic"]["by_name"]["down"]
    assert down["flows"] == 1 and down["sent"] == 3 and down["delivered"] == 2
    assert down["expected"] == 2 and down["latency_s"]["max"] == pytest.approx(2.0, abs=1e-3)
    assert m["traffic"]["by_name"]["late"]["delivery_ratio"] == 0.0
    with open(run / "traffic_flows.csv", newline="") as f:
        rows = {r["key"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"up:gs-a>sat-2", "down:sat-2>gs-a", "late:sat-1>gs-a"}
    assert rows["up:gs-a>sat-2"]["delivered"] == "2" and rows["up:gs-a>sat-2"]["sent"] == "2"
    assert rows["late:sat-1>gs-a"]["latency_p50_s"] == ""  # nothing delivered: empty


def test_a_delivery_whose_send_record_was_lost_still_counts(run):
    lines = (run / "agents" / "gs-a" / "traffic.jsonl").read_text().splitlines()
    kept = [ln for ln in lines if '"t_s": 250.0' not in ln]
    (run / "agents" / "gs-a" / "traffic.jsonl").write_text("\n".join(kept) + "\n")
    tr = traffic_metrics(run)
    assert tr is not None
    assert tr["by_name"]["up"]["sent"] == 1 and tr["by_name"]["up"]["delivered"] == 2
    assert tr["projection"]["sends"] == 6  # the lost send is projected from its delivery


def test_without_a_window_every_routable_send_is_expected(run):
    (run / "run.json").unlink()
    tr = traffic_metrics(run)
    assert tr is not None and tr["window_s"] is None and tr["scheduled"] is None
    assert tr["expected"] == 6 and tr["expected_delivered"] == 4


def test_no_traffic_file_no_traffic_metrics(tmp_path):
    m = metrics.compute(make_run(tmp_path))
    assert m["traffic"] is None and m["node_counters"] is None


def test_a_broken_traffic_file_is_named(run):
    (run / "traffic.json").write_text('{"flows": [{"id": 0}]}')
    with pytest.raises(InputError, match="traffic.json"):
        metrics.compute(run)


def test_counters_summed_per_node_kind_across_a_restart(run):
    nc = metrics.compute(run)["node_counters"]
    assert nc["nodes"] == 3
    sat, ground = nc["by_kind"]["satellite"], nc["by_kind"]["ground"]
    assert sat["nodes"] == 2 and sat["sent"] == 4 and sat["forwarded"] == 2
    assert sat["stored_bundles_end"] == 1
    # 5 + 4 at 20 s: sat-2 skipped its unchanged sample, still holding 4
    assert sat["stored_bundles_peak"] == 9 and sat["stored_bundles_peak_t_s"] == 20
    assert sat["stored_bytes_peak"] == 9000
    assert ground["delivered"] == 5 + 3 and ground["forwarded"] == 2  # restart at gs-a
    assert nc["by_kind"]["all"]["stored_bundles_peak"] == 9
    assert [(x["node"], x["stored_bundles"]) for x in nc["top_stored"]] == [
        ("sat-1", 5), ("sat-2", 4)]


def test_expect_reaches_the_traffic_figures(run):
    m = metrics.compute(run)
    exps = expect.parse([{"metric": "traffic.expected_delivery_ratio", "op": ">=",
                          "value": 0.99},
                         {"metric": "traffic.latency_vs_projection_s.p95", "op": "<=",
                          "value": 5},
                         {"metric": "traffic.by_name.down.delivered", "op": "==", "value": 2},
                         {"metric": "node_counters.by_kind.satellite.stored_bundles_peak",
                          "op": "==", "value": 9}])
    expect.validate(exps)
    outs = expect.evaluate(exps, m)
    assert [o.passed for o in outs] == [True, True, True, True], [o.message for o in outs]


@pytest.mark.parametrize(("name", "hint"), [
    ("traffic.delivery_ration", "traffic.delivery_ratio"),
    ("traffic.latency_vs_projection_s.p96", "traffic.latency_vs_projection_s.p95"),
    ("traffic.by_name.down.sendt", "traffic.by_name.NAME.sent"),
])
def test_expect_refuses_a_misspelt_traffic_figure_before_the_run(name, hint):
    exps = expect.parse([{"metric": name, "op": ">=", "value": 1}], source="s.yaml")
    with pytest.raises(InputError, match="did you mean") as e:
        expect.validate(exps)
    assert hint in str(e.value)


def test_without_a_plan_no_projection_figures(run):
    (run / "plan.json").unlink()
    tr = traffic_metrics(run)
    assert tr is not None and tr["expected"] is None and tr["no_route"] is None
    assert tr["latency_vs_projection_s"]["p95"] is None and tr["delivered"] == 4
    assert not math.isnan(tr["delivery_ratio"])


def test_two_sends_of_a_flow_in_the_same_millisecond_are_two(run):
    """Poisson sends can fall within a millisecond of each other: each is its own send,
    and each delivery goes with its own send."""
    with open(run / "agents" / "sat-1" / "traffic.jsonl", "a") as f:
        for line in ({"ev": "sent", "flow": 2, "t_s": 452.0001, "size": 1000, "id": "x1"},
                     {"ev": "sent", "flow": 2, "t_s": 452.0003, "size": 1000, "id": "x2"}):
            f.write(json.dumps(line) + "\n")
    with open(run / "agents" / "gs-a" / "traffic.jsonl", "a") as f:
        for line in ({"ev": "delivered", "flow": 2, "sent_s": 452.0001, "t_s": 601.0,
                      "size": 1000},
                     {"ev": "delivered", "flow": 2, "sent_s": 452.0003, "t_s": 602.0,
                      "size": 1000}):
            f.write(json.dumps(line) + "\n")
    tr = traffic_metrics(run)
    assert tr is not None
    late = tr["by_name"]["late"]
    assert late["sent"] == 3 and late["delivered"] == 2
    assert late["latency_s"]["max"] == pytest.approx(602.0 - 452.0003)
