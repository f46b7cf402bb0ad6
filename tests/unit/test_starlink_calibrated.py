"""The calibrated Starlink access model (topologies/starlink-access-calibrated.yaml): the
``starlink`` handover policy changes a terminal's satellite at every 15 s slot by a seeded
draw, the access delay adds a fixed part and a per-slot draw to the terminal's links, and
the handover gap holds what is sent in a new link's first instants until the gap ends."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netemu.config import load_yaml
from netemu.errors import InputError
from netemu.plan.contacts import C_KM_S, Contact, ContactPlan
from netemu.plan.orbit import propagate_direct, stations_ecef, teme_to_ecef, theta_gmst
from netemu.plan.scenario import scenario_from_dict
from netemu.plan.schedule import compute_plan

SCENARIO = Path(__file__).resolve().parents[2] / "topologies" / "starlink-access-calibrated.yaml"
TERMINALS = ("ut-seattle", "ut-tacoma", "ut-everett")
DURATION_S = 120.0


def _doc(**schedule: Any) -> dict[str, Any]:
    doc = copy.deepcopy(load_yaml(SCENARIO))
    doc["duration_s"] = DURATION_S
    doc["schedule"].update(schedule)
    return doc


def _plan(doc: dict[str, Any]) -> ContactPlan:
    return compute_plan(scenario_from_dict(doc, path=SCENARIO))


@pytest.fixture(scope="module")
def plan() -> ContactPlan:
    return _plan(_doc())


@pytest.fixture(scope="module")
def bare() -> ContactPlan:
    """The same plan with no access delay and no handover gap: light time only."""
    doc = _doc(handover_gap_s=0.0)
    for g in doc["ground_stations"]:
        g.pop("access_delay_s", None)
        g.pop("access_delay_var_s", None)
    return _plan(doc)


def _held(plan: ContactPlan, ut: str) -> list[Contact]:
    return sorted((c for c in plan.contacts if c.src == ut), key=lambda c: c.start_s)


def test_terminals_take_another_satellite_in_view_at_every_slot(plan: ContactPlan) -> None:
    sc = scenario_from_dict(_doc(), path=SCENARIO)
    names = [s.name for s in sc.satellites]
    pos, up = stations_ecef(sc.ground_stations)
    for g, ut in enumerate(TERMINALS):
        cs = _held(plan, ut)
        # a new satellite at each of the 8 slot instants in 120 s (12, 27, ..., 117)
        assert [c.start_s for c in cs] == [0.0] + [12.0 + 15.0 * k for k in range(8)], ut
        for a, b in zip(cs, cs[1:], strict=False):
            assert a.dst != b.dst and b.start_s == pytest.approx(a.end_s), (ut, a, b)
        for c in cs:  # each is above the terminal's 25° mask over its whole slot
            ts = np.array([c.start_s, (c.start_s + c.end_s) / 2, c.end_s - 1e-3])
            r, _, _ = propagate_direct([sc.satellites[names.index(c.dst)].satrec], sc.epoch, ts)
            d = teme_to_ecef(r[0], theta_gmst(sc.epoch, ts)) - pos[g]
            el = np.degrees(np.arcsin(d @ up[g] / np.linalg.norm(d, axis=1)))
            assert (el >= 25.0 - 1e-3).all(), (ut, c.dst, el)
    # not the "highest satellite" rule: that one keeps a satellite over several slots
    assert sum(len(_held(plan, ut)) for ut in TERMINALS) == 27


def test_the_draw_is_seeded(plan: ContactPlan) -> None:
    again = _plan(_doc())
    other = _plan(_doc(handover_seed=2))
    sats = [[c.dst for c in _held(p, "ut-seattle")] for p in (plan, again, other)]
    assert sats[0] == sats[1]
    assert sats[0] != sats[2]


def test_access_delay_adds_its_fixed_part_and_one_draw_per_slot(
        plan: ContactPlan, bare: ContactPlan) -> None:
    extras = []
    for ut in TERMINALS:
        for c, b in zip(_held(plan, ut), _held(bare, ut), strict=True):
            assert (c.dst, c.start_s) == (b.dst, b.start_s)
            ts = np.linspace(c.start_s + 0.1, c.end_s - 0.01, 7)
            d = np.array([c.owlt_at(float(t)) - b.owlt_at(float(t)) for t in ts])
            assert d.max() - d.min() < 1e-6, (ut, c.dst, d)  # one value per slot
            assert 0.005 <= d[0] <= 0.009, (ut, c.dst, d[0])
            extras.append(float(d[0]))
    assert len({round(x, 6) for x in extras}) == len(extras)  # drawn afresh each slot
    assert max(extras) - min(extras) > 0.002
    # the gateway's links (no access delay) are light time alone, as is the wired link
    for c in plan.contacts:
        if c.src == "gw-redmond" and c.kind == "gsl":
            assert c.owlt_at(c.start_s + 0.5) == pytest.approx(
                next(b for b in bare.contacts if (b.src, b.dst, b.start_s) ==
                     (c.src, c.dst, c.start_s)).owlt_at(c.start_s + 0.5), abs=1e-9)
    assert {c.owlt_s for c in plan.contacts if c.kind == "wired"} == {0.005}


def test_a_frame_sent_in_the_handover_gap_is_held_until_the_gap_ends(
        plan: ContactPlan) -> None:
    for ut in TERMINALS:
        cs = _held(plan, ut)
        for c in cs:
            for back in [x for x in plan.contacts if (x.src, x.dst, x.start_s) ==
                         (c.dst, c.src, c.start_s)] + [c]:
                arrive = [t + back.owlt_at(t) for t in np.linspace(c.start_s, c.start_s + 0.04, 9)]
                if c.start_s == 0.0:  # the first link is no satellite change: no hold
                    assert arrive[-1] - arrive[0] == pytest.approx(0.04, abs=1e-4)
                    continue
                # all leave together when the gap ends, after the light time then
                release = c.start_s + 0.04 + back.owlt_at(c.start_s + 0.04)
                assert arrive == pytest.approx([release] * 9, abs=1e-6), (ut, c.dst)
                assert back.owlt_s >= 0.04
                # and after the gap the delay is the slot's own again
                t = c.start_s + 1.0
                assert back.owlt_at(t) < 0.02


def test_without_the_knobs_the_plan_is_light_time(bare: ContactPlan) -> None:
    c = _held(bare, "ut-seattle")[3]
    assert c.owlt_at(c.start_s) < 0.006 and c.owlt_s * C_KM_S < 1800


@pytest.mark.parametrize(("where", "key", "value", "message"), [
    ("schedule", "handover", "starlnk", "schedule.handover"),
    ("schedule", "handover_gap_s", -0.1, "schedule.handover_gap_s"),
    ("station", "access_delay_s", -1, "ground_stations[0].access_delay_s"),
    ("station", "access_delay_var_s", "x", "ground_stations[0].access_delay_var_s"),
])
def test_bad_knobs_are_named(where: str, key: str, value: Any, message: str) -> None:
    doc = _doc()
    (doc["schedule"] if where == "schedule" else doc["ground_stations"][0])[key] = value
    with pytest.raises(InputError) as ei:
        scenario_from_dict(doc, path=SCENARIO)
    assert message in str(ei.value) and "starlink-access-calibrated.yaml" in str(ei.value)
