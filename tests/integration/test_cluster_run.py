"""One emulation across two hosts of the test bed (cluster_bed.Bed), through Ray: a chain
s0 – s1 – s2 – s3 split two and two, so the s1–s2 ISL crosses hosts through a VXLAN
tunnel. A ping across it, and across a link within one host, takes 2 × range / c within
1 ms, and from s0 to s3 by IP routes 6 × range / c; the clock offsets and the underlay delay are measured and recorded in run.json;
afterwards no namespace, tunnel, Ray process, shared memory or file is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cluster_bed import Bed

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("ray")

C_KM_S = 299_792.458
RANGE_KM = 3000.0  # every link of the chain
OWLT_S = RANGE_KM / C_KM_S

# Runs on the head (a Ray driver must run on a node): builds the run, pings, prints JSON.
DRIVER = """
import json, sys
from datetime import datetime, timezone
from pathlib import Path
from netemu.emulator.layout import plan_layout
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.run.cluster import Cluster

run, owlt, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
names = ["s0", "s1", "s2", "s3"]
contacts = [Contact(a, b, 0.0, 86400.0, 1e8, owlt, kind="isl")
            for x, y in zip(names, names[1:]) for a, b in ((x, y), (y, x))]
plan = ContactPlan(datetime.now(timezone.utc), {n: Node(n, i + 1, "satellite", 0)
                                               for i, n in enumerate(names)}, contacts)
lay = plan_layout(plan)
def peer_addr(a, b):  # b's interface address on the a–b link
    p = next(p for p in lay.periods if {p.a, p.b} == {a, b})
    return lay.endpoints[p.ep_b if p.b == b else p.ep_a].addr
res = {}
dies = len(sys.argv) > 4  # the driver dies mid-run, its agents up: the bed must clean up
agents = ({"routing": {"algorithm": "cgr"}, "window_start_s": 0.0, "window_end_s": 600.0}
          if dies else None)
with Cluster("auto") as cl:
    part = cl.start(plan, run=run, agents=agents, run_dir=out / "run" if dies else None)
    res["host_of"] = part.host_of
    res["cross"] = part.cross_links
    if dies:
        import os
        os._exit(3)
    for a, b in (("s1", "s2"), ("s0", "s1")):
        rc, text = cl.run_cmd(a, ["ping", "-n", "-q", "-c", "5", "-i", "0.2",
                                  peer_addr(a, b)])
        res[f"{a}-{b}"] = text
    # three hops by IP routes, two of them on host 0, one through the tunnel
    rc, text = cl.run_cmd("s0", ["ping", "-n", "-q", "-c", "5", "-i", "0.2",
                                 lay.node_addr["s3"]])
    res["s0-s3"] = text
    cl.record(out / "run.json")
    res["run_names"] = cl.run_names
