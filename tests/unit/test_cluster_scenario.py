"""A prepared scenario spread over hosts (``netemu demo --cluster``): what every host is
told (the scenario's agents, apps with their node's compute, link faults) and what is
refused before anything connects to Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netemu.cli import main
from netemu.errors import InputError
from netemu.plan.partition import HostCapacity, Partition
from netemu.run.cluster import Cluster
from netemu.run.cluster_scenario import agent_settings, check, with_compute
from netemu.run.runner import RunOptions, ScenarioRun
from netemu.runtime.env import NETEMU_COMPUTE_OPS_PER_S, NETEMU_HOST_OPS_PER_S

ROOT = Path(__file__).resolve().parents[2]
WINDOW = "emulation: {duration_s: 600, time_scale: 10}\n"


def _prepare(tmp_path: Path, extra: str):
    p = tmp_path / "s.yaml"
    p.write_text((ROOT / "topologies" / "tiny.yaml").read_text() + "\n" + WINDOW + extra)
    return ScenarioRun(RunOptions(p, echo=lambda s: None)).prepare()


def test_link_faults_go_across_hosts_node_crashes_are_refused(tmp_path: Path) -> None:
    cut = "faults:\n  - {kind: link_outage, link: [sat-0, sat-1], start_s: 60, duration_s: 30}\n"
    check(_prepare(tmp_path, cut))  # each host cuts its own end of the link
    crash = "faults:\n  - {kind: node_crash, node: sat-1, start_s: 60, duration_s: 30, name: boom}\n"
    with pytest.raises(InputError, match=r"node_crash faults \(boom\).*one machine"):
        check(_prepare(tmp_path, crash))
    with pytest.raises(InputError, match="ip_routing frr: only oracle and none"):
        check(_prepare(tmp_path, "ip_routing: frr\n"))


def test_every_host_gets_the_scenarios_agents_and_window(tmp_path: Path) -> None:
    p = _prepare(tmp_path, "routing: cgr\ncapture: [sat-0:sat-1]\ntraffic:\n  flows:\n"
                 "    - {name: up, from: kashi, to: sat-1, interval_s: 60, size_bytes: 1000}\n")
    s = agent_settings(p)
    assert (s["window_start_s"], s["window_end_s"]) == (0.0, 600.0)
    assert s["routing"]["algorithm"] == "cgr"
    assert s["captures"] == [("sat-0", "sat-1")]
    flows = json.loads(s["traffic_json"])
    assert flows and "up" in json.dumps(flows)


def test_apps_carry_their_nodes_compute_to_the_host_that_starts_them(tmp_path: Path) -> None:
    p = _prepare(tmp_path, "apps: [eo-filter, downlink]\n"
                 "compute:\n  satellites: {tops: 744}\n  ground: {tops: 50}\n")
    env = {i.key: i.environment for i in with_compute(p.apps, p.scenario)}
    assert float(env["eo-filter.sat-0"][NETEMU_COMPUTE_OPS_PER_S]) == 744e12
    assert float(env["downlink.kashi"][NETEMU_COMPUTE_OPS_PER_S]) == 50e12
    assert all(NETEMU_HOST_OPS_PER_S in e for e in env.values())
    # without a compute: section, nothing is added
    bare = _prepare(tmp_path, "apps: [downlink]\n")
    assert with_compute(bare.apps, bare.scenario) == bare.apps


def test_the_clock_waits_for_the_host_slowest_to_start_its_apps(tmp_path: Path) -> None:
    p = _prepare(tmp_path, "apps:\n  - {name: eo-filter, mode: container}\n"
                 "  - {name: downlink, mode: process}\n")
    hosts = [HostCapacity("a", 2, 1 << 33), HostCapacity("b", 1, 1 << 33)]
    cl = Cluster("auto", hosts=[{"cores": 2}, {"cores": 1}])
    # host 0 (2 cores): three satellites' containers; host 1 (1 core): two processes
    cl.part = Partition({"sat-0": 0, "sat-1": 0, "sat-2": 0, "kashi": 1, "bangalore": 1},
                        [], hosts)
    assert cl.apps_lead_s(p.apps) == pytest.approx(3 * 2.0 / 2)
    cl.hosts = [{"cores": 8}, {"cores": 1}]
    assert cl.apps_lead_s(p.apps) == pytest.approx(2 * 0.5)
    assert cl.apps_lead_s([]) == 0.0


def test_demo_cluster_refuses_what_does_not_go_across_hosts(
        capsys: pytest.CaptureFixture[str]) -> None:
    tiny = str(ROOT / "topologies" / "tiny.yaml")
    rc = main(["demo", tiny, "--cluster", "auto", "--view", "--lead-s", "30"])
    assert rc != 0
    err = capsys.readouterr().err
    assert "--cluster: leave out --view, --lead-s: a run spread over hosts" in err
