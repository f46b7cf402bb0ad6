"""Benchmark: the whole link schedule of Starlink shell 1 (1,584 satellites, +Grid ISLs)
with 100 ground stations over 24 h, contact boundaries to < 1 ms.

Prints wall time, peak memory (max RSS) and the ratio against a straightforward baseline:
skyfield's ``find_events`` for each station–satellite pair, timed on a random subset of
pairs in the same run and scaled to all pairs (GSLs only: the baseline has no ISLs, so
the ratio flatters the baseline). Also prints how far the two disagree on the subset.

    .venv/bin/python bench/bench_schedule.py [--hours 24] [--stations 100] [--pairs 40]

Figures are recorded in docs/schedule.md.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netemu.plan.linkmodel import LinkBudget, LinkModel  # noqa: E402
from netemu.plan.scenario import GroundStation, load_scenario  # noqa: E402
from netemu.plan.schedule import compute_plan, gsl_windows  # noqa: E402
from netemu.plan.weather import WeatherConfig  # noqa: E402


def stations(n: int, mask_deg: float = 25.0, max_links: int = 8) -> list[GroundStation]:
    """``n`` stations spread evenly (Fibonacci lattice) between 60° S and 60° N."""
    out = []
    golden = math.pi * (3 - math.sqrt(5))
    zmax = math.sin(math.radians(60))
    for i in range(n):
        z = zmax * (1 - 2 * (i + 0.5) / n)
        lat = math.degrees(math.asin(z))
        lon = (math.degrees(golden * i) + 180) % 360 - 180
        out.append(GroundStation(f"gs-{i:03d}", round(lat, 4), round(lon, 4), 0.0, mask_deg, max_links))
    return out


KU_DVB_S2 = LinkModel(budget=LinkBudget(
    frequency_hz=12e9, eirp_dbw=36, gt_dbk=10, bandwidth_hz=240e6, other_losses_db=3,
    modcod="dvb-s2", zenith_atmos_db=0.5))
"""An assumed Ku-band downlink to a user-terminal-class station (240 MHz channel)."""


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def baseline(scenario, pairs, hours: float) -> tuple[float, float, list]:
    """skyfield find_events per (station, satellite): wall s, CPU s, the events found."""
    from skyfield.api import EarthSatellite, load, wgs84

    ts = load.timescale(builtin=True)
    e = scenario.epoch
    t0 = ts.utc(e.year, e.month, e.day, e.hour, e.minute, e.second)
    t1 = ts.utc(e.year, e.month, e.day, e.hour, e.minute, e.second + hours * 3600)
    sats = scenario.satellites
    found = []
    start = time.perf_counter()
    cpu0 = time.process_time()
    for g, s in pairs:
        st = scenario.ground_stations[g]
        topo = wgs84.latlon(st.lat_deg, st.lon_deg, st.alt_m)
        sat = EarthSatellite.from_satrec(sats[s].satrec, ts)
        t, ev = sat.find_events(topo, t0, t1, altitude_degrees=st.min_elevation_deg)
        secs = (t - t0) * 86400.0
        found.append((g, s, list(zip(np.asarray(secs).tolist(), np.asarray(ev).tolist(), strict=True))))
    return time.perf_counter() - start, time.process_time() - cpu0, found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--stations", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=40, help="baseline subset size")
    ap.add_argument("--budget", action="store_true",
                    help="GSLs with a Ku-band DVB-S2 link budget (rates sampled along passes)")
    ap.add_argument("--weather", action="store_true",
                    help="with --budget: ITU-R rain events per station (itur)")
    ap.add_argument("--handover", default="longest-remaining",
                    choices=("longest-remaining", "max-elevation", "sticky", "reassign"),
                    help="the stations' handover policy (schedule.handover)")
    ap.add_argument("--max-gsl", type=int, default=0, help="beams per satellite (0: no limit)")
    args = ap.parse_args()
    if args.weather and not args.budget:
        ap.error("--weather needs --budget (rain lowers the budget's rate)")

    sc = load_scenario(ROOT / "topologies" / "starlink-shell1.yaml")
    sc = replace(sc, ground_stations=stations(args.stations), duration_s=args.hours * 3600)
    if args.budget:
        sc = replace(sc, links={**sc.links, "gsl": KU_DVB_S2})
    if args.weather:
        sc = replace(sc, weather=WeatherConfig())
    if args.handover != "longest-remaining":
        sc = replace(sc, schedule=replace(sc.schedule, handover=args.handover))
    if args.max_gsl:
        for s in sc.satellites:
            s.max_gsl = args.max_gsl
    sc.ipn.update({g.name: len(sc.satellites) + 1 + i for i, g in enumerate(sc.ground_stations)})
    n_sat, n_st = len(sc.satellites), len(sc.ground_stations)
    print(f"scenario: {n_sat} satellites (+Grid ISLs), {n_st} ground stations, {args.hours:g} h, "
          f"step {sc.schedule.step_s:g} s")

    phases: dict[str, list[float]] = {}
    t_start = time.perf_counter()
    last: dict = {"name": None, "t": t_start, "cpu": time.process_time()}

    def progress(name: str, frac: float) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        if name != last["name"]:
            if last["name"] is not None:
                acc = phases.setdefault(last["name"], [0.0, 0.0])
                acc[0] += now - last["t"]
                acc[1] += cpu - last["cpu"]
            last.update(name=name, t=now, cpu=cpu)

    cpu0 = time.process_time()
    plan = compute_plan(sc, progress=progress)
    wall = time.perf_counter() - t_start
    cpu = time.process_time() - cpu0
    progress("end", 1.0)
    peak = rss_gib()
    n_isl = sum(1 for c in plan.contacts if c.kind == "isl") // 2
    n_gsl = sum(1 for c in plan.contacts if c.kind == "gsl") // 2
    n_samples = sum(len(c.owlt_samples) for c in plan.contacts) // 2
    n_rates = sum(len(c.rate_samples) for c in plan.contacts) // 2
    print(f"netemu: {wall:.1f} s wall ({cpu:.1f} s CPU), peak RSS {peak:.2f} GiB; {n_isl} ISL and {n_gsl} GSL "
          f"contacts (each both ways), {n_samples} light-time samples, {n_rates} rate steps, "
          f"{len(plan.weather)} rain events")
    for k, (w, c) in phases.items():
        print(f"  {k:<28} {w:6.1f} s wall {c:6.1f} s CPU")
    load = os.getloadavg()[0]
    print(f"load average during the run: {load:.1f} on {os.cpu_count()} CPUs"
          + (" (shared machine: wall time inflated; CPU time is the steadier figure)"
             if load > (os.cpu_count() or 1) else ""))
    target_ok = wall <= 60 and peak <= 4
    print(f"target ≤ 60 s and ≤ 4 GiB: {'met' if target_ok else 'NOT met'}")

    # baseline on a random subset of station–satellite pairs, scaled
    rng = random.Random(1)
    pairs = [(rng.randrange(n_st), rng.randrange(n_sat)) for _ in range(args.pairs)]
    base_s, base_cpu, found = baseline(sc, pairs, args.hours)
    per_pair = base_s / len(pairs)
    scaled = per_pair * n_st * n_sat
    scaled_cpu = base_cpu / len(pairs) * n_st * n_sat
    print(f"baseline (skyfield find_events per pair): {per_pair * 1e3:.1f} ms per pair on "
          f"{len(pairs)} pairs → {scaled:.0f} s wall ({scaled_cpu:.0f} s CPU) for all "
          f"{n_st * n_sat} pairs (GSLs only)")
    print(f"speed-up: {scaled / wall:.0f}× wall, {scaled_cpu / cpu:.0f}× CPU (netemu's whole "
          "schedule incl. ISLs and light-time samples vs baseline GSL events only)")

    # agreement on the subset (visibility windows before tracking limits)
    sub = replace(sc, ground_stations=sc.ground_stations)
    from netemu.plan.orbit import build_ephemeris

    eph = build_ephemeris([s.satrec for s in sub.satellites], sub.epoch, 0.0, sub.duration_s,
                          sub.schedule.step_s)
    wins = gsl_windows(sub, eph, t_end=sub.duration_s)
    mine: dict[tuple[int, int], list[float]] = {}
    for g, s, a, b in wins:
        if a > 0:
            mine.setdefault((g, s), []).append(a)
        if b < sub.duration_s:
            mine.setdefault((g, s), []).append(b)
    worst = 0.0
    count = 0
    for g, s, evs in found:
        ref = sorted(t for t, kind in evs if kind in (0, 2))
        got = sorted(mine.get((g, s), []))
        if len(ref) != len(got):
            print(f"  pair {g},{s}: {len(ref)} rise/set events from skyfield, {len(got)} from netemu")
            continue
        for x, y in zip(ref, got, strict=True):
            worst = max(worst, abs(x - y))
            count += 1
    print(f"agreement with find_events: {count} rise/set times, worst difference {worst * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
