"""Rates that follow the pass: a link budget's ground contacts carry rate samples that
match the budget at independently propagated ranges and elevations, the DVB-S2 MODCOD
table gives steps, and a contact's volume (the one CGR plans with) is their integral."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.plan.linkmodel import (
    DVB_S2_MODCODS,
    LinkBudget,
    LinkModel,
    atmos_path_factor,
)
from netemu.plan.orbit import propagate_direct, stations_ecef, teme_to_ecef, theta_gmst
from netemu.plan.scenario import load_scenario, scenario_from_dict
from netemu.plan.schedule import compute_plan
from netemu.routing.cgr import ContactGraph

TOPO = Path(__file__).resolve().parents[2] / "topologies"
S2 = LinkBudget(frequency_hz=8.2e9, eirp_dbw=10, gt_dbk=25, bandwidth_hz=3e8,
                other_losses_db=3, modcod="dvb-s2", rolloff=0.2, zenith_atmos_db=0.4)


def _with_budget(budget: LinkBudget):
    sc = load_scenario(TOPO / "three-body-12.yaml")
    links = dict(sc.links)
    links["gsl"] = LinkModel(budget=budget)
    return replace(sc, links=links, duration_s=6 * 3600.0)


@pytest.fixture(scope="module")
def s2_plan():
    sc = _with_budget(S2)
    return sc, compute_plan(sc)


def _true_range_sin_el(sc, c, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Range (km) and elevation sine from direct SGP4 (no ephemeris interpolation)."""
    names = [s.name for s in sc.satellites]
    st = [g.name for g in sc.ground_stations].index(c.dst)
    pos, up = stations_ecef(sc.ground_stations)
    r, _, _ = propagate_direct([sc.satellites[names.index(c.src)].satrec], sc.epoch, t)
    d = teme_to_ecef(r[:, 0], theta_gmst(sc.epoch, t)) - pos[st]
    rng = np.linalg.norm(d, axis=1)
    return rng, d @ up[st] / rng


def _grid(c, every_s: float) -> np.ndarray:
    inner = np.arange(math.floor(c.start_s / every_s) + 1, math.ceil(c.end_s / every_s)) * every_s
    return np.concatenate([[c.start_s], inner[(inner > c.start_s) & (inner < c.end_s)],
                           [c.end_s]])


def test_rate_samples_follow_the_budget_at_the_sampled_ranges(s2_plan) -> None:
    sc, plan = s2_plan
    gsl = [c for c in plan.contacts if c.kind == "gsl" and c.src.startswith("tb")]
    assert len(gsl) > 10
    thr = np.array([m.esn0_db for m in DVB_S2_MODCODS])
    checked = 0
    for c in gsl:
        assert c.rate_samples[0][0] == c.start_s
        t = _grid(c, sc.schedule.rate_sample_s)
        rng, sin_el = _true_range_sin_el(sc, c, t)
        budget = S2.rates_bps(rng, sin_el)
        esn0 = S2.snr_db_array(rng, sin_el) + 10 * math.log10(1.2)
        near = np.min(np.abs(esn0[:, None] - thr[None, :]), axis=1) < 0.01
        for k in range(len(t) - 1):
            if near[k] or near[k + 1]:
                continue  # a threshold within 0.01 dB: either MODCOD is right
            mid = 0.5 * (t[k] + t[k + 1])
            assert c.rate_at(mid) == pytest.approx(min(budget[k], budget[k + 1]), rel=1e-9), \
                (c.src, c.dst, mid)
            checked += 1
    assert checked > 500


def test_a_pass_steps_through_modcods(s2_plan) -> None:
    _, plan = s2_plan
    c = max((c for c in plan.contacts if c.kind == "gsl"), key=lambda c: c.duration_s)
    rates = [r for _, r in c.rate_samples]
    assert len(set(rates)) >= 4
    # rises to its best near the middle of the pass, lower at both ends
    best = int(np.argmax(rates))
    assert rates[0] < rates[best] and rates[-1] < rates[best]
    assert 0.2 < (c.rate_samples[best][0] - c.start_s) / c.duration_s < 0.8
    # the top rate is one MODCOD's efficiency times the symbol rate
    effs = {round(m.bits_per_symbol * 3e8 / 1.2) for m in DVB_S2_MODCODS} | {0}
    assert {round(r) for r in rates} <= effs


