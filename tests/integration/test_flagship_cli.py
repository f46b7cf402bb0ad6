"""``netemu test`` on a real (short) emulation: a failed expectation fails the command and
is named in the JUnit XML; a met one passes."""

from __future__ import annotations

import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _scenario(tmp_path: Path, expect: str) -> Path:
    """tiny.yaml, a 60 s window at x10, links and telemetry only (no agents, no apps)."""
    text = (ROOT / "topologies" / "tiny.yaml").read_text()
    text += (
        "\nemulation: {start_s: 0, duration_s: 60, time_scale: 10, agents: false}\n"
        f"expect:\n{expect}"
    )
    p = tmp_path / "tiny-check.yaml"
    p.write_text(text)
    return p


def _netemu_test(tmp_path: Path, scenario: Path) -> tuple[subprocess.CompletedProcess, Path]:
    junit = tmp_path / "junit.xml"
    r = subprocess.run(
        [sys.executable, "-m", "netemu", "test", str(scenario), "--junit", str(junit),
         "--out", str(tmp_path / "runs"), "--no-report",
         "--run-name", f"trun{uuid.uuid4().hex[:4]}"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
    )
    return r, junit


def test_failed_expectation_exits_nonzero_with_a_junit_failure_naming_it(tmp_path) -> None:
    sc = _scenario(tmp_path,
                   "  - {metric: traffic_outside_contacts_bytes, op: '==', value: 0}\n"
                   "  - {metric: duration_s, op: '>=', value: 1000000}\n")
    r, junit = _netemu_test(tmp_path, sc)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "FAIL  duration_s >= 1e+06" in out and "PASS  traffic_outside_contacts_bytes" in out
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1" and root.get("errors") == "0"
    cases = {c.get("name"): c for c in root.iter("testcase")}
    failed = cases["duration_s >= 1e+06"].find("failure")
    assert failed is not None and "duration_s >= 1e+06" in failed.get("message")
    assert cases["traffic_outside_contacts_bytes == 0"].find("failure") is None
    # the run itself happened: link telemetry was recorded over MQTT during the window
    events = (tmp_path / "runs" / "tiny" / "events.jsonl").read_text().splitlines()
    assert any('"event":"up"' in e for e in events)


def test_met_expectations_exit_zero(tmp_path) -> None:
    sc = _scenario(tmp_path, "  - {metric: duration_s, op: '>', value: 10}\n")
    r, junit = _netemu_test(tmp_path, sc)
    assert r.returncode == 0, r.stdout + r.stderr
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "0" and root.get("tests") == "1"


def test_unknown_metric_is_refused_before_anything_runs(tmp_path) -> None:
    sc = _scenario(tmp_path, "  - {metric: delivery_ratoi, op: '>=', value: 0.9}\n")
    r, junit = _netemu_test(tmp_path, sc)
    assert r.returncode == 2
    assert "delivery_ratoi" in r.stderr and "delivery_ratio" in r.stderr  # suggestion
    assert "Traceback" not in r.stderr
    assert not junit.exists() and not (tmp_path / "runs").exists()
