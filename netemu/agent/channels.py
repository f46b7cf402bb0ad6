"""The agent's convergence-layer channels: asyncio protocols that feed the CL state
machines of :mod:`netemu.dtn` (TCPCLv4 sessions, MTCP framing, UDP CL datagrams) real
sockets, and hand the bundles they carry to the :class:`~netemu.agent.agent.Agent`.

A channel carries bundles to one neighbour (:class:`Channel`); a bundle handed to one
stays the agent's until the channel says it was sent (``cl_sent``) or refused.

A TCPCL channel asks the agent whether to accept its peer (``check_peer``) before the
session starts, runs the TLS handshake when both sides offered it, and ends a session
whose incoming transfer stalls (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netemu.agent import tlssock
from netemu.agent.config import NeighbourConfig, split_host_port
from netemu.agent.sockopt import SEND_BUFFER_BYTES, big_send_buffer
from netemu.agent.tls import peer_node_ids
from netemu.dtn import mtcp, tcpcl, udpcl

if TYPE_CHECKING:
    from netemu.agent.agent import Agent

BIG_WRITE_BYTES = 64 * 1024  # buffers at least this long are written without a copy
WINDOW_TRANSFERS = 1024  # unacknowledged transfers per session
WINDOW_BYTES = 64 * 1024 * 1024  # unacknowledged bytes per session
# A connection whose TCPCL session has not started this long after it opened is dropped,
# so the neighbour is dialled again (wall seconds, like the connect timeout).
SESSION_SETUP_TIMEOUT_S = 5.0


@dataclass
class OutItem:
    """A bundle the core asked to send to a neighbour, waiting for or in transmission."""

    key: str  # the core's handle for it (bundle ID)
    data: bytes




class Sockets:
    """How an agent opens its convergence-layer sockets. This one opens them in the
    process's own network namespace, as asyncio does; the node host's
    (:class:`netemu.agent.nodehost.NetnsSockets`) opens each node's in that node's."""

    async def listen(self, loop: asyncio.AbstractEventLoop,
                     factory: Callable[[], asyncio.Protocol], host: str,
                     port: int) -> list[asyncio.AbstractServer]:
        """Listening stream servers on (host, port)."""
        return [await loop.create_server(factory, host, port, reuse_address=True)]

    async def datagram(self, loop: asyncio.AbstractEventLoop,
                       factory: Callable[[], UdpclEndpoint], host: str,
                       port: int) -> UdpclEndpoint:
        """The UDP endpoint bound to (host, port); returns its protocol."""
        _, proto = await loop.create_datagram_endpoint(factory, local_addr=(host, port))
        return proto

    async def connect(self, loop: asyncio.AbstractEventLoop,
                      factory: Callable[[], asyncio.Protocol], host: str, port: int) -> None:
        """A stream connection to (host, port), served by ``factory()``'s protocol."""
        await loop.create_connection(factory, host, port)


class Channel:
    """A CL connection that can carry bundles to one neighbour."""

    neighbour: str | None = None
    established = False

    def can_take(self) -> bool:
        raise NotImplementedError

    def send(self, item: OutItem) -> None:
        raise NotImplementedError

    def close(self, reason: tcpcl.TermReason = tcpcl.TermReason.UNKNOWN) -> None:
        raise NotImplementedError


