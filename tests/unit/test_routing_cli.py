"""``netemu route``: the CGR route and its alternatives, from an ION plan or a scenario."""

from __future__ import annotations

import json
from pathlib import Path

from test_routing_cgr import TUTORIAL_ION

from netemu.cli import main

ROOT = Path(__file__).resolve().parents[2]


def ion_file(tmp_path: Path, unit_bytes: int = 1) -> Path:
    lines = []
    for line in TUTORIAL_ION.splitlines():
        p = line.split()
        if p[1] == "contact":
            p[6] = str(int(p[6]) * unit_bytes)
        lines.append(" ".join(p))
    f = tmp_path / "tutorial.ion"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_route_table_for_the_tutorial(tmp_path, capsys):
    f = ion_file(tmp_path, unit_bytes=1000)
    rc = main(["route", str(f), "--from", "1", "--to", "ipn:5", "--at", "0",
               "--size", "1000", "--deadline", "60", "-k", "10"])
    out = capsys.readouterr().out
    assert rc == 0
    rows = [line for line in out.splitlines() if line[:2].strip()[:1] in ("*", "1", "2", "3", "4", "5", "6", "7")
            and "→" in line and "contact" not in line]
    assert len(rows) == 7
    assert rows[0].startswith("*1") and "chosen" in rows[0]
    assert "ipn:1 → ipn:3 → ipn:4 → ipn:5" in rows[0]
    assert "chosen: route 1, next hop ipn:3" in out


def test_route_json_lists_seven_routes(tmp_path, capsys):
    f = ion_file(tmp_path, unit_bytes=1000)
    rc = main(["route", str(f), "--from", "ipn:1", "--to", "5", "--size", "1000", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [r["best_case_arrival_s"] for r in data["routes"]] == [3, 4, 11, 31, 31, 51, 51]
    assert data["routes"][0]["verdict"] == "chosen"


def test_route_with_no_usable_route_exits_1(tmp_path, capsys):
    f = ion_file(tmp_path)  # 1 byte/s: a bundle never fits the 10-byte contacts
    assert main(["route", str(f), "--from", "1", "--to", "5"]) == 1
    assert "no usable route" in capsys.readouterr().out


def test_route_unknown_node_is_a_clear_error(tmp_path, capsys):
    f = ion_file(tmp_path)
    assert main(["route", str(f), "--from", "1", "--to", "9"]) == 2
    err = capsys.readouterr().err
    assert "--to '9'" in err and "ipn:5" in err and "Traceback" not in err


def test_route_missing_file(tmp_path, capsys):
    assert main(["route", str(tmp_path / "nope.ion"), "--from", "1", "--to", "2"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_route_from_a_scenario(capsys):
    rc = main(["route", str(ROOT / "topologies" / "tiny.yaml"), "--from", "sat-0", "--to", "sat-2",
               "--at", "0", "-k", "3"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "chosen: route 1, next hop sat-2" in out


def test_chosen_route_is_the_routers_decision(tmp_path, capsys):
    """The CLI's "chosen" is where the router sends the bundle: here the slow direct
    contact, usable and first by best-case arrival, although the two-hop route that the
    router never looks at would arrive earlier."""
    from netemu.plan.contacts import ContactPlan
    from netemu.routing.base import BundleInfo
    from netemu.routing.cgr import CGRRouter

    f = tmp_path / "minimal.ion"
    f.write_text("a contact +0 +1000 1 3 1\na contact +1 +1000 1 2 100000\n"
                 "a contact +1 +1000 2 3 100000\n"
                 "a range +0 +1000 1 3 0\na range +0 +1000 1 2 0\na range +0 +1000 2 3 0\n")
    rc = main(["route", str(f), "--from", "1", "--to", "3", "--size", "1", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    chosen = [r for r in data["routes"] if r["verdict"] == "chosen"]
    plan = ContactPlan.load(f)
    router = CGRRouter("ipn:1", plan)
    decision = router.route(BundleInfo("b", "ipn:1", "ipn:3", 1), 0.0, frozenset())
    assert [h.node for h in decision.hops] == ["ipn:3"]
    assert [r["next_hop"] for r in chosen] == ["ipn:3"]
    assert chosen[0]["projected_arrival_s"] == decision.projected_arrival_s
    # The faster route is listed, usable, and marked as not looked at.
    other = [r for r in data["routes"] if r["verdict"] != "chosen"]
    assert [(r["next_hop"], r["verdict"], r["considered"]) for r in other] == [
        ("ipn:2", "usable", False)]
    assert other[0]["projected_arrival_s"] < chosen[0]["projected_arrival_s"]
    assert main(["route", str(f), "--from", "1", "--to", "3", "--size", "1"]) == 0
    out = capsys.readouterr().out
    assert "chosen: route 1, next hop ipn:3" in out and "not looked at" in out
