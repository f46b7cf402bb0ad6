"""The agent side of traffic flows: the run's traffic table, flow payloads, and the
direct links a neighbour is dialled at (netemu.agent.traffic, NeighbourConfig.links)."""

from __future__ import annotations

import json

import pytest

from netemu.agent.config import AgentConfig
from netemu.agent.traffic import (
    HEADER,
    TrafficGenerator,
    TrafficTable,
    load_traffic,
    parse_payload,
    payload,
)
from netemu.config import Fields
from netemu.errors import InputError
from netemu.plan.scenario import load_scenario
from netemu.plan.schedule import compute_plan
from netemu.plan.traffic import flows, parse_traffic
from netemu.run.runner import traffic_table


def _spec():
    sc = load_scenario("topologies/tiny.yaml")
    spec = parse_traffic(Fields({"seed": 4, "flows": [
        {"name": "g", "from": "kind:ground", "to": "kind:satellite", "rate_per_s": 0.5,
         "size_bytes": [10, 5000], "start_s": 0, "end_s": 900},
        {"name": "h", "from": "sat-0", "to": "kashi", "interval_s": 7, "phase_s": "random",
         "size_bytes": 64}]}, source="s.yaml", path="traffic"), sc)
    return sc, spec


def test_the_runs_traffic_file_gives_every_node_the_same_sends_as_the_plan(tmp_path):
    sc, spec = _spec()
    plan = compute_plan(sc, start_s=0, duration_s=900)
    path = tmp_path / "traffic.json"
    path.write_text(json.dumps(traffic_table(spec, plan).to_obj()))
    table = load_traffic(str(path))
    assert table is load_traffic(str(path))  # read once per process
    assert table.flows == tuple(flows(spec))
    assert table.ipn == {n: node.ipn for n, node in plan.nodes.items()}
    assert [f.key for f in table.by_src["kashi"]] == [
        f.key for f in flows(spec) if f.src == "kashi"]
    for a, b in zip(table.flows, flows(spec), strict=True):
        assert list(a.sends(0, 900)) == list(b.sends(0, 900))


@pytest.mark.parametrize("obj, words", [
    ([], "expected {service, ipn, flows"),
    ({"flows": [{"id": 0}]}, "flows[0]: not a flow"),
    ({"service": 0, "flows": []}, "service must be"),
])
def test_a_bad_traffic_file_is_an_error_naming_it(tmp_path, obj, words):
    with pytest.raises(InputError) as e:
        TrafficTable.from_obj(obj, source="run/traffic.json")
    assert words in str(e.value) and "run/traffic.json" in str(e.value)


def test_a_missing_traffic_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(InputError) as e:
        load_traffic(str(tmp_path / "nope.json"))
    assert "nope.json" in str(e.value)


def test_flow_payloads_carry_flow_and_send_time_and_have_the_sends_size():
    p = payload(12, 123.456789, 5000)
    assert len(p) == 5000 and parse_payload(p) == (12, 123.456789)
    assert len(payload(3, 1.0, 1)) == HEADER.size  # never shorter than the header
    assert parse_payload(b"hello, not a flow bundle") is None
    assert parse_payload(b"NTRF") is None


def test_neighbour_links_are_dialled_while_current_else_the_address():
    cfg = AgentConfig.from_obj({"node": "a", "ipn": 1, "neighbours": [
        {"name": "b", "ipn": 2, "address": "10.0.0.2:4556",
         "links": [[0, 100, "10.128.0.5:4556"], [250, 400, "10.128.0.9:4556"]]},
        {"name": "c", "ipn": 3, "links": [[0, 10, "10.128.0.7:4556"]]}]})
    b, c = cfg.neighbours
    assert b.address_at(0) == "10.128.0.5:4556" and b.address_at(99.9) == "10.128.0.5:4556"
    assert b.address_at(100) == "10.0.0.2:4556" and b.address_at(-1) == "10.0.0.2:4556"
    assert b.address_at(300) == "10.128.0.9:4556" and b.address_at(500) == "10.0.0.2:4556"
    assert c.address_at(5) == "10.128.0.7:4556" and c.address_at(11) == ""
    assert b.is_link_host("10.128.0.9") and not b.is_link_host("10.0.0.2")
    again = AgentConfig.from_obj(cfg.to_obj())
    assert again.neighbours == cfg.neighbours


@pytest.mark.parametrize("links, words", [
    ("[[0, 10]]", 'expected [start_s, end_s, "host:port"]'),
    ("[[10, 5, '1.2.3.4:1']]", "ends (5 s) before it starts (10 s)"),
    ("[[0, 10, '1.2.3.4:1'], [5, 20, '1.2.3.5:1']]", "before the previous link ends"),
    ("[[0, .nan, '1.2.3.4:1']]", 'expected [start_s, end_s, "host:port"]'),
    ("[[0, 10, ':99999']]", "not host:port"),
])
def test_bad_links_are_errors_naming_file_line_and_field(tmp_path, links, words):
    path = tmp_path / "agent.yaml"
    path.write_text(f"node: a\nipn: 1\nneighbours:\n  - name: b\n    ipn: 2\n"
                    f"    links: {links}\n")
    with pytest.raises(InputError) as e:
        AgentConfig.load(path)
    assert words in str(e.value) and str(path) in str(e.value)
    assert "neighbours[0].links" in str(e.value)


class _Agent:
    """What a TrafficGenerator asks of its agent when writing records."""

    def __init__(self) -> None:
        self.cfg = AgentConfig.from_obj({"node": "a", "ipn": 1})
        self.logged: list[dict] = []

    def log(self, event: str, **fields) -> None:
        self.logged.append({"event": event, **fields})


def test_records_that_cannot_be_written_are_kept_and_written_later(tmp_path):
    """Out of file descriptors (or a moment's full disk) loses no traffic record: they
    stay buffered, the log says so once, and the next flush that can write them does."""
    blocker = tmp_path / "agents"
    blocker.write_text("a file where the records' directory should be")
    records = blocker / "a" / "traffic.jsonl"
    agent = _Agent()
    gen = TrafficGenerator(agent, TrafficTable.from_obj({"flows": []}), str(records))
    for i in range(3):
        gen._record({"ev": "sent", "flow": i})
        gen.flush()
    assert [e["event"] for e in agent.logged] == ["traffic_records_error"]
    assert agent.logged[0]["kept"] == 1 and agent.logged[0]["lost"] == 0
    blocker.unlink()
    gen.flush()
    lines = [json.loads(x) for x in records.read_text().splitlines()]
    assert [r["flow"] for r in lines] == [0, 1, 2]
