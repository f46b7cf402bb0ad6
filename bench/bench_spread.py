"""How much each metric of a scenario varies over repeated runs: the spread that baseline
tolerances must cover.

    sudo .venv/bin/python bench/bench_spread.py [SCENARIO] [--repeats 5] [--json]

Runs ``netemu test SCENARIO`` (its test profile, no report) ``--repeats`` times in a row,
reads each run's ``metrics.json`` and prints, for every number that any run measured
(the top-level metrics, the ``traffic`` totals and the ``faults`` costs), its mean, min,
max, the spread (max − min) and the spread relative to the mean. With ``--json`` one
JSON object: ``{"scenario", "repeats", "runs": [dirs], "metrics": {name: {mean, min, max,
spread, rel_spread}}}``. Default scenario: topologies/regression/tiny-dtn.yaml.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("events", "duration_s")  # bookkeeping, not results


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """Every number of interest in a run's metrics.json, by dotted name."""
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any, depth: int) -> None:
        if isinstance(node, bool) or node is None:
            return
        if isinstance(node, (int, float)):
            if math.isfinite(node):
                out[prefix] = float(node)
            return
        if isinstance(node, dict) and depth > 0:
            for k, v in node.items():
                if k not in ("by_name", "projection", "window_s", "service"):
                    walk(f"{prefix}.{k}", v, depth - 1)

    for k, v in metrics.items():
        if k in SKIP:
            continue
        if k in ("traffic", "faults"):
            walk(k, v, 3)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            walk(k, v, 0)
    return out


def spread(values: list[float]) -> dict[str, float | None]:
    mean = statistics.fmean(values)
    lo, hi = min(values), max(values)
    return {"mean": mean, "min": lo, "max": hi, "spread": hi - lo,
            "rel_spread": (hi - lo) / abs(mean) if mean else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario", nargs="?", type=Path,
                    default=ROOT / "topologies" / "regression" / "tiny-dtn.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_spread: the runs build network namespaces: run as root", file=sys.stderr)
        return 2
    parent = args.out or Path(tempfile.mkdtemp(prefix="netemu-spread-"))
    runs: list[Path] = []
    per_run: list[dict[str, float]] = []
    walls: list[float] = []
    for i in range(args.repeats):
        out = parent / f"repeat-{i}"
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "netemu", "test", str(args.scenario),
                            "--out", str(out), "--no-report"],
                           capture_output=True, text=True)
        walls.append(time.monotonic() - t0)
        found = sorted(out.glob("*/metrics.json"))
        if not found:
            print(r.stdout[-3000:] + r.stderr[-2000:], file=sys.stderr)
            print(f"bench_spread: repeat {i} wrote no metrics.json", file=sys.stderr)
            return 1
        runs.append(found[0].parent)
        per_run.append(numbers(json.loads(found[0].read_text())))
        if not args.json:
            print(f"repeat {i}: {walls[-1]:.0f} s wall, exit {r.returncode}, {found[0].parent}",
                  flush=True)
    names = sorted(set().union(*per_run))
    table = {n: spread([r[n] for r in per_run if n in r]) for n in names}
    if args.json:
        print(json.dumps({"scenario": str(args.scenario), "repeats": args.repeats,
                          "runs": [str(r) for r in runs], "wall_s": [round(w, 1) for w in walls],
                          "metrics": table}))
        return 0
    print(f"{args.scenario}: {args.repeats} repeats, wall {min(walls):.0f}–{max(walls):.0f} s")
    print(f"{'metric':48s} {'mean':>12s} {'min':>12s} {'max':>12s} {'spread':>9s}")
    for n, s in table.items():
        rel = "—" if s["rel_spread"] is None else f"{100 * s['rel_spread']:.1f}%"
        print(f"{n:48s} {s['mean']:12.6g} {s['min']:12.6g} {s['max']:12.6g} {rel:>9s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
