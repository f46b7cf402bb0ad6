"""Scenario files: the shipped topologies load, the minimum contract keeps working, and
each malformed scenario gets a clear error naming file, line, field (and the right key
for a misspelt one)."""

from __future__ import annotations

import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sgp4.exporter import export_tle

from netemu.cli import main as cli_main
from netemu.errors import InputError
from netemu.plan.scenario import MAX_NAME_LEN, load_scenario

ROOT = Path(__file__).resolve().parents[2]
TOPOLOGIES = sorted((ROOT / "topologies").glob("*.yaml"))


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"))
    return p


def tle_file(tmp_path: Path, n: int = 3) -> Path:
    """A TLE file (three-line sets) exported from Walker satellites."""
    sc = load_scenario(write(tmp_path, f"""
        epoch: 2026-06-01T00:00:00Z
        duration_s: 600
        satellites:
          - walker: {{planes: 1, sats_per_plane: {n}, altitude_km: 550, inclination_deg: 53}}
        """, "gen.yaml"))
    lines = []
    for i, s in enumerate(sc.satellites):
        l1, l2 = export_tle(s.satrec)
        lines += [f"TESTSAT {i}", l1, l2]
    p = tmp_path / "sats.tle"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("path", TOPOLOGIES, ids=lambda p: p.name)
def test_shipped_topologies_load(path: Path) -> None:
    sc = load_scenario(path)
    assert sc.satellites and sc.duration_s > 0
    names = sc.node_names()
    assert len(set(names)) == len(names)
    assert all(len(n) <= MAX_NAME_LEN for n in names)
    assert sorted(sc.ipn.values()) == list(range(1, len(names) + 1))


def test_minimum_contract_loads_as_is(tmp_path: Path) -> None:
    tle_file(tmp_path)
    p = write(tmp_path, """
        epoch: 2026-06-01T00:00:00Z
        duration_s: 3600
        satellites:
          - tle: sats.tle
        ground_stations:
          - {name: kashi, lat_deg: 39.5, lon_deg: 76.0, alt_m: 1300, min_elevation_deg: 10}
        """)
    sc = load_scenario(p)
    assert sc.epoch == datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert sc.duration_s == 3600 and sc.time_scale == 1.0
    assert [s.name for s in sc.satellites] == ["testsat-0", "testsat-1", "testsat-2"]
    assert sc.ground_stations[0].name == "kashi" and sc.ground_stations[0].max_links == 1
    assert sc.node_names() == ["testsat-0", "testsat-1", "testsat-2", "kashi"]
    assert sc.ipn == {"testsat-0": 1, "testsat-1": 2, "testsat-2": 3, "kashi": 4}
    # a TLE group is split into planes and ordered by argument of latitude
    assert {s.plane for s in sc.satellites} == {0}
    assert sorted(s.slot for s in sc.satellites) == [0, 1, 2]


def test_walker_names_order_and_reserved_sections(tmp_path: Path) -> None:
    p = write(tmp_path, """
        name: demo
        epoch: 2026-06-01T00:00:00Z
        duration_s: 600
        time_scale: 10
        satellites:
          - walker: {planes: 2, sats_per_plane: 2, altitude_km: 550, inclination_deg: 53, phasing: 1}
        ground_stations:
          - {name: gs-a, lat_deg: 10, lon_deg: 20}
          - {name: gs-b, lat_deg: -10, lon_deg: 20, ipn: 100}
        routing:
          algorithm: cgr
        apps:
          - {name: x}
        expect: {delivery_ratio: 0.9}
        """)
    sc = load_scenario(p)
    assert sc.name == "demo" and sc.time_scale == 10
    assert sc.node_names() == ["sat-0-0", "sat-0-1", "sat-1-0", "sat-1-1", "gs-a", "gs-b"]
    assert sc.ipn["sat-0-0"] == 1 and sc.ipn["gs-a"] == 5 and sc.ipn["gs-b"] == 100
    assert sc.sections["routing"] == {"algorithm": "cgr"}
    assert sc.sections["apps"] == [{"name": "x"}]
    assert sc.section_lines == {"routing": 10, "apps": 12, "expect": 14}
    assert sc.sections["routing"].line_of("algorithm") == 11
    routing = sc.section("routing")
    assert routing.string("algorithm") == "cgr" and routing.line == 10
    with pytest.raises(InputError) as ei:
        sc.section("apps").items()[0].check_keys(("nodes",))
    assert str(ei.value) == f"{p}:13: apps[0].name: unknown key 'name'; expected one of: nodes"
    assert sc.section("capture").is_none()


