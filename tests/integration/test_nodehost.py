"""Node hosts serving nodes in real network namespaces, linked by veth pairs
(A — B — C, no IP routes between A and C: bundles go hop by hop).

- one node-host process serves A, B and C, each listening on 0.0.0.0:4556 in its own
  namespace; bundles from A's app are delivered to C's app, through B;
- ``kill -9`` of the node host that serves B and C in the middle of a stream of 1,000
  bundles from A (served by another node host), then a restart: every bundle reaches C's
  app exactly once;
- with the run's broker, every node's ``bundle/<node>`` events are recorded;
- the agents send and take a run's traffic flows themselves, and reach their neighbours
  through the direct links' addresses alone;
- a relay splits a bundle larger than its next hop's transfer MRU, and the destination
  puts it together.

Namespaces, veths and processes are removed even when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from dtn_agent_harness import ROOT, stream_through_a_kill9, wait_for

from netemu.agent import BpClient
from netemu.run.broker import Broker, Recorder
from netemu.runtime.rundir import read_events

pytestmark = pytest.mark.integration

NODES = ("A", "B", "C")
LINKS = (("A", "B", "10.77.1"), ("B", "C", "10.77.2"))  # /30 each: .1 left, .2 right


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[dict]:
    """Namespaces for A, B, C with veths A–B and B–C, and each node's agent config."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    tok = secrets.token_hex(2)
    ns = {n: f"nh{tok}-{n.lower()}" for n in NODES}
    made: list[str] = []
    try:
        for n in NODES:
            _ip("netns", "add", ns[n])
            made.append(ns[n])
            _ip("-n", ns[n], "link", "set", "lo", "up")
        addr: dict[tuple[str, str], str] = {}
        for left, right, net in LINKS:
            lv, rv = f"nh{tok}{left}{right}".lower(), f"nh{tok}{right}{left}".lower()
            _ip("link", "add", lv, "netns", ns[left], "type", "veth", "peer", "name", rv,
                "netns", ns[right])
            for n, v, host in ((left, lv, 1), (right, rv, 2)):
                _ip("-n", ns[n], "addr", "add", f"{net}.{host}/30", "dev", v)
                _ip("-n", ns[n], "link", "set", v, "up")
            addr[(left, right)] = f"{net}.2:4556"  # left dials right here
            addr[(right, left)] = f"{net}.1:4556"
        epoch = datetime.now(timezone.utc) - timedelta(seconds=30)
        contacts = [{"from": s, "to": d, "start_s": 0, "end_s": 86400, "rate_bps": 1e9,
                     "owlt_s": 0.001}
                    for a, b, _ in LINKS for s, d in ((a, b), (b, a))]
        (tmp_path / "plan.json").write_text(json.dumps({
            "epoch": epoch.isoformat().replace("+00:00", "Z"),
            "nodes": {n: i + 1 for i, n in enumerate(NODES)}, "contacts": contacts}))
        configs = {}
        for i, n in enumerate(NODES):
            neighbours = [{"name": p, "ipn": NODES.index(p) + 1, "address": addr[(n, p)]}
                          for p in NODES if (n, p) in addr]
            cfg = {"node": n, "ipn": i + 1,
                   "listen": {"tcpcl": ["0.0.0.0:4556"], "udpcl": ["0.0.0.0:4556"]},
                   "app_socket": str(tmp_path / n / "bp.sock"),
                   "store": str(tmp_path / n / "store.sqlite"),
                   "contact_plan": str(tmp_path / "plan.json"), "neighbours": neighbours,
                   "log": str(tmp_path / f"{n}.log")}
            configs[n] = tmp_path / f"{n}.json"
            configs[n].write_text(json.dumps(cfg, indent=1))
        yield {"tmp": tmp_path, "ns": ns, "configs": configs}
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


