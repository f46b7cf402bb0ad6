"""Inference figures: the ONNX detector against the numpy one, a container's start with
onnxruntime inside, and the flagship's query latency split with and without ISLs.

    sudo .venv/bin/python bench/bench_inference.py [--json] [--tiles 500] [--containers 4]
                                                   [--flagship | --runs WITH_ISL NO_ISL]

- per-tile CPU cost on one core (``OMP_NUM_THREADS=1``, onnxruntime on one thread), one
  tile at a time and in batches of 32, and the largest score difference;
- container start: ``AppRunner.start`` → the app inside a podman container in a network
  namespace has imported onnxruntime and loaded ``detector.onnx`` (needs root and podman;
  ``--containers 0`` skips it);
- with ``--flagship``: ``netemu demo --quick`` of three-body-12 twice, with and without
  ISLs (about 4 wall minutes each here), then each run's query latency p50/p95 and the
  p95 of its network, queueing and compute parts from ``metrics.json``; ``--runs A B``
  reads two existing run directories instead.

``--json`` prints one JSON object instead of lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "apps" / "eo-filter"
sys.path.insert(0, str(APP))
sys.path.insert(0, str(APP.parent / "_shared"))

import numpy as np  # noqa: E402
from detector import DEFAULT_MODEL, Detector  # noqa: E402
from onnx_detector import DEFAULT_ONNX, OnnxDetector  # noqa: E402
from tiles import make_dataset  # noqa: E402

PROBE = f"""
import pathlib, os, sys, time
sys.path.insert(0, {str(APP)!r}); sys.path.insert(0, {str(APP.parent / "_shared")!r})
from onnx_detector import OnnxDetector
det = OnnxDetector({str(DEFAULT_ONNX)!r})
pathlib.Path(os.environ['NETEMU_APP_DIR'], 'up').write_text(det.runtime)
time.sleep(60)
"""


def _cpu_per_tile_ms(score: Any, x: np.ndarray, batch: int) -> float:
    score(x[:batch])  # warm up (session, caches)
    t0 = time.process_time()
    for i in range(0, len(x), batch):
        score(x[i:i + batch])
    return 1000.0 * (time.process_time() - t0) / len(x)


def bench_tiles(n: int) -> dict[str, Any]:
    x, _ = make_dataset(9001, n)
    ref = Detector.load(DEFAULT_MODEL)
    onnx = OnnxDetector(DEFAULT_ONNX)
    diff = np.abs(onnx.score(x) - ref.score(x))
    return {
        "tiles": n,
        "numpy_ms_per_tile": {"batch_1": round(_cpu_per_tile_ms(ref.score, x, 1), 3),
                              "batch_32": round(_cpu_per_tile_ms(ref.score, x, 32), 3)},
        "onnxruntime_ms_per_tile": {"batch_1": round(_cpu_per_tile_ms(onnx.score, x, 1), 3),
                                    "batch_32": round(_cpu_per_tile_ms(onnx.score, x, 32), 3)},
        "onnxruntime": onnx.runtime,
        "ops_per_tile": onnx.ops_per_tile,
        "score_diff_max": float(diff.max()),
        "score_diff_over_1e-4": int((diff > 1e-4).sum()),
    }


def bench_containers(count: int) -> dict[str, Any]:
    from netemu.run.apps import AppRunner, NodeInfo, plan_apps

    ns = f"bin{uuid.uuid4().hex[:4]}"
    run = f"binf{uuid.uuid4().hex[:4]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "apps" / "probe"
            d.mkdir(parents=True)
            (d / "probe.py").write_text(PROBE)
            (d / "manifest.yaml").write_text(
                "command: [python, probe.py]\nmode: container\nnodes: all\n"
                "resources: {cpus: 1, memory_mb: 256}\nenvironment: {OMP_NUM_THREADS: '1'}\n")
            inst = plan_apps(["probe"], [NodeInfo(f"n{i}", "satellite") for i in range(count)],
                             apps_dir=d.parent)
            runner = AppRunner(run, Path(tmp) / "run")
            try:
                t0 = time.perf_counter()
                runner.prepare_images(inst)
                image_s = time.perf_counter() - t0
                lat = []
                runtime = ""
                for i in inst:  # one at a time: the start of one container
                    t0 = time.perf_counter()
                    ra = runner.start(i, f"/run/netns/{ns}", {})
                    while not (ra.out_dir / "up").exists():
                        if ra.poll() is not None:
                            raise SystemExit("probe exited: "
                                             + (ra.out_dir / "stderr.log").read_text()[-2000:])
                        time.sleep(0.01)
                    lat.append(time.perf_counter() - t0)
                    runtime = (ra.out_dir / "up").read_text()
                runner.stop_all(grace_s=2)
            finally:
                runner.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    return {"containers": count, "image_ready_s": round(image_s, 2),
            "start_to_model_loaded_s": {"median": round(statistics.median(lat), 2),
                                        "max": round(max(lat), 2)},
            "runtime_inside": runtime}


SPLIT_KEYS = ("queries_sent", "queries_answered", "query_latency_p50_s", "query_latency_p95_s",
              "query_network_p95_s", "query_queueing_p95_s", "query_compute_p95_s",
              "compute_requests", "compute_late_requests", "apps_failed")


def run_split(run_dir: Path) -> dict[str, Any]:
    m = json.loads((run_dir / "metrics.json").read_text())
    flat = {**m, **m.get("summary", {})} if isinstance(m.get("summary"), dict) else m
    out = {k: flat.get(k) for k in SPLIT_KEYS}
    modes = sorted({json.loads(p.read_text()).get("mode", "?") + ":" + p.parent.parent.name
                    for p in run_dir.glob("apps/*/*/usage.json")})
    out["app_modes"] = modes
    out["run_dir"] = str(run_dir)
    return out


def run_flagship(no_isl: bool) -> Path:
    out = ROOT / "runs" / f"bench-inference-{'no-isl' if no_isl else 'isl'}-{uuid.uuid4().hex[:6]}"
    cmd = [sys.executable, "-m", "netemu.cli", "demo", "topologies/three-body-12.yaml", "--quick",
           "--no-report", "--out", str(out)] + (["--no-isl"] if no_isl else [])
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--tiles", type=int, default=500)
    ap.add_argument("--containers", type=int, default=4, help="0: skip (needs root, podman)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--flagship", action="store_true", help="run the quick flagship twice")
    g.add_argument("--runs", nargs=2, type=Path, metavar=("WITH_ISL", "NO_ISL"))
    a = ap.parse_args()
    out: dict[str, Any] = {"per_tile": bench_tiles(a.tiles)}
    if a.containers:
        out["container_start"] = bench_containers(a.containers)
    runs = a.runs
    if a.flagship:
        runs = [run_flagship(False), run_flagship(True)]
    if runs:
        out["query_split"] = {"with_isl": run_split(runs[0]), "no_isl": run_split(runs[1])}
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    t = out["per_tile"]
    print(f"per tile, one core ({t['tiles']} tiles): numpy {t['numpy_ms_per_tile']['batch_1']} ms "
          f"(batch 32: {t['numpy_ms_per_tile']['batch_32']} ms), {t['onnxruntime']} "
          f"{t['onnxruntime_ms_per_tile']['batch_1']} ms (batch 32: "
          f"{t['onnxruntime_ms_per_tile']['batch_32']} ms); {t['ops_per_tile'] / 1e6:.1f} M ops "
          f"per tile; largest score difference {t['score_diff_max']:.2g}")
    if "container_start" in out:
        c = out["container_start"]
        print(f"container start → onnxruntime model loaded ({c['containers']}, one at a time): "
              f"median {c['start_to_model_loaded_s']['median']} s, max "
              f"{c['start_to_model_loaded_s']['max']} s ({c['runtime_inside']} inside)")
    for name, r in out.get("query_split", {}).items():
        print(f"{name}: answered {r['queries_answered']}/{r['queries_sent']}, latency p50 "
              f"{r['query_latency_p50_s']} s, p95 {r['query_latency_p95_s']} s; p95 network "
              f"{r['query_network_p95_s']} s, queueing {r['query_queueing_p95_s']} s, compute "
              f"{r['query_compute_p95_s']} s; late requests {r['compute_late_requests']} of "
              f"{r['compute_requests']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