def test_omm_json_csv_xml(tmp_path: Path) -> None:
    import json

    from netemu.plan.orbit import load_omm

    rec = {
        "OBJECT_NAME": "DEMO 1", "OBJECT_ID": "2025-100A", "EPOCH": "2026-05-31T12:00:00.000000",
        "MEAN_MOTION": 15.2, "ECCENTRICITY": 0.0002, "INCLINATION": 97.5,
        "RA_OF_ASC_NODE": 10.0, "ARG_OF_PERICENTER": 90.0, "MEAN_ANOMALY": 45.0,
        "EPHEMERIS_TYPE": 0, "CLASSIFICATION_TYPE": "U", "NORAD_CAT_ID": 99001,
        "ELEMENT_SET_NO": 999, "REV_AT_EPOCH": 10, "BSTAR": 0.0001,
        "MEAN_MOTION_DOT": 0.0, "MEAN_MOTION_DDOT": 0,
    }
    (tmp_path / "a.json").write_text(json.dumps([rec, {**rec, "OBJECT_NAME": "DEMO 2",
                                                        "MEAN_ANOMALY": 60.0}]))
    (tmp_path / "a.csv").write_text(",".join(rec) + "\n" + ",".join(str(v) for v in rec.values()) + "\n")
    xml = "<ndm><omm><body><segment><metadata>" + "".join(
        f"<{k}>{rec[k]}</{k}>" for k in ("OBJECT_NAME", "OBJECT_ID")) + "</metadata><data><meanElements>" + "".join(
        f"<{k}>{rec[k]}</{k}>" for k in ("EPOCH", "MEAN_MOTION", "ECCENTRICITY", "INCLINATION",
                                         "RA_OF_ASC_NODE", "ARG_OF_PERICENTER", "MEAN_ANOMALY")
    ) + "</meanElements><tleParameters>" + "".join(
        f"<{k}>{rec[k]}</{k}>" for k in ("EPHEMERIS_TYPE", "CLASSIFICATION_TYPE", "NORAD_CAT_ID",
                                         "ELEMENT_SET_NO", "REV_AT_EPOCH", "BSTAR",
                                         "MEAN_MOTION_DOT", "MEAN_MOTION_DDOT")
    ) + "</tleParameters></data></segment></body></omm></ndm>"
    (tmp_path / "a.xml").write_text(xml)
    js = load_omm(tmp_path / "a.json")
    assert [n for n, _ in js] == ["DEMO 1", "DEMO 2"]
    for other in ("a.csv", "a.xml"):
        (name, sat), = load_omm(tmp_path / other)
        assert name == "DEMO 1"
        assert sat.no_kozai == pytest.approx(js[0][1].no_kozai)
        assert sat.nodeo == pytest.approx(js[0][1].nodeo)
    p = write(tmp_path, """
        epoch: 2026-06-01T00:00:00Z
        duration_s: 600
        satellites:
          - {omm: a.json, name_prefix: demo}
        """)
    assert load_scenario(p).node_names() == ["demo-0", "demo-1"]


# --- malformed scenarios: (yaml, line, field, words the message must contain) ----------

BASE = """
epoch: 2026-06-01T00:00:00Z
duration_s: 600
satellites:
  - walker: {planes: 1, sats_per_plane: 3, altitude_km: 550, inclination_deg: 53}
"""