class HostProc:
    """``python -m netemu.agent.nodehost`` serving some of the chain's nodes."""

    def __init__(self, chain: dict, nodes: list[str], name: str,
                 env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.path = chain["tmp"] / f"{name}.json"
        self.path.write_text(json.dumps({"nodes": [
            {"config": str(chain["configs"][n]), "netns": f"/run/netns/{chain['ns'][n]}"}
            for n in nodes]}))
        self.stderr = chain["tmp"] / f"{name}.stderr"
        self.proc: subprocess.Popen | None = None

    def start(self) -> HostProc:
        env = {**os.environ, "PYTHONPATH": str(ROOT), **self.env}
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "netemu.agent.nodehost", "--config", str(self.path)],
                env=env, stdout=subprocess.DEVNULL, stderr=err)
        return self

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def _log(chain: dict, node: str) -> list[dict]:
    p = chain["tmp"] / f"{node}.log"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_one_node_host_serves_a_chain_in_three_namespaces(chain):
    tmp = chain["tmp"]

    async def go():
        host = HostProc(chain, list(NODES), "host").start()
        try:
            tx = await BpClient.connect(str(tmp / "A" / "bp.sock"), timeout_s=30)
            rx = await BpClient.connect(str(tmp / "C" / "bp.sock"), timeout_s=30)
            await rx.register("ipn:3.1")
            await tx.send_many([{"dst": "ipn:3.1", "payload": b"p%03d" % i} for i in range(100)])
            got = [(await rx.recv(timeout_s=30)).payload for _ in range(100)]
            assert sorted(got) == [b"p%03d" % i for i in range(100)]
            await tx.close()
            await rx.close()
        finally:
            rc = host.stop()
        assert rc == 0, host.stderr.read_text()[-3000:]
        # From the wire each node is its own agent: sessions between the namespaces'
        # own addresses, every node stopped cleanly.
        peers = {e["peer"].rsplit(":", 1)[0] for e in _log(chain, "B")
                 if e["event"] == "session_up"}
        assert peers == {"10.77.1.1", "10.77.2.2"}
        for n in NODES:
            events = [e["event"] for e in _log(chain, n)]
            assert events.count("agent_started") == 1 and events[-1] == "agent_stopped"
        pids = {e["pid"] for n in NODES for e in _log(chain, n) if e["event"] == "agent_started"}
        assert len(pids) == 1

    asyncio.run(asyncio.wait_for(go(), 120))


