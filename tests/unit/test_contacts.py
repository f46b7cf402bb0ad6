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


# --- ranges as ION applies them -------------------------------------------------------


def test_contact_without_a_range_is_left_out_as_ion_does() -> None:
    """ION's CGR does not route over a contact that has no range (it does not know the
    light time); it must not become a contact with light time 0."""
    plan = ContactPlan.from_ion(
        "a contact +0 +100 1 2 1000\n"
        "a contact +0 +100 2 3 1000\n"
        "a range +0 +100 1 2 4\n", source="p.ion")
    assert [(c.src, c.dst, c.owlt_s) for c in plan.contacts] == [("ipn:1", "ipn:2", 4.0)]
    assert set(plan.nodes) == {"ipn:1", "ipn:2", "ipn:3"}  # its nodes stay known
    assert len(plan.warnings) == 1
    assert "p.ion:2" in plan.warnings[0] and "no range" in plan.warnings[0]


def test_range_covering_only_the_start_of_a_contact_applies() -> None:
    """ION takes the range in force when the contact starts (the earliest-starting range
    that has not ended by then), even if it ends before the contact does."""
    plan = ContactPlan.from_ion(
        "a contact +10 +100 1 2 1000\n"
        "a range +0 +50 1 2 3\n"
        "a range +50 +200 1 2 7\n"
        "a contact +60 +80 1 2 1000\n"
        "a contact +300 +400 1 2 1000\n")
    by_start = {c.start_s: c.owlt_s for c in plan.contacts}
    assert by_start == {10.0: 3.0, 60.0: 7.0}
    assert plan.warnings and "+300" in plan.warnings[0]


def test_range_ending_as_the_contact_starts_applies_and_one_starting_later_does_not() -> None:
    plan = ContactPlan.from_ion(
        "a contact +50 +100 1 2 1000\na range +0 +50 1 2 2\n"
        "a contact +50 +100 3 4 1000\na range +51 +100 3 4 2\n")
    assert [(c.src, c.owlt_s) for c in plan.contacts] == [("ipn:1", 2.0)]


def test_loading_a_large_ion_plan_is_not_quadratic() -> None:
    """27,504 contacts (the size that took 32 s) load in well under a second or two."""
    import time

    lines = []
    n = 0
    t = 0
    while n < 27_504:
        for a in range(1, 25):
            b = a % 24 + 1
            lines.append(f"a contact +{t} +{t + 500} {a} {b} 100000")
            lines.append(f"a range +{t} +{t + 500} {a} {b} 1")
            n += 1
        t += 600
    text = "\n".join(lines[:2 * 27_504]) + "\n"
    t0 = time.perf_counter()
    plan = ContactPlan.from_ion(text)
    elapsed = time.perf_counter() - t0
    assert len(plan) == 27_504 and not plan.warnings
    assert elapsed < 5.0, f"{elapsed:.1f} s"


def test_contacts_ending_before_they_start_are_skipped_with_a_warning(tmp_path, capsys):
    """Published plans (HDTN's among them) have such contacts: the rest of the file
    loads, each skipped one is named; a strict load refuses the file at that line."""
    from netemu.cli import main

    text = ("a contact +0 +100 1 2 1000\na contact +50 +10 1 2 1000\n"
            "a contact +0 +100 2 3 1000\na range +0 +100 1 2 1\na range +0 +100 2 3 1\n"
            "a range +80 +20 1 3 1\n")
    plan = ContactPlan.from_ion(text, source="plan.ion")
    assert [(c.src, c.dst, c.start_s) for c in plan.contacts] == [
        ("ipn:1", "ipn:2", 0.0), ("ipn:2", "ipn:3", 0.0)]
    assert len(plan.warnings) == 1
    w = plan.warnings[0]
    assert "2 contact(s) or range(s) ending before they start skipped" in w
    assert "plan.ion:2" in w and "plan.ion:6" in w
    with pytest.raises(InputError) as err:
        ContactPlan.from_ion(text, source="plan.ion", strict=True)
    assert err.value.line == 2 and "ends before it starts" in str(err.value)
    obj = json.loads(small_plan().to_json())
    obj["contacts"][1]["start_s"], obj["contacts"][1]["end_s"] = 50.0, 10.0
    plan = ContactPlan.from_json(json.dumps(obj), source="p.json")
    assert len(plan.contacts) == len(obj["contacts"]) - 1
    assert "p.json: contacts[1]" in plan.warnings[0]
    with pytest.raises(InputError, match=r"contacts\[1\].*end_s"):
        ContactPlan.from_json(json.dumps(obj), source="p.json", strict=True)
    # netemu route: a warning on stderr, the route found; --strict-plan: exit 2, no traceback.
    f = tmp_path / "plan.ion"
    f.write_text(text)
    assert main(["route", str(f), "--from", "1", "--to", "3"]) == 0
    err_text = capsys.readouterr().err
    assert "warning: 2 contact(s) or range(s) ending before they start" in err_text
    assert main(["route", str(f), "--from", "1", "--to", "3", "--strict-plan"]) == 2
    err_text = capsys.readouterr().err
    assert f"{f}:2" in err_text and "Traceback" not in err_text


def test_ion_and_hdtn_split_a_contact_at_its_rate_steps():
    """A contact whose rate steps along the pass is one ION/HDTN contact per rate, in whole
    seconds: a second with a step takes the lower rate, a stretch at rate 0 is left out,
    and no piece promises more than the contact carries at any instant."""
    steps = ((10.25, 8e6), (35.5, 16e6), (60.0, 4e6), (80.3, 0.0), (90.0, 8e6))
    c = Contact("sat-0-0", "kashi", 10.25, 100.5, 0.0, 0.005, "gsl", rate_samples=steps)
    c = Contact("sat-0-0", "kashi", 10.25, 100.5, c.volume_bytes * 8 / c.duration_s, 0.005,
                "gsl", rate_samples=steps)
    nodes = {"sat-0-0": Node("sat-0-0", 1, "satellite"), "kashi": Node("kashi", 2, "ground", 2)}
    plan = ContactPlan(EPOCH, nodes, [c])
    want = [(11, 36, 8e6), (36, 60, 16e6), (60, 80, 4e6), (90, 100, 8e6)]
    lines = [ln for ln in plan.to_ion().splitlines() if ln.startswith("a ")]
    assert lines == [f"a contact +{a} +{b} 1 2 {int(r / 8)}" for a, b, r in want] + \
        ["a range +11 +100 1 2 1"]
    hd = plan.to_hdtn_obj()["contacts"]
    assert [(h["contact"], h["startTime"], h["endTime"], h["rateBitsPerSec"]) for h in hd] == \
        [(i, a, b, int(r)) for i, (a, b, r) in enumerate(want)]
    back = ContactPlan.from_ion(plan.to_ion())
    assert [(x.start_s, x.end_s, x.rate_bps) for x in back.contacts] == want
    for x in back.contacts:
        t = x.start_s
        while t < x.end_s:
            assert x.rate_bps <= c.rate_at(t), t
            t += 0.05
    assert sum(x.volume_bytes for x in back.contacts) <= c.volume_bytes
