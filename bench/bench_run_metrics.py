"""metrics.json and the report of a large synthetic run: how long they take.

    .venv/bin/python bench/bench_run_metrics.py --plan PLAN.json [--flows 1000]
        [--rate-per-s 0.1] [--window-s 600] [--start-s 3600] [--counters-s 10] [--report]

Writes a run directory (in a temporary folder) as a constellation run with traffic flows
would leave it: plan.json (the given plan), run.json (the window), traffic.json (FLOWS
Poisson flows between random pairs of ground stations, seeded), every node's
``traffic.jsonl`` (each send; each delivery 0.3 s after CGR's projected arrival for 99 %
of the sends that arrive inside the window, a line repeated now and then as after a
restart), and events.jsonl with every node's ``counters/<node>`` sample every
COUNTERS_S seconds. Then times ``metrics.write`` (and ``report.build`` with
``--report``) and prints one JSON object: sends, deliveries, counter samples, seconds
for each step, and the traffic totals it found.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from netemu.analysis import metrics, report
from netemu.plan.contacts import ContactPlan
from netemu.plan.traffic import Flow
from netemu.routing.projection import Projector


def make_run(run: Path, plan_path: Path, n_flows: int, rate: float, window: tuple[float, float],
             counters_s: float, seed: int = 1) -> dict[str, int]:
    run.mkdir(parents=True)
    shutil.copy(plan_path, run / "plan.json")
    plan = ContactPlan.load(str(plan_path))
    grounds = [n for n, node in plan.nodes.items() if node.kind == "ground"]
    rng = random.Random(seed)
    start, end = window
    flows = []
    for i in range(n_flows):
        src, dst = rng.sample(grounds, 2)
        flows.append(Flow(i, "gateways", f"gateways:{src}>{dst}#{i}", src, dst, "poisson",
                          (1000, 64000), 1, 600.0, start, end, seed * 1000 + i, None, rate,
                          0.0))
    (run / "traffic.json").write_text(json.dumps({"service": 7,
                                                  "flows": [asdict(f) for f in flows]}))
    (run / "run.json").write_text(json.dumps({"window": {"start_s": start,
                                                         "duration_s": end - start}}))
    proj = Projector(plan)
    lines: dict[str, list[str]] = {n: [] for n in plan.nodes}
    sends = deliveries = 0
    for f in flows:
        for s in f.sends(start, end):
            sends += 1
            lines[f.src].append(json.dumps({"ev": "sent", "flow": f.id, "t_s": s.t_s,
                                            "size": s.size_bytes, "id": f"b{sends}"}))
            if rng.random() < 0.001:
                lines[f.src].append(lines[f.src][-1])
            a = proj.arrival(f.src, f.dst, s.t_s, s.size_bytes, 1, 600.0)
            if a is not None and a + 0.3 < end and rng.random() < 0.99:
                deliveries += 1
                lines[f.dst].append(json.dumps({"ev": "delivered", "flow": f.id,
                                                "sent_s": s.t_s, "t_s": a + 0.3,
                                                "size": s.size_bytes}))
    for node, ls in lines.items():
        if ls:
            d = run / "agents" / node
            d.mkdir(parents=True)
            (d / "traffic.jsonl").write_text("\n".join(ls) + "\n")
    samples = 0
    with open(run / "events.jsonl", "w") as ev:
        t = start
        while t <= end:
            for i, node in enumerate(plan.nodes):
                samples += 1
                p = {"t_s": t, "grid_s": t, "received": int(t), "forwarded": int(t),
                     "delivered": 0, "deleted": 0, "expired": 0, "sent": 0, "refused": 0,
                     "stored_bundles": (i * 7 + int(t)) % 50, "stored_bytes": 1000 * i,
                     "queued": 0, "sessions_up": 3}
                ev.write(json.dumps({"t_s": t, "wall": 0.0, "topic": f"netemu/b/counters/{node}",
                                     "payload": p}) + "\n")
            t += counters_s
    return {"sends": sends, "deliveries": deliveries, "counter_samples": samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", type=Path, required=True)
    ap.add_argument("--flows", type=int, default=1000)
    ap.add_argument("--rate-per-s", type=float, default=0.1)
    ap.add_argument("--window-s", type=float, default=600.0)
    ap.add_argument("--start-s", type=float, default=3600.0)
    ap.add_argument("--counters-s", type=float, default=10.0)
    ap.add_argument("--report", action="store_true")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    try:
        run = tmp / "run"
        t0 = time.monotonic()
        made = make_run(run, a.plan, a.flows, a.rate_per_s,
                        (a.start_s, a.start_s + a.window_s), a.counters_s)
        out: dict = {**made, "make_s": round(time.monotonic() - t0, 1)}
        t0 = time.monotonic()
        metrics.write(run)
        out["metrics_s"] = round(time.monotonic() - t0, 2)
        m = json.loads((run / "metrics.json").read_text())
        tr = m["traffic"]
        out["projection_s"] = tr["projection"]["seconds"]
        out["traffic"] = {k: tr[k] for k in ("sent", "delivered", "expected",
                                             "expected_delivered", "expected_delivery_ratio",
                                             "latency_vs_projection_s", "duplicates")}
        out["metrics_json_bytes"] = (run / "metrics.json").stat().st_size
        if a.report:
            t0 = time.monotonic()
            report.build(run)
            out["report_s"] = round(time.monotonic() - t0, 2)
        print(json.dumps(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
