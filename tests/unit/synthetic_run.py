"""Test helper: a synthetic run directory (events, plan, app results) for the metrics,
report and expect tests."""

from __future__ import annotations

import json
from pathlib import Path


def ev(t_s: float, topic: str, **payload) -> dict:
    return {"t_s": t_s, "wall": 1_800_000_000 + t_s, "topic": f"netemu/r1/{topic}",
            "payload": {"t_s": t_s, **payload}}


def make_run(root: Path) -> Path:
    """Run ``r1``: sat-1, sat-2, gs-a; three bundles (two delivered, one expired), link
    events, a plan with contacts, app results and usage for three apps."""
    run = root / "r1"
    run.mkdir(parents=True)
    plan = {
        "epoch": "2026-01-01T00:00:00Z",
        "nodes": {"sat-1": 1, "sat-2": 2, "gs-a": 101},
        "node_info": {"sat-1": {"kind": "satellite"}, "sat-2": {"kind": "satellite"},
                      "gs-a": {"kind": "ground"}},
        "contacts": [
            {"from": "sat-1", "to": "gs-a", "start_s": 100, "end_s": 400, "rate_bps": 8e6,
             "owlt_s": 0.004, "kind": "gsl"},
            {"from": "gs-a", "to": "sat-1", "start_s": 100, "end_s": 400, "rate_bps": 8e6,
             "owlt_s": 0.004, "kind": "gsl"},
            {"from": "sat-1", "to": "sat-2", "start_s": 0, "end_s": 1000, "rate_bps": 8e7,
             "owlt_s": 0.01, "kind": "isl"},
            {"from": "sat-2", "to": "sat-1", "start_s": 0, "end_s": 1000, "rate_bps": 8e7,
             "owlt_s": 0.01, "kind": "isl"},
            {"from": "sat-2", "to": "gs-a", "start_s": 600, "end_s": 900, "rate_bps": 8e6,
             "owlt_s": 0.004, "kind": "gsl"},
        ],
    }
    (run / "plan.json").write_text(json.dumps(plan))
    events = [
        ev(0, "link/sat-1/sat-2", event="up", delay_s=0.01, rate_bps=8e7, loss=0),
        ev(100, "link/sat-1/gs-a", event="up", delay_s=0.004, rate_bps=8e6, loss=0),
        ev(50, "bundle/sat-1", event="sent", bundle_id="b1", source="ipn:1.11",
           destination="ipn:101.10", size_bytes=4200),
        ev(120, "bundle/sat-1", event="forwarded", bundle_id="b1", source="ipn:1.11",
           destination="ipn:101.10", size_bytes=4200, next_hop="gs-a"),
        ev(121, "bundle/gs-a", event="delivered", bundle_id="b1", source="ipn:1.11",
           destination="ipn:101.10", size_bytes=4200),
        ev(200, "bundle/sat-2", event="sent", bundle_id="b2", source="ipn:2.11",
           destination="ipn:101.10", size_bytes=4200),
        ev(201, "bundle/sat-2", event="forwarded", bundle_id="b2", source="ipn:2.11",
           destination="ipn:101.10", size_bytes=4200, next_hop="sat-1"),
        ev(202, "bundle/sat-1", event="forwarded", bundle_id="b2", source="ipn:2.11",
           destination="ipn:101.10", size_bytes=4200, next_hop="gs-a"),
        ev(203, "bundle/gs-a", event="delivered", bundle_id="b2", source="ipn:2.11",
           destination="ipn:101.10", size_bytes=4200),
        # b3 crosses sat-2 -> gs-a at t=500, outside that link's contact [600, 900)
        ev(450, "bundle/sat-2", event="sent", bundle_id="b3", source="ipn:2.11",
           destination="ipn:101.10", size_bytes=1000),
        ev(500, "bundle/sat-2", event="forwarded", bundle_id="b3", source="ipn:2.11",
           destination="ipn:101.10", size_bytes=1000, next_hop="gs-a"),
        ev(950, "bundle/sat-2", event="expired", bundle_id="b3", source="ipn:2.11",
           destination="ipn:101.10", size_bytes=1000),
        ev(400, "link/sat-1/gs-a", event="down"),
        ev(300, "app/orbit-query/gs-a", event="answer", query_id="q0", latency_s=12.0),
        ev(1000, "app/eo-filter/sat-1", event="stop"),
    ]
    (run / "events.jsonl").write_text("\n".join(json.dumps(e) for e in events) + "\n{trunc")
    apps = run / "apps"

    def put(app: str, node: str, result: dict | None, usage: dict) -> None:
        d = apps / app / node
        d.mkdir(parents=True)
        if result is not None:
            (d / "result.json").write_text(json.dumps(result))
        (d / "usage.json").write_text(json.dumps(usage))

    put("eo-filter", "sat-1", {"tiles": 100, "detections": 10, "bytes_captured": 409600,
                               "bytes_sent": 42000}, {"exit_status": 0, "cpu_s": 3.5,
                                                      "max_rss_bytes": 80_000_000})
    put("eo-filter", "sat-2", {"tiles": 100, "detections": 5, "bytes_captured": 409600,
                               "bytes_sent": 21000}, {"exit_status": 0, "cpu_s": 3.1,
                                                      "max_rss_bytes": 79_000_000})
    put("downlink", "gs-a", {"tiles_received": 2, "bytes_received": 8400},
        {"exit_status": 0, "cpu_s": 0.4, "max_rss_bytes": 40_000_000})
    put("orbit-query", "gs-a", {"role": "client", "queries_sent": 5,
                                "latencies_s": [10.0, 20.0, 30.0, 40.0]},
        {"exit_status": 0, "cpu_s": 0.3, "max_rss_bytes": 41_000_000})
    put("orbit-query", "sat-1", {"role": "service", "queries_answered": 4},
        {"exit_status": 1, "cpu_s": 0.2, "max_rss_bytes": 39_000_000})
    (run / "scenario.yaml").write_text("name: r1\n")
    return run


