"""A live run's clock controls: pause, resume and a change of time scale through the run's
clock file (RunPause), and the view's controls for them (the WebSocket, POST /control)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from netemu.errors import InputError
from netemu.run.pause import RunPause, clock_record
from netemu.run.view.geo import Positions
from netemu.run.view.server import ViewServer
from netemu.run.view.timeline import LiveTimeline
from netemu.runtime.clock import ClockSegment, ScenarioClock, scenario_s_at

EPOCH = datetime(2026, 6, 1, tzinfo=timezone.utc)


def pauser(tmp_path: Path, msgs: list[dict[str, Any]], scale: float = 10.0,
           processes: Any = list) -> RunPause:
    p = RunPause(tmp_path / "clock", ScenarioClock.start(EPOCH, time_scale=scale, t0_s=100.0),
                 processes=processes, publish=msgs.append)
    p.enabled = True
    return p


def test_a_new_time_scale_reaches_every_clock_of_the_run_without_a_jump(tmp_path: Path) -> None:
    msgs: list[dict[str, Any]] = []
    pc = pauser(tmp_path, msgs)
    other = ScenarioClock.from_env(pc.clock.to_env())  # an agent's or an app's clock
    assert other.scale_now() == 10.0
    before = other.now_s()
    assert pc.set_scale(1000.0)
    after = other.now_s()
    assert other.scale_now() == 1000.0 and other.time_scale == 10.0
    assert before <= msgs[-1]["t_s"] <= after < msgs[-1]["t_s"] + 5.0  # went on from there
    assert msgs[-1] == {"event": "scale", "t_s": msgs[-1]["t_s"], "time_scale": 1000.0,
                        "wall": pc.segments[-1].t0_wall, "paused": False}
    w = time.time()
    assert other.wall_at(other.now_s(w) + 500.0) == pytest.approx(w + 0.5)


def stopped(pid: int, wait_s: float = 2.0) -> bool:
    """Whether the process shows as stopped within ``wait_s`` (a SIGSTOP just sent can
    take a moment to show on a loaded machine)."""
    deadline = time.monotonic() + wait_s
    while True:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


def test_a_paused_run_stays_paused_at_a_new_scale_and_resumes_at_it(tmp_path: Path) -> None:
    msgs: list[dict[str, Any]] = []
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        pc = pauser(tmp_path, msgs, processes=lambda: [sleeper.pid])
        assert pc.pause()
        t = pc.clock.now_s()
        assert pc.set_scale(2.0)
        assert pc.clock.paused and pc.clock.now_s(time.time() + 100) == t
        assert stopped(sleeper.pid)  # still stopped
        assert pc.resume()
        assert pc.clock.scale_now() == 2.0 and not pc.clock.paused
        assert pc.clock.now_s(time.time() + 10) == pytest.approx(t + 20, abs=0.5)
        assert [m["event"] for m in msgs] == ["paused", "scale", "resumed"]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_runs_record_maps_wall_time_across_a_pause_and_a_change_of_scale(
        tmp_path: Path) -> None:
    """Every mapping the clock file held is kept (run.json's clock), so a wall time taken
    during the run (a packet's) maps to the scenario time the run's clocks read then."""
    msgs: list[dict[str, Any]] = []
    pc = pauser(tmp_path, msgs)
    seen: list[tuple[float, float]] = []  # (wall, what the run's clock read)

    def look() -> None:
        w = time.time()
        seen.append((w, pc.clock.now_s(w)))

    look()
    assert pc.pause()
    time.sleep(0.05)
    look()
    assert pc.resume() and pc.set_scale(1000.0)
    time.sleep(0.02)
    look()
    record = clock_record(pc.clock, pc.segments)
    segs = [ClockSegment.from_obj(s) for s in record["segments"]]
    assert [s.paused for s in segs] == [False, True, False, False]
    assert record["time_scale"] == 10.0 and record["time_scale_end"] == 1000.0
    assert record["paused_wall_s"] >= 0.05
    for w, t in seen:
        assert scenario_s_at(segs, w) == pytest.approx(t, abs=1e-6)
    # the clock messages carry the same segments
    assert [(m["wall"], m["t_s"], m["time_scale"], m["paused"]) for m in msgs] == \
        [(s.t0_wall, s.t0_s, s.time_scale, s.paused) for s in segs[1:]]


@pytest.mark.parametrize("x", [0, -1.0, 1e9, float("nan")])
def test_a_time_scale_out_of_range_is_refused(tmp_path: Path, x: float) -> None:
    pc = pauser(tmp_path, [])
    with pytest.raises(InputError, match="time scale"):
        pc.set_scale(x)
    assert pc.clock.scale_now() == 10.0


def test_no_scale_change_before_the_window_opens(tmp_path: Path) -> None:
    pc = pauser(tmp_path, [])
    pc.enabled = False
    assert not pc.set_scale(20.0) and pc.clock.scale_now() == 10.0


def test_the_views_controls_set_the_scale_of_a_live_run(tmp_path: Path) -> None:
    """The page (WebSocket) and a script (POST /control) change the run's time scale; a
    bad value is answered with the reason; another site's page cannot post."""
    pc = pauser(tmp_path, [])
    tl = LiveTimeline(SimpleNamespace(topic_prefix="netemu/t", run="t"), lambda: pc.clock)
    tl.start = lambda *a, **k: None  # type: ignore[method-assign]  # no broker here
    tl.pause_control = pc
    server = ViewServer(tl, {"nodes": {}, "contacts": []}, Positions(None), run="t")
    url = server.start()
    try:
        async def talk() -> tuple[Any, ...]:
            async with aiohttp.ClientSession() as s:
                r = await s.post(url + "control", json={"type": "speed", "x": 50})
                ok = (r.status, await r.json())
                r = await s.post(url + "control", json={"type": "speed", "x": 0})
                bad = (r.status, await r.json())
                r = await s.post(url + "control", json={"type": "seek", "t_s": 5})
                seek = (r.status, await r.json())
                r = await s.post(url + "control", json={"type": "speed", "x": 5},
                                 headers={"Origin": "http://evil.example"})
                evil = r.status
                async with s.ws_connect(url + "ws") as ws:
                    await ws.send_str(json.dumps({"type": "speed", "x": "fast"}))
                    while (m := json.loads((await ws.receive(timeout=5)).data))["type"] != "error":
                        pass
                    await ws.send_str(json.dumps({"type": "speed", "x": 25}))
                    while (t := json.loads((await ws.receive(timeout=5)).data))["type"] != "tick" \
                            or t["time_scale"] != 25:
                        pass
                return ok, bad, seek, evil, m, t

        ok, bad, seek, evil, err, tick = asyncio.run(talk())
    finally:
        server.stop()
    assert ok[0] == 200 and ok[1]["time_scale"] == 50 and ok[1]["replay"]["speed"] == 50
    assert bad[0] == 400 and "time scale must be > 0" in bad[1]["error"]
    assert seek[0] == 400 and "cannot seek" in seek[1]["error"]
    assert evil == 403
    assert "x must be a number" in err["message"]
    assert tick["replay"] == {"can_pause": True, "playing": True, "speed": 25.0}
    assert pc.clock.scale_now() == 25.0
