"""The agent's config: files (YAML, JSON, several nodes), errors naming file and field,
and the config of a plan node."""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timezone
from pathlib import Path

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


def test_neighbour_dial_mode_defaults_to_both_and_is_checked(tmp_path):
    cfg = AgentConfig.from_obj({"node": "a", "ipn": 1, "neighbours": [
        {"name": "b", "ipn": 2}, {"name": "c", "ipn": 3, "dial": "never"}]})
    assert [n.dial for n in cfg.neighbours] == ["both", "never"]
    assert AgentConfig.from_obj(cfg.to_obj()).neighbours == cfg.neighbours
    p = tmp_path / "a.yaml"
    p.write_text("node: a\nipn: 1\nneighbours:\n  - {name: b, ipn: 2, dial: lowr}\n")
    with pytest.raises(InputError, match=r":4: neighbours\[0\]\.dial: must be one of both, "
                                         r"lower, never, got 'lowr'; did you mean 'lower'\?"):
        AgentConfig.load(p)
    # in an emulation both ends are netemu agents: only the lower ipn dials
    plan = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc),
                       {"s1": Node("s1", 1), "s2": Node("s2", 2)},
                       [Contact("s1", "s2", 0, 10, 1e6, 0.01)])
    assert [n.dial for n in AgentConfig.for_plan_node(plan, "s2", {}).neighbours] == ["lower"]


def test_max_bundle_bytes_and_reassembly_cap(tmp_path):
    cfg = AgentConfig.from_obj({"node": "a", "ipn": 1, "reassembly_max_bytes": 1 << 20,
                                "neighbours": [{"name": "b", "ipn": 2, "cl": "mtcp",
                                                "max_bundle_bytes": 65536},
                                               {"name": "c", "ipn": 3}]})
    assert [n.max_bundle_bytes for n in cfg.neighbours] == [65536, None]
    assert cfg.reassembly_max_bytes == 1 << 20
    assert AgentConfig.from_obj(cfg.to_obj()).to_obj() == cfg.to_obj()
    p = tmp_path / "a.yaml"
    p.write_text("node: a\nipn: 1\nneighbours:\n  - {name: b, ipn: 2, max_bundle_bytes: 9}\n")
    with pytest.raises(InputError, match=r":4: neighbours\[0\]\.max_bundle_bytes"):
        AgentConfig.load(p)


def test_default_socket_and_store_under_the_socket_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NETEMU_SOCKET_DIR", str(tmp_path))
    cfg = AgentConfig.from_obj({"node": "s1", "ipn": 1})
    assert cfg.app_socket == str(tmp_path / "s1" / "bp.sock")
    assert cfg.store == str(tmp_path / "s1" / "store.sqlite")


# --- the keys: section ------------------------------------------------------------------

K1, K2 = "11" * 32, "22" * 32


@pytest.mark.parametrize("keys, match", [
    ("  verfy: {'ipn:2.0': '$K'}\n",
     r":5: keys\.verfy: unknown key 'verfy'; did you mean 'verify'\?"),
    ("  verify: {'ipn:2.0': '$K'}\n  require_bib_form: ['*']\n",
     r":6: keys\.require_bib_form: unknown key 'require_bib_form'; did you mean "
     r"'require_bib_from'\?"),
    ("  require_bib_from: ['*']\n",
     r":5: keys\.require_bib_from: bundles from any node must carry a BIB, but keys\.verify "
     r"holds no key"),
    ("  verify: {'ipn:3.0': '$K'}\n  require_bib_from: ['ipn:2.0']\n",
     r":6: keys\.require_bib_from: bundles from ipn:2\.0 must carry a BIB, but keys\.verify "
     r"holds no key for it"),
    ("  verify: {'ipn:2.0': 'xyz'}\n", r":5: keys\.verify\.ipn:2\.0: not a hex key"),
    ("  sign_key: 1234\n", r":5: keys\.sign_key: expected text"),
    ("  sign_key: ''\n", r":5: keys\.sign_key: not a hex key"),
    ("  verify: {'ipn:2': '$K'}\n", r":5: keys\.verify\.ipn:2: 'ipn:2' is not an endpoint ID"),
    ("  verify: {'ipn:2.0': '$K'}\n  require_bib_from: ['ipn:2.1']\n",
     r":6: keys\.require_bib_from\[0\]: 'ipn:2\.1' is an endpoint, not a node; write 'ipn:2\.0'"),
    ("  decrypt: {'ipn:2.0': '1122'}\n", r":5: keys\.decrypt\.ipn:2\.0: an AES key"),
    ("  bib: {sign: '$K'}\n", r":5: keys\.bib: unknown key 'bib'"),
])
def test_config_keys_are_checked(tmp_path, keys, match):
    """A misspelt or unusable key in ``keys:`` is an error naming file, line and field,
    not a silently empty policy; a rule requiring BIBs with no key to check them is
    refused at load."""
    p = tmp_path / "a.yaml"
    p.write_text("node: x\nipn: 1\nlisten: {tcpcl: []}\nkeys:\n" + keys.replace("$K", K1))
    with pytest.raises(InputError, match=match) as ei:
        AgentConfig.load(p)
    assert str(p) in str(ei.value)


def test_config_keys_make_the_policy():
    from netemu.agent.core import security_policy

    cfg = AgentConfig.from_obj({"node": "x", "ipn": 1, "keys": {
        "sign_key": K1, "verify": {"ipn:2.0": K2, "*": K1}, "require_bib_from": ["ipn:2.0"],
        "decrypt": {"ipn:2.0": "33" * 16}}})
    pol = security_policy(cfg)
    assert pol is not None and pol.sign_key == bytes.fromhex(K1)
    assert pol.verify_keys == {"ipn:2.0": bytes.fromhex(K2), "*": bytes.fromhex(K1)}
    assert pol.require_bib_from == frozenset({"ipn:2.0"})
    assert pol.decrypt_keys == {"ipn:2.0": bytes.fromhex("33" * 16)}
    assert AgentConfig.from_obj(cfg.to_obj()).to_obj() == cfg.to_obj()
    assert security_policy(AgentConfig.from_obj({"node": "x", "ipn": 1})) is None
    # A config built in code is held to the same rules when its policy is made.
    with pytest.raises(InputError, match="keys.require_bib_from"):
        security_policy(AgentConfig("x", 1, keys={"require_bib_from": ["*"]}))


def _yaml_examples(text: str) -> list[str]:
    """The YAML examples of a text that show a ``keys:`` section."""
    import re

    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    blocks += [m for m in re.findall(r"Example \(YAML\)::\n\n(.*?)\n\n", text, re.S)]
    return [textwrap.dedent(b) for b in blocks if "keys:" in b]


def test_documented_keys_load(tmp_path):
    """The config examples of the module docstring and docs/dtn-agent.md load as written,
    keys included."""
    import netemu.agent.config as mod

    docs = Path(__file__).resolve().parents[2] / "docs" / "dtn-agent.md"
    examples = _yaml_examples(mod.__doc__ or "") + _yaml_examples(docs.read_text())
    assert len(examples) >= 2
    for i, text in enumerate(examples):
        p = tmp_path / f"ex{i}.yaml"
        p.write_text(text)
        cfg = AgentConfig.load(p)
        assert cfg.keys and cfg.keys.get("sign_key")
