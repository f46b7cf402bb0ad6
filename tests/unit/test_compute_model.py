"""The compute model: a scenario's compute: section, and the app kit turning an inference's
work into scenario time on the node, the same at every time scale."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "apps" / "_shared"))

import appkit  # noqa: E402

from netemu.errors import InputError  # noqa: E402
from netemu.plan.compute import NodeCompute, parse_compute  # noqa: E402
from netemu.plan.scenario import load_scenario  # noqa: E402
from netemu.runtime.clock import ScenarioClock  # noqa: E402
from netemu.runtime.env import HostEnv  # noqa: E402

BASE = """\
epoch: 2026-06-01T00:00:00Z
duration_s: 600
satellites:
  - walker: {planes: 1, sats_per_plane: 2, altitude_km: 550, inclination_deg: 53}
ground_stations:
  - {name: gs, lat_deg: 10, lon_deg: 10}
"""


def _scenario(tmp_path: Path, compute: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(BASE + textwrap.dedent(compute))
    return p


def test_compute_section_per_node_kind(tmp_path):
    sc = load_scenario(_scenario(tmp_path, """\
        compute:
          satellites: {tops: 744}
          ground: {tops: 50, efficiency: 0.5}
          host_tops: 0.02
        """))
    assert sc.compute is not None
    assert sc.compute.for_kind("satellite") == NodeCompute(744.0, 1.0)
    assert sc.compute.for_kind("ground").ops_per_s == pytest.approx(25e12)
    assert sc.compute.host_ops_per_s == pytest.approx(2e10)
    assert load_scenario(_scenario(tmp_path, "")).compute is None
    assert parse_compute({"satellites": {"tops": 1}}).for_kind("ground") is None


@pytest.mark.parametrize("body,line,field,why", [
    ("compute:\n  satellites: {tops: 0}\n", 8, "compute.satellites.tops", "must be >"),
    ("compute:\n  satellites: {tops: fast}\n", 8, "compute.satellites.tops", "expected a number"),
    ("compute:\n  satelites: {tops: 1}\n", 8, "compute.satelites", "satellites"),
    ("compute:\n  ground: {efficiency: 0.5}\n", 8, "compute.ground.tops", "missing"),
    ("compute:\n  ground: {tops: 5, efficiency: 1.5}\n", 8, "compute.ground.efficiency", "≤"),
    ("compute: 744\n", 7, "compute", "expected a mapping"),
])
def test_bad_compute_section_names_line_and_field(tmp_path, body, line, field, why):
    with pytest.raises(InputError) as e:
        load_scenario(_scenario(tmp_path, body))
    assert e.value.line == line and e.value.field == field, str(e.value)
    assert why in str(e.value)


def test_node_compute_reaches_the_app_through_its_environment():
    env = HostEnv(node="tb-1", app="eo-filter", compute_ops_per_s=744e12,
                  host_ops_per_s=1e10).to_env()
    assert HostEnv.from_env(env).compute_ops_per_s == 744e12
    with pytest.raises(InputError, match="NETEMU_COMPUTE_OPS_PER_S"):
        HostEnv.from_env({**env, "NETEMU_COMPUTE_OPS_PER_S": "-1"})


def test_queued_requests_wait_for_the_ones_before_them():
    c = appkit.Compute(1e12, clock=lambda: 0.0)
    assert c.delay_s(2e12) == 2.0
    assert c.schedule(10.0, 2e12) == (10.0, 12.0)
    assert c.schedule(11.0, 1e12) == (12.0, 13.0)  # queued 1 s behind the first
    assert c.schedule(20.0, 1e12) == (20.0, 21.0)  # idle again


@pytest.mark.parametrize("time_scale", [1.0, 10.0, 100.0])
def test_work_becomes_the_same_scenario_delay_at_every_time_scale(time_scale):
    """0.3 scenario seconds of modelled work: released 0.3 scenario s after arrival, which
    is 0.3 / time_scale wall seconds, whatever the host's CPU took."""
    clock = ScenarioClock.start(datetime(2026, 6, 1, tzinfo=timezone.utc), time_scale=time_scale)
    c = appkit.Compute(100e12, clock=clock.now_s, time_scale=time_scale)

    async def go():
        return await c.run(lambda: "answer", ops=30e12)

    w0 = time.time()
    value, rec = asyncio.run(go())
    wall_s = time.time() - w0
    assert value == "answer"
    assert rec.compute_s == pytest.approx(0.3) and rec.queueing_s == 0.0
    assert rec.released_s >= rec.finish_s == pytest.approx(rec.arrival_s + 0.3)
    assert wall_s >= 0.3 / time_scale * 0.95  # held back until the modelled finish
    assert c.stats()["requests"] == 1
    if time_scale <= 10:  # at x100 the 3 ms of wall time can be missed on a loaded machine
        assert c.late == 0


