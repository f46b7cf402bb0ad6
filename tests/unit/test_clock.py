"""The scenario clock: wall time ↔ scenario time, and its environment round trip."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import pytest

from netemu.errors import InputError
from netemu.runtime.clock import RECHECK_S, ClockFile, ScenarioClock, sleep_until

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
    writer.write(1002.0, 20.0, 10.0, paused=True)  # paused at t = 20 s
    # another process: the clock rebuilt from the environment reads the same file
    other = ScenarioClock.from_env(c.to_env())
    for clk in (c, other):
        assert clk.paused and clk.now_s(1100.0) == 20.0
        assert clk.wall_at(25.0) == float("inf")
    writer.write(2000.0, 20.0, 10.0, paused=False)  # resumed 998 s of wall time later
    assert other.now_s(2001.0) == pytest.approx(30.0) and not other.paused
    assert other.wall_at(40.0) == pytest.approx(2002.0)


def test_a_clock_file_changes_the_time_scale_of_every_clock_that_reads_it(tmp_path):
    path = tmp_path / "clock"
    writer = ClockFile(path, create=True)
    c = ScenarioClock(EPOCH, time_scale=10.0, t0_wall=1000.0, t0_s=0.0, clock_file=str(path))
    writer.write(1000.0, 0.0, 10.0, paused=False)
    other = ScenarioClock.from_env(c.to_env())
    # at wall 1002 (scenario 20 s) the run goes to x50: scenario time goes on from 20 s
    writer.write(1002.0, 20.0, 50.0, paused=False)
    for clk in (c, other):
        assert clk.scale_now() == 50.0 and clk.time_scale == 10.0
        assert clk.now_s(1003.0) == pytest.approx(70.0)
        assert clk.wall_at(120.0) == pytest.approx(1004.0)
    # a timer on a clock that may change reads it again within RECHECK_S of wall time
    assert other.timer_s(120.0, wall=1002.0) == RECHECK_S
    assert other.timer_s(30.0, wall=1002.0) == pytest.approx(0.2)
    assert other.timer_s(10.0, wall=1002.0) == 0.0
    # a fixed clock's timer sleeps the whole way
    assert ScenarioClock(EPOCH, 10.0, 1000.0).timer_s(120.0, wall=1000.0) == pytest.approx(12.0)
    with pytest.raises(ValueError, match="time scale"):
        writer.write(1002.0, 20.0, 0.0, paused=False)


def test_sleep_until_follows_a_change_of_time_scale(tmp_path):
    """A sleep for 1,000 scenario seconds at x1 ends soon after the clock goes to x1e5
    (the time scale changed under it, as from the page)."""
    path = tmp_path / "clock"
    writer = ClockFile(path, create=True)
    now = time.time()
    writer.write(now, 0.0, 1.0, paused=False)
    c = ScenarioClock(EPOCH, 1.0, now, 0.0, clock_file=str(path))

    async def main() -> float:
        task = asyncio.ensure_future(sleep_until(c, 1000.0))
        await asyncio.sleep(0.05)
        t = time.time()
        writer.write(t, c.now_s(t), 1e5, paused=False)
        await asyncio.wait_for(task, 30.0)
        return c.now_s()

    assert asyncio.run(main()) >= 1000.0


def test_a_missing_clock_file_is_named():
    env = {**ScenarioClock(EPOCH, t0_wall=1.0).to_env(), "NETEMU_CLOCK_FILE": "/nonexistent/c"}
    with pytest.raises(InputError, match="NETEMU_CLOCK_FILE"):
        ScenarioClock.from_env(env)
