"""The regression scenario with its agents in two node hosts (``emulation.agent_hosts:
2``): the same expectations pass, bundles are delivered, and nothing is left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from netemu.run.runner import HOSTED_KEEPALIVE_S

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "topologies" / "regression" / "tiny-dtn.yaml"
WINDOW = "emulation: {start_s: 0, duration_s: 900, time_scale: 10}"


def _scenario(tmp_path: Path) -> Path:
    text = SCENARIO.read_text()
    assert WINDOW in text  # the regression scenario's own window, with node hosts added
    text = text.replace(WINDOW, "emulation: {start_s: 0, duration_s: 900, time_scale: 10, "
                                "agent_hosts: 2}")
    p = tmp_path / "tiny-dtn-hosts.yaml"
    p.write_text(text)
    return p


def _leftovers(run: str) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [line.split()[0] for line in ns.splitlines() if line.startswith(f"{run}-")]
    ps = subprocess.run(["pgrep", "-af", f"netemu-mqtt-{run}-|--config .*/{run}|"
                         f"nodehost --config .*{run}"],
                        capture_output=True, text=True).stdout
    left += [line for line in ps.splitlines() if "pgrep" not in line]
    return left


def test_regression_scenario_passes_with_two_node_hosts(tmp_path) -> None:
    run = f"th{uuid.uuid4().hex[:5]}"
    parent = tmp_path / "runs"
    r = subprocess.run(
        [sys.executable, "-m", "netemu", "test", str(_scenario(tmp_path)), "--out",
         str(parent), "--run-name", run, "--no-report"],
        capture_output=True, text=True, timeout=420, cwd=tmp_path,
    )
    out = parent / "regression-tiny-dtn"
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert "in 2 node hosts" in r.stdout and "5 agents ready" in r.stdout
    # (inference left late by a loaded host is the compute model's warning, not the hosts')
    warnings = [line for line in r.stdout.splitlines()
                if "WARNING" in line and "inference requests" not in line]
    assert not warnings, r.stdout[-3000:]
    # two HOST.json files, each in plan order, every node once, in its own namespace,
    # with the node hosts' keepalive
    plan_nodes = list(json.loads((out / "plan.json").read_text())["nodes"])
    hosted = []
    for i in range(2):
        host = json.loads((out / "hosts" / f"host-{i}.json").read_text())
        group = []
        for entry in host["nodes"]:
            node = Path(entry["config"]).parent.name
            assert entry["config"] == str(out / "agents" / node / "agent.json")
            assert entry["netns"] == f"/run/netns/{run}-{node}"
            cfg = json.loads(Path(entry["config"]).read_text())
            assert cfg["keepalive_s"] == HOSTED_KEEPALIVE_S
            group.append(node)
        assert group == sorted(group, key=plan_nodes.index)
        hosted += group
        assert "host_started" in (out / "hosts" / f"host-{i}.out").read_text()
    assert sorted(hosted) == sorted(plan_nodes)
    assert not list((out / "agents").glob("*/agent.out"))  # no per-node agent processes
    # the same expectations pass, and bundles went through the agents
    results = json.loads((out / "expect.json").read_text())
    assert results and all(o["passed"] for o in results["outcomes"]), results
    m = json.loads((out / "metrics.json").read_text())
    assert m["bundles_delivered"] > 0 and m["apps_failed"] == 0, m
    meta = json.loads((out / "run.json").read_text())
    assert meta["errors"] == [] and meta["agent_processes"] == 2
    assert _leftovers(run) == []
