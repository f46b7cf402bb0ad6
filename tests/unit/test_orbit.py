"""Orbits against skyfield (the reference): TEME within 1 m, Earth-fixed within 50 m,
for Walker element sets and for TLEs, on the grid and between grid points."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load, wgs84
from skyfield.framelib import itrs
from skyfield.sgp4lib import TEME

from netemu.plan.orbit import (
    R_WGS72_KM,
    build_ephemeris,
    geodetic_to_ecef,
    propagate_direct,
    teme_to_ecef,
)
from netemu.plan.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ts():
    return load.timescale(builtin=True)


def _times(ts, epoch, t_s):
    return ts.utc(epoch.year, epoch.month, epoch.day, epoch.hour, epoch.minute,
                  epoch.second + np.asarray(t_s, dtype=float))


@pytest.mark.parametrize("topology", ["three-body-12.yaml", "iridium-next.yaml"])
def test_positions_match_skyfield(ts, topology: str) -> None:
    sc = load_scenario(ROOT / "topologies" / topology)
    sats = sc.satellites[:12]
    eph = build_ephemeris([s.satrec for s in sats], sc.epoch, 0.0, 86400.0, 20.0)
    rng = np.random.default_rng(7)
    t_grid = eph.t_s[rng.choice(eph.n_times, 50, replace=False)]
    t_between = rng.uniform(0, 86400, 200)  # between grid points: Hermite interpolation
    for i, s in enumerate(sats):
        ref = EarthSatellite.from_satrec(s.satrec, ts)
        for t_s in (t_grid, t_between):
            t = _times(ts, sc.epoch, t_s)
            pos = ref.at(t)
            teme_ref = pos.frame_xyz(TEME).km.T
            ecef_ref = pos.frame_xyz(itrs).km.T
            idx = np.full(len(t_s), i)
            teme = eph.teme(idx, t_s)
            ecef = eph.ecef(idx, t_s)
            assert np.max(np.linalg.norm(teme - teme_ref, axis=1)) < 1e-3  # 1 m
            assert np.max(np.linalg.norm(ecef - ecef_ref, axis=1)) < 0.05  # 50 m
    # the direct path (no interpolation) agrees too
    r, _v, err = propagate_direct([s.satrec for s in sats], sc.epoch, t_between[:20])
    assert not err.any()
    ref = EarthSatellite.from_satrec(sats[0].satrec, ts).at(_times(ts, sc.epoch, t_between[:20]))
    assert np.max(np.linalg.norm(r[:, 0] - ref.frame_xyz(TEME).km.T, axis=1)) < 1e-3


def test_tle_satellites_match_skyfield(ts, tmp_path: Path) -> None:
    from sgp4.exporter import export_tle

    sc = load_scenario(ROOT / "topologies" / "tiny.yaml")
    l1, l2 = export_tle(sc.satellites[0].satrec)
    (tmp_path / "one.tle").write_text(f"{l1}\n{l2}\n")
    (tmp_path / "s.yaml").write_text(
        "epoch: 2026-06-01T06:00:00Z\nduration_s: 3600\nsatellites:\n  - tle: one.tle\n")
    sc2 = load_scenario(tmp_path / "s.yaml")
    rec = sc2.satellites[0].satrec
    ref = EarthSatellite(l1, l2, ts=ts)
    eph = build_ephemeris([rec], sc2.epoch, 0.0, 3600.0, 20.0)
    t_s = np.linspace(0, 3600, 97)
    got = eph.ecef(np.zeros(len(t_s), dtype=int), t_s)
    want = ref.at(_times(ts, sc2.epoch, t_s)).frame_xyz(itrs).km.T
    assert np.max(np.linalg.norm(got - want, axis=1)) < 0.05


def test_walker_geometry(ts) -> None:
    sc = load_scenario(ROOT / "topologies" / "starlink-shell1.yaml")
    sats = sc.satellites
    assert len(sats) == 72 * 22
    r, v, _ = propagate_direct([s.satrec for s in sats], sc.epoch, np.array([0.0]))
    r, v = r[0], v[0]
    h = np.cross(r, v)
    inc = np.degrees(np.arccos(h[:, 2] / np.linalg.norm(h, axis=1)))
    assert np.allclose(inc, 53.0, atol=0.05)
    raan = np.degrees(np.arctan2(h[:, 0], -h[:, 1])) % 360
    planes = np.array([s.plane for s in sats])
    for p in (0, 1, 35, 71):
        got = raan[planes == p]
        assert np.allclose((got - 5.0 * p + 180) % 360 - 180, 0, atol=0.05)
    # SGP4 mean semi-major axis is R + altitude (osculating radius within ~15 km)
    assert sats[0].satrec.a * R_WGS72_KM == pytest.approx(R_WGS72_KM + 550.0, abs=0.01)
    radius = np.linalg.norm(r, axis=1)
    assert np.all(np.abs(radius - (R_WGS72_KM + 550)) < 20)


def test_ground_station_ecef_matches_skyfield() -> None:
    lat, lon, alt = [39.5, -33.9, 78.2], [76.0, 18.4, 15.4], [1300.0, 10.0, 500.0]
    pos, up = geodetic_to_ecef(lat, lon, alt)
    for i in range(3):
        ref = wgs84.latlon(lat[i], lon[i], alt[i]).itrs_xyz.km
        assert np.linalg.norm(pos[i] - ref) < 1e-6
        assert math.isclose(np.linalg.norm(up[i]), 1.0)


def test_teme_to_ecef_is_a_rotation() -> None:
    r = np.array([[7000.0, 0.0, 100.0]])
    out = teme_to_ecef(r, np.array([math.pi / 2]))
    assert np.allclose(out, [[0.0, -7000.0, 100.0]])


def test_element_file_planes_match_walker(tmp_path: Path) -> None:
    """A Walker constellation written out as TLEs (shuffled) is split back into the same
    planes and slot order, so ring/+Grid ISLs work for element files too."""
    import random

    from sgp4.exporter import export_tle

    from netemu.plan.schedule import isl_pairs

    (tmp_path / "w.yaml").write_text(
        "epoch: 2026-06-01T00:00:00Z\nduration_s: 600\nsatellites:\n"
        "  - walker: {planes: 4, sats_per_plane: 10, altitude_km: 550, inclination_deg: 53, phasing: 1}\n"
        "isl: {topology: plus-grid}\n")
    walker = load_scenario(tmp_path / "w.yaml")
    recs = [(s.name, export_tle(s.satrec)) for s in walker.satellites]
    random.Random(5).shuffle(recs)
    (tmp_path / "w.tle").write_text("".join(f"{n}\n{a}\n{b}\n" for n, (a, b) in recs))
    (tmp_path / "t.yaml").write_text(
        "epoch: 2026-06-01T00:00:00Z\nduration_s: 600\nsatellites:\n  - tle: w.tle\n"
        "isl: {topology: plus-grid}\n")
    tle = load_scenario(tmp_path / "t.yaml")
    assert tle.groups[0].planes == 4
    by_name = {s.name: s for s in tle.satellites}
    # same plane membership and in-plane order (up to which plane/slot is numbered first)
    for p in range(4):
        members = [s for s in walker.satellites if s.plane == p]
        planes = {by_name[s.name].plane for s in members}
        assert len(planes) == 1
        slots = [by_name[s.name].slot for s in members]
        assert [(x - slots[0]) % 10 for x in slots] == list(range(10))

    def named(sc):
        names = [s.name for s in sc.satellites]
        return {frozenset((names[p.a], names[p.b])) for p in isl_pairs(sc)}

    in_plane = {e for e in named(walker)
                if len({walker.satellites[[s.name for s in walker.satellites].index(n)].plane
                        for n in e}) == 1}
    assert in_plane <= named(tle)
