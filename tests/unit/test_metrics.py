"""metrics.json from a synthetic run directory: each figure against a hand count."""

from __future__ import annotations

import json

import pytest
from synthetic_run import make_run

from netemu.analysis import metrics
from netemu.errors import InputError


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def test_bundle_figures(run):
    m = metrics.compute(run)
    assert m["bundles_created"] == 3
    assert m["bundles_delivered"] == 2
    assert m["bundles_expired"] == 1
    assert m["bundles_in_flight"] == 0
    assert m["delivery_ratio"] == pytest.approx(2 / 3)
    assert m["bundle_latency_p50_s"] == pytest.approx((71 + 3) / 2)


def test_query_latency_from_client_results(run):
    m = metrics.compute(run)
    assert m["queries_sent"] == 5 and m["queries_answered"] == 4
    assert m["query_answer_ratio"] == pytest.approx(0.8)
    assert m["query_latency_p50_s"] == pytest.approx(25.0)
    assert m["query_latency_p95_s"] == pytest.approx(38.5)
    assert m["query_latencies_s"] == [10.0, 20.0, 30.0, 40.0]


def test_query_latency_split_and_compute_lag(run):
    """Per query: network, queueing, compute (the client's split); per app: requests on the
    node's compute and those answered late because the host could not keep up."""
    client = run / "apps" / "orbit-query" / "gs-a" / "result.json"
    r = json.loads(client.read_text())
    r["queries"] = [{"latency_s": lat, "network_s": lat - 1.0, "queueing_s": q,
                     "compute_s": 2e-6} for lat, q in ((10.0, 0.0), (20.0, 0.0), (30.0, 0.5),
                                                       (40.0, 1.0))]
    client.write_text(json.dumps(r))
    for app, node, late in (("eo-filter", "sat-1", 3), ("orbit-query", "sat-1", 1)):
        p = run / "apps" / app / node / "result.json"
        res = json.loads(p.read_text())
        res["compute"] = {"requests": 60, "late": late}
        p.write_text(json.dumps(res))
    m = metrics.compute(run)
    assert m["query_network_p95_s"] == pytest.approx(37.5)
    assert m["query_queueing_p95_s"] == pytest.approx(0.925)
    assert m["query_compute_p95_s"] == pytest.approx(2e-6)
    assert m["compute_requests"] == 120 and m["compute_late_requests"] == 4


def test_query_latency_falls_back_to_events(run):
    for f in (run / "apps" / "orbit-query").glob("*/result.json"):
        f.unlink()
    m = metrics.compute(run)
    assert m["query_latencies_s"] == [12.0] and m["queries_answered"] == 1


def test_bytes_saved_by_filtering(run):
    m = metrics.compute(run)
    assert m["bytes_captured"] == 819200 and m["bytes_sent"] == 63000
    assert m["bytes_saved"] == 819200 - 63000
    assert m["downlink_saved_fraction"] == pytest.approx(1 - 63000 / 819200)
    assert m["tiles_received"] == 2


def test_link_use_and_traffic_outside_contacts(run):
    m = metrics.compute(run)
    lu = m["link_use"]
    assert lu["sat-1->gs-a"]["bytes"] == 8400 and lu["sat-1->gs-a"]["bundles"] == 2
    assert lu["sat-1->gs-a"]["up_s"] == 300
    assert lu["sat-1->gs-a"]["utilisation"] == pytest.approx(8400 / (300 * 1e6))
    assert lu["sat-2->sat-1"]["bytes"] == 4200
    assert m["link_bytes_total"] == 8400 + 4200 + 1000
    assert m["traffic_outside_contacts_bytes"] == 1000  # b3 at t=500, contact is 600-900


def test_app_usage(run):
    m = metrics.compute(run)
    assert m["apps_failed"] == 1  # the service exited 1
    assert m["apps"]["eo-filter/sat-1"]["cpu_s"] == 3.5
    assert m["apps_max_rss_bytes"] == 80_000_000


def test_write_and_load(run):
    p = metrics.write(run)
    assert json.loads(p.read_text())["bundles_delivered"] == 2
    assert metrics.load(run)["run"] == "r1"


def test_empty_run_has_nulls_not_zeros(tmp_path):
    (tmp_path / "empty").mkdir()
    m = metrics.compute(tmp_path / "empty")
    assert m["delivery_ratio"] is None and m["query_latency_p95_s"] is None
    assert set(metrics.METRIC_DOCS) <= set(m)


def test_not_a_run_directory(tmp_path):
    with pytest.raises(InputError, match="not a run directory"):
        metrics.compute(tmp_path / "nope")
