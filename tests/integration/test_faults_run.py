"""Faults in a real run (namespaces, agents, captures): an ISL outage stops every bundle
on that link while the contact plan — what CGR routes with — still has it; a satellite
whose agent is killed (SIGKILL) while it holds bundles forwards them after its restart.

One run of topologies/node-crash.yaml (the tiny geometry: 3 satellites in a ring, 2
stations; bundle agents on every node; bangalore → sat-0 over bangalore–sat-2 and the ISL
sat-2–sat-0, and sat-1 → kashi, held on sat-2 until its kashi pass at ~485 s; sat-2's
agent killed at 400 s) with an ISL outage and a capture of that ISL added. `netemu test`
checks the scenario's own expectations (every held bundle delivered, none outside
contacts): the regression suite leaves that scenario to this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "topologies" / "node-crash.yaml"
OUTAGE = (150.0, 300.0)  # sat-0 – sat-2
CRASH = (400.0, 440.0)  # sat-2's agent killed, then restarted
CRASH_FAULT = "  - {kind: node_crash, name: sat2-crash, node: sat-2, start_s: 400, duration_s: 40}\n"
ADDED = ("capture: [sat-0:sat-2]\nfaults:\n"
         "  - {kind: link_outage, name: isl-cut, link: [sat-0, sat-2], start_s: 150, "
         "duration_s: 150}\n")


def _scenario(tmp_path: Path) -> Path:
    text = SCENARIO.read_text()
    assert "faults:\n" + CRASH_FAULT in text  # the scenario's crash, with the outage added
    p = tmp_path / "faults.yaml"
    p.write_text(text.replace("name: node-crash", "name: faults-tiny")
                 .replace("faults:\n", ADDED))
    return p


def _leftovers(run: str) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [line.split()[0] for line in ns.splitlines() if line.startswith(f"{run}-")]
    ps = subprocess.run(["pgrep", "-af", f"netemu-mqtt-{run}-|--config .*/{run}"],
                        capture_output=True, text=True).stdout
    return left + [line for line in ps.splitlines() if "pgrep" not in line]


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("faults")
    run = f"tf{uuid.uuid4().hex[:5]}"
    r = subprocess.run(
        [sys.executable, "-m", "netemu", "test", str(_scenario(tmp)), "--out",
         str(tmp / "runs"), "--run-name", run, "--no-report"],
        capture_output=True, text=True, timeout=600, cwd=tmp)
    out = tmp / "runs" / "faults-tiny"
    assert _leftovers(run) == []
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    return out, r.stdout


def test_the_scenarios_expectations_pass_with_the_outage_added(faulty_run) -> None:
    run, stdout = faulty_run
    results = json.loads((run / "expect.json").read_text())
    checked = {o["metric"]: o["passed"] for o in results["outcomes"]}
    assert checked == {"traffic.by_name.hold.sent": True,
                       "traffic.by_name.hold.delivery_ratio": True,
                       "faults.sat2-crash.in_transit": True,
                       "faults.sat2-crash.undelivered": True,
                       "traffic_outside_contacts_bytes": True}, results
    assert "5 passed, 0 failed" in stdout


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()
            if line.strip()]


def _bundle_events(run: Path, node: str) -> list[dict]:
    return [e["payload"] for e in _events(run)
            if e["topic"].endswith(f"/bundle/{node}") and isinstance(e["payload"], dict)]


def test_outage_stops_the_link_while_cgr_still_plans_with_it(faulty_run) -> None:
    from netemu.analysis.pcap import run_transfers
    from netemu.plan.contacts import ContactPlan
    from netemu.routing.cgr import best_route

    run, _stdout = faulty_run
    t0, t1 = OUTAGE
    # the plan the agents route with has the ISL through the outage, and CGR's best
    # route from sat-2 to sat-0 in the middle of it is that ISL
    plan = ContactPlan.load(str(run / "plan.json"))
    assert any(c.src == "sat-2" and c.dst == "sat-0" and c.start_s <= t0 and c.end_s >= t1
               for c in plan.contacts)
    route = best_route(plan, "sat-2", "sat-0", (t0 + t1) / 2)
    assert route is not None and route.next_hop == "sat-0"
    # on the wire: bundles crossed sat-2 – sat-0 before and after, none during
    crossed = [t for t in run_transfers(run) if {t.sender, t.receiver} == {"sat-2", "sat-0"}]
    assert any(t.last_t_s < t0 for t in crossed), crossed[:5]
    assert any(t.first_t_s > t1 for t in crossed), crossed[-5:]
    # (5 scenario seconds, 0.5 s of wall time, for the kernel to take the carrier down)
    during = [t for t in crossed if t0 + 5.0 < t.first_t_s < t1 - 5.0
              or t0 + 5.0 < t.last_t_s < t1 - 5.0]
    assert during == []
    # recorded as a fault, with its times, in events.jsonl and metrics.json
    faults = [e["payload"] for e in _events(run) if "/fault/" in e["topic"]]
    assert [(f["event"], f["t_s"]) for f in faults if f["id"] == "isl-cut"] == [
        ("started", t0), ("ended", t1)]
    m = json.loads((run / "metrics.json").read_text())
    assert m["faults_count"] == 2
    cut = m["faults"]["isl-cut"]
    assert cut["kind"] == "link_outage" and cut["nodes"] == ["sat-0", "sat-2"]
    assert cut["in_transit"] > 0  # bangalore's bundles to sat-0 were on their way


def test_crashed_node_keeps_its_bundles_and_forwards_them_after_restart(faulty_run) -> None:
    run, stdout = faulty_run
    c0, c1 = CRASH
    assert "killed the bundle agent of sat-2 (SIGKILL)" in stdout
    assert "restarted the bundle agent of sat-2 from its store" in stdout
    # what sat-2 held when it was killed: received, not yet passed on
    ev = _bundle_events(run, "sat-2")
    received = {e["bundle_id"] for e in ev if e["event"] == "received" and e["t_s"] < c0}
    left = {e["bundle_id"] for e in ev if e["event"] in ("forwarded", "delivered")
            and e["t_s"] < c0}
    held = received - left
    assert len(held) >= 20, (len(received), len(left))
    # after the restart sat-2 forwards every one of them, and kashi takes them
    after = {e["bundle_id"] for e in ev if e["event"] == "forwarded" and e["t_s"] >= c1}
    assert held <= after, sorted(held - after)[:5]
    delivered = {e["bundle_id"] for e in _bundle_events(run, "kashi")
                 if e["event"] == "delivered"}
    assert held <= delivered, sorted(held - delivered)[:5]
    faults = [e["payload"] for e in _events(run) if "/fault/" in e["topic"]]
    crash = [f for f in faults if f["id"] == "sat2-crash"]
    assert [f["event"] for f in crash] == ["started", "ended"]
    assert crash[0]["pid"] != crash[1]["pid"]  # a new process, not the old one resumed
