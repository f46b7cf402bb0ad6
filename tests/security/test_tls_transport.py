"""TCPCL's TLS transport (OpenSSL on the socket, netemu.agent.tlssock): a peer that sends
junk, or nothing, where the TLS handshake belongs is refused while the agent goes on
serving others;
a bulk transfer through a small socket buffer (OpenSSL's write retries, the writer paused
and resumed) arrives whole, and close() ends both sides with close_notify."""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest
from dtn_agent_harness import StubCore, wait_for
from peers import agent_config, client_context, free_port, hostile_session, log_events

from netemu.agent import tlssock
from netemu.agent.agent import Agent
from netemu.agent.tls import TlsContexts
from netemu.dtn import tcpcl
from netemu.run.pki import RunCA


@pytest.fixture
def pki(tmp_path):
    ca = RunCA.create(tmp_path / "pki")
    return {n: ca.issue(f"N{n}", f"ipn:{n}.0", tmp_path / f"pki-{n}") for n in (1, 2)}


def _tls(creds) -> dict:
    return {"tls": "required", "tls_ca": str(creds.ca), "tls_cert": str(creds.cert),
            "tls_key": str(creds.key)}


async def _after_contact_headers(port: int, then: bytes) -> bytes:
    """Offer TLS in a contact header, send ``then`` where the ClientHello belongs, and
    return what the agent sent until it hung up (after its own contact header)."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(tcpcl.ContactHeader(flags=tcpcl.FLAG_CAN_TLS).encode())
    header = await asyncio.wait_for(r.readexactly(6), 10)
    assert tcpcl.decode_contact_header(header).flags & tcpcl.FLAG_CAN_TLS
    if then:
        w.write(then)
    try:
        rest = await asyncio.wait_for(r.read(), 15)
    except ConnectionResetError:
        rest = b""
    w.close()
    return rest


def test_junk_or_silence_instead_of_a_client_hello_is_refused_and_the_agent_serves_on(
        tmp_path, pki):
    async def go():
        pa = free_port()
        a = Agent(agent_config(tmp_path, "A", 1, pa, [{"name": "B", "ipn": 2, "cl": "tcpcl",
                                                       "address": ""}], **_tls(pki[1])),
                  core_factory=StubCore)
        a.core.send("B", b"for B")
        await a.start()
        try:
            # junk (not a TLS record), and a peer that stops after its contact header:
            # the agent hangs up on both (the silent one after the session set-up time)
            junk, silent = await asyncio.gather(
                _after_contact_headers(pa, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 8),
                _after_contact_headers(pa, b""))
            assert b"for B" not in junk and b"for B" not in silent
            reasons = [e["reason"] for e in log_events(a, "peer_refused")]
            assert reasons and all(r.startswith("TLS handshake failed") for r in reasons), reasons
            assert len(reasons) + len(log_events(a, "session_setup_timeout")) >= 2
            # the agent goes on: B, with its certificate, gets a session and the bundle
            got = await hostile_session(pa, "ipn:2.0", read_s=3.0, tls=client_context(
                pki[1].ca, pki[2].cert, pki[2].key))
            assert got.started and got.bundles == [b"for B"]
            assert log_events(a, "session_up")[0]["tls"] is True
        finally:
            await a.shutdown()

    asyncio.run(asyncio.wait_for(go(), 60))


class _Peer(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.got = bytearray()
        self.eof = False
        self.pauses = 0
        self.resumed = asyncio.Event()
        self.lost = asyncio.get_event_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        transport.pause_reading()  # (the handshake's bytes stay in the socket)

    def data_received(self, data):
        self.got += data

    def eof_received(self):
        self.eof = True

    def pause_writing(self):
        self.pauses += 1

    def resume_writing(self):
        self.resumed.set()

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def test_a_bulk_transfer_through_a_small_socket_buffer_arrives_whole(tmp_path, pki):
    async def go():
        loop = asyncio.get_running_loop()
        ctx = {n: TlsContexts.of(agent_config(tmp_path, f"N{n}", n, 1, [], **_tls(pki[n])))
               for n in (1, 2)}
        server = _Peer()
        srv = await loop.create_server(lambda: server, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        client = _Peer()
        await loop.create_connection(lambda: client, "127.0.0.1", port)
        await wait_for(lambda: server.transport is not None, 5, "accepted")
        sock = client.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        tc = await tlssock.take_over(client.transport, client, ctx[1].client,
                                     server_side=False, timeout_s=5)
        ts = await tlssock.take_over(server.transport, server, ctx[2].server,
                                     server_side=True, timeout_s=5)
        await asyncio.gather(tc.handshake(5), ts.handshake(5))
        assert ts.get_extra_info("ssl_object").getpeercert(binary_form=True)
        blob = bytes(range(256)) * 4096 * 6  # 6 MiB
        for i in range(0, len(blob), 1 << 20):
            tc.write(blob[i : i + (1 << 20)])
        assert client.pauses == 1 and tc.get_write_buffer_size() > 0
        await asyncio.wait_for(client.resumed.wait(), 20)
        await wait_for(lambda: len(server.got) >= len(blob), 20, "all bytes")
        assert hashlib.sha256(server.got).digest() == hashlib.sha256(blob).digest()
        ts.write(b"reply")
        await wait_for(lambda: client.got == b"reply", 5, "reply")
        tc.close()
        assert await asyncio.wait_for(server.lost, 10) is None and server.eof
        assert await asyncio.wait_for(client.lost, 10) is None
        srv.close()

    asyncio.run(asyncio.wait_for(go(), 60))
