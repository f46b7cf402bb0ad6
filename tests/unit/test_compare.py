"""Router comparisons: the ``compare:`` section, checks across routers' runs, and the
side-by-side table."""

from __future__ import annotations

import pytest

from netemu.analysis import compare
from netemu.config import Fields, parse_yaml
from netemu.errors import InputError


def section(text: str) -> Fields:
    doc = parse_yaml("name: x\ncompare:\n" + text, source="sc.yaml")
    return Fields(doc["compare"], source="sc.yaml", path="compare", line=2)


SECTION = """\
  routers: [cgr, epidemic, spray]
  expect:
    - {metric: traffic.delivery_ratio, router: cgr, op: ">=", than: epidemic}
    - {metric: link_bytes_total, router: cgr, op: "<=", than: epidemic, factor: 0.334}
"""
RUNS = {
    "cgr": {"link_bytes_total": 1000, "traffic": {"delivery_ratio": 0.98, "sent": 50}},
    "epidemic": {"link_bytes_total": 9000, "traffic": {"delivery_ratio": 0.97, "sent": 50}},
    "spray-and-wait": {"link_bytes_total": 4000,
                       "traffic": {"delivery_ratio": 0.9, "sent": 50}},
}


def test_section_parses_with_canonical_router_names():
    cmp = compare.parse(section(SECTION))
    assert cmp is not None and cmp.routers == ("cgr", "epidemic", "spray-and-wait")
    assert [c.text for c in cmp.checks] == [
        "traffic.delivery_ratio: cgr >= epidemic",
        "link_bytes_total: cgr <= 0.334 × epidemic"]
    assert compare.parse(Fields(None, source="sc.yaml", path="compare")) is None


def test_checks_across_routers_pass_and_fail_with_both_values():
    cmp = compare.parse(section(SECTION))
    outs = compare.evaluate(cmp, RUNS)
    assert [o.passed for o in outs] == [True, True]
    worse = {**RUNS, "cgr": {"link_bytes_total": 5000, "traffic": {"delivery_ratio": 0.5}}}
    outs = compare.evaluate(cmp, worse)
    assert [o.passed for o in outs] == [False, False]
    assert "cgr 0.5, epidemic 0.97" in outs[0].message
    assert "cgr 5000, epidemic 9000 (× 0.334 = 3006)" in outs[1].message
    # a run that gave no metrics fails its checks, naming it
    outs = compare.evaluate(cmp, {**RUNS, "epidemic": None})
    assert not outs[0].passed and "not measured in the epidemic run" in outs[0].message


def test_side_by_side_table_has_a_column_per_router():
    cmp = compare.parse(section(SECTION + "  metrics: [traffic.sent]\n"))
    rows = compare.table(cmp, RUNS)
    assert rows[0] == ["metric", "cgr", "epidemic", "spray-and-wait"]
    assert rows[1] == ["traffic.sent", "50", "50", "50"]
    assert ["link_bytes_total", "1000", "9000", "4000"] in rows
    text = compare.text_table(rows)
    assert text.splitlines()[0].split() == rows[0]
    page = compare.to_html("x", rows, compare.evaluate(cmp, RUNS), {"cgr": "cgr/report/index.html"})
    assert '<a href="cgr/report/index.html">cgr</a>' in page and "PASS" in page


@pytest.mark.parametrize(("text", "line", "field", "words"), [
    ("  routers: [cgr]\n", 3, "compare.routers", "at least two routers"),
    ("  routers: [cgr, cgr]\n", 3, "compare.routers[1]", "listed twice"),
    ("  routers: [cgr, epidemik]\n", 3, "compare.routers[1]", "unknown routing algorithm"),
    ("  routers: [cgr, epidemic]\n  expect:\n"
     "    - {metric: link_bytes_total, router: cgr, op: '<=', than: prophet}\n", 5,
     "compare.expect[0].than", "not one of the routers compared"),
    ("  routers: [cgr, epidemic]\n  expect:\n"
     "    - {metric: link_bites_total, router: cgr, op: '<=', than: epidemic}\n", 5,
     "compare.expect[0].metric", "did you mean"),
    ("  routers: [cgr, epidemic]\n  expect:\n"
     "    - {metric: link_bytes_total, router: cgr, op: '=<', than: epidemic}\n", 5,
     "compare.expect[0].op", "is not one of"),
])
def test_bad_sections_name_file_line_and_field(text, line, field, words):
    with pytest.raises(InputError) as e:
        compare.parse(section(text))
    assert (e.value.source, e.value.line, e.value.field) == ("sc.yaml", line, field), str(e.value)
    assert words in str(e.value)


def test_ip_routing_modes_compare_side_by_side():
    cmp = compare.parse(section(
        "  ip_routing: [oracle, frr, 'plugin:my_routes:compute']\n"
        "  expect:\n"
        "    - {metric: probe_loss_ratio, router: frr, op: '<=', than: oracle, factor: 20}\n"))
    assert cmp is not None and cmp.axis == "ip_routing"
    assert cmp.routers == ("oracle", "frr", "plugin:my_routes:compute")
    assert cmp.dirname("plugin:my_routes:compute") == "plugin_my_routes_compute"
    assert cmp.dirname("frr/isis") == "frr-isis"
    assert "probe_loss_ratio" in cmp.metrics and "ip_convergence_p95_s" in cmp.metrics
    runs = {"oracle": {"probe_loss_ratio": 0.001}, "frr": {"probe_loss_ratio": 0.012},
            "plugin:my_routes:compute": {"probe_loss_ratio": 0.5}}
    assert [o.passed for o in compare.evaluate(cmp, runs)] == [True]
    assert compare.table(cmp, runs)[0] == ["metric", "oracle", "frr",
                                           "plugin:my_routes:compute"]


@pytest.mark.parametrize("text, words", [
    ("  ip_routing: [oracle, orcale]\n", "did you mean 'oracle'"),
    ("  ip_routing: [oracle]\n", "at least two ip_routing"),
    ("  routers: [cgr, epidemic]\n  ip_routing: [oracle, frr]\n", "not both"),
    ("  expect: []\n", "name the routers"),
])
def test_bad_ip_routing_comparisons(text, words):
    with pytest.raises(InputError, match=words):
        compare.parse(section(text))
