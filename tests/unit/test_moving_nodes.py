"""Moving ground nodes: trajectories (waypoints, CSV, great-circle legs at a speed) and
their passes, checked against skyfield with the observer where the trajectory puts it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from skyfield.api import EarthSatellite, load, wgs84
from skyfield.framelib import itrs

from netemu.errors import InputError
from netemu.plan.scenario import scenario_from_dict
from netemu.plan.schedule import compute_plan
from netemu.plan.trajectory import EARTH_RADIUS_M, from_legs

PARIS, NEW_YORK = (49.0, 2.55), (40.64, -73.78)


def _doc(trajectory: dict, duration_s: float = 3 * 3600.0) -> dict:
    return {
        "epoch": "2026-06-01T00:00:00Z", "duration_s": duration_s,
        "satellites": [{"walker": {"planes": 8, "sats_per_plane": 12, "altitude_km": 550,
                                   "inclination_deg": 53}}],
        "ground_stations": [
            {"name": "plane1", "min_elevation_deg": 25, "max_links": 0,
             "trajectory": trajectory},
            {"name": "paris", "lat_deg": PARIS[0], "lon_deg": PARIS[1], "max_links": 0},
        ],
    }


def test_legs_follow_the_great_circle_at_the_speed() -> None:
    tr = from_legs([[*PARIS, 10000.0], [*NEW_YORK, 10000.0]], 250.0, 100.0, "<test>")
    # great-circle distance Paris CDG – New York JFK on a 6371 km sphere: about 5,840 km
    dist_m = (tr.times_s[1] - tr.times_s[0]) * 250.0
    assert dist_m == pytest.approx(5.84e6, rel=0.01)
    lat, lon, alt = tr.geodetic(np.array([0.0, 100.0, tr.times_s[1], tr.times_s[1] + 50]))
    assert (lat[0], lon[0]) == pytest.approx(PARIS) and (lat[1], lon[1]) == pytest.approx(PARIS)
    assert (lat[3], lon[3]) == pytest.approx(NEW_YORK)  # stays at the last waypoint
    assert np.all(alt == 10000.0)
    # midway: equal great-circle distance to both ends; the track bulges north (~52° N)
    mid = 0.5 * (tr.times_s[0] + tr.times_s[1])
    la, lo, _ = tr.geodetic(np.array([mid, mid + 60.0]))

    def gc(a, b):
        a, b = np.radians(a), np.radians(b)
        return math.acos(min(1.0, math.sin(a[0]) * math.sin(b[0])
                             + math.cos(a[0]) * math.cos(b[0]) * math.cos(a[1] - b[1])))
    assert gc((la[0], lo[0]), PARIS) == pytest.approx(gc((la[0], lo[0]), NEW_YORK), rel=1e-6)
    assert la[0] > 51.0
    # a minute later it is 15 km further
    assert gc((la[0], lo[0]), (la[1], lo[1])) * EARTH_RADIUS_M == pytest.approx(15000, rel=1e-6)


def _skyfield_crossings(sc, st_lat, st_lon, st_alt, times, mask_deg):
    """Per satellite: [(t, rising)] where skyfield's elevation crosses the mask, the
    observer moved along the given geodetic positions (linear interpolation of the
    elevation between the 2 s samples)."""
    ts = load.timescale(builtin=True)
    e = sc.epoch
    t = ts.utc(e.year, e.month, e.day, e.hour, e.minute, e.second + times)
    obs = wgs84.latlon(st_lat, st_lon, elevation_m=st_alt).itrs_xyz.km
    la, lo = np.radians(st_lat), np.radians(st_lon)
    up = np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)])
    out = {}
    for sat in sc.satellites:
        xyz = EarthSatellite.from_satrec(sat.satrec, ts).at(t).frame_xyz(itrs).km
        d = xyz - obs
        el = np.degrees(np.arcsin(np.einsum("ij,ij->j", d, up) / np.linalg.norm(d, axis=0)))
        f = el - mask_deg
        k = np.nonzero(np.sign(f[1:]) != np.sign(f[:-1]))[0]
        tc = times[k] + (times[k + 1] - times[k]) * f[k] / (f[k] - f[k + 1])
        out[sat.name] = [(float(x), bool(f[i] < 0)) for x, i in zip(tc, k, strict=True)]
    return out


@pytest.mark.parametrize("how", ["legs", "waypoints"])
def test_a_moving_terminals_passes_match_skyfield_within_1_s(how) -> None:
    if how == "legs":
        traj = {"legs": {"start_s": 600, "speed_mps": 250,
                         "points": [[*PARIS, 10000], [*NEW_YORK, 10000]]}}
    else:  # a ship zig-zagging in the Atlantic, 15 m/s
        traj = {"waypoints": [[0, 45.0, -30.0, 0], [3600, 45.3, -29.5, 0],
                              [7200, 45.0, -29.0, 0], [10800, 45.5, -28.6, 0]]}
    sc = scenario_from_dict(_doc(traj))
    st = sc.ground_stations[0]
    assert st.trajectory is not None
    plan = compute_plan(sc)
    ours: dict[str, list[tuple[float, bool]]] = {}
    for c in plan.contacts:
        if c.src == "plane1":
            for t, rising in ((c.start_s, True), (c.end_s, False)):
                if 0 < t < sc.duration_s:
                    ours.setdefault(c.dst, []).append((t, rising))
    times = np.arange(0.0, sc.duration_s + 1e-9, 2.0)
    lat, lon, alt = st.trajectory.geodetic(times)
    ref = _skyfield_crossings(sc, lat, lon, alt, times, st.min_elevation_deg)
    n = 0
    for name, events in ref.items():
        got = sorted(ours.get(name, []))
        assert len(got) == len(events), (name, got, events)
        for (t0, r0), (t1, r1) in zip(events, got, strict=True):
            assert r0 == r1 and abs(t0 - t1) < 1.0, (name, t0, t1)
            n += 1
    assert n >= 20
    # the moving node's light time follows its own position, not its first waypoint's
    c = max((c for c in plan.contacts if c.src == "plane1"), key=lambda c: c.duration_s)
    tm = 0.5 * (c.start_s + c.end_s)
    names = [s.name for s in sc.satellites]
    ts = load.timescale(builtin=True)
    e = sc.epoch
    sat = EarthSatellite.from_satrec(sc.satellites[names.index(c.dst)].satrec, ts)
    xyz = sat.at(ts.utc(e.year, e.month, e.day, 0, 0, tm)).frame_xyz(itrs).km
    la, lo, al = st.trajectory.geodetic(np.array([tm]))
    obs = wgs84.latlon(la[0], lo[0], elevation_m=al[0]).itrs_xyz.km
    assert c.owlt_at(tm) == pytest.approx(np.linalg.norm(xyz - obs) / 299792.458, abs=25e-6)


def test_csv_trajectory_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "ship.csv").write_text("time_s,lat_deg,lon_deg,alt_m\n0,45,-30,0\n3600,45.3,-29.5,0\n")
    doc = _doc({"csv": "ship.csv"})
    sc = scenario_from_dict(doc, path=tmp_path / "s.yaml")
    assert sc.ground_stations[0].trajectory.times_s == (0.0, 3600.0)
    assert sc.ground_stations[0].lat_deg == 45.0
    (tmp_path / "bad.csv").write_text("time_s,lat_deg,lon_deg\n0,45,-30\n10,95,-30\n")
    with pytest.raises(InputError, match="latitude") as e:
        scenario_from_dict(_doc({"csv": "bad.csv"}), path=tmp_path / "s.yaml")
    assert "bad.csv" in str(e.value)
    with pytest.raises(InputError, match="times must increase"):
        scenario_from_dict(_doc({"waypoints": [[10, 45, -30, 0], [5, 45, -29, 0]]}))
    with pytest.raises(InputError, match="exactly one"):
        scenario_from_dict(_doc({"waypoints": [[0, 45, -30, 0]], "csv": "x.csv"}))