class TcpclChannel(asyncio.Protocol, Channel):
    """A TCPCLv4 session on an asyncio transport."""

    def __init__(self, agent: Agent, role: tcpcl.Role, neighbour: str | None = None) -> None:
        self.agent = agent
        cfg = agent.cfg
        tls = agent.tls
        self.session = tcpcl.Session(role, cfg.node_eid, keepalive_s=cfg.keepalive_s,
                                     segment_mru=cfg.segment_mru, transfer_mru=cfg.transfer_mru,
                                     can_tls=tls is not None,
                                     tls_required=tls is not None and tls.required,
                                     check_peer=self._check_peer, rx_budget=agent.rx_budget)
        self.neighbour = neighbour
        self.peer_cert_ids: frozenset[str] = frozenset()  # node IDs its TLS certificate names
        self._tls_task: asyncio.Task | None = None
        self._rx_mark = 0  # session.rx_data_bytes when the incoming transfer last moved
        self._rx_moved = 0.0
        self.transport: asyncio.Transport | None = None
        self.inflight: dict[int, OutItem] = {}
        self.inflight_bytes = 0
        self.paused = False
        self.last_rx = self.last_tx = self.opened = time.monotonic()
        self.peer = ""
        self.closed = asyncio.get_event_loop().create_future()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.opened = time.monotonic()
        big_send_buffer(transport)  # a 1 MB bundle in one send(2), not asyncio's buffer
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.agent.channels.add(self)
        st = self.agent.neighbours.get(self.neighbour or "")
        if st is not None and self not in st.sessions:
            st.sessions.append(self)  # dialled: counts as the neighbour's stream from now
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        try:
            events = self.session.receive_data(data)
        except tcpcl.TcpclRefused as e:
            self.agent.peer_refused(self, str(e))
            self.flush()
            if self.transport:
                self.transport.close()
            return
        except tcpcl.TcpclError as e:
            self.agent.log("tcpcl_error", peer=self.peer, neighbour=self.neighbour, error=str(e))
            self.flush()
            if self.transport:
                self.transport.close()
            return
        done: list[OutItem] = []  # acknowledged transfers, told to the agent together
        for ev in events:
            if type(ev) is tcpcl.TransferCompleted:
                item = self.inflight.pop(ev.transfer_id, None)
                if item is not None:
                    self.inflight_bytes -= len(item.data)
                    done.append(item)
                continue
            if done:
                self.agent.cl_sent_many(self.neighbour, done)
                done = []
            self._event(ev)
        if done:
            self.agent.cl_sent_many(self.neighbour, done)
        self.flush()

    def _check_peer(self, node_id: str) -> str | None:
        return self.agent.check_peer(self, node_id)

    def _event(self, ev: tcpcl.Event) -> None:
        if isinstance(ev, tcpcl.TlsNegotiated):
            self._start_tls(ev.server_side)
        elif isinstance(ev, tcpcl.TransferReceived):
            self.agent.cl_received(ev.data, self, ev.transfer_id, self.neighbour)
        elif isinstance(ev, tcpcl.TransferCompleted):
            item = self.inflight.pop(ev.transfer_id, None)
            if item is not None:
                self.inflight_bytes -= len(item.data)
                self.agent.cl_sent(self.neighbour, item)
        elif isinstance(ev, tcpcl.TransferRefused):
            item = self.inflight.pop(ev.transfer_id, None)
            if item is not None:
                self.inflight_bytes -= len(item.data)
                self.agent.cl_refused(self.neighbour, item, _name(ev.reason))
        elif isinstance(ev, tcpcl.SessionStarted):
            self.established = True
            self.agent.session_started(self, ev)
        elif isinstance(ev, tcpcl.SessionClosed):
            self.flush()  # the SESS_TERM reply goes out before the close
            if self.transport:
                self.transport.close()
        elif isinstance(ev, tcpcl.SessionTerminating):
            self.agent.log("session_terminating", neighbour=self.neighbour, peer=self.peer,
                           reason=_name(ev.reason), by_peer=ev.by_peer)
        elif isinstance(ev, tcpcl.MessageRejected):
            self.agent.log("msg_rejected", neighbour=self.neighbour, reason=_name(ev.reason),
                           type=ev.rejected_type)

    def _start_tls(self, server_side: bool) -> None:
        """Both sides offered TLS: stop reading (the next bytes are the handshake's), and
        hand the socket to the TLS transport once the contact header is out."""
        assert self.transport is not None
        self.transport.pause_reading()
        self._tls_task = asyncio.get_event_loop().create_task(self._tls_handshake(server_side))

    async def _tls_handshake(self, server_side: bool) -> None:
        tls = self.agent.tls
        assert tls is not None and self.transport is not None
        self.flush()  # the passive side's contact header, in the clear
        try:
            self.transport = secure = await tlssock.take_over(
                self.transport, self, tls.server if server_side else tls.client,
                server_side=server_side, timeout_s=SESSION_SETUP_TIMEOUT_S)
            await secure.handshake(max(0.1, SESSION_SETUP_TIMEOUT_S
                                       - (time.monotonic() - self.opened)))
        except (ssl.SSLError, OSError, asyncio.TimeoutError) as e:
            self.agent.peer_refused(self, f"TLS handshake failed: {e or type(e).__name__}")
            if self.transport is not None:
                self.transport.abort()
            return
        if self.session.state is not tcpcl.SessionState.TLS:
            secure.abort()
            return
        # (the kernel's 4 MiB send buffer is behind it: a 1 MB bundle does not stop the pump)
        secure.set_write_buffer_limits(high=SEND_BUFFER_BYTES)
        self.peer_cert_ids = peer_node_ids(secure.get_extra_info("ssl_object"))
        self.session.tls_established()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.session.connection_lost()
        self.established = False
        self.agent.channels.discard(self)
        unacked = list(self.inflight.values())
        self.inflight.clear()
        self.inflight_bytes = 0
        if not self.closed.done():
            self.closed.set_result(None)
        self.agent.channel_lost(self, unacked, exc)

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.neighbour:
            self.agent.pump(self.neighbour)

    # Channel
    def can_take(self) -> bool:
        return (self.established and not self.paused and self.session.can_send
                and len(self.inflight) < WINDOW_TRANSFERS and self.inflight_bytes < WINDOW_BYTES)

    def send(self, item: OutItem) -> None:
        tid = self.session.send_transfer(item.data)
        self.inflight[tid] = item
        self.inflight_bytes += len(item.data)

    def send_from(self, queue: deque[OutItem]) -> int:
        """Start transfers from the front of ``queue`` while the window has room (what
        ``can_take`` / ``send`` do item by item, with the checks that cannot change
        between items done once). Returns how many started."""
        if not (self.established and not self.paused and self.session.can_send):
            return 0
        inflight, send, n = self.inflight, self.session.send_transfer, 0
        nbytes = self.inflight_bytes
        while queue and len(inflight) < WINDOW_TRANSFERS and nbytes < WINDOW_BYTES:
            item = queue.popleft()
            try:
                tid = send(item.data)
            except tcpcl.TcpclError as e:
                self.inflight_bytes = nbytes
                self.agent.cl_refused(self.neighbour, item, str(e), permanent=True)
                if not self.session.can_send:
                    break
                continue
            inflight[tid] = item
            nbytes += len(item.data)
            n += 1
        self.inflight_bytes = nbytes
        return n

    def flush(self) -> None:
        out = self.session.data_to_send()
        if out and self.transport is not None and not self.transport.is_closing():
            write_buffers(self.transport, out)
            self.last_tx = time.monotonic()

    def close(self, reason: tcpcl.TermReason = tcpcl.TermReason.UNKNOWN) -> None:
        for ev in self.session.terminate(reason):
            self._event(ev)
        self.flush()
        if self.transport is not None and self.session.state is tcpcl.SessionState.CLOSED:
            self.transport.close()

    def housekeeping(self, now: float) -> None:
        ka = self.session.keepalive_s
        if self._stalled(now):
            return
        if not self.established:
            # A dialled connection counts as the neighbour's stream from connection_made:
            # one whose session never starts (peer silent, return path lost right after
            # the TCP handshake) would block every further dial until the contact ends.
            if (self.transport is not None and not self.transport.is_closing()
                    and now - self.opened > SESSION_SETUP_TIMEOUT_S):
                self.agent.log("session_setup_timeout", neighbour=self.neighbour, peer=self.peer,
                               after_s=round(now - self.opened, 3))
                self.transport.abort()  # not close(): unsent bytes must not keep it open
            return
        if not ka:
            return
        if now - self.last_rx > 2 * ka:
            self.agent.log("session_idle", neighbour=self.neighbour, peer=self.peer)
            self.close(tcpcl.TermReason.IDLE_TIMEOUT)
            if self.transport:
                self.transport.close()
        elif now - self.last_tx >= ka:
            self.session.send_keepalive()
            self.flush()

    def _stalled(self, now: float) -> bool:
        """End the session if its incoming transfer got no data for transfer_stall_s (a
        peer that starts a bundle and stops, holding its bytes here): True if ended."""
        s = self.session
        if not s.receiving or self.transport is None:
            self._rx_moved = now
            return False
        if s.rx_data_bytes != self._rx_mark:
            self._rx_mark, self._rx_moved = s.rx_data_bytes, now
            return False
        if now - self._rx_moved <= self.agent.cfg.transfer_stall_s:
            return False
        self.agent.log("transfer_stalled", neighbour=self.neighbour, peer=self.peer,
                       held_bytes=s.rx_held_bytes, after_s=round(now - self._rx_moved, 3))
        self.close(tcpcl.TermReason.IDLE_TIMEOUT)
        self.transport.abort()  # its bytes go with it (connection_lost)
        return True


