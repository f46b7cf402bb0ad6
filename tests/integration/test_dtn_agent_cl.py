"""The agent's convergence-layer shell with a stand-in core: sessions, segmentation, a link
cut mid-transfer and its recovery, keepalive negotiation, UDP and MTCP. (The full agent with
the real BPA core is tested in test_dtn_agent.py.)"""

from __future__ import annotations

import asyncio
import socket

import pytest
from dtn_agent_harness import CutProxy, StubCore, free_port, wait_for

from netemu.agent import BpClient, BpError
from netemu.agent.agent import Agent
from netemu.agent.config import AgentConfig
from netemu.dtn import mtcp, tcpcl
from netemu.runtime.clock import ScenarioClock


def _cfg(tmp, name, ipn, port, peer, peer_ipn, dial, cl="tcpcl", **kw) -> AgentConfig:
    return AgentConfig.from_obj({
        "node": name, "ipn": ipn,
        "listen": {"tcpcl": [f"127.0.0.1:{port}"], "udpcl": [f"127.0.0.1:{port}"],
                   "mtcp": kw.pop("mtcp", [])},
        "app_socket": str(tmp / name / "bp.sock"), "store": str(tmp / name / "s.sqlite"),
        "log": str(tmp / f"{name}.log"),
        # (dial None: the peer is a neighbour that only it dials)
        "neighbours": [{"name": peer, "ipn": peer_ipn, "cl": cl, "address": dial or ""}],
        **kw,
    })


async def _pair(tmp, *, dial_b: str | None = None, cl="tcpcl", b_kw=None, a_kw=None,
                a_dials=True):
    pa, pb = free_port(), free_port()
    a = Agent(_cfg(tmp, "A", 1, pa, "B", 2, (dial_b or f"127.0.0.1:{pb}") if a_dials else None,
                   cl, **(a_kw or {})), core_factory=StubCore)
    b = Agent(_cfg(tmp, "B", 2, pb, "A", 1, None, cl, **(b_kw or {})), core_factory=StubCore)
    await b.start()
    await a.start()
    return a, b, pb


