"""App socket framing, server dispatch, the async client (reconnect + exactly-once), and
the agent config loader."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netemu.agent import BpClient, BpError
from netemu.agent.appif import (
    AppIfError,
    AppServer,
    FrameDecoder,
    encode_frame,
    encode_frame_parts,
)
from netemu.agent.config import AgentConfig
from netemu.errors import InputError


def test_frames_split_anywhere():
    frames = [{"op": "send", "payload": b"\x00\xff" * 100}, {"op": "status", "rid": 3}]
    stream = b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), 5):
        got += dec.feed(stream[i : i + 5])
    assert got == frames


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.sampled_from([0, 10, 65_000, 70_000, 300_000]), min_size=1,
                      max_size=5),
       cuts=st.lists(st.integers(1, 400_000), min_size=1, max_size=12))
def test_big_and_small_frames_split_anywhere(sizes, cuts):
    """Big frames are gathered chunk by chunk: any split of a stream of big and small
    frames gives the same frames, in order, with nothing left over."""
    frames = [{"op": "send", "rid": i, "payload": bytes([i]) * n} for i, n in enumerate(sizes)]
    stream = b"".join(b"".join(encode_frame_parts(f)) for f in frames)
    assert stream == b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder()
    got, pos = [], 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        if cut > pos:
            got += dec.feed(stream[pos:cut])
            pos = cut
    assert got == frames
    assert dec.feed(b"") == []


@pytest.mark.parametrize("raw, match", [
    (b"\x00\x00\x00\x01\xff", "not valid CBOR"),
    (b"\x00\x00\x00\x01\x01", "must be a CBOR map"),
    (b"\x7f\xff\xff\xff", "exceeds the limit"),
])
def test_bad_frames_are_clear_errors(raw, match):
    with pytest.raises(AppIfError, match=match):
        FrameDecoder().feed(raw)


class FakeAgent:
    """Just enough of the agent's app handlers to exercise server and client."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.acked: list[str] = []
        self.conns = []

    def handlers(self):
        return {
            "register": self.register, "send": self.send, "ack": self.ack,
            "status": lambda c, r: {"node": "n1"},
        }

    def register(self, conn, req):
        if not req["endpoint"].startswith("ipn:1."):
            raise InputError("endpoint is not on this node", field="endpoint")
        conn.endpoints.add(req["endpoint"])
        self.conns.append(conn)
        return {"endpoint": req["endpoint"]}

    async def send(self, conn, req):
        await asyncio.sleep(0)
        self.sent.append(req)
        return {"id": f"ipn:1.0,0,{len(self.sent)}"}

    def ack(self, conn, req):
        self.acked += req["ids"]
        return {}

    def deliver(self, bid: str, payload: bytes):
        for c in self.conns:
            if not c.closed:
                c.push({"ev": "bundle", "id": bid, "src": "ipn:2.1", "dst": "ipn:1.1",
                        "created_ms": 5, "payload": payload})


def test_client_roundtrip_and_errors(tmp_path):
    path = str(tmp_path / "bp.sock")

    async def go():
        fake = FakeAgent()
        srv = AppServer(path, fake.handlers())
        await srv.start()
        bp = await BpClient.connect(path)
        try:
            await bp.register("ipn:1.1")
            with pytest.raises(BpError, match="endpoint is not on this node"):
                await bp.register("ipn:9.1")
            with pytest.raises(BpError, match="unknown op 'nope'"):
                await bp.request("nope")
            assert await bp.send("ipn:2.1", b"hi") == "ipn:1.0,0,1"
            assert fake.sent[0]["payload"] == b"hi" and fake.sent[0]["dst"] == "ipn:2.1"
            assert (await bp.status())["node"] == "n1"
            fake.deliver("b1", b"p1")
            d = await bp.recv(timeout_s=5)
            assert (d.id, d.src, d.payload) == ("b1", "ipn:2.1", b"p1")
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert fake.acked == ["b1"]
        finally:
            await bp.close()
            await srv.close()

    asyncio.run(asyncio.wait_for(go(), 20))