def write_buffers(transport: asyncio.WriteTransport,
                  out: list[bytes | bytearray | memoryview]) -> None:
    """``transport.writelines(out)`` without joining big buffers into a new one (asyncio
    3.11 joins them all: a copy of every 1 MB bundle): small ones are joined, a big one is
    written as it is (sent straight from it when the socket has room)."""
    small: list[bytes | bytearray | memoryview] = []
    for buf in out:
        if len(buf) < BIG_WRITE_BYTES:
            small.append(buf)
            continue
        if small:
            transport.write(b"".join(small))
            small = []
        transport.write(buf)
    if small:
        transport.write(small[0] if len(small) == 1 else b"".join(small))


class MtcpChannel(asyncio.Protocol, Channel):
    """An MTCP connection (µD3TN): bundles as CBOR byte strings, no acknowledgements.

    A bundle counts as sent once the kernel has taken it (the write buffer drained)."""

    def __init__(self, agent: Agent, neighbour: str | None = None) -> None:
        self.agent = agent
        self.neighbour = neighbour
        self.decoder = mtcp.MtcpDecoder(agent.cfg.transfer_mru)
        self.transport: asyncio.Transport | None = None
        self.paused = False
        self.unconfirmed: list[OutItem] = []
        self.established = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.established = True
        self.agent.channels.add(self)
        if self.neighbour:
            self.agent.channel_up(self)

    def data_received(self, data: bytes) -> None:
        try:
            bundles = self.decoder.feed(data)
        except mtcp.MtcpError as e:
            self.agent.log("mtcp_error", error=str(e))
            assert self.transport is not None
            self.transport.close()
            return
        for b in bundles:
            self.agent.cl_received(b, None, None, self.neighbour)

    def connection_lost(self, exc: Exception | None) -> None:
        self.established = False
        self.agent.channels.discard(self)
        self.agent.channel_lost(self, self.unconfirmed, exc)
        self.unconfirmed = []

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._confirm()
        if self.neighbour:
            self.agent.pump(self.neighbour)

    def can_take(self) -> bool:
        return self.established and not self.paused

    def send(self, item: OutItem) -> None:
        assert self.transport is not None
        write_buffers(self.transport, [mtcp.frame(len(item.data)), item.data])
        self.unconfirmed.append(item)
        if not self.paused:
            asyncio.get_event_loop().call_soon(self._confirm)

    def _confirm(self) -> None:
        if self.transport is None or self.paused:
            return
        if self.transport.get_write_buffer_size() == 0:
            done, self.unconfirmed = self.unconfirmed, []
            for item in done:
                self.agent.cl_sent(self.neighbour, item)

    def close(self, reason: tcpcl.TermReason = tcpcl.TermReason.UNKNOWN) -> None:
        if self.transport is not None:
            self.transport.close()

    def housekeeping(self, now: float) -> None:
        self._confirm()


