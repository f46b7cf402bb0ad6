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
