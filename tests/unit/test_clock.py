"""The scenario clock: wall time ↔ scenario time, and its environment round trip."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from netemu.errors import InputError
from netemu.runtime.clock import ClockFile, ScenarioClock

EPOCH = datetime(2026, 6, 1, tzinfo=timezone.utc)


def test_scenario_time_advances_at_the_time_scale():
    c = ScenarioClock(EPOCH, time_scale=10.0, t0_wall=1000.0, t0_s=50.0)
    assert c.now_s(1000.0) == 50.0
    assert c.now_s(1002.5) == pytest.approx(75.0)
    assert c.wall_at(75.0) == pytest.approx(1002.5)
    assert c.utc_at(60.0) == datetime(2026, 6, 1, 0, 1, tzinfo=timezone.utc)


def test_environment_round_trip_gives_the_same_readings():
    c = ScenarioClock(EPOCH, time_scale=2.5, t0_wall=1_780_000_000.123456, t0_s=12.0)
    env = c.to_env()
    assert env["NETEMU_EPOCH"] == "2026-06-01T00:00:00Z"
    back = ScenarioClock.from_env(env)
    for w in (1_780_000_000.5, 1_780_000_100.0):
        assert back.now_s(w) == pytest.approx(c.now_s(w), abs=1e-5)


def test_dtn_time_counts_ms_from_2000():
    c = ScenarioClock(datetime(2000, 1, 1, tzinfo=timezone.utc), t0_wall=0.0)
    assert c.dtn_time_ms(1.5) == 1500


def test_missing_or_bad_environment_is_reported():
    with pytest.raises(InputError, match="NETEMU_EPOCH"):
        ScenarioClock.from_env({})
    with pytest.raises(InputError, match="NETEMU_TIME_SCALE"):
        ScenarioClock.from_env({"NETEMU_EPOCH": "2026-01-01T00:00:00Z", "NETEMU_T0_WALL": "1",
                                "NETEMU_TIME_SCALE": "fast"})
    with pytest.raises(InputError, match="time scale"):
        ScenarioClock(EPOCH, time_scale=0)


def test_a_clock_file_pauses_and_resumes_every_clock_that_reads_it(tmp_path):
    path = tmp_path / "clock"
    writer = ClockFile(path, create=True)
    assert writer.read() is None  # nothing written yet: the fixed mapping holds
    c = ScenarioClock(EPOCH, time_scale=10.0, t0_wall=1000.0, t0_s=0.0, clock_file=str(path))
    assert c.now_s(1001.0) == 10.0
    writer.write(1002.0, 20.0, paused=True)  # paused at t = 20 s
    # another process: the clock rebuilt from the environment reads the same file
    other = ScenarioClock.from_env(c.to_env())
    for clk in (c, other):
        assert clk.paused and clk.now_s(1100.0) == 20.0
        assert clk.wall_at(25.0) == float("inf")
    writer.write(2000.0, 20.0, paused=False)  # resumed 998 s of wall time later
    assert other.now_s(2001.0) == pytest.approx(30.0) and not other.paused
    assert other.wall_at(40.0) == pytest.approx(2002.0)


def test_a_missing_clock_file_is_named():
    env = {**ScenarioClock(EPOCH, t0_wall=1.0).to_env(), "NETEMU_CLOCK_FILE": "/nonexistent/c"}
    with pytest.raises(InputError, match="NETEMU_CLOCK_FILE"):
        ScenarioClock.from_env(env)
