"""Constellation scale: a bundle agent on every node, traffic sent by the agents.

    sudo .venv/bin/python bench/bench_scale.py --scenario topologies/starlink-shell1.yaml \\
        --window-s 600 [--time-scale 1] [--plan-s 86400] [--compare-nodes 200] [--json]

Runs the scenario through the scenario runner (`netemu test`'s) with its agents in node
hosts and no IP routes (the agents reach their neighbours over the direct links). Where the
scenario has no ``emulation.agents`` or ``traffic:`` section, agents run on every node and
the bench adds ``--flows`` ground-to-ground Poisson flows of ``--rate-per-s`` each, sending
over the whole window. The agents plan with ``--plan-s`` of contact plan (default 24 h).

Figures (``--json``: one JSON object with these keys):

- ``nodes``, ``agents``; ``bringup_s``: wall seconds from the run's start (plan computed) to
  every agent ready (network built, agents started); ``window_opened_s``: to the scenario
  clock reaching the window's start (the agents' first sessions set up meanwhile);
- ``pss_total_mib`` / ``pss_per_node_mib``: the largest sum, sampled every 2 s during the
  window, of the proportional set size of every process of the run: the runner itself
  (emulator driver, recorder), the relay, the node hosts, the broker and any apps;
  ``mem_used_rise_mib``: the largest rise, over the whole run, of the machine's memory in
  use (MemTotal − MemAvailable: processes, kernel, page cache that cannot be dropped);
- ``cpu_cores``: cores used from every agent ready to the run's end, per kind of process
  (``runner``: the driver and recorder; ``relay``; ``node_hosts``; ``other``: broker,
  apps), from the processes' CPU seconds in /proc;
- ``bundles_sent``, ``bundles_delivered`` (within the window), ``bundles_expected``
  (sends whose CGR-projected arrival falls inside the window), ``delivered_ratio``
  (delivered of the expected), ``latency_vs_projection_p95_s`` (p95 of delivery time −
  projected arrival);
- with ``--compare-nodes N``: ``compare`` — idle agents of the first N nodes of the plan
  (with the plan's contacts among them), in one node host vs one ``netemu agent`` process
  each, and their PSS ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from netemu.agent.config import AgentConfig
from netemu.config import Fields
from netemu.plan.contacts import ContactPlan
from netemu.plan.scenario import load_scenario
from netemu.plan.traffic import parse_traffic
from netemu.run.runner import RunOptions, ScenarioRun

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- memory ----------------------------------------------------------------------------


def pss_kib(pid: int) -> int:
    """The process's proportional set size (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (from /proc/*/stat's parent field)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def mem_used_kib() -> int:
    """The machine's memory in use (MemTotal − MemAvailable): processes, page cache that
    cannot be dropped, and the kernel's own (namespaces, interfaces, sockets)."""
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        info[key] = int(rest.split()[0])
    return info["MemTotal"] - info["MemAvailable"]


def cpu_s_kind(pid: int) -> tuple[float, str] | None:
    """The process's CPU seconds so far (user + system, all threads) and its kind (None:
    it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    kind = ("runner" if pid == os.getpid() else "relay" if b"netemu.emulator.relay" in cmd
            else "node_hosts" if b"netemu.agent.nodehost" in cmd else "other")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), kind


class PssSampler:
    """The largest total PSS of this process and its descendants, sampled every
    ``every_s`` while ``active`` is set; and the largest rise of the machine's memory in
    use over the whole run."""

    def __init__(self, every_s: float = 2.0) -> None:
        self.every_s = every_s
        self.active = threading.Event()
        self.max_kib = 0
        self.max_procs = 0
        self.mem_base_kib = mem_used_kib()
        self.mem_rise_kib = 0
        self.cpu: dict[int, tuple[float, float, str]] = {}  # pid -> first, last CPU s, kind
        self.cpu_t = [0.0, 0.0]  # first and last sample, monotonic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.mem_rise_kib = max(self.mem_rise_kib, mem_used_kib() - self.mem_base_kib)
            if self.active.is_set():
                pids = descendants(os.getpid())
                total = sum(pss_kib(p) for p in pids)
                if total > self.max_kib:
                    self.max_kib, self.max_procs = total, len(pids)
                now = time.monotonic()
                self.cpu_t[0] = self.cpu_t[0] or now
                self.cpu_t[1] = now
                for p in pids:
                    got = cpu_s_kind(p)
                    if got is not None:
                        first = self.cpu.get(p, (got[0], got[0], got[1]))[0]
                        self.cpu[p] = (first, got[0], got[1])

    def cpu_cores(self) -> dict[str, float]:
        """Cores used over the sampled part of the run, per kind of process (``runner``,
        ``relay``, ``node_hosts``, ``other``): where a quiet run's CPU goes."""
        span = self.cpu_t[1] - self.cpu_t[0]
        out: dict[str, float] = {}
        for first, last, kind in self.cpu.values():
            out[kind] = out.get(kind, 0.0) + (last - first)
        return {k: round(v / span, 3) for k, v in sorted(out.items())} if span > 0 else {}


