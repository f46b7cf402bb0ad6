"""Benchmark: what a node host spends on nodes that send nothing.

    sudo .venv/bin/python bench/bench_idle.py [--nodes 300] [--window-s 30] [--tls on|off] \\
        [--settle-s 20] [--json] [--profile FILE]

A chain of ``--nodes`` nodes (one network namespace each, veth pairs between neighbours,
no IP routes, no relay) served by ONE node host, as in a run: every contact is up for the
24 h plan, TLS on by default, keepalives every 60 s as the runner sets them in node
hosts, ``disk`` durability. After every session is up and ``--settle-s`` more seconds, the
host's CPU time (user + system, all threads, from /proc: robust on a noisy machine, unlike
rates) is read over ``--window-s`` seconds in which nothing is sent. ``--json`` prints
one object:

- ``cpu_ms_per_node_s``: node-host CPU milliseconds per node per second of the window;
- ``host_cpu_frac``: the host's share of one core over the window;
- ``wakeups_per_s``: the host's context switches (voluntary + involuntary, all threads)
  per second: how often it wakes;
- ``nodes``, ``session_ups`` (``session_up`` lines in the nodes' logs: each session is
  logged at both of its ends), ``window_s``, ``cpu_s``.

``--profile FILE`` records the host with py-spy (on PATH) over the window (collapsed
stacks). The userspace relay is not part of this bench (the links are plain veths).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_hop_burst import Chain, agent_entries, cpu_s, stop_host  # noqa: E402

KEEPALIVE_S = 60  # what the runner gives node-host agents


def wakeups(pid: int) -> int:
    """Context switches of every thread of ``pid`` so far."""
    n = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt")):
                        n += int(line.split()[1])
        except OSError:
            pass  # (a thread that ended)
    return n


def write_configs(chain: Chain, tmp: Path, tls: bool) -> Path:
    """A 24 h plan with every chain contact up, each node's config, the host's config."""
    epoch = datetime.now(timezone.utc) - timedelta(seconds=30)
    contacts = [{"from": a, "to": b, "start_s": 0.0, "end_s": 86400, "rate_bps": 1e9,
                 "owlt_s": 0.001} for (a, b) in chain.addr]
    ipn = {x: i + 1 for i, x in enumerate(chain.nodes)}
    (tmp / "plan.json").write_text(json.dumps({
        "epoch": epoch.isoformat().replace("+00:00", "Z"), "nodes": ipn,
        "contacts": contacts}))
    entries = agent_entries(chain, ipn, tmp, tls=tls, keepalive_s=KEEPALIVE_S)
    (tmp / "host.json").write_text(json.dumps({"nodes": entries}))
    return tmp / "host.json"


def sessions_up(chain: Chain, tmp: Path) -> int:
    n = 0
    for x in chain.nodes:
        with contextlib.suppress(OSError):
            n += (tmp / f"{x}.log").read_text().count('"session_up"')
    return n


def one_run(chain: Chain, tmp: Path, tls: bool, settle_s: float, window_s: float,
            profile: Path | None) -> dict[str, Any]:
    host_cfg = write_configs(chain, tmp, tls)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp / "host.stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "netemu.agent.nodehost", "--config",
                                 str(host_cfg)], env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
    want = 2 * (len(chain.nodes) - 1)  # each session is logged at both of its ends
    try:
        deadline = time.monotonic() + 120 + 0.5 * len(chain.nodes)
        while sessions_up(chain, tmp) < want:
            if proc.poll() is not None:
                raise SystemExit("the node host stopped: "
                                 + (tmp / "host.stderr").read_text()[-3000:])
            if time.monotonic() > deadline:
                raise SystemExit(f"only {sessions_up(chain, tmp)} of {want} session ends up")
            time.sleep(1.0)
        time.sleep(settle_s)
        spy = None
        if profile is not None:
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--rate",
                                    "100", "--format", "raw", "--output", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        c0, w0, t0 = cpu_s(proc.pid), wakeups(proc.pid), time.monotonic()
        time.sleep(window_s)
        cpu, wake = cpu_s(proc.pid) - c0, wakeups(proc.pid) - w0
        wall = time.monotonic() - t0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        ups = sessions_up(chain, tmp)
    finally:
        stop_host(proc, 60)
    n = len(chain.nodes)
    return {"nodes": n, "session_ups": ups, "tls": tls, "window_s": round(wall, 2),
            "cpu_s": round(cpu, 3), "cpu_ms_per_node_s": round(1000 * cpu / (n * wall), 4),
            "host_cpu_frac": round(cpu / wall, 4), "wakeups_per_s": round(wake / wall, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=300)
    ap.add_argument("--window-s", type=float, default=30.0)
    ap.add_argument("--settle-s", type=float, default=20.0,
                    help="seconds after the last session is up before the window")
    ap.add_argument("--tls", choices=("on", "off"), default="on")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", metavar="FILE", help="py-spy the host over the window")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.nodes < 2:
        print("--nodes: at least 2", file=sys.stderr)
        return 2
    with Chain(args.nodes) as chain, \
            tempfile.TemporaryDirectory(prefix="netemu-bench-idle-") as d:
        r = one_run(chain, Path(d), args.tls == "on", args.settle_s, args.window_s,
                    Path(args.profile).resolve() if args.profile else None)
    if args.json:
        print(json.dumps(r))
    else:
        print(f"{r['nodes']} idle nodes, {r['session_ups']} session ups logged, TLS {args.tls}: "
              f"{r['cpu_ms_per_node_s']:.3f} CPU ms a node a second "
              f"({r['host_cpu_frac']:.3f} of a core; {r['wakeups_per_s']:.0f} wake-ups/s; "
              f"{r['cpu_s']:.2f} CPU s over {r['window_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
