"""Benchmark: the live view's page under a large constellation, in Debian's headless
chromium (Playwright).

The page is served by the view's real server; its messages come from the scenario's
contact plan played back at ×1 (every link's ``up`` at its contact's start and ``down`` at
its end, as the emulator publishes them), so no emulation is needed: the figures measure
the page and the server, not the emulator. Positions are computed by the server for every
satellite at each update (every 0.25 s).

Prints the frame rate the browser achieves (``requestAnimationFrame`` callbacks per
second), the updates it applies per second, the time one update takes to apply in the page
(p50 / p95), the message size and the markers and link lines drawn.

    .venv/bin/python bench/bench_view.py [--scenario topologies/starlink-shell1.yaml]
        [--seconds 20] [--json]

Figures are recorded in docs/view.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netemu.plan.source import PlanSource  # noqa: E402
from netemu.run.view.geo import Positions  # noqa: E402
from netemu.run.view.server import ViewServer  # noqa: E402
from netemu.run.view.timeline import ReplayTimeline  # noqa: E402

CHROMIUM = "/usr/bin/chromium"


def plan_events(plan, run: str) -> list[dict]:
    """The ``link/<a>/<b>`` messages the emulator would publish for ``plan``: a link is up
    while either direction's contact is."""
    spans: dict[tuple[str, str], list[float]] = {}
    kinds: dict[tuple[str, str], tuple[str, float]] = {}
    for c in plan.contacts:
        key = (min(c.src, c.dst), max(c.src, c.dst))
        s = spans.setdefault(key, [c.start_s, c.end_s])
        s[0], s[1] = min(s[0], c.start_s), max(s[1], c.end_s)
        kinds[key] = (c.kind, c.rate_bps)
    out = []
    for (a, b), (start, end) in spans.items():
        for t, ev in ((start, "up"), (end, "down")):
            out.append({"t_s": t, "topic": f"netemu/{run}/link/{a}/{b}",
                        "payload": {"event": ev, "t_s": t, "link": kinds[(a, b)][0],
                                    "rate_bps": kinds[(a, b)][1]}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default=str(ROOT / "topologies" / "starlink-shell1.yaml"))
    ap.add_argument("--seconds", type=float, default=20.0, help="wall seconds measured")
    ap.add_argument("--start-s", type=float, default=0.0)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    src = PlanSource.open(Path(args.scenario))
    window = args.seconds + 120.0
    plan = src.plan(start_s=args.start_s, duration_s=window)
    events = plan_events(plan, "bench")
    timeline = ReplayTimeline(events, "netemu/bench/", t_min_s=args.start_s,
                              t_max_s=args.start_s + window, speed=1.0)
    server = ViewServer(timeline, plan.to_json_obj(samples=False), Positions(src.scenario),
                        run="bench", title=f"bench: {Path(args.scenario).stem}")
    url = server.start()
    server.tick()  # the first update carries every link: the steady ones are smaller
    time.sleep(0.25)
    tick_bytes = len(json.dumps(server.tick(), separators=(",", ":")))

    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 900})
            t0 = time.monotonic()
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", timeout=120000)
            first_s = time.monotonic() - t0
            page.wait_for_timeout(3000)  # settle
            before = page.evaluate("({ticks: netemuView.ticks, now: performance.now()})")
            fps: list[float] = []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                page.wait_for_timeout(1000)
                v = page.evaluate("netemuView.fps")
                if v:
                    fps.append(float(v))
            after = page.evaluate("""() => ({ticks: netemuView.ticks, now: performance.now(),
                cost: netemuView.tickCostMs.slice(),
                sats: document.querySelectorAll('circle.sat').length,
                links: document.querySelectorAll('line.link[data-link]:not([data-state=down])').length})""")
            browser.close()
    finally:
        server.stop()
    cost = sorted(after["cost"])
    res = {
        "scenario": Path(args.scenario).stem,
        "satellites": after["sats"],
        "links_drawn": after["links"],
        "page_ready_s": round(first_s, 2),
        "fps_mean": round(statistics.fmean(fps), 1) if fps else None,
        "fps_min": round(min(fps), 1) if fps else None,
        "updates_per_s": round((after["ticks"] - before["ticks"])
                               / ((after["now"] - before["now"]) / 1000), 2),
        "update_apply_p50_ms": round(cost[len(cost) // 2], 1) if cost else None,
        "update_apply_p95_ms": round(cost[int(len(cost) * 0.95)], 1) if cost else None,
        "update_bytes": tick_bytes,
    }
    if args.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print(f"{k:24s} {v}")


if __name__ == "__main__":
    main()