print("RESULT " + json.dumps(res))
"""


def _min_rtt_s(ping_text: str) -> float:
    line = next(ln for ln in ping_text.splitlines() if "min/avg/max" in ln)
    return float(line.split("=")[1].split("/")[0]) / 1e3


def test_a_driver_dying_mid_run_is_cleaned_by_clean_cluster(tmp_path: Path) -> None:
    with Bed(2) as bed:
        out = bed.root / "out"
        out.mkdir()
        p = bed.run([sys.executable, "-c", DRIVER, bed.run_prefix, str(OWLT_S), str(out),
                     "die"], timeout=300)
        assert p.returncode == 3, p.stderr[-3000:]
        built = [ln.split()[0] for ln in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith(bed.run_prefix)]
        assert built  # the hosts' namespaces were there, and outlive the driver
        # so does the coordinator's broker (the agents' node hosts go with their actor:
        # Ray ends a worker's child processes when it exits)
        assert subprocess.run(["pgrep", "-f", f"mosquitto -c /run/netemu/{bed.run_prefix}m/"],
                              capture_output=True).returncode == 0
        # netemu clean --cluster cleans them on every host, before the bed goes
        c = bed.run([sys.executable, "-m", "netemu", "clean", "--cluster", "auto"],
                    timeout=120)
        assert c.returncode == 0, c.stderr[-2000:]
        # (the bed's hosts share one registry, so which host cleans which run varies)
        assert f": run {bed.run_prefix}h" in c.stdout and "removed" in c.stdout
        assert not [ln for ln in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith(bed.run_prefix)]
        assert _runs_left(bed) == []  # node hosts, broker, registry entries: all gone
    assert bed.leftovers() == []


def _write_chain_plan(path: Path) -> None:
    from datetime import datetime, timezone

    from netemu.plan.contacts import Contact, ContactPlan, Node

    names = ["s0", "s1", "s2", "s3"]
    contacts = [Contact(a, b, 0.0, 86400.0, 1e8, OWLT_S, kind="isl")
                for x, y in zip(names, names[1:], strict=False) for a, b in ((x, y), (y, x))]
    path.write_text(ContactPlan(datetime.now(timezone.utc),
                                {n: Node(n, i + 1, "satellite", 0) for i, n in enumerate(names)},
                                contacts).to_json())


def test_netemu_run_cluster_and_a_host_lost_mid_run() -> None:
    from netemu.runtime.rundir import read_events

    with Bed(2) as bed:
        plan = bed.root / "chain.json"
        _write_chain_plan(plan)
        netemu = [sys.executable, "-m", "netemu", "run", str(plan), "--cluster", "auto",
                  "--quiet", "--run-name"]
        out = bed.root / "run"
        p = bed.run([*netemu, bed.run_prefix, "--duration-s", "3", "--agents", "--out",
                     str(out)], timeout=300)
        assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
        assert "over 2 hosts" in p.stdout
        assert "nodes by host [2, 2], 1 cross-host links" in p.stdout
        # --agents: an agent in every node, their files and telemetry on the coordinator
        assert "agents: 4 ready, 0 app instances" in p.stdout
        assert sorted(d.name for d in (out / "agents").iterdir() if d.name != "pki") == [
            "s0", "s1", "s2", "s3"]
        assert all((out / "agents" / n / "agent.jsonl").stat().st_size > 0
                   for n in ("s0", "s3"))
        assert json.loads((out / "run.json").read_text())["cluster"]["cross_host_links"] == 1
        assert any("/counters/" in e["topic"] for e in read_events(out / "events.jsonl"))
        # host 1's Ray node dies mid-run: the run stops and names it
        proc = subprocess.Popen(["ip", "netns", "exec", bed.hosts[0].ns, *netemu,
                                 bed.run_prefix + "b", "--duration-s", "600"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=bed.env())
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("up:"):
                    break
            for pid in subprocess.run(["ip", "netns", "pids", bed.hosts[1].ns],
                                      capture_output=True, text=True).stdout.split():
                os.kill(int(pid), signal.SIGKILL)
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 1
        assert f"host {bed.hosts[1].addr} (" in err and "was lost mid-run" in err
    assert bed.leftovers() == []


def test_ping_across_hosts_takes_the_links_delay(bed2: Bed) -> None:
    bed = bed2
    out = bed.root / "ping-out"
    out.mkdir()
    p = bed.run([sys.executable, "-c", DRIVER, f"{bed.run_prefix}p", str(OWLT_S), str(out)],
                timeout=300)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    res = json.loads(p.stdout.split("RESULT ", 1)[1])
    run_json = json.loads((out / "run.json").read_text())
    assert res["cross"] == [["s1", "s2"]]
    assert res["host_of"]["s0"] == res["host_of"]["s1"] != res["host_of"]["s2"]
    for key in ("s1-s2", "s0-s1"):  # across hosts, and within one
        assert abs(_min_rtt_s(res[key]) - 2 * OWLT_S) < 1e-3, res[key]
    assert abs(_min_rtt_s(res["s0-s3"]) - 6 * OWLT_S) < 1e-3, res["s0-s3"]
    cl = run_json["cluster"]
    assert len(cl["clock_offsets_s"]) == 2
    assert all(abs(o) < 1e-3 for o in cl["clock_offsets_s"].values())
    assert 0 < cl["underlay_delay_s"] < OWLT_S
    assert cl["cross_host_links"] == 1
    assert _runs_left(bed) == []
    assert all(r.startswith(bed.run_prefix) for r in res["run_names"])


# tiny.yaml from t = 200 s: bangalore sees sat-2 (GSL slots), the satellites' plane on one
# host and the stations on the other, so the GSL crosses hosts.
GSL_DRIVER = """
import json, sys, time
from netemu.plan.source import PlanSource
from netemu.run.cluster import Cluster

