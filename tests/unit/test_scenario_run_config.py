"""The scenario run's window, routing and telemetry mapping: what a scenario author writes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from netemu.analysis.expect import Expectation, Outcome, junit_xml
from netemu.commands.test import _merge_junit
from netemu.config import Fields
from netemu.emulator.events import LinkEvent
from netemu.errors import InputError
from netemu.plan.scenario import load_scenario
from netemu.run.runner import _link_message, emulation_window, routing_config


def test_window_defaults_profiles_and_overrides() -> None:
    sec = {"start_s": 100, "duration_s": 3000, "time_scale": 10,
           "quick": {"duration_s": 600}, "test": {"duration_s": 120, "time_scale": 20}}
    w = emulation_window(sec, scenario_duration_s=86400)
    assert (w.start_s, w.duration_s, w.time_scale, w.isl) == (100, 3000, 10, True)
    assert w.wall_s == 300
    q = emulation_window(sec, scenario_duration_s=86400, profile="quick")
    assert (q.start_s, q.duration_s, q.time_scale) == (100, 600, 10)
    t = emulation_window(sec, scenario_duration_s=86400, profile="test",
                         overrides={"duration_s": 60, "isl": False})
    assert (t.duration_s, t.time_scale, t.isl) == (60, 20, False)
    d = emulation_window(None, scenario_duration_s=1800, scenario_time_scale=2)
    assert (d.start_s, d.duration_s, d.time_scale) == (0, 600, 2)


@pytest.mark.parametrize("sec, field, words", [
    ({"duraton_s": 10}, "emulation.duraton_s", "unknown key"),
    ({"duration_s": 0}, "emulation.duration_s", "> 0"),
    ({"time_scale": "fast"}, "emulation.time_scale", "number"),
    ({"start_s": 1700, "duration_s": 200}, "emulation.duration_s", "ends after"),
    ({"isl": "no"}, "emulation.isl", "true or false"),
    ({"quick": {"duration": 5}}, "emulation.quick.duration", "did you mean 'duration_s'"),
    ({"quick": 5}, "emulation.quick", "mapping"),
])
def test_window_errors_name_the_field(sec, field, words) -> None:
    with pytest.raises(InputError) as e:
        emulation_window(sec, scenario_duration_s=1800, source="s.yaml", line=30)
    assert e.value.field == field and words in str(e.value)
    assert e.value.source == "s.yaml" and e.value.line == 30


def test_routing_defaults_to_cgr_and_refuses_unknown_algorithms() -> None:
    assert routing_config(None, source="s", line=1) == {"algorithm": "cgr"}
    assert routing_config("epidemic", source="s", line=1) == {"algorithm": "epidemic"}
    with pytest.raises(InputError, match="unknown routing algorithm") as e:
        routing_config({"algorithm": "telepathy"}, source="s.yaml", line=4)
    assert e.value.line == 4


def test_link_events_follow_the_telemetry_contract() -> None:
    topic, p = _link_message(LinkEvent("params", 12.5, "sat-1", "gs-a", "sat-1-eth2",
                                       "gs-a-eth0", "gsl", 0.004, 2e7, 0.01))
    assert topic == "link/sat-1/gs-a"
    assert p == {"event": "update", "t_s": 12.5, "link": "gsl", "if_a": "sat-1-eth2",
                 "if_b": "gs-a-eth0", "delay_s": 0.004, "rate_bps": 2e7, "loss": 0.01}
    topic, p = _link_message(LinkEvent("up", 3.0, "a", "b", "a-eth0", "b-eth0", "isl"))
    assert p["event"] == "up" and "delay_s" not in p
    _, p = _link_message(LinkEvent("stopped", 4.0, "a", "b", "a-eth0", "b-eth0", "gsl"))
    assert p["event"] == "down" and p["direction"] == "a->b"


def test_junit_of_several_scenarios_merges_into_one_document() -> None:
    e = Expectation("delivery_ratio", ">=", 0.99)
    docs = [junit_xml([Outcome(e, 0.5, False, "delivery_ratio >= 0.99: measured 0.5")],
                      suite="one"),
            junit_xml([Outcome(e, 1.0, True, "ok")], suite="two", errors=["agent died"])]
    root = ET.fromstring(_merge_junit(docs))
    assert root.get("tests") == "3" and root.get("failures") == "1" and root.get("errors") == "1"
    assert [s.get("name") for s in root.iter("testsuite")] == ["one", "two"]


def test_agents_select_nodes_of_the_scenario(tmp_path) -> None:
    sc = load_scenario("topologies/tiny.yaml")
    names = sc.node_names()
    sats = [s.name for s in sc.satellites]
    run = emulation_window({"agents": "all"}, scenario_duration_s=sc.duration_s, nodes=sc)
    assert run.agents is None  # every node
    assert emulation_window({"agents": "none"}, scenario_duration_s=sc.duration_s,
                            nodes=sc).agents == ()
    only = emulation_window({"agents": ["kind:satellite"]}, scenario_duration_s=sc.duration_s,
                            nodes=sc).agents
    assert only == tuple(sats) and len(sats) < len(names)
    path = tmp_path / "s.yaml"
    path.write_text("emulation:\n  agents: [nosuchnode]\n")
    with pytest.raises(InputError) as e:
        emulation_window(Fields.load(path).child("emulation"),
                         scenario_duration_s=sc.duration_s, nodes=sc)
    assert "nosuchnode" in str(e.value) and e.value.line == 2
