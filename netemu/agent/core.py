"""The glue between the agent's asyncio shell and the BPA core (:mod:`netemu.dtn.bpa`):
events in, actions out.

:class:`AgentCore` follows the core's contract: store writes, one commit per batch
(pipelined in a thread with ``disk`` durability), then acknowledgements, forwards and
deliveries. It also serves the application socket's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from netemu.agent.appserver import AppConnection
from netemu.agent.channels import TcpclChannel
from netemu.agent.config import AgentConfig, check_lifetime, read_security
from netemu.agent.store import BundleStore
from netemu.config import Fields
from netemu.dtn import bpa
from netemu.dtn.bpsec import SecurityPolicy
from netemu.dtn.bundle import REPORT_FLAGS, datetime_to_dtn_ms
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError
from netemu.dtn.state import HELD_STATES, BundleState
from netemu.dtn.status import Reason
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan, Node
from netemu.routing import get_router
from netemu.routing.base import Router

if TYPE_CHECKING:
    from netemu.agent.agent import Agent

#: Events handled per batch (one store commit each). Without a bound, batches grew to
#: thousands of events while a commit was in flight, and the agent then spent ~100 ms
#: without reading its sockets: its peer starved, then it did (delivery gaps of 60-190 ms
#: in bench_dtn). 256 cut the gaps to 30-40 ms but costs more commits (fsyncs with
#: ``disk``); 1024 had the best throughput in interleaved runs (gaps 60-70 ms).
MAX_BATCH_EVENTS = 1024
#: After a failed store write the core is rebuilt from the store at once; if writes keep
#: failing (disk full), at most this often.
RELOAD_RETRY_S = 1.0
#: How often the agent's housekeeping ticks the core (wall seconds): a retry due sooner
#: gets a timer of its own.
HOUSEKEEPING_S = 0.5
#: A neighbour that refused a bundle for lack of resources (its store is full) gets one
#: bundle (a probe) after this many wall seconds, doubling up to BACKOFF_MAX_S while it
#: keeps refusing; the other bundles for it wait here instead of being refused one by one.
BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
#: The TCPCL refusal reason that starts a back-off (XFER_REFUSE "No Resources").
NO_RESOURCES = "NO_RESOURCES"
#: Events of a batch whose store commit failed that are replayed after the reload: they
#: record what already happened (a transmission, an app's acknowledgement), so they must
#: not be lost with the batch (received and app-sent bundles are refused instead: their
#: senders retry).
_REPLAYED = (bpa.TransmissionDone, bpa.TransmissionFailed, bpa.AppDelivered)
#: Below this many bytes of room the store counts as full (logged once per change).
FULL_BELOW_BYTES = 64 * 1024


class _Backoff:
    """The bundles held back from a neighbour whose store is full (see BACKOFF_MIN_S)."""

    __slots__ = ("delay_s", "held", "probe", "timer")

    def __init__(self) -> None:
        self.delay_s = BACKOFF_MIN_S
        self.held: dict[str, None] = {}  # bundle IDs, oldest first
        self.probe: str | None = None
        self.timer: asyncio.TimerHandle | None = None


def make_router(cfg: AgentConfig, plan: ContactPlan) -> Router:
    """The router the config's ``routing`` section names (``cgr`` when none)."""
    params = {k: v for k, v in cfg.routing.items() if k != "algorithm"}
    return get_router(cfg.routing.get("algorithm", "cgr"))(cfg.node, plan, **params)