def test_volume_is_the_integral_of_the_rate(s2_plan) -> None:
    _, plan = s2_plan
    gsl = [c for c in plan.contacts if c.kind == "gsl"][:30]
    graph = ContactGraph(plan)
    for c in gsl:
        dt = 0.01
        t = np.arange(c.start_s, c.end_s, dt) + dt / 2
        numeric = sum(c.rate_at(x) for x in t) * dt / 8
        assert c.volume_bytes == pytest.approx(numeric, rel=2e-3)
        assert c.rate_bps * c.duration_s / 8 == pytest.approx(c.volume_bytes, rel=1e-9)
        # the mean is below the best rate of the pass: a fixed rate would overstate it
        assert c.rate_bps < max(r for _, r in c.rate_samples)
        assert graph.volume[plan.contacts.index(c)] == pytest.approx(c.volume_bytes, rel=1e-9)


def test_shannon_samples_within_one_percent_below_the_budget() -> None:
    b = replace(S2, modcod="shannon", efficiency=0.6)
    sc = replace(_with_budget(b), duration_s=2 * 3600.0)
    plan = compute_plan(sc)
    gsl = [c for c in plan.contacts if c.kind == "gsl" and c.src.startswith("tb")][:10]
    assert gsl
    for c in gsl:
        t = _grid(c, sc.schedule.rate_sample_s)
        rng, sin_el = _true_range_sin_el(sc, c, t)
        want = np.minimum(b.rates_bps(rng[:-1], sin_el[:-1]), b.rates_bps(rng[1:], sin_el[1:]))
        got = np.array([c.rate_at(0.5 * (x + y)) for x, y in zip(t[:-1], t[1:], strict=True)])
        assert np.all(got <= want * (1 + 1e-6)) and np.all(got >= want / 1.0101)


def test_rate_samples_survive_the_json_plan(s2_plan) -> None:
    _, plan = s2_plan
    back = ContactPlan.from_json(plan.to_json())
    for a, b in zip(plan.contacts, back.contacts, strict=True):
        assert len(a.rate_samples) == len(b.rate_samples)
        assert b.volume_bytes == pytest.approx(a.volume_bytes, rel=1e-6)


def test_atmosphere_and_elevation() -> None:
    assert atmos_path_factor(np.array([1.0]))[0] == pytest.approx(1.0)
    # cosecant law at 30°, bounded at the horizon (≈ √(2R/H) for a 6 km shell)
    assert atmos_path_factor(np.array([0.5]))[0] == pytest.approx(2.0, rel=0.01)
    assert atmos_path_factor(np.array([0.0]))[0] == pytest.approx(46.1, rel=0.01)
    assert S2.snr_db(1000, 1.0) - S2.snr_db(1000, 0.5) == pytest.approx(0.4, rel=0.01)
    # Es/N0 = SNR in B + 10·log10(1 + rolloff); the best MODCOD it meets
    b = replace(S2, zenith_atmos_db=0.0)
    esn0 = b.snr_db(1000.0) + 10 * math.log10(1.2)
    best = max((m for m in DVB_S2_MODCODS if m.esn0_db <= esn0), key=lambda m: m.bits_per_symbol)
    assert b.modcod_name(1000.0) == best.name
    assert b.rate_bps(1000.0) == pytest.approx(best.bits_per_symbol * 3e8 / 1.2)
    assert b.rate_bps(1e5) == 0.0  # nothing closes


def test_bad_modcod_is_refused_with_its_field() -> None:
    doc = {"name": "x", "epoch": "2026-03-01T00:00:00Z", "duration_s": 60,
           "satellites": [{"walker": {"planes": 1, "sats_per_plane": 2, "altitude_km": 550,
                                      "inclination_deg": 53}}],
           "links": {"gsl": {"budget": {"frequency_hz": 8e9, "eirp_dbw": 10, "gt_dbk": 25,
                                        "bandwidth_hz": 3e8, "modcod": "dvb-s3"}}}}
    with pytest.raises(InputError, match="modcod"):
        scenario_from_dict(doc)
