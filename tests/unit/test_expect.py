"""expect: pass/fail against measured values, clear errors, JUnit XML."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import yaml

from netemu.analysis import expect
from netemu.config import Fields, parse_yaml
from netemu.errors import InputError

METRICS = {"delivery_ratio": 0.97, "query_latency_p95_s": 80.0,
           "traffic_outside_contacts_bytes": 0, "bytes_saved": None,
           "link_use": {"sat-1->gs-a": {"utilisation": 0.25}}}


def _exps(text: str):
    return expect.parse(yaml.safe_load(text)["expect"], source="s.yaml")


def test_pass_and_fail_with_measured_values():
    exps = _exps("""
expect:
  - {metric: delivery_ratio, op: ">=", value: 0.99}
  - {metric: query_latency_p95_s, op: "<=", value: 120}
  - {metric: traffic_outside_contacts_bytes, op: "==", value: 0}
""")
    out = expect.evaluate(exps, METRICS)
    assert [o.passed for o in out] == [False, True, True]
    assert out[0].measured == 0.97 and "measured 0.97" in out[0].message
    assert "1 failed" in expect.summary(out)


def test_unmeasured_metric_fails_saying_so():
    out = expect.evaluate(_exps("expect: [{metric: bytes_saved, op: '>', value: 0}]"), METRICS)
    assert not out[0].passed and "not measured" in out[0].message


def test_dotted_path_into_link_use():
    out = expect.evaluate(
        _exps("expect: [{metric: link_use.sat-1->gs-a.utilisation, op: '<', value: 0.5}]"), METRICS)
    assert out[0].passed and out[0].measured == 0.25


def test_unknown_metric_names_it_and_suggests():
    exps = _exps("expect: [{metric: delivery_ration, op: '>=', value: 1}]")
    with pytest.raises(InputError) as e:
        expect.validate(exps)
    assert "delivery_ration" in str(e.value) and "delivery_ratio" in str(e.value)
    assert "s.yaml" in str(e.value)
    with pytest.raises(InputError, match="did you mean"):
        expect.evaluate(exps, METRICS)


@pytest.mark.parametrize("item,msg", [
    ({"metric": "delivery_ratio", "op": "=>", "value": 1}, "op"),
    ({"metric": "delivery_ratio", "op": ">=", "value": "high"}, "number"),
    ({"metric": "delivery_ratio", "op": ">="}, "missing required key 'value'"),
    ({"metric": "delivery_ratio", "op": ">=", "value": 1, "extra": 2}, "unknown key"),
    ({"metric": "", "op": ">=", "value": 1}, "metric must be a name"),
])
def test_bad_expectations_are_refused(item, msg):
    doc = parse_yaml("name: s\n" + "\n" * 5 + "expect:\n  - " + json.dumps(item) + "\n", "s.yaml")
    section = Fields(doc["expect"], source="s.yaml", path="expect", line=doc.line_of("expect"))
    with pytest.raises(InputError, match=msg) as e:
        expect.parse(section)
    assert "s.yaml:8" in str(e.value) and "expect[0]" in str(e.value)


def test_a_bad_op_lists_the_choices():
    with pytest.raises(InputError, match="is not one of >=, <="):
        expect.parse([{"metric": "delivery_ratio", "op": "=>>", "value": 1}], source="s.yaml")


def test_junit_names_the_failed_expectation():
    out = expect.evaluate(_exps("""
expect:
  - {metric: delivery_ratio, op: ">=", value: 0.99}
  - {metric: query_latency_p95_s, op: "<=", value: 120}
"""), METRICS)
    root = ET.fromstring(expect.junit_xml(out, suite="three-body-12", time_s=12.5))
    suite = root.find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    failure = cases[0].find("failure")
    assert cases[0].get("name") == "delivery_ratio >= 0.99"
    assert failure is not None and "measured 0.97" in failure.get("message")
    assert cases[1].find("failure") is None
