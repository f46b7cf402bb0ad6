"""Inputs a careless or hostile user may give: each is refused with an error that names
what was wrong and where (file:line and field when a file is involved), never a
traceback and never a silent NaN."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sgp4.exporter import export_tle

from netemu.cli import main
from netemu.errors import InputError
from netemu.plan import schedule
from netemu.plan.contacts import ContactPlan
from netemu.plan.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "topologies" / "tiny.yaml"

WALKER = "  - walker: {planes: 1, sats_per_plane: 3, altitude_km: 550, inclination_deg: 53}\n"


def scenario(tmp_path: Path, body: str, *, epoch: str = "2026-06-01T00:00:00Z",
             duration_s: str = "600", name: str = "s.yaml") -> Path:
    p = tmp_path / name
    p.write_text(f"epoch: {epoch}\nduration_s: {duration_s}\nsatellites:\n{body}")
    return p


def tle_lines(tmp_path: Path) -> tuple[str, str]:
    sc = load_scenario(scenario(tmp_path, WALKER, name="gen.yaml"))
    l1, l2 = export_tle(sc.satellites[0].satrec)
    return l1, l2


def refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error text of a command line that must be refused (argparse or InputError)."""
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code  # type: ignore[assignment]
    assert rc == 2
    return capsys.readouterr().err


# --- epoch ----------------------------------------------------------------------------


def test_malformed_epoch_names_the_line_and_field(tmp_path: Path) -> None:
    p = scenario(tmp_path, WALKER, epoch="2026-13-01T00:00:00Z")
    with pytest.raises(InputError) as e:
        load_scenario(p)
    assert (e.value.source, e.value.line, e.value.field) == (str(p), 1, "epoch")
    assert "2026-13-01" in e.value.message


# --- binary files ---------------------------------------------------------------------


def test_binary_tle_file_is_not_a_text_file(tmp_path: Path) -> None:
    (tmp_path / "bin.tle").write_bytes(b"\xff\xfe\x00garbage\x80")
    p = scenario(tmp_path, "  - tle: bin.tle\n")
    with pytest.raises(InputError) as e:
        load_scenario(p)
    assert e.value.line == 4 and e.value.field == "satellites[0].tle"
    assert "bin.tle" in str(e.value) and "not a text file" in str(e.value)


def test_binary_omm_file_is_not_a_text_file(tmp_path: Path) -> None:
    (tmp_path / "bin.xml").write_bytes(b"<\xff\xfe\x00")
    p = scenario(tmp_path, "  - omm: bin.xml\n")
    with pytest.raises(InputError, match="bin.xml.*not a text file"):
        load_scenario(p)


def test_binary_ion_plan_is_not_a_text_file(tmp_path: Path) -> None:
    p = tmp_path / "bin.ion"
    p.write_bytes(b"a contact +0 +10 1 2 \xff\xff\n")
    with pytest.raises(InputError) as e:
        ContactPlan.load(p)
    assert e.value.source == str(p) and "not a text file" in e.value.message


def test_binary_scenario_is_not_a_text_file(tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"\xff\xfe\x00\x80binary")
    with pytest.raises(InputError, match="bin.yaml.*not a text file"):
        load_scenario(p)


# --- OMM XML --------------------------------------------------------------------------


def test_malformed_omm_xml_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "bad.xml").write_text("<ndm>\n<omm><body><segment><data>oops</data>\n")
    p = scenario(tmp_path, "  - omm: bad.xml\n")
    with pytest.raises(InputError) as e:
        load_scenario(p)
    assert e.value.field == "satellites[0].omm"
    assert "bad.xml" in e.value.message and "not valid XML" in e.value.message
    assert "line 3" in e.value.message


# --- TLE checksum ---------------------------------------------------------------------


