"""Baselines: tolerances in ``expect:``, the baseline file, and the comparison that makes a
JUnit failure with the baseline value, the new value and the tolerance."""

from __future__ import annotations

import json

import pytest

from netemu import __version__
from netemu.analysis import baseline as bl
from netemu.analysis import expect
from netemu.config import Fields, parse_yaml
from netemu.errors import InputError

METRICS = {"run": "r1", "delivery_ratio": 0.95, "link_bytes_total": 100000,
           "apps_failed": 0, "bundle_latency_p95_s": None,
           "traffic": {"sent": 200, "delivery_ratio": 0.9,
                       "latency_s": {"p50": 10.0, "p95": 40.0, "max": 90.0},
                       "by_name": {"a": {"sent": 100}}, "projection": {"seconds": 0.4}}}


def section(text: str) -> Fields:
    doc = parse_yaml("name: x\nexpect:\n" + text, source="sc.yaml")
    return Fields(doc["expect"], source="sc.yaml", path="expect", line=2)


def checks(text: str):
    return bl.parse(section(text))


def test_tolerances_parse_with_sign_and_unit():
    cs = checks("""\
  - {metric: delivery_ratio, baseline: -2%}
  - {metric: traffic.latency_s.p95, baseline: +10%}
  - {metric: link_bytes_total, baseline: '+5000'}
  - {metric: apps_failed, op: "==", value: 0}
""")
    assert [(c.metric, c.tolerance.text) for c in cs] == [
        ("delivery_ratio", "-2%"), ("traffic.latency_s.p95", "+10%"),
        ("link_bytes_total", "+5000")]
    assert cs[0].tolerance.relative and not cs[2].tolerance.relative
    # the fixed expectation is expect's; the baseline-only items are not
    assert [e.metric for e in expect.parse(section("""\
  - {metric: delivery_ratio, baseline: -2%}
  - {metric: apps_failed, op: "==", value: 0}
"""))] == ["apps_failed"]


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("  - {metric: delivery_ratio, baseline: 2%}\n", 3, "expect[0].baseline",
     "signed tolerance"),
    ("  - {metric: delivery_ratio, baseline: +5}\n", 3, "expect[0].baseline", "quote it"),
    ("  - {metric: delivery_ratio, baseline: lots}\n", 3, "expect[0].baseline",
     "signed tolerance"),
    ("  - {metric: delivery_ration, baseline: -2%}\n", 3, "expect[0].metric",
     "did you mean"),
    ("  - {metric: delivery_ratio, baseline: -2%, tolerance: 3}\n", 3, "expect[0].tolerance",
     "unknown key"),
])
def test_bad_tolerances_name_file_line_and_field(text, line, field, words):
    with pytest.raises(InputError) as e:
        checks(text)
    assert (e.value.source, e.value.line, e.value.field) == ("sc.yaml", line, field), str(e.value)
    assert words in str(e.value)


def test_an_item_with_op_needs_its_value_even_with_a_baseline():
    with pytest.raises(InputError, match="missing required key 'value'"):
        expect.parse(section("  - {metric: delivery_ratio, op: '>=', baseline: -2%}\n"))


def _made(tmp_path, metrics=METRICS, cs=()):
    sc = tmp_path / "sc.yaml"
    if not sc.exists():
        sc.write_text("name: x\n")
    return bl.make(metrics, scenario="x", scenario_path=sc, routing="cgr", checks=cs), sc


def test_update_baseline_round_trips(tmp_path):
    cs = checks("  - {metric: delivery_ratio, baseline: -2%}\n"
                "  - {metric: traffic.latency_s.p95, baseline: +10%}\n")
    made, sc = _made(tmp_path, cs=cs)
    path = bl.write(tmp_path / "base", made)
    assert path == tmp_path / "base" / "x.json"
    stored = bl.load(tmp_path / "base", "x")
    assert stored == json.loads(path.read_text()) == made
    assert stored["netemu_version"] == __version__ and stored["routing"] == "cgr"
    assert len(stored["scenario_sha256"]) == 64
    # top-level numbers and the traffic totals, not per-entry detail or None
    assert stored["metrics"]["traffic.latency_s.p95"] == 40.0
    assert stored["metrics"]["traffic.sent"] == 200
    assert "bundle_latency_p95_s" not in stored["metrics"]
    assert not any(k.startswith(("traffic.by_name", "traffic.projection"))
                   for k in stored["metrics"])
    # the same run against its own baseline: every check passes, nothing differs
    outs = bl.compare(cs, stored, METRICS)
    assert [o.passed for o in outs] == [True, True] and not any(o.skipped for o in outs)
    assert bl.differences(stored, scenario_path=sc, routing="cgr") == []


