"""The bundle protocol agent's core (RFC 9171 section 5) as a pure state machine.

Events go in (:meth:`BundleAgent.handle`), actions come out; no sockets, no clock, no
disk. The asyncio agent feeds it real convergence layers, the wall clock and a
:class:`~netemu.agent.store.BundleStore`; tests and a simulator feed it a virtual clock.

The shell's contract, per list of actions returned by one or more events:

1. execute :class:`Store` / :class:`SetState` / :class:`Delete` against the store, then
   ``store.commit()`` (group commit: many events, one commit);
2. only then answer the convergence layer (:class:`Accept` = acknowledge the transfer,
   :class:`Refuse` = refuse it) and start :class:`Forward` / :class:`Deliver`;
3. report back :class:`TransmissionDone` / :class:`TransmissionFailed` for each Forward
   and :class:`AppDelivered` when the application has taken a bundle;
4. make sure a :class:`Tick` arrives by each :class:`ScheduleRetry` time (and now and then
   anyway: ticks expire bundles).

Times are DTN time in ms (``now_ms`` on every event). The router is asked in scenario
seconds: ``(now_ms - plan_epoch_ms) / 1000``.
"""

from __future__ import annotations

import gc
import heapq
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from netemu.dtn import cbor
from netemu.dtn.bpsec import SecurityPolicy, bcb_decrypt
from netemu.dtn.bundle import (
    BLOCK_BCB,
    BLOCK_BIB,
    BLOCK_BUNDLE_AGE,
    BLOCK_HOP_COUNT,
    BLOCK_PAYLOAD,
    BLOCK_PREVIOUS_NODE,
    BlockFlags,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    crc_type_of,
    datetime_to_dtn_ms,
    decode_bundle,
)
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError
from netemu.dtn.fragment import Completed, FragmentError, Reassembler, fragment, whole_id
from netemu.dtn.state import HELD_STATES, BundleState, StoredBundle
from netemu.dtn.status import Reason, make_report
from netemu.dtn.template import OriginTemplate
from netemu.errors import InputError
from netemu.routing.base import BundleInfo, Decision, Metadata, Router

# netemu-private extensions (docs/dtn-bundles.md, "netemu extensions"):
#: Extension block carrying spray-and-wait copy rights: block-type-specific data is one
#: CBOR unsigned integer (the copies the receiver may spread). Type 192 is in RFC 9171's
#: experimental range (192-255); the block goes with "discard if unprocessed" so other
#: implementations drop it rather than forward a stale count.
BLOCK_COPIES = 192
#: Administrative record type of router metadata (PRoPHET predictabilities, summary
#: vectors) that an agent sends its neighbour at each contact start: the record content
#: is a CBOR text string holding JSON. Sent as an ADMIN_RECORD bundle from ipn:N.0 to the
#: neighbour's ipn:M.0, never stored, never delivered to applications.
RECORD_ROUTER_METADATA = 0xFF00
METADATA_LIFETIME_MS = 60_000
#: How long after a contact start bundles wait for the neighbour's metadata (a peer that
#: is not netemu sends none); routers without metadata never wait.
METADATA_WAIT_MS = 1_000

_REPORT_FLAG = {"received": BundleFlags.REPORT_RECEPTION.value,
                "forwarded": BundleFlags.REPORT_FORWARDING.value,
                "delivered": BundleFlags.REPORT_DELIVERY.value,
                "deleted": BundleFlags.REPORT_DELETION.value}
_ADMIN_FLAG = BundleFlags.ADMIN_RECORD.value
_FRAGMENT_FLAGS = BundleFlags.IS_FRAGMENT.value | BundleFlags.MUST_NOT_FRAGMENT.value
#: Room left in a fragment for what the bundle gains on its way out (previous node block,
#: a longer age or hop count).
_OUTBOUND_SLACK = 64
_DTN_NONE = EID.parse("dtn:none")
_KNOWN_BLOCKS = {BLOCK_PAYLOAD, BLOCK_PREVIOUS_NODE, BLOCK_BUNDLE_AGE, BLOCK_HOP_COUNT,
                 BLOCK_BIB, BLOCK_BCB, BLOCK_COPIES}
#: Known blocks that need nothing at reception (no age, no hop count to read).
_PLAIN_BLOCKS = _KNOWN_BLOCKS - {BLOCK_BUNDLE_AGE, BLOCK_HOP_COUNT}


# --- events ------------------------------------------------------------------------------

@dataclass(slots=True)
class BundleReceived:
    """A convergence layer received ``data`` from ``neighbour`` (a plan node name)."""

    data: bytes
    neighbour: str | None
    now_ms: int


@dataclass(slots=True)
class AppSend:
    """A local application sends ``payload`` from its endpoint ``source``."""

    source: EID | str
    destination: EID | str
    payload: bytes
    lifetime_ms: int
    now_ms: int
    flags: int = 0
    report_to: EID | str | None = None
    hop_limit: int | None = None


_BATCHED = (AppSend, BundleReceived)
"""Events whose bundles :meth:`BundleAgent.handle_many` routes together (a stretch)."""


@dataclass(slots=True)
class AppDelivered:
    """The application has taken (and acknowledged) local bundle ``bundle_id``."""

    bundle_id: str
    now_ms: int


@dataclass(slots=True)
class ContactUp:
    neighbour: str
    now_ms: int


@dataclass(slots=True)
class ContactDown:
    neighbour: str
    now_ms: int


@dataclass(slots=True)
class TransmissionDone:
    """The convergence layer to ``neighbour`` acknowledged the whole bundle."""

    bundle_id: str
    neighbour: str
    now_ms: int


@dataclass(slots=True)
class TransmissionFailed:
    """Sending to ``neighbour`` failed or was refused (it will be retried)."""

    bundle_id: str
    neighbour: str
    now_ms: int
    reason: str = ""


@dataclass(slots=True)
class Tick:
    """Time passes: expire bundles, retry waiting ones."""

    now_ms: int


@dataclass(slots=True)
class LinkLimit:
    """The largest bundle ``neighbour`` takes in one transfer (a TCPCL peer's transfer
    MRU from its SESS_INIT); None: no limit known. Bundles larger than that are split
    into fragments before they go to it (RFC 9171 section 5.8)."""

    neighbour: str
    max_bytes: int | None
    now_ms: int


Event = (BundleReceived | AppSend | AppDelivered | ContactUp | ContactDown | TransmissionDone
         | TransmissionFailed | Tick | LinkLimit)


# --- actions -----------------------------------------------------------------------------

@dataclass(slots=True)
class Accept:
    """Acknowledge the transfer / app send of ``bundle_id`` (after the store commit).
    ``duplicate``: it was known already and was dropped (still acknowledged)."""

    bundle_id: str
    duplicate: bool = False


@dataclass(slots=True)
class Refuse:
    """Refuse a received bundle or an app send (``reason`` is a status report code).
    ``event``: the name the shell logs it under."""

    bundle_id: str | None
    reason: int
    message: str
    event: str = "bundle_refused"


