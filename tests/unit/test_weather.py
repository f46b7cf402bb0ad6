"""Weather: ITU-R attenuations through ``itur`` match the ITU-R validation examples that
the package ships; the rain timeline is deterministic, has P.837's wet fraction and
P.618's exceedance levels; rain events lower ground links' rates in the plan."""

from __future__ import annotations

import ast
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("itur")

from netemu.plan.linkmodel import LinkBudget, LinkModel  # noqa: E402
from netemu.plan.scenario import load_scenario  # noqa: E402
from netemu.plan.schedule import compute_plan  # noqa: E402
from netemu.plan.weather import (  # noqa: E402
    P_GRID_PERCENT,
    WeatherConfig,
    build_weather,
    rain_events,
    slant_attenuation_db,
    station_stats,
)

TOPO = Path(__file__).resolve().parents[2] / "topologies"


def _validation_examples() -> list[tuple[float, ...]]:
    """The P.618-13 total-attenuation examples of ITU-R's validation set (CG-3M3J-13-ValEx)
    as the itur wheel ships them in test/ITU_validation_test.py: (lat, lon, f GHz, el,
    p %, D m, eta, tau, gases, clouds, rain, scintillation, total)."""
    import itur

    path = Path(itur.__file__).resolve().parents[1] / "test" / "ITU_validation_test.py"
    if not path.exists():
        pytest.skip(f"{path} not shipped by this itur")
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "total_attenuation_fcn"):
            out.append(tuple(float(ast.literal_eval(a)) for a in node.args))
    return out


def test_itur_matches_the_itu_validation_examples() -> None:
    import itur

    examples = _validation_examples()
    assert len(examples) >= 30
    for lat, lon, f, el, p, d, eta, tau, *want in examples:
        # the validation set computes R0.01 with P.837's exact method, as here
        r001 = float(itur.models.itu837.rainfall_rate(lat, lon, 0.01000000001).value)
        got = slant_attenuation_db(lat, lon, f, el, p, d, eta=eta, tau_deg=tau, r001_mm_h=r001)
        assert got == pytest.approx(tuple(want), abs=1e-5), (lat, lon, f, el, p)


def test_station_statistics_follow_p618() -> None:
    lats, lons = (51.5, 41.9, 1.35), (-0.14, 12.49, 103.8)
    p0, clear, rain = station_stats(lats, lons, 12.0)
    assert np.all((p0 > 1) & (p0 < 20)) and np.all((clear > 0) & (clear < 1))
    assert np.all(np.diff(rain, axis=1) < 0)  # rarer → deeper
    assert rain[2, 0] > rain[0, 0]  # Singapore's rain is heavier than London's
    # the table is P.618 at 45°, as the validated function gives it
    r = slant_attenuation_db(lats[0], lons[0], 12.0, 45.0, 0.01)[2]
    assert np.interp(math.log(0.01), np.log(P_GRID_PERCENT), rain[0]) == pytest.approx(r, rel=0.02)


def test_rain_timeline_is_deterministic_with_p618_statistics() -> None:
    p0 = np.array([5.0])
    rain = np.linspace(20.0, 0.1, len(P_GRID_PERCENT))[None, :]
    year = 365 * 86400.0
    cfg = WeatherConfig(seed=7, mean_event_s=1800.0)
    ev = rain_events(["gs"], p0, rain, year, cfg)
    assert ev == rain_events(["gs"], p0, rain, year, cfg)
    assert ev != rain_events(["gs"], p0, rain, year, replace(cfg, seed=8))
    wet = sum(e.end_s - e.start_s for e in ev) / year * 100
    assert wet == pytest.approx(5.0, rel=0.1)
    # time above the level exceeded 1 % of the time: about 1 %
    a1 = float(np.interp(math.log(1.0), np.log(P_GRID_PERCENT), rain[0]))
    above = sum(e.end_s - e.start_s for e in ev if e.atten_db > a1) / year * 100
    assert above == pytest.approx(1.0, rel=0.25)
    # a shorter window is the same weather, cut
    short = rain_events(["gs"], p0, rain, 86400.0, cfg)
    assert [(e.start_s, e.atten_db) for e in short] == \
        [(e.start_s, e.atten_db) for e in ev[:len(short)]]


