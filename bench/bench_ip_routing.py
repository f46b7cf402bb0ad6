"""IP routing protocols side by side on a Walker shell: the oracle, FRR OSPF, OSPFv3 and
IS-IS, BIRD OSPF.

    sudo .venv/bin/python bench/bench_ip_routing.py [--planes 22 --sats 22] [--gateways 4] \\
        [--duration-s 600] [--time-scale 1] [--modes oracle,frr,frr/ospf6,frr/isis,bird] \\
        [--tolerance 0.05] [--out DIR] [--json]

For each mode the same generated scenario (a ``planes`` × ``sats`` Walker delta shell at
550 km, 53°, plus-grid ISLs where the Earth leaves them a line of sight (a plane needs 10
satellites or more for its own ring); ``gateways`` stations with two antennas each; no bundle
agents) runs through the scenario runner (``netemu test``'s) with probe flows between
every pair of gateways and across the shell, measured as ``ip_routing.probes`` measures
them (docs/routing-protocols.md). Figures per mode (``--json``: one JSON object, a key
per mode):

- ``nodes``; ``bringup_s``: wall seconds to build the network and start the daemons;
  ``routes_reach_s``: then, wall seconds until every probe pair had a path;
  ``routes_ready_s``: until every probe pair's path was within ``--tolerance`` of the
  oracle's delay (``ip_initial_convergence_s`` at the time scale; the convergence
  figures count only after it);
- ``convergence_gsl_p50_s`` / ``_p95_s`` and ``convergence_isl_p50_s`` / ``_p95_s``:
  after ground-link and inter-satellite-link changes (scenario seconds);
- ``probe_loss_ratio``, ``path_stretch_p95``, ``unconverged``;
- ``daemons_cpu_s``, ``daemons_pss_mib``: the routing daemons' CPU time and proportional
  set size at the end (0 for the oracle, which runs in the emulator's process).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from netemu.run.runner import RunOptions, ScenarioRun

GATEWAYS = [("redmond", 47.67, -122.12), ("gravelines", 50.99, 2.13), ("nairobi", -1.29, 36.82),
            ("tokyo", 35.68, 139.69), ("santiago", -33.45, -70.67), ("perth", -31.95, 115.86)]


def scenario_yaml(a: argparse.Namespace, mode: str) -> str:
    gws = GATEWAYS[:a.gateways]
    names = [g[0] for g in gws]
    probes = [f"{x}:{y}" for i, x in enumerate(names) for y in names[i + 1:]]
    half = a.planes // 2
    probes.append(f"w-0-0:w-{half}-{a.sats // 2}")  # across the shell
    stations = "\n".join(
        f"  - {{name: {n}, lat_deg: {lat}, lon_deg: {lon}, alt_m: 50, min_elevation_deg: 25,"
        f" max_links: 2}}" for n, lat, lon in gws)
    daemon, _, proto = mode.partition("/")
    protocol = f"\n  protocol: {proto}" if proto else ""
    return f"""name: bench-ip-routing-{a.planes}x{a.sats}
epoch: 2026-06-01T00:00:00Z
duration_s: {a.duration_s + 600:g}
time_scale: 1
satellites:
  - name_prefix: w
    walker: {{planes: {a.planes}, sats_per_plane: {a.sats}, altitude_km: 550,
              inclination_deg: 53, phasing: 1, pattern: delta}}
isl: {{topology: plus-grid, max_range_km: 10000, earth_clearance_km: 80}}
ground_stations:
{stations}
links:
  isl: {{rate_bps: 100000000, loss: 0.0}}
  gsl: {{rate_bps: 20000000, loss: 0.0}}
emulation: {{start_s: 0, duration_s: {a.duration_s:g}, time_scale: {a.time_scale:g},
             agents: none}}
ip_routing:
  mode: {daemon}{protocol}
  probes: [{", ".join(probes)}]
  probe_interval_s: 0.1
  sample_s: {a.sample_s:g}
  convergence_tolerance: {a.tolerance:g}
