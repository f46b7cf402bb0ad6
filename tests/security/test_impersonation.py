"""Who an agent talks to: a TCP client that claims to be a node, with and without TLS.

Agent A (ipn:1) has one neighbour, B (ipn:2), which is down, and bundles queued for it.
Without TLS the node ID in SESS_INIT is all there is: junk, the null node, A's own ID and
nodes that are not A's neighbours are refused, and a dialled neighbour must answer as
itself; a client that claims B's ID is believed (docs/security.md says so). With
``tls: required`` and a per-run CA, only the holder of B's certificate is B.
"""

from __future__ import annotations

import asyncio

import pytest
from dtn_agent_harness import StubCore, wait_for
from peers import agent_config, client_context, free_port, hostile_session, log_events

from netemu.agent.agent import Agent
from netemu.dtn import tcpcl
from netemu.run.pki import RunCA

NOT_NODES = ["", "junk", "ipn:-1.0", "ipn:0.0", "dtn:none", "ipn:2.7", "ipn:1.0"]


def _b(address: str = "") -> list[dict]:
    return [{"name": "B", "ipn": 2, "cl": "tcpcl", "address": address}]


def _run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, 90))


def test_without_tls_only_configured_neighbours_get_a_session(tmp_path):
    async def go():
        port = free_port()
        a = Agent(agent_config(tmp_path, "A", 1, port, _b()), core_factory=StubCore)
        await a.start()
        try:
            keys = [a.core.send("B", b"for B %d" % i) for i in range(5)]
            for node_id in [*NOT_NODES, "ipn:3.0", "dtn://x/"]:
                got = await hostile_session(port, node_id, read_s=1.0)
                assert got.refused and not got.started, node_id
                assert got.bundles == [], node_id
            assert set(a.neighbours) == {"B"}, "a refused peer became a neighbour"
            assert a.counters["peers_refused"] == len(NOT_NODES) + 2
            reasons = [r["reason"] for r in log_events(a, "peer_refused")]
            assert any("this node's own ID" in r for r in reasons)
            assert any("not a configured neighbour" in r for r in reasons)
            assert any("not a node ID" in r for r in reasons)
            # the limit of a session without TLS: whoever says "ipn:2.0" is B
            got = await hostile_session(port, "ipn:2.0", read_s=2.0)
            assert got.started and sorted(got.bundles) == [b"for B %d" % i for i in range(5)]
            await wait_for(lambda: sorted(a.core.sent) == sorted(keys), 10, "acks counted")
        finally:
            await a.shutdown()

    _run(go())


def test_accept_unknown_peers_lets_other_nodes_in_but_never_junk(tmp_path):
    async def go():
        port = free_port()
        a = Agent(agent_config(tmp_path, "A", 1, port, _b(), accept_unknown_peers=True),
                  core_factory=StubCore)
        await a.start()
        try:
            assert (await hostile_session(port, "ipn:3.0", read_s=0.5)).started
            for node_id in NOT_NODES:
                assert (await hostile_session(port, node_id, read_s=0.5)).refused, node_id
            # the stranger's state goes with its session: nothing kept per unknown peer
            await wait_for(lambda: set(a.neighbours) == {"B"}, 10, "unknown peer released")
        finally:
            await a.shutdown()

    _run(go())