def security_policy(cfg: AgentConfig) -> SecurityPolicy | None:
    """BPSec policy from the config's ``keys`` section (checked again here: a config built
    in code is held to the rules a file is)."""
    if not cfg.keys:
        return None
    return read_security(Fields(cfg.keys, source=cfg.source, path="keys"),
                         node_id=EID.ipn(cfg.ipn, 0))


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
        services = agent.services
        self.store = BundleStore(cfg.store, max_bytes=cfg.store_max_bytes,
                                 durability=cfg.durability, sync_pool=services.sync_pool,
                                 reserve_bytes=cfg.store_reserve_bytes)
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
        self.expired = 0  # bundles deleted because their lifetime ended (counters)
        self._flush_scheduled = False
        # Pipelined group commit (disk durability): one commit thread, one commit at once.
        # (a node host's is shared by its nodes: each node has one commit at most in it)
        self._own_commit_pool = services.commit_pool is None
        self._commit_pool: Executor | None = None
        if cfg.durability == "disk":
            self._commit_pool = services.commit_pool or ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="commit")
        self._committing = False
        self._commit_inflight: tuple[Any, list, list, list | None] | None = None
        self._purge_due = False
        self._retry_handle: asyncio.TimerHandle | None = None
        self._backoff: dict[str, _Backoff] = {}  # neighbours whose store is full
        self._link_limits: dict[str, int] = {}  # neighbour -> its transfer MRU
        self._full = False  # this store: no room for new bundles (logged on change)
        # Deliveries: endpoint -> connections; bundles waiting for / pushed to an app.
        self.endpoints: dict[str, list[AppConnection]] = {}
        self.waiting: dict[str, dict[str, Any]] = {}  # endpoint -> {bundle_id: Bundle}
        self.pushed: dict[AppConnection, dict[str, tuple[str, Any]]] = {}
        self._outbox: dict[AppConnection, list[dict]] = {}
        # Endpoints served inside the agent (the traffic flows' sink): bundle id, bundle
        self.sinks: dict[str, Callable[[str, Any], None]] = {}

    def now_ms(self) -> int:
        return self.agent.clock.dtn_time_ms()

    # --- lifecycle --------------------------------------------------------------------

    def _new_core(self) -> tuple[Router, bpa.BundleAgent]:
        cfg = self.agent.cfg
        router = make_router(cfg, self.plan)
        core = bpa.BundleAgent(
            bpa.CoreConfig(node_id=EID.ipn(cfg.ipn, 0), node_name=cfg.node,
                            plan_epoch_ms=datetime_to_dtn_ms(self.plan.epoch),
                            max_bytes=cfg.store_max_bytes, policy=security_policy(cfg),
                            bundle_events=self.agent.bundle_events,
                            reassembly_max_bytes=cfg.reassembly_max_bytes),
            router)
        return router, core

    def start(self) -> None:
        records = list(self.store.by_state(*BundleState))
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
            records = list(self.store.by_state(*BundleState))
        except Exception as e:  # noqa: BLE001 - the store is unusable: try again later
            self.agent.log("store_error", error=repr(e), during="reload")
            self._reload_due = True
            self._reload_timer = asyncio.get_event_loop().call_later(RELOAD_RETRY_S,
                                                                     self._reload)
            return
        now = self.now_ms()
        actions = self.bpa.restore(records, now)
        for name, lim in self._link_limits.items():
            actions += self.bpa.handle(bpa.LinkLimit(name, lim, now))
        for name, st in self.agent.neighbours.items():
            if st.up:
                actions += self.bpa.handle(bpa.ContactUp(name, now))
        self.agent.log("core_reloaded", records=len(records))
        self._execute([(actions, None)])
        if self._events and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_event_loop().call_soon(self._flush)

    def close(self) -> None:
        for b in self._backoff.values():
            if b.timer is not None:
                b.timer.cancel()
        self._backoff.clear()
        while self._commit_inflight is not None:  # finish commits in flight, answer them
            fut = self._commit_inflight[0]
            with contextlib.suppress(Exception):
                fut.result()
            self._committed(fut)  # (may start the next batch's commit)
        if self._commit_pool is not None:
            if self._own_commit_pool:
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
        """Time passes for the BPA, when that changes anything (most rounds of an idle
        node it does not: thousands of nodes in a node host each tick twice a second)."""
        now = self.now_ms()
        if self.bpa.tick_due(now):
            self.submit(bpa.Tick(now))
        else:
            self._flush_channels()  # (what a tick's batch ends with)

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
        self._limit_to_room()
        # One handle_many per batch: bundles the apps sent in it are routed together.
        evs = [ev for ev, _ in events]
        outs = self.bpa.handle_many(evs, self._core_error)
        self._execute([(out, cb) for out, (_, cb) in zip(outs, events, strict=True)], evs)
        if self._events and not self._committing and not self._flush_scheduled:
            self._flush_scheduled = True  # the rest after the loop has read its sockets
            asyncio.get_event_loop().call_soon(self._flush)

    def _limit_to_room(self) -> None:
        """New bundles are admitted against what the store can take now (quota, and free
        space less the reserve): one that does not fit is refused before anything is
        written ("depleted storage"), so a full filesystem never fails a commit that
        also carries acknowledgements and tombstones."""
        try:
            room = self.store.room_bytes()
        except OSError as e:
            self.agent.log("store_error", error=repr(e), during="room_bytes")
            return
        core = self.bpa
        core.cfg.max_bytes = None if room is None else core.held_bytes + room
        full = room is not None and room < FULL_BELOW_BYTES
        if full != self._full:
            self._full = full
            self.agent.log("store_full" if full else "store_space", room_bytes=room,
                           held_bytes=self.store.held_bytes,
                           fs_free_bytes=self.store.fs_free_bytes())

    def _core_error(self, ev: Any, e: Exception) -> list:
        """A core bug must not leave a CL or an app waiting: log it, refuse the event."""
        self.agent.log("core_error", on=type(ev).__name__, error=repr(e))
        return [bpa.Refuse(None, 0, f"internal error: {e!r}")]

    def _execute(self, batch: list[tuple[list, Any]], events: list[Any] | None = None) -> None:
        """The batch's store writes, the commit, then what may only follow it (acks,
        forwards, deliveries). With ``disk`` durability the commit (its fsyncs) runs in a
        thread: the loop goes on reading sockets and apps meanwhile, and the events that
        arrive wait for the commit's end to form the next batch (pipelined group commit)."""
        try:
            later = self._store_actions(batch)
            # (a batch that wrote nothing, e.g. a tick or acks only, commits in the loop:
            # nothing to sync, so no thread round trip)
            if self._commit_pool is not None and self.store.dirty():
                self._committing = True
                loop = asyncio.get_event_loop()
                fut = self._commit_pool.submit(self.store.commit)
                self._commit_inflight = (fut, batch, later, events)
                fut.add_done_callback(
                    lambda f: loop.call_soon_threadsafe(self._committed, f))
                return
            self.store.commit()  # durable before any ack, forward or delivery
        except Exception as e:  # e.g. disk full: nothing is acknowledged as stored
            self._store_failed(batch, e, events)
            return
        self._after_commit(batch, later)

    def _committed(self, fut: Any) -> None:
        """The commit thread finished (in the loop): answer its batch, then the next."""
        inflight = self._commit_inflight
        if inflight is None or inflight[0] is not fut:
            return  # (close() finished it already)
        self._commit_inflight = None
        self._committing = False
        _, batch, later, events = inflight
        e = fut.exception()
        if e is not None:
            self._store_failed(batch, e, events)
        else:
            self._after_commit(batch, later)
        if self._purge_due:
            self._purge_due = False
            self._purge_now()
        if self._reload_due and self._reload_timer is None:
            self._reload()  # (it waited for this commit; with a timer set, the timer does it)
        if self._events:
            self._flush()

    def _store_failed(self, batch: list[tuple[list, Any]], e: BaseException,
                      events: list[Any] | None = None) -> None:
        self.agent.log("store_error", error=repr(e), events=len(batch))
        self._notes = []
        # What already happened (sent, acknowledged by an app) is replayed on the
        # reloaded core, ahead of newer events: lost, it would deliver bundles again.
        replay = [(ev, None) for ev in events or () if type(ev) in _REPLAYED]
        if replay:
            self._events[:0] = replay
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
        backoff = self._backoff
        for a in later:
            if type(a) is bpa.Forward:
                b = backoff.get(a.neighbour) if backoff else None
                if b is not None and a.bundle_id != b.probe:
                    b.held[a.bundle_id] = None  # its store is full: wait for the probe
                    continue
                self.agent.enqueue(a.neighbour, a.bundle_id, a.data)
            else:
                self._deliver(a.bundle_id, a.endpoint, a.bundle)
        self._flush_channels()

    def _flush_channels(self) -> None:
        """Send what the TCPCL sessions have buffered (acks, segments, keepalives)."""
        for ch in list(self.agent.channels):
            if isinstance(ch, TcpclChannel):
                ch.flush()

    def _store_actions(self, batch: list[tuple[list, Any]]) -> list[Any]:
        """Apply the batch's store writes (the caller commits); return the Forward/Deliver
        actions, which may only start after the commit."""
        store = self.store
        rows: list[tuple] = []
        drops: list[tuple[str, BundleState]] = []  # held -> tombstone, one executemany
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
                if t is set_state_t and a.state not in HELD_STATES:
                    drops.append((a.bundle_id, a.state))
                    continue
                if (rows or drops) and t in (bpa.SetState, bpa.Delete):
                    store.add_many(rows)
                    store.drop_many(drops)
                    rows, drops = [], []
                if t is bpa.SetState:
                    store.set_state(a.bundle_id, a.state)
                elif t is bpa.Delete:
                    store.set_state(a.bundle_id, BundleState.DELETED, reason=a.reason)
                    self.expired += a.reason == Reason.LIFETIME_EXPIRED
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
                    log(a.event, bundle=a.bundle_id, reason=a.reason, message=a.message)
                elif t is bpa.Note:
                    log(a.event, bundle=a.bundle_id, message=a.message)
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
        delay_s = max(0.0, (at_ms - self.now_ms()) / 1000.0 / self.agent.clock.scale_now())
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
        if neighbour in self._backoff:
            self._resume(neighbour)
        self.submit(bpa.TransmissionDone(key, neighbour or "", self.now_ms()))

    def transmitted_many(self, keys: list[str], neighbour: str | None) -> None:
        if neighbour in self._backoff:
            self._resume(neighbour)
        now, nb, done = self.now_ms(), neighbour or "", bpa.TransmissionDone
        self._events.extend((done(k, nb, now), None) for k in keys)
        self.submit_pending()

    def transmit_failed(self, key: str, neighbour: str | None, reason: str) -> None:
        if neighbour and reason == NO_RESOURCES:
            self._hold_back(neighbour, key)
            return
        self.submit(bpa.TransmissionFailed(key, neighbour or "", self.now_ms(), reason))

    def contact_started(self, neighbour: str) -> None:
        self.submit(bpa.ContactUp(neighbour, self.now_ms()))

    def link_limit(self, neighbour: str, max_bytes: int | None) -> None:
        """The largest bundle ``neighbour`` takes in one transfer (its TCPCL transfer
        MRU): larger ones go to it in fragments. Kept here so a reloaded core knows it."""
        if self._link_limits.get(neighbour) == max_bytes:
            return
        if max_bytes is None:
            del self._link_limits[neighbour]
        else:
            self._link_limits[neighbour] = max_bytes
        self.submit(bpa.LinkLimit(neighbour, max_bytes, self.now_ms()))

    def contact_ended(self, neighbour: str) -> None:
        if neighbour in self._backoff:
            self._resume(neighbour, why="contact_ended")  # (routed elsewhere, or later)
        self.submit(bpa.ContactDown(neighbour, self.now_ms()))

    # --- a neighbour whose store is full ------------------------------------------------

    def _hold_back(self, neighbour: str, key: str) -> None:
        """``neighbour`` refused bundle ``key`` for lack of resources: hold it, and the
        bundles routed to that neighbour after it, until a probe gets through (one bundle
        per back-off period), instead of having each refused again every retry."""
        b = self._backoff.get(neighbour)
        if b is None:
            b = self._backoff[neighbour] = _Backoff()
            self.agent.log("neighbour_full", neighbour=neighbour, retry_in_s=b.delay_s)
            b.timer = asyncio.get_event_loop().call_later(b.delay_s, self._probe, neighbour)
        if b.probe == key:
            b.probe = None
        b.held[key] = None

    def _probe(self, neighbour: str) -> None:
        """The back-off period is over: one held bundle goes back to routing (it is
        refused again, or gets through and ends the back-off); the next period is twice
        as long."""
        b = self._backoff.get(neighbour)
        if b is None:
            return
        b.timer = None
        if not b.held and b.probe is None:
            self._resume(neighbour)
            return
        if b.held:
            key = next(iter(b.held))
            del b.held[key]
            b.probe = key
            self.submit(bpa.TransmissionFailed(key, neighbour, self.now_ms(), "probe"))
        b.delay_s = min(2 * b.delay_s, BACKOFF_MAX_S)
        b.timer = asyncio.get_event_loop().call_later(b.delay_s, self._probe, neighbour)

    def _resume(self, neighbour: str, why: str = "accepted") -> None:
        """The neighbour took a bundle (or its contact ended): the held bundles go back
        to routing."""
        b = self._backoff.pop(neighbour, None)
        if b is None:
            return
        if b.timer is not None:
            b.timer.cancel()
        now, failed = self.now_ms(), bpa.TransmissionFailed
        self._events.extend((failed(k, neighbour, now, "back-off over"), None) for k in b.held)
        self.submit_pending()
        self.agent.log("neighbour_resumed", neighbour=neighbour, why=why, held=len(b.held))

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

    def _check_reserved(self, conn: AppConnection, endpoint: str, doing: str) -> None:
        """An endpoint reserved for a user (``reserved_endpoints``) is that user's alone:
        another app may neither register it nor send from it."""
        owner = self.agent.cfg.reserved_endpoints.get(endpoint)
        if owner is not None and conn.uid is not None and conn.uid != owner:
            raise InputError(f"endpoint {endpoint} is reserved for uid {owner}; this app "
                             f"runs as uid {conn.uid} and may not {doing} it",
                             field="endpoint")

    def _app_register(self, conn: AppConnection, req: dict) -> dict:
        ep = self._local_endpoint(req["endpoint"])
        self._check_reserved(conn, ep, "register")
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
        sink = self.sinks.get(ep)
        if sink is not None:
            sink(bid, bundle)
            return
        for c, pushed in self.pushed.items():  # (a reloaded core delivers its bundles again)
            if bid in pushed and not c.closed:
                return
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
        ids = req["ids"]
        if type(ids) is not list:  # (a string would be taken letter by letter)
            raise InputError(f"ids must be a list of bundle IDs, got {type(ids).__name__}",
                             field="ids")
        pushed = self.pushed.get(conn, {})
        now, delivered = self.now_ms(), bpa.AppDelivered
        self._events.extend((delivered(bid, now), None) for bid in ids
                            if type(bid) is str and pushed.pop(bid, None) is not None)
        self.submit_pending()
        return {}

    def _default_source(self, conn: AppConnection) -> str:
        return (sorted(conn.endpoints)[0] if conn.endpoints
                else f"ipn:{self.agent.cfg.ipn}.0")

    def _send_event(self, conn: AppConnection, item: dict, now: int,
                    default_src: str | None = None) -> Any:
        src = item.get("src") or default_src or self._default_source(conn)
        if self.agent.cfg.reserved_endpoints:
            self._check_reserved(conn, self._local_endpoint(src), "send from")
        lifetime_s = check_lifetime(item.get("lifetime_s", self.agent.cfg.default_lifetime_s))
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
                       "held_bytes": self.store.held_bytes, "tombstones_purged": self.purged,
                       "full": self._full, "reserve_released": self.store.reserve_released}
        st["backed_off"] = {nb: {"held": len(b.held), "probe_every_s": b.delay_s}
                            for nb, b in self._backoff.items()}
        st["apps"] = {ep: len(c) for ep, c in self.endpoints.items()}
        st["waiting_for_app"] = {ep: len(w) for ep, w in self.waiting.items() if w}
        return st

    def _app_watch(self, conn: AppConnection, req: dict) -> dict:
        conn.watching = True
        self.agent.log.watchers.add(conn)
        return {}
