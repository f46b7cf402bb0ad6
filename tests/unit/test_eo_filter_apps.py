"""The three apps end to end as real processes, with a spool directory standing in for DTN:
eo-filter → downlink (tiles, index), orbit-query client → service → answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
T0_WALL = time.time()  # one scenario clock for every app, as under netemu


def _plan(run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "plan.json").write_text(json.dumps({
        "epoch": "2026-01-01T00:00:00Z",
        "nodes": {"sat-1": 1, "sat-2": 2, "gs-a": 101},
        "node_info": {"sat-1": {"kind": "satellite"}, "sat-2": {"kind": "satellite"},
                      "gs-a": {"kind": "ground"}},
        "contacts": [],
    }))


def _start(run: Path, app: str, script: str, node: str, *args: str) -> subprocess.Popen:
    out = run / "apps" / app / node
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "NETEMU_NODE": node, "NETEMU_APP_DIR": str(out),
           "NETEMU_EPOCH": "2026-01-01T00:00:00Z", "NETEMU_T0_WALL": f"{T0_WALL:.6f}",
           "NETEMU_TIME_SCALE": "100", "EO_DTN_SPOOL": str(run / "spool")}
    for k in ("NETEMU_MQTT_SOCKET", "NETEMU_DTN_SOCKET", "NETEMU_BP_SOCKET", "NETEMU_APP_PARAMS"):
        env.pop(k, None)
    return subprocess.Popen([PY, str(ROOT / "apps" / app / script), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_apps_end_to_end_over_spool(tmp_path):
    run = tmp_path / "run"
    _plan(run)
    procs = []
    try:
        down = _start(run, "downlink", "downlink.py", "gs-a")
        svc = _start(run, "orbit-query", "orbit_query.py", "sat-1")  # role auto → service
        procs += [down, svc]
        eo = _start(run, "eo-filter", "eo_filter.py", "sat-1", "--max-tiles", "60",
                    "--vessel-prob", "0.3", "--summary-every-s", "200")
        procs.append(eo)
        assert eo.wait(timeout=120) == 0, eo.stderr.read()
        cli = _start(run, "orbit-query", "orbit_query.py", "gs-a", "--targets", "sat-1",
                     "--start-s", "0", "--interval-s", "50", "--count", "3", "--drain-s", "200")
        procs.append(cli)
        assert cli.wait(timeout=120) == 0, cli.stderr.read()
        time.sleep(1.0)  # downlink polls the spool every 0.2 s
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=30)
    assert down.returncode == 0 and svc.returncode == 0, (down.stderr.read(), svc.stderr.read())

    eo_res = json.loads((run / "apps/eo-filter/sat-1/result.json").read_text())
    assert eo_res["tiles"] == 60 and eo_res["bytes_captured"] == 60 * 4096
    assert 0 < eo_res["bytes_sent"] < eo_res["bytes_captured"]
    assert eo_res["tile_bundles"] == eo_res["detections"] > 0

    dl = json.loads((run / "apps/downlink/gs-a/result.json").read_text())
    assert dl["tiles_received"] == eo_res["tile_bundles"]
    assert dl["bytes_received"] == eo_res["bytes_sent"]
    index = [json.loads(x) for x in (run / "apps/downlink/gs-a/index.jsonl").read_text().splitlines()]
    assert len(index) == dl["tiles_received"]
    assert (run / "apps/downlink/gs-a" / index[0]["file"]).read_bytes().startswith(b"P5 64 64")

    q = json.loads((run / "apps/orbit-query/gs-a/result.json").read_text())
    assert q["queries_sent"] == 3 and q["answers_received"] == 3
    assert all(lat >= 0 for lat in q["latencies_s"])
    # the service ran the model over every stored tile (global region, long window): the
    # same tiles flagged as eo-filter flagged when it captured them
    last = q["queries"][-1]
    assert last["tiles_scanned"] == 60 and last["count"] == eo_res["detections"]
    for one in q["queries"]:  # the latency's split adds up
        assert one["network_s"] + one["service_s"] == pytest.approx(one["latency_s"], abs=0.01)
        assert one["network_s"] > 0 and one["compute_s"] > 0
