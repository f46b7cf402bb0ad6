"""The live view in a real browser (Debian's chromium, driven by Playwright) on a running
emulation of three-body-12 (``netemu run --view``: links and their telemetry, no agents).

It checks what a user looks at: every satellite's marker is where the orbits put it at the
scenario time the page shows (within :data:`TOLERANCE_PX` screen pixels), and a link that
goes down in the emulation turns its line's state to ``down`` within 2 s of wall time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "topologies" / "three-body-12.yaml"
CHROMIUM = "/usr/bin/chromium"
TOLERANCE_PX = 1.5
"""How far (screen pixels) a marker may be from where the orbit puts it: the page rounds
to 0.01 user units and the map is drawn at about 1 px per user unit."""
TIME_SCALE = 20.0  # the first ground link ends at t = 282 s: 14 s of wall time


@pytest.fixture(scope="module")
def live_run():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing (scripts/dev setup installs Debian's chromium)")
    proc = subprocess.Popen(
        [sys.executable, "-m", "netemu", "run", str(SCENARIO), "--view", "--quiet",
         "--time-scale", str(TIME_SCALE), "--duration-s", "600",
         "--run-name", f"v{uuid.uuid4().hex[:6]}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    lines: list[str] = []
    try:
        url = None
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline() if proc.stdout else ""
            if not line:
                break
            lines.append(line)
            m = re.search(r"live view at (http://\S+)", line)
            url = m.group(1) if m else None
        assert url, "no view URL printed:\n" + "".join(lines)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)  # netemu run tears the network down on SIGTERM
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def page(live_run):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1500, "height": 820})
        pg.goto(live_run)
        pg.wait_for_selector("body[data-ready='1']", timeout=15000)
        pg.wait_for_function("window.netemuView.ticks > 3 && window.netemuView.t_s !== null",
                             timeout=15000)
        yield pg
        browser.close()


def test_the_page_serves_only_this_machine(live_run) -> None:
    assert live_run.startswith("http://127.0.0.1:")


def test_each_satellite_marker_is_where_the_orbit_puts_it_at_the_pages_time(page) -> None:
    import numpy as np

    from netemu.plan import orbit
    from netemu.plan.scenario import load_scenario

    # one snapshot: the page's scenario time and every marker's centre on the screen
    snap = page.evaluate("""() => {
        const svg = document.getElementById('map'), m = svg.getScreenCTM();
        const sats = {};
        for (const c of document.querySelectorAll('circle.sat')) {
            const r = c.getBoundingClientRect();
            sats[c.dataset.node] = [r.x + r.width / 2, r.y + r.height / 2];
        }
        return {t_s: Number(svg.dataset.tS), ctm: [m.a, m.d, m.e, m.f], sats};
    }""")
    sc = load_scenario(SCENARIO)
    names = [s.name for s in sc.satellites]
    assert sorted(snap["sats"]) == sorted(names)
    lat, lon = orbit.subsatellite_deg([s.satrec for s in sc.satellites], sc.epoch,
                                      [snap["t_s"]])
    a, d, e, f = snap["ctm"]
    worst = 0.0
    for i, name in enumerate(names):
        want = (a * (lon[0, i] + 180) * 4 + e, d * (90 - lat[0, i]) * 4 + f)
        got = snap["sats"][name]
        worst = max(worst, float(np.hypot(got[0] - want[0], got[1] - want[1])))
    assert worst <= TOLERANCE_PX, f"a marker is {worst:.2f} px off at t={snap['t_s']:.1f} s"
    # and the markers move with the clock (the page is live, not a still)
    page.wait_for_function(f"window.netemuView.t_s > {snap['t_s'] + 5 * TIME_SCALE * 0.25}")


def test_a_link_going_down_turns_its_line_down_within_2_s(page) -> None:
    from netemu.plan.source import PlanSource

    plan = PlanSource.open(SCENARIO).plan(start_s=0.0, duration_s=600.0)
    now = page.evaluate("window.netemuView.t_s")
    # the next link to end: both directions' contacts over, at least 2 s of wall from now
    ends: dict[str, float] = {}
    for c in plan.contacts:
        lid = "|".join(sorted((c.src, c.dst)))
        if c.start_s <= now < c.end_s:
            ends[lid] = max(ends.get(lid, 0.0), c.end_s)
    lid, end_s = min(((k, v) for k, v in ends.items() if v > now + 2 * TIME_SCALE),
                     key=lambda kv: kv[1])
    assert page.get_attribute(f"line[data-link='{lid}']", "data-state") == "up"
    wait_ms = (end_s - now) / TIME_SCALE * 1000 + 10000
    page.wait_for_function(
        f"window.netemuView.linkChanges.some(c => c.id === '{lid}' && c.state === 'down')",
        timeout=wait_ms)
    got = page.evaluate(f"""() => ({{
        change: window.netemuView.linkChanges.find(c => c.id === '{lid}' && c.state === 'down'),
        t_s: window.netemuView.t_s, wall: window.netemuView.wall}})""")
    # when the emulation's clock reached the link's end, in wall time (the page's latest
    # frame gives the clock: scenario time t_s at Unix time wall)
    due_wall = got["wall"] + (end_s - got["t_s"]) / TIME_SCALE
    late_s = got["change"]["wall_ms"] / 1000 - due_wall
    assert -0.5 <= late_s <= 2.0, json.dumps({"link": lid, "end_s": end_s, "late_s": late_s})
    assert page.get_attribute(f"line[data-link='{lid}']", "data-state") == "down"


def test_pause_stops_scenario_time_in_the_page_and_the_emulation(page) -> None:
    """The page's pause button: the emulation's clock (which the page shows) stands and no
    link changes; after play it goes on from where it stood."""
    assert page.text_content("#play") == "pause"
    page.click("#play")
    page.wait_for_function("window.netemuView.time_scale === 0", timeout=5000)
    t = page.evaluate("window.netemuView.t_s")
    changes = page.evaluate("window.netemuView.linkChanges.length")
    page.wait_for_timeout(2000)  # eight updates of the page: 40 scenario seconds at ×20
    assert page.evaluate("window.netemuView.t_s") == t
    assert page.evaluate("window.netemuView.linkChanges.length") == changes
    assert page.text_content("#scale") == "paused"
    page.click("#play")
    page.wait_for_function(f"window.netemuView.t_s > {t}", timeout=5000)
    # from where it stood, not from where an unpaused clock would be (40 s further)
    t2 = page.evaluate("window.netemuView.t_s")
    assert t2 < t + 1.0 * TIME_SCALE, (t, t2)
    # the speed menu sets the run's time scale: the emulation's clock goes at ×60
    page.select_option("#speed", "60")
    page.wait_for_function("window.netemuView.time_scale === 60", timeout=5000)
    assert page.text_content("#scale") == "×60"