# --- the run ---------------------------------------------------------------------------


def bench_traffic(sc: Any, flows: int, rate_per_s: float, start_s: float,
                  end_s: float) -> Any:
    """``flows`` ground-to-ground Poisson flows over the window."""
    obj = {"seed": 1, "flows": [{
        "name": "bench", "from": "kind:ground", "to": "kind:ground",
        "pairs": f"random {flows}", "rate_per_s": rate_per_s, "size_bytes": [1000, 10000],
        "lifetime_s": 3600, "start_s": start_s, "end_s": end_s}]}
    return parse_traffic(Fields(obj, source="bench_scale.py", path="traffic"), sc)


def run_scenario(a: argparse.Namespace, out: Path) -> dict[str, Any]:
    sc = load_scenario(a.scenario)
    emulation = sc.sections.get("emulation") or {}
    has_agents = isinstance(emulation, dict) and "agents" in emulation
    traffic = None
    if sc.traffic is None or not has_agents:
        traffic = bench_traffic(sc, a.flows, a.rate_per_s, a.start_s, a.start_s + a.window_s)
    sampler = PssSampler()

    def echo(line: str) -> None:
        log(line)
        if "agents ready" in line:
            sampler.active.set()  # from now on every process of the run is up

    opts = RunOptions(Path(a.scenario), out=out, start_s=a.start_s, duration_s=a.window_s,
                      time_scale=a.time_scale, ip_routing="none", report=False,
                      agents=True if not has_agents else None, traffic=traffic,
                      plan_s=a.plan_s, echo=echo)
    run = ScenarioRun(opts)
    t0 = time.monotonic()
    with sampler:
        result = run.execute()
    wall_s = time.monotonic() - t0
    if result.errors:
        raise SystemExit(f"bench_scale: the run failed: {'; '.join(result.errors)}")
    meta = json.loads((out / "run.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    tr = metrics.get("traffic") or {}
    n_agents = len(list((out / "agents").glob("*/agent.json")))
    nodes = len(run.prepared.plan.nodes) if run.prepared else 0
    pss_mib = sampler.max_kib / 1024
    lvp = tr.get("latency_vs_projection_s") or {}
    expected = tr.get("expected") or 0
    delivered_expected = tr.get("expected_delivered") or 0
    return {
        "scenario": str(a.scenario), "nodes": nodes, "agents": n_agents,
        "agent_processes": meta.get("agent_processes"),
        "contacts": len(run.prepared.plan.contacts) if run.prepared else 0,
        "window_s": a.window_s, "time_scale": a.time_scale,
        "bringup_s": meta["phases_s"].get("agents_ready"),
        "clock_lead_s": meta.get("clock_lead_s"),
        # when the scenario clock reached the window's start (agents ready + the rest of
        # the lead, in which the first contacts' sessions are set up)
        "window_opened_s": round(meta["phases_s"]["agents_ready"]
                                 + max(0.0, meta.get("agents_ready_before_window_s", 0.0)),
                                 1) if "agents_ready" in meta["phases_s"] else None,
        "pss_total_mib": round(pss_mib, 1),
        "pss_per_node_mib": round(pss_mib / max(1, nodes), 3),
        "pss_processes": sampler.max_procs,
        "mem_used_rise_mib": round(sampler.mem_rise_kib / 1024, 1),
        "cpu_cores": sampler.cpu_cores(),
        "flows": tr.get("flows"),
        "bundles_sent": tr.get("sent"), "bundles_delivered": tr.get("delivered"),
        "bundles_expected": expected,
        "delivered_ratio": round(delivered_expected / expected, 4) if expected else None,
        "latency_vs_projection_p50_s": lvp.get("p50"),
        "latency_vs_projection_p95_s": lvp.get("p95"),
        "latency_vs_projection_max_s": lvp.get("max"),
        "run_wall_s": round(wall_s, 1),
        "run_dir": str(out),
    }


# --- node host vs a process per node ---------------------------------------------------


def free_ports(n: int) -> list[int]:
    held = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
    ports = [s.getsockname()[1] for s in held]
    for s in held:
        s.close()
    return ports


def compare_idle(plan_path: Path, n: int, work: Path, settle_s: float = 5.0) -> dict[str, Any]:
    """PSS of ``n`` idle agents (plan loaded, no sessions) in one node host vs ``n``
    ``netemu agent`` processes, and the ratio."""
    full = ContactPlan.load(plan_path)
    names = list(full.nodes)[:n]
    keep = set(names)  # the subset's own plan: what its agents would load
    plan = ContactPlan(full.epoch, {k: full.nodes[k] for k in names},
                       [c for c in full.contacts if c.src in keep and c.dst in keep])
    plan_path = work / "plan-subset.json"
    work.mkdir(parents=True, exist_ok=True)
    plan_path.write_text(plan.to_json())

    def configs(tag: str) -> list[Path]:
        out = []
        for name, port in zip(names, free_ports(len(names)), strict=True):
            cfg = AgentConfig.for_plan_node(
                plan, name, {}, plan_path=str(plan_path), run_dir=str(work / tag / name),
                listen_tcpcl=[f"127.0.0.1:{port}"], listen_udpcl=[f"127.0.0.1:{port}"],
                log=str(work / tag / f"{name}.log"))
            p = work / tag / f"{name}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            cfg.write(p)
            out.append(p)
        return out

    def wait_ready(tag: str, procs: list[subprocess.Popen]) -> float:
        t0 = time.monotonic()
        socks = [work / tag / nm / "bp.sock" for nm in names]
        while not all(s.exists() for s in socks):
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"bench_scale: an agent process exited during start ({tag})")
            time.sleep(0.2)
        return time.monotonic() - t0

    def stop(procs: list[subprocess.Popen]) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(120)

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    host_json = work / "host.json"
    host_json.write_text(json.dumps({"nodes": [{"config": str(c), "netns": None}
                                              for c in configs("host")]}))
    proc = subprocess.Popen([sys.executable, "-m", "netemu.agent.nodehost", "--config",
                             str(host_json)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        host_start_s = wait_ready("host", [proc])
        time.sleep(settle_s)
        host_kib = pss_kib(proc.pid)
    finally:
        stop([proc])
    procs: list[subprocess.Popen] = []
    try:
        for c, name in zip(configs("agents"), names, strict=True):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "netemu", "agent", "--node", name, "--config", str(c)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        agents_start_s = wait_ready("agents", procs)
        time.sleep(settle_s)
        agents_kib = sum(pss_kib(p.pid) for p in procs)
    finally:
        stop(procs)
    return {"nodes": len(names), "plan_contacts": len(plan.contacts),
            "node_host_pss_mib": round(host_kib / 1024, 1),
            "node_host_per_node_mib": round(host_kib / 1024 / len(names), 3),
            "node_host_start_s": round(host_start_s, 1),
            "per_process_pss_mib": round(agents_kib / 1024, 1),
            "per_process_per_node_mib": round(agents_kib / 1024 / len(names), 2),
            "per_process_start_s": round(agents_start_s, 1),
            "ratio": round(agents_kib / max(1, host_kib), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", type=Path, default=ROOT / "topologies/starlink-shell1.yaml")
    ap.add_argument("--window-s", type=float, default=600.0, help="emulated window (600)")
    ap.add_argument("--start-s", type=float, default=0.0, help="window start (0)")
    ap.add_argument("--time-scale", type=float, default=1.0, help="scenario s per wall s (1)")
    ap.add_argument("--plan-s", type=float, default=86400.0,
                    help="contact plan the agents load, from the window's start (86400)")
    ap.add_argument("--flows", type=int, default=1000,
                    help="ground-to-ground flows added when the scenario has none (1000)")
    ap.add_argument("--rate-per-s", type=float, default=0.01,
                    help="bundles per second of each added flow (0.01)")
    ap.add_argument("--compare-nodes", type=int, default=0, metavar="N",
                    help="also: N idle agents in one node host vs N processes (0: skip)")
    ap.add_argument("--out", type=Path, help="run directory (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_scale: needs root (network namespaces)")
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        out = a.out or Path(tmp) / "run"
        fig = run_scenario(a, out)
        if a.compare_nodes:
            log(f"bench_scale: {a.compare_nodes} idle agents: node host vs processes ...")
            fig["compare"] = compare_idle(out / "plan.json", a.compare_nodes,
                                          Path(tmp) / "compare")
    if a.json:
        print(json.dumps(fig))
        return
    for k, v in fig.items():
        print(f"{k:32s} {v}")


if __name__ == "__main__":
    main()
