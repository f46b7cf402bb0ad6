"""Baselines in real runs: ``--update-baseline`` stores a CGR run's metrics (and they
compare equal with that run), and the same scenario run with a worse router
(first-contact) fails the baseline check whose tolerance it exceeds — the JUnit failure
gives the baseline value, the new value and the tolerance — while a check whose
tolerance covers the change passes.

The scenario: the tiny geometry with agents only and one flow, sat-1 → bangalore while
bangalore sees sat-2 (its pass lasts from 64 s to 537 s; the window, 40-340 s, holds 46
bundles and 40 s for the last to arrive). CGR sends each bundle over the ISL sat-1 –
sat-2, then down; first-contact hands it to sat-1's first neighbour by name, sat-0, which
passes it on to sat-2: three hops instead of two, so half as many link bytes again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "topologies" / "regression" / "tiny-dtn.yaml"
NAME = "baseline-tiny"
TIGHT = "link_bytes_total vs baseline (+10%)"
LOOSE = "link_bytes_total vs baseline (+100%)"

RUN_PART = """
emulation: {start_s: 40, duration_s: 300, time_scale: 10, agents: all}
routing: cgr
ip_routing: none
traffic:
  seed: 3
  flows:
    - {name: down, from: sat-1, to: bangalore, interval_s: 5, size_bytes: 4000,
       lifetime_s: 3600, start_s: 70, end_s: 300}
expect:
  - {metric: traffic.delivery_ratio, op: ">=", value: 0.9}
  - {metric: traffic.delivery_ratio, baseline: -2%}
  - {metric: link_bytes_total, baseline: +10%}
  - {metric: link_bytes_total, baseline: +100%}
"""


def _scenario(tmp_path: Path) -> Path:
    text = TINY.read_text()
    geometry = text[:text.index("# --- the run and its expectations")]
    p = tmp_path / "baseline.yaml"
    p.write_text(geometry.replace("name: regression-tiny-dtn", f"name: {NAME}") + RUN_PART)
    return p


def _test(tmp: Path, sc: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
    run = f"tb{uuid.uuid4().hex[:5]}"
    r = subprocess.run(
        [sys.executable, "-m", "netemu", "test", str(sc), "--out", str(tmp / out),
         "--run-name", run, "--no-report", "--junit", str(tmp / f"{out}.xml"), *extra],
        capture_output=True, text=True, timeout=420, cwd=tmp)
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in ns.splitlines() if line.startswith(f"{run}-")]
    return r


def _cases(junit: Path) -> dict[str, ET.Element]:
    return {c.get("name", ""): c for c in ET.parse(junit).iter("testcase")}


def test_worse_router_fails_the_baseline_and_update_round_trips(tmp_path) -> None:
    from netemu.analysis import baseline as bl
    from netemu.plan.scenario import load_scenario

    sc = _scenario(tmp_path)
    base = tmp_path / "baseline"
    # 1. CGR: the baseline is written, and the run compares equal with it
    r = _test(tmp_path, sc, "cgr", "--baseline", str(base), "--update-baseline")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert f"baseline written: {base / (NAME + '.json')}" in r.stdout
    stored = json.loads((base / f"{NAME}.json").read_text())
    assert stored["routing"] == "cgr" and stored["scenario"] == NAME
    assert stored["scenario_sha256"] == bl.scenario_sha256(sc)
    metrics = json.loads((tmp_path / "cgr" / NAME / "metrics.json").read_text())
    assert stored["metrics"]["link_bytes_total"] == metrics["link_bytes_total"] > 0
    assert stored["metrics"]["traffic.delivery_ratio"] == metrics["traffic"]["delivery_ratio"]
    checks = bl.parse(load_scenario(sc).section("expect"))
    assert len(checks) == 3
    assert all(o.passed and not o.skipped
               for o in bl.compare(checks, bl.load(base, NAME), metrics))

    # 2. first-contact against CGR's baseline: three hops a bundle instead of two
    r = _test(tmp_path, sc, "fc", "--baseline", str(base), "--routing", "first-contact")
    assert r.returncode == 1, r.stdout[-4000:] + r.stderr[-2000:]
    assert "the baseline ran with routing cgr, this run with first-contact" in r.stdout
    fc = json.loads((tmp_path / "fc" / NAME / "metrics.json").read_text())
    assert fc["link_bytes_total"] > 1.3 * metrics["link_bytes_total"]
    cases = _cases(tmp_path / "fc.xml")
    failure = cases[TIGHT].find("failure")
    assert failure is not None
    msg = failure.get("message", "")
    assert f"baseline {metrics['link_bytes_total']:.6g}" in msg, msg
    assert f"new {fc['link_bytes_total']:.6g}" in msg and "tolerance +10%" in msg, msg
    # the tolerance that covers the change passes, and so does the delivery ratio
    assert cases[LOOSE].find("failure") is None
    assert cases["traffic.delivery_ratio vs baseline (-2%)"].find("failure") is None
    assert [name for name, c in cases.items() if c.find("failure") is not None] == [TIGHT]
