"""Per-node counters instead of an event per bundle: a node host serving A, B and C (each
in its own namespace, A — B — C) with the run's broker, ``NETEMU_COUNTERS_S`` and
``NETEMU_BUNDLE_EVENTS=0`` publishes ``counters/<node>`` samples (one timer for the
host) and no ``bundle/<node>`` events; the last samples, published at stop, carry the
exact totals, which the metrics sum per node kind.

Namespaces and processes are removed even when the test fails (the chain fixture)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import pytest
from dtn_agent_harness import wait_for
from test_nodehost import NODES, HostProc, chain  # noqa: F401 - the fixture

from netemu.agent import BpClient
from netemu.analysis.counters import counter_metrics
from netemu.run.broker import Broker, Recorder
from netemu.runtime.rundir import read_events

pytestmark = pytest.mark.integration


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed")
def test_node_host_publishes_counters_and_no_bundle_events(chain):  # noqa: F811
    tmp = chain["tmp"]
    broker = Broker(f"ct{uuid.uuid4().hex[:6]}", log_path=tmp / "mosquitto.log")
    access = broker.start()
    events_path = tmp / "events.jsonl"
    rec = Recorder(access, events_path)
    host = None

    def samples(node: str) -> list[dict]:
        return [e["payload"] for e in read_events(events_path)
                if e["topic"].endswith(f"/counters/{node}")]

    async def go() -> None:
        tx = await BpClient.connect(str(tmp / "A" / "bp.sock"), timeout_s=30)
        rx = await BpClient.connect(str(tmp / "C" / "bp.sock"), timeout_s=30)
        await rx.register("ipn:3.1")
        await tx.send_many([{"dst": "ipn:3.1", "payload": b"c%d" % i} for i in range(20)])
        for _ in range(20):
            await rx.recv(timeout_s=30)
        # a periodic sample (not only the final one) shows the deliveries
        await wait_for(lambda: any(s["delivered"] >= 20 for s in samples("C")), 20,
                       "a counters/C sample with 20 deliveries")
        await tx.close()
        await rx.close()

    env = {**access.env(), "NETEMU_COUNTERS_S": "0.5", "NETEMU_BUNDLE_EVENTS": "0"}
    try:
        rec.start()
        host = HostProc(chain, list(NODES), "host", env=env).start()
        asyncio.run(asyncio.wait_for(go(), 90))
    finally:
        if host is not None:
            host.stop()
        rec.stop()
        broker.stop()
    events = read_events(events_path)
    assert not [e for e in events if "/bundle/" in e["topic"]]
    final = {}
    for n in NODES:
        s = samples(n)
        assert s and s[-1].get("final") is True, n
        assert all(isinstance(x["t_s"], float) for x in s)
        final[n] = s[-1]
    assert final["A"]["sent"] == 20 and final["A"]["forwarded"] == 20
    assert final["B"]["received"] == 20 and final["B"]["forwarded"] == 20
    assert final["C"]["received"] == 20 and final["C"]["delivered"] == 20
    assert final["C"]["stored_bundles"] == 0 and final["A"]["queued"] == 0
    assert final["B"]["sessions_up"] == 2  # (sampled before the nodes stop)
    # the metrics sum the last samples per node kind (from plan.json's node_info)
    plan = json.loads((tmp / "plan.json").read_text())
    plan["node_info"] = {"A": {"kind": "ground"}, "B": {"kind": "satellite"},
                         "C": {"kind": "ground"}}
    m = counter_metrics(events, plan)
    assert m["by_kind"]["ground"]["nodes"] == 2
    assert m["by_kind"]["ground"]["delivered"] == 20 and m["by_kind"]["ground"]["sent"] == 20
    assert m["by_kind"]["satellite"]["forwarded"] == 20
