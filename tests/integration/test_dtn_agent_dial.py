"""The agent's dialling when a connection opens but the TCPCL session never starts.

Seen in the flagship: a ground–satellite session stayed down for a whole pass
and the agents stopped logging connect attempts. A dialled TCP connection counts as the
neighbour's stream from ``connection_made`` on, so one whose contact header / SESS_INIT
exchange never completes (the peer went silent or the return path died right after the
TCP handshake) used to block every further dial until the contact ended. Now such a
connection is closed after a session-setup timeout and the agent dials again.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from dtn_agent_harness import StubCore, free_port, wait_for

from netemu.agent.agent import Agent, AgentServices
from netemu.agent.config import AgentConfig
from netemu.dtn import tcpcl

pytestmark = pytest.mark.integration


def _cfg(tmp, port: int, peer_port: int) -> AgentConfig:
    return AgentConfig.from_obj({
        "node": "A", "ipn": 1,
        "listen": {"tcpcl": [f"127.0.0.1:{port}"], "udpcl": [f"127.0.0.1:{port}"]},
        "app_socket": str(tmp / "A" / "bp.sock"), "store": str(tmp / "A" / "s.sqlite"),
        "log": str(tmp / "A.log"),
        "neighbours": [{"name": "B", "ipn": 2, "cl": "tcpcl",
                        "address": f"127.0.0.1:{peer_port}"}],
    })


def test_connection_without_session_is_dropped_and_redialled(tmp_path):
    """B accepts TCP connections but never answers the contact header. A must give up on
    each such connection after the session-setup timeout, say so in its log, and dial
    again — not sit on the first connection for the rest of the contact."""

    async def go():
        accepted: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            with contextlib_suppress():
                await reader.read()  # swallow whatever A sends, answer nothing

        pb = free_port()
        server = await asyncio.start_server(silent, "127.0.0.1", pb)
        a = Agent(_cfg(tmp_path, free_port(), pb), core_factory=StubCore)
        await a.start()
        try:
            await wait_for(lambda: len(accepted) >= 2, 30,
                           "a second dial after a connection whose session never started")
            log = [json.loads(x) for x in (tmp_path / "A.log").read_text().splitlines()]
            timeouts = [r for r in log if r["event"] == "session_setup_timeout"]
            assert timeouts and timeouts[0]["neighbour"] == "B", log[-5:]
            assert not any(r["event"] == "session_up" for r in log)
        finally:
            await a.shutdown()
            server.close()
            for w in accepted:
                w.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_half_open_peer_does_not_stop_a_real_session_later(tmp_path):
    """After a silent listener on B's address is replaced by a real TCPCL peer, A's next
    dial reaches it and the session starts (the earlier stuck connection held nothing)."""

    async def go():
        accepted: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)
            with contextlib_suppress():
                await reader.read()

        pb = free_port()
        server = await asyncio.start_server(silent, "127.0.0.1", pb)
        a = Agent(_cfg(tmp_path, free_port(), pb), core_factory=StubCore)
        await a.start()
        try:
            await wait_for(lambda: accepted, 10, "A's first dial")
            server.close()
            for w in accepted:
                w.close()
            await server.wait_closed()
            # A real peer on the same port: answers the contact header and SESS_INIT.
            got_init = asyncio.Event()

            async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                s = tcpcl.Session(tcpcl.Role.PASSIVE, "ipn:2.0")
                while data := await reader.read(65536):
                    events = s.receive_data(data)
                    for out in s.data_to_send():
                        writer.write(out)
                    await writer.drain()
                    if any(isinstance(e, tcpcl.SessionStarted) for e in events):
                        got_init.set()

            server2 = await asyncio.start_server(peer, "127.0.0.1", pb)
            try:
                await asyncio.wait_for(got_init.wait(), 30)
                await wait_for(lambda: "session_up" in (tmp_path / "A.log").read_text(), 10,
                               "A's session_up")
            finally:
                server2.close()
        finally:
            await a.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


def contextlib_suppress():
    import contextlib

    return contextlib.suppress(ConnectionError, OSError)


def _pair_cfg(tmp, name: str, ipn: int, port: int, peer: str, peer_ipn: int,
              peer_port: int, dial: str) -> AgentConfig:
    return AgentConfig.from_obj({
        "node": name, "ipn": ipn,
        "listen": {"tcpcl": [f"127.0.0.1:{port}"], "udpcl": []},
        "app_socket": str(tmp / name / "bp.sock"), "store": str(tmp / name / "s.sqlite"),
        "log": str(tmp / f"{name}.log"),
        "neighbours": [{"name": peer, "ipn": peer_ipn, "cl": "tcpcl", "dial": dial,
                        "address": f"127.0.0.1:{peer_port}"}],
    })


def _streams(agent: Agent, peer: str) -> list:
    return [ch for ch in agent.neighbours[peer].sessions
            if getattr(ch, "established", False)
            and ch.session.state is tcpcl.SessionState.ESTABLISHED]


def test_dial_modes_decide_who_dials(tmp_path):
    """``both``: at once, whichever ipn is lower; ``lower``: the higher ipn waits for the
    grace; ``never``: not at all."""
    import time

    async def go():
        now = time.monotonic()
        for dial, my_ipn, expect_now, expect_later in (
                ("both", 2, True, True), ("lower", 1, True, True),
                ("lower", 3, False, True), ("never", 1, False, False)):
            a = Agent(_pair_cfg(tmp_path, "A", my_ipn, free_port(), "B", 2, free_port(),
                                dial), core_factory=StubCore)
            st = a.neighbours["B"]
            st.plan_up_since = now
            assert a._should_dial(st, now) is expect_now, dial
            assert a._should_dial(st, now + 11) is expect_later, dial

    asyncio.run(go())


def test_the_dial_grace_counts_from_when_the_host_opens_its_dials(tmp_path):
    """A node host opens its dials once all its nodes listen (a minute for a thousand
    nodes). The higher ipn's grace must start then, not at its own start: else every
    higher-ipn node would dial at once with the lower one, and each link would get two
    sessions, one ended at once (two more TLS handshakes each)."""

    async def go():
        dials_open = asyncio.Event()
        a = Agent(_pair_cfg(tmp_path, "A", 3, free_port(), "B", 2, free_port(), "lower"),
                  core_factory=StubCore, services=AgentServices(dials_open=dials_open))
        st = a.neighbours["B"]
        a._housekeeping_round()
        started = st.plan_up_since
        assert st.plan_up and started
        await asyncio.sleep(0.2)
        last_closed = time.monotonic()
        a._housekeeping_round()  # dials still closed: the grace has not started
        assert st.plan_up_since >= last_closed > started
        dials_open.set()
        a._housekeeping_round()
        assert st.plan_up_since >= last_closed  # counts from the dials' opening on
        assert not a._should_dial(st, time.monotonic() + 5)
        assert a._should_dial(st, st.plan_up_since + 10.5)
        assert st.connecting is None  # the higher ipn did not dial

    asyncio.run(go())


def test_both_sides_dialling_keep_the_session_the_lower_ipn_dialled(tmp_path):
    """With ``dial: both`` two agents may each dial the other: both ends then keep the same
    one session (the one ipn 1 dialled), the other is ended with SESS_TERM, and bundles go
    on over the one kept."""

    async def go():
        pa, pb = free_port(), free_port()
        a = Agent(_pair_cfg(tmp_path, "A", 1, pa, "B", 2, pb, "both"), core_factory=StubCore)
        b = Agent(_pair_cfg(tmp_path, "B", 2, pb, "A", 1, pa, "both"), core_factory=StubCore)
        await a.start()
        await b.start()
        try:
            await wait_for(lambda: _streams(a, "B") and _streams(b, "A"), 30, "a session")
            # whoever dialled first, make the other side dial too: a collision for sure
            dialled_by_a = _streams(a, "B")[0].session.role is tcpcl.Role.ACTIVE
            other, st = (b, b.neighbours["A"]) if dialled_by_a else (a, a.neighbours["B"])
            await other._connect(st)
            await wait_for(lambda: any('"session_collision"' in (tmp_path / f"{n}.log")
                                       .read_text() for n in "AB"), 30, "a collision resolved")
            await wait_for(lambda: len(a.neighbours["B"].sessions) == 1
                           and len(b.neighbours["A"].sessions) == 1, 30, "one session left")
            kept_a, kept_b = _streams(a, "B"), _streams(b, "A")
            assert len(kept_a) == len(kept_b) == 1
            assert kept_a[0].session.role is tcpcl.Role.ACTIVE  # the one ipn 1 dialled
            assert kept_b[0].session.role is tcpcl.Role.PASSIVE
            # the side that saw both sessions first ended the one ipn 2 dialled; the other
            # side then got its SESS_TERM (and so had nothing left to resolve)
            for n, ended in (("A", "passive"), ("B", "active")):
                log = [json.loads(x) for x in (tmp_path / f"{n}.log").read_text().splitlines()]
                assert {r["ended_role"] for r in log if r["event"] == "session_collision"} <= {
                    ended}, n
            key = a.core.send("B", b"after the collision")
            await wait_for(lambda: key in a.core.sent, 30, "the bundle acknowledged")
            assert b"after the collision" in b.core.stored.values()
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 90))


def test_a_dial_waiting_for_the_gate_gives_way_to_the_peers_session(tmp_path):
    """In a node host, dials wait for a slot of the host's dial gate (thousands at a
    constellation's bring-up). When the neighbour's own dial brings the session up
    meanwhile, the waiting dial must not open a second one: that would collide, cost two
    TLS handshakes and end the session in use (seen: 3,600 collisions and 9,000 extra
    sessions in the first minute of a 2,800-node run)."""

    async def go():
        pa, pb = free_port(), free_port()
        gate = asyncio.Semaphore(1)
        await gate.acquire()  # every slot taken: A's dial waits
        a = Agent(_pair_cfg(tmp_path, "A", 1, pa, "B", 2, pb, "both"), core_factory=StubCore,
                  services=AgentServices(dial_gate=gate))
        b = Agent(_pair_cfg(tmp_path, "B", 2, pb, "A", 1, pa, "both"), core_factory=StubCore)
        await a.start()
        await wait_for(lambda: a.neighbours["B"].connecting is not None, 10, "A's dial")
        await b.start()
        try:
            await wait_for(lambda: _streams(a, "B") and _streams(b, "A"), 30,
                           "B's session")
            kept = _streams(a, "B")[0]
            assert kept.session.role is tcpcl.Role.PASSIVE  # B dialled it
            gate.release()  # A's dial gets its slot now
            await wait_for(lambda: a.neighbours["B"].connecting is None, 10,
                           "A's dial to end")
            await asyncio.sleep(0.5)  # a second session, had one been dialled, is up by now
            assert _streams(a, "B") == [kept]
            assert len(b.neighbours["A"].sessions) == 1
            for n in "AB":
                assert '"session_collision"' not in (tmp_path / f"{n}.log").read_text(), n
            key = a.core.send("B", b"over the one session")
            await wait_for(lambda: key in a.core.sent, 30, "the bundle acknowledged")
        finally:
            await a.shutdown()
            await b.shutdown()

    asyncio.run(asyncio.wait_for(go(), 90))


def test_no_route_at_a_contact_start_is_retried_soon_without_backoff(tmp_path):
    """At a contact's start the emulator may still be bringing the link up: a dial that
    finds no route (ENETUNREACH) is retried after 20 ms, not after the doubling backoff
    and the next housekeeping round; a refused dial still backs off."""
    import errno

    from netemu.agent.agent import AgentServices
    from netemu.agent.channels import Sockets

    async def go(err: int) -> list[dict]:
        log = tmp_path / f"A-{err}.log"

        class Unreachable(Sockets):
            async def connect(self, loop, factory, host, port):
                raise OSError(err, os.strerror(err))

        cfg = _pair_cfg(tmp_path, "A", 1, free_port(), "B", 2, free_port(), "both")
        cfg.log = str(log)
        a = Agent(cfg, core_factory=StubCore, services=AgentServices(sockets=Unreachable()))
        await a.start()
        try:
            await wait_for(lambda: log.read_text().count('"connect_failed"') >= 4, 10,
                           "four failed dials")
        finally:
            await a.shutdown()
        return [r for r in map(json.loads, log.read_text().splitlines())
                if r["event"] == "connect_failed"]

    unreachable = asyncio.run(go(errno.ENETUNREACH))
    assert [r["retry_in_s"] for r in unreachable[:4]] == [0.02] * 4
    refused = asyncio.run(go(errno.ECONNREFUSED))
    assert [r["retry_in_s"] for r in refused[:3]] == [0.2, 0.4, 0.8]