StoreRow = tuple[str, bytes, str, int, int, BundleState, int, str | None]
"""A bundle as the store's ``add_many`` takes it: id, bytes, destination, expiry (ms),
received (ms), state, age at receipt (ms), previous hop."""


@dataclass(slots=True)
class Store:
    """Write a bundle to the store (arguments of :meth:`BundleStore.add`)."""

    bundle_id: str
    data: bytes
    destination: str
    expiry_ms: int
    received_ms: int
    state: BundleState
    age_at_receipt_ms: int = 0
    previous_hop: str | None = None

    def row(self) -> StoreRow:
        """The row for :meth:`BundleStore.add_many`."""
        return (self.bundle_id, self.data, self.destination, self.expiry_ms,
                self.received_ms, self.state, self.age_at_receipt_ms, self.previous_hop)


@dataclass(slots=True)
class SetState:
    """Move a stored bundle to ``state`` (FORWARDED, DELIVERED: the bytes are dropped)."""

    bundle_id: str
    state: BundleState


@dataclass(slots=True)
class Delete:
    """The bundle is deleted (store: state DELETED); log ``message``."""

    bundle_id: str
    reason: int
    message: str


@dataclass(slots=True)
class Forward:
    """Send ``data`` (the bundle with updated previous node / age / hop count) to
    ``neighbour``; answer with TransmissionDone or TransmissionFailed."""

    bundle_id: str
    neighbour: str
    data: bytes
    route: tuple[str, ...] = ()


@dataclass(slots=True)
class Deliver:
    """Hand ``bundle`` to the application registered at ``endpoint`` (or keep it until
    one registers); answer with AppDelivered once it is taken."""

    bundle_id: str
    endpoint: str
    bundle: Bundle


@dataclass(slots=True)
class StatusReportSent:
    """For logs: a status report about ``subject_id`` was generated (the report bundle
    itself travels through the usual Store / Forward / Deliver actions)."""

    subject_id: str
    status: str
    reason: int
    report_id: str


@dataclass(slots=True)
class BundleEvent:
    """For telemetry (``bundle/<node>`` events, docs/dtn-agent.md): something happened to
    a bundle at this node. Only emitted with ``CoreConfig.bundle_events``; never for
    administrative records (status reports), so delivery figures count user bundles.

    ``event``: received | sent (originated by a local app) | forwarded (the CL to
    ``next_hop`` acknowledged it) | delivered (the app took it) | deleted | expired."""

    event: str
    bundle_id: str
    source: str
    destination: str
    size_bytes: int
    next_hop: str | None = None
    reason: str | None = None


@dataclass(slots=True)
class Note:
    """For logs: ``event`` happened to ``bundle_id`` (bundle_fragmented,
    bundle_reassembled, fragmentation_refused); ``message`` says what and why."""

    event: str
    bundle_id: str
    message: str


@dataclass(slots=True)
class ScheduleRetry:
    """Send a Tick no later than ``at_ms``."""

    at_ms: int


Action = (Accept | Refuse | Store | SetState | Delete | Forward | Deliver | StatusReportSent
          | ScheduleRetry | BundleEvent | Note)


# --- configuration -----------------------------------------------------------------------

@dataclass
class CoreConfig:
    """The settings of one node's core (:class:`BundleAgent`); the agent process's own
    configuration (sockets, store, neighbours) is :class:`netemu.agent.config.AgentConfig`.

    ``node_id``: the node ID (``ipn:N.0`` or ``dtn://name/``); ``node_name``: the node's
    name in the contact plan; ``plan_epoch_ms``: DTN time of the plan epoch;
    ``node_of``: EID -> plan node name (default: ipn numbers through the router's plan,
    dtn node names as they are); ``max_bytes`` / ``max_bundles``: store quota;
    ``retry_ms``: how long to wait before retrying a failed transmission;
    ``reroute_ms``: how often to ask the router again about bundles it had no next hop for
    (they are asked at every contact start too); ``status_reports``: False pares all status reports;
    ``bundle_events``: emit :class:`BundleEvent` actions (telemetry);
    ``reassembly_max_bytes``: the most bytes that fragments of bundles not yet complete
    may hold here together (None: no cap); ``min_fragment_bytes``: the smallest fragment
    this node makes when it splits a bundle for a contact's volume (proactive; bundles
    smaller than twice this wait for a contact that takes them whole).
    """

    node_id: EID
    node_name: str
    plan_epoch_ms: int = 0
    node_of: Callable[[EID], str | None] | None = None
    max_bytes: int | None = None
    max_bundles: int | None = None
    policy: SecurityPolicy | None = None
    status_reports: bool = True
    status_lifetime_ms: int = 3_600_000
    retry_ms: int = 1_000
    reroute_ms: int = 5_000
    crc: str = "crc32c"
    bundle_events: bool = False
    reassembly_max_bytes: int | None = 64 * 1024 * 1024
    min_fragment_bytes: int = 64 * 1024


@dataclass(slots=True)
class _Held:
    bundle: Bundle
    info: BundleInfo | None  # built when a router first needs it (local bundles: never)
    state: BundleState
    received_ms: int
    age_at_receipt_ms: int
    expiry_ms: int
    size: int
    previous_hop: str | None = None
    keep: bool = False
    in_flight: set[str] = field(default_factory=set)
    sent_to: set[str] = field(default_factory=set)
    waiting: bool = True
    # A bundle created here: its bytes as they go out (previous node = this node), kept
    # from admission until its first routing so it is encoded once, not twice.
    wire: bytes | None = None
    bid: str = ""  # the bundle's ID, computed once (Bundle.id builds it on each call)
    noted: bool = False  # "cannot be fragmented" logged already


