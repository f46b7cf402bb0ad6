"""The ``ip_routing:`` section and the routing plug-in's tables: what a user who writes
one sees when it is wrong (file, line, field; the plug-in named), and how a table
becomes next hops."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from netemu.emulator.iproute_plugin import PluginRoutes, load_route_function
from netemu.emulator.layout import plan_layout
from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.plan.iprouting import IpRouting, parse_ip_routing, parse_ip_routing_option
from netemu.plan.scenario import load_scenario
from netemu.run.runner import RunOptions, ScenarioRun

ROOT = Path(__file__).resolve().parents[2]
EPOCH = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _scenario(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text((ROOT / "topologies" / "tiny.yaml").read_text() + "\n" + extra)
    return p


def test_words_and_mappings() -> None:
    assert parse_ip_routing(None) == IpRouting("oracle")
    assert parse_ip_routing("none") == IpRouting("none")
    assert parse_ip_routing({"plugin": "my.mod:fn"}) == IpRouting("plugin", "my.mod:fn")
    assert parse_ip_routing({"mode": "oracle"}) == IpRouting("oracle")
    assert parse_ip_routing_option("plugin:my.mod:fn") == IpRouting("plugin", "my.mod:fn")
    assert parse_ip_routing_option("none").installs_routes is False
    assert IpRouting("plugin", "m:f").installs_routes


@pytest.mark.parametrize("extra, words, field", [
    ("ip_routing: orcale\n", "did you mean 'oracle'", "ip_routing"),
    ("ip_routing: {plugin: 'no colon'}\n", "module:function", "ip_routing.plugin"),
    ("ip_routing: {mode: plugin}\n", "needs plugin:", "ip_routing.mode"),
    ("ip_routing: {mode: none, plugin: 'a:b'}\n", "for mode plugin", "ip_routing.plugin"),
    ("ip_routing: {plugn: 'a:b'}\n", "did you mean 'plugin'", "ip_routing.plugn"),
])
def test_bad_section_names_file_line_and_field(tmp_path, extra, words, field) -> None:
    with pytest.raises(InputError) as e:
        load_scenario(_scenario(tmp_path, extra))
    assert words in str(e.value)
    assert e.value.field == field
    assert e.value.line is not None and e.value.line > 20
    assert e.value.source and e.value.source.endswith("s.yaml")


def test_bad_option_is_refused() -> None:
    with pytest.raises(InputError, match="plugin:module:function"):
        parse_ip_routing_option("plugin:nocolon")
    with pytest.raises(InputError, match="did you mean 'none'"):
        parse_ip_routing_option("nnoe")


def test_plugin_that_cannot_be_imported_is_refused_before_the_run(tmp_path) -> None:
    (tmp_path / "broken_routes.py").write_text("import no_such_module_here\n")
    p = _scenario(tmp_path, "ip_routing:\n  plugin: broken_routes:compute\n")
    with pytest.raises(InputError) as e:
        ScenarioRun(RunOptions(p, echo=lambda s: None)).prepare()
    assert "broken_routes" in str(e.value) and "ModuleNotFoundError" in str(e.value)
    assert e.value.field == "ip_routing.plugin" and e.value.line is not None


def test_plugin_next_to_the_scenario_is_found(tmp_path) -> None:
    (tmp_path / "my_routes.py").write_text("def compute(graph, plan):\n    return {}\n")
    p = _scenario(tmp_path, "ip_routing: {plugin: 'my_routes:compute'}\n"
                  "emulation: {duration_s: 60}\n")
    prep = ScenarioRun(RunOptions(p, echo=lambda s: None)).prepare()
    assert prep.ip_routing == IpRouting("plugin", "my_routes:compute")
    assert prep.route_function(None, None) == {}
    with pytest.raises(InputError, match="has no function 'nothing'"):
        load_route_function("my_routes:nothing")


def _ring() -> tuple[PluginRoutes, list[str], list]:
    names = ["s1", "s2", "s3", "s4"]
    nodes = {n: Node(n, i + 1, "satellite", 0) for i, n in enumerate(names)}
    cs = []
    for a, b in [("s1", "s2"), ("s2", "s3"), ("s3", "s4"), ("s4", "s1")]:
        cs += [Contact(a, b, 0, 10, 1e6, 0.01, "isl", 0.0), Contact(b, a, 0, 10, 2e6, 0.01,
                                                                      "isl", 0.0)]
    plan = ContactPlan(EPOCH, nodes, cs)
    lay = plan_layout(plan)
    errors: list = []
    pr = PluginRoutes(lambda g, p: {}, "t:f", lay, plan, lambda t, m: errors.append((t, m)))
    idx = pr.index
    links = {}
    for p in lay.periods:
        u, v = idx[p.a], idx[p.b]
        links[(min(u, v), max(u, v))] = (0.01, p.ep_a if u < v else p.ep_b,
                                         p.ep_b if u < v else p.ep_a)
    return pr, errors, [lay, links]


def test_table_becomes_next_hops_on_the_egress_interface() -> None:
    pr, _errors, (lay, links) = _ring()
    t = pr.table({"s1": {"s3": "s2", "s4": "s2"}, "s2": {"s1": "s1"}}, links)
    n = 4
    ep, hop = divmod(int(t[0, 2]), n)
    assert pr.nodes[hop] == "s2" and lay.endpoints[ep].node == "s1"
    assert divmod(int(t[0, 3]), n)[1] == 1  # s1 → s4 the long way, as asked
    assert t[0, 1] == -1 and t[2, 0] == -1  # what the table leaves out has no route
    assert np.count_nonzero(t >= 0) == 3


@pytest.mark.parametrize("table, words", [
    ({"s1": {"s3": "s3"}}, "next hop s3 is not a neighbour of s1"),
    ({"mars": {"s3": "s2"}}, "node 'mars' is not a node"),
    ({"s1": {"moon": "s2"}}, "destination 'moon' is not a node"),
    ({"s1": ["s2"]}, "expected {destination: next hop}"),
    ([("s1", "s2")], "expected {node: {destination: next hop}}"),
])
def test_bad_table_installs_nothing_and_says_why(table, words) -> None:
    pr, errors, (_lay, links) = _ring()
    pr.fn = lambda g, p: table
    assert pr.compute(links, {}, 3.0) is None
    assert len(errors) == 1 and errors[0][0] == 3.0
    assert words in errors[0][1] and "t:f" in errors[0][1]


def test_plugin_exception_is_reported_with_where_it_was_raised() -> None:
    pr, errors, (_lay, links) = _ring()

    def boom(g, p):
        raise KeyError("s9")

    pr.fn = boom
    assert pr.compute(links, {}, 1.0) is None
    assert "KeyError: 's9'" in errors[0][1] and "test_ip_routing_section.py:" in errors[0][1]


def test_graph_carries_delays_rates_kinds_and_time() -> None:
    pr, _errors, (_lay, links) = _ring()
    seen = []
    pr.fn = lambda g, p: seen.append(g) or {}
    info = {k: (1e6, "isl") for k in links}
    pr.compute(links, info, 7.5)
    g = seen[0]
    assert g.graph["t_s"] == 7.5 and g.nodes["s1"]["kind"] == "satellite"
    assert g.nodes["s1"]["addr"].count(".") == 3
    assert g.edges["s1", "s2"] == {"delay_s": 0.01, "rate_bps": 1e6, "kind": "isl"}
    assert sorted(g.neighbors("s1")) == ["s2", "s4"]


# --- mode frr and the measurement keys ------------------------------------------------


def test_frr_section_with_timers_and_probes(tmp_path) -> None:
    sc = load_scenario(_scenario(tmp_path, "ip_routing:\n  mode: frr\n  hello_s: 2\n"
                                 "  bfd: true\n  probes: [sat-0:kashi]\n  sample_s: 0.5\n"))
    ipr = sc.ip_routing
    assert ipr.mode == "frr" and ipr.daemons and not ipr.installs_routes and ipr.reaches_nodes
    assert (ipr.hello_s, ipr.dead_s, ipr.bfd) == (2, 8, True)  # dead: 4 hellos by default
    assert ipr.probes == (("sat-0", "kashi"),) and ipr.sample_s == 0.5
    assert ipr.describe() == "frr/ospf with BFD"
    assert parse_ip_routing_option("frr") == IpRouting("frr")


@pytest.mark.parametrize("extra, words, field", [
    ("ip_routing: {mode: frr, hello_s: 5, dead_s: 5}\n", "more than hello_s",
     "ip_routing.dead_s"),
    ("ip_routing: {mode: frr, protocol: ospff}\n", "did you mean 'ospf'", "ip_routing.protocol"),
    ("ip_routing: {mode: oracle, hello_s: 2}\n", "is for mode frr", "ip_routing.hello_s"),
    ("ip_routing: {mode: frr, spf_hold_ms: 500, spf_max_hold_ms: 100}\n", "at least",
     "ip_routing.spf_max_hold_ms"),
    ("ip_routing: {probes: [sat-0:kahsi]}\n", "did you mean 'kashi'", "ip_routing.probes"),
    ("ip_routing: {probes: [sat-0]}\n", "SRC:DST", "ip_routing.probes"),
    ("ip_routing: {probes: [sat-0:sat-1], sample_s: 0}\n", "≥ 0.01", "ip_routing.sample_s"),
])
def test_bad_frr_or_probe_keys(tmp_path, extra, words, field) -> None:
    with pytest.raises(InputError) as e:
        load_scenario(_scenario(tmp_path, extra))
    assert words in str(e.value) and e.value.field == field and e.value.line


def test_ospf_config_covers_every_interface_point_to_point() -> None:
    from netemu.emulator.frr import FrrSettings, ospf_config, zebra_config

    conf = ospf_config("sat-1", "10.0.0.2", ["sat-1-eth0", "sat-1-eth1"],
                       FrrSettings(hello_s=2, dead_s=9, spf_delay_ms=10, bfd=True))
    for ifn in ("sat-1-eth0", "sat-1-eth1"):
        block = conf.split(f"interface {ifn}\n")[1].split("!")[0]
        assert "ip ospf network point-to-point" in block and "ip ospf area 0" in block
        assert "hello-interval 2" in block and "dead-interval 9" in block
        assert "ip ospf bfd" in block
    assert "interface lo\n ip ospf area 0\n ip ospf passive" in conf
    assert "ospf router-id 10.0.0.2" in conf and "timers throttle spf 10 50 1000" in conf
    assert "set src 10.0.0.2" in zebra_config("sat-1", "10.0.0.2")


def test_isis_config_sets_its_timers_before_the_level_and_wide_metrics() -> None:
    from netemu.emulator.frr import FrrDaemons, FrrSettings, isis_config, isis_system_id

    s = FrrSettings(hello_s=2, dead_s=9, protocol="isis", bfd=True)
    conf = isis_config("sat-1", "10.0.0.2", ["sat-1-eth0"], s)
    assert isis_system_id("10.0.0.2") == "0100.0000.0002"
    assert " net 49.0001.0100.0000.0002.00" in conf
    router = conf.split("router isis 1\n")[1].split("!")[0]
    # an LSP regeneration scheduled with FRR's 30-s default would leave the LSPs empty
    assert router.index("lsp-gen-interval 1") < router.index("is-type level-2-only")
    assert "metric-style wide" in router
    block = conf.split("interface sat-1-eth0\n")[1].split("!")[0]
    assert "isis network point-to-point" in block and "isis hello-multiplier 5" in block
    assert "isis bfd" in block
    assert "interface lo\n ip router isis 1\n isis passive" in conf
    assert FrrDaemons({}, Path("/nonexistent"), s, None).daemons() == [  # type: ignore[arg-type]
        "zebra", "isisd", "bfdd"]
    sc = parse_ip_routing({"mode": "frr", "protocol": "isis"})
    assert sc.describe() == "frr/isis"


def test_ospf6_config_and_its_ipv6_addresses(tmp_path) -> None:
    from netemu.emulator.frr import FrrDaemons, FrrSettings, ospf6_config, zebra_config
    from netemu.emulator.layout import link_local, node_addr6

    s = FrrSettings(hello_s=2, dead_s=9, protocol="ospf6")
    conf = ospf6_config("sat-1", "10.0.0.2", ["sat-1-eth0"], s)
    block = conf.split("interface sat-1-eth0\n")[1].split("!")[0]
    assert "ipv6 ospf6 network point-to-point" in block and "ipv6 ospf6 area 0" in block
    assert "hello-interval 2" in block and "dead-interval 9" in block
    assert "interface lo\n ipv6 ospf6 area 0\n ipv6 ospf6 passive" in conf
    assert "ospf6 router-id 10.0.0.2" in conf
    # the IPv6 node address carries the IPv4 one; routes get it as their source
    assert node_addr6("10.0.1.3") == "fd6e:656d::a00:103"
    z = zebra_config("sat-1", "10.0.1.3", "ospf6")
    assert "set src fd6e:656d::a00:103" in z and "ipv6 protocol ospf6 route-map NODE-SRC" in z
    assert "no ipv6 forwarding" not in z
    # next hops are link-local (EUI-64 from the MAC), how the sampler names neighbours
    assert link_local("02:00:00:00:01:0a") == "fe80::ff:fe00:10a"
    assert FrrDaemons({}, Path("/nonexistent"), s, None).daemons() == [  # type: ignore[arg-type]
        "zebra", "ospf6d"]
    sc = load_scenario(_scenario(tmp_path, "ip_routing: {mode: frr, protocol: ospf6}\n"))
    assert sc.ip_routing.describe() == "frr/ospf6"
    assert parse_ip_routing_option("frr/ospf6").protocol == "ospf6"
    with pytest.raises(InputError) as e:
        load_scenario(_scenario(tmp_path, "ip_routing: {mode: frr, protocol: ospf6, bfd: true}\n"))
    assert e.value.field == "ip_routing.bfd" and "not ospf6" in str(e.value)


def test_isis_frames_are_counted_on_the_link_interfaces() -> None:
    from netemu.emulator.ipmeasure import CONTROL_NFT, isis_nft

    rules = isis_nft(["sat-1-eth0", "sat-1-eth1"])
    assert 'hook egress devices = { "sat-1-eth0", "sat-1-eth1" }' in rules
    assert "@ll,112,16 0xfefe" in rules  # the ISO LLC header, not an EtherType
    assert "meta l4proto 89" in CONTROL_NFT  # OSPFv2 and OSPFv3 alike


def test_bird_section_takes_the_ospf_timers_only(tmp_path) -> None:
    sc = load_scenario(_scenario(tmp_path, "ip_routing:\n  mode: bird\n  hello_s: 2\n"))
    ipr = sc.ip_routing
    assert ipr.mode == "bird" and ipr.daemons and not ipr.installs_routes
    assert (ipr.hello_s, ipr.dead_s) == (2, 8) and ipr.describe() == "bird/ospf"
    assert parse_ip_routing_option("bird") == IpRouting("bird")
    with pytest.raises(InputError) as e:
        load_scenario(_scenario(tmp_path, "ip_routing: {mode: bird, bfd: true}\n"))
    assert "is for mode frr, not bird" in str(e.value) and e.value.field == "ip_routing.bfd"
    with pytest.raises(InputError) as e:
        load_scenario(_scenario(tmp_path, "ip_routing: brid\n"))
    assert "did you mean 'bird'" in str(e.value)


def test_bird_config_exports_only_other_node_addresses() -> None:
    from netemu.emulator.bird import bird_config
    from netemu.emulator.frr import FrrSettings

    conf = bird_config("10.0.0.2", ["sat-1-eth0", "sat-1-eth1"],
                       FrrSettings(hello_s=2, dead_s=9, daemon="bird"))
    assert 'interface "sat-1-eth0", "sat-1-eth1" {\n      type ptp;' in conf
    assert "hello 2;" in conf and "dead 9;" in conf and "router id 10.0.0.2;" in conf
    assert "net != 10.0.0.2/32" in conf and "krt_prefsrc = 10.0.0.2;" in conf
    # the interface /32s stay out of the router LSA: an interface coming up must not
    # spend BIRD's one LSA per 5 s before its adjacency is full
    assert "stubnet 10.128.0.0/9 { hidden yes; summary yes; };" in conf
    assert "check link yes;" in conf


def test_bird_retransmits_after_2_s_unless_told_and_refuses_1_s(tmp_path) -> None:
    from netemu.emulator.bird import bird_config
    from netemu.emulator.frr import FrrSettings, ospf_config

    # BIRD drops a neighbour's LSA that follows the database exchange within 1 s and waits
    # for its retransmission: 2 s by default (FRR keeps its 5 s)
    bird = FrrSettings.of(parse_ip_routing({"mode": "bird"}))
    assert "retransmit 2;" in bird_config("10.0.0.2", ["e0"], bird)
    assert "retransmit 7;" in bird_config(
        "10.0.0.2", ["e0"], FrrSettings.of(parse_ip_routing({"mode": "bird", "retransmit_s": 7})))
    frr = FrrSettings.of(parse_ip_routing({"mode": "frr"}))
    assert "retransmit-interval 5" in ospf_config("s", "10.0.0.2", ["e0"], frr)
    with pytest.raises(InputError) as e:
        load_scenario(_scenario(tmp_path, "ip_routing: {mode: bird, retransmit_s: 1}\n"))
    assert e.value.field == "ip_routing.retransmit_s" and e.value.line


def test_override_keeps_the_scenarios_measurements_for_a_side_by_side_run(tmp_path) -> None:
    p = _scenario(tmp_path, "ip_routing: {mode: frr, hello_s: 3, probes: [sat-0:kashi]}\n"
                  "emulation: {duration_s: 60}\n")
    other = ScenarioRun(RunOptions(p, echo=lambda s: None, ip_routing="oracle")).prepare()
    assert other.ip_routing.mode == "oracle" and other.ip_routing.probes == (("sat-0", "kashi"),)
    same = ScenarioRun(RunOptions(p, echo=lambda s: None, ip_routing="frr")).prepare()
    assert same.ip_routing.hello_s == 3  # the scenario's timers hold
    isis = ScenarioRun(RunOptions(p, echo=lambda s: None, ip_routing="frr/isis")).prepare()
    assert (isis.ip_routing.protocol, isis.ip_routing.hello_s) == ("isis", 3)
    bird = ScenarioRun(RunOptions(p, echo=lambda s: None, ip_routing="bird/ospf")).prepare()
    assert bird.ip_routing.describe() == "bird/ospf" and bird.ip_routing.probes
    with pytest.raises(InputError) as e:
        parse_ip_routing_option("frr/isiss")
    assert "did you mean 'frr/isis'" in str(e.value)

