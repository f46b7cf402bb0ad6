"""The flagship demo (``netemu demo --cluster auto``) over simulated hosts on this machine.

    sudo .venv/bin/python bench/bench_cluster_demo.py [--hosts 2] [--full] [--keep DIR] [--json]

The hosts are the test bed of tests/integration/cluster_bed.py (network namespaces on a
bridge, each a Ray node); the demo runs on the head, by default its quick window
(``--full``: the whole window). Printed: the bed's bring-up, the demo's wall time to the
report, nodes by host and cross-host links, the headline figures and the expectations'
verdicts from the gathered run directory, and what was left on the hosts afterwards.
``--json``: one JSON object with those keys. Figures go to docs/cluster.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def run(hosts: int, full: bool, keep: Path | None = None) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests/integration"))
    from cluster_bed import Bed

    t0 = time.monotonic()
    out: dict[str, Any] = {"hosts": hosts, "window": "full" if full else "quick"}
    with Bed(hosts) as bed:
        out["bed_up_s"] = round(time.monotonic() - t0, 1)
        run_dir = bed.root / "demo"
        argv = [sys.executable, "-m", "netemu", "demo", str(ROOT / "topologies/three-body-12.yaml"),
                "--cluster", "auto", "--out", str(run_dir), "--run-name", f"{bed.run_prefix}d"]
        t1 = time.monotonic()
        p = bed.run(argv + ([] if full else ["--quick"]), timeout=3600)
        out["demo_wall_s"] = round(time.monotonic() - t1, 1)
        out["rc"] = p.returncode
        if p.returncode != 0:
            out["output_tail"] = (p.stdout + p.stderr)[-3000:]
        meta = json.loads((run_dir / "run.json").read_text())
        cl = meta.get("cluster", {})
        out["nodes_by_host"] = cl.get("nodes_by_host")
        out["cross_host_links"] = cl.get("cross_host_links")
        m = json.loads((run_dir / "metrics.json").read_text())
        out["metrics"] = {k: m.get(k) for k in (
            "delivery_ratio", "queries_answered", "queries_sent", "query_latency_p95_s",
            "bundles_delivered", "bundles_expired", "apps_failed", "compute_late_requests")}
        exp = json.loads((run_dir / "expect.json").read_text())
        out["expectations_passed"] = exp.get("passed")
        out["expectations"] = [o.get("message") for o in exp.get("outcomes", [])]
        if keep is not None:  # the bed's directory goes with it
            import shutil

            shutil.copytree(run_dir, keep, symlinks=True)
            out["run_dir"] = str(keep)
    out["leftovers"] = bed.leftovers()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="the whole window, not the quick one")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="copy the gathered run directory here (a new directory)")
    ap.add_argument("--json", action="store_true", help="one JSON object")
    a = ap.parse_args()
    res = run(a.hosts, a.full, a.keep)
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}")
    return 0 if res["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
