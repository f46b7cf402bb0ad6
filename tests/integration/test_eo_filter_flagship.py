"""The three apps on a real emulation (tiny.yaml: 3 satellites, 2 stations, CGR agents):
tiles filtered onboard reach the ground over DTN, queries are answered from orbit by
inference in containers, and the report shows it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_apps_over_real_dtn(tmp_path):
    sc = ROOT / "topologies" / "regression" / "tiny-dtn.yaml"
    out = tmp_path / "runs"
    r = subprocess.run(
        [sys.executable, "-m", "netemu", "test", str(sc), "--out", str(out),
         "--run-name", f"teo{uuid.uuid4().hex[:4]}", "--junit", str(tmp_path / "junit.xml")],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = next(p.parent for p in out.rglob("metrics.json"))
    m = json.loads((run / "metrics.json").read_text())
    eo = [json.loads(p.read_text()) for p in run.glob("apps/eo-filter/*/result.json")]
    assert len(eo) == 3 and all(e["tiles"] > 0 for e in eo)
    dl = json.loads((run / "apps/downlink/kashi/result.json").read_text())
    assert dl["tiles_received"] > 0  # tiles crossed the emulated links as bundles
    index = [json.loads(x) for x in (run / "apps/downlink/kashi/index.jsonl").read_text().splitlines()]
    assert all((run / "apps/downlink/kashi" / rec["file"]).read_bytes()[:2] == b"P5" for rec in index)
    assert m["queries_answered"] > 0 and m["query_latency_p50_s"] is not None
    assert m["bytes_sent"] < m["bytes_captured"]
    # eo-filter and the orbit-query service ran as podman containers on the satellites,
    # with the ONNX model under onnxruntime inside, on the declared compute
    sats = sorted(p.parent.name for p in run.glob("apps/eo-filter/*/result.json"))
    for app in ("eo-filter", "orbit-query"):
        for sat in sats:
            usage = json.loads((run / "apps" / app / sat / "usage.json").read_text())
            assert usage["mode"] == "container" and usage["container"], usage
            res = json.loads((run / "apps" / app / sat / "result.json").read_text())
            assert res["runtime"].startswith("onnxruntime "), res
            assert res["compute"]["ops_per_s"] == 744e12
    assert all(e["model"].endswith("detector.onnx") for e in eo)
    client = json.loads((run / "apps/orbit-query/kashi/result.json").read_text())
    answered = [q for q in client["queries"] if q["latency_s"] is not None]
    assert answered and all(q["tiles_scanned"] > 0 for q in answered)
    # 9.4 M operations per tile at 744 TOPS: microseconds of modelled compute per query
    assert all(0 < q["compute_s"] < 1e-3 for q in answered)
    assert m["query_network_p95_s"] is not None
    assert (run / "report" / "index.html").exists()
