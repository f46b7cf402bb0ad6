"""``netemu test --view``: the scenario runner serves the view of its run, bridged from
the run's broker with the run's credentials (tiny.yaml, 60 s at ×10, no agents)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_netemu_test_view_streams_the_runs_links(tmp_path: Path) -> None:
    sc = tmp_path / "tiny-view.yaml"
    sc.write_text((ROOT / "topologies" / "tiny.yaml").read_text()
                  + "\nemulation: {start_s: 0, duration_s: 60, time_scale: 10, agents: false}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "netemu", "test", str(sc), "--view", "--no-report",
         "--out", str(tmp_path / "runs"), "--run-name", f"tv{uuid.uuid4().hex[:4]}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            out.append(line)
            m = re.search(r"live view at (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, "".join(out)

        async def first_link_up() -> tuple[dict, float]:
            """The first link seen up, and the first scenario time once the clock runs."""
            up: dict = {}
            async with aiohttp.ClientSession() as s, s.ws_connect(url + "ws") as ws:
                while True:
                    m = json.loads(await ws.receive_str(timeout=90))
                    up.update({k: v for k, v in m.get("links", {}).items()
                               if v["state"] == "up"})
                    if up and m.get("t_s") is not None:
                        return next(iter(up.values())), m["t_s"]

        link, t_s = asyncio.run(first_link_up())
        assert link["rate_bps"] > 0 and t_s >= 0
    finally:
        rest, _ = proc.communicate(timeout=180)
        out.append(rest)
    assert proc.returncode == 0, "".join(out)


def test_pause_and_time_scale_from_the_page_reach_every_process(tmp_path: Path) -> None:
    """tiny.yaml with a bundle agent on every node and a flow sending every 2 s, 120 s at
    ×10. The page pauses the run for 3 s of wall time: its scenario time stands, nothing is
    published meanwhile, and after the resume the emulator and the agents go on from the
    paused time (their clocks did not jump by the pause). Then the page sets ×30: the
    page, the emulator and the agents' timers go on at the new pace."""
    scale, fast = 10.0, 30.0
    sc = tmp_path / "tiny-pause.yaml"
    sc.write_text((ROOT / "topologies" / "tiny.yaml").read_text()
                  + f"\nemulation: {{start_s: 0, duration_s: 120, time_scale: {scale:g}}}\n"
                  "telemetry: {counters_s: 2}\n"
                  "traffic: {flows: [{name: beat, from: [bangalore], to: kashi, "
                  "interval_s: 2, size_bytes: 100, lifetime_s: 3600}]}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "netemu", "test", str(sc), "--view", "--no-report",
         "--out", str(tmp_path / "runs"), "--run-name", f"tp{uuid.uuid4().hex[:4]}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    out: list[str] = []
    try:
        assert proc.stdout is not None
        url = None
        for line in proc.stdout:
            out.append(line)
            m = re.search(r"live view at (http://127\.0\.0\.1:\d+/)", line)
            if m:
                url = m.group(1)
                break
        assert url, "".join(out)

        async def pause_resume_and_speed_up() -> tuple[float, list[float], list[dict]]:
            async with aiohttp.ClientSession() as s, s.ws_connect(url + "ws") as ws:
                async def tick() -> dict:
                    while True:
                        m = json.loads((await ws.receive(timeout=120)).data)
                        if m["type"] in ("hello", "tick"):
                            return m

                m = await tick()
                while not (m["replay"].get("can_pause") and (m["t_s"] or 0) > 20):
                    m = await tick()
                await ws.send_str(json.dumps({"type": "pause"}))
                while m["time_scale"] != 0:
                    m = await tick()
                paused_t = m["t_s"]
                seen = []
                loop = asyncio.get_running_loop()
                end = loop.time() + 3.0
                while loop.time() < end:
                    seen.append((await tick())["t_s"])
                await ws.send_str(json.dumps({"type": "play"}))
                while m["time_scale"] == 0 or m["t_s"] < paused_t + 10:
                    m = await tick()
                await ws.send_str(json.dumps({"type": "speed", "x": fast}))
                while m["time_scale"] != fast:
                    m = await tick()
                fast_ticks = [m]
                end = loop.time() + 1.5
                while loop.time() < end and fast_ticks[-1]["t_s"] < 110:
                    fast_ticks.append(await tick())
                return paused_t, seen, fast_ticks

        paused_t, seen, fast_ticks = asyncio.run(pause_resume_and_speed_up())
        assert seen and all(t == paused_t for t in seen)  # the page's clock stood
        # the page's scenario time goes ×30 as fast as wall time (generously)
        a, b = fast_ticks[0], fast_ticks[-1]
        assert b["wall"] - a["wall"] > 0.5, fast_ticks
        assert 20 < (b["t_s"] - a["t_s"]) / (b["wall"] - a["wall"]) < 40, fast_ticks
    finally:
        rest, _ = proc.communicate(timeout=240)
        out.append(rest)
    assert proc.returncode == 0, "".join(out)

    events = [json.loads(x) for x in
              (tmp_path / "runs" / "tiny" / "events.jsonl").read_text().splitlines()]
    clock = {e["payload"]["event"]: e for e in events if e["topic"].endswith("/clock")}
    t_fast, w_fast = clock["scale"]["payload"]["t_s"], clock["scale"]["wall"]
    assert clock["scale"]["payload"]["time_scale"] == fast
    # the emulator shaped its links at the new scale (on its next tick)
    shaped = clock["shaped"]
    assert shaped["payload"]["time_scale"] == fast and shaped["payload"]["directions"] > 0
    t_pause = clock["paused"]["payload"]["t_s"]
    w_pause, w_resume = clock["paused"]["wall"], clock["resumed"]["wall"]
    assert clock["resumed"]["payload"]["t_s"] == t_pause
    assert abs(t_pause - paused_t) < 1.0
    assert w_resume - w_pause > 2.5

    def own(e: dict) -> bool:
        return not e["topic"].endswith(("/clock", "/recorder"))

    # nothing published while paused (a message already on its way at the pause aside)
    during = [e for e in events if own(e) and w_pause + 0.5 < e["wall"] < w_resume]
    assert not during, during[:3]
    # after the resume, scenario time goes on from the paused time in the emulator (link
    # events) and in the agents (counters read on their clocks); a clock that ignored the
    # pause would be ahead by its length (30 scenario seconds)
    after = [e for e in events if own(e) and w_resume + 0.2 < e["wall"] < w_fast
             and isinstance(e["payload"].get("t_s"), (int, float))]
    kinds = {e["topic"].split("/")[2] for e in after}
    assert {"counters"} <= kinds, kinds
    for e in after:
        want = t_pause + (e["wall"] - w_resume) * scale
        assert e["payload"]["t_s"] <= want + 3.0, (e, want)
    # and the window still ran its whole length in scenario time, at ×30 in the emulator
    # after the change (its clock read when the window ended)
    ended = [e for e in events if e["topic"].endswith("/run")
             and e["payload"].get("event") == "ended"]
    assert ended and ended[0]["payload"]["t_s"] >= 119.0
    pace = (ended[0]["payload"]["t_s"] - t_fast) / (ended[0]["wall"] - w_fast)
    assert 15 < pace < 45, pace
    # the agent's flow timers went ×30 too: the sends after the change were on time (an
    # agent that slept at ×10 would send each a few scenario seconds late: late_s)
    sent = [json.loads(x) for x in (tmp_path / "runs" / "tiny" / "agents" / "bangalore"
                                    / "traffic.jsonl").read_text().splitlines()]
    sent = [r for r in sent if r["ev"] == "sent" and r["t_s"] > t_fast + 2]
    assert len(sent) >= 10, sent
    late = [r for r in sent if "late_s" in r]
    assert len(late) <= len(sent) // 4, late
