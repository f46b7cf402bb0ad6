"""The live view's parts without a browser: the state built from telemetry messages, the
replay of a run's record, the server's WebSocket, the coastlines, the command line."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from synthetic_run import make_run

from netemu.analysis import coastlines
from netemu.errors import InputError
from netemu.run.view.launch import replay_view
from netemu.run.view.state import ViewState

ROOT = Path(__file__).resolve().parents[2]


def test_link_states_follow_up_update_and_down_of_either_direction() -> None:
    s = ViewState()
    s.apply("link/gs-a/sat-1", {"event": "up", "t_s": 1, "link": "gsl", "rate_bps": 8e6})
    assert s.links["gs-a|sat-1"].state == "up"
    s.apply("link/sat-1/gs-a", {"event": "down", "t_s": 5, "direction": "sat-1->gs-a"})
    assert s.links["gs-a|sat-1"].state == "half"  # one direction stopped, one goes on
    s.apply("link/sat-1/gs-a", {"event": "down", "t_s": 6})
    assert s.links["gs-a|sat-1"].state == "down"
    links, _, _ = s.take_changes(6)
    assert links["gs-a|sat-1"]["state"] == "down" and links["gs-a|sat-1"]["rate_bps"] == 8e6
    assert s.take_changes(6) == ({}, [], [])  # deltas only


def test_link_load_from_bundles_forwarded_over_it() -> None:
    s = ViewState()
    s.apply("link/sat-1/sat-2", {"event": "up", "t_s": 0, "rate_bps": 8000.0})
    s.apply("bundle/sat-1", {"event": "forwarded", "t_s": 5, "size_bytes": 5000,
                             "next_hop": "sat-2"})
    # 40,000 bits over 10 s at 8 kb/s: half the link
    assert s.links["sat-1|sat-2"].load(6.0) == pytest.approx(0.5)
    assert s.links["sat-1|sat-2"].load(16.0) is None  # out of the window
    assert s.take_changes(16.0)[2] == [("sat-1", "sat-2")]  # a bundle in flight to draw


def test_headline_figures_from_counters_and_apps() -> None:
    s = ViewState()
    s.apply("counters/sat-1", {"t_s": 10, "sent": 3, "delivered": 1, "stored_bundles": 2})
    s.apply("counters/gs-a", {"t_s": 10, "sent": 1, "delivered": 2, "stored_bundles": 0})
    s.apply("counters/sat-1", {"t_s": 20, "sent": 4, "delivered": 1, "stored_bundles": 1})
    for lat in (30.0, 10.0, 20.0):
        s.apply("app/orbit-query/gs-a", {"t_s": 30, "event": "answer", "latency_s": lat})
    s.apply("app/eo-filter/sat-1", {"t_s": 30, "event": "stats", "bytes_captured": 1000,
                                    "bytes_sent": 100})
    h = s.headline()
    assert h["delivery_ratio"] == pytest.approx(3 / 5)  # the latest sample of each node
    assert h["stored_bundles"] == 1
    assert h["query_latency_p50_s"] == 20.0 and h["queries_answered"] == 3
    assert h["downlink_saved_fraction"] == pytest.approx(0.9)
    panel = s.node("sat-1")
    assert panel["counters"]["sent"] == 4 and panel["apps"]["eo-filter"]["event"] == "stats"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = make_run(tmp_path)
    shutil.copy(ROOT / "topologies" / "three-body-12.yaml", run / "scenario.yaml")
    (run / "run.json").write_text(json.dumps({"run": "r1", "window": {
        "start_s": 0, "duration_s": 1000, "time_scale": 10}}))
    return run


def test_replay_seeks_forward_and_back_and_pauses(run_dir: Path) -> None:
    tl = replay_view(run_dir).timeline
    tl.control({"type": "pause"})
    tl.control({"type": "seek", "t_s": 150})
    tl.advance()
    assert tl.state.links["gs-a|sat-1"].state == "up"
    assert tl.now_s() == 150  # paused: time stands
    tl.control({"type": "seek", "t_s": 50})  # back: before the ground link came up
    tl.advance()
    assert "gs-a|sat-1" not in tl.state.links and tl.state.links["sat-1|sat-2"].state == "up"
    tl.control({"type": "seek", "t_s": 5000})
    assert tl.now_s() == 1000  # the window's end


def test_replay_of_a_directory_that_is_not_a_run_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="plan.json"):
        replay_view(tmp_path)


def test_server_sends_hello_then_ticks_and_a_nodes_panel(run_dir: Path) -> None:
    server = replay_view(run_dir)
    url = server.start()
    try:
        assert url.startswith("http://127.0.0.1:")

        async def talk() -> tuple[dict, dict, dict, str]:
            async with aiohttp.ClientSession() as s:
                page = await (await s.get(url)).text()
                async with s.ws_connect(url + "ws") as ws:
                    hello = json.loads((await ws.receive()).data)
                    await ws.send_str(json.dumps({"type": "seek", "t_s": 150}))
                    await ws.send_str(json.dumps({"type": "node", "name": "sat-1"}))
                    tick = node = None
                    while tick is None or node is None:
                        m = json.loads((await ws.receive(timeout=5)).data)
                        if m["type"] == "node":
                            node = m
                        elif m["type"] == "tick" and m["t_s"] >= 150:
                            tick = m
                    return hello, tick, node, page

        hello, tick, node, page = asyncio.run(talk())
    finally:
        server.stop()
    assert "<svg id=\"map\"" in page
    assert hello["mode"] == "replay" and {n["name"] for n in hello["nodes"]} == {
        "sat-1", "sat-2", "gs-a"}
    assert len(hello["sats"]) == 12  # the scenario's satellites placed
    assert all(-180 <= lon <= 180 and -90 <= lat <= 90 for lon, lat in hello["sats"].values())
    assert tick["links"]["gs-a|sat-1"]["state"] == "up"
    assert node["name"] == "sat-1" and node["contacts"][0]["to"] in ("gs-a", "sat-2")


def test_a_websocket_from_another_sites_page_is_refused(run_dir: Path) -> None:
    server = replay_view(run_dir)
    url = server.start()
    try:
        async def connect(origin: str) -> int:
            async with aiohttp.ClientSession() as s:
                try:
                    async with s.ws_connect(url + "ws", origin=origin) as ws:
                        await ws.receive(timeout=5)
                        return 101
                except aiohttp.WSServerHandshakeError as e:
                    return e.status

        assert asyncio.run(connect("http://evil.example")) == 403
        assert asyncio.run(connect(url.rstrip("/"))) == 101  # the view's own page
    finally:
        server.stop()


def test_coastlines_are_closed_outlines_within_the_map() -> None:
    outlines = coastlines.coastlines()
    assert len(outlines) > 500
    for xy in outlines:
        assert (abs(xy[:, 0]) <= 180).all() and (abs(xy[:, 1]) <= 90).all()
    # Australia's outline: the largest polygon between 110 and 155 E, 10 and 40 S
    aus = [xy for xy in outlines if (xy[:, 0].min() > 110) and (xy[:, 0].max() < 155)
           and (xy[:, 1].min() > -40) and (xy[:, 1].max() < -10)]
    assert max(len(xy) for xy in aus) > 100
    for run in coastlines.polylines():
        lons = [p[0] for p in run]
        assert all(abs(a - b) <= 180 for a, b in zip(lons, lons[1:], strict=False))


def test_view_options_are_checked_on_the_command_line(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "netemu", "run", "x.yaml", "--view",
                        "--view-port", "70000"], capture_output=True, text=True)
    assert r.returncode == 2 and "--view-port" in r.stderr and "70000" in r.stderr
    r = subprocess.run([sys.executable, "-m", "netemu", "view", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode != 0 and "plan.json" in r.stderr