def test_relay_splits_for_a_smaller_mru_and_the_destination_reassembles(chain):
    """C advertises HDTN's 10,000,000-byte transfer MRU: the 11 MB bundle goes A → B
    whole, B splits it for C, and C's app gets it whole, once."""
    tmp = chain["tmp"]
    cfg_c = json.loads(chain["configs"]["C"].read_text())
    chain["configs"]["C"].write_text(json.dumps({**cfg_c, "transfer_mru": 10_000_000}))
    payload = bytes(range(256)) * (11_000_000 // 256)

    async def go():
        host = HostProc(chain, list(NODES), "host").start()
        try:
            tx = await BpClient.connect(str(tmp / "A" / "bp.sock"), timeout_s=30)
            rx = await BpClient.connect(str(tmp / "C" / "bp.sock"), timeout_s=30)
            await rx.register("ipn:3.1")
            await tx.send("ipn:3.1", payload)
            got = await rx.recv(timeout_s=60)
            with pytest.raises(asyncio.TimeoutError):  # once
                await rx.recv(timeout_s=2)
            assert got.payload == payload
            await tx.close()
            await rx.close()
        finally:
            host.stop()
        events = {n: [e["event"] for e in _log(chain, n)] for n in NODES}
        assert "bundle_fragmented" not in events["A"]
        assert events["B"].count("bundle_fragmented") == 1
        assert events["C"].count("bundle_reassembled") == 1

    asyncio.run(asyncio.wait_for(go(), 120))


def test_kill9_node_host_mid_stream_loses_and_duplicates_none(chain):
    tmp = chain["tmp"]

    async def go():
        sender = HostProc(chain, ["A"], "host-a").start()
        relay = HostProc(chain, ["B", "C"], "host-bc").start()
        try:
            rx = await BpClient.connect(str(tmp / "C" / "bp.sock"), timeout_s=30)
            tx = await BpClient.connect(str(tmp / "A" / "bp.sock"), timeout_s=30)
            await rx.register("ipn:3.1")
            await stream_through_a_kill9(tx, rx, "ipn:3.1", relay.kill9, relay.start)
            for n in ("B", "C"):
                restored = [e for e in _log(chain, n) if e["event"] == "store_restored"]
                assert len(restored) == 2, n
            print(f"after kill -9: C restored {restored[1]['records']} records; "
                  f"{rx.duplicates_dropped} re-deliveries dropped by the client")
            await tx.close()
            await rx.close()
        finally:
            sender.stop()
            relay.stop()

    asyncio.run(asyncio.wait_for(go(), 200))


@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed")
def test_node_host_publishes_each_nodes_bundle_events_on_its_topic(chain):
    tmp = chain["tmp"]
    broker = Broker(f"nh{uuid.uuid4().hex[:6]}", log_path=tmp / "mosquitto.log")
    access = broker.start()
    events_path = tmp / "events.jsonl"
    rec = Recorder(access, events_path)
    host = None

    async def go() -> list[str]:
        tx = await BpClient.connect(str(tmp / "A" / "bp.sock"), timeout_s=30)
        rx = await BpClient.connect(str(tmp / "C" / "bp.sock"), timeout_s=30)
        await rx.register("ipn:3.1")
        ids = await tx.send_many([{"dst": "ipn:3.1", "payload": b"t%d" % i} for i in range(5)])
        for _ in range(5):
            await rx.recv(timeout_s=30)
        await tx.close()
        await rx.close()

        def delivered() -> int:
            return sum(1 for e in read_events(events_path)
                       if e["payload"].get("event") == "delivered")
        await wait_for(lambda: delivered() >= 5, 20, "5 delivered events")
        return ids

    try:
        rec.start()
        host = HostProc(chain, list(NODES), "host", env=access.env()).start()
        ids = asyncio.run(asyncio.wait_for(go(), 90))
    finally:
        if host is not None:
            host.stop()
        rec.stop()
        broker.stop()
    seen = {(e["topic"].rsplit("/", 1)[-1], e["payload"]["event"], e["payload"]["bundle_id"])
            for e in read_events(events_path) if "/bundle/" in e["topic"]}
    for bid in ids:
        assert {("A", "sent", bid), ("A", "forwarded", bid), ("B", "received", bid),
                ("B", "forwarded", bid), ("C", "received", bid),
                ("C", "delivered", bid)} <= seen
    stopped = [e for n in NODES for e in _log(chain, n) if e["event"] == "telemetry_stopped"]
    assert len(stopped) == 3 and all(e["dropped"] == 0 for e in stopped)


def _with_links_and_traffic(chain: dict, flows: list[dict]) -> Path:
    """Rewrite the chain's configs: neighbours reachable only through ``links`` (no
    ``address``), and the run's ``traffic.json`` with ``flows``."""
    traffic = chain["tmp"] / "traffic.json"
    traffic.write_text(json.dumps({"service": 7, "ipn": {n: i + 1 for i, n in enumerate(NODES)},
                                   "flows": flows}))
    for path in chain["configs"].values():
        cfg = json.loads(path.read_text())
        for nb in cfg["neighbours"]:
            nb["links"] = [[0, 86400, nb.pop("address")]]
        cfg["traffic"] = str(traffic)
        path.write_text(json.dumps(cfg))
    return traffic


def _records(chain: dict, node: str) -> list[dict]:
    p = chain["tmp"] / node / "traffic.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def test_traffic_flows_are_sent_and_taken_by_the_agents_over_direct_links(chain):
    plan = json.loads((chain["tmp"] / "plan.json").read_text())
    epoch = datetime.fromisoformat(plan["epoch"].replace("Z", "+00:00"))
    now_s = (datetime.now(timezone.utc) - epoch).total_seconds()
    start_s = round(now_s + 3.0, 3)  # after the host is up
    base = {"pattern": "periodic", "priority": 1, "lifetime_s": 600.0, "start_s": start_s,
            "end_s": start_s + 3.0, "seed": 1, "interval_s": 0.25, "rate_per_s": None,
            "phase_s": 0.0}
    flows = [{**base, "id": 0, "name": "ac", "key": "ac:A>C", "src": "A", "dst": "C",
              "size_bytes": [3000, 3000]},
             {**base, "id": 1, "name": "ca", "key": "ca:C>A", "src": "C", "dst": "A",
              "size_bytes": [100, 900], "seed": 2}]
    _with_links_and_traffic(chain, flows)
    host = HostProc(chain, list(NODES), "host").start()

    async def go() -> None:
        def done() -> bool:
            return all(sum(r["ev"] == "delivered" for r in _records(chain, n)) >= 12
                       for n in ("A", "C"))
        await wait_for(done, 60, "both flows' 12 bundles delivered")

    try:
        asyncio.run(go())
    finally:
        rc = host.stop()
    assert rc == 0, host.stderr.read_text()[-3000:]
    for src, dst, flow in (("A", "C", 0), ("C", "A", 1)):
        sent = [r for r in _records(chain, src) if r["ev"] == "sent"]
        got = [r for r in _records(chain, dst) if r["ev"] == "delivered"]
        assert len(sent) == 12 and {r["flow"] for r in sent} == {flow}
        assert sorted(r["t_s"] for r in sent) == sorted(r["sent_s"] for r in got)
        sizes = {r["t_s"]: r["size"] for r in sent}
        assert all(sizes[r["sent_s"]] == r["size"] and r["t_s"] >= r["sent_s"] for r in got)
    assert {r["size"] for r in _records(chain, "A") if r["ev"] == "sent"} == {3000}
    # the sessions ran between the links' own addresses, dialled from the links alone
    peers = {e["peer"].rsplit(":", 1)[0] for e in _log(chain, "B") if e["event"] == "session_up"}
    assert peers == {"10.77.1.1", "10.77.2.2"}
