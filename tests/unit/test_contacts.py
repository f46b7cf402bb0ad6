"""The contact plan: ION, HDTN and netemu JSON, read back and written out."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, Node

VECTORS = Path(__file__).resolve().parents[1] / "data"
EPOCH = datetime(2026, 6, 1, tzinfo=timezone.utc)


def tutorial_ion() -> str:
    text = (VECTORS / "cgr-tutorial.md").read_text()
    return re.search(r"```\n(.*?)```", text, re.S).group(1)


def small_plan() -> ContactPlan:
    nodes = {"sat-0-0": Node("sat-0-0", 1, "satellite"), "kashi": Node("kashi", 2, "ground", 2)}
    samples = ((10.25, 0.004), (60.0, 0.002), (100.5, 0.005))
    contacts = [
        Contact("sat-0-0", "kashi", 10.25, 100.5, 100e6, 0.005, "gsl", 0.01, 1.0, samples),
        Contact("kashi", "sat-0-0", 10.25, 100.5, 10e6, 0.005, "gsl", 0.0, 1.0, samples),
    ]
    return ContactPlan(EPOCH, nodes, contacts)


def test_tutorial_plan_reads_as_ion_defines_it():
    plan = ContactPlan.from_ion(tutorial_ion())
    assert len(plan) == 16
    assert sorted(n.ipn for n in plan.nodes.values()) == [1, 2, 3, 4, 5]
    c15 = [c for c in plan.contacts if c.src == "ipn:1" and c.dst == "ipn:5"][0]
    # rate 1 byte/s is 8 bit/s; a range declared once applies both ways
    assert (c15.start_s, c15.end_s, c15.rate_bps, c15.owlt_s) == (10, 20, 8.0, 1.0)
    c51 = [c for c in plan.contacts if c.src == "ipn:5" and c.dst == "ipn:1"][0]
    assert c51.owlt_s == 1.0
    assert c15.volume_bytes == 10.0


def test_netemu_json_round_trip_keeps_microseconds_and_samples():
    plan = small_plan()
    back = ContactPlan.from_json(plan.to_json())
    assert back.contacts == plan.contacts
    assert back.contacts[0].owlt_samples == plan.contacts[0].owlt_samples
    assert back.nodes == plan.nodes
    obj = json.loads(plan.to_json())
    assert obj["nodes"] == {"sat-0-0": 1, "kashi": 2}
    assert obj["epoch"] == "2026-06-01T00:00:00Z"
    assert set(obj["contacts"][0]) >= {"from", "to", "start_s", "end_s", "rate_bps", "owlt_s"}


def test_ion_export_shrinks_to_whole_seconds_inside_the_window():
    text = small_plan().to_ion()
    lines = [ln for ln in text.splitlines() if ln.startswith("a contact")]
    # 10.25..100.5 s becomes +11..+100, rates in bytes/s
    assert sorted(lines) == ["a contact +11 +100 1 2 12500000", "a contact +11 +100 2 1 1250000"]
    back = ContactPlan.from_ion(text)
    assert back.epoch == EPOCH
    assert set(back.nodes) == {"sat-0-0", "kashi"}
    assert all(c.owlt_s == 1 for c in back.contacts)  # ION's whole-second range, rounded up


def test_hdtn_export_uses_bits_per_second():
    obj = json.loads(small_plan().to_hdtn())
    c = [c for c in obj["contacts"] if c["source"] == 1][0]
    assert c["rateBitsPerSec"] == 100_000_000
    assert (c["startTime"], c["endTime"]) == (11, 100)


def test_owlt_interpolates_between_samples():
    c = small_plan().between("sat-0-0", "kashi")[0]
    assert c.owlt_at(10.25) == pytest.approx(0.004)
    assert c.owlt_at(35.125) == pytest.approx(0.003)
    assert c.owlt_at(500) == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("text", "needle", "line"),
    [
        ("a contact +0 +10 1 2\n", "expected 'a contact", 1),
        ("# ok\na contact +0 +x 1 2 100\n", "bad number", 2),
        ("a contact +10 +0 1 2 100\n", "end before start", 1),
        ("a contact +0 +10 0 2 100\n", "positive", 1),
        ("a range +0 +10 1 2 -1\n", "non-negative", 1),
        ("hello world\n", "unrecognised line", 1),
    ],
)
def test_malformed_ion_names_the_line(text, needle, line):
    with pytest.raises(InputError) as err:
        ContactPlan.from_ion(text, source="plan.ion")
    assert needle in str(err.value)
    assert err.value.line == line
    assert str(err.value).startswith(f"plan.ion:{line}: ")


def test_malformed_json_names_the_field():
    obj = json.loads(small_plan().to_json())
    good = obj["contacts"][1]["to"]
    obj["contacts"][1]["to"] = "nowhere"
    with pytest.raises(InputError, match=r"contacts\[1\].*'nowhere'"):
        ContactPlan.from_json(json.dumps(obj), source="p.json")
    obj["contacts"][1]["to"] = good
    obj["contacts"][0]["loss"] = 2
    with pytest.raises(InputError, match=r"contacts\[0\].*loss"):
        ContactPlan.from_json(json.dumps(obj), source="p.json")
    with pytest.raises(InputError, match="not valid JSON"):
        ContactPlan.from_json("{", source="p.json")


def test_load_reads_either_format(tmp_path):
    plan = small_plan()
    (tmp_path / "p.json").write_text(plan.to_json())
    (tmp_path / "p.ion").write_text(plan.to_ion())
    assert ContactPlan.load(tmp_path / "p.json").contacts == plan.contacts
    assert len(ContactPlan.load(tmp_path / "p.ion")) == 2
    with pytest.raises(InputError, match="cannot read"):
        ContactPlan.load(tmp_path / "missing.ion")