class BundleAgent:
    """The agent core of one node. See the module docstring for the shell's contract."""

    def __init__(self, config: CoreConfig, router: Router) -> None:
        self.cfg = config
        self.router = router
        self._router_delivered = type(router).delivered is not Router.delivered
        self.node_id = config.node_id.node_id()
        self.neighbours: set[str] = set()
        self.held: dict[str, _Held] = {}
        self.known: dict[str, int] = {}       # every bundle ID seen -> expiry (dedupe)
        self._expiry: list[tuple[int, str]] = []
        self.held_bytes = 0
        self._seq = 0
        self._retry_at: int | None = None
        # each handler takes its own event type: keyed by that type, so Any here
        self._handlers: dict[type, Callable[[Any, list[Action]], None]] = {
            BundleReceived: self._received, AppSend: self._app_send,
            TransmissionDone: self._done, TransmissionFailed: self._failed,
            AppDelivered: self._app_delivered}
        self._ipn_plan: object = None
        self._ipn_names: dict[int, str] = {}
        self.counters = {"received": 0, "duplicates": 0, "forwarded": 0, "delivered": 0,
                         "deleted": 0, "refused": 0, "originated": 0, "metadata_sent": 0,
                         "metadata_received": 0, "fragmented": 0, "reassembled": 0}
        self.reassembly = Reassembler(config.reassembly_max_bytes)
        self.link_limits: dict[str, int] = {}  # neighbour -> largest bundle it takes
        self._least_limit = 1 << 64  # the smallest of them
        # router metadata that arrived before the core saw that neighbour's ContactUp
        self._early_metadata: dict[str, tuple[Metadata, int]] = {}
        # neighbour -> DTN time until which routing waits for its metadata
        self._awaiting_md: dict[str, int] = {}
        self._ready: frozenset[str] = frozenset()  # neighbours routing may use now
        # While handle_many runs a stretch of AppSend events: the bundles they admitted,
        # waiting to be routed together (held, its event's action list), and their time.
        self._batch: list[tuple[_Held, list[Action]]] | None = None
        self._batch_ms = 0
        self._router_names: dict[EID, str] = {}
        self._templates: dict[tuple[object, ...], OriginTemplate] = {}
        self._router_names_plan: object = None

    @classmethod
    def for_plan_node(cls, node_name: str, router: Router, **config: object) -> BundleAgent:
        """The core of plan node ``node_name``: node ID ``ipn:<its ipn>.0`` and the plan's
        epoch as router time 0 (``router.plan``); ``config`` sets other CoreConfig
        fields (``max_bytes=...``, ``policy=...``)."""
        plan = router.plan
        node = plan.nodes.get(node_name)
        if node is None:
            raise InputError(f"node {node_name!r} is not in the contact plan "
                             f"(nodes: {', '.join(sorted(plan.nodes)) or 'none'})",
                             field="node")
        cfg = CoreConfig(EID.ipn(node.ipn, 0), node_name,
                         plan_epoch_ms=datetime_to_dtn_ms(plan.epoch), **config)  # type: ignore[arg-type]
        return cls(cfg, router)

    # --- helpers --------------------------------------------------------------------
    def node_of(self, eid: EID) -> str | None:
        """The contact-plan node name of an endpoint (None if unknown)."""
        if self.cfg.node_of is not None:
            return self.cfg.node_of(eid)
        if self.is_local(eid):
            return self.cfg.node_name
        n = eid.node_number
        if n is not None:
            plan = self.router.plan
            if self._ipn_plan is not plan:  # (re)build the index when the plan changes
                self._ipn_names = {node.ipn: node.name for node in plan.nodes.values()}
                self._ipn_plan = plan
            return self._ipn_names.get(n)
        return eid.node_name or None

    def is_local(self, eid: EID) -> bool:
        if eid.scheme == 2 and self.node_id.scheme == 2:  # fast path: ipn node numbers
            return eid.ssp[0] == self.node_id.ssp[0]  # type: ignore[index]
        return eid.node_id() == self.node_id

    def _now_s(self, now_ms: int) -> float:
        return (now_ms - self.cfg.plan_epoch_ms) / 1000.0

    def _router_name(self, eid: EID) -> str:
        """The node name the router is told for ``eid``: its plan node, else its node ID.
        Cached per EID (EIDs are interned by ``EID.parse``) while the plan stays."""
        names = self._router_names
        if self._router_names_plan is not self.router.plan:
            names.clear()
            self._router_names_plan = self.router.plan
        name = names.get(eid)
        if name is None:
            name = self.node_of(eid) or str(eid.node_id())
            if self.cfg.node_of is None and len(names) < 4096:
                names[eid] = name
        return name

    def _info(self, b: Bundle, size: int, expiry_ms: int, previous_hop: str | None,
              bid: str | None = None) -> BundleInfo:
        p = b.primary
        names = self._router_names
        if self._router_names_plan is self.router.plan:  # (else _router_name resets it)
            src, dst = names.get(p.source), names.get(p.destination)
        else:
            src = dst = None
        return BundleInfo(
            bid or b.id, src or self._router_name(p.source),
            dst or self._router_name(p.destination), size, 1,
            (expiry_ms - self.cfg.plan_epoch_ms) / 1000.0, previous_hop, copies_of(b))

    # --- router metadata (netemu-private administrative record) --------------------
    def _send_metadata(self, nb: str, now: int, out: list[Action]) -> None:
        md = self.router.metadata_for(nb, self._now_s(now))
        node = self.router.plan.nodes.get(nb)
        if md is None or node is None or self.node_id.scheme != 2:
            return
        record = cbor.head(4, 2) + cbor.uint(RECORD_ROUTER_METADATA) + cbor.dumps(
            json.dumps(md, separators=(",", ":"), default=str))
        b = Bundle.new(self.node_id, EID.ipn(node.ipn, 0), record,
                       lifetime_ms=METADATA_LIFETIME_MS, creation_ms=now,
                       seq=self._next_seq(), crc=self.cfg.crc,
                       flags=BundleFlags.ADMIN_RECORD.value)
        if self.cfg.policy is not None:
            self.cfg.policy.apply_outbound(b)
        self.counters["metadata_sent"] += 1
        self._awaiting_md[nb] = now + METADATA_WAIT_MS
        self._schedule(now + METADATA_WAIT_MS, out)
        # Not stored: a lost metadata bundle is simply sent again at the next contact.
        out.append(Forward(b.id, nb, b.encode()))

    def _metadata_record(self, b: Bundle) -> Metadata | None:
        """The router metadata of a netemu metadata record addressed here, else None."""
        data = b.payload
        if len(data) < 4 or data[0] != 0x82 or data[1:4] != b"\x19\xff\x00":
            return None
        try:
            text = cbor.loads(data)[1]  # type: ignore[index]
            md = json.loads(text)
        except (BundleError, ValueError, TypeError, IndexError):
            return None
        return md if isinstance(md, dict) else None

    def _info_of(self, h: _Held) -> BundleInfo:
        if h.info is None:
            h.info = self._info(h.bundle, h.size, h.expiry_ms, h.previous_hop, h.bid)
        return h.info

    def _fits(self, size: int) -> bool:
        if self.cfg.max_bytes is not None and self.held_bytes + size > self.cfg.max_bytes:
            return False
        return self.cfg.max_bundles is None or len(self.held) < self.cfg.max_bundles

    def _remember(self, bundle_id: str, expiry_ms: int) -> None:
        self.known[bundle_id] = expiry_ms
        heapq.heappush(self._expiry, (expiry_ms, bundle_id))

    def _next_seq(self) -> int:
        s = self._seq
        self._seq += 1
        return s

    def _drop(self, h: _Held) -> None:
        if self.held.pop(h.bid, None) is not None:
            self.held_bytes -= h.size
            if h.state == BundleState.FRAGMENT:
                self.reassembly.discard(h.bid)

    def _report(self, subject: Bundle, status: str, reason: int, now_ms: int,
                out: list[Action], force: bool = False) -> None:
        if not self.cfg.status_reports:
            return
        if not force and not subject.primary.flags & _REPORT_FLAG[status]:
            return  # cheap exit: most bundles ask for no reports
        rb = make_report(subject, status, reason=reason, node_id=self.node_id, now_ms=now_ms,
                         seq=self._next_seq(), lifetime_ms=self.cfg.status_lifetime_ms,
                         force=force, crc=self.cfg.crc)
        if rb is None:
            return
        out.append(StatusReportSent(subject.id, status, int(reason), rb.id))
        self._admit_local(rb, now_ms, out, bypass_quota=True)

    def _event(self, kind: str, b: Bundle, size: int, out: list[Action], next_hop: str | None = None,
               reason: int | None = None) -> None:
        if not self.cfg.bundle_events or b.primary.flags & _ADMIN_FLAG:
            return
        out.append(BundleEvent(kind, b.id, eid_text(b.source), eid_text(b.destination), size,
                               next_hop,
                               _reason_name(reason) if reason is not None else None))

    def _delete(self, b: Bundle, reason: int, message: str, now_ms: int, out: list[Action],
                h: _Held | None = None, size: int = 0) -> None:
        if h is not None:
            self._drop(h)
            size = h.size
        self.counters["deleted"] += 1
        out.append(Delete(b.id, int(reason), message))
        if self.cfg.bundle_events:
            self._event("expired" if reason == Reason.LIFETIME_EXPIRED else "deleted", b, size,
                        out, reason=reason)
        self._report(b, "deleted", reason, now_ms, out)

    # --- the event loop -------------------------------------------------------------
    def handle(self, event: Event) -> list[Action]:
        """Process one event; return the actions for the shell, in order."""
        out: list[Action] = []
        fast = self._handlers.get(type(event))
        if fast is not None:
            fast(event, out)
        elif isinstance(event, ContactUp):
            nb, now = event.neighbour, event.now_ms
            self.neighbours.add(nb)
            self._update_ready()
            self.router.contact_started(nb, self._now_s(now))
            self._send_metadata(nb, now, out)
            early = self._early_metadata.pop(nb, None)
            if early is not None:
                self.router.metadata_from(nb, early[0], self._now_s(now))
                self._awaiting_md.pop(nb, None)
            self._update_ready()
            self._route_waiting(now, out)
        elif isinstance(event, ContactDown):
            self.neighbours.discard(event.neighbour)
            self._awaiting_md.pop(event.neighbour, None)
            self._update_ready()
            self.router.contact_ended(event.neighbour, self._now_s(event.now_ms))
        elif isinstance(event, Tick):
            self._tick(event.now_ms, out)
        elif isinstance(event, LinkLimit):
            if event.max_bytes is None:
                self.link_limits.pop(event.neighbour, None)
            else:
                self.link_limits[event.neighbour] = event.max_bytes
            self._least_limit = min(self.link_limits.values(), default=1 << 64)
        else:
            raise TypeError(f"unknown event {event!r}")
        return out

    def handle_many(self, events: Iterable[Event],
                    on_error: Callable[[Event, Exception], list[Action]] | None = None
                    ) -> list[list[Action]]:
        """:meth:`handle` for each event in turn; one action list per event.

        Why: bundles that applications send or that neighbours hand over in a row (a
        stretch of :class:`AppSend` and :class:`BundleReceived` events at one time: a
        burst) are routed together, with one ``router.route_many`` call, after the
        stretch; their Forward actions come at the end of their events' lists. Any other
        event, and a received metadata record (it changes what the router knows), first
        routes the stretch so far, so it sees the same state as with :meth:`handle`. ``on_error``: turns an exception while handling one event into
        that event's actions and goes on (None: the exception propagates)."""
        outs: list[list[Action]] = []
        handle = self.handle
        try:
            for ev in events:
                batch = self._batch
                if type(ev) in _BATCHED:
                    if batch is None or (batch and ev.now_ms != self._batch_ms):
                        self._route_batch()
                        self._batch = []
                    self._batch_ms = ev.now_ms
                elif batch is not None:
                    self._route_batch()
                if on_error is None:
                    outs.append(handle(ev))
                    continue
                try:
                    outs.append(handle(ev))
                except Exception as e:  # noqa: BLE001 - the shell decides (logs, refuses)
                    outs.append(on_error(ev, e))
        finally:
            self._route_batch()
        return outs

    def _route_batch(self) -> None:
        """Route the bundles of the stretch (see :meth:`handle_many`)."""
        batch, self._batch = self._batch, None
        if not batch:
            return
        now = self._batch_ms
        todo = [(h, out) for h, out in batch if not h.in_flight]
        if not todo:
            return
        if len(todo) == 1:
            self._route(todo[0][0], now, todo[0][1])
            return
        ready = self._ready
        decisions = self.router.route_many([self._info_of(h) for h, _ in todo],
                                           self._now_s(now), ready)
        for (h, out), decision in zip(todo, decisions, strict=True):
            self._apply(h, decision, ready, now, out)

    def _received(self, ev: BundleReceived, out: list[Action]) -> None:
        now = ev.now_ms
        try:
            b = decode_bundle(ev.data)
        except BundleError as e:
            self.counters["refused"] += 1
            out.append(Refuse(None, Reason.BLOCK_UNINTELLIGIBLE, str(e)))
            return
        bid = b.id
        if b.primary.flags & _ADMIN_FLAG and self.is_local(b.destination):
            md = self._metadata_record(b)
            if md is not None:
                self._metadata_received(b, md, ev, out)
                return
        if bid in self.known:
            self.counters["duplicates"] += 1
            out.append(Accept(bid, duplicate=True))
            return
        p = b.primary
        if p.flags & _FRAGMENT_FLAGS == _FRAGMENT_FLAGS:
            self.counters["refused"] += 1
            out.append(Refuse(bid, Reason.BLOCK_UNINTELLIGIBLE,
                              f"{bid} is a fragment of a bundle flagged must-not-fragment"))
            return
        self.counters["received"] += 1
        changed = False
        for blk in b.blocks:  # the common case: no age, hop count or unknown block
            if blk.type not in _PLAIN_BLOCKS:
                break
        else:
            p = b.primary
            self._received_checked(b, ev, bid, 0, (p.creation_ms + p.lifetime_ms
                                                   if p.creation_ms else now + p.lifetime_ms),
                                   None, changed, out)
            return
        age0 = b.bundle_age_ms or 0
        expiry = b.expiry_ms(received_ms=now, age_at_receipt_ms=age0)
        # Unknown blocks: obey their processing flags (RFC 9171 section 4.2.4; 5.6 step 4).
        reported = False
        for blk in list(b.blocks):
            if blk.type in _KNOWN_BLOCKS:
                continue
            if blk.flags & BlockFlags.REPORT_IF_UNPROCESSED and not reported:
                # a reception report "block unsupported" to the report-to endpoint, whatever
                # the bundle's own report flags (one per bundle, however many such blocks)
                reported = True
                self._report(b, "received", Reason.BLOCK_UNSUPPORTED, now, out, force=True)
            if blk.flags & BlockFlags.DELETE_IF_UNPROCESSED:
                self._remember(bid, expiry)
                out.append(Accept(bid))
                self._event("received", b, len(ev.data), out)
                self._delete(b, Reason.BLOCK_UNSUPPORTED,
                             f"block {blk.number} of unknown type {blk.type} asks for "
                             "deletion", now, out, size=len(ev.data))
                return
            if blk.flags & BlockFlags.DISCARD_IF_UNPROCESSED:
                b.remove_block(blk.number)
                changed = True
        self._received_checked(b, ev, bid, age0, expiry, b.hop_count, changed, out)

    def _received_checked(self, b: Bundle, ev: BundleReceived, bid: str, age0: int,
                          expiry: int, hop: tuple[int, int] | None, changed: bool,
                          out: list[Action]) -> None:
        """:meth:`_received` once the blocks are known: limits, policy, quota, admit."""
        now = ev.now_ms
        reason: int | None = None
        # A fragment for this node is checked against the security policy once its bundle
        # is whole (its BIB covers the whole payload).
        reassemble = bool(b.primary.flags & 1) and self.is_local(b.destination)
        if hop is not None and hop[1] > hop[0]:
            reason, msg = Reason.HOP_LIMIT_EXCEEDED, f"hop count {hop[1]} over limit {hop[0]}"
        elif expiry <= now:
            reason, msg = Reason.LIFETIME_EXPIRED, "lifetime expired before arrival"
        elif self.cfg.policy is not None and not reassemble:
            verdict = self.cfg.policy.check_inbound(b)
            if verdict is not None:
                reason, msg = verdict
        if reason is not None:
            self._remember(bid, expiry)
            out.append(Accept(bid))
            self._event("received", b, len(ev.data), out)
            self._delete(b, reason, msg, now, out, size=len(ev.data))
            return
        data = b.encode() if changed else ev.data
        if reassemble:
            if whole_id(b) in self.known:
                # the bundle was put together (or deleted) already: nothing to add
                self.counters["duplicates"] += 1
                self._remember(bid, expiry)
                out.append(Accept(bid, duplicate=True))
                return
            why = self.reassembly.refusal(b, len(data))
            if why is not None:
                self.counters["refused"] += 1
                out.append(Refuse(bid, why[0], why[1], event="reassembly_refused"))
                return
        if not self._fits(len(data)):
            self.counters["refused"] += 1
            out.append(Refuse(bid, Reason.DEPLETED_STORAGE,
                              f"store full ({self.held_bytes} bytes, {len(self.held)} "
                              f"bundles held): {bid} refused"))
            self._report(b, "deleted", Reason.DEPLETED_STORAGE, now, out, force=True)
            if self.cfg.bundle_events:
                self._event("received", b, len(data), out)
                self._event("deleted", b, len(data), out, reason=Reason.DEPLETED_STORAGE)
            return
        if len(self.reassembly) and not reassemble:
            # the whole bundle came while some of its fragments wait here: they are done
            for fid in self.reassembly.fragment_ids(bid):
                self._drop(self.held[fid])
                out.append(SetState(fid, BundleState.DELIVERED))
        h = self._admit(b, data, now, age0, expiry, ev.neighbour, out,
                        BundleState.FRAGMENT if reassemble else None)
        out.append(Accept(bid))
        if self.cfg.bundle_events:
            self._event("received", b, len(data), out)
        self._report(b, "received", Reason.NO_INFO, now, out)
        if reassemble:
            done = self.reassembly.add(b, bid, len(data))
            if done is not None:
                self._reassembled(done, now, out)
            return
        self._dispatch(h, now, out)

    def _reassembled(self, done: Completed, now: int, out: list[Action]) -> None:
        """Every byte of a bundle's ADU is here: its fragments become tombstones and the
        whole bundle is stored and delivered, in the one commit."""
        whole = done.bundle
        parts = [self.held[fid] for fid in done.fragment_ids if fid in self.held]
        first = next((h for h in parts if h.bundle.primary.fragment_offset == 0), parts[0])
        for h in parts:
            self._drop(h)
            out.append(SetState(h.bid, BundleState.DELIVERED))
        wid = whole.id
        data = whole.encode()
        self.counters["reassembled"] += 1
        out.append(Note("bundle_reassembled", wid,
                        f"{len(done.fragment_ids)} fragments, {len(whole.payload)} bytes of "
                        "payload"))
        if self.cfg.policy is not None:
            verdict = self.cfg.policy.check_inbound(whole)
            if verdict is not None:
                h = self._admit(whole, data, now, first.age_at_receipt_ms, first.expiry_ms,
                                first.previous_hop, out)
                self._delete(whole, verdict[0], verdict[1], now, out, h)
                return
        h = self._admit(whole, data, now, first.age_at_receipt_ms, first.expiry_ms,
                        first.previous_hop, out)
        self._dispatch(h, now, out)

    def _metadata_received(self, b: Bundle, md: Metadata, ev: BundleReceived, out: list[Action]) -> None:
        if self.cfg.policy is not None and self.cfg.policy.check_inbound(b) is not None:
            out.append(Accept(b.id))  # failed the node's security policy: ignored
            return
        nb = self.node_of(b.source) or ev.neighbour
        out.append(Accept(b.id))
        if nb is None:
            return
        self.counters["metadata_received"] += 1
        self._route_batch()  # the bundles before it are routed on what the router knew
        if nb not in self.neighbours:  # apply after the router has seen the contact start
            self._early_metadata[nb] = (md, ev.now_ms)
            return
        self.router.metadata_from(nb, md, self._now_s(ev.now_ms))
        self._awaiting_md.pop(nb, None)
        self._update_ready()
        self._route_waiting(ev.now_ms, out)  # what the neighbour lacks / can carry better

    def _update_ready(self) -> None:
        self._ready = frozenset(self.neighbours.difference(self._awaiting_md))

    def _admit(self, b: Bundle, data: bytes, now: int, age0: int, expiry: int,
               previous_hop: str | None, out: list[Action],
               state: BundleState | None = None) -> _Held:
        if state is None:
            state = BundleState.LOCAL if self.is_local(b.destination) else BundleState.PENDING
        bid = b.id
        h = _Held(b, None, state, now, age0, expiry, len(data), previous_hop, bid=bid)
        self.held[bid] = h
        self.held_bytes += len(data)
        self._remember(bid, expiry)
        out.append(Store(bid, data, eid_text(b.destination), expiry, now, state, age0,
                         previous_hop))
        return h

    def _admit_local(self, b: Bundle, now: int, out: list[Action], bypass_quota: bool = False,
                     wire: bytes | None = None) -> str | None:
        """Admit a bundle this node originates; None if the store is full. ``wire``: the
        bundle's bytes as they go out, when a template made it (see _template_for)."""
        if wire is not None:
            ready, data = True, wire
        else:
            if self.cfg.policy is not None:
                self.cfg.policy.apply_outbound(b)
            # Bound elsewhere and nothing to update per hop (no hop count, no age block):
            # store the bundle in the form it is sent in, previous node included, and send
            # those very bytes (what _outbound would produce, byte for byte).
            ready = (b.primary.creation_ms != 0 and not self.is_local(b.destination)
                     and b.block_by_type(BLOCK_HOP_COUNT) is None
                     and b.block_by_type(BLOCK_BUNDLE_AGE) is None)
            if ready:
                b.set_previous_node(self.node_id)
            data = b.encode()
        if not bypass_quota and not self._fits(len(data)):
            return None
        self.counters["originated"] += 1
        if wire is not None:  # creation time set, no age block
            h = self._admit(b, data, now, 0, b.primary.creation_ms + b.primary.lifetime_ms,
                            None, out)
        else:
            age0 = b.bundle_age_ms or 0
            h = self._admit(b, data, now, age0,
                            b.expiry_ms(received_ms=now, age_at_receipt_ms=age0), None, out)
        if ready:
            h.wire = data
        self._dispatch(h, now, out)
        return h.bid

    def _template_for(self, src: EID, ev: AppSend) -> OriginTemplate | None:
        """The template for ``ev``'s kind of bundle, if it goes elsewhere: the bundle
        _admit_local would store and send (previous node = this node, no hop count or age
        block, no security), made without block objects (netemu.dtn.template)."""
        key = (src, ev.destination, ev.report_to, ev.flags, ev.lifetime_ms)
        tmpl = self._templates.get(key)
        if tmpl is None:
            dst = ev.destination if isinstance(ev.destination, EID) else EID.parse(
                ev.destination)
            if self.is_local(dst):
                return None
            rpt = ev.report_to
            rpt = (_DTN_NONE if rpt is None else rpt if isinstance(rpt, EID)
                   else EID.parse(rpt))
            tmpl = OriginTemplate(src, dst, rpt, flags=ev.flags, lifetime_ms=ev.lifetime_ms,
                                  crc_type=crc_type_of(self.cfg.crc),
                                  previous_node=self.node_id)
            if len(self._templates) >= 256:
                self._templates.clear()
            self._templates[key] = tmpl
        return tmpl

    def _admit_made(self, b: Bundle, wire: bytes, tmpl: OriginTemplate, now: int,
                    out: list[Action]) -> bool:
        """:meth:`_admit_local` + :meth:`_admit` + :meth:`_dispatch` for a bundle a
        template made (bound elsewhere, no age or hop count block, sent as made), in one
        step: the same state and actions, without the checks that cannot apply. False
        when the store is full (the caller refuses, as for any bundle)."""
        size = len(wire)
        if not self._fits(size):
            return False
        self.counters["originated"] += 1
        bid = b.__dict__["_id"][1]
        expiry = now + tmpl.lifetime_ms
        names = tmpl.router_names
        if names is None or names[0] is not self.router.plan:
            names = tmpl.router_names = (self.router.plan, self._router_name(tmpl.source),
                                         self._router_name(tmpl.destination))
        info = BundleInfo(bid, names[1], names[2], size, 1,
                          (expiry - self.cfg.plan_epoch_ms) / 1000.0, None, 1)
        h = _Held(b, info, BundleState.PENDING, now, 0, expiry, size, None, wire=wire, bid=bid)
        self.held[bid] = h
        self.held_bytes += size
        self.known[bid] = expiry
        heapq.heappush(self._expiry, (expiry, bid))
        out.append(Store(bid, wire, tmpl.destination_text, expiry, now, BundleState.PENDING))
        batch = self._batch
        if batch is not None:  # an AppSend stretch of handle_many: routed at its end
            batch.append((h, out))
        else:
            self._route(h, now, out)
        out.append(Accept(bid))
        return True

    def _app_send(self, ev: AppSend, out: list[Action]) -> None:
        try:
            src = ev.source if isinstance(ev.source, EID) else EID.parse(ev.source)
            if not self.is_local(src):  # (= src.node_id() != node_id, without a new EID)
                raise BundleError(f"source {src} is not an endpoint of this node "
                                  f"({self.node_id})", field="source")
            wire = None
            tmpl = self._template_for(src, ev) if (ev.hop_limit is None and ev.now_ms and
                                                    self.cfg.policy is None) else None
            if tmpl is not None:
                b, wire = tmpl.make(ev.now_ms, self._next_seq(), ev.payload)
                if not self.cfg.bundle_events and self._admit_made(b, wire, tmpl, ev.now_ms,
                                                                   out):
                    return
            else:
                b = Bundle.new(src, ev.destination, ev.payload, lifetime_ms=ev.lifetime_ms,
                               creation_ms=ev.now_ms, seq=self._next_seq(),
                               report_to=ev.report_to, crc=self.cfg.crc, flags=ev.flags,
                               hop_limit=ev.hop_limit)
        except BundleError as e:
            out.append(Refuse(None, Reason.DESTINATION_UNINTELLIGIBLE, str(e)))
            return
        mark = len(out)  # "sent" goes before the routing events it may cause
        bid = self._admit_local(b, ev.now_ms, out, wire=wire)
        if bid is None:
            self.counters["refused"] += 1
            out.append(Refuse(b.id, Reason.DEPLETED_STORAGE,
                              f"store full ({self.held_bytes} bytes held): send refused"))
            return
        out.append(Accept(bid))
        if self.cfg.bundle_events:
            h = self.held.get(bid)
            ev_out: list[Action] = []
            self._event("sent", b, h.size if h is not None else len(ev.payload), ev_out)
            out[mark:mark] = ev_out

    def _dispatch(self, h: _Held, now: int, out: list[Action]) -> None:
        if h.state == BundleState.LOCAL:
            b = h.bundle
            if self.cfg.policy is not None and self.cfg.policy.decrypt_keys and any(
                    blk.type == BLOCK_BCB for blk in b.blocks):
                try:
                    bcb_decrypt(b, self.cfg.policy.decrypt_keys)
                except BundleError as e:
                    self._delete(b, Reason.FAILED_SECURITY, str(e), now, out, h)
                    return
            out.append(Deliver(b.id, eid_text(b.destination), b))
        else:
            self._route(h, now, out)

    def _outbound(self, h: _Held, now: int) -> Bundle | None:
        """The bundle to send: previous node = this node, age and hop count brought up to
        date. None when the hop limit forbids another hop."""
        src = h.bundle
        b = Bundle(src.primary, list(src.blocks))
        hop = b.hop_count
        if hop is not None:
            if hop[1] + 1 > hop[0]:
                return None
            b.set_hop_count(hop[0], hop[1] + 1)
        b.set_previous_node(self.node_id)
        if src.primary.creation_ms == 0 or b.block_by_type(BLOCK_BUNDLE_AGE) is not None:
            b.set_bundle_age(h.age_at_receipt_ms + max(0, now - h.received_ms))
        return b

    def _route(self, h: _Held, now: int, out: list[Action]) -> None:
        if h.in_flight:
            return
        batch = self._batch
        if batch is not None:  # an AppSend stretch of handle_many: routed at its end
            batch.append((h, out))
            return
        ready = self._ready
        self._apply(h, self.router.route(self._info_of(h), self._now_s(now), ready), ready,
                    now, out)

    def _apply(self, h: _Held, decision: Decision, ready: frozenset[str], now: int,
               out: list[Action]) -> None:
        """Carry out the router's ``decision`` for ``h``: Forward actions, or wait."""
        hops = [hop for hop in decision.hops if hop.node in ready and hop.node not in h.sent_to]
        limits = self.link_limits
        if h.size + _OUTBOUND_SLACK > self._least_limit and hops:  # (hot path: one test)
            h.keep = decision.keep  # (a copy the router keeps is not split)
            lim = min((limits[hop.node] for hop in hops if hop.node in limits), default=None)
            if lim is not None and h.size + _OUTBOUND_SLACK > lim:
                why = f"{h.size} bytes, {hops[0].node} takes at most {lim} in one transfer"
                if self._split(h, lim - _OUTBOUND_SLACK, why, now, out, hops[0].node):
                    return
                # Not split: it cannot go whole to a hop that takes less either; it waits
                # (the router is asked again later) or goes to the hops that take it.
                fits = [hop for hop in hops
                        if h.size + _OUTBOUND_SLACK <= limits.get(hop.node, 1 << 64)]
                if not fits:
                    self.router.failed(self._info_of(h), hops[0].node, self._now_s(now))
                hops = fits
        if (not decision.hops and h.size >= 2 * self.cfg.min_fragment_bytes
                and self._can_split(h)):  # no route can carry it whole: a part, then?
            piece = self.router.largest_piece(self._info_of(h), self._now_s(now), ready)
            if piece is not None and self.cfg.min_fragment_bytes <= piece < h.size:
                why = f"{h.size} bytes, the route's contacts can carry {piece} now"
                if self._split(h, piece, why, now, out):
                    return
        if not hops:
            h.waiting = True  # asked again at the next contact start, or after reroute_ms
            h.wire = None  # may wait long: do not hold the bytes twice
            self._schedule(now + self.cfg.reroute_ms, out)
            return
        wire, h.wire = h.wire, None
        if wire is not None and (hops[0].copies == 1 if len(hops) == 1 else
                                 all(hop.copies == 1 for hop in hops)):
            h.waiting = False
            h.keep = decision.keep
            bid = h.bid
            for hop in hops:
                h.in_flight.add(hop.node)
                out.append(Forward(bid, hop.node, wire, decision.route))
            return
        ob = self._outbound(h, now)
        if ob is None:
            self._delete(h.bundle, Reason.HOP_LIMIT_EXCEEDED, "hop limit reached", now, out,
                         h)
            return
        h.waiting = False
        h.keep = decision.keep
        # Copy rights travel in the netemu copies block when the router hands out more
        # than one, or the bundle already carries a count (spray-and-wait).
        per_hop = any(hop.copies != 1 for hop in hops) or ob.block_by_type(
            BLOCK_COPIES) is not None
        data = None if per_hop else ob.encode()
        for hop in hops:
            h.in_flight.add(hop.node)
            if per_hop:
                set_copies(ob, hop.copies)
                data = ob.encode()
            out.append(Forward(h.bid, hop.node, data, decision.route))  # type: ignore[arg-type]

    def _can_split(self, h: _Held) -> bool:
        return (h.state == BundleState.PENDING and not h.keep and not h.sent_to
                and not h.bundle.primary.flags & (_ADMIN_FLAG | BundleFlags.MUST_NOT_FRAGMENT)
                and copies_of(h.bundle) == 1)

    def _split(self, h: _Held, max_bytes: int, why: str, now: int, out: list[Action],
               routed_to: str | None = None) -> bool:
        """Replace ``h`` by fragments of at most ``max_bytes`` and route each on its own
        (RFC 9171 section 5.8); False (logged once) when it may not be split: it then
        waits or goes elsewhere as any bundle does. ``routed_to``: the hop the router
        chose for ``h`` (its reservation is given back: the fragments make their own)."""
        try:
            if not self._can_split(h):
                raise FragmentError("it is flagged must-not-fragment, is an administrative "
                                    "record or a copy that is kept")
            frags = fragment(h.bundle, max_bytes)
        except FragmentError as e:
            if not h.noted:
                h.noted = True
                out.append(Note("fragmentation_refused", h.bid, f"{why}; not split: {e}"))
            return False
        if routed_to is not None:
            self.router.failed(self._info_of(h), routed_to, self._now_s(now))
        self._drop(h)
        out.append(SetState(h.bid, BundleState.FORWARDED))
        self.counters["fragmented"] += 1
        out.append(Note("bundle_fragmented", h.bid,
                        f"{why}: {len(frags)} fragments of at most {max_bytes} bytes"))
        parts: list[_Held] = []
        for f in frags:
            data = f.encode()
            fid = f.id
            if fid in self.known:
                continue
            fh = _Held(f, None, BundleState.PENDING, h.received_ms, h.age_at_receipt_ms,
                       h.expiry_ms, len(data), h.previous_hop, bid=fid)
            self.held[fid] = fh
            self.held_bytes += len(data)
            self._remember(fid, h.expiry_ms)
            out.append(Store(fid, data, eid_text(f.destination), h.expiry_ms, h.received_ms,
                             BundleState.PENDING, h.age_at_receipt_ms, h.previous_hop))
            parts.append(fh)
        for fh in parts:
            self._route(fh, now, out)
        return True

    def _schedule(self, at_ms: int, out: list[Action]) -> None:
        if self._retry_at is None or at_ms < self._retry_at:
            self._retry_at = at_ms
            out.append(ScheduleRetry(at_ms))

    def _route_waiting(self, now: int, out: list[Action]) -> None:
        """Route again the bundles that wait (at a contact's start, at the retry time):
        with one ``router.route_many`` call, as a stretch of :meth:`handle_many` is —
        those that waited together for a contact leave together."""
        own = self._batch is None
        if own:
            self._batch, self._batch_ms = [], now
        for h in list(self.held.values()):
            if h.state == BundleState.PENDING and h.waiting and not h.in_flight:
                self._route(h, now, out)
        if own:
            self._route_batch()

    def _done(self, ev: TransmissionDone, out: list[Action]) -> None:
        h = self.held.get(ev.bundle_id)
        if h is None:
            return
        h.in_flight.discard(ev.neighbour)
        h.sent_to.add(ev.neighbour)
        self.router.sent(self._info_of(h), ev.neighbour, self._now_s(ev.now_ms))
        self.counters["forwarded"] += 1
        if self.cfg.bundle_events:
            self._event("forwarded", h.bundle, h.size, out, next_hop=ev.neighbour)
        self._report(h.bundle, "forwarded", Reason.NO_INFO, ev.now_ms, out)
        if h.in_flight:
            return
        if h.keep:
            h.waiting = True  # more copies may go to other neighbours
            self._route(h, ev.now_ms, out)
        else:
            self._drop(h)
            out.append(SetState(ev.bundle_id, BundleState.FORWARDED))

    def _failed(self, ev: TransmissionFailed, out: list[Action]) -> None:
        h = self.held.get(ev.bundle_id)
        if h is None:
            return
        h.in_flight.discard(ev.neighbour)
        self.router.failed(self._info_of(h), ev.neighbour, self._now_s(ev.now_ms))
        h.waiting = True
        self._schedule(ev.now_ms + self.cfg.retry_ms, out)

    def _app_delivered(self, ev: AppDelivered, out: list[Action]) -> None:
        h = self.held.get(ev.bundle_id)
        if h is None or h.state != BundleState.LOCAL:
            return
        self._drop(h)
        self.counters["delivered"] += 1
        out.append(SetState(ev.bundle_id, BundleState.DELIVERED))
        if self.cfg.bundle_events:
            self._event("delivered", h.bundle, h.size, out)
        if self._router_delivered:  # (most routers ignore it: spare the BundleInfo)
            self.router.delivered(self._info_of(h), self._now_s(ev.now_ms))
        self._report(h.bundle, "delivered", Reason.NO_INFO, ev.now_ms, out)

    def tick_due(self, now: int) -> bool:
        """Whether a :class:`Tick` at ``now`` would do anything (a bundle or a remembered
        ID expires, a metadata wait or the retry time is over): an idle node's shell skips
        the tick, and with it a batch, a store commit and a thread round trip."""
        return bool((self._expiry and self._expiry[0][0] <= now)
                    or (self._retry_at is not None and now >= self._retry_at)
                    or any(t <= now for t in self._awaiting_md.values()))

    def _tick(self, now: int, out: list[Action]) -> None:
        while self._expiry and self._expiry[0][0] <= now:
            exp, bid = heapq.heappop(self._expiry)
            if self.known.get(bid) == exp:
                del self.known[bid]
            h = self.held.get(bid)
            if h is not None and h.expiry_ms <= now:
                self._delete(h.bundle, Reason.LIFETIME_EXPIRED, "lifetime expired", now, out, h)
        if self._awaiting_md:
            late = [nb for nb, t in self._awaiting_md.items() if t <= now]
            for nb in late:  # no metadata came: route to it without
                del self._awaiting_md[nb]
            if late:
                self._update_ready()
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            self._route_waiting(now, out)

    # --- restart --------------------------------------------------------------------
    def restore(self, records: Iterable[StoredBundle], now_ms: int) -> list[Action]:
        """Rebuild the in-memory state from the store after a restart: every stored ID is
        known again (dedupe), held bundles are held again, local ones are delivered again
        and pending ones routed when contacts come up."""
        out: list[Action] = []
        max_seq = -1
        todo: list[_Held] = []
        for r in records:
            self._remember(r.id, r.expiry_ms)
            parts = r.id.split(",")
            try:
                if EID.parse(parts[0]).node_id() == self.node_id:
                    max_seq = max(max_seq, int(parts[2]))
            except (BundleError, IndexError, ValueError):
                pass  # a dtn EID with commas: its sequence cannot clash (later time)
            if r.data is None or r.state not in HELD_STATES:
                continue
            try:
                b = decode_bundle(r.data)
            except BundleError as e:
                out.append(Delete(r.id, Reason.BLOCK_UNINTELLIGIBLE, f"stored copy: {e}"))
                continue
            h = _Held(b, None, r.state, r.received_ms, r.age_at_receipt_ms, r.expiry_ms,
                      r.size, r.previous_hop, bid=r.id)
            self.held[r.id] = h
            self.held_bytes += r.size
            todo.append(h)
        self._seq = max(self._seq, max_seq + 1)
        for h in todo:
            if h.expiry_ms <= now_ms:
                self._delete(h.bundle, Reason.LIFETIME_EXPIRED, "lifetime expired", now_ms,
                             out, h)
            elif h.state == BundleState.FRAGMENT:
                done = self.reassembly.add(h.bundle, h.bid, h.size)
                if done is not None:  # (whole already: the commit that completed it died)
                    self._reassembled(done, now_ms, out)
            else:
                self._dispatch(h, now_ms, out)
        return out

    def status(self) -> dict[str, Any]:
        """Counters and holdings, for the app interface's status query."""
        pending = sum(1 for h in self.held.values() if h.state == BundleState.PENDING)
        local = sum(1 for h in self.held.values() if h.state == BundleState.LOCAL)
        return {"node": str(self.node_id), "neighbours": sorted(self.neighbours),
                "held_bundles": len(self.held), "held_bytes": self.held_bytes,
                "pending": pending, "local": local,
                "reassembling": len(self.reassembly),
                "reassembly_bytes": self.reassembly.held_bytes,
                "known_ids": len(self.known), **self.counters}


