"""The bundle agent: an asyncio shell around the BPA core and the CL state machines.

Everything protocol-shaped lives elsewhere, without I/O: bundle processing, store and
routing in :mod:`netemu.dtn.bpa` (the core), the TCPCLv4 session in
:mod:`netemu.dtn.tcpcl`, framing in :mod:`netemu.dtn.udpcl` / :mod:`netemu.dtn.mtcp` /
:mod:`netemu.dtn.appframe`. This module owns the neighbours, the timers and the clock;
the sockets are the channels' (:mod:`netemu.agent.channels`), the glue to the core is
:class:`~netemu.agent.core.AgentCore`, the process entry point :mod:`netemu.agent.main`:

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
import errno
import math
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

from netemu.agent.appserver import AppServer
from netemu.agent.channels import (
    Channel,
    MtcpChannel,
    OutItem,
    Sockets,
    TcpclChannel,
    UdpChannel,
    UdpclEndpoint,
)
from netemu.agent.config import AgentConfig, NeighbourConfig, split_host_port
from netemu.agent.core import HOUSEKEEPING_S, AgentCore
from netemu.agent.counters import CountersTimer
from netemu.agent.log import JsonLog
from netemu.agent.telemetry import BundlePublisher
from netemu.agent.tls import TlsContexts
from netemu.agent.traffic import TrafficGenerator, load_traffic
from netemu.dtn import mtcp, tcpcl, udpcl
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError
from netemu.errors import NetemuError
from netemu.plan.contacts import ContactPlan, PerPlan
from netemu.runtime.clock import ScenarioClock
from netemu.runtime.env import HostEnv
from netemu.runtime.telemetry import BrokerAccess

BACKOFF_MIN_S = 0.2
BACKOFF_MAX_S = 5.0
LINK_SETUP_S = 1.0
"""How long after a contact starts a dial that finds no route to the peer (the emulator
still configuring the link) is retried every LINK_SETUP_RETRY_S, without backoff."""
LINK_SETUP_RETRY_S = 0.02
PURGE_EVERY_S = 30.0  # wall seconds between sweeps of expired tombstones from the store
DIAL_GRACE_S = 10.0


def wall_clock(plan: ContactPlan | None) -> ScenarioClock:
    """Wall time against the plan epoch (scenario time = wall time), for an agent that
    runs without netemu's clock variables."""
    now = time.time()
    if plan is not None:
        return ScenarioClock(plan.epoch, 1.0, now, now - plan.epoch.timestamp())
    return ScenarioClock(datetime.fromtimestamp(now, timezone.utc), 1.0, now, 0.0)


@dataclass
class AgentServices:
    """What an agent takes from its process. The defaults are a single-node agent's own;
    a node host (:mod:`netemu.agent.nodehost`) gives each of its nodes sockets made in
    the node's network namespace and shares the rest between them."""

    sockets: Sockets = field(default_factory=Sockets)
    load_plan: Callable[[str], ContactPlan] = ContactPlan.load
    #: group-commit thread (disk durability); None: a thread of the node's own
    commit_pool: Executor | None = None
    #: the store's fdatasync threads; None: the store's own
    sync_pool: Executor | None = None
    #: the ``bundle/<node>`` publisher for (broker, node)
    publisher: Callable[[BrokerAccess, str], BundlePublisher] = BundlePublisher
    #: bounds the TCP connects in flight (a node host's nodes share one): when every
    #: link comes up at once, thousands of dials would otherwise time out in the queue
    dial_gate: asyncio.Semaphore | None = None
    #: set once every node of the process listens: dials to a node not yet started time
    #: out instead of being refused (seen: a quarter of a 1,594-node host's first dials)
    dials_open: asyncio.Event | None = None
    #: a ``counters/<node>`` timer of the node's own (False: the process runs one for all)
    counters_timer: bool = True