@pytest.mark.parametrize("which", [1, 2])
def test_tle_with_a_corrupted_checksum_is_refused(tmp_path: Path, which: int) -> None:
    l1, l2 = tle_lines(tmp_path)
    good = int((l1 if which == 1 else l2)[68])
    bad = (good + 3) % 10
    if which == 1:
        l1 = l1[:68] + str(bad)
    else:
        l2 = l2[:68] + str(bad)
    (tmp_path / "c.tle").write_text(f"TESTSAT\n{l1}\n{l2}\n")
    p = scenario(tmp_path, "  - tle: c.tle\n")
    with pytest.raises(InputError) as e:
        load_scenario(p)
    msg = e.value.message
    assert f"c.tle:{which + 1}" in msg and "checksum" in msg
    assert f"expected {good}" in msg and f"found {bad}" in msg


def test_tle_with_good_checksums_loads(tmp_path: Path) -> None:
    l1, l2 = tle_lines(tmp_path)
    (tmp_path / "c.tle").write_text(f"TESTSAT\n{l1}\n{l2}\n")
    assert len(load_scenario(scenario(tmp_path, "  - tle: c.tle\n")).satellites) == 1


# --- NaN and infinity -----------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_plan_duration_must_be_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      value: str) -> None:
    ion = tmp_path / "ok.ion"
    ion.write_text("a contact +0 +100 1 2 100\na range +0 +100 1 2 1\n")
    for src in (str(TINY), str(ion)):
        err = refused(["plan", "-q", src, f"--duration={value}"], capsys)
        assert "--duration" in err and "finite" in err
        err = refused(["plan", "-q", src, f"--start={value}"], capsys)
        assert "--start" in err and "finite" in err


@pytest.mark.parametrize("flag", ["--at", "--deadline", "--horizon"])
def test_route_times_must_be_finite(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    flag: str) -> None:
    ion = tmp_path / "ok.ion"
    ion.write_text("a contact +0 +100 1 2 100\na range +0 +100 1 2 1\n")
    err = refused(["route", str(ion), "--from", "1", "--to", "2", flag, "nan", "--json"],
                  capsys)
    assert flag in err and "finite" in err


@pytest.mark.parametrize("flag", ["--time-scale", "--start-s", "--duration-s", "--tick-s"])
def test_run_times_must_be_finite(capsys: pytest.CaptureFixture[str], flag: str) -> None:
    err = refused(["run", str(TINY), flag, "nan"], capsys)
    assert flag in err and "finite" in err


@pytest.mark.parametrize("line", [
    "a contact +nan +10 1 2 100",
    "a contact +0 +inf 1 2 100",
    "a contact +0 +10 1 2 nan",
    "a contact +0 +10 1 2 inf",
    "a contact +0 +10 1 2 100 nan",
    "a range +0 +nan 1 2 1",
    "a range +0 +10 1 2 inf",
])
def test_ion_numbers_must_be_finite(line: str) -> None:
    with pytest.raises(InputError) as e:
        ContactPlan.from_ion(f"# x\n{line}\n", source="p.ion")
    assert (e.value.source, e.value.line) == ("p.ion", 2)
    assert "finite" in e.value.message


@pytest.mark.parametrize("key", ["start_s", "end_s", "rate_bps", "owlt_s", "loss",
                                 "confidence"])
def test_json_plan_numbers_must_be_finite(key: str) -> None:
    c = {"from": "a", "to": "b", "start_s": 0, "end_s": 10, "rate_bps": 8, "owlt_s": 0.1,
         "loss": 0.0, "confidence": 1.0}
    c[key] = float("nan")
    import json
    text = json.dumps({"epoch": "2026-01-01T00:00:00Z", "nodes": {"a": 1, "b": 2},
                       "contacts": [c]})
    with pytest.raises(InputError) as e:
        ContactPlan.from_json(text, source="p.json")
    assert e.value.field == "contacts[0]" and key in e.value.message


# --- sizes ----------------------------------------------------------------------------