def test_client_survives_agent_restart_and_drops_redelivery(tmp_path):
    """The agent re-delivers unacknowledged bundles after a restart; the app sees each once."""
    path = str(tmp_path / "bp.sock")

    async def go():
        fake = FakeAgent()
        srv = AppServer(path, fake.handlers())
        await srv.start()
        bp = await BpClient.connect(path)
        await bp.register("ipn:1.1")
        fake.deliver("b1", b"one")
        assert (await bp.recv(timeout_s=5)).id == "b1"
        await srv.close()  # agent dies before the ack is processed
        fake2 = FakeAgent()
        srv2 = AppServer(path, fake2.handlers())
        await srv2.start()
        for _ in range(100):  # client reconnects and registers again
            if fake2.conns:
                break
            await asyncio.sleep(0.05)
        assert fake2.conns, "client did not re-register after restart"
        fake2.deliver("b1", b"one")  # re-delivered: must not reach the app again
        fake2.deliver("b2", b"two")
        d = await bp.recv(timeout_s=5)
        assert d.id == "b2"
        await asyncio.sleep(0.05)
        assert "b1" in fake2.acked  # duplicate is confirmed so the agent forgets it
        await bp.close()
        await srv2.close()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_config_yaml_and_errors(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text(
        "node: sat1\nipn: 1\nlisten: {tcpcl: ['127.0.0.1:4600']}\n"
        "neighbours:\n  - {name: gs1, ipn: 10, address: '127.0.0.1:4601'}\n"
        "routing: cgr\ncontact_plan: plan.json\n")
    cfg = AgentConfig.load(p)
    assert cfg.node == "sat1" and cfg.neighbours[0].host_port == ("127.0.0.1", 4601)
    assert cfg.routing == {"algorithm": "cgr"}
    assert cfg.contact_plan == str(tmp_path / "plan.json")
    assert cfg.app_socket.endswith("sat1/bp.sock")
    again = AgentConfig.from_obj(json.loads(json.dumps(cfg.to_obj())))
    assert again.to_obj() == cfg.to_obj()

    multi = tmp_path / "all.json"
    multi.write_text(json.dumps({"keepalive_s": 5, "nodes": {"a": {"ipn": 1}, "b": {"ipn": 2}}}))
    assert AgentConfig.load(multi, node="b").ipn == 2
    assert AgentConfig.load(multi, node="b").keepalive_s == 5
    with pytest.raises(InputError, match="node 'c' not in config"):
        AgentConfig.load(multi, node="c")

    bad = tmp_path / "bad.yaml"
    for text, match in [
        ("node: x\nipn: 0\n", "ipn: must be ≥ 1"),
        ("node: x\nipn: 1\nneighbours: [{name: y, ipn: 2, cl: ltp}]\n",
         r"neighbours\[0\]\.cl: unknown convergence layer 'ltp'"),
        ("node: x\nipn: 1\nlisten: {tcpcl: ['host:99999']}\n", "listen.tcpcl"),
        ("node: x\nipn: 1\nbogus: 1\n", "bogus: unknown key"),
        ("node: x\nipn: [1\n", "invalid YAML"),
    ]:
        bad.write_text(text)
        with pytest.raises(InputError, match=match) as ei:
            AgentConfig.load(bad)
        assert str(bad) in str(ei.value)


def test_config_for_plan_node(tmp_path):
    from datetime import datetime, timezone

    from netemu.plan.contacts import Contact, ContactPlan, Node

    plan = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc),
                       {"s1": Node("s1", 1), "s2": Node("s2", 2), "g": Node("g", 9)},
                       [Contact("s1", "s2", 0, 10, 1e6, 0.01), Contact("g", "s1", 5, 9, 1e6, 0.01)])
    cfg = AgentConfig.for_plan_node(plan, "s1", {"s2": "10.0.0.2", "g": "10.0.9.1:4600"},
                                    plan_path="/x/plan.json", run_dir=str(tmp_path))
    assert [(n.name, n.ipn, n.address) for n in cfg.neighbours] == [
        ("g", 9, "10.0.9.1:4600"), ("s2", 2, "10.0.0.2:4556")]
    assert cfg.app_socket == str(tmp_path / "bp.sock") and cfg.routing["algorithm"] == "cgr"
    again = AgentConfig.from_obj(cfg.to_obj())
    assert again.neighbours == cfg.neighbours
    with pytest.raises(InputError, match="not in the contact plan"):
        AgentConfig.for_plan_node(plan, "zz", {})


def test_client_acks_are_answered_only_when_asked():
    """The client's acks (rid 0) get no answer frame: one request per batch of deliveries
    and nothing back; an ack with a request id is answered as any request."""
    pushed: list[dict] = []

    class Conn:
        def push(self, obj: dict) -> None:
            pushed.append(obj)

    acked: list[list[str]] = []
    srv = AppServer("/nonexistent/bp.sock", {"ack": lambda c, r: acked.append(r["ids"]) or {}})
    srv.dispatch(Conn(), {"op": "ack", "ids": ["a", "b"], "rid": 0})
    assert acked == [["a", "b"]] and pushed == []
    srv.dispatch(Conn(), {"op": "ack", "ids": ["c"], "rid": 7})
    assert pushed == [{"rid": 7, "ok": True}]
    srv.dispatch(Conn(), {"op": "ack", "rid": 0})  # bad request: still an error answer
    assert pushed[-1]["ok"] is False
