"""The flagship run end to end on the tiny scenario: the run directory a user (and the
report) relies on, and a clean stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _scenario(tmp_path: Path, duration_s: float) -> Path:
    text = (ROOT / "topologies" / "tiny.yaml").read_text()
    text += (
        f"\nemulation: {{start_s: 0, duration_s: {duration_s}, time_scale: 10}}\n"
        "apps:\n"
        "  - eo-filter\n"
        "  - downlink\n"
        "  - {name: orbit-query, params: {interval_s: 30, start_s: 20}}\n"
    )
    p = tmp_path / "tiny-apps.yaml"
    p.write_text(text)
    return p


def _leftovers(run: str) -> list[str]:
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    left = [line.split()[0] for line in ns.splitlines() if line.startswith(f"{run}-")]
    left += [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/netemu/{run}")]
    ps = subprocess.run(["pgrep", "-af", f"netemu-mqtt-{run}-|--config .*/{run}"],
                        capture_output=True, text=True).stdout
    left += [line for line in ps.splitlines() if "pgrep" not in line]
    return left


def test_run_directory_holds_what_the_contract_promises(tmp_path) -> None:
    run = f"trun{uuid.uuid4().hex[:4]}"
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "netemu", "demo", str(_scenario(tmp_path, 300)), "--out",
         str(out), "--run-name", run],
        capture_output=True, text=True, timeout=400, cwd=tmp_path,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # it ends with the report's path and headline figures
    assert f"report: {out / 'report' / 'index.html'}" in r.stdout
    assert (out / "report" / "index.html").exists()
    for name in ("scenario.yaml", "plan.json", "events.jsonl", "metrics.json", "run.json"):
        assert (out / name).exists(), name
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    topics = {e["topic"].split("/")[2] for e in events}
    assert {"link", "app", "run"} <= topics
    assert all(e["topic"].startswith(f"netemu/{run}/") for e in events)
    assert all(isinstance(e["t_s"], (int, float)) and e["wall"] > 0 for e in events)
    # every app instance ran in its host and was stopped cleanly at the end of the window
    usages = sorted((out / "apps").glob("*/*/usage.json"))
    assert len(usages) == 3 + 2 + 5  # eo-filter on 3 sats, downlink on 2 stations, query on 5
    for u in usages:
        rec = json.loads(u.read_text())
        assert rec["ok"], rec
        assert rec["cpu_s"] > 0 and rec["max_rss_bytes"] > 0 and rec["limits"]["cpus"] > 0
    # agents: one config and log per node
    assert len(list((out / "agents").glob("*/agent.json"))) == 5
    m = json.loads((out / "metrics.json").read_text())
    assert m["apps_failed"] == 0
    assert m["duration_s"] > 200
    meta = json.loads((out / "run.json").read_text())
    assert meta["run"] == run and meta["errors"] == [] and not meta["interrupted"]
    assert _leftovers(run) == []


def test_ctrl_c_stops_everything_and_keeps_what_was_measured(tmp_path) -> None:
    run = f"trun{uuid.uuid4().hex[:4]}"
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "netemu", "demo", str(_scenario(tmp_path, 1200)), "--out",
         str(out), "--run-name", run, "--no-report"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 180
        usage_seen = False
        while time.monotonic() < deadline:
            if list((out / "apps").glob("*/*/stdout.log")) and (out / "events.jsonl").exists():
                usage_seen = True
                break
            time.sleep(0.5)
        assert usage_seen, "the run never started its apps"
        time.sleep(5)
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, output[-3000:]
    assert "stopped cleanly" in output
    meta = json.loads((out / "run.json").read_text())
    assert meta["interrupted"]
    assert (out / "metrics.json").exists()
    for u in (out / "apps").glob("*/*"):
        assert (u / "usage.json").exists(), u
    assert _leftovers(run) == []
    assert not any(p.name.startswith(f"netemu-{run}-") for p in Path("/tmp").iterdir()
                   if os.path.isdir(p))