class PlanIndex:
    """What every agent of a plan reads from it: ipn -> node name, and each node's
    contact windows by neighbour. Built once per plan object, so the nodes of a node
    host share one instead of each scanning the whole plan."""

    def __init__(self, plan: ContactPlan) -> None:
        self.names: dict[int, str] = {}
        for node in plan.nodes.values():
            self.names.setdefault(node.ipn, node.name)
        self._by_src: dict[str, list[Any]] = {}
        for c in plan.contacts:
            self._by_src.setdefault(c.src, []).append(c)

    @classmethod
    def for_plan(cls, plan: ContactPlan) -> PlanIndex:
        return _PLAN_INDEXES.get(plan)

    def windows_from(self, node: str) -> dict[str, list[tuple[float, float]]]:
        """(start_s, end_s) of ``node``'s contacts, by neighbour, in plan order."""
        per: dict[str, list[tuple[float, float]]] = {}
        for c in self._by_src.get(node, ()):
            per.setdefault(c.dst, []).append((c.start_s, c.end_s))
        return per


_PLAN_INDEXES: PerPlan[PlanIndex] = PerPlan(PlanIndex)


def keeps_session(role: tcpcl.Role, we_are_lower: bool) -> bool:
    """Of two sessions with one neighbour, whether to keep this one: the one whose active
    (dialling) side has the lower ipn."""
    return (role is tcpcl.Role.ACTIVE) == we_are_lower


@dataclass
class NeighbourState:
    cfg: NeighbourConfig
    queue: deque[OutItem] = field(default_factory=deque)
    sessions: list[Channel] = field(default_factory=list)
    plan_up: bool = True
    up: bool = False  # told the core "contact started"
    backoff_s: float = BACKOFF_MIN_S
    connecting: asyncio.Task | None = None
    next_try: float = 0.0
    failures: int = 0
    plan_up_since: float = 0.0


