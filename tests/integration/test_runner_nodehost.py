"""The regression scenario tiny-dtn.yaml with its agents in two node hosts
(``emulation.agent_hosts: 2``), one run for this module: the same expectations pass,
bundles are delivered, nothing is left behind — and the three apps work over real DTN:
tiles filtered onboard reach the ground, queries are answered from orbit by inference in
containers, and the report shows it. (The regression suite runs the scenario as it is,
one agent process per node.)"""

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


@pytest.fixture(scope="module")
def hosted_run(tmp_path_factory) -> tuple[Path, str, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("hosted")
    run = f"th{uuid.uuid4().hex[:5]}"
    parent = tmp / "runs"
    r = subprocess.run(
        [sys.executable, "-m", "netemu", "test", str(_scenario(tmp)), "--out",
         str(parent), "--run-name", run, "--junit", str(tmp / "junit.xml")],
        capture_output=True, text=True, timeout=600, cwd=tmp,
    )
    assert _leftovers(run) == []
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    return parent / "regression-tiny-dtn", run, r


def test_regression_scenario_passes_with_two_node_hosts(hosted_run) -> None:
    out, run, r = hosted_run
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


def test_apps_over_real_dtn(hosted_run) -> None:
    run = hosted_run[0]
    m = json.loads((run / "metrics.json").read_text())
    eo = [json.loads(p.read_text()) for p in run.glob("apps/eo-filter/*/result.json")]
    assert len(eo) == 3 and all(e["tiles"] > 0 for e in eo)
    dl = json.loads((run / "apps/downlink/kashi/result.json").read_text())
    assert dl["tiles_received"] > 0  # tiles crossed the emulated links as bundles
    index = [json.loads(x) for x in (run / "apps/downlink/kashi/index.jsonl").read_text().splitlines()]
    assert all((run / "apps/downlink/kashi" / rec["file"]).read_bytes()[:2] == b"P5" for rec in index)
    assert m["queries_answered"] > 0 and m["query_latency_p50_s"] is not None
    assert m["bytes_sent"] < m["bytes_captured"]
    # eo-filter and the orbit-query service ran as podman containers on the satellites,
    # with the ONNX model under onnxruntime inside, on the declared compute
    sats = sorted(p.parent.name for p in run.glob("apps/eo-filter/*/result.json"))
    for app in ("eo-filter", "orbit-query"):
        for sat in sats:
            usage = json.loads((run / "apps" / app / sat / "usage.json").read_text())
            assert usage["mode"] == "container" and usage["container"], usage
            res = json.loads((run / "apps" / app / sat / "result.json").read_text())
            assert res["runtime"].startswith("onnxruntime "), res
            assert res["compute"]["ops_per_s"] == 744e12
    assert all(e["model"].endswith("detector.onnx") for e in eo)
    client = json.loads((run / "apps/orbit-query/kashi/result.json").read_text())
    answered = [q for q in client["queries"] if q["latency_s"] is not None]
    assert answered and all(q["tiles_scanned"] > 0 for q in answered)
    # 9.4 M operations per tile at 744 TOPS: microseconds of modelled compute per query
    assert all(0 < q["compute_s"] < 1e-3 for q in answered)
    assert m["query_network_p95_s"] is not None
    assert (run / "report" / "index.html").exists()
