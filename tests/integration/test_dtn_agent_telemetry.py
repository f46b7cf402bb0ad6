"""Bundle telemetry: two ``netemu agent`` processes given the run's MQTT variables publish
``bundle/<node>`` events that a real mosquitto + the run recorder capture, and
netemu.analysis.metrics computes delivery ratio and link use from them. Without a broker the
agents still move bundles and count the events they could not publish."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest
from dtn_agent_harness import AgentProc, free_port, wait_for, write_pair

from netemu.agent import BpClient
from netemu.agent.telemetry import BundlePublisher
from netemu.analysis import metrics
from netemu.run.broker import Broker, Recorder
from netemu.runtime.rundir import read_events
from netemu.runtime.telemetry import BrokerAccess

pytestmark = pytest.mark.integration


def _sock(tmp: Path, node: str) -> str:
    return str(tmp / node / "bp.sock")


async def _exchange(tmp: Path, n: int) -> tuple[list[str], dict]:
    rx = await BpClient.connect(_sock(tmp, "B"), timeout_s=20)
    tx = await BpClient.connect(_sock(tmp, "A"), timeout_s=20)
    await rx.register("ipn:2.7")
    ids = [await tx.send("ipn:2.7", f"m{i}".encode() * 100, src="ipn:1.5") for i in range(n)]
    got = [await rx.recv(timeout_s=30) for _ in range(n)]
    assert sorted(d.id for d in got) == sorted(ids)
    st = await tx.status()
    await tx.close()
    await rx.close()
    return ids, st


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed")
def test_agents_publish_bundle_events_that_metrics_use(tmp_path):
    broker = Broker(f"tl{uuid.uuid4().hex[:6]}", log_path=tmp_path / "mosquitto.log")
    access = broker.start()
    events_path = tmp_path / "events.jsonl"
    rec = Recorder(access, events_path)
    a = b = None
    try:
        rec.start()
        cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port())
        env = access.env()
        b = AgentProc("B", cfgs["B"], env=env).start()
        a = AgentProc("A", cfgs["A"], env=env).start()
        ids, st_a = asyncio.run(_exchange(tmp_path, 5))
        assert st_a["telemetry"]["dropped"] == 0

        def delivered() -> int:
            return sum(1 for e in read_events(events_path)
                       if e["payload"].get("event") == "delivered")
        asyncio.run(wait_for(lambda: delivered() >= 5, 20, "5 delivered events"))
    finally:
        for p in (a, b):
            if p:
                p.stop()
        rec.stop()
        broker.stop()
    events = read_events(events_path)
    by = {(e["topic"].split("/")[-1], e["payload"]["event"], e["payload"]["bundle_id"]): e
          for e in events if "/bundle/" in e["topic"]}
    prefix = access.topic_prefix
    for bid in ids:
        sent = by[("A", "sent", bid)]
        assert sent["topic"] == f"{prefix}/bundle/A"
        fwd = by[("A", "forwarded", bid)]["payload"]
        assert fwd["next_hop"] == "B" and fwd["source"] == "ipn:1.5"
        assert fwd["destination"] == "ipn:2.7" and fwd["size_bytes"] > 200
        assert isinstance(fwd["t_s"], float) and fwd["t_s"] > 0  # plan time (epoch 30 s ago)
        assert ("B", "received", bid) in by
        assert ("B", "delivered", bid) in by
    # No status-report bundles, nothing deleted.
    assert {k[2] for k in by} == set(ids)
    assert not [k for k in by if k[1] in ("deleted", "expired")]
    # each agent's own counters timer: a final sample at stop with the totals
    final = {e["topic"].rsplit("/", 1)[-1]: e["payload"] for e in events
             if "/counters/" in e["topic"] and e["payload"].get("final")}
    assert final["A"]["sent"] == 5 and final["A"]["forwarded"] == 5
    assert final["B"]["received"] == 5 and final["B"]["delivered"] == 5
    assert final["B"]["stored_bundles"] == 0
    bm = metrics.bundle_metrics(events)
    assert bm["bundle_source"] == "bundle events"
    assert bm["bundles_created"] == 5 and bm["delivery_ratio"] == 1.0
    plan = {"contacts": [{"from": "A", "to": "B", "start_s": 0, "end_s": 86400,
                          "rate_bps": 1e9}]}
    links, outside = metrics.link_metrics(events, plan, 86400)
    assert links["A->B"]["bundles"] == 5 and outside == 0


def test_agent_without_a_broker_still_moves_bundles_and_counts_drops(tmp_path):
    """The MQTT variables point at a socket nobody listens on: bundles flow as usual; the
    bounded queue keeps what it can and counts the rest as dropped."""
    access = BrokerAccess(str(tmp_path / "nobroker.sock"), "u", "p", "nobroker")
    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port())
    env = access.env()
    b = AgentProc("B", cfgs["B"], env=env).start()
    a = AgentProc("A", cfgs["A"], env=env).start()
    try:
        _, st = asyncio.run(_exchange(tmp_path, 3))
        tel = st["telemetry"]
        assert tel["published"] == 0 and tel["queued"] >= 3 and tel["connects"] == 0
    finally:
        assert a.stop() == 0
        assert b.stop() == 0


def test_publisher_queue_is_bounded_and_never_blocks(tmp_path):
    access = BrokerAccess(str(tmp_path / "none.sock"), "u", "p", "queue")
    pub = BundlePublisher(access, "A", queue_max=10)
    pub.start()
    for i in range(1000):
        pub.emit({"event": "received", "bundle_id": str(i)})
    st = pub.status()
    pub.stop(drain_s=0.1)
    assert st["queued"] == 10 and st["dropped"] == 990
    assert BundlePublisher.from_env("A", env={}) is None
