"""A hostile TCPCL peer for the security tests: it speaks TCPCLv4 through the project's
own pure session (so it says exactly what it is told to), optionally over TLS with any
certificate, and reports what the agent under test did to it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from netemu.agent.agent import Agent
from netemu.agent.config import AgentConfig
from netemu.dtn import tcpcl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Outcome:
    """What one hostile session saw from the agent."""

    events: list[tcpcl.Event] = field(default_factory=list)
    error: str = ""  # the TLS handshake's failure, or a protocol error
    hung_up: bool = False  # the agent closed the connection

    @property
    def started(self) -> bool:
        return any(isinstance(e, tcpcl.SessionStarted) for e in self.events)

    @property
    def refused(self) -> bool:
        """The agent ended the session with SESS_TERM (Contact Failure), failed TLS, or
        hung up before a session started (TLS 1.3: a refused client certificate shows as
        the server's alert, or a close, after the client's side of the handshake)."""
        term = [e for e in self.events if isinstance(e, tcpcl.SessionTerminating)]
        return bool(self.error) or (self.hung_up and not self.started) or any(
            e.by_peer and e.reason == tcpcl.TermReason.CONTACT_FAILURE for e in term)

    @property
    def bundles(self) -> list[bytes]:
        return [e.data for e in self.events if isinstance(e, tcpcl.TransferReceived)]


def client_context(ca: Path | None, cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS client context with the given certificate; it trusts ``ca`` (None: anyone)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    if ca is None:
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def hostile_session(port: int, node_id: str, *, tls: ssl.SSLContext | None = None,
                          read_s: float = 1.5) -> Outcome:
    """Dial the agent on ``port`` as ``node_id`` (offering TLS with ``tls``), accept and
    acknowledge whatever it sends for ``read_s`` seconds, and say what happened."""
    s = tcpcl.Session(tcpcl.Role.ACTIVE, node_id, can_tls=tls is not None)
    out = Outcome()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        for buf in s.data_to_send():
            w.write(buf)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + read_s
        while loop.time() < deadline:
            try:
                data = await asyncio.wait_for(r.read(65536), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            if not data:
                out.hung_up = True
                break
            try:
                events = s.receive_data(data)
            except tcpcl.TcpclError as e:
                out.error = str(e)
                break
            out.events += events
            for ev in events:
                if isinstance(ev, tcpcl.TlsNegotiated):
                    assert tls is not None
                    try:
                        await w.start_tls(tls)
                    except (ssl.SSLError, OSError) as e:
                        out.error = f"TLS: {e}"
                        return out
                    s.tls_established()
                elif isinstance(ev, tcpcl.TransferReceived):
                    s.ack_transfer(ev.transfer_id)
            for buf in s.data_to_send():
                w.write(buf)
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await w.drain()
    except (ConnectionError, ssl.SSLError) as e:
        out.error = out.error or f"connection: {e}"
    finally:
        w.close()
        with contextlib.suppress(Exception):
            await w.wait_closed()
    return out


def agent_config(tmp: Path, name: str, ipn: int, port: int, neighbours: list[dict],
                 **extra) -> AgentConfig:
    """An agent on loopback with its files under ``tmp/name``."""
    (tmp / name).mkdir(parents=True, exist_ok=True)
    return AgentConfig.from_obj({
        "node": name, "ipn": ipn,
        "listen": {"tcpcl": [f"127.0.0.1:{port}"], "udpcl": []},
        "app_socket": str(tmp / name / "bp.sock"), "store": str(tmp / name / "s.sqlite"),
        "log": str(tmp / f"{name}.log"), "neighbours": neighbours, **extra,
    })


def log_events(agent: Agent, event: str) -> list[dict]:
    path = Path(agent.cfg.log or "")
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == event:
            out.append(rec)
    return out
