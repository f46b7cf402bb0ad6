"""One emulation split over three simulated hosts on this machine, against the same plan on
one host in the same invocation (links only: no agents, no IP routes).

    sudo .venv/bin/python bench/bench_cluster.py [--scenario topologies/starlink-shell1.yaml]
        [--hosts 3] [--window-s 120] [--drive-s 30] [--agents] [--json]

``--agents``: the cluster run also has a bundle agent in every node (CGR), publishing to
the coordinator's broker over TCP; each host's figures then add its agents' bring-up
(``agents_up_s``) and its PSS counts its node hosts, and the cluster's add the MQTT
messages the coordinator recorded and the agent files gathered back. The one-host
baseline stays links only.

The hosts are the test bed of tests/integration/cluster_bed.py: network namespaces on a
bridge, each a Ray node. Printed: bring-up time (plan handed out → every host's share up),
cross-host link count, nodes and PSS per host (the actor and its relay workers), the
driver's p99 tick lateness on each host; the baseline's bring-up, PSS (this process and
its relay workers) and p99 lateness. ``--json``: one JSON object with the keys
``baseline`` and ``cluster``. Figures go to docs/cluster.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]


def _plan(scenario: Path, window_s: float) -> Any:
    from netemu.plan.source import PlanSource

    return PlanSource.open(scenario).plan(start_s=0.0, duration_s=window_s)


def _pss_tree() -> int:
    me = psutil.Process()
    total = 0
    for p in [me, *me.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total


def baseline(scenario: Path, window_s: float, drive_s: float) -> dict[str, Any]:
    from netemu.emulator import Emulation

    plan = _plan(scenario, window_s)
    emu = Emulation(plan, run_name="x5base", ip_routing=False, shaper="relay")
    t0 = time.monotonic()
    emu.start()
    up = time.monotonic() - t0
    try:
        time.sleep(drive_s)
        st = emu.stats
        return {"nodes": len(plan.nodes), "up_s": up, "pss_mib": _pss_tree() / 2**20,
                "lateness_p99_ms": st.p99(st.lateness_s) * 1e3, "ticks": st.ticks}
    finally:
        emu.stop()


def driver(scenario: Path, window_s: float, drive_s: float, run: str,
           agents_dir: Path | None = None) -> dict[str, Any]:
    """On the head host: the cluster run, then every host's report."""
    from netemu.run.cluster import Cluster

    plan = _plan(scenario, window_s)
    src_planes: dict[str, Any] = {}
    from netemu.plan.source import PlanSource

    source = PlanSource.open(scenario)
    if source.scenario is not None:
        src_planes = {s.name: (s.group, s.plane) for s in source.scenario.satellites
                      if s.plane is not None}
    agents = None
    if agents_dir is not None:
        agents = {"routing": {"algorithm": "cgr"}, "window_start_s": 0.0,
                  "window_end_s": window_s}
    with Cluster("auto") as cl:
        t0 = time.monotonic()
        part = cl.start(plan, run=run, plane_of=src_planes.get, opts={"ip_routing": False},
                        agents=agents, run_dir=agents_dir)
        up = time.monotonic() - t0
        time.sleep(max(0.0, cl.start_wall - time.time()) + drive_s)
        reports = cl.reports()
        timings = cl.timings
    out = {"up_s": up, "cross_host_links": len(part.cross_links),
           "underlay_delay_ms": cl.underlay_s * 1e3,
           "clock_offsets_ms": [o * 1e3 for o in cl.offsets_s.values()],
           "hosts": [{"nodes": r["nodes"], "up_s": r["up_s"],
                      "agents_up_s": t.get("agents_up_s"),
                      "pss_mib": r["pss_bytes"] / 2**20,
                      "lateness_p99_ms": r["lateness_p99_s"] * 1e3,
                      "ticks": r["ticks"]} for r, t in zip(reports, timings, strict=True)]}
    if agents_dir is not None:  # after the stop: the recorder is done, the files are back
        from netemu.runtime.rundir import read_events

        out["mqtt_messages"] = len(read_events(agents_dir / "events.jsonl"))
        out["agents_gathered"] = sum(len(v) for v in cl.gathered.values())
    return out


def cluster(scenario: Path, hosts: int, window_s: float, drive_s: float,
            agents: bool = False) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests/integration"))
    from cluster_bed import Bed

    t0 = time.monotonic()
    with Bed(hosts) as bed:
        bed_up = time.monotonic() - t0
        argv = [sys.executable, __file__, "--driver", bed.run_prefix, "--scenario",
                str(scenario), "--window-s", str(window_s), "--drive-s", str(drive_s)]
        argv += ["--agents-dir", str(bed.root / "run")] if agents else []
        p = bed.run(argv, timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"cluster driver failed: {p.stderr[-3000:]}")
        out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
        out["ray_start_s"] = bed.ray_start_s
        out["bed_up_s"] = bed_up
    out["left"] = bed.leftovers()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", type=Path, default=ROOT / "topologies/starlink-shell1.yaml")
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--window-s", type=float, default=120.0, help="plan window, scenario s")
    ap.add_argument("--drive-s", type=float, default=30.0, help="wall seconds driven")
    ap.add_argument("--agents", action="store_true",
                    help="a bundle agent in every node of the cluster run")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--driver", metavar="RUN", help=argparse.SUPPRESS)  # inside the head
    ap.add_argument("--agents-dir", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.driver:
        print(json.dumps(driver(a.scenario, a.window_s, a.drive_s, a.driver, a.agents_dir)))
        return 0
    res = {"scenario": str(a.scenario), "hosts": a.hosts, "agents": a.agents,
           "baseline": baseline(a.scenario, a.window_s, a.drive_s),
           "cluster": cluster(a.scenario, a.hosts, a.window_s, a.drive_s, a.agents)}
    if a.json:
        print(json.dumps(res))
        return 0
    b, c = res["baseline"], res["cluster"]
    print(f"{a.scenario.name}: {b['nodes']} nodes")
    print(f"one host:   up {b['up_s']:.1f} s, PSS {b['pss_mib']:.0f} MiB, "
          f"driver p99 late {b['lateness_p99_ms']:.1f} ms")
    print(f"{a.hosts} hosts:    up {c['up_s']:.1f} s (Ray nodes {c['bed_up_s']:.1f} s before), "
          f"{c['cross_host_links']} cross-host links, underlay {c['underlay_delay_ms']:.3f} ms")
    for i, h in enumerate(c["hosts"]):
        ag = f", agents up in {h['agents_up_s']:.1f} s" if h.get("agents_up_s") else ""
        print(f"  host {i}: {h['nodes']} nodes, PSS {h['pss_mib']:.0f} MiB, "
              f"driver p99 late {h['lateness_p99_ms']:.1f} ms{ag}")
    if a.agents:
        print(f"agents: {c['mqtt_messages']} MQTT messages recorded on the coordinator, "
              f"{c['agents_gathered']} nodes' files gathered")
    if c["left"]:
        print(f"LEFT BEHIND: {c['left']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