def test_ten_year_plan_is_refused_with_an_estimate(capsys: pytest.CaptureFixture[str],
                                                   tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule, "available_memory_bytes", lambda: 16 * 2**30)
    walker66 = ("  - walker: {planes: 6, sats_per_plane: 11, altitude_km: 780, "
                "inclination_deg: 86.4, pattern: star}\n")
    p = scenario(tmp_path, walker66, duration_s=str(10 * 365 * 86400))
    err = refused(["plan", "-q", str(p)], capsys)
    assert "GiB" in err and "66 satellites" in err and "--duration" in err
    assert "Traceback" not in err
    # a day of it is fine
    assert main(["plan", "-q", str(p), "--duration", "3600", "-o", str(tmp_path / "p.ion")]) == 0


def test_plan_size_estimate_counts_contacts_per_day() -> None:
    """Contacts per day measured on one orbit, times days: close to the real count."""
    sc = load_scenario(ROOT / "topologies" / "iridium-next.yaml")
    est = schedule.estimate_plan_bytes(sc, 0.0, 2 * 86400.0, sc.schedule.step_s)
    real = len(schedule.compute_plan(sc, duration_s=2 * 86400.0).contacts)
    assert est.contacts is not None and 0.8 * real <= est.contacts <= 1.5 * real
    # ten years of three satellites fit in a few GiB: not refused
    tiny = load_scenario(TINY)
    ten = schedule.estimate_plan_bytes(tiny, 0.0, 3650 * 86400.0, 30.0)
    assert ten.total_bytes < 8 * 2**30


def test_walker_beyond_the_sgp4_catalogue_is_refused(tmp_path: Path) -> None:
    p = scenario(tmp_path, "  - walker: {planes: 1000, sats_per_plane: 1000, altitude_km: 550, "
                           "inclination_deg: 53}\n")
    with pytest.raises(InputError) as e:
        load_scenario(p)
    assert e.value.line == 4 and e.value.field == "satellites[0].walker"
    assert "1000000" in e.value.message.replace(",", "") and "339999" in \
        e.value.message.replace(",", "")


# --- names ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../../escaped", "a/b", ".hidden", "", "x" * 65,
                                  "white space"])
def test_scenario_name_cannot_leave_runs(tmp_path: Path, name: str) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(f"""\
        name: {name!r}
        epoch: 2026-06-01T00:00:00Z
        duration_s: 600
        satellites:
        {WALKER}"""))
    with pytest.raises(InputError) as e:
        load_scenario(p)
    assert (e.value.line, e.value.field) == (1, "name")


def test_scenario_name_from_an_odd_file_name_is_made_safe(tmp_path: Path) -> None:
    p = scenario(tmp_path, WALKER, name="my plan (v2).yaml")
    assert load_scenario(p).name == "my-plan-v2"


def test_run_directory_stays_under_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from netemu.runtime.rundir import default_run_dir

    monkeypatch.chdir(tmp_path)
    d = default_run_dir("tiny", "20260601-000000")
    assert d.parent == tmp_path / "runs" and d.name == "tiny-20260601-000000"
    with pytest.raises(InputError):
        default_run_dir("../../../escaped", "20260601-000000")


# --- bp --lifetime --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-5", "1e300"])
def test_bp_send_lifetime_is_checked_at_the_command_line(
        capsys: pytest.CaptureFixture[str], value: str) -> None:
    err = refused(["bp", "--socket", "/nonexistent", "send", "ipn:2.1", "--data", "x",
                   "--lifetime", value], capsys)
    assert "--lifetime" in err and "seconds" in err


def test_bp_client_refuses_an_unusable_lifetime() -> None:
    import asyncio

    from netemu.agent.client import BpClient

    bp = BpClient.__new__(BpClient)
    for bad in (float("inf"), float("nan"), 0.0, 1e300):
        with pytest.raises(InputError, match="lifetime_s"):
            asyncio.run(bp.send("ipn:2.1", b"x", lifetime_s=bad))
