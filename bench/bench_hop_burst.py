"""Benchmark: what a burst of bundles costs a node host per bundle per hop.

    sudo .venv/bin/python bench/bench_hop_burst.py [--nodes 6] [--bundles 400] \\
        [--size 1000] [--tls both|on|off] [--repeat 3] [--json] [--profile PREFIX]

A chain of ``--nodes`` nodes (n0 — n1 — … , one network namespace each, veth pairs
between neighbours, no IP routes) served by ONE node host, as in a run. Every contact is
up all along except n0 → n1, which starts a few seconds after the host: ``--bundles``
bundles of ``--size`` bytes sent by an app on n0 to an app on the last node wait in n0's
store, then leave together when the contact starts and cross the chain as a burst — what
bundles that waited at a ground station for a pass do in a constellation run. The other
sessions are set up (and warmed by one bundle) before the contact starts.

Timed part: from the contact's start to the last bundle's delivery. Each TLS mode runs
``--repeat`` times (a new node host each time); figures are medians over the runs, per TLS mode
(``--json``: one object, ``{"tls_off": {...}, "tls_on": {...}, "config": {...}}``):

- ``cpu_ms_per_bundle_hop``: the node host's CPU time (user + system, all its threads,
  from /proc) over the timed part, per bundle per hop; robust to a noisy machine, unlike
  the rates;
- ``hop_rate_per_s``: bundles a second through each hop (bundles / timed seconds): the
  hops of the chain share the host's one event loop, so this is what one hop gets while
  ``hops`` hops of the same host carry the burst at once;
- ``bundle_hops_per_s``: ``hop_rate_per_s`` × hops, the host's whole rate;
- ``wall_s``, ``cpu_s``, ``hops``, ``bundles``, ``runs``; ``cpu_ms_per_bundle_hop_each``:
  the CPU figure of each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netemu.agent import BpClient  # noqa: E402
from netemu.run.pki import RunCA  # noqa: E402

PORT = 4556
LEAD_S = 10.0  # host start, sessions, warm-up and the burst's sends fit in this
IDLE_LEAD_S = 0.03  # and each idle node's start


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


class Chain:
    """Namespaces n0 … n{N-1} with a veth pair between neighbours (link i: 10.79.i.1 – .2/30,
    10.80.… from i = 256)."""

    def __init__(self, n: int) -> None:
        tok = secrets.token_hex(2)
        self.nodes = [f"n{i}" for i in range(n)]
        self.ns = {x: f"hb{tok}-{x}" for x in self.nodes}
        self.addr: dict[tuple[str, str], str] = {}
        self.made: list[str] = []
        self.tok = tok

    def __enter__(self) -> Chain:
        try:
            for x in self.nodes:
                _ip("netns", "add", self.ns[x])
                self.made.append(self.ns[x])
                _ip("-n", self.ns[x], "link", "set", "lo", "up")
            for i in range(len(self.nodes) - 1):
                a, b = self.nodes[i], self.nodes[i + 1]
                va, vb = f"hb{self.tok}{i}l", f"hb{self.tok}{i}r"
                _ip("link", "add", va, "netns", self.ns[a], "type", "veth", "peer", "name",
                    vb, "netns", self.ns[b])
                net = f"10.{79 + i // 256}.{i % 256}"
                for node, v, host in ((a, va, 1), (b, vb, 2)):
                    _ip("-n", self.ns[node], "addr", "add", f"{net}.{host}/30", "dev", v)
                    _ip("-n", self.ns[node], "link", "set", v, "up")
                self.addr[(a, b)] = f"{net}.2:{PORT}"
                self.addr[(b, a)] = f"{net}.1:{PORT}"
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self.made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)



def stop_host(proc: subprocess.Popen, wait_s: float) -> None:
    """SIGTERM the node host and wait ``wait_s`` for it to close its stores; then kill."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def agent_entries(chain: Chain, ipn: dict[str, int], tmp: Path, *, tls: bool,
                  **extra: Any) -> list[dict[str, str]]:
    """Write each chain node's agent configuration (``extra`` keys added to each) and
    return the node host's entries for them: the configuration and the namespace."""
    ca = RunCA.create(tmp / "pki") if tls else None
    entries = []
    for x in chain.nodes:
        cfg: dict[str, Any] = {
            "node": x, "ipn": ipn[x], **extra,
            "listen": {"tcpcl": [f"0.0.0.0:{PORT}"]},
            "app_socket": str(tmp / x / "bp.sock"), "store": str(tmp / x / "store.sqlite"),
            "contact_plan": str(tmp / "plan.json"), "log": str(tmp / f"{x}.log"),
            "neighbours": [{"name": p, "ipn": ipn[p], "address": chain.addr[(x, p)]}
                           for p in chain.nodes if (x, p) in chain.addr]}
        if ca is not None:
            creds = ca.issue(x, f"ipn:{ipn[x]}.0", tmp / f"tls-{x}")
            cfg.update(tls="required", tls_ca=str(creds.ca), tls_cert=str(creds.cert),
                       tls_key=str(creds.key))
        (tmp / f"{x}.json").write_text(json.dumps(cfg))
        entries.append({"config": str(tmp / f"{x}.json"),
                        "netns": f"/run/netns/{chain.ns[x]}"})
    return entries

