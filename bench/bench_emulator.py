"""Emulator benchmarks on the Starlink shell-1 scenario (1,584 satellites, 3,168 ISLs,
10 ground stations): bring-up and teardown against plain Mininet measured in the same run,
and the real-time driver at 10 Hz.

    sudo .venv/bin/python bench/bench_emulator.py [--window-s 600] [--drive-s 30]
        [--skip-mininet] [--scenario topologies/starlink-shell1.yaml]

Plain Mininet baseline: ``addHost`` for every node and ``addLink`` for the same number of
veth pairs (every ISL, plus one link per GSL slot pair), then ``build()`` and ``stop()``.
Run names / host names start with ``x3``. Figures go to docs/emulator.md.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time

from netemu.emulator import Emulation
from netemu.emulator.layout import plan_layout
from netemu.plan.scenario import load_scenario
from netemu.plan.schedule import compute_plan


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def bench_netemu(plan, *, ip_routing: bool, drive_s: float) -> dict:
    emu = Emulation(plan, run_name="x3bench", ip_routing=ip_routing, tick_s=0.1)
    t0 = time.monotonic()
    emu.start()
    up = time.monotonic() - t0
    timings = dict(emu.timings)
    time.sleep(drive_s)
    st = emu.stats
    out = {
        "up_s": up, "timings": timings, "ticks": st.ticks, "missed": st.missed_ticks,
        "tick_cost_p50_ms": pct(st.cost_s, 0.5) * 1e3, "tick_cost_p99_ms": pct(st.cost_s, 0.99) * 1e3,
        "lateness_p50_ms": pct(st.lateness_s, 0.5) * 1e3,
        "lateness_p99_ms": pct(st.lateness_s, 0.99) * 1e3,
        "updates_per_tick": st.updates / max(1, st.ticks), "route_changes": st.route_changes,
        "route_recompute_s": statistics.median(st.route_s) if st.route_s else 0.0,
        "routes_recomputed": len(st.route_s),
    }
    t0 = time.monotonic()
    emu.stop()
    out["down_s"] = time.monotonic() - t0
    return out


def bench_mininet(plan, layout) -> dict:
    """Plain Mininet: same hosts, same number of veth pairs."""
    from mininet.log import setLogLevel
    from mininet.net import Mininet

    setLogLevel("error")
    names = {n: f"x3h{i}" for i, n in enumerate(layout.nodes)}
    pairs = []
    seen = set()
    for p in layout.periods:
        key = (p.ep_a, p.ep_b)
        if key not in seen:
            seen.add(key)
            pairs.append((p.a, p.b))
    n_links = len(layout.endpoints) // 2
    pairs = pairs[:n_links]
    net = Mininet(topo=None, build=False, controller=None, switch=None, autoSetMacs=False,
                  waitConnected=False)
    t0 = time.monotonic()
    for n in layout.nodes:
        net.addHost(names[n])
    for a, b in pairs:
        net.addLink(names[a], names[b])
    net.build()
    up = time.monotonic() - t0
    t0 = time.monotonic()
    net.stop()
    down = time.monotonic() - t0
    return {"hosts": len(layout.nodes), "links": len(pairs), "up_s": up, "down_s": down}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scenario", default="topologies/starlink-shell1.yaml")
    ap.add_argument("--window-s", type=float, default=600.0)
    ap.add_argument("--drive-s", type=float, default=30.0)
    ap.add_argument("--skip-mininet", action="store_true")
    a = ap.parse_args()
    t0 = time.monotonic()
    sc = load_scenario(a.scenario)
    plan = compute_plan(sc, start_s=0.0, duration_s=a.window_s)
    print(f"plan: {len(plan.nodes)} nodes, {len(plan.contacts)} contacts over {a.window_s:.0f} s "
          f"(computed in {time.monotonic() - t0:.1f} s)", flush=True)
    for ipr in (False, True):
        r = bench_netemu(plan, ip_routing=ipr, drive_s=a.drive_s)
        tm = r["timings"]
        print(f"netemu, IP routing {'on ' if ipr else 'off'}: up {r['up_s']:.1f} s "
              f"(namespaces {tm['netns_s']:.1f}, sysctl+netlink {tm['sysctl_s']:.1f}, "
              f"veth {tm['veth_s']:.1f}, addresses {tm['config_s']:.1f}, relay "
              f"{tm['shaper_s']:.1f}, initial links+routes {tm['initial_state_s']:.1f}), "
              f"down {r['down_s']:.1f} s", flush=True)
        print(f"  driver at 10 Hz for {a.drive_s:.0f} s: {r['ticks']} ticks, {r['missed']} missed, "
              f"tick cost p50 {r['tick_cost_p50_ms']:.2f} / p99 {r['tick_cost_p99_ms']:.2f} ms, "
              f"lateness p50 {r['lateness_p50_ms']:.2f} / p99 {r['lateness_p99_ms']:.2f} ms, "
              f"{r['updates_per_tick']:.1f} link updates per tick"
              + (f", {r['routes_recomputed']} route recomputations (median "
                 f"{r['route_recompute_s']:.2f} s, off the driver thread), "
                 f"{r['route_changes']:,} route changes" if ipr else ""), flush=True)
        if not ipr:
            ours = r
        gc.collect()
    if not a.skip_mininet:
        m = bench_mininet(plan, plan_layout(plan))
        print(f"plain Mininet ({m['hosts']} hosts, {m['links']} links): up {m['up_s']:.1f} s, "
              f"down {m['down_s']:.1f} s", flush=True)
        print(f"ratio (Mininet / netemu, IP routing off): up {m['up_s'] / ours['up_s']:.1f}x, "
              f"down {m['down_s'] / ours['down_s']:.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
