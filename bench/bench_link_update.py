"""CPU per link update: what the driver spends to change one direction of a link's delay,
rate and loss, with the relay (a shared-memory table) and with netem (a netlink "tc qdisc
change" per interface, batched per namespace).

    sudo .venv/bin/python bench/bench_link_update.py [--shaper netem,relay]
        [--links 50] [--rounds 40] [--json]

A ring of ``--links`` links (two directions each, like a plane's ISLs); each round
changes every direction's delay (a pass changes them all), as the driver does: under the
emulation's lock, ``begin()``, one ``set_dir`` per direction, ``commit()``, the netlink
flush. CPU is the driver thread's own (user + system, ``time.thread_time``: netlink's
kernel work runs in the sending thread); wall is per round. ``scripts/dev test-vm`` runs it
in the VM with netem (runs/vm/link_update.json). Run names start with ``x5``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone

from netemu.emulator import Emulation
from netemu.plan.contacts import Contact, ContactPlan, Node

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


def ring_plan(links: int, dur_s: float = 3600.0) -> ContactPlan:
    """``links`` satellites in a ring, one ISL to each neighbour, up for ``dur_s``."""
    names = [f"s{i}" for i in range(links)]
    nodes = {n: Node(n, i + 1, "satellite") for i, n in enumerate(names)}
    cs = []
    for i, a in enumerate(names):
        b = names[(i + 1) % links]
        cs += [Contact(a, b, 0, dur_s, 1e8, 0.010, "isl"), Contact(b, a, 0, dur_s, 1e8, 0.010, "isl")]
    return ContactPlan(EPOCH, nodes, cs)


def measure(shaper: str, links: int, rounds: int) -> dict:
    """Times ``rounds`` rounds of updates of every direction of a ring of ``links``."""
    with Emulation(ring_plan(links), run_name="x5lu", shaper=shaper, ip_routing=False) as emu:
        lay, sh, net = emu.layout, emu.shaper, emu.net
        assert sh is not None
        dirs = []
        for p in lay.periods:
            dirs += [(p.ep_a, p.ep_b), (p.ep_b, p.ep_a)]
        cpu_us, wall_ms = [], []
        for r in range(rounds):
            delay_s = 0.010 + 0.001 * (r % 7 + 1)  # a new value every round
            c0, w0 = time.thread_time(), time.perf_counter()
            with emu._lock:
                sh.begin()
                for src, dst in dirs:
                    sh.set_dir(src, dst, delay_s, 1e8, 0.0)
                sh.commit()
                assert net.nl_shaper is not None
                net.nl_shaper.flush()
            c1, w1 = time.thread_time(), time.perf_counter()
            cpu_us.append((c1 - c0) / len(dirs) * 1e6)
            wall_ms.append((w1 - w0) * 1e3)
        return {
            "shaper": sh.name,
            "links": links,
            "directions": len(dirs),
            "rounds": rounds,
            "cpu_per_update_us_p50": round(statistics.median(cpu_us), 2),
            "cpu_per_update_us_max": round(max(cpu_us), 2),
            "round_wall_ms_p50": round(statistics.median(wall_ms), 3),
            "round_wall_ms_max": round(max(wall_ms), 3),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shaper", default="auto",
                    help="auto, relay or netem; several, comma-separated, are measured in turn")
    ap.add_argument("--links", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    a = ap.parse_args()
    shapers = a.shaper.split(",")
    bad = [s for s in shapers if s not in ("auto", "relay", "netem")]
    if bad:
        ap.error(f"--shaper: unknown {', '.join(bad)} (auto, relay, netem)")
    results = {}
    for name in shapers:
        res = measure(name, a.links, a.rounds)
        results[res["shaper"]] = res
        if not a.json:
            report(res)
    if a.json:
        print(json.dumps(results))
    return 0


def report(res: dict) -> None:
    print(f"shaper {res['shaper']}: {res['directions']} directions, {res['rounds']} rounds")
    print(f"  CPU per link update: p50 {res['cpu_per_update_us_p50']} us, "
          f"max {res['cpu_per_update_us_max']} us")
    print(f"  wall per round of {res['directions']}: p50 {res['round_wall_ms_p50']} ms, "
          f"max {res['round_wall_ms_max']} ms")


if __name__ == "__main__":
    sys.exit(main())