def write_configs(chain: Chain, tmp: Path, tls: bool, start_s: float, idle: int = 0) -> Path:
    """The plan (n0 → n1 from ``start_s``, the rest always up), each node's agent config
    and the node host's config (with ``idle`` more nodes, without contacts, in the host's
    own namespace); returns the host's."""
    epoch = datetime.now(timezone.utc) - timedelta(seconds=30)
    contacts = []
    for (a, b) in chain.addr:
        begin = 30.0 + start_s if (a, b) == ("n0", "n1") else 0.0
        contacts.append({"from": a, "to": b, "start_s": begin, "end_s": 86400,
                         "rate_bps": 1e9, "owlt_s": 0.001})
    idle_nodes = [f"idle{i}" for i in range(idle)]
    ipn = {x: i + 1 for i, x in enumerate(chain.nodes + idle_nodes)}
    (tmp / "plan.json").write_text(json.dumps({
        "epoch": epoch.isoformat().replace("+00:00", "Z"), "nodes": ipn,
        "contacts": contacts}))
    entries = agent_entries(chain, ipn, tmp, tls=tls)
    for x in idle_nodes:
        (tmp / f"{x}.json").write_text(json.dumps({
            "node": x, "ipn": ipn[x], "listen": {"tcpcl": [], "udpcl": []},
            "app_socket": str(tmp / x / "bp.sock"), "store": str(tmp / x / "store.sqlite"),
            "contact_plan": str(tmp / "plan.json"), "neighbours": []}))
        entries.append({"config": str(tmp / f"{x}.json"), "netns": None})
    (tmp / "host.json").write_text(json.dumps({"nodes": entries}))
    return tmp / "host.json"