class UdpclEndpoint(asyncio.DatagramProtocol):
    """The UDP CL socket: bundles in from anyone, out to udpcl neighbours."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            bundle = udpcl.decode(data)
        except udpcl.UdpclError as e:
            self.agent.log("udpcl_error", peer=f"{addr[0]}:{addr[1]}", error=str(e))
            return
        if bundle is not None:
            self.agent.cl_received(bundle, None, None, self.agent.neighbour_by_addr(addr))

    def error_received(self, exc: Exception) -> None:
        self.agent.log("udpcl_error", error=str(exc))


class UdpChannel(Channel):
    """Sending side of the UDP CL towards one neighbour: fire and forget."""

    def __init__(self, agent: Agent, endpoint: UdpclEndpoint, nb: NeighbourConfig) -> None:
        self.agent = agent
        self.endpoint = endpoint
        self.nb = nb
        self.neighbour = nb.name
        self.addr = nb.host_port
        self.established = True

    def can_take(self) -> bool:
        return self.endpoint.transport is not None

    def send(self, item: OutItem) -> None:
        try:
            dgram = udpcl.encode(item.data, path_mtu=self.nb.path_mtu,
                                 ipv6=":" in self.addr[0])
        except udpcl.UdpclError as e:
            self.agent.cl_refused(self.neighbour, item, str(e), permanent=True)
            return
        assert self.endpoint.transport is not None
        if self.nb.links:  # the current link's end (this contact's own path)
            self.addr = split_host_port(self.nb.address_at(self.agent.now_s()))
        self.endpoint.transport.sendto(dgram, self.addr)
        asyncio.get_event_loop().call_soon(self.agent.cl_sent, self.neighbour, item)

    def close(self, reason: tcpcl.TermReason = tcpcl.TermReason.UNKNOWN) -> None:
        pass

    def housekeeping(self, now: float) -> None:
        pass


def _name(code: Any) -> str:
    """A reason code for the log: its RFC name when it has one (``IDLE_TIMEOUT``)."""
    return getattr(code, "name", None) or str(code)
