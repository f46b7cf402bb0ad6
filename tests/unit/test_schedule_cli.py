"""``netemu plan`` on the shipped tiny and three-body scenarios, and converting a plan."""

from __future__ import annotations

import json
from pathlib import Path

from netemu.cli import main

ROOT = Path(__file__).resolve().parents[2]
TOPO = ROOT / "topologies"


def test_plan_json_contract(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiny.json"
    assert main(["plan", str(TOPO / "tiny.yaml"), "--format", "json", "-o", str(out)]) == 0
    obj = json.loads(out.read_text())
    assert obj["epoch"] == "2026-06-01T00:00:00Z"
    assert obj["nodes"] == {"sat-0": 1, "sat-1": 2, "sat-2": 3, "bangalore": 4, "kashi": 5}
    for c in obj["contacts"]:
        assert {"from", "to", "start_s", "end_s", "rate_bps", "owlt_s"} <= set(c)
    gsl = [c for c in obj["contacts"] if c["kind"] == "gsl"]
    isl = [c for c in obj["contacts"] if c["kind"] == "isl"]
    # within 10 minutes of the epoch there are ISLs and a ground pass
    assert any(c["start_s"] < 600 for c in gsl) and any(c["start_s"] < 600 for c in isl)
    assert "18 contacts" in capsys.readouterr().err


def test_plan_ion_and_hdtn_on_three_body(tmp_path: Path, capsys) -> None:
    ion = tmp_path / "tb.ion"
    assert main(["plan", str(TOPO / "three-body-12.yaml"), "-f", "ion", "-o", str(ion),
                 "--duration", "7200"]) == 0
    lines = ion.read_text().splitlines()
    contacts = [ln for ln in lines if ln.startswith("a contact")]
    ranges = [ln for ln in lines if ln.startswith("a range")]
    assert ranges and len(contacts) >= len(ranges)

    def nums(ln: str) -> tuple[int, ...]:  # start, end, from, to
        return tuple(int(x.lstrip("+")) for x in ln.split()[2:6])

    # a pass with rate samples is several contacts (one per rate), each inside its range,
    # and every range has its contacts
    spans, windows = [nums(ln) for ln in contacts], [nums(ln) for ln in ranges]
    for s, e, f, t in spans:
        assert any((f, t) == (rf, rt) and a <= s and e <= b for a, b, rf, rt in windows)
    for a, b, rf, rt in windows:
        assert any((f, t) == (rf, rt) and a <= s < b for s, e, f, t in spans)
    assert "a contact +0 +7200 1 2 12500000000" in contacts  # 100 Gbit/s ring ISL, bytes/s
    assert main(["plan", str(TOPO / "three-body-12.yaml"), "-f", "hdtn", "-q",
                 "--duration", "3600"]) == 0
    hd = json.loads(capsys.readouterr().out)
    assert hd["contacts"] and {"source", "dest", "startTime", "endTime", "rateBitsPerSec",
                               "owlt"} <= set(hd["contacts"][0])
    # an ION plan converts back to JSON with its node names
    assert main(["plan", str(ion), "-f", "json", "-q"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["nodes"]["tb-0"] == 1 and obj["nodes"]["kashi"] == 13
    assert len(obj["contacts"]) == len(contacts)
    assert {c["kind"] for c in obj["contacts"]} == {"isl", "gsl"}


def test_plan_errors(tmp_path: Path, capsys) -> None:
    assert main(["plan", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["plan", str(TOPO / "tiny.yaml"), "--start", "99999"]) == 2
    assert "--start" in capsys.readouterr().err
