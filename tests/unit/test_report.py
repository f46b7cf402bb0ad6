"""netemu report: a readable page with every figure the run has data for."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from synthetic_run import make_run

from netemu.analysis import expect, report
from netemu.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path)


def _png_ok(p: Path) -> bool:
    return p.exists() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_report_writes_page_and_figures(run):
    page = report.build(run)
    html = page.read_text()
    for fig in ("timeline.png", "query_cdf.png", "bytes.png", "bundles.png", "links.png", "apps.png"):
        assert _png_ok(run / "report" / fig), fig
        assert f'src="{fig}"' in html
    assert "66.7 %" in html  # delivery ratio 2/3 in a headline card
    assert "orbit-query/sat-1" in html  # apps table, with the failed service
    assert (run / "metrics.json").exists()


def test_report_map_from_scenario(run):
    shutil.copy(ROOT / "topologies" / "three-body-12.yaml", run / "scenario.yaml")
    page = report.build(run)
    assert _png_ok(run / "report" / "map.png")
    assert 'src="map.png"' in page.read_text()


def test_report_shows_expectations(run):
    from netemu.analysis import metrics

    outs = expect.evaluate(expect.parse([{"metric": "delivery_ratio", "op": ">=", "value": 0.99}]),
                           metrics.compute(run))
    expect.write_results(run, outs, suite="r1")
    html = report.build(run).read_text()
    assert "FAIL" in html and "delivery_ratio &gt;= 0.99" in html
    assert json.loads((run / "expect.json").read_text())["passed"] is False


def test_empty_run_still_gets_a_page(tmp_path):
    (tmp_path / "e").mkdir()
    html = report.build(tmp_path / "e").read_text()
    assert "No query answers recorded" in html


def test_cli_report(run, capsys):
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "delivery ratio" in out and "report:" in out and "index.html" in out


def test_cli_report_missing_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_report_reads_junit_when_no_expect_json(run):
    from netemu.analysis import metrics

    outs = expect.evaluate(expect.parse([{"metric": "bytes_saved", "op": ">", "value": 0}]),
                           metrics.compute(run))
    (run / "junit.xml").write_text(expect.junit_xml(outs, suite="r1"))
    html = report.build(run).read_text()
    assert "bytes_saved &gt; 0" in html and ">pass<" in html and "756,200" in html


def test_report_traffic_section_and_where_bundles_wait(tmp_path):
    from synthetic_run import add_counters, add_traffic

    run = make_run(tmp_path)
    add_traffic(run)
    add_counters(run)
    shutil.copy(ROOT / "topologies" / "tiny.yaml", run / "scenario.yaml")  # sat-1, sat-2
    html = report.build(run).read_text()
    assert "<h2>Traffic flows</h2>" in html
    # per entry name: flows, sent, delivered, ratio ... and the worst flows' table
    assert "<td>down</td><td class='n'>1</td><td class='n'>3</td><td class='n'>2</td>" in html
    assert "late:sat-1&gt;gs-a" in html and "Per flow: every flow" in html
    assert "traffic delivered / expected" in html
    for fig in ("storage_map.png", "storage.png"):
        assert _png_ok(run / "report" / fig), fig
        assert f'src="{fig}"' in html
    assert "Most bundles held by one node: sat-1 5 at 20 s" in html


def test_report_without_counters_or_traffic_says_so(run):
    html = report.build(run).read_text()
    assert "Traffic flows" not in html
    assert "No satellite storage recorded" in html


def test_report_and_metrics_show_faults_and_what_they_cost(tmp_path):
    from synthetic_run import add_traffic, ev

    run = make_run(tmp_path)
    add_traffic(run)
    fault = {"id": "rain", "kind": "station_outage", "nodes": ["gs-a"], "start_s": 280.0,
             "end_s": 320.0}
    with (run / "events.jsonl").open("a") as f:
        f.write("\n")  # (the synthetic record ends in a cut line)
        for e in (ev(280.0, "fault/rain", event="started", **fault),
                  ev(320.0, "fault/rain", event="ended", **fault)):
            f.write(json.dumps(e) + "\n")
    m = json.loads((report.metrics_mod.write(run)).read_text())
    assert m["faults_count"] == 1
    rain = m["faults"]["rain"]
    assert (rain["kind"], rain["start_s"], rain["end_s"]) == ("station_outage", 280.0, 320.0)
    # down's send at 300 (delivered at 302) was on its way during the outage
    assert rain["in_transit"] >= 1 and rain["undelivered"] >= 0
    html = report.build(run).read_text()
    assert "<h3>Faults</h3>" in html and "<td>rain</td>" in html
    assert _png_ok(run / "report" / "timeline.png")


def test_report_lists_the_plans_rain_events(run):
    plan = json.loads((run / "plan.json").read_text())
    plan["weather"] = [
        {"station": "gs-1", "start_s": 100.0, "end_s": 400.0, "atten_db": 2.5, "p_percent": 0.8},
        {"station": "gs-1", "start_s": 900.0, "end_s": 1000.0, "atten_db": 7.25, "p_percent": 0.05},
    ]
    (run / "plan.json").write_text(json.dumps(plan))
    html = report.build(run).read_text()
    assert "<h3>Weather</h3>" in html and "7.25 dB" in html
    row = html[html.index("<td>gs-1</td>"):]
    assert "<td>2</td>" in row[:200]  # two events at that station
    # a plan without weather has no weather table
    plan.pop("weather")
    (run / "plan.json").write_text(json.dumps(plan))
    assert "<h3>Weather</h3>" not in report.build(run).read_text()