run, tiny = sys.argv[1], sys.argv[2]
src = PlanSource.open(tiny)
plan = src.plan(start_s=200.0, duration_s=300.0)
planes = {s.name: (s.group, s.plane) for s in src.scenario.satellites}
res = {}
with Cluster("auto") as cl:
    part = cl.start(plan, run=run, plane_of=planes.get,
                    opts={"start_s": 200.0, "duration_s": 300.0})
    res["host_of"] = part.host_of
    lay = cl.layout
    rc, text = cl.run_cmd("bangalore", ["ping", "-n", "-c", "5", "-i", "0.2",
                                        lay.node_addr["sat-2"]])
    t_s = 200.0 + time.time() - cl.start_wall  # scenario time at the end of the pings
    up = [c for c in plan.contacts if {c.src, c.dst} == {"bangalore", "sat-2"}]
    res["ping"] = text
    res["rtt_expected_s"] = [sum(c.owlt_at(t) for c in up) for t in (t_s - 2.0, t_s)]
print("RESULT " + json.dumps(res))
"""


def test_ping_across_a_gsl_between_hosts(bed2: Bed) -> None:
    bed = bed2
    tiny = Path(__file__).resolve().parents[2] / "topologies/tiny.yaml"
    p = bed.run([sys.executable, "-c", GSL_DRIVER, f"{bed.run_prefix}g", str(tiny)],
                timeout=300)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    res = json.loads(p.stdout.split("RESULT ", 1)[1])
    assert res["host_of"]["bangalore"] != res["host_of"]["sat-2"]
    lo, hi = sorted(res["rtt_expected_s"])
    rtts = [float(ln.split("time=")[1].split()[0]) / 1e3 for ln in res["ping"].splitlines()
            if "time=" in ln]
    assert len(rtts) >= 4, res["ping"]
    assert lo - 1e-3 < min(rtts) < hi + 1e-3, (rtts, lo, hi)
    assert _runs_left(bed) == []


# Two ground stations on different hosts, four satellites in two planes (one per host):
# gsa – s0, gsb – s2, and two ways between s0 and s2: through s1 (20 ms) and through s3
# (10 ms), each crossing hosts once. CGR chooses s3; the agents' telemetry must show the
# bundle going that way, and the hosts' agent files must come back to the coordinator.
BUNDLE_DRIVER = """
import json, sys, time
from datetime import datetime, timezone
from pathlib import Path
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.routing.cgr import best_route
from netemu.run.cluster import Cluster

run, out = sys.argv[1], Path(sys.argv[2])
delays = {("gsa", "s0"): 0.004, ("s0", "s1"): 0.010, ("s1", "s2"): 0.010,
          ("s0", "s3"): 0.005, ("s3", "s2"): 0.005, ("s2", "gsb"): 0.004}
kinds = {"gsa": "ground", "s0": "satellite", "s1": "satellite", "s2": "satellite",
         "s3": "satellite", "gsb": "ground"}
nodes = {n: Node(n, i + 1, k) for i, (n, k) in enumerate(kinds.items())}
contacts = [Contact(a, b, 0.0, 86400.0, 1e8, d, kind="isl")
            for (x, y), d in delays.items() for a, b in ((x, y), (y, x))]
plan = ContactPlan(datetime.now(timezone.utc), nodes, contacts)
planes = {"s0": (0, 0), "s1": (0, 0), "s3": (0, 1), "s2": (0, 1)}
# the downlink app on gsb, the host that is not the coordinator's: its telemetry goes
# through that host's bridged broker, its output folder comes back with the run
from netemu.run.apps import NodeInfo, find_apps_dir, plan_apps
# (a container: its image built on that host before the clock starts)
apps = plan_apps([{"name": "downlink", "nodes": ["gsb"], "mode": "container"}],
                 [NodeInfo(n, k) for n, k in kinds.items()], apps_dir=find_apps_dir())
# a link fault on the cross-host link off CGR's route: each host cuts its own end
from netemu.emulator.layout import plan_layout
from netemu.plan.faults import Fault
from netemu.run.cluster_scenario import FaultNotices
faults = [Fault("cut", "link_outage", ("s1", "s2"), 0.0, 86400.0)]
lay = plan_layout(plan)
def peer_addr(a, b):  # b's interface address on the a–b link
    p = next(p for p in lay.periods if {p.a, p.b} == {a, b})
    return lay.endpoints[p.ep_b if p.b == b else p.ep_a].addr
