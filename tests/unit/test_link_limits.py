"""Satellite-side limits: a satellite's beams (``max_gsl``) are never exceeded and bind
where stations crowd under a satellite; a laser ISL that comes into view carries data only
after its acquisition time."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from netemu.errors import InputError
from netemu.plan.scenario import scenario_from_dict
from netemu.plan.schedule import MIN_CONTACT_S, compute_plan


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    ev = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])  # ends first
    return int(np.max(np.cumsum([d for _, d in ev]))) if ev else 0


def _crowded(max_gsl: int | None) -> dict:
    """Nine stations within a few hundred km (no antenna limit): every satellite overhead
    sees several at once."""
    group: dict = {"walker": {"planes": 4, "sats_per_plane": 8, "altitude_km": 550,
                              "inclination_deg": 53}}
    if max_gsl is not None:
        group["max_gsl"] = max_gsl
    return {
        "epoch": "2026-06-01T00:00:00Z", "duration_s": 4 * 3600,
        "satellites": [group],
        "ground_stations": [{"name": f"gs{i}{j}", "lat_deg": 45 + 1.5 * i, "lon_deg": 5 + 2 * j,
                             "max_links": 0} for i in range(3) for j in range(3)],
    }


def _gsl_by_sat(plan) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for c in plan.contacts:
        if c.kind == "gsl" and plan.nodes[c.src].kind == "satellite":
            out.setdefault(c.src, []).append((c.start_s, c.end_s))
    return out


def test_max_gsl_is_never_exceeded_and_binds() -> None:
    free = compute_plan(scenario_from_dict(_crowded(None)))
    assert max(_most_at_once(v) for v in _gsl_by_sat(free).values()) >= 4
    for beams in (1, 2):
        sc = scenario_from_dict(_crowded(beams))
        assert all(s.max_gsl == beams for s in sc.satellites)
        plan = compute_plan(sc)
        by_sat = _gsl_by_sat(plan)
        assert max(_most_at_once(v) for v in by_sat.values()) == beams
        assert plan.nodes[sc.satellites[0].name].max_links == beams
        # every held link lies inside a geometric pass of the free plan and is not cut short
        # needlessly: each satellite is busy whenever some station sees it … up to its beams
        passes = {(c.src, c.dst): [] for c in free.contacts}
        for c in free.contacts:
            passes[(c.src, c.dst)].append((c.start_s, c.end_s))
        for c in plan.contacts:
            assert any(a - 1e-6 <= c.start_s and c.end_s <= b + 1e-6
                       for a, b in passes[(c.src, c.dst)])
            assert c.duration_s >= MIN_CONTACT_S
        # both directions of every link
        fwd = {(c.src, c.dst, c.start_s) for c in plan.contacts}
        assert all((c.dst, c.src, c.start_s) in fwd for c in plan.contacts)


def test_station_and_satellite_limits_hold_together() -> None:
    doc = _crowded(2)
    for g in doc["ground_stations"]:
        g["max_links"] = 1
    plan = compute_plan(scenario_from_dict(doc))
    assert max(_most_at_once(v) for v in _gsl_by_sat(plan).values()) <= 2
    by_st: dict[str, list[tuple[float, float]]] = {}
    for c in plan.contacts:
        if c.kind == "gsl" and plan.nodes[c.src].kind == "ground":
            by_st.setdefault(c.src, []).append((c.start_s, c.end_s))
    assert max(_most_at_once(v) for v in by_st.values()) == 1


def _breaking_isls(acquisition_s: float) -> dict:
    return {
        "epoch": "2026-06-01T00:00:00Z", "duration_s": 3000,
        "satellites": [{"walker": {"planes": 3, "sats_per_plane": 6, "altitude_km": 550,
                                   "inclination_deg": 86, "pattern": "star", "phasing": 1}}],
        "isl": {"topology": "plus-grid", "seam": False, "max_range_km": 2500,
                "acquisition_s": acquisition_s},
    }


def test_acquisition_delays_the_first_usable_instant_of_a_new_isl() -> None:
    acq = 40.0
    base = compute_plan(scenario_from_dict(_breaking_isls(0.0)))
    plan = compute_plan(scenario_from_dict(_breaking_isls(acq)))
    got = {(c.src, c.dst, round(c.end_s, 6)): c for c in plan.contacts}
    new = 0
    for c in base.contacts:
        key = (c.src, c.dst, round(c.end_s, 6))
        if c.start_s <= 1e-6:  # up when the plan starts: acquired before
            assert got[key].start_s == c.start_s
        elif c.duration_s - acq >= MIN_CONTACT_S:
            a = got[key]
            assert a.start_s == pytest.approx(c.start_s + acq, abs=1e-6)
            assert a.owlt_samples[0][0] == pytest.approx(a.start_s, abs=1e-6)
            assert a.owlt_at(a.start_s) == pytest.approx(c.owlt_at(a.start_s), abs=25e-6)
            new += 1
        else:
            assert key not in got  # too short to be worth acquiring
    assert new >= 6
    assert len(plan.contacts) <= len(base.contacts)
    # a plan window that starts inside a link's pass: the link was acquired before it
    c = max(base.contacts, key=lambda c: c.duration_s)
    mid = 0.5 * (c.start_s + c.end_s)
    window = compute_plan(scenario_from_dict(_breaking_isls(acq)), start_s=mid, duration_s=600)
    assert any(w.src == c.src and w.dst == c.dst and w.start_s == pytest.approx(mid)
               for w in window.contacts)


def test_acquisition_and_beams_are_checked_on_load() -> None:
    with pytest.raises(InputError, match="acquisition_s"):
        scenario_from_dict(_breaking_isls(-1.0))
    doc = _crowded(None)
    doc["satellites"][0]["max_gsl"] = -2
    with pytest.raises(InputError, match="max_gsl"):
        scenario_from_dict(doc)
    sc = scenario_from_dict(_crowded(3))
    assert replace(sc.satellites[0]).max_gsl == 3