def test_rain_lowers_the_rate_of_a_pass_in_the_plan() -> None:
    sc = load_scenario(TOPO / "three-body-12.yaml")
    b = LinkBudget(frequency_hz=20e9, eirp_dbw=20, gt_dbk=25, bandwidth_hz=3e8,
                   other_losses_db=3, efficiency=0.6)
    sc = replace(sc, links={**sc.links, "gsl": LinkModel(budget=b)}, duration_s=3 * 86400.0)
    dry = compute_plan(sc)
    wet_sc = replace(sc, weather=WeatherConfig(seed=3, mean_event_s=1800.0))
    wet = compute_plan(wet_sc)
    assert wet.weather and not dry.weather
    w = build_weather([g.name for g in sc.ground_stations], [g.lat_deg for g in sc.ground_stations],
                      [g.lon_deg for g in sc.ground_stations], 20e9, sc.duration_s,
                      wet_sc.weather)
    assert [e["start_s"] for e in wet.weather] == [round(e.start_s, 3) for e in w.events]
    dry_c = {(c.src, c.dst, c.start_s): c for c in dry.contacts if c.kind == "gsl"}
    lowered = 0
    for c in wet.contacts:
        if c.kind != "gsl":
            continue
        d = dry_c[(c.src, c.dst, c.start_s)]
        st = c.dst if wet.nodes[c.dst].kind == "ground" else c.src
        assert c.volume_bytes <= d.volume_bytes * (1 + 1e-9)  # weather never helps
        for t in np.arange(c.start_s + 15, c.end_s - 15, 30.0):
            # raining over the whole sample interval around t
            if min(w.rain_db_at(st, x) for x in (t - 15, t, t + 15)) > 0.5:
                assert c.rate_at(t) < d.rate_at(t)
                lowered += 1
    assert lowered >= 3


def test_weather_section_is_checked() -> None:
    from netemu.errors import InputError
    from netemu.plan.scenario import scenario_from_dict

    doc = {"epoch": "2026-06-01T00:00:00Z", "duration_s": 600,
           "satellites": [{"walker": {"planes": 1, "sats_per_plane": 2, "altitude_km": 550,
                                      "inclination_deg": 53}}],
           "ground_stations": [{"name": "gs1", "lat_deg": 30, "lon_deg": 0}],
           "weather": {"random": False,
                       "events": [{"station": "gs1", "start_s": 10, "end_s": 20, "atten_db": 3}]}}
    with pytest.raises(InputError, match="links.gsl.budget"):
        scenario_from_dict(doc)
    doc["links"] = {"gsl": {"budget": {"frequency_hz": 8e9, "eirp_dbw": 0, "gt_dbk": 20,
                                       "bandwidth_hz": 1e6}}}
    sc = scenario_from_dict(doc)
    assert sc.weather is not None and not sc.weather.random
    assert [(e.station, e.start_s, e.end_s, e.atten_db) for e in sc.weather.events] == \
        [("gs1", 10.0, 20.0, 3.0)]
    doc["weather"]["events"][0]["station"] = "gs9"
    with pytest.raises(InputError, match="gs9") as e:
        scenario_from_dict(doc)
    assert "weather.events[0].station" in str(e.value)
    doc["weather"]["events"][0].update(station="gs1", end_s=5)
    with pytest.raises(InputError, match="end_s"):
        scenario_from_dict(doc)


def test_a_rain_event_changes_the_rate_at_its_start_and_end() -> None:
    """A scheduled event inside a pass, off the 10 s sample grid: the rate steps down at
    its start and back at its end, exactly there; outside it the plan is the clear-sky
    plan's, and the event never raises a rate."""
    from netemu.plan.weather import RainEvent

    sc = load_scenario(TOPO / "tiny.yaml")
    b = LinkBudget(frequency_hz=20e9, eirp_dbw=20, gt_dbk=25, bandwidth_hz=3e8,
                   other_losses_db=3, efficiency=0.6)
    sc = replace(sc, links={**sc.links, "gsl": LinkModel(budget=b)})
    clear = compute_plan(replace(sc, weather=WeatherConfig(random=False)))
    c0 = max((c for c in clear.contacts if c.kind == "gsl" and clear.nodes[c.dst].kind == "ground"),
             key=lambda c: c.duration_s)
    assert c0.duration_s > 120
    start, end = c0.start_s + 23.4, c0.start_s + 101.7
    ev = RainEvent(c0.dst, start, end, math.nan, 6.0)
    wet = compute_plan(replace(sc, weather=WeatherConfig(random=False, events=(ev,))))
    (c,) = [x for x in wet.contacts if (x.src, x.dst, x.start_s) == (c0.src, c0.dst, c0.start_s)]
    times = [t for t, _r in c.rate_samples]
    assert start in times and end in times
    assert c.rate_at(start) < c.rate_at(start - 1e-3) == c0.rate_at(start - 1e-3)
    assert c.rate_at(end) > c.rate_at(end - 1e-3)
    for t in np.arange(c0.start_s, c0.end_s, 0.5):
        if start <= t < end:
            assert c.rate_at(t) < c0.rate_at(t)
        else:
            assert c.rate_at(t) == c0.rate_at(t), t
    assert c.volume_bytes < c0.volume_bytes