res = {}
with Cluster("auto") as cl:
    part = cl.start(plan, run=run, plane_of=planes.get, run_dir=out, apps=apps,
                    opts={"ip_routing": False, "faults": faults},
                    agents={"routing": {"algorithm": "cgr"}, "window_start_s": 0.0,
                            "window_end_s": 86400.0, "captures": [("s0", "s3")]})
    res["host_of"] = part.host_of
    notices = FaultNotices(faults, cl.telemetry.access, cl.telemetry.now_s, run)
    notices.start()
    time.sleep(max(0.0, cl.start_wall + 2.0 - time.time()))  # links up, sessions form
    for a, b in (("s1", "s2"), ("s2", "s1"), ("s0", "s3")):
        res[f"ping {a}-{b}"] = cl.run_cmd(a, ["ping", "-n", "-q", "-c", "2", "-i", "0.2",
                                              "-W", "1", peer_addr(a, b)])[0]
    gsb = cl.actors[cl.host_of("gsb")]
    sock_b, sock_a = cl.agent_socket("gsb"), cl.agent_socket("gsa")
    recv = gsb.run_cmd.remote("gsb", [sys.executable, "-m", "netemu", "bp", "--socket", sock_b,
                                      "recv", "ipn:6.1", "--count", "1", "--timeout", "60",
                                      "--raw"], 90)
    time.sleep(1.0)
    t_send = time.time() - cl.start_wall
    rc, text = cl.run_cmd("gsa", [sys.executable, "-m", "netemu", "bp", "--socket", sock_a,
                                  "send", "ipn:6.1", "--data", "across hosts"])
    res["send"] = [rc, text]
    res["recv"] = cl._get(recv, "receiving")
    res["cgr"] = list(best_route(plan, "gsa", "gsb", t_send).nodes)
    notices.stop()
    cl.record(out / "run.json")
res["gathered"] = {str(k): v for k, v in cl.gathered.items()}
print("RESULT " + json.dumps(res))
"""


def _hops(events: list[dict], source: str, dest: str) -> list[str]:
    """The nodes a bundle went through, from the agents' ``forwarded`` events."""
    nxt = {e["topic"].split("/")[-1]: e["payload"]["next_hop"] for e in events
           if "/bundle/" in e["topic"] and e["payload"].get("event") == "forwarded"}
    path = [source]
    while path[-1] != dest and path[-1] in nxt and len(path) < 10:
        path.append(nxt[path[-1]])
    return path


@pytest.fixture(scope="module")
def bed2():
    """One bed for the tests that leave it as they found it: the pings, the agents' test
    and the suite's (each bed costs ~12 s to build and tear down); at the end nothing of
    it may be left. (A driver that dies, a host lost and the bed's own tests build their
    own.)"""
    with Bed(2) as bed:
        yield bed
    assert bed.leftovers() == []


def _runs_left(bed: Bed) -> list[str]:
    """What the bed's runs left while the bed itself is up: namespaces, registry entries,
    node hosts, brokers, suite directories."""
    from netemu.emulator.registry import RUN_ROOT

    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [ln.split()[0] for ln in ns.splitlines() if ln.startswith(bed.run_prefix)]
    left += [str(p) for p in RUN_ROOT.glob(f"{bed.run_prefix}*")]
    left += [str(p) for p in Path(tempfile.gettempdir()).glob("netemu-suite-*")]
    ps = subprocess.run(["pgrep", "-af", f"nodehost --config {RUN_ROOT}/{bed.run_prefix}|"
                         f"mosquitto -c {RUN_ROOT}/{bed.run_prefix}"],
                        capture_output=True, text=True).stdout
    return left + [ln for ln in ps.splitlines() if "pgrep" not in ln]