async def one_run(chain: Chain, tmp: Path, bundles: int, size: int, tls: bool,
                  profile: Path | None = None, idle: int = 0) -> dict[str, Any]:
    t_host = time.monotonic()
    lead_s = LEAD_S + idle * IDLE_LEAD_S
    host_cfg = write_configs(chain, tmp, tls, lead_s, idle)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(tmp / "host.stderr", "wb") as err:  # (the child keeps its own copy)
        proc = subprocess.Popen([sys.executable, "-m", "netemu.agent.nodehost", "--config",
                                 str(host_cfg)], env=env, stdout=subprocess.DEVNULL,
                                stderr=err)
    last, first = chain.nodes[-1], chain.nodes[1]
    dst = f"ipn:{len(chain.nodes)}.1"
    try:
        for _ in range(300):  # the node host is up once the last node's app socket is
            if (tmp / last / "bp.sock").exists() or proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        if proc.poll() is not None:
            raise SystemExit("the node host stopped: "
                             + (tmp / "host.stderr").read_text()[-3000:])
        rx = await BpClient.connect(str(tmp / last / "bp.sock"), timeout_s=30)
        warm = await BpClient.connect(str(tmp / first / "bp.sock"), timeout_s=30)
        tx = await BpClient.connect(str(tmp / "n0" / "bp.sock"), timeout_s=30)
        await rx.register(dst)
        await warm.send(dst, b"warm-up")  # sessions n1 … last up (and TLS set up)
        await rx.recv(timeout_s=30)
        payload = b"x" * size
        for i in range(0, bundles, 100):
            await tx.send_many([{"dst": dst, "payload": payload}] * min(100, bundles - i))
        wait_s = t_host + lead_s - time.monotonic()
        if wait_s < 0.5:
            raise SystemExit(f"the burst was not queued {lead_s} s after the host's start "
                             "(a loaded machine?): raise LEAD_S")
        spy = None
        if profile is not None:  # py-spy needs a moment to attach
            spy = subprocess.Popen(["py-spy", "record", "--pid", str(proc.pid), "--rate",
                                    "200", "--format", "raw", "--output", str(profile)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await asyncio.sleep(wait_s - 0.3)
        c0, t0 = cpu_s(proc.pid), time.perf_counter()
        for _ in range(bundles):
            await rx.recv(timeout_s=120)
        wall = time.perf_counter() - t0 - 0.3  # the contact starts 0.3 s after t0
        cpu = cpu_s(proc.pid) - c0
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        for c in (tx, warm, rx):
            await c.close()
    finally:
        stop_host(proc, 30)
    hops = len(chain.nodes) - 1
    return {"bundles": bundles, "hops": hops, "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cpu_ms_per_bundle_hop": round(1000 * cpu / (bundles * hops), 3),
            "hop_rate_per_s": round(bundles / wall, 1),
            "bundle_hops_per_s": round(bundles * hops / wall, 1)}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the runs (and the CPU figure of every run: the spread)."""
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["runs"] = len(runs)
    out["cpu_ms_per_bundle_hop_each"] = [r["cpu_ms_per_bundle_hop"] for r in runs]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--bundles", type=int, default=400)
    ap.add_argument("--size", type=int, default=1000, help="payload bytes")
    ap.add_argument("--tls", choices=("both", "on", "off"), default="both")
    ap.add_argument("--idle-nodes", type=int, default=0, help="more nodes served by the "
                    "host, without contacts: the steady work of a host's other nodes")
    ap.add_argument("--repeat", type=int, default=3, help="runs per TLS mode (medians)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", metavar="PREFIX", help="record the node host with py-spy "
                    "(on PATH) over the burst into PREFIX-tls-{on,off}.txt (collapsed stacks)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.nodes < 3:
        print("--nodes: at least 3", file=sys.stderr)
        return 2
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.tls]
    out: dict[str, Any] = {"config": {"nodes": args.nodes, "bundles": args.bundles,
                                      "size": args.size, "idle_nodes": args.idle_nodes}}
    with Chain(args.nodes) as chain:
        for tls in modes:
            runs = []
            for i in range(args.repeat):
                with tempfile.TemporaryDirectory(prefix="netemu-bench-hop-") as d:
                    prof = (Path(f"{args.profile}-tls-{'on' if tls else 'off'}.txt").resolve()
                            if args.profile and i == 0 else None)
                    runs.append(asyncio.run(one_run(chain, Path(d), args.bundles, args.size,
                                                    tls, prof, args.idle_nodes)))
            out["tls_on" if tls else "tls_off"] = r = median_run(runs)
            if not args.json:
                print(f"tls {'on ' if tls else 'off'}: {r['cpu_ms_per_bundle_hop']:.3f} CPU ms "
                      f"a bundle-hop, {r['hop_rate_per_s']:.0f} bundles/s a hop "
                      f"({r['bundle_hops_per_s']:.0f} bundle-hops/s; {r['bundles']} bundles, "
                      f"{r['hops']} hops, {r['wall_s']:.2f} s, CPU {r['cpu_s']:.2f} s; medians of "
                      f"{r['runs']} runs, CPU ms each {r['cpu_ms_per_bundle_hop_each']})")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
