"""Projected arrivals: what CGR promises for a send at send time, agreeing with
``netemu route`` on the CGR tutorial's plan, None when nothing delivers within the
lifetime, independent of the order sends are given in and of each other."""

from __future__ import annotations

import contextlib
import io
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from test_routing_cli import ion_file

from netemu.cli import main
from netemu.plan.contacts import ContactPlan
from netemu.plan.scenario import load_scenario
from netemu.plan.schedule import compute_plan
from netemu.plan.traffic import flows
from netemu.routing.cgr import CGRRouter
from netemu.routing.projection import Projector, project_arrivals

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ContactPlan]:
    f = ion_file(tmp_path_factory.mktemp("proj"), unit_bytes=1000)  # 1000 B/s contacts
    return f, ContactPlan.load(f)


def route_cli(plan_file: Path, dst: str, at_s: float, size: int,
              lifetime_s: float | None) -> float | None:
    """The projected arrival of the route ``netemu route`` marks chosen, or None."""
    args = ["route", str(plan_file), "--from", "1", "--to", dst, "--at", repr(float(at_s)),
            "--size", str(size), "--json"]
    if lifetime_s is not None:
        args += ["--deadline", f"{lifetime_s:g}"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(args)
    chosen = [r for r in json.loads(out.getvalue())["routes"] if r["verdict"] == "chosen"]
    return chosen[0]["projected_arrival_s"] if chosen else None


def test_agrees_with_netemu_route_on_the_tutorial(tutorial: tuple[Path, ContactPlan]) -> None:
    f, plan = tutorial
    projector = Projector(plan)
    rng = random.Random(4)
    cases = [(dst, t, size, life) for dst in ("ipn:5", "ipn:4") for t in (0, 9.5, 10, 25, 33, 55)
             for size in (100, 1000, 20000) for life in (None, 5, 15, 40)]
    cases += [("ipn:5", rng.uniform(0, 60), rng.randint(1, 30000), rng.choice((None, 8, 30)))
              for _ in range(40)]
    some_none = some_route = 0
    for dst, t, size, life in cases:
        want = route_cli(f, dst, t, size, life)
        got = projector.arrival("ipn:1", dst, t, size, 1, math.inf if life is None else life)
        assert got == want, (dst, t, size, life)
        some_none += got is None
        some_route += got is not None
    assert some_none and some_route


def test_the_tutorial_best_route(tutorial: tuple[Path, ContactPlan]) -> None:
    """1→3→4→5 leaving at 0: light time 3 s plus the estimated size (1000 + 62.5 B) sent
    at 1000 B/s on each of the three hops."""
    _, plan = tutorial
    p = Projector(plan)
    assert p.arrival("ipn:1", "ipn:5", 0, 1000) == pytest.approx(3 + 3 * 1.0625)
    assert p.arrival("ipn:1", "ipn:5", 0, 1000, lifetime_s=6.1) is None  # arrives at 6.19
    assert p.arrival("ipn:1", "ipn:5", 0, 1000, lifetime_s=6.2) == pytest.approx(6.1875)
    assert p.arrival("ipn:1", "ipn:1", 7.0, 1000) == 7.0
    assert p.arrival("ipn:1", "ipn:9", 0, 1000) is None  # not in the plan
    assert p.arrival("ipn:9", "ipn:1", 0, 1000) is None


def test_a_stale_route_list_gives_way_to_a_fresh_one(tutorial: tuple[Path, ContactPlan]) -> None:
    """With one route kept per destination, the list made at t=0 (1→3→4→5, its last
    contact ending at 10) cannot carry a bundle sent at 9.5; the projection is the one
    made at 9.5 (1→5 from 10), as ``netemu route --at 9.5 -k 1`` shows it."""
    f, plan = tutorial
    p = Projector(plan, max_routes=1)
    assert p.arrival("ipn:1", "ipn:5", 0, 1000) == pytest.approx(6.1875)
    assert p.arrival("ipn:1", "ipn:5", 9.5, 1000) == pytest.approx(10 + 1.0625 + 1)
    assert p.fresh == 1
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["route", str(f), "--from", "1", "--to", "5", "--at", "9.5", "-k", "1", "--json"])
    assert json.loads(out.getvalue())["routes"][0]["projected_arrival_s"] == \
        pytest.approx(12.0625)


def test_sends_do_not_queue_behind_each_other(tutorial: tuple[Path, ContactPlan]) -> None:
    _, plan = tutorial
    p = Projector(plan)
    first = p.arrival("ipn:1", "ipn:5", 0, 5000)
    assert [p.arrival("ipn:1", "ipn:5", 0, 5000) for _ in range(50)] == [first] * 50
    # what an agent's router, fresh, answers for the same bundle
    from netemu.routing.base import BundleInfo

    d = CGRRouter("ipn:1", plan).route(BundleInfo("b", "ipn:1", "ipn:5", 5000), 0, frozenset())
    assert d.projected_arrival_s == first


def test_order_of_the_sends_does_not_matter(tutorial: tuple[Path, ContactPlan]) -> None:
    _, plan = tutorial
    rng = random.Random(2)
    sends = [(f"ipn:{rng.choice((1, 2, 3))}", f"ipn:{rng.choice((4, 5))}", rng.uniform(0, 60),
              rng.randint(1, 4000), rng.randint(0, 2), rng.choice((10.0, 60.0, math.inf)))
             for _ in range(300)]
    forward = project_arrivals(plan, sends)
    shuffled = list(range(len(sends)))
    rng.shuffle(shuffled)
    back = project_arrivals(plan, [sends[i] for i in shuffled])
    assert [back[shuffled.index(i)] for i in range(len(sends))] == forward
    assert any(a is None for a in forward) and any(a is not None for a in forward)
    for (_, _, t, _, _, life), a in zip(sends, forward, strict=True):
        assert a is None or t < a <= t + life


def test_traffic_flows_on_a_computed_plan() -> None:
    """From a scenario's flows to projections: every send arrives after it was sent and
    within its lifetime, or has no route."""
    sc = load_scenario(ROOT / "topologies" / "tiny.yaml")
    plan = compute_plan(sc, duration_s=1200)
    from netemu.config import Fields, parse_yaml
    from netemu.plan.traffic import parse_traffic

    doc = parse_yaml("- {name: up, from: kind:ground, to: kind:satellite, interval_s: 20,\n"
                     "   size_bytes: [1000, 50000], lifetime_s: 300, end_s: 1200}\n", "t.yaml")
    spec = parse_traffic(Fields(doc, source="t.yaml", path="traffic"), sc)
    rows = [(fl.src, fl.dst, s.t_s, s.size_bytes, s.priority, s.lifetime_s)
            for fl in flows(spec) for s in fl.sends()]
    p = Projector(plan)
    arr = p.arrivals(*[list(c) for c in zip(*rows, strict=True)])
    t = np.array([r[2] for r in rows])
    ok = ~np.isnan(arr)
    assert ok.sum() > len(rows) // 4 and (~ok).sum() > 0  # passes come and go
    assert np.all(arr[ok] > t[ok]) and np.all(arr[ok] <= t[ok] + 300)
    assert p.searches < len(rows)  # route lists are reused between sends
