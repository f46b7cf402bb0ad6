"""The scenario run's window, routing and telemetry mapping: what a scenario author writes."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netemu.agent.config import AgentConfig, plan_peers
from netemu.analysis.expect import Expectation, Outcome, junit_xml
from netemu.commands.test import _merge_junit
from netemu.config import Fields
from netemu.emulator.events import LinkEvent
from netemu.emulator.layout import plan_layout
from netemu.errors import InputError, NetemuError
from netemu.plan.scenario import load_scenario
from netemu.plan.schedule import compute_plan
from netemu.run.runner import (
    AgentProc,
    RunOptions,
    ScenarioRun,
    direct_links,
    emulation_window,
    link_message,
    routing_config,
    split_nodes,
)
from netemu.runtime.rundir import RunDir


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
    topic, p = link_message(LinkEvent("params", 12.5, "sat-1", "gs-a", "sat-1-eth2",
                                       "gs-a-eth0", "gsl", 0.004, 2e7, 0.01))
    assert topic == "link/sat-1/gs-a"
    assert p == {"event": "update", "t_s": 12.5, "link": "gsl", "if_a": "sat-1-eth2",
                 "if_b": "gs-a-eth0", "delay_s": 0.004, "rate_bps": 2e7, "loss": 0.01}
    topic, p = link_message(LinkEvent("up", 3.0, "a", "b", "a-eth0", "b-eth0", "isl"))
    assert p["event"] == "up" and "delay_s" not in p
    _, p = link_message(LinkEvent("stopped", 4.0, "a", "b", "a-eth0", "b-eth0", "gsl"))
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


def test_agent_hosts_per_node_up_to_32_agents_by_default_a_number_or_auto() -> None:
    def hosts(value: object, n_agents: int = 16) -> int | None:
        sec = {} if value is None else {"agent_hosts": value}
        return emulation_window(sec, scenario_duration_s=1800).hosts_for(n_agents)

    cpus = max(1, os.cpu_count() or 1)
    assert hosts(None) is None and hosts(None, 32) is None and hosts(None, 33) == cpus
    assert hosts("per-node") is None and hosts("per-node", 3000) is None
    assert hosts(1) == 1 and hosts(4, 2) == 4
    assert hosts("auto") == cpus and hosts("auto", 2) == cpus


def test_demo_options_choose_node_hosts_and_the_clock_lead() -> None:
    """``netemu demo --agent-hosts 1 --lead-s 600 --app-grace-s 60`` (the VM demo): one node
    host for the flagship's 16 agents instead of a process each, the window 10 minutes
    away, a minute for the apps to exit; bad values refused naming the option."""
    scenario = Path(__file__).resolve().parents[2] / "topologies/three-body-12.yaml"
    assert ScenarioRun(RunOptions(scenario=scenario)).prepare().window.hosts_for(16) is None
    w = ScenarioRun(RunOptions(scenario=scenario, agent_hosts="1")).prepare().window
    assert w.hosts_for(16) == 1
    assert ScenarioRun(RunOptions(scenario=scenario, agent_hosts="per-node")
                       ).prepare().window.hosts_for(3000) is None
    for bad in (["--agent-hosts", "0"], ["--agent-hosts", "two"], ["--lead-s", "-5"],
                ["--lead-s", "nan"], ["--app-grace-s", "0"]):
        r = subprocess.run([sys.executable, "-m", "netemu", "demo", *bad], capture_output=True,
                           text=True)
        assert r.returncode == 2 and bad[0] in r.stderr, r.stderr


def test_direct_links_give_each_node_its_neighbours_link_ends_by_time() -> None:
    sc = load_scenario("topologies/tiny.yaml")
    plan = compute_plan(sc, start_s=0, duration_s=1800)
    layout = plan_layout(plan)
    links = direct_links(layout, {"kashi", "sat-0"})
    assert set(links) == {"kashi", "sat-0"}
    by_addr = {e.addr: e for e in layout.endpoints}
    for peers in links.values():
        for peer, lst in peers.items():
            assert lst == sorted(lst) and all(a < b for a, b, _ in lst)
            assert all(e0 <= s1 for (_, e0, _), (s1, _, _) in zip(lst, lst[1:], strict=False))
            for _, _, addr in lst:  # the peer's own interface, on port 4556
                host, port = addr.rsplit(":", 1)
                assert port == "4556" and by_addr[host].node == peer
    # kashi's antenna moves from satellite to satellite: each pass has its own ends
    assert {"sat-0", "sat-1", "sat-2"} <= set(links["kashi"])
    # each contact of the plan lies inside one of the links
    for c in plan.contacts:
        if c.src == "kashi":
            lst = links["kashi"][c.dst]
            assert any(a <= c.start_s and c.end_s <= b for a, b, _ in lst)


def test_traffic_between_nodes_without_agents_is_refused_before_the_run(tmp_path) -> None:
    path = tmp_path / "s.yaml"
    text = Path("topologies/tiny.yaml").read_text()
    path.write_text(text + "emulation: {agents: [kind:satellite]}\n"
                    "traffic: [{name: g, from: kashi, to: sat-0, interval_s: 10, "
                    "size_bytes: 100}]\n")
    with pytest.raises(InputError) as e:
        ScenarioRun(RunOptions(path, echo=lambda s: None)).prepare()
    assert "'g'" in str(e.value) and "kashi" in str(e.value) and "agent" in str(e.value)


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many", "true", "[2]"])
def test_agent_hosts_errors_name_file_line_and_field(tmp_path, value) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: x\nemulation:\n  duration_s: 60\n  agent_hosts: {value}\n")
    with pytest.raises(InputError) as e:
        emulation_window(Fields.load(path).child("emulation"), scenario_duration_s=1800)
    assert e.value.field == "emulation.agent_hosts" and e.value.line == 4
    assert e.value.source == str(path) and "per-node, auto or a whole number" in str(e.value)


def test_node_hosts_get_each_planes_neighbours_apart_and_the_stations_spread() -> None:
    nodes = [f"p{p}s{s}" for p in range(12) for s in range(16)] + [f"g{i}" for i in range(8)]

    def plane(n: str) -> str | None:
        return n.split("s")[0] if n.startswith("p") else None  # stations: no plane

    for n_groups in (2, 3):
        groups = split_nodes(nodes, n_groups, plane)
        assert sorted(sum(groups, [])) == sorted(nodes)  # all of them, once
        order = {n: i for i, n in enumerate(nodes)}
        assert all(g == sorted(g, key=order.__getitem__) for g in groups)  # plan order
        assert max(map(len, groups)) - min(map(len, groups)) <= 1
        where = {node: i for i, g in enumerate(groups) for node in g}
        for p in range(12):
            for s in range(16):
                # the next satellite of the plane, and the same slot of the next plane,
                # are served by another process: a burst along a plane uses every core
                assert where[f"p{p}s{s}"] != where[f"p{p}s{(s + 1) % 16}"] or s == 15
                if p < 11:
                    assert where[f"p{p}s{s}"] != where[f"p{p + 1}s{s}"]
        stations = [sum(n.startswith("g") for n in g) for g in groups]
        assert max(stations) - min(stations) <= 1
    even = split_nodes(nodes, 3)
    assert [len(g) for g in even] == [67, 67, 66] and sorted(sum(even, [])) == sorted(nodes)
    assert split_nodes(nodes[:3], 8) == [["p0s0"], ["p0s1"], ["p0s2"]]
    assert split_nodes([], 2) == [] and split_nodes(nodes[:5], 1) == [nodes[:5]]
    for n in range(1, 30):  # never an empty group, never more than asked, none too big
        groups = split_nodes(nodes, n, plane)
        assert len(groups) == n and all(groups) and sorted(sum(groups, [])) == sorted(nodes)
        assert max(map(len, groups)) <= len(nodes) / n * 1.25 + 1


def test_agent_configs_from_the_peer_index_are_the_old_ones() -> None:
    """``plan_peers`` (one pass over the contacts) gives each node the neighbours that
    scanning every contact per node gave."""
    sc = load_scenario("topologies/three-body-12.yaml")
    plan = compute_plan(sc, start_s=0, duration_s=3000)
    addresses = {n: f"10.0.0.{i + 1}" for i, n in enumerate(plan.nodes)}
    peers = plan_peers(plan)
    for node in plan.nodes:
        scanned = sorted({c.dst for c in plan.contacts if c.src == node}
                         | {c.src for c in plan.contacts if c.dst == node})
        old = AgentConfig.for_plan_node(plan, node, addresses, plan_path="plan.json",
                                        run_dir=f"/tmp/x/{node}",
                                        peers={node: scanned})
        new = AgentConfig.for_plan_node(plan, node, addresses, plan_path="plan.json",
                                        run_dir=f"/tmp/x/{node}", peers=peers)
        default = AgentConfig.for_plan_node(plan, node, addresses, plan_path="plan.json",
                                            run_dir=f"/tmp/x/{node}")
        assert new.to_obj() == old.to_obj() == default.to_obj()
        assert [n.name for n in new.neighbours] == scanned


def test_a_node_host_that_exits_before_its_sockets_are_up_is_an_error(tmp_path) -> None:
    rd = RunDir(tmp_path)
    rd.hosts_dir.mkdir()
    out = rd.host_out(0)
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stderr.write("
                                 "'netemu node host: error: bad config'); sys.exit(2)"],
                                stdout=f, stderr=subprocess.STDOUT)
    proc.wait()
    host = AgentProc(f"the node host {rd.host_config(0)} (output: {out})", proc, out,
                     ("a", "b"), node_host=True)
    run = ScenarioRun(RunOptions(tmp_path / "s.yaml", echo=lambda _s: None))
    with pytest.raises(NetemuError) as e:
        run._wait_agents([host], {"a": str(tmp_path / "a.sock"),
                                  "b": str(tmp_path / "b.sock")}, rd)
    text = str(e.value)
    assert str(rd.host_config(0)) in text and str(out) in text
    assert "status 2" in text and "bad config" in text
