"""The Starlink-like access scenario (topologies/starlink-access.yaml): terminals change
satellite only at the 15 s slots (:12, :27, :42, :57), always reach the internet host
through a satellite and the gateway (bent pipe), and the oracle's IP routes take exactly
that path; wired links and stations without satellite links are validated."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from netemu.config import load_yaml
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.plan.orbit import propagate_direct, stations_ecef, teme_to_ecef, theta_gmst
from netemu.plan.scenario import load_scenario, scenario_from_dict
from netemu.plan.schedule import compute_plan
from netemu.routing.iproutes import RouteComputer, next_hops

SCENARIO = Path(__file__).resolve().parents[2] / "topologies" / "starlink-access.yaml"
TERMINALS = ("ut-seattle", "ut-tacoma", "ut-everett")


@pytest.fixture(scope="module")
def plan() -> ContactPlan:
    return compute_plan(load_scenario(SCENARIO))


def _links_at(plan: ContactPlan, t: float) -> dict[str, set[str]]:
    up: dict[str, set[str]] = {}
    for c in plan.contacts:
        if c.start_s <= t < c.end_s:
            up.setdefault(c.src, set()).add(c.dst)
    return up


def test_terminals_change_satellite_only_at_the_15_s_slots(plan: ContactPlan) -> None:
    for ut in TERMINALS:
        cs = sorted((c for c in plan.contacts if c.src == ut), key=lambda c: c.start_s)
        assert len(cs) >= 5, f"{ut}: {len(cs)} links in 330 s"
        for c in cs:
            assert c.start_s == 0.0 or (c.start_s - 12.0) % 15.0 == pytest.approx(0.0, abs=1e-6), (
                ut, c.dst, c.start_s)
        # one satellite at a time, back to back: no gap, no overlap
        for a, b in zip(cs, cs[1:], strict=False):
            assert b.start_s == pytest.approx(a.end_s, abs=1e-6), (ut, a, b)
        assert cs[0].start_s == 0.0 and cs[-1].end_s == pytest.approx(330.0)


def test_each_terminal_holds_the_highest_satellite_at_each_slot(plan: ContactPlan) -> None:
    sc = load_scenario(SCENARIO)
    names = [s.name for s in sc.satellites]
    pos, up = stations_ecef(sc.ground_stations)
    for g, ut in enumerate(sc.ground_stations[:3]):
        for t in (27.0, 87.0, 162.0, 222.0, 297.0):
            held = [c.dst for c in plan.contacts if c.src == ut.name and c.start_s <= t < c.end_s]
            slot = 12.0 + 15.0 * ((t - 12.0) // 15.0)  # the instant that chose it
            r, _, _ = propagate_direct([s.satrec for s in sc.satellites], sc.epoch,
                                       np.array([slot]))
            d = teme_to_ecef(r[0], theta_gmst(sc.epoch, np.array([slot]))) - pos[g]
            el = d @ up[g] / np.linalg.norm(d, axis=1)
            best = names[int(np.argmax(el))]
            assert held == [best], (ut.name, t, held, best)


def test_a_terminal_always_has_a_bent_pipe_to_the_internet_host(plan: ContactPlan) -> None:
    nodes = list(plan.nodes)
    ground = [n for n, nd in plan.nodes.items() if nd.kind == "ground"]
    rc = RouteComputer(nodes, ground)
    idx = {n: i for i, n in enumerate(nodes)}
    for t in np.arange(0.5, 330.0, 5.0):
        up = _links_at(plan, float(t))
        links = {}
        for c in plan.contacts:
            if c.start_s <= t < c.end_s and c.src < c.dst:
                u, v = sorted((idx[c.src], idx[c.dst]))
                links[(u, v)] = (c.owlt_s, len(links) * 2, len(links) * 2 + 1)
        hops = next_hops(rc.compute(links), nodes)
        for ut in TERMINALS:
            (sat,) = up[ut]
            assert "gw-redmond" in up[sat], (t, ut, sat)
            path = [ut]
            while path[-1] != "internet" and len(path) < 6:
                path.append(hops[path[-1]]["internet"])
            assert path == [ut, sat, "gw-redmond", "internet"], (t, path)
            back = ["internet"]
            while back[-1] != ut and len(back) < 6:
                back.append(hops[back[-1]][ut])
            assert back == ["internet", "gw-redmond", sat, ut], (t, back)
    assert not any(c.kind == "gsl" for c in plan.contacts if "internet" in (c.src, c.dst))
    wired = [c for c in plan.contacts if c.kind == "wired"]
    assert {(c.src, c.dst) for c in wired} == {("internet", "gw-redmond"),
                                                ("gw-redmond", "internet")}
    assert all(c.owlt_s == 0.001 and c.start_s == 0 and c.end_s == 330 for c in wired)


@pytest.mark.parametrize(("to", "message"), [
    ("gw-redmnd", "ground_stations[4].wired[0].to: no ground station named 'gw-redmnd'; "
                  "did you mean 'gw-redmond'?"),
    ("internet", "ground_stations[4].wired[0].to: station 'internet' has a wired link to itself"),
])
def test_wired_link_errors_name_the_field(to: str, message: str) -> None:
    doc = copy.deepcopy(load_yaml(SCENARIO))
    doc["ground_stations"][4]["wired"][0]["to"] = to
    with pytest.raises(InputError) as ei:
        scenario_from_dict(doc, path=SCENARIO)
    assert message in str(ei.value)
    assert "starlink-access.yaml:" in str(ei.value)
