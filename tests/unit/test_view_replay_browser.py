"""``netemu view``'s page in a real browser (Debian's headless chromium, Playwright): the
slider moves the replay's time, the links follow it forwards and backwards, and pause
stops the page's scenario time. No emulation: a synthetic run directory."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from synthetic_run import make_run

from netemu.run.view.launch import replay_view

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason=f"{CHROMIUM} missing (scripts/dev setup installs it)")


@pytest.fixture
def page(tmp_path: Path):
    from playwright.sync_api import sync_playwright

    run = make_run(tmp_path)
    shutil.copy(ROOT / "topologies" / "three-body-12.yaml", run / "scenario.yaml")
    (run / "run.json").write_text(json.dumps({"run": "r1", "window": {
        "start_s": 0, "duration_s": 1000, "time_scale": 10}}))
    server = replay_view(run, warn=lambda _s: None)
    url = server.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            pg = browser.new_page(viewport={"width": 1400, "height": 800})
            pg.goto(url)
            pg.wait_for_selector("body[data-ready='1']", timeout=15000)
            yield pg
            browser.close()
    finally:
        server.stop()


def _seek(page, t_s: float) -> None:
    page.evaluate(f"""() => {{ const s = document.getElementById('slider');
        s.value = {t_s}; s.dispatchEvent(new Event('input')); }}""")
    page.wait_for_function(f"window.netemuView.t_s === {t_s}", timeout=5000)


def test_slider_moves_time_and_links_follow_both_ways(page) -> None:
    assert page.is_visible("#replay")
    page.click("#play")  # pause
    page.wait_for_function("window.netemuView.time_scale === 0", timeout=5000)
    _seek(page, 150)
    line = "line[data-link='gs-a|sat-1']"
    page.wait_for_selector(f"{line}[data-state='up']", state="attached", timeout=5000)
    assert page.text_content("#utc") == "2026-01-01 00:02:30 UTC"
    _seek(page, 50)  # before the ground link came up: its line goes
    page.wait_for_selector(f"{line}[data-state='down']", state="attached", timeout=5000)
    assert page.get_attribute("line[data-link='sat-1|sat-2']", "data-state") == "up"
    # a link whose shorter way crosses the date line is drawn to both edges of the map:
    # sat-1 placed at 175°E on the equator, sat-2 at 165°W, 40°N (one script run: no
    # update from the server in between)
    lines = page.evaluate("""() => {
        place(view.nodes['sat-1'], 175, 0); place(view.nodes['sat-2'], -165, 40);
        drawLinks();
        const xy = (e) => ['x1', 'y1', 'x2', 'y2'].map((k) => Number(e.getAttribute(k)));
        return [xy(document.querySelector("line[data-link='sat-1|sat-2']")),
                xy(document.querySelector("line[data-twin='sat-1|sat-2']"))];
    }""")
    # 4 px a degree: 175°E → x 1420, the edge 1440 | 0, 165°W → x 60; the line crosses
    # 180° a quarter of the way along: at 10°N (y 320)
    assert lines == [[1420, 360, 1440, 320], [0, 320, 60, 200]]
    assert page.evaluate("""() => {  // both ends on one side again: one line
        place(view.nodes['sat-2'], 170, 40); drawLinks();
        return document.querySelector("line[data-twin='sat-1|sat-2']") === null;
    }""")


def test_pause_stops_the_pages_scenario_time(page) -> None:
    page.click("#play")
    page.wait_for_function("window.netemuView.time_scale === 0", timeout=5000)
    t = page.evaluate("window.netemuView.t_s")
    page.wait_for_timeout(1500)  # six updates of the page
    assert page.evaluate("window.netemuView.t_s") == t
    page.click("#play")  # resume: time moves again
    page.wait_for_function(f"window.netemuView.t_s > {t}", timeout=5000)
