"""The link schedule against outside references: skyfield's find_events for GSL rise
and set, a brute-force 1 ms scan with direct SGP4 for contact boundaries, and geometry
checks (ISLs clear the Earth by 80 km, tracking limits hold, light time interpolates)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load, wgs84

from netemu.plan.contacts import C_KM_S, ContactPlan
from netemu.plan.orbit import (
    R_EARTH_KM,
    build_ephemeris,
    propagate_direct,
    stations_ecef,
    teme_to_ecef,
    theta_gmst,
)
from netemu.plan.scenario import load_scenario, scenario_from_dict
from netemu.plan.schedule import apply_tracking_limits, compute_plan, gsl_windows

ROOT = Path(__file__).resolve().parents[2]
TOPO = ROOT / "topologies"


@pytest.fixture(scope="module")
def three_body():
    return load_scenario(TOPO / "three-body-12.yaml")


@pytest.fixture(scope="module")
def three_body_plan(three_body):
    return compute_plan(three_body)


def _unlimited(sc):
    return replace(sc, ground_stations=[replace(g, max_links=0) for g in sc.ground_stations])


# --- brute force with direct SGP4 (no grid, no interpolation) ---------------------------


def _elev_f(sc, sat_i: int, g: int, t_s: np.ndarray) -> np.ndarray:
    """sin(elevation) − sin(mask) by direct SGP4 at each time."""
    r, _, _ = propagate_direct([sc.satellites[sat_i].satrec], sc.epoch, t_s)
    ecef = teme_to_ecef(r[:, 0], theta_gmst(sc.epoch, t_s))
    pos, up = stations_ecef(sc.ground_stations)
    d = ecef - pos[g]
    st = sc.ground_stations[g]
    return d @ up[g] / np.linalg.norm(d, axis=1) - np.sin(np.radians(st.min_elevation_deg))


def _isl_f(sc, a: int, b: int, t_s: np.ndarray) -> np.ndarray:
    r, _, _ = propagate_direct([sc.satellites[a].satrec, sc.satellites[b].satrec], sc.epoch, t_s)
    ra, rb = r[:, 0], r[:, 1]
    d = rb - ra
    dd = np.sum(d * d, 1)
    s = np.clip(-np.sum(ra * d, 1) / dd, 0, 1)
    clear = np.linalg.norm(ra + s[:, None] * d, axis=1) - (R_EARTH_KM + sc.isl.earth_clearance_km)
    return np.minimum(sc.isl.max_range_km - np.sqrt(dd), clear)


def _crossings(f: np.ndarray, t: np.ndarray) -> list[float]:
    up = f >= 0
    k = np.nonzero(up[1:] != up[:-1])[0]
    return [float(t[i + 1]) if up[i + 1] else float(t[i]) for i in k]


def _assert_boundaries_match(fn, windows, t_end: float) -> None:
    """Each window boundary is within 1 ms of the brute-force crossing, and a 1 s scan of
    the whole span finds no crossing the schedule missed."""
    t_coarse = np.arange(0.0, t_end + 0.5, 0.5)
    for key, mine in windows.items():
        ref = _crossings(fn(key, t_coarse), t_coarse)
        assert len(ref) == len(mine), (key, ref, mine)
        for b_ref, b in zip(ref, mine, strict=True):
            fine = np.arange(b_ref - 0.6, b_ref + 0.6, 0.0005)
            exact = _crossings(fn(key, fine), fine)
            nearest = min(exact, key=lambda x: abs(x - b_ref))
            assert abs(nearest - b) <= 1e-3, (key, nearest, b)


def test_gsl_boundaries_within_1ms_of_brute_force() -> None:
    sc = _unlimited(load_scenario(TOPO / "tiny.yaml"))
    eph = build_ephemeris([s.satrec for s in sc.satellites], sc.epoch, 0.0, sc.duration_s, sc.schedule.step_s)
    wins: dict[tuple[int, int], list[float]] = {}
    for g, s, a, b in gsl_windows(sc, eph, t_end=sc.duration_s):
        wins.setdefault((s, g), [])
        wins[(s, g)] += [x for x in (a, b) if 0 < x < sc.duration_s]
    assert len(wins) == 6  # every satellite passes both stations
    for s in range(3):
        for g in range(2):
            wins.setdefault((s, g), [])
    _assert_boundaries_match(lambda k, t: _elev_f(sc, k[0], k[1], t), wins, sc.duration_s)


def _breaking_isl_scenario():
    """Three planes of a Walker star: cross-plane ranges swing from ~0 near the poles to
    thousands of km at the equator, so with a 2,500 km limit those ISLs come and go; the
    in-plane neighbours (60° apart) never see each other past the Earth."""
    return scenario_from_dict({
        "epoch": "2026-06-01T00:00:00Z",
        "duration_s": 3000,
        "satellites": [{"walker": {"planes": 3, "sats_per_plane": 6, "altitude_km": 550,
                                   "inclination_deg": 86, "pattern": "star", "phasing": 1}}],
        "isl": {"topology": "plus-grid", "seam": False, "max_range_km": 2500},
    })


def test_isl_boundaries_within_1ms_of_brute_force() -> None:
    sc = _breaking_isl_scenario()
    plan = compute_plan(sc)
    names = [s.name for s in sc.satellites]
    wins: dict[tuple[int, int], list[float]] = {}
    for c in plan.contacts:
        if c.src < c.dst:
            key = (names.index(c.src), names.index(c.dst))
            wins.setdefault(key, [])
            wins[key] += [x for x in (c.start_s, c.end_s) if 0 < x < sc.duration_s]
    assert sum(len(v) for v in wins.values()) >= 6
    _assert_boundaries_match(lambda k, t: _isl_f(sc, k[0], k[1], t), wins, sc.duration_s)


def test_isls_never_pass_through_the_earth() -> None:
    sc = _breaking_isl_scenario()
    plan = compute_plan(sc)
    names = [s.name for s in sc.satellites]
    isl = [c for c in plan.contacts if c.kind == "isl"]
    assert isl
    for c in isl:
        t = np.linspace(c.start_s + 1e-3, c.end_s - 1e-3, 50)
        f = _isl_f(sc, names.index(c.src), names.index(c.dst), t)
        assert f.min() > -1e-3  # clears R + 80 km and within range, to a metre
        # and the light time it carries is the true range
        r, _, _ = propagate_direct([sc.satellites[names.index(c.src)].satrec,
                                    sc.satellites[names.index(c.dst)].satrec], sc.epoch, t)
        owlt = np.linalg.norm(r[:, 1] - r[:, 0], axis=1) / C_KM_S
        got = np.array([c.owlt_at(x) for x in t])
        assert np.max(np.abs(got - owlt)) < 25e-6
    # in-plane neighbours 60° apart at 550 km are always hidden by the Earth
    for c in isl:
        a = sc.satellites[names.index(c.src)]
        b = sc.satellites[names.index(c.dst)]
        assert a.plane != b.plane
    # a ring of 4 (90° apart) never links
    ring4 = scenario_from_dict({
        "epoch": "2026-06-01T00:00:00Z", "duration_s": 600,
        "satellites": [{"walker": {"planes": 1, "sats_per_plane": 4, "altitude_km": 550,
                                   "inclination_deg": 53}}],
        "isl": {"topology": "ring"},
    })
    assert len(compute_plan(ring4)) == 0


def test_gsl_rise_set_match_skyfield_find_events(three_body) -> None:
    sc = _unlimited(three_body)
    ts = load.timescale(builtin=True)
    e = sc.epoch
    t0 = ts.utc(e.year, e.month, e.day, e.hour, e.minute, e.second)
    t1 = ts.utc(e.year, e.month, e.day, e.hour, e.minute, e.second + sc.duration_s)
    eph = build_ephemeris([s.satrec for s in sc.satellites], e, 0.0, sc.duration_s, sc.schedule.step_s)
    mine: dict[tuple[int, int], list[tuple[float, int]]] = {}
    for g, s, a, b in gsl_windows(sc, eph, t_end=sc.duration_s):
        if a > 0:
            mine.setdefault((g, s), []).append((a, 0))
        if b < sc.duration_s:
            mine.setdefault((g, s), []).append((b, 2))
    compared = 0
    for g, st in enumerate(sc.ground_stations):
        topo = wgs84.latlon(st.lat_deg, st.lon_deg, st.alt_m)
        for s, sat in enumerate(sc.satellites):
            ref_sat = EarthSatellite.from_satrec(sat.satrec, ts)
            t, ev = ref_sat.find_events(topo, t0, t1, altitude_degrees=st.min_elevation_deg)
            ref = [((ti - t0) * 86400.0, int(k)) for ti, k in zip(t, ev, strict=True) if k != 1]
            got = sorted(mine.get((g, s), []))
            assert [k for _, k in ref] == [k for _, k in got], (st.name, sat.name)
            for (tr, _), (tg, _) in zip(ref, got, strict=True):
                assert abs(tr - tg) < 1.0, (st.name, sat.name, tr, tg)
                compared += 1
    assert compared > 300  # several stations, a whole day


def test_short_passes_between_samples_are_found(three_body) -> None:
    """A pass that barely clears the mask, shorter than one grid step, is found and its
    boundaries are within 1 ms of the brute force; a coarse 60 s grid finds the same
    windows as a 5 s grid."""
    sc = load_scenario(TOPO / "tiny.yaml")
    t = np.arange(0.0, 700.0, 0.5)
    f = _elev_f(sc, 2, 0, t)  # sat-2 over bangalore
    el_max = np.degrees(np.arcsin(f.max() + np.sin(np.radians(10.0))))
    st = replace(sc.ground_stations[0], min_elevation_deg=float(el_max) - 0.1, max_links=0)
    sc = replace(sc, ground_stations=[st], duration_s=700.0)
    eph = build_ephemeris([s.satrec for s in sc.satellites], sc.epoch, 0.0, 700.0, sc.schedule.step_s)
    wins = [w for w in gsl_windows(sc, eph, t_end=700.0) if w[1] == 2]
    assert len(wins) == 1 and wins[0][3] - wins[0][2] < sc.schedule.step_s
    _assert_boundaries_match(lambda k, tt: _elev_f(sc, 2, 0, tt), {(2, 0): list(wins[0][2:])}, 700.0)

    sc = _unlimited(three_body)

    def windows(step):
        eph = build_ephemeris([s.satrec for s in sc.satellites], sc.epoch, 0.0, 43200.0, step)
        return sorted(gsl_windows(sc, eph, t_end=43200.0))

    fine, coarse = windows(5.0), windows(60.0)
    assert min(b - a for _, _, a, b in fine) < 60.0
    assert len(fine) == len(coarse)
    for w1, w2 in zip(fine, coarse, strict=True):
        assert w1[:2] == w2[:2]
        assert abs(w1[2] - w2[2]) < 5e-3 and abs(w1[3] - w2[3]) < 5e-3


def test_tracking_limit_policy() -> None:
    ws = [(0, 0, 0.0, 100.0), (0, 1, 10.0, 50.0), (0, 2, 20.0, 300.0)]
    assert apply_tracking_limits(ws, [1]) == [(0, 0, 0.0, 100.0), (0, 2, 100.0, 300.0)]
    assert apply_tracking_limits(ws, [2]) == [(0, 0, 0.0, 100.0), (0, 1, 10.0, 50.0),
                                              (0, 2, 50.0, 300.0)]
    assert apply_tracking_limits(ws, [0]) == sorted(ws, key=lambda w: (w[2], w[0], w[1]))


def test_tracking_limits_hold_in_the_plan() -> None:
    sc = load_scenario(TOPO / "starlink-shell1.yaml")
    sc = replace(sc, ground_stations=[replace(g, max_links=2) for g in sc.ground_stations[:4]])
    plan = compute_plan(sc, duration_s=1800)
    unlimited = compute_plan(_unlimited(sc), duration_s=1800)
    for g in sc.ground_stations:
        cs = [c for c in plan.contacts if c.dst == g.name]
        assert cs
        edges = sorted([(c.start_s, 1) for c in cs] + [(c.end_s, -1) for c in cs],
                       key=lambda x: (x[0], x[1]))
        assert max(np.cumsum([d for _, d in edges])) <= 2
        assert plan.nodes[g.name].max_links == 2
        assert len([c for c in unlimited.contacts if c.dst == g.name]) > len(cs)


def test_plan_shape(three_body, three_body_plan) -> None:
    plan = three_body_plan
    assert list(plan.nodes) == three_body.node_names()
    assert plan.nodes["tb-0"].kind == "satellite" and plan.nodes["kashi"].kind == "ground"
    assert plan.nodes["kashi"].ipn == 13
    fwd = {(c.src, c.dst, c.start_s, c.end_s) for c in plan.contacts}
    for c in plan.contacts:
        assert (c.dst, c.src, c.start_s, c.end_s) in fwd
        assert c.kind in ("isl", "gsl")
        assert c.owlt_samples[0][0] == c.start_s and c.owlt_samples[-1][0] == c.end_s
        top = max(o for _, o in c.owlt_samples)
        assert top - 1e-12 <= c.owlt_s < top + 25e-6
    # ring: 12 ISLs up all day, both ways
    isl = [c for c in plan.contacts if c.kind == "isl"]
    assert len(isl) == 24 and all(c.duration_s == three_body.duration_s for c in isl)
    # the budget link model gives a rate, lower for longer passes' worst range
    assert all(0 < c.rate_bps <= 1.2e9 for c in plan.contacts if c.kind == "gsl")
    # flagship: several passes within the first 15 minutes
    early = {(c.src, c.dst) for c in plan.contacts if c.kind == "gsl" and c.start_s < 900}
    assert len(early) >= 6


def test_light_time_samples_interpolate(three_body, three_body_plan) -> None:
    sc = three_body
    gsl = [c for c in three_body_plan.contacts if c.kind == "gsl" and c.src.startswith("tb")]
    names = [s.name for s in sc.satellites]
    st_index = {g.name: i for i, g in enumerate(sc.ground_stations)}
    pos, _ = stations_ecef(sc.ground_stations)
    rng = np.random.default_rng(3)
    for c in gsl[:40]:
        t = rng.uniform(c.start_s, c.end_s, 20)
        r, _, _ = propagate_direct([sc.satellites[names.index(c.src)].satrec], sc.epoch, t)
        ecef = teme_to_ecef(r[:, 0], theta_gmst(sc.epoch, t))
        true = np.linalg.norm(ecef - pos[st_index[c.dst]], axis=1) / C_KM_S
        got = np.array([c.owlt_at(x) for x in t])
        assert np.max(np.abs(got - true)) < 25e-6


def test_export_round_trips(three_body_plan, tmp_path: Path) -> None:
    plan = three_body_plan
    back = ContactPlan.from_json(plan.to_json())
    assert len(back) == len(plan) and back.epoch == plan.epoch
    for a, b in zip(plan.contacts, back.contacts, strict=True):
        assert (a.src, a.dst, a.kind) == (b.src, b.dst, b.kind)
        assert abs(a.start_s - b.start_s) < 1e-6 and abs(a.end_s - b.end_s) < 1e-6
        assert len(a.owlt_samples) == len(b.owlt_samples)
    ion = ContactPlan.from_ion(plan.to_ion())
    whole = [c for c in plan.contacts if int(c.end_s) > int(c.start_s) + 1]
    assert ion.epoch == plan.epoch
    assert {n.name: n.ipn for n in ion.nodes.values()} == {n.name: n.ipn for n in plan.nodes.values()}
    assert len(ion) >= len(whole)
    for c in ion.contacts:
        assert c.owlt_s >= 1.0  # ION ranges are whole seconds, rounded up
    hd = plan.to_hdtn_obj()["contacts"]
    first = next(c for c in plan.contacts if c.kind == "isl")
    assert any(h["rateBitsPerSec"] == int(first.rate_bps) for h in hd)


def test_a_window_of_the_plan_is_the_plan_clipped() -> None:
    sc = load_scenario(TOPO / "tiny.yaml")
    full = compute_plan(sc)
    part = compute_plan(sc, start_s=300.0, duration_s=600.0)

    def key(c, lo=-np.inf, hi=np.inf):
        return (c.src, c.dst, round(max(c.start_s, lo), 4), round(min(c.end_s, hi), 4))

    want = sorted(key(c, 300.0, 900.0) for c in full.contacts if c.end_s > 300 and c.start_s < 900)
    assert sorted(key(c) for c in part.contacts) == want


def test_isl_topologies_and_the_seam() -> None:
    from netemu.plan.schedule import isl_pairs

    sl = load_scenario(TOPO / "starlink-shell1.yaml")
    pairs = isl_pairs(sl)
    assert len(pairs) == 2 * 1584  # +Grid: 4 neighbours each
    degree = np.bincount([p.a for p in pairs] + [p.b for p in pairs], minlength=1584)
    assert set(degree.tolist()) == {4}
    # across the wrap from plane 71 to plane 0 the slot shifts by the phasing (39)
    sats = sl.satellites
    wrap = [(sats[p.a], sats[p.b]) for p in pairs
            if {sats[p.a].plane, sats[p.b].plane} == {0, 71}]
    assert len(wrap) == 22
    for a, b in wrap:
        last, first = (a, b) if a.plane == 71 else (b, a)
        assert first.slot == (last.slot + 39) % 22

    ir = load_scenario(TOPO / "iridium-next.yaml")
    pairs = isl_pairs(ir)
    sats = ir.satellites
    planes = [{sats[p.a].plane, sats[p.b].plane} for p in pairs]
    assert {0, 5} not in planes  # no link across the counter-rotating seam
    assert sum(len(x) == 1 for x in planes) == 66 and sum(len(x) == 2 for x in planes) == 55
    # cross-plane links are down above 68° latitude
    plan = compute_plan(ir, duration_s=6000)
    names = [s.name for s in sats]
    eph = build_ephemeris([s.satrec for s in sats], ir.epoch, 0.0, 6000.0, 30.0)
    cross = 0
    for c in plan.contacts:
        if c.kind != "isl":
            continue
        a, b = names.index(c.src), names.index(c.dst)
        if sats[a].plane != sats[b].plane:
            cross += 1
            t = np.linspace(c.start_s + 0.01, c.end_s - 0.01, 7)
            for i in (a, b):
                r = eph.teme(np.full(7, i), t)
                lat = np.degrees(np.arcsin(r[:, 2] / np.linalg.norm(r, axis=1)))
                assert np.all(np.abs(lat) <= 68.0 + 1e-3)
    assert cross > 0


def test_link_budget_rates() -> None:
    from netemu.plan.linkmodel import LinkBudget, LinkModel

    b = LinkBudget(frequency_hz=8.2e9, eirp_dbw=10, gt_dbk=25, bandwidth_hz=3e8,
                   other_losses_db=3, efficiency=0.6)
    # FSPL at 1000 km, 8.2 GHz: 20·log10(4π·1e6·8.2e9/c) = 170.73 dB
    assert b.fspl_db(1000.0) == pytest.approx(170.73, abs=0.01)
    snr_db = 10 + 25 - 170.73 - 3 + 228.60 - 10 * np.log10(3e8)
    assert b.snr_db(1000.0) == pytest.approx(snr_db, abs=0.01)
    assert b.rate_bps(1000.0) == pytest.approx(0.6 * 3e8 * np.log2(1 + 10 ** (snr_db / 10)), rel=1e-3)
    assert b.rate_bps(500.0) > b.rate_bps(1000.0) > b.rate_bps(2000.0)
    capped = LinkModel(budget=LinkBudget(8.2e9, 60, 25, 3e8, max_rate_bps=1e9))
    assert capped.contact_rate(500.0) == 1e9
    assert LinkModel(rate_bps=5e6).contact_rate(3000.0) == 5e6