BAD = {
    "misspelt top-level key": (BASE + "ground_station:\n  - {name: a, lat_deg: 1, lon_deg: 2}\n",
                               5, "ground_station", ["did you mean 'ground_stations'"]),
    "misspelt station key": (BASE + "ground_stations:\n  - {name: a, lat_dg: 1, lon_deg: 2}\n",
                             6, "ground_stations[0].lat_dg", ["did you mean 'lat_deg'"]),
    "misspelt walker key": (BASE.replace("altitude_km", "altitude_kn"), 4,
                            "satellites[0].walker.altitude_kn", ["did you mean 'altitude_km'"]),
    "misspelt topology": (BASE + "isl:\n  topology: plus_grid\n", 6, "isl.topology",
                          ["did you mean 'plus-grid'"]),
    "missing epoch": (BASE.replace("epoch: 2026-06-01T00:00:00Z\n", ""), 1, "epoch", ["missing"]),
    "bad epoch": (BASE.replace("2026-06-01T00:00:00Z", "yesterday"), 1, "epoch", ["ISO 8601"]),
    "negative duration": (BASE.replace("duration_s: 600", "duration_s: -5"), 2, "duration_s",
                          ["must be > 0"]),
    "text for a number": (BASE.replace("altitude_km: 550", "altitude_km: high"), 4,
                          "satellites[0].walker.altitude_km", ["expected a number"]),
    "shell metacharacter in name": (BASE + "ground_stations:\n  - {name: 'a;rm', lat_deg: 1, lon_deg: 2}\n",
                                    6, "ground_stations[0].name", ["only lowercase letters"]),
    "name too long": (BASE + "ground_stations:\n  - {name: a-very-long-station-name, lat_deg: 1, lon_deg: 2}\n",
                      6, "ground_stations[0].name", ["interface names allow 15"]),
    "latitude out of range": (BASE + "ground_stations:\n  - {name: a, lat_deg: 91, lon_deg: 2}\n",
                              6, "ground_stations[0].lat_deg", ["≤ 90"]),
    "duplicate names": (BASE + "ground_stations:\n  - {name: a, lat_deg: 1, lon_deg: 2}\n"
                        "  - {name: a, lat_deg: 3, lon_deg: 4}\n", 7, "ground_stations[1].name",
                        ["used twice"]),
    "walker and tle": (BASE.replace("  - walker:", "  - tle: x.tle\n    walker:"), 4,
                       "satellites[0]", ["exactly one of"]),
    "missing tle file": (BASE.replace("  - walker: {planes: 1, sats_per_plane: 3, altitude_km: 550, inclination_deg: 53}",
                                      "  - tle: nowhere.tle"), 4, "satellites[0].tle", ["cannot read"]),
    "missing walker key": (BASE.replace("planes: 1, ", ""), 4, "satellites[0].walker.planes",
                           ["missing required key"]),
    "bad phasing": (BASE.replace("planes: 1,", "planes: 2, phasing: 5,"), 4,
                    "satellites[0].walker.phasing", ["phasing"]),
    "link model with both": (BASE + "links:\n  isl: {rate_bps: 1.0e+9, budget: {}}\n", 6,
                             "links.isl", ["either"]),
    "misspelt link kind": (BASE + "links:\n  isls: {rate_bps: 1000}\n", 6, "links.isls",
                           ["did you mean 'isl'"]),
    "yaml syntax": (BASE + "ground_stations: [\n", 6, None, ["not valid YAML"]),
    "duplicate key": (BASE + "duration_s: 5\n", 5, None, ["duplicate key"]),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=str)
def test_malformed_scenario_errors(tmp_path: Path, case: str) -> None:
    text, line, field, words = BAD[case]
    p = tmp_path / "bad.yaml"
    p.write_text(text.lstrip("\n"))
    with pytest.raises(InputError) as ei:
        load_scenario(p)
    e = ei.value
    assert e.source == str(p)
    assert e.line == line, str(e)
    if field is not None:
        assert e.field == field, str(e)
    for w in words:
        assert w in str(e), str(e)
    assert str(e).startswith(f"{p}:{line}: ")


def test_cli_reports_bad_scenario_without_traceback(tmp_path: Path, capsys) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(BAD["misspelt station key"][0].lstrip("\n"))
    assert cli_main(["plan", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"{p}:6: ground_stations[0].lat_dg: unknown key 'lat_dg'; did you mean 'lat_deg'?" in err
    assert "Traceback" not in err


def test_links_schedule_and_group_isl(tmp_path: Path) -> None:
    p = write(tmp_path, """
        epoch: 2026-06-01
        duration_s: 600
        satellites:
          - walker: {planes: 2, sats_per_plane: 12, altitude_km: 550, inclination_deg: 53}
            isl: {topology: plus-grid, max_range_km: 4000}
          - walker: {planes: 1, sats_per_plane: 3, altitude_km: 600, inclination_deg: 97.5}
            name_prefix: other
        isl: {topology: ring}
        links:
          isl: {rate_bps: 1e9}
          gsl:
            loss: 0.01
            budget: {frequency_hz: 8.2e+9, eirp_dbw: 10, gt_dbk: 25, bandwidth_hz: 3.0e+8}
        schedule: {step_s: 20}
        """)
    sc = load_scenario(p)
    assert sc.epoch == datetime(2026, 6, 1, tzinfo=timezone.utc)
    assert sc.links["isl"].rate_bps == 1e9
    assert sc.links["gsl"].loss == 0.01 and sc.links["gsl"].budget.bandwidth_hz == 3e8
    assert sc.schedule.step_s == 20
    g0, g1 = sc.groups
    assert g0.isl.topology == "plus-grid" and g0.isl.max_range_km == 4000
    assert g1.isl.topology == "ring" and g1.isl.max_range_km == 5000
    assert sc.node_names()[-3:] == ["other-0", "other-1", "other-2"]