"""


def reachable_s(paths: Path) -> float | None:
    """Scenario seconds from the first path sample until every probe pair that the oracle
    could route had a path at once (None: never): the routes' bring-up whatever their
    delay, where ``routes_ready_s`` needs every path within the tolerance of the oracle's."""
    if not paths.is_file():
        return None
    samples = [x for x in map(json.loads, paths.read_text().splitlines())
               if x.get("kind") == "path"]
    pairs = {(x["src"], x["dst"]) for x in samples}
    latest: dict[tuple[str, str], bool] = {}
    for x in samples:
        latest[(x["src"], x["dst"])] = (x.get("oracle_delay_s") is None
                                        or x.get("delay_s") is not None)
        if len(latest) == len(pairs) and all(latest.values()):
            return float(x["t_s"]) - float(samples[0]["t_s"])
    return None


def run_mode(a: argparse.Namespace, mode: str, work: Path) -> dict[str, Any]:
    name = mode.replace("/", "-")
    path = work / f"{name}.yaml"
    path.write_text(scenario_yaml(a, mode))
    out = work / f"run-{name}"
    run = ScenarioRun(RunOptions(path, out=out, report=False,
                                 echo=lambda s: print(s, file=sys.stderr, flush=True)))
    t0 = time.monotonic()
    result = run.execute()
    if result.errors:
        raise SystemExit(f"bench_ip_routing: {mode}: {'; '.join(result.errors)}")
    meta = json.loads((out / "run.json").read_text())
    m = json.loads((out / "metrics.json").read_text())
    timings = (meta.get("emulation") or {}).get("timings") or {}
    by_link = m.get("ip_convergence_by_link") or {}
    usage = meta.get("frr_usage") or {}
    init = m.get("ip_initial_convergence_s")
    reach = reachable_s(out / "iproute" / "paths.jsonl")
    return {
        "nodes": len(run.prepared.plan.nodes) if run.prepared else None,
        "bringup_s": timings.get("up_s"),
        "daemons_start_s": round(timings.get("frr_start_s") or 0.0, 2),
        "routes_ready_s": round(init / a.time_scale, 2) if init is not None else None,
        "routes_reach_s": round(reach / a.time_scale, 2) if reach is not None else None,
        "convergence_gsl_p50_s": (by_link.get("gsl") or {}).get("p50_s"),
        "convergence_gsl_p95_s": (by_link.get("gsl") or {}).get("p95_s"),
        "convergence_isl_p50_s": (by_link.get("isl") or {}).get("p50_s"),
        "convergence_isl_p95_s": (by_link.get("isl") or {}).get("p95_s"),
        "unconverged": m.get("ip_unconverged"),
        "probe_loss_ratio": m.get("probe_loss_ratio"),
        "path_stretch_p95": m.get("ip_path_stretch_p95"),
        "daemons_cpu_s": usage.get("cpu_s", 0.0),
        "daemons_pss_mib": round(usage.get("pss_bytes", 0) / 2**20, 1),
        "wall_s": round(time.monotonic() - t0, 1),
        "timers": meta.get("frr_timers"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--planes", type=int, default=22)
    ap.add_argument("--sats", type=int, default=22)
    ap.add_argument("--gateways", type=int, default=4, choices=range(1, len(GATEWAYS) + 1))
    ap.add_argument("--duration-s", type=float, default=600.0)
    ap.add_argument("--time-scale", type=float, default=1.0)
    ap.add_argument("--sample-s", type=float, default=0.5,
                    help="wall seconds between path samples")
    ap.add_argument("--modes", default="oracle,frr,frr/ospf6,frr/isis,bird",
                    help="oracle, frr (OSPF), frr/ospf6, frr/isis, bird (OSPF), comma-separated")
    ap.add_argument("--tolerance", type=float, default=0.05,
                    help="a path within this fraction of the oracle's delay has converged "
                         "(the daemons count hops, not delay)")
    ap.add_argument("--out", type=Path, default=None,
                    help="keep each mode's run directory (paths.jsonl, the daemons' logs) here")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    out: dict[str, Any] = {"planes": a.planes, "sats": a.sats, "gateways": a.gateways,
                           "duration_s": a.duration_s, "time_scale": a.time_scale}
    with tempfile.TemporaryDirectory(prefix="bench-ip-routing-") as tmp:
        work = a.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for mode in a.modes.split(","):
            out[mode] = run_mode(a, mode, work)
    if a.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