def test_a_bundle_between_hosts_takes_cgrs_route(bed2: Bed) -> None:
    from netemu.runtime.rundir import read_events

    bed = bed2
    out = bed.root / "out"
    p = bed.run([sys.executable, "-c", BUNDLE_DRIVER, bed.run_prefix, str(out)], timeout=300)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    res = json.loads(p.stdout.split("RESULT ", 1)[1])
    events = read_events(out / "events.jsonl")
    gathered = {n: (out / "agents" / n / "agent.jsonl").exists() for n in res["host_of"]}
    # the coordinator's run directory is a run directory as a local run leaves it
    rep = subprocess.run([sys.executable, "-m", "netemu", "report", "--metrics-only",
                          str(out)], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    pcap = (out / "captures" / "s0_s3.pcap").read_bytes()
    app_result = json.loads((out / "apps" / "downlink" / "gsb" / "result.json").read_text())
    pcap_size = len(pcap)
    host = res["host_of"]
    assert host["gsa"] == host["s0"] == host["s1"] != host["gsb"] == host["s2"] == host["s3"]
    assert res["send"][0] == 0, res["send"]
    assert res["recv"][0] == 0 and "across hosts" in res["recv"][1], res["recv"]
    assert res["cgr"] == ["gsa", "s0", "s3", "s2", "gsb"]
    assert _hops(events, "gsa", "gsb") == res["cgr"]
    delivered = [e for e in events if e["topic"].endswith("/bundle/gsb")
                 and e["payload"].get("event") == "delivered"]
    assert len(delivered) == 1
    # every host's agent files came back through Ray, one host's nodes each
    assert sorted(sum(res["gathered"].values(), [])) == sorted(host)
    assert all(gathered.values()), gathered
    assert metrics["bundles_delivered"] == metrics["bundles_created"] == 1
    # the cross-host link s0–s3, captured on s0's host, came back with the run: the
    # bundle's TCPCL session over it (TLS is off when links are captured, as on one host)
    assert pcap_size > 24 and b"across hosts" in pcap, pcap_size
    # the app on the other host: its telemetry reached the coordinator, its files came back
    app_events = [e["payload"]["event"] for e in events
                  if e["topic"].endswith("/app/downlink/gsb")]
    assert app_events[:1] == ["start"] and "stop" in app_events, app_events
    assert app_result["tiles_received"] == 0
    usage = json.loads((out / "apps" / "downlink" / "gsb" / "usage.json").read_text())
    assert usage["mode"] == "container" and usage["ok"], usage
    # the fault: the cut cross-host link carries nothing either way, the other one does;
    # its start is recorded once, by the coordinator
    assert res["ping s1-s2"] != 0 and res["ping s2-s1"] != 0 and res["ping s0-s3"] == 0, res
    assert [e["payload"]["event"] for e in events if e["topic"].endswith("/fault/cut")] \
        == ["started"]
    assert metrics["faults_count"] == 1
    assert _runs_left(bed) == []


SUITE_WINDOW = "emulation: {start_s: 0, duration_s: 20, time_scale: 10}\nrouting: cgr\n"


def test_netemu_test_cluster_runs_a_suite_over_the_hosts(bed2: Bed) -> None:
    """Two tiny scenarios (2 s of wall each) over the two hosts: one on each, one JUnit
    file; one scenario's expectation fails on purpose, and the verdict says so."""
    bed = bed2
    tiny = (Path(__file__).resolve().parents[2] / "topologies/tiny.yaml").read_text()
    scs = []
    for name, expect in (("pass", '{metric: bundles_expired, op: "==", value: 0}'),
                         ("fail", '{metric: bundles_expired, op: ">", value: 0}')):
        sc = bed.root / f"suite-{name}.yaml"
        sc.write_text(tiny.replace("name: tiny", f"name: tiny-{name}", 1) + SUITE_WINDOW
                      + f"expect:\n  - {expect}\n")
        scs.append(str(sc))
    out = bed.root / "suite"
    # runs named with the bed's prefix: what a failed test leaves, the bed cleans
    p = bed.run([sys.executable, "-m", "netemu", "test", *scs, "--cluster", "auto",
                 "--no-report", "--out", str(out), "--junit", str(out / "junit.xml"),
                 "--run-name", f"{bed.run_prefix}s"], timeout=300)
    assert p.returncode == 1, (p.stdout[-3000:], p.stderr[-3000:])  # one expectation failed
    hosts = {h.addr for h in bed.hosts}
    ran_on = {ln.split(" on ")[1].split()[0] for ln in p.stdout.splitlines()
              if ln.startswith("== ") and " on " in ln}
    assert ran_on == hosts, p.stdout[-3000:]
    assert "2 scenario(s), 1 failed expectation(s), 0 run error(s): FAILED" in p.stdout
    junit = out / "junit.xml"
    suites = {s.get("name"): s for s in ET.parse(junit).getroot().iter("testsuite")}
    assert set(suites) == {"tiny-pass", "tiny-fail"}
    assert suites["tiny-pass"].get("failures") == "0" and suites["tiny-fail"].get("failures") == "1"
    for name in ("tiny-pass", "tiny-fail"):  # each host's run directory came back
        assert (out / name / "metrics.json").exists() and (out / name / "events.jsonl").exists()
    assert _runs_left(bed) == []
