"""events.jsonl stays bounded: through a real mosquitto, the recorder keeps the first
``max_bundle_events`` per-bundle messages, every link, counters and run message, and says
in ``recorder`` lines what it left out; the metrics then take the bundle figures from
the agents' counters and say so."""

from __future__ import annotations

import shutil
import time
import uuid

import pytest

from netemu.analysis import metrics
from netemu.run.broker import Broker, Recorder
from netemu.runtime.rundir import read_events
from netemu.runtime.telemetry import SyncPublisher

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed")
def test_recorder_caps_per_bundle_lines_and_keeps_the_rest(tmp_path):
    broker = Broker(f"rb{uuid.uuid4().hex[:6]}", log_path=tmp_path / "mosquitto.log")
    access = broker.start()
    path = tmp_path / "events.jsonl"
    rec = Recorder(access, path, max_bundle_events=50)
    pub = None
    try:
        rec.start()
        pub = SyncPublisher(access)
        pub.publish("run", {"event": "started", "t_s": 0.0})
        for i in range(200):
            pub.publish("bundle/A", {"event": "delivered" if i % 2 else "sent", "t_s": i / 10,
                                     "bundle_id": f"b{i}", "size_bytes": 10})
            if i % 20 == 0:
                pub.publish("link/A/B", {"event": "update", "t_s": i / 10, "delay_s": 0.01})
                pub.publish("counters/A", {"t_s": i / 10, "grid_s": i / 10, "sent": i,
                                           "delivered": i, "received": 0, "forwarded": 0,
                                           "deleted": 0, "expired": 0, "refused": 0,
                                           "stored_bundles": 1, "stored_bytes": 10,
                                           "queued": 0, "sessions_up": 1})
        pub.publish("run", {"event": "ended", "t_s": 20.0})
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if any(e["topic"].endswith("/run") and e["payload"].get("event") == "ended"
                   for e in read_events(path)):
                break
            time.sleep(0.05)
    finally:
        if pub is not None:
            pub.close()
        rec.stop()
        broker.stop()
    events = read_events(path)
    topics = [e["topic"].split("/", 2)[2] for e in events]
    assert sum(t.startswith("bundle/") for t in topics) == 50
    assert topics.count("link/A/B") == 10 and topics.count("counters/A") == 10
    assert topics.count("run") == 2
    notes = [e["payload"] for e in events if e["topic"].endswith("/recorder")]
    assert notes[0]["event"] == "cap_reached" and notes[0]["topics"] == "bundle"
    assert notes[-1]["event"] == "capped"
    assert notes[-1]["dropped"]["bundle"] == 150 and notes[-1]["kept"]["bundle"] == 50
    assert notes[-1]["dropped_by_event"]["bundle"] == {"sent": 75, "delivered": 75}
    # Partial bundle events would mislead: the figures come from the counters instead.
    m = metrics.bundle_metrics([e for e in events if isinstance(e["payload"], dict)])
    assert m["bundle_source"] == "agent counters"
    assert m["bundles_created"] == 180 and m["bundles_delivered"] == 180
    assert m["bundle_events_dropped"] == 150
