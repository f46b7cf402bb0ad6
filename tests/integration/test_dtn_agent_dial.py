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

import pytest
from dtn_agent_harness import StubCore, free_port, wait_for

from netemu.agent.agent import Agent
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
