"""The agent's config: files (YAML, JSON, several nodes), errors naming file and field,
and the config of a plan node."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from netemu.agent.config import AgentConfig
from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, Node


def test_config_yaml_and_errors(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text(
        "node: sat1\nipn: 1\nlisten: {tcpcl: ['127.0.0.1:4600']}\n"
        "neighbours:\n  - {name: gs1, ipn: 10, address: '127.0.0.1:4601'}\n"
        "routing: cgr\ncontact_plan: plan.json\n")
    cfg = AgentConfig.load(p)
    assert cfg.node == "sat1" and cfg.neighbours[0].host_port == ("127.0.0.1", 4601)
    assert cfg.routing == {"algorithm": "cgr"}
    assert cfg.contact_plan == str(tmp_path / "plan.json")
    assert cfg.app_socket.endswith("sat1/bp.sock")
    again = AgentConfig.from_obj(json.loads(json.dumps(cfg.to_obj())))
    assert again.to_obj() == cfg.to_obj()

    multi = tmp_path / "all.json"
    multi.write_text(json.dumps({"keepalive_s": 5, "nodes": {"a": {"ipn": 1}, "b": {"ipn": 2}}}))
    assert AgentConfig.load(multi, node="b").ipn == 2
    assert AgentConfig.load(multi, node="b").keepalive_s == 5
    with pytest.raises(InputError, match="node 'c' not in config"):
        AgentConfig.load(multi, node="c")

    bad = tmp_path / "bad.yaml"
    for text, match in [
        ("node: x\nipn: 0\n", ":2: ipn: must be ≥ 1"),
        ("node: x\nipn: 1\nneighbours: [{name: y, ipn: 2, cl: ltp}]\n",
         r":3: neighbours\[0\]\.cl: unknown convergence layer 'ltp'"),
        ("node: x\nipn: 1\nneighbours:\n  - {name: y, ipn: 2, adress: 'h:1'}\n",
         r":4: neighbours\[0\]\.adress: unknown key 'adress'; did you mean 'address'\?"),
        ("node: x\nipn: 1\nlisten: {tcpcl: ['host:99999']}\n", r"listen\.tcpcl\[0\]"),
        ("node: x\nipn: 1\nbogus: 1\n", ":3: bogus: unknown key"),
        ("node: x\nipn: 1\ndurability: disc\n", "did you mean 'disk'"),
        ("node: x\nipn: [1\n", "not valid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(InputError, match=match) as ei:
            AgentConfig.load(bad)
        assert str(bad) in str(ei.value)


def test_config_without_log_or_plan_round_trips():
    cfg = AgentConfig.from_obj({"node": "a", "ipn": 1, "log": None, "contact_plan": None,
                                "listen": None, "keys": None})
    assert cfg.log is None and cfg.contact_plan is None and cfg.keys == {}
    assert AgentConfig.from_obj(cfg.to_obj()).to_obj() == cfg.to_obj()


def test_config_for_plan_node(tmp_path):
    plan = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc),
                       {"s1": Node("s1", 1), "s2": Node("s2", 2), "g": Node("g", 9)},
                       [Contact("s1", "s2", 0, 10, 1e6, 0.01), Contact("g", "s1", 5, 9, 1e6, 0.01)])
    cfg = AgentConfig.for_plan_node(plan, "s1", {"s2": "10.0.0.2", "g": "10.0.9.1:4600"},
                                    plan_path="/x/plan.json", run_dir=str(tmp_path))
    assert [(n.name, n.ipn, n.address) for n in cfg.neighbours] == [
        ("g", 9, "10.0.9.1:4600"), ("s2", 2, "10.0.0.2:4556")]
    assert cfg.app_socket == str(tmp_path / "bp.sock") and cfg.routing["algorithm"] == "cgr"
    again = AgentConfig.from_obj(cfg.to_obj())
    assert again.neighbours == cfg.neighbours
    with pytest.raises(InputError, match="not in the contact plan"):
        AgentConfig.for_plan_node(plan, "zz", {})


def test_default_socket_and_store_under_the_socket_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_SOCKET_DIR", str(tmp_path))
    cfg = AgentConfig.from_obj({"node": "s1", "ipn": 1})
    assert cfg.app_socket == str(tmp_path / "s1" / "bp.sock")
    assert cfg.store == str(tmp_path / "s1" / "store.sqlite")