class Agent:
    """One node's bundle agent. ``core`` is the BPA state machine (see :mod:`.bpa`)."""

    def __init__(self, cfg: AgentConfig, *, log_stream: TextIO | None = None,
                 clock: ScenarioClock | None = None,
                 core_factory: Callable[[Agent], Any] | None = None,
                 services: AgentServices | None = None) -> None:
        self.cfg = cfg
        self.services = services or AgentServices()
        self.plan = (self.services.load_plan(cfg.contact_plan) if cfg.contact_plan
                     else None)
        host = HostEnv.from_env()  # what netemu set in this host: clock, telemetry broker
        self.clock = clock or host.clock or wall_clock(self.plan)
        # In a scenario run the network is built, in its state at the window's start,
        # before the clock gets there: contacts up at the start get their sessions then.
        self._plan_from_s = host.window_start_s if host.window_start_s is not None else -math.inf
        self._log_file: TextIO | None = None
        if log_stream is None and cfg.log:
            os.makedirs(os.path.dirname(os.path.abspath(cfg.log)), exist_ok=True)
            self._log_file = open(cfg.log, "a", buffering=1)  # noqa: SIM115
            log_stream = self._log_file
        self.log = JsonLog(cfg.node, self.clock, log_stream or sys.stderr)
        self.neighbours: dict[str, NeighbourState] = {
            n.name: NeighbourState(n) for n in cfg.neighbours}
        self.tls = TlsContexts.of(cfg)  # None: tls off
        self.rx_budget = tcpcl.RxBudget(cfg.rx_in_progress_max_bytes)  # all sessions
        # ipn -> name: the neighbours first, then the plan's nodes (shared by every node
        # of the plan in this process)
        self._by_ipn = {n.ipn: n.name for n in cfg.neighbours}
        index = PlanIndex.for_plan(self.plan) if self.plan is not None else None
        self._plan_names: dict[int, str] = index.names if index is not None else {}
        # Per neighbour: (starts, running max of ends) of this node's contacts to it.
        self._windows: dict[str, tuple[list[float], list[float]]] = {}
        if index is not None:
            for name, iv in index.windows_from(cfg.node).items():
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
        self._end_checks: set[float] = set()  # contact starts and ends with a timer set
        self._tasks: set[asyncio.Task] = set()
        self.counters: dict[str, int] = {
            "received": 0, "sent": 0, "refused": 0, "requeued": 0, "sessions": 0}
        # bundle/<node> telemetry when the run's MQTT variables are set (else None)
        self.telemetry: BundlePublisher | None = (
            self.services.publisher(host.mqtt, cfg.node) if host.mqtt is not None else None)
        self.bundle_events = self.telemetry is not None and host.bundle_events_on
        self.counters_s = host.counters_interval_s if self.telemetry is not None else 0.0
        self._counters: CountersTimer | None = None
        self.core = (core_factory or _default_core)(self)
        self.traffic: TrafficGenerator | None = None  # the scenario's flows, when given

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
        sockets = self.services.sockets
        for addr in cfg.listen_tcpcl:
            host, port = split_host_port(addr)
            self.servers += await sockets.listen(
                loop, lambda: TcpclChannel(self, tcpcl.Role.PASSIVE), host, port)
        for addr in cfg.listen_mtcp:
            host, port = split_host_port(addr, default_port=mtcp.DEFAULT_PORT)
            self.servers += await sockets.listen(loop, lambda: MtcpChannel(self), host, port)
        if cfg.listen_udpcl:
            host, port = split_host_port(cfg.listen_udpcl[0])
            self.udp = await sockets.datagram(loop, lambda: UdpclEndpoint(self), host, port)
        for st in self.neighbours.values():
            if st.cfg.cl == "udpcl" and self.udp is not None:
                st.sessions.append(UdpChannel(self, self.udp, st.cfg))
        self.app = AppServer(cfg.app_socket, self.core.app_handlers(),
                             on_disconnect=self.core.app_disconnected,
                             allowed_uids=cfg.app_uids)
        await self.app.start()
        if self.telemetry is not None:
            self.telemetry.start()
            if self.counters_s > 0 and self.services.counters_timer:
                self._counters = CountersTimer(lambda: (self,), self.counters_s, self.clock)
                self._spawn(self._counters.run())
        self.core.start()
        if cfg.traffic:
            self.traffic = TrafficGenerator(self, load_traffic(cfg.traffic),
                                            cfg.traffic_records)
            self.traffic.start()
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
        if self._counters is not None:
            self._counters.publish(final=True)
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
        if self.traffic is not None:
            self.traffic.close()
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
        self.close_log()

    def close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _spawn(self, coro: Any) -> asyncio.Task:
        # (named after the node: a node host tells whose task failed)
        task = asyncio.get_event_loop().create_task(coro, name=f"agent {self.cfg.node}")
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
        t_s = max(self.now_s(), self._plan_from_s)
        dials_open = self.services.dials_open is None or self.services.dials_open.is_set()
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
            if was != st.plan_up or not st.plan_up_since or not dials_open:
                # (the dial grace counts from when this process may dial: a node host
                # starting its nodes for a minute would otherwise open its dials with
                # every grace over, and both ends of each link would dial at once)
                st.plan_up_since = now
            if dials_open:
                self._maybe_dial(st, now)
            if st.plan_up:
                self._check_at_contact_end(name, t_s)
            else:
                self._check_at_contact_start(name, t_s)
        for ch in list(self.channels):
            ch.housekeeping(now)
        self.core.tick()
        if self.traffic is not None:
            self.traffic.flush()
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
        if windows:
            i = bisect.bisect_right(windows[0], t_s) - 1
            if i >= 0:
                self._round_at(windows[1][i], t_s)

    def _check_at_contact_start(self, name: str, t_s: float) -> None:
        """Run housekeeping right at the start of ``name``'s next contact when it comes
        before the next round: the session is dialled when the contact starts (CGR counts
        on its whole volume), not up to a round later."""
        windows = self._windows.get(name) if self.plan is not None and self.cfg.follow_plan else None
        if windows:
            i = bisect.bisect_right(windows[0], t_s)
            if i < len(windows[0]):
                self._round_at(windows[0][i], t_s)

    def _round_at(self, at_s: float, t_s: float) -> None:
        """A housekeeping round at scenario time ``at_s`` if it comes before the next one."""
        now_scale = getattr(self.clock, "scale_now", None)  # a test's clock may lack it
        scale = (now_scale() if now_scale else getattr(self.clock, "time_scale", 1.0)) or 1.0
        delay = (at_s - t_s) / scale
        if 0 <= delay < HOUSEKEEPING_S and at_s not in self._end_checks:
            self._end_checks.add(at_s)
            asyncio.get_running_loop().call_later(delay + 0.0005, self._end_check, at_s)

    def _end_check(self, end_s: float) -> None:
        self._end_checks.discard(end_s)
        try:
            self._housekeeping_round()
        except Exception as e:  # keep the agent alive; the log says what broke
            self.log("housekeeping_error", error=repr(e))

    def _maybe_dial(self, st: NeighbourState, now: float) -> None:
        """Dial the neighbour if its contact is up, no stream or dial is open, the backoff
        has passed and its ``dial`` mode says this side dials now."""
        if (st.plan_up and (st.cfg.address or st.cfg.links)
                and st.cfg.cl in ("tcpcl", "mtcp")
                and not self._has_stream(st) and st.connecting is None
                and now >= st.next_try and self._should_dial(st, now)):
            st.connecting = self._spawn(self._connect(st))

    def _redial(self, name: str) -> None:
        """A retry due before the next housekeeping round (see ``_connect``)."""
        st = self.neighbours.get(name)
        dials_open = self.services.dials_open is None or self.services.dials_open.is_set()
        if st is not None and dials_open:
            self._maybe_dial(st, time.monotonic())

    def _should_dial(self, st: NeighbourState, now: float) -> bool:
        """Whether to dial the neighbour now, by its ``dial`` mode: ``both`` at once;
        ``never``; ``lower``: only the lower ipn dials, so that two netemu agents share
        one session, and the other dials too if none came within DIAL_GRACE_S (the peer
        may be software that never dials)."""
        mode = st.cfg.dial
        if mode == "never":
            return False
        if (mode == "both" or st.cfg.cl != "tcpcl" or not st.cfg.ipn
                or self.cfg.ipn < st.cfg.ipn):
            return True
        return now - st.plan_up_since >= DIAL_GRACE_S

    def _has_stream(self, st: NeighbourState) -> bool:
        return any(not isinstance(ch, UdpChannel) for ch in st.sessions)

    def _gated(self, ch: Any) -> Any:
        """``ch`` holds the dial gate until its session starts or it closes."""
        ch.gate_held = True
        return ch

    def _release_gate(self, ch: Any) -> None:
        if getattr(ch, "gate_held", False):
            ch.gate_held = False
            assert self.services.dial_gate is not None
            self.services.dial_gate.release()

    async def _connect(self, st: NeighbourState) -> None:
        loop = asyncio.get_running_loop()
        gate, held = self.services.dial_gate, False
        address = ""
        try:
            if gate is not None:  # (the timeout counts from the dial, not the wait)
                await gate.acquire()
                held = True
                if not st.plan_up:
                    return  # the contact ended while this dial waited
                if self._has_stream(st):
                    # the neighbour's own dial came first while this one waited for the
                    # gate (at a constellation's bring-up, thousands wait): a second
                    # session would only collide, cost two more TLS handshakes and end
                    # the session in use
                    return
            address = st.cfg.address_at(max(self.now_s(), self._plan_from_s))
            connect = self.services.sockets.connect
            if st.cfg.cl == "tcpcl":
                host, port = split_host_port(address)
                if gate is not None:
                    # the channel keeps the slot through its handshakes (TCPCL, TLS): at
                    # most so many sessions are being set up at once in this process
                    await asyncio.wait_for(connect(loop, lambda: self._gated(
                        TcpclChannel(self, tcpcl.Role.ACTIVE, st.cfg.name)), host, port), 5.0)
                    held = False
                else:
                    await asyncio.wait_for(connect(
                        loop, lambda: TcpclChannel(self, tcpcl.Role.ACTIVE, st.cfg.name),
                        host, port), 5.0)
            else:
                host, port = split_host_port(address, default_port=mtcp.DEFAULT_PORT)
                await asyncio.wait_for(connect(
                    loop, lambda: MtcpChannel(self, st.cfg.name), host, port), 5.0)
            # (the channel adds itself to st.sessions in connection_made and removes
            # itself in connection_lost, so a connection that dies at once leaves nothing)
        except (OSError, asyncio.TimeoutError) as e:
            st.failures += 1
            now = time.monotonic()
            # At a contact's start the emulator may still be bringing the link up (its
            # address and route): no route yet is retried soon, without backing off.
            setup = (isinstance(e, OSError) and e.errno in (errno.ENETUNREACH,
                                                             errno.EHOSTUNREACH)
                     and now - st.plan_up_since < LINK_SETUP_S)
            retry_s = LINK_SETUP_RETRY_S if setup else st.backoff_s
            if st.failures <= 5 or st.failures % 20 == 0:
                self.log("connect_failed", neighbour=st.cfg.name, address=address,
                         error=str(e) or type(e).__name__, attempts=st.failures,
                         retry_in_s=retry_s)
            st.next_try = now + retry_s
            if not setup:
                st.backoff_s = min(st.backoff_s * 2, BACKOFF_MAX_S)
            if retry_s < HOUSEKEEPING_S:  # (else the housekeeping round retries)
                loop.call_later(retry_s, self._redial, st.cfg.name)
        finally:
            if held:
                gate.release()  # type: ignore[union-attr]
            st.connecting = None

    def neighbour_by_addr(self, addr: tuple[str, int]) -> str | None:
        for st in self.neighbours.values():
            if ((st.cfg.address and st.cfg.host_port[0] == addr[0])
                    or st.cfg.is_link_host(addr[0])):
                return st.cfg.name
        return None

    def check_peer(self, ch: TcpclChannel, node_id: str) -> str | None:
        """Why the peer of ``ch``, calling itself ``node_id`` in SESS_INIT, is refused, or
        None: a node ID that is no node (or is this node's), one its TLS certificate does
        not name, a dialled neighbour answering as another node, or an incoming peer that
        is not a configured neighbour (unless ``accept_unknown_peers``)."""
        why = _not_a_node_id(node_id)
        if why is not None:
            return why
        if node_id == self.cfg.node_eid:
            return "it is this node's own ID"
        if ch.session.tls and node_id not in ch.peer_cert_ids:
            return (f"its TLS certificate names {', '.join(sorted(ch.peer_cert_ids))}"
                    if ch.peer_cert_ids else "its TLS certificate names no node ID")
        if ch.neighbour is not None:  # we dialled a neighbour: it must answer as itself
            st = self.neighbours.get(ch.neighbour)
            want = f"ipn:{st.cfg.ipn}.0" if st is not None and st.cfg.ipn else None
            if want is not None and node_id != want:
                return f"neighbour {ch.neighbour} was dialled, and it is {want}"
            return None
        if _ipn_of(node_id) in self._by_ipn or self.cfg.accept_unknown_peers:
            return None
        return "not a configured neighbour (accept_unknown_peers is false)"

    def peer_refused(self, ch: TcpclChannel, reason: str) -> None:
        """A session ended before it started because of who the peer is (or is not)."""
        self.counters["peers_refused"] = self.counters.get("peers_refused", 0) + 1
        self.log("peer_refused", neighbour=ch.neighbour, peer=ch.peer,
                 role=ch.session.role.value, tls=ch.session.tls, reason=reason)
        st = self.neighbours.get(ch.neighbour or "")
        if st is not None:  # dialled, and someone else answered: back off as for a failure
            st.backoff_s = min(st.backoff_s * 2, BACKOFF_MAX_S)

    def session_started(self, ch: TcpclChannel, ev: tcpcl.SessionStarted) -> None:
        self._release_gate(ch)
        name = ch.neighbour
        peer_name = self._name_of_node_id(ev.peer_node_id)
        if name is None:
            name = ch.neighbour = peer_name
        self.counters["sessions"] += 1
        self.log("session_up", neighbour=name, peer=ch.peer, peer_node_id=ev.peer_node_id,
                 keepalive_s=ev.keepalive_s, peer_segment_mru=ev.peer_segment_mru,
                 peer_transfer_mru=ev.peer_transfer_mru, role=ch.session.role.value, tls=ch.session.tls)
        st = self.neighbours.get(name)
        if st is None:
            ipn = _ipn_of(ev.peer_node_id) or 0  # (0: not an ipn node)
            st = self.neighbours[name] = NeighbourState(NeighbourConfig(name, ipn))
        if ch not in st.sessions:
            st.sessions.append(ch)
        self._resolve_collision(st)
        st.backoff_s = BACKOFF_MIN_S
        st.failures = 0
        self._update_up(st)
        self.pump(name)

    def _resolve_collision(self, st: NeighbourState) -> None:
        """Both sides dialled (``dial: both``) and two sessions came up: keep the one the
        lower ipn dialled, end the other. Both ends apply the same rule, so they end the
        same session; its transfers in progress finish first (SESS_TERM, not an abort)."""
        streams = [ch for ch in st.sessions if isinstance(ch, TcpclChannel)
                   and ch.established
                   and ch.session.state is tcpcl.SessionState.ESTABLISHED]
        if len(streams) < 2 or not st.cfg.ipn or st.cfg.ipn == self.cfg.ipn:
            return
        we_are_lower = self.cfg.ipn < st.cfg.ipn
        keep = [ch for ch in streams if keeps_session(ch.session.role, we_are_lower)]
        if not keep:
            return  # (two sessions dialled the same way: nothing to choose by)
        for ch in streams:
            if ch is not keep[0]:
                self.log("session_collision", neighbour=st.cfg.name, peer=ch.peer,
                         ended_role=ch.session.role.value)
                ch.close(tcpcl.TermReason.UNKNOWN)

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
        if ipn is not None:
            name = self._by_ipn.get(ipn) or self._plan_names.get(ipn)
            if name is not None:
                return name
        return node_id

    def channel_lost(self, ch: Channel, unacked: list[OutItem], exc: Exception | None) -> None:
        self._release_gate(ch)
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
            if (not st.sessions and not st.queue and not st.up
                    and self.cfg.neighbour(st.cfg.name) is None):
                # a peer met only through its own session (accept_unknown_peers): nothing
                # of it is kept once its last session is gone
                del self.neighbours[st.cfg.name]

    def _give_back(self, st: NeighbourState, items: list[OutItem], reason: str) -> None:
        """Hand bundles that will not go to this neighbour back to the core (it re-routes)."""
        if items:
            self.log("returned_to_router", neighbour=st.cfg.name, bundles=len(items),
                     reason=reason)
        for item in items:
            self.core.transmit_failed(item.key, st.cfg.name, reason)

    def _link_limit(self, st: NeighbourState) -> int | None:
        """The largest bundle ``st`` takes in one transfer: its TCPCL sessions' transfer
        MRU, a UDP datagram on its path MTU, the config's ``max_bundle_bytes``; None when
        nothing bounds it. Larger bundles go to it in fragments."""
        limits = [st.cfg.max_bundle_bytes] if st.cfg.max_bundle_bytes else []
        for ch in st.sessions:
            if not ch.established:
                continue
            if isinstance(ch, TcpclChannel):
                limits.append(ch.session.peer_transfer_mru)
            elif isinstance(ch, UdpChannel):
                limits.append(udpcl.max_bundle_bytes(st.cfg.path_mtu))
        return min(limits) if limits else None

    def _update_up(self, st: NeighbourState) -> None:
        up = st.plan_up and any(ch.established for ch in st.sessions)
        if up:  # (before the contact start that routes bundles to it)
            self.core.link_limit(st.cfg.name, self._link_limit(st))
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
            st = self.neighbours[neighbour] = NeighbourState(NeighbourConfig(neighbour, 0))
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
        touched: set[Channel] = set()
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
            if ch is None or tid is None or ch.session.state in (
                    tcpcl.SessionState.CLOSED, tcpcl.SessionState.ERROR):
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


def _not_a_node_id(node_id: str) -> str | None:
    """Why ``node_id`` (from a peer's SESS_INIT) names no node, or None."""
    try:
        eid = EID.parse(node_id)
    except BundleError as e:
        return f"not a node ID ({e.reason})"
    if eid.is_none or eid.node_number == 0:
        return "the null endpoint is no node"
    if eid.node_id() != eid:
        return f"an endpoint, not a node ID (that is {eid.node_id()})"
    return None


def _ipn_of(node_id: str) -> int | None:
    if node_id.startswith("ipn:"):
        try:
            return int(node_id[4:].split(".")[0])
        except ValueError:
            return None
    return None


def _default_core(agent: Agent) -> Any:
    return AgentCore(agent)
