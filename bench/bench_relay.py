"""Relay benchmarks: TCP through a 20 ms link, delay error at 1,000 packets/s, and the
aggregate packet rate across 100 busy links.

    sudo .venv/bin/python bench/bench_relay.py [--only tcp,delay,agg] [--seconds 8]

Run names start with ``x3``. Figures go to docs/emulator.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone

from netemu.emulator import Emulation
from netemu.plan.contacts import Contact, ContactPlan, Node

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def link_plan(owlt_s: float, rate_bps: float = 0.0, names=("a", "b"), dur=3600.0) -> ContactPlan:
    a, b = names
    nodes = {a: Node(a, 1, "satellite"), b: Node(b, 2, "satellite")}
    cs = [Contact(a, b, 0, dur, rate_bps, owlt_s, "isl"), Contact(b, a, 0, dur, rate_bps, owlt_s,
                                                                  "isl")]
    return ContactPlan(EPOCH, nodes, cs)


def bench_tcp(seconds: float, gso: bool) -> float:
    """One TCP flow (iperf3) through a 20 ms link with no rate limit; Mbit/s received."""
    with Emulation(link_plan(0.020), run_name="x3tcp" + ("g" if gso else ""), relay_gso=gso,
                   ip_routing=False) as emu:
        srv = emu.popen("b", ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        r = emu.run_cmd("a", ["iperf3", "-c", emu.addresses("b")["b-eth0"], "-t", str(seconds),
                              "-O", "2", "-J"], timeout=seconds + 30)
        srv.wait(timeout=10)
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6


UDP_SENDER = r"""
import socket, struct, sys, time
dst, rate, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = int(rate * secs); t0 = time.time() + 0.2
for i in range(n):
    wait = t0 + i / rate - time.time()
    if wait > 0:
        time.sleep(wait)  # no spinning: the timestamp below is what counts
    s.sendto(struct.pack("!d", time.time()) + b"x" * 92, (dst, 9000))
"""

UDP_RECEIVER = r"""
import socket, struct, sys, time
secs = float(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 35, 1)  # SO_TIMESTAMPNS
s.bind(("0.0.0.0", 9000)); s.settimeout(2.0)
out = []
end = time.time() + secs + 3
while time.time() < end:
    try:
        data, anc, _f, _a = s.recvmsg(256, 64)
    except socket.timeout:
        break
    rx = None
    for lvl, typ, val in anc:
        if typ == 35:
            sec, ns = struct.unpack("qq", val[:16]); rx = sec + ns * 1e-9
    out.append(rx - struct.unpack("!d", data[:8])[0])
print(" ".join(f"{x:.7f}" for x in out))
"""


def bench_delay(seconds: float, rate_pps: float = 1000.0, owlt_s: float = 0.020) -> dict:
    """One-way delay error of UDP packets at ``rate_pps`` through one link (kernel receive
    timestamps minus send timestamps, minus the configured delay)."""
    with Emulation(link_plan(owlt_s), run_name="x3dly", ip_routing=False) as emu:
        rx = emu.popen("b", [sys.executable, "-c", UDP_RECEIVER, str(seconds)],
                       stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        # the sender runs at a real-time priority too (below the relay's), so that its own
        # scheduling delay between timestamping and sending is not counted as relay error
        emu.run_cmd("a", ["chrt", "-f", "5", sys.executable, "-c", UDP_SENDER,
                          emu.addresses("b")["b-eth0"],
                          str(rate_pps), str(seconds)], timeout=seconds + 30)
        out, _ = rx.communicate(timeout=30)
    owd = [float(x) for x in out.split()]
    err = sorted(abs(x - owlt_s) * 1e3 for x in owd)
    if not err:
        return {"received": 0}
    return {"received": len(owd), "sent": int(rate_pps * seconds),
            "err_p50_ms": statistics.median(err), "err_p99_ms": err[int(0.99 * (len(err) - 1))],
            "err_max_ms": err[-1], "mean_owd_ms": statistics.fmean(owd) * 1e3}


FLOOD = r"""
import socket, sys, time
dsts = sys.argv[1].split(","); secs = float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
payload = b"x" * 64
end = time.time() + secs; n = 0; k = len(dsts)
while time.time() < end:
    for _ in range(256):
        try:
            s.sendto(payload, (dsts[n % k], 9))
        except BlockingIOError:
            pass
        n += 1
print(n)
"""


def bench_aggregate(seconds: float, links: int = 100) -> dict:
    """A hub with ``links`` links floods small UDP packets round-robin over all of them;
    the relay's forwarded frames per second across the links."""
    names = ["hub"] + [f"n{i}" for i in range(links)]
    nodes = {n: Node(n, i + 1, "satellite") for i, n in enumerate(names)}
    cs = []
    for i in range(links):
        for x, y in (("hub", f"n{i}"), (f"n{i}", "hub")):
            cs.append(Contact(x, y, 0, 3600, 0.0, 0.005, "isl"))
    with Emulation(ContactPlan(EPOCH, nodes, cs), run_name="x3agg", ip_routing=False) as emu:
        addrs = [nb.link_addr for nb in emu.neighbours("hub")]
        time.sleep(0.5)
        before = emu.shaper.counters()["frames"]
        cpu0 = relay_cpu_s(emu.shaper.pids())
        t0 = time.monotonic()
        senders = [emu.popen("hub", [sys.executable, "-c", FLOOD, ",".join(addrs[k::2]),
                                     str(seconds)], stdout=subprocess.PIPE, text=True)
                   for k in range(2)]
        sent = sum(int(p.communicate(timeout=seconds + 30)[0].strip() or 0) for p in senders)
        time.sleep(0.6)
        dt = time.monotonic() - t0 - 0.6
        after = emu.shaper.counters()["frames"]
        cpu = relay_cpu_s(emu.shaper.pids()) - cpu0
    fwd = after - before
    return {"links": links, "offered_pps": sent / seconds, "forwarded_pps": fwd / dt,
            "relay_cpu_s": cpu, "frames_per_cpu_s": fwd / cpu if cpu else 0.0}


def relay_cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            total += (int(parts[11]) + int(parts[12])) / tick
        except OSError:
            pass
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="tcp,delay,agg")
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args()
    which = set(a.only.split(","))
    if "delay" in which:
        d = bench_delay(a.seconds)
        print(f"delay error at 1000 pkt/s through a 20 ms link: {json.dumps(d)}")
    if "tcp" in which:
        for gso in (False, True):
            mbps = bench_tcp(a.seconds, gso)
            mode = "offloads on (GSO frames, vnet header)" if gso else "tx offloads off (MTU frames)"
            print(f"one TCP flow through a 20 ms link, {mode}: {mbps:.0f} Mbit/s")
    if "agg" in which:
        g = bench_aggregate(a.seconds)
        print(f"aggregate across {g['links']} busy links: {g['forwarded_pps']:.0f} frames/s "
              f"forwarded (offered {g['offered_pps']:.0f} pkt/s by two senders on the same "
              f"cores), relay CPU {g['relay_cpu_s']:.1f} s = {g['frames_per_cpu_s']:.0f} frames "
              "per relay CPU-second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