_EID_TEXT: dict[EID, str] = {}


def eid_text(eid: EID) -> str:
    """``str(eid)``, remembered for the few EIDs a node sees over and over."""
    text = _EID_TEXT.get(eid)
    if text is None:
        text = str(eid)
        if len(_EID_TEXT) < 4096:
            _EID_TEXT[eid] = text
    return text


def copies_of(b: Bundle) -> int:
    """Spray-and-wait copy rights carried in the netemu copies block (1 without)."""
    for blk in b.blocks:
        if blk.type == BLOCK_COPIES:
            break
    else:
        return 1
    try:
        n = cbor.expect_uint(blk.data, 0, "copies")[0]
    except BundleError:
        return 1
    return max(1, n)


def set_copies(b: Bundle, copies: int) -> None:
    """Put ``copies`` in the bundle's copies block (added before the payload if absent)."""
    old = b.block_by_type(BLOCK_COPIES)
    data = cbor.uint(max(1, int(copies)))
    if old is not None:
        b.replace_block(CanonicalBlock(BLOCK_COPIES, old.number, data, old.flags,
                                       old.crc_type))
    else:
        b.replace_block(CanonicalBlock(BLOCK_COPIES, b.next_block_number(), data,
                                       BlockFlags.DISCARD_IF_UNPROCESSED.value,
                                       b.payload_block.crc_type))


def _reason_name(reason: int) -> str:
    """``lifetime_expired`` for 1: status report reason codes by name, for telemetry."""
    try:
        return Reason(reason).name.lower()
    except ValueError:
        return str(int(reason))


def tune_gc(gen0_threshold: int = 100_000) -> None:
    """Opt-in for agent processes: fewer cyclic-GC passes.

    An agent holding thousands of bundles spends ~20% of its per-bundle CPU in the
    cyclic garbage collector with CPython's default thresholds (measured: 64 -> 52 us per
    received bundle with 5,000 held, gc off); the core makes no reference cycles per
    bundle, so rarer passes lose nothing. Call once after start-up: it also freezes
    everything allocated so far (imports, config) out of future passes.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, 50, 100)