def test_a_regression_beyond_the_tolerance_fails_with_both_values_and_the_tolerance(tmp_path):
    made, _sc = _made(tmp_path)
    worse = {**METRICS, "delivery_ratio": 0.90}
    [o] = bl.compare(checks("  - {metric: delivery_ratio, baseline: -2%}\n"), made, worse)
    assert not o.passed
    assert "baseline 0.95" in o.message and "new 0.9" in o.message
    assert "tolerance -2%" in o.message and "allowed ≥ 0.931" in o.message
    xml = expect.junit_xml([o], suite="x")
    assert 'failures="1"' in xml and "baseline 0.95, new 0.9" in xml
    # a tolerance that covers the change passes
    [o] = bl.compare(checks("  - {metric: delivery_ratio, baseline: -6%}\n"), made, worse)
    assert o.passed
    # a rise is a regression only for a metric whose tolerance says +
    [o] = bl.compare(checks("  - {metric: link_bytes_total, baseline: '+5000'}\n"), made,
                     {**METRICS, "link_bytes_total": 106000})
    assert not o.passed and "allowed ≤ 105000" in o.message


def test_without_a_baseline_or_its_metric_the_check_is_skipped_not_failed(tmp_path):
    made, _sc = _made(tmp_path)
    cs = checks("  - {metric: delivery_ratio, baseline: -2%}\n")
    [o] = bl.compare(cs, None, METRICS, where=" in base/")
    assert o.skipped and o.passed and "no baseline in base/" in o.message
    xml = expect.junit_xml([o], suite="x")
    assert "<skipped" in xml and 'failures="0"' in xml and 'skipped="1"' in xml
    del made["metrics"]["delivery_ratio"]
    [o] = bl.compare(cs, made, METRICS)
    assert o.skipped and "--update-baseline" in o.message


def test_differences_say_what_changed_since_the_baseline(tmp_path):
    made, sc = _made(tmp_path)
    made["netemu_version"] = "0.0.1"
    sc.write_text("name: x\nduration_s: 5\n")
    diffs = bl.differences(made, scenario_path=sc, routing="first-contact")
    assert len(diffs) == 3
    assert "netemu 0.0.1" in diffs[0] and "scenario file changed" in diffs[1]
    assert "routing cgr" in diffs[2] and "first-contact" in diffs[2]


def test_a_broken_baseline_file_is_an_input_error(tmp_path):
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError) as e:
        bl.load(tmp_path, "x")
    assert e.value.source == str(tmp_path / "x.json")
    assert bl.load(tmp_path, "y") is None


@pytest.mark.parametrize(("argv", "words"), [
    (["--update-baseline"], "--update-baseline needs --baseline DIR"),
    (["-j", "0"], "-j must be ≥ 1"),
])
def test_netemu_test_refuses_option_mistakes_before_running(argv, words, capsys):
    from netemu.cli import main

    assert main(["test", "topologies/regression/tiny-dtn.yaml", *argv]) == 2
    assert words in capsys.readouterr().err


def test_junit_merge_counts_skipped_cases():
    from netemu.commands.test import _merge_junit

    skipped = bl.compare(checks("  - {metric: delivery_ratio, baseline: -2%}\n"), None,
                         METRICS)
    doc = _merge_junit([expect.junit_xml(skipped, suite="a"), expect.junit_xml([], suite="b")])
    assert '<testsuites skipped="1" tests="1" failures="0" errors="0">' in doc


def test_default_tolerances_come_from_the_table():
    cs = checks("""\
  - {metric: traffic.delivery_ratio, baseline: default}
  - {metric: traffic.latency_vs_projection_s.p95, baseline: default}
  - {metric: traffic.by_name.telemetry.latency_s.p95, baseline: default}
""")
    assert [c.tolerance.text for c in cs] == ["-1%", "+4", "+5%"]
    with pytest.raises(InputError) as e:
        checks("  - {metric: apps_failed, baseline: default}\n")
    assert e.value.field == "expect[0].baseline" and "no default tolerance" in str(e.value)