def add_traffic(run: Path, *, window_s: tuple[float, float] = (0.0, 550.0)) -> None:
    """Three periodic flows on ``make_run``'s plan, with what the agents recorded:

    - ``up`` gs-a → sat-2 sends at 150 and 250 (delivered at 150.5 and 251.0);
    - ``down`` sat-2 → gs-a sends at 100, 300, 500 (delivered at 101 and 302; the one at
      500 waits for sat-2's pass over gs-a at 600, after the window);
    - ``late`` sat-1 → gs-a sends at 450 (sat-1's pass ended at 400: it too waits for
      600) and is not delivered.

    gs-a's file repeats a send and a delivery (a restart) and the send at 100 is recorded
    at 100.0004 s while its receiver says 100.0006 s; sat-2's file ends in a cut line.
    run.json's window is ``window_s``.
    """
    from dataclasses import asdict

    from netemu.plan.traffic import Flow

    def flow(i: int, name: str, src: str, dst: str, start: float, end: float,
             every: float) -> dict:
        return asdict(Flow(i, name, f"{name}:{src}>{dst}", src, dst, "periodic", (1000, 1000),
                           1, 3600.0, start, end, 7 + i, every, None, 0.0))

    flows = [flow(0, "up", "gs-a", "sat-2", 150, 350, 100),
             flow(1, "down", "sat-2", "gs-a", 100, 600, 200),
             flow(2, "late", "sat-1", "gs-a", 450, 460, 100)]
    (run / "traffic.json").write_text(json.dumps({"service": 7, "flows": flows}))
    start, end = window_s
    (run / "run.json").write_text(json.dumps({"run": "r1", "window": {
        "start_s": start, "duration_s": end - start, "time_scale": 1.0},
        "routing": {"algorithm": "cgr"}}))

    def sent(flow: int, t: float) -> dict:
        return {"ev": "sent", "flow": flow, "t_s": t, "size": 1000, "id": f"b{flow}-{t}"}

    def delivered(flow: int, sent_s: float, t: float) -> dict:
        return {"ev": "delivered", "flow": flow, "sent_s": sent_s, "t_s": t, "size": 1000}

    files = {
        "gs-a": [sent(0, 150.0), sent(0, 250.0), sent(0, 150.0),
                 delivered(1, 100.0006, 101.0), delivered(1, 300.0, 302.0),
                 delivered(1, 300.0, 302.0)],
        "sat-2": [sent(1, 100.0004), sent(1, 300.0), sent(1, 500.0),
                  delivered(0, 150.0, 150.5), delivered(0, 250.0, 251.0)],
        "sat-1": [sent(2, 450.0)],
    }
    for node, lines in files.items():
        d = run / "agents" / node
        d.mkdir(parents=True, exist_ok=True)
        text = "\n".join(json.dumps(x) for x in lines) + "\n"
        if node == "sat-2":
            text += '{"ev": "delivered", "flow": 0, "sent_s": 3'
        (d / "traffic.jsonl").write_text(text)


def add_counters(run: Path) -> None:
    """``counters/<node>`` samples appended to events.jsonl: sat-1 holds 3 bundles at 10 s
    and 5 at 20 s, sat-2 holds 4 at 10 s (and skips the unchanged sample at 20 s), gs-a
    restarts between 10 s and 20 s (its counters go back to small numbers)."""
    def c(t: float, node: str, stored: int, delivered: int = 0, sent: int = 0,
          final: bool = False) -> dict:
        p = {"sent": sent, "received": 0, "forwarded": 1, "delivered": delivered,
             "deleted": 0, "expired": 0, "refused": 0, "stored_bundles": stored,
             "stored_bytes": 1000 * stored, "queued": 0, "sessions_up": 1}
        if final:
            p["final"] = True
            return ev(t, f"counters/{node}", **p)
        return ev(t, f"counters/{node}", grid_s=t, **p)

    lines = [c(10, "sat-1", 3, sent=2), c(10, "sat-2", 4, sent=1), c(10, "gs-a", 0, 5),
             c(20, "sat-1", 5, sent=2), c(20, "gs-a", 0, 2),
             c(25.5, "sat-1", 1, sent=3, final=True), c(25.5, "sat-2", 0, sent=1, final=True),
             c(25.5, "gs-a", 0, 3, final=True)]
    with open(run / "events.jsonl", "a") as f:
        f.write("\n" + "\n".join(json.dumps(x) for x in lines) + "\n")
