"""The bundle agent process: an asyncio shell around the BPA core and the CL state machines.

Everything protocol-shaped lives elsewhere, without I/O: bundle processing, store and
routing in :mod:`netemu.dtn.bpa` (the core), the TCPCLv4 session in
:mod:`netemu.dtn.tcpcl`, framing in :mod:`netemu.dtn.udpcl` / :mod:`netemu.dtn.mtcp` /
:mod:`netemu.agent.appif`. This module owns the sockets, the timers and the clock:

- listeners: TCPCLv4 and UDP CL on port 4556 (configurable), optional MTCP;
- one outgoing session per neighbour while a contact is up — "up" means the contact plan
  says so (when the agent has a plan and ``follow_plan``) *and* the neighbour answers;
  connects are retried with exponential backoff (0.2 s doubling to 5 s);
- a bundle handed to a CL stays in the store until the peer has acknowledged its full
  length (XFER_ACK); only then is the core told "transmission done". A transfer cut by a
  lost connection is re-sent whole on the next session (TCPCL cannot resume a
  transfer); the receiving agent drops the duplicate by bundle ID, so the application
  gets it once;
- received bundles are stored in groups (one commit for everything that arrived in one
  event-loop turn) and only then acknowledged to the sender;
- JSON-lines logs (stderr or a file, and streamed to ``netemu bp watch``);
- SIGTERM / SIGINT: orderly SESS_TERM on every session, store closed, socket removed.

Scenario time comes from :class:`netemu.runtime.clock.ScenarioClock` (``NETEMU_EPOCH`` /
``NETEMU_TIME_SCALE`` / ``NETEMU_T0_WALL``), else the wall clock.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

from netemu.agent.appif import AppConnection, AppServer, big_send_buffer
from netemu.agent.config import AgentConfig, Neighbour, split_host_port
from netemu.agent.memtune import tune_malloc
from netemu.agent.store import HELD_STATES as _HELD_STATES
from netemu.agent.store import BundleStore
from netemu.agent.store import State as StoreState
from netemu.agent.telemetry import BundlePublisher
from netemu.dtn import bpa, mtcp, tcpcl, udpcl
from netemu.dtn.bpsec import SecurityPolicy
from netemu.dtn.bundle import REPORT_FLAGS, datetime_to_dtn_ms
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError
from netemu.errors import InputError, NetemuError
from netemu.plan.contacts import ContactPlan, Node
from netemu.routing.base import BundleInfo, Decision, Hop, Router
from netemu.runtime.clock import ScenarioClock

BIG_WRITE_BYTES = 64 * 1024  # buffers at least this long are written without a copy
#: Events handled per batch (one store commit each). Without a bound, batches grew to
#: thousands of events while a commit was in flight, and the agent then spent ~100 ms
#: without reading its sockets: its peer starved, then it did (delivery gaps of 60-190 ms
#: in bench_dtn). 256 cut the gaps to 30-40 ms but costs more commits (fsyncs with
#: ``disk``); 1024 had the best throughput in interleaved runs (gaps 60-70 ms).
MAX_BATCH_EVENTS = 1024
#: After a failed store write the core is rebuilt from the store at once; if writes keep
#: failing (disk full), at most this often.
RELOAD_RETRY_S = 1.0
BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
WINDOW_TRANSFERS = 1024  # unacknowledged transfers per session
WINDOW_BYTES = 64 * 1024 * 1024  # unacknowledged bytes per session
HOUSEKEEPING_S = 0.5
PURGE_EVERY_S = 30.0  # wall seconds between sweeps of expired tombstones from the store
DIAL_GRACE_S = 10.0
# A connection whose TCPCL session has not started this long after it opened is dropped,
# so the neighbour is dialled again (wall seconds, like the connect timeout).
SESSION_SETUP_TIMEOUT_S = 5.0


def make_clock(plan: ContactPlan | None) -> ScenarioClock:
    """The scenario clock from the environment, else wall time against the plan epoch."""
    if "NETEMU_EPOCH" in os.environ and "NETEMU_T0_WALL" in os.environ:
        return ScenarioClock.from_env()
    now = time.time()
    if plan is not None:
        return ScenarioClock(plan.epoch, 1.0, now, now - plan.epoch.timestamp())
    return ScenarioClock(datetime.fromtimestamp(now, timezone.utc), 1.0, now, 0.0)


class JsonLog:
    """Structured log: one JSON object per line, also offered to watchers."""

    def __init__(self, node: str, clock: ScenarioClock, stream: TextIO) -> None:
        self.node = node
        self.clock = clock
        self.stream = stream
        self.watchers: set[AppConnection] = set()
        self.quiet_events: set[str] = set()

    def __call__(self, event: str, **fields: Any) -> None:
        wall = time.time()
        rec = {"t": round(wall, 6), "ts": round(self.clock.now_s(wall), 6), "node": self.node,
               "event": event, **fields}
        if event not in self.quiet_events:
            self.stream.write(json.dumps(rec, default=str) + "\n")
            self.stream.flush()
        for w in list(self.watchers):
            if w.closed:
                self.watchers.discard(w)
            else:
                w.push({"ev": "log", **rec})


# ------------------------------------------------------------------------------------
# Outgoing queues and CL channels


@dataclass
class OutItem:
    """A bundle the core asked to send to a neighbour, waiting for or in transmission."""

    key: str  # the core's handle for it (bundle ID)
    data: bytes


@dataclass
class NeighbourState:
    cfg: Neighbour
    queue: deque[OutItem] = field(default_factory=deque)
    sessions: list[Channel] = field(default_factory=list)
    plan_up: bool = True
    up: bool = False  # told the core "contact started"
    backoff_s: float = BACKOFF_MIN_S
    connecting: asyncio.Task | None = None
    next_try: float = 0.0
    failures: int = 0
    plan_up_since: float = 0.0


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
        self.session = tcpcl.Session(role, cfg.node_eid, keepalive_s=cfg.keepalive_s,
                                     segment_mru=cfg.segment_mru, transfer_mru=cfg.transfer_mru)
        self.neighbour = neighbour
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

    def _event(self, ev: tcpcl.Event) -> None:
        if isinstance(ev, tcpcl.TransferReceived):
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
        if self.transport is not None and self.session.state is tcpcl.State.CLOSED:
            self.transport.close()

    def housekeeping(self, now: float) -> None:
        ka = self.session.keepalive_s
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


def write_buffers(transport: asyncio.WriteTransport, out: list[bytes | memoryview]) -> None:
    """``transport.writelines(out)`` without joining big buffers into a new one (asyncio
    3.11 joins them all: a copy of every 1 MB bundle): small ones are joined, a big one is
    written as it is (sent straight from it when the socket has room)."""
    small: list[bytes | memoryview] = []
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

    def __init__(self, agent: Agent, endpoint: UdpclEndpoint, nb: Neighbour) -> None:
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
        self.endpoint.transport.sendto(dgram, self.addr)
        asyncio.get_event_loop().call_soon(self.agent.cl_sent, self.neighbour, item)

    def close(self, reason: tcpcl.TermReason = tcpcl.TermReason.UNKNOWN) -> None:
        pass

    def housekeeping(self, now: float) -> None:
        pass


# ------------------------------------------------------------------------------------
# The agent


class Agent:
    """One node's bundle agent. ``core`` is the BPA state machine (see :mod:`.bpa`)."""

    def __init__(self, cfg: AgentConfig, *, log_stream: TextIO | None = None,
                 clock: ScenarioClock | None = None,
                 core_factory: Callable[[Agent], Any] | None = None) -> None:
        self.cfg = cfg
        self.plan = ContactPlan.load(cfg.contact_plan) if cfg.contact_plan else None
        self.clock = clock or make_clock(self.plan)
        self._log_file: TextIO | None = None
        if log_stream is None and cfg.log:
            os.makedirs(os.path.dirname(os.path.abspath(cfg.log)), exist_ok=True)
            self._log_file = open(cfg.log, "a", buffering=1)  # noqa: SIM115
            log_stream = self._log_file
        self.log = JsonLog(cfg.node, self.clock, log_stream or sys.stderr)
        self.neighbours: dict[str, NeighbourState] = {
            n.name: NeighbourState(n) for n in cfg.neighbours}
        self._by_ipn = {n.ipn: n.name for n in cfg.neighbours}
        if self.plan is not None:
            for node in self.plan.nodes.values():
                self._by_ipn.setdefault(node.ipn, node.name)
        # Per neighbour: (starts, running max of ends) of this node's contacts to it.
        self._windows: dict[str, tuple[list[float], list[float]]] = {}
        if self.plan is not None:
            per: dict[str, list[tuple[float, float]]] = {}
            for c in self.plan.contacts:
                if c.src == cfg.node:
                    per.setdefault(c.dst, []).append((c.start_s, c.end_s))
            for name, iv in per.items():
                iv.sort()
                ends, hi = [], -math.inf
                for _, e in iv:
                    hi = max(hi, e)
                    ends.append(hi)
                self._windows[name] = ([a for a, _ in iv], ends)
        self.channels: set[Any] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.udp: UdpclEndpoint | None = None
        self.app: AppServer | None = None
        self._stop = asyncio.Event()
        self._rx_batch: list[tuple[bytes, TcpclChannel | None, int | None, str | None]] = []
        self._rx_scheduled = False
        self._pump_scheduled = False
        self._next_purge = 0.0  # monotonic time of the next tombstone sweep
        self._end_checks: set[float] = set()  # contact ends with a timer set
        self._tasks: set[asyncio.Task] = set()
        self.counters: dict[str, int] = {
            "received": 0, "sent": 0, "refused": 0, "requeued": 0, "sessions": 0}
        # bundle/<node> telemetry when the run's MQTT variables are set (else None)
        self.telemetry: BundlePublisher | None = BundlePublisher.from_env(cfg.node)
        self.core = (core_factory or _default_core)(self)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except OSError as e:
            raise NetemuError(f"agent {self.cfg.node}: cannot listen: {e.strerror or e} "
                              f"(config {self.cfg.source})") from None

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.cfg
        for addr in cfg.listen_tcpcl:
            host, port = split_host_port(addr)
            srv = await loop.create_server(
                lambda: TcpclChannel(self, tcpcl.Role.PASSIVE), host, port, reuse_address=True)
            self.servers.append(srv)
        for addr in cfg.listen_mtcp:
            host, port = split_host_port(addr, default_port=mtcp.DEFAULT_PORT)
            srv = await loop.create_server(lambda: MtcpChannel(self), host, port,
                                           reuse_address=True)
            self.servers.append(srv)
        if cfg.listen_udpcl:
            host, port = split_host_port(cfg.listen_udpcl[0])
            _, proto = await loop.create_datagram_endpoint(
                lambda: UdpclEndpoint(self), local_addr=(host, port))
            self.udp = proto
        for st in self.neighbours.values():
            if st.cfg.cl == "udpcl" and self.udp is not None:
                st.sessions.append(UdpChannel(self, self.udp, st.cfg))
        self.app = AppServer(cfg.app_socket, self.core.app_handlers(),
                             on_disconnect=self.core.app_disconnected)
        await self.app.start()
        if self.telemetry is not None:
            self.telemetry.start()
        self.core.start()
        self._spawn(self._housekeeping())
        self.log("agent_started", ipn=cfg.ipn, tcpcl=cfg.listen_tcpcl, udpcl=cfg.listen_udpcl,
                 mtcp=cfg.listen_mtcp, app_socket=cfg.app_socket, store=cfg.store,
                 neighbours=[n.name for n in cfg.neighbours],
                 plan=cfg.contact_plan, pid=os.getpid())

    async def run(self) -> None:
        """Start, run until SIGTERM/SIGINT (or :meth:`stop`), then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)
        await self.start()
        await self._stop.wait()
        await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    async def shutdown(self) -> None:
        self.log("agent_stopping")
        for srv in self.servers:
            srv.close()
        for ch in list(self.channels):
            ch.close(tcpcl.TermReason.UNKNOWN)
        waits = [ch.closed for ch in self.channels if isinstance(ch, TcpclChannel)]
        if waits:
            await asyncio.wait(waits, timeout=2.0)
        for ch in list(self.channels):
            if getattr(ch, "transport", None) is not None:
                ch.transport.abort()
        self._process_rx()
        for t in list(self._tasks):
            t.cancel()
        if self.app is not None:
            await self.app.close()
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        self.core.close()
        if self.telemetry is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.telemetry.stop)
            self.log("telemetry_stopped", **self.telemetry.status())
        self.log("agent_stopped")
        if self._log_file is not None:
            self._log_file.close()

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- contacts and connections -------------------------------------------------------

    def now_s(self) -> float:
        return self.clock.now_s()

    def _plan_up(self, name: str, t_s: float) -> bool:
        """Whether the plan has a contact from this node to ``name`` at ``t_s``."""
        if self.plan is None or not self.cfg.follow_plan:
            return True
        windows = self._windows.get(name)
        if not windows:
            return False
        i = bisect.bisect_right(windows[0], t_s) - 1
        return i >= 0 and t_s < windows[1][i]

    async def _housekeeping(self) -> None:
        while True:
            try:
                self._housekeeping_round()
            except Exception as e:  # keep the agent alive; the log says what broke
                self.log("housekeeping_error", error=repr(e))
            await asyncio.sleep(HOUSEKEEPING_S)

    def _housekeeping_round(self) -> None:
        """Plan contacts, dialling, keepalives, the BPA tick."""
        now = time.monotonic()
        t_s = self.now_s()
        for name, st in self.neighbours.items():
            was = st.plan_up
            st.plan_up = self._plan_up(name, t_s)
            if was != st.plan_up:
                self.log("plan_contact", neighbour=name, up=st.plan_up)
                if not st.plan_up:
                    # Abort, not SESS_TERM: a graceful close lets in-flight transfers finish,
                    # and with IP routing on the emulation would carry them over other
                    # links after this contact ended (seen: a bundle acked 68 s late).
                    for ch in list(st.sessions):
                        if not isinstance(ch, UdpChannel):
                            transport = getattr(ch, "transport", None)
                            if transport is not None:
                                transport.abort()
                            else:
                                ch.close(tcpcl.TermReason.UNKNOWN)
                    self._give_back(st, list(st.queue), "contact ended")
                    st.queue.clear()
            self._update_up(st)
            if was != st.plan_up or not st.plan_up_since:
                st.plan_up_since = now
            if (st.plan_up and st.cfg.address and st.cfg.cl in ("tcpcl", "mtcp")
                    and not self._has_stream(st) and st.connecting is None
                    and now >= st.next_try and self._should_dial(st, now)):
                st.connecting = self._spawn(self._connect(st))
            if st.plan_up:
                self._check_at_contact_end(name, t_s)
        for ch in list(self.channels):
            ch.housekeeping(now)
        self.core.tick()
        if now >= self._next_purge:
            self._next_purge = now + PURGE_EVERY_S
            purge = getattr(self.core, "purge", None)  # (stand-in cores in tests have none)
            if purge is not None:
                purge()

    def _check_at_contact_end(self, name: str, t_s: float) -> None:
        """Run housekeeping right at the end of ``name``'s contact when it comes before the
        next round: the session must stop when the plan says, not up to a round later
        (at time scale 10 a round is 5 scenario seconds)."""
        windows = self._windows.get(name) if self.plan is not None and self.cfg.follow_plan else None
        if not windows:
            return
        i = bisect.bisect_right(windows[0], t_s) - 1
        if i < 0:
            return
        end_s = windows[1][i]
        scale = getattr(self.clock, "time_scale", 1.0) or 1.0
        delay = (end_s - t_s) / scale
        if 0 <= delay < HOUSEKEEPING_S and end_s not in self._end_checks:
            self._end_checks.add(end_s)
            loop = asyncio.get_running_loop()
            loop.call_later(delay + 0.0005, self._end_check, end_s)

    def _end_check(self, end_s: float) -> None:
        self._end_checks.discard(end_s)
        try:
            self._housekeeping_round()
        except Exception as e:  # keep the agent alive; the log says what broke
            self.log("housekeeping_error", error=repr(e))

    def _should_dial(self, st: NeighbourState, now: float) -> bool:
        """Between two agents that know each other's address only the lower ipn dials, so
        they share one session; the other dials too if none came within DIAL_GRACE_S
        (the peer may be software that never dials)."""
        if st.cfg.cl != "tcpcl" or not st.cfg.ipn or self.cfg.ipn < st.cfg.ipn:
            return True
        return now - st.plan_up_since >= DIAL_GRACE_S

    def _has_stream(self, st: NeighbourState) -> bool:
        return any(not isinstance(ch, UdpChannel) for ch in st.sessions)

    async def _connect(self, st: NeighbourState) -> None:
        loop = asyncio.get_running_loop()
        host, port = st.cfg.host_port
        try:
            if st.cfg.cl == "tcpcl":
                _, proto = await asyncio.wait_for(loop.create_connection(
                    lambda: TcpclChannel(self, tcpcl.Role.ACTIVE, st.cfg.name), host, port), 5.0)
            else:
                host, port = split_host_port(st.cfg.address, default_port=mtcp.DEFAULT_PORT)
                _, proto = await asyncio.wait_for(loop.create_connection(
                    lambda: MtcpChannel(self, st.cfg.name), host, port), 5.0)
            # (the channel adds itself to st.sessions in connection_made and removes
            # itself in connection_lost, so a connection that dies at once leaves nothing)
        except (OSError, asyncio.TimeoutError) as e:
            st.failures += 1
            if st.failures <= 5 or st.failures % 20 == 0:
                self.log("connect_failed", neighbour=st.cfg.name, address=st.cfg.address,
                         error=str(e) or type(e).__name__, attempts=st.failures,
                         retry_in_s=st.backoff_s)
            st.next_try = time.monotonic() + st.backoff_s
            st.backoff_s = min(st.backoff_s * 2, BACKOFF_MAX_S)
        finally:
            st.connecting = None

    def neighbour_by_addr(self, addr: tuple[str, int]) -> str | None:
        for st in self.neighbours.values():
            if st.cfg.address and st.cfg.host_port[0] == addr[0]:
                return st.cfg.name
        return None

    def session_started(self, ch: TcpclChannel, ev: tcpcl.SessionStarted) -> None:
        name = ch.neighbour
        peer_name = self._name_of_node_id(ev.peer_node_id)
        if name is None:
            name = ch.neighbour = peer_name
        self.counters["sessions"] += 1
        self.log("session_up", neighbour=name, peer=ch.peer, peer_node_id=ev.peer_node_id,
                 keepalive_s=ev.keepalive_s, peer_segment_mru=ev.peer_segment_mru,
                 role=ch.session.role.value)
        st = self.neighbours.get(name)
        if st is None:
            st = self.neighbours[name] = NeighbourState(Neighbour(name, _ipn_of(ev.peer_node_id)))
        if ch not in st.sessions:
            st.sessions.append(ch)
        st.backoff_s = BACKOFF_MIN_S
        st.failures = 0
        self._update_up(st)
        self.pump(name)

    def channel_up(self, ch: Channel) -> None:
        st = self.neighbours.get(ch.neighbour or "")
        if st is not None:
            if ch not in st.sessions:
                st.sessions.append(ch)
            st.backoff_s = BACKOFF_MIN_S
            self._update_up(st)
            self.pump(st.cfg.name)

    def _name_of_node_id(self, node_id: str) -> str:
        ipn = _ipn_of(node_id)
        if ipn is not None and ipn in self._by_ipn:
            return self._by_ipn[ipn]
        return node_id

    def channel_lost(self, ch: Channel, unacked: list[OutItem], exc: Exception | None) -> None:
        name = ch.neighbour
        st = self.neighbours.get(name or "")
        if st is not None and ch in st.sessions:
            st.sessions.remove(ch)
            st.next_try = time.monotonic() + st.backoff_s
        if getattr(ch, "established", False) or unacked or name:
            self.log("session_down", neighbour=name, peer=getattr(ch, "peer", ""),
                     unacked=len(unacked), error=str(exc) if exc else None)
        if st is not None:
            if st.plan_up:
                # Cut transfers go back to the head of the queue, in order: re-sent whole
                # on the next session; the receiver's dedupe drops a copy it already has.
                for item in reversed(unacked):
                    st.queue.appendleft(item)
                self.counters["requeued"] += len(unacked)
            else:
                # The contact is over: let the router find another way.
                self._give_back(st, unacked, "contact ended during transfer")
            self._update_up(st)
            self.pump(st.cfg.name)

    def _give_back(self, st: NeighbourState, items: list[OutItem], reason: str) -> None:
        """Hand bundles that will not go to this neighbour back to the core (it re-routes)."""
        if items:
            self.log("returned_to_router", neighbour=st.cfg.name, bundles=len(items),
                     reason=reason)
        for item in items:
            self.core.transmit_failed(item.key, st.cfg.name, reason)

    def _update_up(self, st: NeighbourState) -> None:
        up = st.plan_up and any(ch.established for ch in st.sessions)
        if up != st.up:
            st.up = up
            self.log("contact_up" if up else "contact_down", neighbour=st.cfg.name)
            if up:
                self.core.contact_started(st.cfg.name)
            else:
                self.core.contact_ended(st.cfg.name)

    # --- sending --------------------------------------------------------------------

    def enqueue(self, neighbour: str, key: str, data: bytes) -> None:
        """The core asks to send bundle ``key`` to ``neighbour`` (kept until acked)."""
        st = self.neighbours.get(neighbour)
        if st is None:
            st = self.neighbours[neighbour] = NeighbourState(Neighbour(neighbour, 0))
        if not st.plan_up:  # decided just as the contact ended
            self._give_back(st, [OutItem(key, data)], "no contact")
            return
        st.queue.append(OutItem(key, data))
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_event_loop().call_soon(self._pump_all)

    def _pump_all(self) -> None:
        """Send what the last loop turn queued: one write per session, not per bundle."""
        self._pump_scheduled = False
        for name, st in self.neighbours.items():
            if st.queue:
                self.pump(name)

    def pump(self, neighbour: str) -> None:
        st = self.neighbours.get(neighbour)
        if st is None or not st.queue or not st.plan_up:
            return
        touched = set()
        for ch in st.sessions:
            if type(ch) is TcpclChannel:
                if ch.send_from(st.queue):
                    touched.add(ch)
                if not st.queue:
                    break
                continue
            while st.queue and ch.can_take():
                item = st.queue.popleft()
                try:
                    ch.send(item)
                except tcpcl.TcpclError as e:
                    self.cl_refused(neighbour, item, str(e), permanent=True)
                    continue
                touched.add(ch)
            if not st.queue:
                break
        for ch in touched:
            if isinstance(ch, TcpclChannel):
                ch.flush()

    def queued(self, neighbour: str) -> int:
        st = self.neighbours.get(neighbour)
        if st is None:
            return 0
        return len(st.queue) + sum(len(getattr(ch, "inflight", ())) for ch in st.sessions)

    def cl_sent(self, neighbour: str | None, item: OutItem) -> None:
        self.counters["sent"] += 1
        self.core.transmitted(item.key, neighbour)
        self._window_opened(neighbour)

    def cl_sent_many(self, neighbour: str | None, items: list[OutItem]) -> None:
        """:meth:`cl_sent` for the transfers one read acknowledged, in order."""
        self.counters["sent"] += len(items)
        self.core.transmitted_many([it.key for it in items], neighbour)
        self._window_opened(neighbour)

    def _window_opened(self, neighbour: str | None) -> None:
        """An acknowledgement freed room in a session window: send what is queued."""
        st = self.neighbours.get(neighbour or "")
        if st is not None and st.queue and not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_event_loop().call_soon(self._pump_all)

    def cl_refused(self, neighbour: str | None, item: OutItem, reason: str,
                   permanent: bool = False) -> None:
        self.counters["refused"] += 1
        self.log("transfer_refused", neighbour=neighbour, bundle=item.key, reason=reason)
        self.core.transmit_failed(item.key, neighbour, reason)
        self._window_opened(neighbour)

    # --- receiving --------------------------------------------------------------------

    def cl_received(self, data: bytes, ch: TcpclChannel | None, tid: int | None,
                    neighbour: str | None) -> None:
        """A bundle arrived; it is stored with the others of this loop turn, then acked."""
        self._rx_batch.append((data, ch, tid, neighbour))
        if not self._rx_scheduled:
            self._rx_scheduled = True
            asyncio.get_event_loop().call_soon(self._process_rx)

    def _process_rx(self) -> None:
        self._rx_scheduled = False
        batch, self._rx_batch = self._rx_batch, []
        if not batch:
            return
        self.counters["received"] += len(batch)
        self.core.receive_many([(d, n) for d, _, _, n in batch],
                               lambda results: self._answer_rx(batch, results))

    def _answer_rx(self, batch: list[tuple], results: list[bool]) -> None:
        """Acknowledge (or refuse) the transfers of a received batch once it is stored."""
        touched: set[TcpclChannel] = set()
        for (_, ch, tid, _), ok in zip(batch, results, strict=True):
            if ch is None or tid is None or ch.session.state in (tcpcl.State.CLOSED,
                                                                   tcpcl.State.ERROR):
                continue
            try:
                if ok:
                    ch.session.ack_transfer(tid)
                else:
                    ch.session.refuse_transfer(tid, tcpcl.RefuseReason.NO_RESOURCES)
            except tcpcl.TcpclError:
                continue
            touched.add(ch)
        for ch in touched:
            ch.flush()

    # --- status -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "node": self.cfg.node, "ipn": self.cfg.ipn, "t_s": self.now_s(),
            "neighbours": {
                name: {"up": st.up, "plan_up": st.plan_up, "cl": st.cfg.cl,
                       "address": st.cfg.address, "queued": len(st.queue),
                       "in_flight": sum(len(getattr(c, "inflight", ())) for c in st.sessions),
                       "sessions": len([c for c in st.sessions if c.established])}
                for name, st in self.neighbours.items()
            },
            "counters": dict(self.counters),
            "telemetry": self.telemetry.status() if self.telemetry is not None else None,
        }


def _name(code: Any) -> str:
    """A reason code for the log: its RFC name when it has one (``IDLE_TIMEOUT``)."""
    return getattr(code, "name", None) or str(code)


def _ipn_of(node_id: str) -> int | None:
    if node_id.startswith("ipn:"):
        try:
            return int(node_id[4:].split(".")[0])
        except ValueError:
            return None
    return None


def _default_core(agent: Agent) -> Any:
    return AgentCore(agent)


# ------------------------------------------------------------------------------------
# The glue between the shell and the BPA core (netemu.dtn.bpa): events in, actions out.


class DirectRouter(Router):
    """Routing without a plan: a bundle goes straight to its destination when that node
    is a neighbour, else to ``default`` (a neighbour name) if given. ``algorithm: direct``."""

    name = "direct"

    def route(self, bundle: BundleInfo, now_s: float, neighbours: frozenset[str]) -> Decision:
        if bundle.destination in neighbours:
            return Decision((Hop(bundle.destination),), reason="neighbour")
        default = self.params.get("default")
        if isinstance(default, str) and default in neighbours:
            return Decision((Hop(default),), reason="default route")
        return Decision(reason="destination not a neighbour")


def make_router(cfg: AgentConfig, plan: ContactPlan) -> Router:
    params = {k: v for k, v in cfg.routing.items() if k != "algorithm"}
    algo = cfg.routing.get("algorithm", "cgr")
    if str(algo).lower() == "direct":
        return DirectRouter(cfg.node, plan, **params)
    from netemu.routing import get_router

    return get_router(algo)(cfg.node, plan, **params)


def security_policy(cfg: AgentConfig) -> SecurityPolicy | None:
    """BPSec policy from the config's ``keys``: ``sign_key`` (hex), ``verify`` {source:
    hex}, ``require_bib_from`` [sources or "*"], ``decrypt`` {source: hex}."""
    keys = cfg.keys
    if not keys:
        return None

    def hexkey(v: Any, f: str) -> bytes:
        try:
            return bytes.fromhex(str(v))
        except ValueError:
            raise InputError("not a hex key", source=cfg.source, field=f"keys.{f}") from None

    return SecurityPolicy(
        node_id=EID.ipn(cfg.ipn, 0),
        sign_key=hexkey(keys["sign_key"], "sign_key") if keys.get("sign_key") else None,
        verify_keys={k: hexkey(v, f"verify.{k}") for k, v in (keys.get("verify") or {}).items()},
        require_bib_from=frozenset(keys.get("require_bib_from") or ()),
        decrypt_keys={k: hexkey(v, f"decrypt.{k}")
                      for k, v in (keys.get("decrypt") or {}).items()},
    )


class _Results:
    """The results of a batch of events, by index; ``done`` (a future) is set when the
    last one is in. One bound ``set`` serves the whole batch (no closure per event)."""

    __slots__ = ("values", "left", "done", "on_done")

    def __init__(self, n: int, done: asyncio.Future | None = None,
                 on_done: Callable[[list[Any]], None] | None = None) -> None:
        self.values: list[Any] = [None] * n
        self.left = n
        self.done = done
        self.on_done = on_done

    def set(self, i: int, result: Any) -> None:
        self.values[i] = result
        self.left -= 1
        if not self.left:
            if self.done is not None and not self.done.done():
                self.done.set_result(None)
            if self.on_done is not None:
                self.on_done(self.values)


class AgentCore:
    """Runs :class:`netemu.dtn.bpa.BundleAgent` against the store, the CLs and the apps,
    following the BPA's contract: store writes, one commit per batch, then acks,
    forwards and deliveries. Events arriving in one event-loop turn share the batch."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        cfg = agent.cfg
        plan = agent.plan
        if plan is None:
            nodes = {cfg.node: Node(cfg.node, cfg.ipn)}
            for n in cfg.neighbours:
                nodes[n.name] = Node(n.name, n.ipn)
            plan = ContactPlan(agent.clock.epoch, nodes, [])
        self.plan = plan
        self.store = BundleStore(cfg.store, max_bytes=cfg.store_max_bytes,
                                 durability=cfg.durability)
        self.router, self.bpa = self._new_core()
        # A store write failed: the core is rebuilt (_reload) before any event goes on.
        # While due, either _reload_timer is set or the commit in flight's end calls it.
        self._reload_due = False
        self._reload_timer: asyncio.TimerHandle | None = None
        self._last_reload = -math.inf
        # (event, callback): a function of the result, or (function, index) for a batch
        self._events: list[tuple[Any, Any]] = []
        self._notes: list[bpa.BundleEvent] = []  # telemetry, published after the commit
        self.purged = 0  # tombstones swept from the store
        self._flush_scheduled = False
        # Pipelined group commit (disk durability): one commit thread, one commit at once.
        self._commit_pool = (ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
                             if cfg.durability == "disk" else None)
        self._committing = False
        self._commit_inflight: tuple[Any, list, list] | None = None
        self._purge_due = False
        self._retry_handle: asyncio.TimerHandle | None = None
        # Deliveries: endpoint -> connections; bundles waiting for / pushed to an app.
        self.endpoints: dict[str, list[AppConnection]] = {}
        self.waiting: dict[str, dict[str, Any]] = {}  # endpoint -> {bundle_id: Bundle}
        self.pushed: dict[AppConnection, dict[str, tuple[str, Any]]] = {}
        self._outbox: dict[AppConnection, list[dict]] = {}

    def now_ms(self) -> int:
        return self.agent.clock.dtn_time_ms()

    # --- lifecycle --------------------------------------------------------------------

    def _new_core(self) -> tuple[Router, bpa.BundleAgent]:
        cfg = self.agent.cfg
        router = make_router(cfg, self.plan)
        core = bpa.BundleAgent(
            bpa.AgentConfig(node_id=EID.ipn(cfg.ipn, 0), node_name=cfg.node,
                            plan_epoch_ms=datetime_to_dtn_ms(self.plan.epoch),
                            max_bytes=cfg.store_max_bytes, policy=security_policy(cfg),
                            bundle_events=self.agent.telemetry is not None),
            router)
        return router, core

    def start(self) -> None:
        records = list(self.store.by_state(*StoreState))
        actions = self.bpa.restore(records, self.now_ms())
        held = sum(1 for r in records if r.data is not None)
        self.agent.log("store_restored", path=self.store.path, records=len(records), held=held)
        self._execute([(actions, None)])

    def _reload(self) -> None:
        """After a failed store write the store is back at its last commit, but the core
        still counts the failed batch's bundles as held and known: a sender's retry of a
        refused bundle would be taken for a duplicate and acknowledged, and the bundle lost.
        So, as a restart would: a new core and router restored from the store, told which
        neighbours are up. Events wait meanwhile. (Bundles in transfer stay in their
        sessions; their acknowledgements reach the new core, which holds them again.)"""
        self._reload_timer = None
        if not self._reload_due or self._committing:
            return  # (done already, or after the commit in flight: _committed calls again)
        self._reload_due = False
        self._last_reload = time.monotonic()
        self.router, self.bpa = self._new_core()
        try:
            records = list(self.store.by_state(*StoreState))
        except Exception as e:  # noqa: BLE001 - the store is unusable: try again later
            self.agent.log("store_error", error=repr(e), during="reload")
            self._reload_due = True
            self._reload_timer = asyncio.get_event_loop().call_later(RELOAD_RETRY_S,
                                                                     self._reload)
            return
        now = self.now_ms()
        actions = self.bpa.restore(records, now)
        for name, st in self.agent.neighbours.items():
            if st.up:
                actions += self.bpa.handle(bpa.ContactUp(name, now))
        self.agent.log("core_reloaded", records=len(records))
        self._execute([(actions, None)])
        if self._events and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_event_loop().call_soon(self._flush)

    def close(self) -> None:
        while self._commit_inflight is not None:  # finish commits in flight, answer them
            fut = self._commit_inflight[0]
            with contextlib.suppress(Exception):
                fut.result()
            self._committed(fut)  # (may start the next batch's commit)
        if self._commit_pool is not None:
            self._commit_pool.shutdown(wait=True)
            self._commit_pool = None  # what is left commits here, in the loop
        if self._reload_due:
            if self._reload_timer is not None:
                self._reload_timer.cancel()
            self._reload_timer = None
            self._reload()
        while self._events and not self._committing and not self._reload_due:
            self._flush()
        self.store.close()

    def tick(self) -> None:
        self.submit(bpa.Tick(self.now_ms()))

    def purge(self) -> int:
        """Drop tombstones (forwarded / delivered / deleted rows) of expired bundles from the
        store: no valid copy of them can arrive any more, so dedupe no longer needs them
        (the core forgets their IDs at expiry too)."""
        self._flush()  # the batch in progress first: its commit must not wait for the sweep
        if self._committing:
            self._purge_due = True  # right after that commit (the store is one writer's)
            return 0
        return self._purge_now()

    def _purge_now(self) -> int:
        try:
            n = self.store.purge_tombstones(self.now_ms())
            self.store.commit()
        except Exception as e:  # a failed sweep loses nothing; the next one retries
            self.agent.log("store_error", error=repr(e), during="purge_tombstones")
            return 0
        self.purged += n
        if n:
            self.agent.log("tombstones_purged", rows=n, total=self.purged)
        return n

    # --- events -----------------------------------------------------------------------

    def submit(self, event: Any, cb: Callable[[Any], None] | None = None) -> None:
        """Queue an event for this loop turn's batch; ``cb(result)`` runs after commit."""
        self._events.append((event, cb))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_event_loop().call_soon(self._flush)

    def submit_pending(self) -> None:
        """Events appended to ``_events`` directly (a batch): flush them this loop turn."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_event_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._events or self._committing or self._reload_due:
            return  # (a commit in flight: these events form the next batch at its end)
        events = self._events
        if len(events) > MAX_BATCH_EVENTS:
            events, self._events = events[:MAX_BATCH_EVENTS], events[MAX_BATCH_EVENTS:]
        else:
            self._events = []
        # One handle_many per batch: bundles the apps sent in it are routed together.
        outs = self.bpa.handle_many([ev for ev, _ in events], self._core_error)
        self._execute([(out, cb) for out, (_, cb) in zip(outs, events, strict=True)])
        if self._events and not self._committing and not self._flush_scheduled:
            self._flush_scheduled = True  # the rest after the loop has read its sockets
            asyncio.get_event_loop().call_soon(self._flush)

    def _core_error(self, ev: Any, e: Exception) -> list:
        """A core bug must not leave a CL or an app waiting: log it, refuse the event."""
        self.agent.log("core_error", on=type(ev).__name__, error=repr(e))
        return [bpa.Refuse(None, 0, f"internal error: {e!r}")]

    def _execute(self, batch: list[tuple[list, Any]]) -> None:
        """The batch's store writes, the commit, then what may only follow it (acks,
        forwards, deliveries). With ``disk`` durability the commit (its fsyncs) runs in a
        thread: the loop goes on reading sockets and apps meanwhile, and the events that
        arrive wait for the commit's end to form the next batch (pipelined group commit)."""
        try:
            later = self._store_actions(batch)
            if self._commit_pool is not None:
                self._committing = True
                loop = asyncio.get_event_loop()
                fut = self._commit_pool.submit(self.store.commit)
                self._commit_inflight = (fut, batch, later)
                fut.add_done_callback(
                    lambda f: loop.call_soon_threadsafe(self._committed, f))
                return
            self.store.commit()  # durable before any ack, forward or delivery
        except Exception as e:  # e.g. disk full: nothing is acknowledged as stored
            self._store_failed(batch, e)
            return
        self._after_commit(batch, later)

    def _committed(self, fut: Any) -> None:
        """The commit thread finished (in the loop): answer its batch, then the next."""
        inflight = self._commit_inflight
        if inflight is None or inflight[0] is not fut:
            return  # (close() finished it already)
        self._commit_inflight = None
        self._committing = False
        _, batch, later = inflight
        e = fut.exception()
        if e is not None:
            self._store_failed(batch, e)
        else:
            self._after_commit(batch, later)
        if self._purge_due:
            self._purge_due = False
            self._purge_now()
        if self._reload_due and self._reload_timer is None:
            self._reload()  # (it waited for this commit; with a timer set, the timer does it)
        if self._events:
            self._flush()

    def _store_failed(self, batch: list[tuple[list, Any]], e: BaseException) -> None:
        self.agent.log("store_error", error=repr(e), events=len(batch))
        self._notes = []
        for _, cb in batch:
            refused = bpa.Refuse(None, 0, f"store error: {e!r}")
            if type(cb) is tuple:
                cb[0](cb[1], refused)
            elif cb is not None:
                cb(refused)
        if not self._reload_due:  # the core must forget what the store did not keep
            self._reload_due = True
            again = time.monotonic() - self._last_reload < RELOAD_RETRY_S  # (disk still full)
            self._reload_timer = asyncio.get_event_loop().call_later(
                RELOAD_RETRY_S if again else 0, self._reload)

    def _after_commit(self, batch: list[tuple[list, Any]], later: list[Any]) -> None:
        accept, refuse = bpa.Accept, bpa.Refuse
        for actions, cb in batch:
            if cb is None:
                continue
            result: Any = None
            for a in actions:
                if type(a) is accept or type(a) is refuse:
                    result = a
                    break
            if type(cb) is tuple:  # (results.set, index): one bound method for a batch
                cb[0](cb[1], result)
            else:
                cb(result)
        if self._notes:
            self._publish_notes()
        for a in later:
            if type(a) is bpa.Forward:
                self.agent.enqueue(a.neighbour, a.bundle_id, a.data)
            else:
                self._deliver(a.bundle_id, a.endpoint, a.bundle)
        for ch in list(self.agent.channels):
            if isinstance(ch, TcpclChannel):
                ch.flush()

    def _store_actions(self, batch: list[tuple[list, Any]]) -> list[Any]:
        """Apply the batch's store writes (the caller commits); return the Forward/Deliver
        actions, which may only start after the commit."""
        store = self.store
        rows: list[tuple] = []
        drops: list[tuple[str, StoreState]] = []  # held -> tombstone, one executemany
        later: list[Any] = []
        log = self.agent.log
        store_t, accept_t, forward_t, deliver_t, set_state_t = (
            bpa.Store, bpa.Accept, bpa.Forward, bpa.Deliver, bpa.SetState)
        for actions, _ in batch:
            for a in actions:
                t = type(a)
                if t is store_t:
                    rows.append(a.row())
                    continue
                if t is accept_t:  # (answered after the commit, by _after_commit)
                    continue
                if t is forward_t or t is deliver_t:
                    later.append(a)
                    continue
                if t is set_state_t and a.state not in _HELD_STATES:
                    drops.append((a.bundle_id, a.state))
                    continue
                if (rows or drops) and t in (bpa.SetState, bpa.Delete):
                    store.add_many(rows)
                    store.drop_many(drops)
                    rows, drops = [], []
                if t is bpa.SetState:
                    store.set_state(a.bundle_id, a.state)
                elif t is bpa.Delete:
                    store.set_state(a.bundle_id, StoreState.DELETED, reason=a.reason)
                    log("bundle_deleted", bundle=a.bundle_id, reason=a.reason, message=a.message)
                elif t is bpa.Forward or t is bpa.Deliver:
                    later.append(a)
                elif t is bpa.BundleEvent:
                    self._notes.append(a)
                elif t is bpa.ScheduleRetry:
                    self._schedule_tick(a.at_ms)
                elif t is bpa.StatusReportSent:
                    log("status_report", subject=a.subject_id, status=a.status,
                        reason=a.reason, report=a.report_id)
                elif t is bpa.Refuse:
                    log("bundle_refused", bundle=a.bundle_id, reason=a.reason,
                        message=a.message)
        if rows:
            store.add_many(rows)
        if drops:
            store.drop_many(drops)
        return later

    def _publish_notes(self) -> None:
        notes, self._notes = self._notes, []
        pub = self.agent.telemetry
        if pub is None:
            return
        t_s = round(self.agent.clock.now_s(), 6)
        for n in notes:
            p = {"event": n.event, "t_s": t_s, "bundle_id": n.bundle_id, "source": n.source,
                 "destination": n.destination, "size_bytes": n.size_bytes}
            if n.next_hop is not None:
                p["next_hop"] = n.next_hop
            if n.reason is not None:
                p["reason"] = n.reason
            pub.emit(p)

    def _schedule_tick(self, at_ms: int) -> None:
        delay_s = max(0.0, (at_ms - self.now_ms()) / 1000.0 / self.agent.clock.time_scale)
        if delay_s >= HOUSEKEEPING_S:
            return  # the housekeeping tick comes first
        if self._retry_handle is not None:
            self._retry_handle.cancel()
        self._retry_handle = asyncio.get_event_loop().call_later(delay_s, self.tick)

    # --- from the convergence layers ----------------------------------------------------

    def receive_many(self, items: list[tuple[bytes, str | None]],
                     done: Callable[[list[bool]], None]) -> None:
        """Bundles received by the CLs: processed now (or after the commit in flight) and
        ``done(oks)`` once they are committed; True = acknowledge."""
        if not items:
            done([])
            return
        now = self.now_ms()
        accept = bpa.Accept
        results = _Results(len(items), on_done=lambda values: done(
            [type(r) is accept for r in values]))
        cb = results.set
        received = bpa.BundleReceived
        self._events.extend((received(data, nb, now), (cb, i))
                            for i, (data, nb) in enumerate(items))
        self._flush()

    def transmitted(self, key: str, neighbour: str | None) -> None:
        self.submit(bpa.TransmissionDone(key, neighbour or "", self.now_ms()))

    def transmitted_many(self, keys: list[str], neighbour: str | None) -> None:
        now, nb, done = self.now_ms(), neighbour or "", bpa.TransmissionDone
        self._events.extend((done(k, nb, now), None) for k in keys)
        self.submit_pending()

    def transmit_failed(self, key: str, neighbour: str | None, reason: str) -> None:
        self.submit(bpa.TransmissionFailed(key, neighbour or "", self.now_ms(), reason))

    def contact_started(self, neighbour: str) -> None:
        self.submit(bpa.ContactUp(neighbour, self.now_ms()))

    def contact_ended(self, neighbour: str) -> None:
        self.submit(bpa.ContactDown(neighbour, self.now_ms()))

    # --- applications -----------------------------------------------------------------

    def app_handlers(self) -> dict[str, Any]:
        return {"register": self._app_register, "send": self._app_send,
                "send_many": self._app_send_many, "ack": self._app_ack,
                "status": self._app_status, "watch": self._app_watch}

    def _local_endpoint(self, text: Any) -> str:
        try:
            eid = EID.parse(str(text))
        except BundleError as e:
            raise InputError(str(e), field="endpoint") from None
        if not self.bpa.is_local(eid):
            raise InputError(f"{eid} is not an endpoint of this node ({self.bpa.node_id})",
                             field="endpoint")
        return str(eid)

    def _app_register(self, conn: AppConnection, req: dict) -> dict:
        ep = self._local_endpoint(req["endpoint"])
        conn.endpoints.add(ep)
        conns = self.endpoints.setdefault(ep, [])
        if conn not in conns:
            conns.append(conn)
        waiting = self.waiting.pop(ep, {})
        asyncio.get_event_loop().call_soon(self._push_many, conn, ep, waiting)
        self.agent.log("app_registered", endpoint=ep, waiting=len(waiting))
        return {"endpoint": ep}

    def _push_many(self, conn: AppConnection, ep: str, bundles: dict[str, Any]) -> None:
        for bid, b in bundles.items():
            self._deliver(bid, ep, b)

    def _deliver(self, bid: str, ep: str, bundle: Any) -> None:
        conns = [c for c in self.endpoints.get(ep, ()) if not c.closed]
        if not conns:
            self.waiting.setdefault(ep, {})[bid] = bundle
            return
        conn = conns[0]
        self.pushed.setdefault(conn, {})[bid] = (ep, bundle)
        p = bundle.primary
        item = {"id": bid, "src": bpa.eid_text(p.source), "dst": ep, "created_ms": p.creation_ms,
                "payload": bundle.payload}
        pending = self._outbox.get(conn)
        if pending is None:
            pending = self._outbox[conn] = []
            if len(self._outbox) == 1:
                asyncio.get_event_loop().call_soon(self._flush_outbox)
        pending.append(item)

    def _flush_outbox(self) -> None:
        """One frame per app connection and loop turn: ``{"ev": "bundles", "items": [...]}``."""
        outbox, self._outbox = self._outbox, {}
        for conn, items in outbox.items():
            if len(items) == 1:
                conn.push({"ev": "bundle", **items[0]})
            else:
                conn.push({"ev": "bundles", "items": items})

    def app_disconnected(self, conn: AppConnection) -> None:
        for ep in conn.endpoints:
            conns = self.endpoints.get(ep, [])
            if conn in conns:
                conns.remove(conn)
        for bid, (ep, b) in self.pushed.pop(conn, {}).items():
            self._deliver(bid, ep, b)  # to another app on the endpoint, or wait

    def _app_ack(self, conn: AppConnection, req: dict) -> dict:
        pushed = self.pushed.get(conn, {})
        now, delivered = self.now_ms(), bpa.AppDelivered
        self._events.extend((delivered(bid, now), None) for bid in req["ids"]
                            if pushed.pop(bid, None) is not None)
        self.submit_pending()
        return {}

    def _default_source(self, conn: AppConnection) -> str:
        return (sorted(conn.endpoints)[0] if conn.endpoints
                else f"ipn:{self.agent.cfg.ipn}.0")

    def _send_event(self, conn: AppConnection, item: dict, now: int,
                    default_src: str | None = None) -> Any:
        src = item.get("src") or default_src or self._default_source(conn)
        lifetime_s = float(item.get("lifetime_s", self.agent.cfg.default_lifetime_s))
        if not lifetime_s > 0:
            raise InputError("lifetime_s must be > 0", field="lifetime_s")
        flags = 0
        if item.get("reports"):
            flags |= int(REPORT_FLAGS)
        payload = item["payload"]
        if type(payload) is not bytes:
            if not isinstance(payload, bytes | bytearray):
                raise InputError("payload must be bytes", field="payload")
            payload = bytes(payload)
        dst = item["dst"]
        return bpa.AppSend(src, dst if type(dst) is str else str(dst), payload,
                           int(lifetime_s * 1000), now, flags, item.get("report_to"))

    async def _app_send(self, conn: AppConnection, req: dict) -> dict:
        return {"id": (await self._sends(conn, [req]))[0]}

    async def _app_send_many(self, conn: AppConnection, req: dict) -> dict:
        items = req["bundles"]
        if not isinstance(items, list):
            raise InputError("bundles must be a list", field="bundles")
        return {"ids": await self._sends(conn, items)}

    async def _sends(self, conn: AppConnection, items: list[dict]) -> list[str]:
        """Create bundles; answered after the batch's store commit (one future per batch)."""
        now = self.now_ms()
        default_src = self._default_source(conn)
        events = [self._send_event(conn, it, now, default_src) for it in items]
        results = _Results(len(events), asyncio.get_event_loop().create_future())
        if events:
            cb = results.set
            self._events.extend((ev, (cb, i)) for i, ev in enumerate(events))
            self.submit_pending()
            await results.done  # type: ignore[misc]
        ids = []
        for r in results.values:
            if type(r) is not bpa.Accept:
                raise InputError(r.message if r is not None else "send not accepted",
                                 field="send")
            ids.append(r.bundle_id)
        return ids

    def _app_status(self, conn: AppConnection, req: dict) -> dict:
        st = self.agent.status()
        st["bpa"] = self.bpa.status()
        st["store"] = {"path": self.store.path, "held_bundles": self.store.held_bundles,
                       "held_bytes": self.store.held_bytes, "tombstones_purged": self.purged}
        st["apps"] = {ep: len(c) for ep, c in self.endpoints.items()}
        st["waiting_for_app"] = {ep: len(w) for ep, w in self.waiting.items() if w}
        return st

    def _app_watch(self, conn: AppConnection, req: dict) -> dict:
        conn.watching = True
        self.agent.log.watchers.add(conn)
        return {}


async def run_agent(cfg: AgentConfig, *, tune_gc: bool = True) -> None:
    agent = Agent(cfg)
    if tune_gc:  # an agent process: rarer cyclic-GC passes (see bpa.tune_gc), and large
        bpa.tune_gc()  # bundles' buffers from the heap, not mmap (see memtune)
        tune_malloc()
    await agent.run()


def main_from_config(cfg: AgentConfig) -> int:
    """Run the agent until SIGTERM/SIGINT; user errors surface as NetemuError."""
    asyncio.run(run_agent(cfg))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m netemu.agent.agent --node N --config F``: the same as ``netemu agent`` but
    without loading every netemu command first (faster start for many agents)."""
    import argparse

    from netemu.commands.agent import register

    parser = argparse.ArgumentParser(prog="python -m netemu.agent.agent")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["agent", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except NetemuError as e:
        print(f"netemu agent: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