def test_bundles_flow_and_session_negotiates(tmp_path):
    async def go():
        a, b, _ = await _pair(tmp_path, a_kw={"keepalive_s": 30}, b_kw={"keepalive_s": 7})
        try:
            await wait_for(lambda: a.neighbours["B"].up, 10, "session A→B")
            keys = [a.core.send("B", b"\x9f" + bytes([i]) * 1000) for i in range(200)]
            await wait_for(lambda: len(a.core.sent) == 200, 20, "200 acks")
            assert sorted(a.core.sent) == sorted(keys)
            assert len(b.core.stored) == 200
            ch = next(iter(a.neighbours["B"].sessions))
            assert ch.session.keepalive_s == 7
            assert ("up", "B") in a.core.contacts
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_transfer_cut_mid_bundle_is_resent_whole_after_link_returns(tmp_path):
    """TCPCL cannot resume a transfer: the sender keeps the bundle until the full-length
    XFER_ACK, re-sends it whole on the next session, and the receiver keeps one copy."""

    async def go():
        pb = free_port()
        proxy = await CutProxy(("127.0.0.1", pb), cut_after_bytes=1_500_000, down_s=1.0).start()
        pa = free_port()
        a = Agent(_cfg(tmp_path, "A", 1, pa, "B", 2, f"127.0.0.1:{proxy.port}"),
                  core_factory=StubCore)
        b = Agent(_cfg(tmp_path, "B", 2, pb, "A", 1, None, segment_mru=65536),
                  core_factory=StubCore)
        await b.start()
        await a.start()
        try:
            await wait_for(lambda: a.neighbours["B"].up, 10, "session")
            big = b"\x9f" + bytes(range(256)) * 16384  # 4 MiB in 64 KiB segments
            key = a.core.send("B", big)
            await wait_for(lambda: a.core.sent, 30, "bundle acknowledged after the cut")
            assert proxy.cuts == 1
            assert a.core.sent == [key]
            assert list(b.core.stored.values()) == [big]
            assert a.counters["requeued"] == 1
            assert ("down", "B") in a.core.contacts and a.core.contacts[-1] == ("up", "B")
        finally:
            await a.shutdown()
            await b.shutdown()
            await proxy.close()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_connect_retries_until_peer_appears(tmp_path):
    async def go():
        pa, pb = free_port(), free_port()
        a = Agent(_cfg(tmp_path, "A", 1, pa, "B", 2, f"127.0.0.1:{pb}"), core_factory=StubCore)
        await a.start()
        a.core.send("B", b"\x9fwaiting")
        await asyncio.sleep(1.5)  # B not there yet: connects fail, bundle stays queued
        assert a.queued("B") == 1 and not a.core.sent
        b = Agent(_cfg(tmp_path, "B", 2, pb, "A", 1, None), core_factory=StubCore)
        await b.start()
        try:
            await wait_for(lambda: a.core.sent, 20, "delivery after B starts")
            assert list(b.core.stored.values()) == [b"\x9fwaiting"]
            assert "connect_failed" in (tmp_path / "A.log").read_text()
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_udpcl_and_oversize_refusal(tmp_path):
    async def go():
        pa, pb = free_port(), free_port()
        a = Agent(_cfg(tmp_path, "A", 1, pa, "B", 2, f"127.0.0.1:{pb}", cl="udpcl"),
                  core_factory=StubCore)
        b = Agent(_cfg(tmp_path, "B", 2, pb, "A", 1, None), core_factory=StubCore)
        await b.start()
        await a.start()
        try:
            await wait_for(lambda: a.neighbours["B"].up, 10, "udp neighbour up")
            a.core.send("B", b"\x9f" + b"u" * 1000)
            a.core.send("B", b"\x9f" + b"v" * 5000)  # over the 1472-byte limit
            await wait_for(lambda: b.core.stored and a.core.failed, 10, "udp delivery")
            assert list(b.core.stored.values()) == [b"\x9f" + b"u" * 1000]
            assert "exceeds the UDP CL limit" in (tmp_path / "A.log").read_text()
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_mtcp_listener_accepts_ud3tn_framing(tmp_path):
    async def go():
        pm = free_port()
        b = Agent(_cfg(tmp_path, "B", 2, free_port(), "A", 1, None, mtcp=[f"127.0.0.1:{pm}"]),
                  core_factory=StubCore)
        await b.start()
        try:
            s = socket.create_connection(("127.0.0.1", pm))
            s.sendall(mtcp.encode(b"\x9fone") + mtcp.encode(b"\x9f" + b"2" * 70000))
            await wait_for(lambda: len(b.core.stored) == 2, 10, "mtcp bundles")
            s.close()
        finally:
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.0\r\n\r\n", b"dtn!\x03\x00"])
def test_garbage_peer_is_logged_and_dropped(tmp_path, junk):
    async def go():
        pb = free_port()
        b = Agent(_cfg(tmp_path, "B", 2, pb, "A", 1, None), core_factory=StubCore)
        await b.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", pb)
            w.write(junk)
            await w.drain()
            data = await asyncio.wait_for(r.read(), 5)  # peer closes
            assert data == b"" or data.startswith(b"dtn!")
            await wait_for(lambda: "tcpcl_error" in (tmp_path / "B.log").read_text(), 5, "log")
        finally:
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_mtcp_neighbour_outgoing(tmp_path):
    """A sends to a µD3TN-style MTCP peer (here agent B's MTCP listener)."""

    async def go():
        pm = free_port()
        b = Agent(_cfg(tmp_path, "B", 2, free_port(), "A", 1, None, mtcp=[f"127.0.0.1:{pm}"]),
                  core_factory=StubCore)
        a = Agent(_cfg(tmp_path, "A", 1, free_port(), "B", 2, f"127.0.0.1:{pm}", cl="mtcp"),
                  core_factory=StubCore)
        await b.start()
        await a.start()
        try:
            await wait_for(lambda: a.neighbours["B"].up, 10, "mtcp neighbour up")
            for i in range(5):
                a.core.send("B", b"\x9f" + bytes([i]) * 3000)
            await wait_for(lambda: len(b.core.stored) == 5 and len(a.core.sent) == 5, 10,
                           "mtcp delivery")
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_queue_longer_than_session_window_drains(tmp_path):
    """More bundles than the session window (1,024 unacknowledged transfers) queued at
    once: acknowledgements reopen the window and the whole queue goes."""

    async def go():
        a, b, _ = await _pair(tmp_path)
        try:
            await wait_for(lambda: a.neighbours["B"].up, 10, "session")
            for i in range(2500):
                a.core.send("B", b"\x9f%05d" % i)
            await wait_for(lambda: len(a.core.sent) == 2500, 60, "2,500 acknowledgements")
            assert len(b.core.stored) == 2500 and a.queued("B") == 0
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 90))