def test_modelled_work_follows_a_change_of_the_runs_time_scale(tmp_path):
    """An app in a run whose page may change the time scale (a clock file): 100 scenario
    seconds of modelled work at x1 end soon after the run goes to x1000, and an app's
    sleep_until does the same."""
    from netemu.runtime.clock import ClockFile

    writer = ClockFile(tmp_path / "clock", create=True)
    now = time.time()
    writer.write(now, 0.0, 1.0, paused=False)
    env = {**ScenarioClock(datetime(2026, 6, 1, tzinfo=timezone.utc), 1.0, now).to_env(),
           "NETEMU_CLOCK_FILE": str(tmp_path / "clock")}
    clock = appkit.make_clock(env)
    c = appkit.Compute(1e12, clock=clock, time_scale=appkit.time_scale(env), env=env)

    async def go():
        work = asyncio.ensure_future(c.run(lambda: "answer", ops=100e12))
        nap = asyncio.ensure_future(appkit.sleep_until(clock() + 150.0, clock, env))
        await asyncio.sleep(0.05)
        t = time.time()
        writer.write(t, clock(), 1000.0, paused=False)
        assert appkit.time_scale(env) == 1000.0
        return await asyncio.wait_for(asyncio.gather(work, nap), 10.0)

    (value, rec), stopped = asyncio.run(go())
    assert value == "answer" and stopped is False
    assert rec.released_s >= rec.finish_s == pytest.approx(rec.arrival_s + 100.0)
    assert clock() >= 150.0


def test_host_time_with_calibration_and_a_host_that_cannot_keep_up(capsys):
    """Work reported as host time: 20 ms at a calibration of 1e12 op/s is 2e10 ops, 0.2 s
    on a 0.1 TOPS node. At x1000 those 20 ms of host CPU are 20 scenario s: late."""
    t = [0.0]
    c = appkit.Compute(1e11, clock=lambda: t[0], time_scale=1000.0, host_ops_per_s=1e12,
                       name="probe")

    def slow_work():
        time.sleep(0.02)
        t[0] += 20.0  # the scenario clock ran on while the host worked
        return 1

    _, rec = asyncio.run(c.run(slow_work))
    assert rec.ops == pytest.approx(rec.host_s * 1e12)
    assert rec.compute_s == pytest.approx(rec.host_s * 1e12 / 1e11)
    assert rec.lag_s == pytest.approx(20.0 - rec.compute_s)
    assert c.late == 1
    assert "probe: WARNING: the host cannot keep up at x1000" in capsys.readouterr().err


def test_without_declared_compute_the_host_time_counts():
    t = [5.0]

    def work():
        t[0] += 0.7
        return 1

    c = appkit.Compute(None, clock=lambda: t[0], time_scale=10.0)
    _, rec = asyncio.run(c.run(work, ops=1e9))
    assert rec.compute_s == pytest.approx(0.7) and rec.lag_s == 0.0