def test_a_dialled_neighbour_must_answer_as_itself(tmp_path):
    """A dials B's address, where an impostor listens and answers as ipn:7.0: A ends the
    session, sends it nothing and dials again later."""

    async def go():
        fake_port = free_port()
        sessions: list[list[tcpcl.Event]] = []

        async def impostor(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            s = tcpcl.Session(tcpcl.Role.PASSIVE, "ipn:7.0")
            seen: list[tcpcl.Event] = []
            sessions.append(seen)
            while data := await r.read(65536):
                try:
                    seen += s.receive_data(data)
                except tcpcl.TcpclError:
                    break
                for buf in s.data_to_send():
                    w.write(buf)
            w.close()

        server = await asyncio.start_server(impostor, "127.0.0.1", fake_port)
        a = Agent(agent_config(tmp_path, "A", 1, free_port(), _b(f"127.0.0.1:{fake_port}")),
                  core_factory=StubCore)
        a.core.send("B", b"secret for B")
        await a.start()
        try:
            await wait_for(lambda: a.counters.get("peers_refused", 0) >= 2, 30,
                           "two dials refused")
            assert all(not any(isinstance(e, tcpcl.TransferReceived) for e in seen)
                       for seen in sessions)
            assert any(tcpcl.SessionTerminating(tcpcl.TermReason.CONTACT_FAILURE, True) in seen
                       for seen in sessions)
            assert not a.neighbours["B"].up and a.core.sent == []
            assert "neighbour B was dialled, and it is ipn:2.0" in \
                log_events(a, "peer_refused")[0]["reason"]
        finally:
            await a.shutdown()
            server.close()

    _run(go())


@pytest.fixture
def pki(tmp_path):
    """A run CA with certificates for ipn:1, 2 and 3, and a second, foreign CA."""
    ca = RunCA.create(tmp_path / "pki")
    creds = {n: ca.issue(f"N{n}", f"ipn:{n}.0", tmp_path / f"pki-{n}") for n in (1, 2, 3)}
    other = RunCA.create(tmp_path / "pki-other")
    creds[0] = other.issue("rogue", "ipn:2.0", tmp_path / "pki-rogue")
    return creds


def _tls(creds, mode: str = "required") -> dict:
    return {"tls": mode, "tls_ca": str(creds.ca), "tls_cert": str(creds.cert),
            "tls_key": str(creds.key)}


def test_with_tls_only_the_certificate_holder_is_the_neighbour(tmp_path, pki):
    async def go():
        pa, pb = free_port(), free_port()
        # (A dials B, the lower ipn first; B is not up yet)
        a = Agent(agent_config(tmp_path, "A", 1, pa, _b(f"127.0.0.1:{pb}"), **_tls(pki[1])),
                  core_factory=StubCore)
        await a.start()
        try:
            a.core.send("B", b"for B only")
            ca = pki[1].ca
            attempts = {
                "no TLS, claims ipn:2.0": await hostile_session(pa, "ipn:2.0"),
                "foreign CA, claims ipn:2.0": await hostile_session(
                    pa, "ipn:2.0", tls=client_context(None, pki[0].cert, pki[0].key)),
                "ipn:3's certificate, claims ipn:2.0": await hostile_session(
                    pa, "ipn:2.0", tls=client_context(ca, pki[3].cert, pki[3].key)),
                "ipn:3's certificate, as itself": await hostile_session(
                    pa, "ipn:3.0", tls=client_context(ca, pki[3].cert, pki[3].key)),
            }
            for what, got in attempts.items():
                assert got.refused and not got.started and got.bundles == [], what
            reasons = " | ".join(r["reason"] for r in log_events(a, "peer_refused"))
            assert "does not offer TLS" in reasons
            assert "TLS handshake failed" in reasons
            assert "its TLS certificate names ipn:3.0" in reasons
            assert a.core.sent == []
            # the real B, with its certificate: a session over TLS, and the bundle
            b = Agent(agent_config(tmp_path, "B", 2, pb, [
                {"name": "A", "ipn": 1, "cl": "tcpcl", "address": f"127.0.0.1:{pa}"}],
                **_tls(pki[2])), core_factory=StubCore)
            await b.start()
            try:
                await wait_for(lambda: b"for B only" in b.core.stored.values(), 30,
                               "bundle over TLS")
                ups = log_events(a, "session_up") + log_events(b, "session_up")
                assert ups and all(u["tls"] for u in ups)
            finally:
                await b.shutdown()
        finally:
            await a.shutdown()

    _run(go())


def test_tls_optional_talks_to_a_peer_without_tls(tmp_path, pki):
    """``tls: optional`` keeps interop with stacks that have no certificate: the session
    runs in the clear (and the node-ID checks still hold)."""

    async def go():
        pa = free_port()
        a = Agent(agent_config(tmp_path, "A", 1, pa, _b(), **_tls(pki[1], "optional")),
                  core_factory=StubCore)
        a.core.send("B", b"in the clear")
        await a.start()
        try:
            got = await hostile_session(pa, "ipn:2.0", read_s=2.0)
            assert got.started and got.bundles == [b"in the clear"]
            assert (await hostile_session(pa, "ipn:3.0", read_s=0.5)).refused
            assert log_events(a, "session_up")[0]["tls"] is False
        finally:
            await a.shutdown()

    _run(go())