def test_contact_end_hands_queued_bundles_back_to_the_router(tmp_path):
    """A bundle queued for a neighbour that never answered goes back to the core when the
    plan's contact ends (so the router can pick another way), not kept forever."""
    import json
    import time
    from datetime import datetime, timedelta, timezone


    async def go():
        epoch = datetime.now(timezone.utc) - timedelta(seconds=10)
        plan = {"epoch": epoch.isoformat().replace("+00:00", "Z"), "nodes": {"A": 1, "B": 2},
                "contacts": [{"from": "A", "to": "B", "start_s": 0, "end_s": 12,
                              "rate_bps": 1e9, "owlt_s": 0.001}]}
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        cfg = _cfg(tmp_path, "A", 1, free_port(), "B", 2, f"127.0.0.1:{free_port()}",
                   contact_plan=str(tmp_path / "plan.json"))
        clock = ScenarioClock(epoch, 1.0, time.time(), 10.0)
        a = Agent(cfg, core_factory=StubCore, clock=clock)
        await a.start()
        try:
            await asyncio.sleep(0.6)
            assert a.neighbours["B"].plan_up
            key = a.core.send("B", b"\x9fnobody home")  # B never listens
            await wait_for(lambda: a.core.failed, 10, "bundle handed back at contact end")
            assert a.core.failed == [key] and a.queued("B") == 0
            assert not a.neighbours["B"].plan_up
            assert "returned_to_router" in (tmp_path / "A.log").read_text()
        finally:
            await a.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_silent_peer_is_ended_with_idle_timeout(tmp_path):
    """A peer that negotiates a 1 s keepalive and then says nothing gets SESS_TERM
    (IDLE_TIMEOUT) after 2 × keepalive, and the agent keeps sending KEEPALIVEs itself."""

    async def go():
        pb = free_port()
        b = Agent(_cfg(tmp_path, "B", 2, pb, "A", 1, None, keepalive_s=1),
                  core_factory=StubCore)
        await b.start()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", pb)
            w.write(b"dtn!\x04\x00" + tcpcl.SessInit(1, 1 << 20, 1 << 20, "ipn:1.0").encode())
            await w.drain()
            data = await asyncio.wait_for(r.read(), 15)  # until the agent closes
            s = tcpcl.Session(tcpcl.Role.ACTIVE, "ipn:1.0")
            events = s.receive_data(data)
            kinds = [type(e).__name__ for e in events]
            assert "KeepaliveReceived" in kinds
            assert tcpcl.SessionTerminating(tcpcl.TermReason.IDLE_TIMEOUT, by_peer=True) in events
            assert "session_idle" in (tmp_path / "B.log").read_text()
        finally:
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_core_failure_is_an_answer_not_a_hang(tmp_path):
    """If the BPA core raises on an event, the app gets an error answer (and the agent
    logs it) instead of waiting forever."""

    async def go():
        a = Agent(_cfg(tmp_path, "A", 1, free_port(), "B", 2, None))  # the real core
        await a.start()
        real = a.core.bpa.handle

        def broken(ev):
            if type(ev).__name__ == "AppSend":
                raise RuntimeError("boom")
            return real(ev)

        a.core.bpa.handle = broken
        try:
            bp = await BpClient.connect(str(tmp_path / "A" / "bp.sock"), timeout_s=10)
            with pytest.raises(BpError, match="internal error.*boom"):
                await asyncio.wait_for(bp.send("ipn:2.1", b"x"), 10)
            await bp.close()
            assert '"core_error"' in (tmp_path / "A.log").read_text()
        finally:
            await a.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))
