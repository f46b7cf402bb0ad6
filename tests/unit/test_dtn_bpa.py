"""The bundle agent core: forwarding through a line of nodes, dedupe, expiry, quota,
hop limits, BPSec policy, status reports and restart from the store; all on a virtual
clock with a trivial static router and an in-test "shell" that executes the actions."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from netemu.agent.store import BundleStore
from netemu.dtn.bpa import (
    Accept,
    AppDelivered,
    AppSend,
    BundleAgent,
    BundleReceived,
    ContactDown,
    ContactUp,
    CoreConfig,
    Delete,
    Deliver,
    Forward,
    Refuse,
    ScheduleRetry,
    SetState,
    Store,
    Tick,
    TransmissionDone,
    TransmissionFailed,
)
from netemu.dtn.bpsec import SecurityPolicy, bcb_encrypt
from netemu.dtn.bundle import Bundle, BundleFlags, CanonicalBlock, datetime_to_dtn_ms, decode_bundle
from netemu.dtn.eid import EID
from netemu.dtn.state import BundleState
from netemu.dtn.status import Reason, StatusReport
from netemu.errors import InputError
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.routing import get_router
from netemu.routing.base import Decision, Hop, Router
from netemu.routing.cgr import CGRRouter

PLAN = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc),
                   {n: Node(n, i) for i, n in ((1, "A"), (2, "B"), (3, "C"))}, [])


class StaticRouter(Router):
    """Next hop per destination node, if that neighbour is up."""

    name = "static-test"

    def __init__(self, node, plan, routes):
        super().__init__(node, plan)
        self.routes = routes
        self.sent_log = []

    def route(self, bundle, now_s, neighbours):
        nh = bundle.destination if bundle.destination in neighbours else self.routes.get(
            bundle.destination)
        if nh is not None and nh in neighbours:
            return Decision((Hop(nh),), reason="static")
        return Decision(reason="no contact")

    def sent(self, bundle, neighbour, now_s):
        self.sent_log.append((bundle.bundle_id, neighbour))


ROUTES = {"A": {"C": "B", "B": "B"}, "B": {"A": "A", "C": "C"}, "C": {"A": "B", "B": "B"}}


class Net:
    """A synchronous shell: a CL that hands bundles over at once, a store per node, apps
    that take every delivery at once (unless ``auto_ack`` is off)."""

    def __init__(self, tmp_path, *, quotas=None, policies=None, auto_ack=True,
                 router_factory=None, plan_epoch_ms=0):
        self.tmp = tmp_path
        self.router_factory = router_factory or (lambda n: StaticRouter(n, PLAN, ROUTES[n]))
        self.plan_epoch_ms = plan_epoch_ms
        self.now = 1_000_000
        self.agents, self.stores, self.log = {}, {}, []
        self.delivered: dict[str, list] = {n: [] for n in "ABC"}
        self.refused: list[Refuse] = []
        self.links: set[frozenset] = set()
        self.auto_ack = auto_ack
        for i, n in enumerate("ABC", 1):
            self.stores[n] = BundleStore(tmp_path / f"{n}.db")
            self.agents[n] = self._agent(n, i, (quotas or {}).get(n), (policies or {}).get(n))

    def _agent(self, n, i, quota=None, policy=None):
        cfg = CoreConfig(EID.ipn(i, 0), n, max_bytes=quota, policy=policy, retry_ms=500,
                          plan_epoch_ms=self.plan_epoch_ms)
        return BundleAgent(cfg, self.router_factory(n))

    def run(self, node, event):
        acts = self.agents[node].handle(event)
        self.execute(node, acts)
        return acts

    def execute(self, node, acts):
        store = self.stores[node]
        for a in acts:  # 1. store, commit
            self.log.append((node, a))
            if isinstance(a, Store):
                store.add_many([a.row()])
            elif isinstance(a, SetState):
                store.set_state(a.bundle_id, a.state)
            elif isinstance(a, Delete):
                store.set_state(a.bundle_id, BundleState.DELETED, reason=a.reason)
        store.commit()
        for a in acts:  # 2. then transfers and deliveries
            if isinstance(a, Forward):
                peer = a.neighbour
                if frozenset((node, peer)) not in self.links:
                    self.run(node, TransmissionFailed(a.bundle_id, peer, self.now, "link down"))
                    continue
                back = self.run(peer, BundleReceived(a.data, node, self.now))
                if any(isinstance(x, Refuse) for x in back):
                    self.run(node, TransmissionFailed(a.bundle_id, peer, self.now, "refused"))
                else:
                    self.run(node, TransmissionDone(a.bundle_id, peer, self.now))
            elif isinstance(a, Deliver):
                self.delivered[node].append(a.bundle)
                if self.auto_ack:
                    self.run(node, AppDelivered(a.bundle_id, self.now))
            elif isinstance(a, Refuse):
                self.refused.append(a)

    def up(self, a, b):
        self.links.add(frozenset((a, b)))
        self.run(a, ContactUp(b, self.now))
        self.run(b, ContactUp(a, self.now))

    def down(self, a, b):
        self.links.discard(frozenset((a, b)))
        self.run(a, ContactDown(b, self.now))
        self.run(b, ContactDown(a, self.now))

    def tick(self, dt_ms=0):
        """Time passes; like the agent's shell, a node is ticked only when a tick is due
        (so every test that ticks also checks that ``tick_due`` misses nothing)."""
        self.now += dt_ms
        for n in "ABC":
            if self.agents[n].tick_due(self.now):
                self.run(n, Tick(self.now))

    def send(self, src="A", dst="ipn:3.1", payload=b"hello", **kw):
        kw.setdefault("lifetime_ms", 60_000)
        return self.run(src, AppSend(f"ipn:{'ABC'.index(src) + 1}.1", dst, payload,
                                     now_ms=self.now, **kw))

    def app_payloads(self, node):
        return [b.payload for b in self.delivered[node] if not b.primary.is_admin_record]

    def reports(self, node):
        return [StatusReport.decode(b.payload) for b in self.delivered[node]
                if b.primary.is_admin_record]

    def close(self):
        for s in self.stores.values():
            s.close()


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.close()


def test_store_and_forward_through_a_line(net):
    net.up("A", "B")
    acts = net.send(payload=b"to C")
    assert any(isinstance(a, Accept) for a in acts)
    assert net.app_payloads("C") == []            # B holds it: no contact to C yet
    assert net.agents["B"].status()["pending"] == 1
    net.tick(100)
    net.up("B", "C")
    assert net.app_payloads("C") == [b"to C"]
    got = net.delivered["C"][0]
    assert str(got.previous_node) == "ipn:2.0"    # B set itself as previous node
    assert net.stores["B"].counts()["forwarded"] == 1
    assert net.stores["C"].counts()["delivered"] == 1
    assert net.agents["B"].held == {} and net.agents["C"].held == {}


def test_duplicate_is_acknowledged_and_dropped(net):
    net.up("A", "B")
    net.up("B", "C")
    net.send()
    fwd = [a for n, a in net.log if n == "B" and isinstance(a, Forward)][0]
    again = net.run("C", BundleReceived(fwd.data, "B", net.now))
    assert again == [Accept(fwd.bundle_id, duplicate=True)]
    assert net.app_payloads("C") == [b"hello"]


def test_status_reports_for_delivery_and_forwarding(net):
    for a, b in (("A", "B"), ("B", "C")):
        net.up(a, b)
    net.send(flags=BundleFlags.REPORT_DELIVERY | BundleFlags.REPORT_FORWARDING
             | BundleFlags.STATUS_TIME_REQUESTED, report_to="ipn:1.7")
    reps = net.reports("A")
    kinds = sorted(next(iter(r.status)) for r in reps)
    assert kinds == ["delivered", "forwarded", "forwarded"]
    assert all(r.subject_source == EID.parse("ipn:1.1") for r in reps)
    assert all(t == net.now for r in reps for t in r.status.values())
    assert {b.destination for b in net.delivered["A"]} == {EID.parse("ipn:1.7")}


def test_expiry_deletes_with_reason_and_report(net):
    net.up("A", "B")
    net.send(lifetime_ms=1000, flags=BundleFlags.REPORT_DELETION, report_to="ipn:1.7")
    assert net.agents["B"].status()["pending"] == 1
    net.tick(999)
    assert net.agents["B"].status()["pending"] == 1
    net.tick(1)
    deletes = [a for n, a in net.log if n == "B" and isinstance(a, Delete)]
    assert [d.reason for d in deletes] == [Reason.LIFETIME_EXPIRED]
    assert net.stores["B"].counts()["deleted"] == 1
    assert [r.reason for r in net.reports("A")] == [Reason.LIFETIME_EXPIRED]


def test_an_idle_node_has_no_tick_due_until_its_bundle_expires_or_its_retry_comes(net):
    assert not any(net.agents[n].tick_due(net.now + 10_000) for n in "ABC")
    net.up("A", "B")
    net.send(lifetime_ms=1000)  # held at B: C is not up
    assert not net.agents["B"].tick_due(net.now + 999)
    assert net.agents["B"].tick_due(net.now + 1000)
    net.links.clear()  # A's transfer fails: A retries 500 ms later
    net.send(src="A", dst="ipn:2.1")
    assert not net.agents["A"].tick_due(net.now + 499)
    assert net.agents["A"].tick_due(net.now + 500)


def test_full_store_refuses_with_status_report(tmp_path):
    net = Net(tmp_path, quotas={"B": 2500})
    try:
        net.up("A", "B")
        net.send(payload=b"x" * 1000, report_to="ipn:1.7")
        net.send(payload=b"y" * 1000, report_to="ipn:1.7")
        net.send(payload=b"z" * 1000, report_to="ipn:1.7")     # does not fit at B
        assert net.agents["B"].status()["pending"] == 2
        refusals = [r for r in net.refused if r.reason == Reason.DEPLETED_STORAGE]
        assert refusals and "store full" in refusals[0].message
        reps = net.reports("A")
        assert [(next(iter(r.status)), r.reason) for r in reps] == [
            ("deleted", Reason.DEPLETED_STORAGE)]
        # A keeps its copy and retries: once C takes B's bundles, the third goes through.
        net.up("B", "C")
        net.tick(500)
        assert sorted(net.app_payloads("C")) == [b"x" * 1000, b"y" * 1000, b"z" * 1000]
    finally:
        net.close()


def test_hop_limit(net):
    net.up("A", "B")
    net.up("B", "C")
    net.send(hop_limit=1, flags=BundleFlags.REPORT_DELETION, report_to="ipn:1.7")
    assert net.app_payloads("C") == []
    assert [r.reason for r in net.reports("A")] == [Reason.HOP_LIMIT_EXCEEDED]
    net.send(hop_limit=2)
    assert net.app_payloads("C") == [b"hello"]


def test_malformed_bundle_refused_with_clear_reason(net):
    acts = net.run("B", BundleReceived(b"\x9f\x88\x07", "A", net.now))
    assert len(acts) == 1 and isinstance(acts[0], Refuse)
    assert acts[0].reason == Reason.BLOCK_UNINTELLIGIBLE and "truncated" in acts[0].message


def test_bib_policy(tmp_path):
    key = b"k" * 32
    pol = {"A": SecurityPolicy(node_id=EID.parse("ipn:1.0"), sign_key=key),
           "C": SecurityPolicy(verify_keys={"ipn:1.0": key},
                               require_bib_from=frozenset({"ipn:1.0"}))}
    net = Net(tmp_path, policies=pol)
    try:
        net.up("A", "B")
        net.up("B", "C")
        net.send(payload=b"signed")
        assert net.app_payloads("C") == [b"signed"]
        # B forges a bundle in A's name without a BIB: C drops it, reports, logs.
        net.agents["B"].cfg.policy = None
        net.agents["B"].node_id = EID.parse("ipn:1.0")
        net.now += 1  # (B's sequence numbers would otherwise repeat A's bundle ID)
        net.run("B", AppSend("ipn:1.1", "ipn:3.1", b"forged", 60_000, net.now,
                             flags=BundleFlags.REPORT_DELETION, report_to="ipn:1.7"))
        deletes = [a for n, a in net.log if n == "C" and isinstance(a, Delete)]
        assert [d.reason for d in deletes] == [Reason.MISSING_SECURITY]
        assert net.app_payloads("C") == [b"signed"]
    finally:
        net.close()


def test_failed_transmission_is_retried(net):
    net.up("A", "B")
    net.links.clear()       # the CL fails although the contact is "up"
    net.send()
    assert any(isinstance(a, ScheduleRetry) for n, a in net.log if n == "A")
    assert net.agents["A"].status()["pending"] == 1
    net.links.add(frozenset(("A", "B")))
    net.tick(500)
    assert net.agents["B"].status()["pending"] == 1


def test_no_clock_bundle_age_is_carried(net):
    net.up("A", "B")
    agent = net.agents["A"]
    b = decode_bundle(
        __import__("netemu.dtn.bundle", fromlist=["Bundle"]).Bundle.new(
            "ipn:1.1", "ipn:3.1", b"aged", lifetime_ms=10_000, creation_ms=0,
            age_ms=300).encode())
    net.links.clear()
    net.run("A", BundleReceived(b.encode(), None, net.now))
    net.now += 200
    net.links.add(frozenset(("A", "B")))
    net.tick(0)
    net.tick(500)
    fwd = [a for n, a in net.log if n == "A" and isinstance(a, Forward)][-1]
    assert decode_bundle(fwd.data).bundle_age_ms == 300 + 700
    assert agent.status()["pending"] == 0


def test_restart_resumes_from_store_without_duplicates(tmp_path):
    net = Net(tmp_path, auto_ack=False)
    net.up("A", "B")
    net.send(payload=b"one")
    net.send(payload=b"two")
    ids = sorted(net.agents["B"].held)
    fwd = [a for n, a in net.log if n == "A" and isinstance(a, Forward)]
    net.stores["B"].close()
    # B restarts (kill -9 is tested on the store itself): a fresh core over its store.
    net.stores["B"] = BundleStore(tmp_path / "B.db")
    net.agents["B"] = net._agent("B", 2)
    acts = net.agents["B"].restore(net.stores["B"].by_state(*BundleState), net.now)
    assert sorted(net.agents["B"].held) == ids
    assert not [a for a in acts if isinstance(a, Forward)]      # no contacts yet
    # A resends one (it never got the ack): recognised as a duplicate.
    back = net.run("B", BundleReceived(fwd[0].data, "A", net.now))
    assert back == [Accept(fwd[0].bundle_id, duplicate=True)]
    net.auto_ack = True
    net.up("B", "C")
    assert sorted(net.app_payloads("C")) == [b"one", b"two"]
    # New bundles originated after restart never reuse a sequence number.
    net.stores["A"].close()
    net.stores["A"] = BundleStore(tmp_path / "A.db")
    net.agents["A"] = net._agent("A", 1)
    net.agents["A"].restore(net.stores["A"].by_state(*BundleState), net.now)
    acc = [a for a in net.send(payload=b"three") if isinstance(a, Accept)][0]
    assert acc.bundle_id not in ids
    net.close()


def test_unknown_blocks_obey_their_flags(net):
    b = Bundle.new("ipn:1.1", "ipn:3.1", b"x", lifetime_ms=60_000, creation_ms=net.now)
    b.replace_block(CanonicalBlock(200, 5, b"opaque", 0x10))        # discard if unknown
    b.replace_block(CanonicalBlock(201, 6, b"kept", 0x00))          # forward as is
    net.up("B", "C")
    net.run("B", BundleReceived(b.encode(), "A", net.now))
    got = net.delivered["C"][0]
    assert [blk.type for blk in got.blocks if blk.type >= 200] == [201]
    d = Bundle.new("ipn:1.1", "ipn:3.1", b"y", lifetime_ms=60_000, creation_ms=net.now, seq=1)
    d.replace_block(CanonicalBlock(202, 5, b"must understand", 0x04))
    acts = net.run("B", BundleReceived(d.encode(), "A", net.now))
    assert [a.reason for a in acts if isinstance(a, Delete)] == [Reason.BLOCK_UNSUPPORTED]


def test_unknown_block_asking_for_a_report_gets_block_unsupported(net):
    """RFC 9171 5.6 step 4: an unknown block flagged "report if unprocessed" makes each
    node that receives the bundle send a reception report, reason "block unsupported",
    to the report-to endpoint, though the bundle asks for no reports; once per bundle and
    node; the bundle is still forwarded (the block kept, so C reports too)."""
    for a, b in (("A", "B"), ("B", "C")):
        net.up(a, b)
    b = Bundle.new("ipn:1.1", "ipn:3.1", b"x", lifetime_ms=60_000, creation_ms=net.now,
                   report_to="ipn:1.7")
    b.replace_block(CanonicalBlock(200, 5, b"report me", 0x02))
    b.replace_block(CanonicalBlock(201, 6, b"me too", 0x02))
    net.run("B", BundleReceived(b.encode(), "A", net.now))
    assert net.app_payloads("C") == [b"x"]
    plain = Bundle.new("ipn:1.1", "ipn:3.1", b"y", lifetime_ms=60_000, creation_ms=net.now,
                       seq=1, report_to="ipn:1.7")
    plain.replace_block(CanonicalBlock(202, 5, b"quiet", 0x00))
    net.run("B", BundleReceived(plain.encode(), "A", net.now))
    reps = net.reports("A")
    assert [(next(iter(r.status)), r.reason, r.subject_seq) for r in reps] == [
        ("received", Reason.BLOCK_UNSUPPORTED, 0)] * 2
    assert sorted(str(x.source) for x in net.delivered["A"]) == ["ipn:2.0", "ipn:3.0"]


def test_bcb_payload_decrypted_for_the_local_app(tmp_path):
    key = b"K" * 16
    net = Net(tmp_path, policies={"C": SecurityPolicy(decrypt_keys={"ipn:1.0": key})})
    try:
        b = Bundle.new("ipn:1.1", "ipn:3.1", b"secret", lifetime_ms=60_000,
                       creation_ms=net.now)
        bcb_encrypt(b, key, source="ipn:1.0", iv=b"\x01" * 12)
        assert b"secret" not in b.encode()
        net.up("A", "B")
        net.up("B", "C")
        net.run("A", BundleReceived(b.encode(), None, net.now))
        assert net.app_payloads("C") == [b"secret"]
    finally:
        net.close()


def test_reception_report(net):
    net.up("A", "B")
    net.send(flags=BundleFlags.REPORT_RECEPTION, report_to="ipn:1.7")
    reps = net.reports("A")
    assert [next(iter(r.status)) for r in reps] == ["received"]  # B received it from A
    assert [str(b.source) for b in net.delivered["A"]] == ["ipn:2.0"]


def test_for_plan_node_uses_plan_numbers_and_epoch():
    core = BundleAgent.for_plan_node("B", StaticRouter("B", PLAN, ROUTES["B"]), max_bytes=10)
    assert str(core.node_id) == "ipn:2.0" and core.cfg.max_bytes == 10
    assert core.cfg.plan_epoch_ms == datetime_to_dtn_ms(PLAN.epoch)
    assert core.node_of(EID.parse("ipn:3.5")) == "C"
    with pytest.raises(InputError) as e:  # a config's node name: the user's input
        BundleAgent.for_plan_node("Z", StaticRouter("Z", PLAN, {}))
    assert "not in the contact plan" in str(e.value)


@pytest.mark.parametrize("algorithm", ["cgr", "epidemic", "first-contact"])
def test_project_routers_carry_a_bundle_across_two_contacts(tmp_path, algorithm):
    """The routers of netemu.routing behind the core: A-B is up 0-100 s, B-C 200-300 s
    (plan time); a bundle sent at 10 s reaches C once, at 200 s."""

    contacts = [Contact(a, b, s0, s1, 1e6, 0.01) for a, b, s0, s1 in
                (("A", "B", 0, 100), ("B", "A", 0, 100), ("B", "C", 200, 300),
                 ("C", "B", 200, 300))]
    plan = ContactPlan(PLAN.epoch, dict(PLAN.nodes), contacts)
    cls = get_router(algorithm)
    net = Net(tmp_path, router_factory=lambda n: cls(n, plan), plan_epoch_ms=1_000_000)
    try:
        net.now = 1_000_000 + 10_000
        net.up("A", "B")
        net.send(payload=b"over two contacts", lifetime_ms=3_600_000)
        assert net.agents["B"].status()["pending"] == 1
        net.now = 1_000_000 + 100_000
        net.down("A", "B")
        net.now = 1_000_000 + 200_000
        net.up("B", "C")
        net.tick(0)
        assert net.app_payloads("C") == [b"over two contacts"]
        net.tick(5_000)
        assert net.app_payloads("C") == [b"over two contacts"]     # once
    finally:
        net.close()


# --- handle_many: bundles sent in a row are routed together, with handle()'s results ---

CGR_PLAN = ContactPlan(
    datetime(2026, 1, 1, tzinfo=timezone.utc),
    {n: Node(n, i) for i, n in ((1, "A"), (2, "B"), (3, "C"))},
    # 1,000 bytes/s for 10 s to B, then C: a batch of 1 KB bundles fills the first contact
    [Contact("A", "B", 0, 10, 8000.0, 0.1), Contact("A", "C", 0, 100, 8000.0, 0.1),
     Contact("C", "B", 0, 100, 8000.0, 0.1)])


def _cgr_agent():
    return BundleAgent(CoreConfig(EID.ipn(1, 0), "A", retry_ms=500, plan_epoch_ms=0),
                       CGRRouter("A", CGR_PLAN))


def _comparable(a):
    return (type(a).__name__, getattr(a, "bundle_id", None), getattr(a, "neighbour", None),
            getattr(a, "data", None), getattr(a, "route", None), getattr(a, "at_ms", None))


def test_handle_many_routes_a_stretch_of_sends_like_handle_one_by_one():
    events = [ContactUp("B", 1000), ContactUp("C", 1000)]
    events += [AppSend("ipn:1.1", "ipn:2.1", bytes([i]) * 1000, 60_000, 2000)
               for i in range(14)]
    events += [TransmissionDone("ipn:1.0-2000-0-", "B", 2100)]  # (unknown id: ignored)
    events += [AppSend("ipn:1.1", "ipn:2.1", b"y" * 1000, 60_000, 2500 + i // 3)
               for i in range(6)]
    one, many = _cgr_agent(), _cgr_agent()
    want = [one.handle(ev) for ev in events]
    got = many.handle_many(events)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):  # Forwards come last in a batch: same set
        assert sorted(map(_comparable, g), key=repr) == sorted(map(_comparable, w), key=repr)
    hops = [a.neighbour for out in got for a in out if isinstance(a, Forward)]
    assert hops.count("B") >= 5 and hops.count("C") >= 5  # B filled up, then via C
    assert one.router._consumed == many.router._consumed
    assert set(one.held) == set(many.held)


def test_handle_many_routes_received_and_waiting_bundles_like_handle_one_by_one():
    """A burst handed over by a neighbour, and bundles that waited for a contact and
    leave at its start, are routed in one route_many call each: same actions, same
    bookings as handle() bundle by bundle (those from C may not go back to C: they wait
    for B, and some find B's contact full)."""
    def rx(src, dst, i, nb, now):
        b = Bundle.new(f"ipn:{src}.1", f"ipn:{dst}.1", bytes([i]) * 1000, lifetime_ms=60_000,
                       creation_ms=1000, seq=i)
        return BundleReceived(b.encode(), nb, now)
    events = [ContactUp("C", 1000)]
    events += [rx(3, 2, i, "C", 2000) for i in range(12)]  # to B, from C: they wait
    events += [ContactUp("B", 3000)]  # they leave together (those that fit)
    events += [rx(2, 3, i, "B", 3500) for i in range(5)]  # from B to C
    one, many = _cgr_agent(), _cgr_agent()
    calls = []
    route_many = many.router.route_many

    def counted(bundles, now_s, nbs):
        calls.append(len(bundles))
        return route_many(bundles, now_s, nbs)
    many.router.route_many = counted
    want = [one.handle(ev) for ev in events]
    got = many.handle_many(events)
    for g, w in zip(got, want, strict=True):  # Forwards come last in a batch: same set
        assert sorted(map(_comparable, g), key=repr) == sorted(map(_comparable, w), key=repr)
    hops = [a.neighbour for out in got for a in out if isinstance(a, Forward)]
    assert 3 <= hops.count("B") < 12 and hops.count("C") == 5
    assert calls == [12, 12, 5]  # received at 2000, waiting at B's start, received at 3500
    assert _state(one) == _state(many)


def _state(agent):
    """What a node holds and has promised, comparable between two cores."""
    held = {bid: (h.state, h.size, h.expiry_ms, h.received_ms, h.age_at_receipt_ms,
                  h.bundle.encode(), agent._info_of(h)) for bid, h in agent.held.items()}
    return held, dict(agent.known), dict(agent.router._consumed), agent.counters


@pytest.mark.parametrize("via", ["handle", "handle_many"])
def test_templated_sends_equal_bundles_built_from_block_objects(via, monkeypatch):
    """An app's bundles made by an OriginTemplate and admitted in one step (the agent's
    fast path) leave the same actions, stored bytes, router bookings and BundleInfos as
    the general path (Bundle.new, set_previous_node, _admit_local)."""
    events = [ContactUp("B", 1000), ContactUp("C", 1000)]
    events += [AppSend("ipn:1.1", "ipn:2.1", bytes([i]) * (900 + i), 60_000, 2000 + i // 4,
                       flags=BundleFlags.REPORT_DELIVERY.value if i % 5 == 0 else 0)
               for i in range(14)]
    events += [AppSend("ipn:1.2", "ipn:3.1", b"z" * 10, 5_000, 2500, report_to="ipn:1.9")]
    fast, general = _cgr_agent(), _cgr_agent()
    monkeypatch.setattr(general, "_template_for", lambda src, ev: None)
    if via == "handle":
        got, want = [fast.handle(ev) for ev in events], [general.handle(ev) for ev in events]
    else:
        got, want = fast.handle_many(events), general.handle_many(events)
    assert fast._templates and not general._templates  # the two paths were taken
    assert [[_comparable(a) for a in out] for out in got] == \
        [[_comparable(a) for a in out] for out in want]
    stores = [(a.row() if isinstance(a, Store) else None) for out in got for a in out]
    assert stores == [(a.row() if isinstance(a, Store) else None) for out in want for a in out]
    assert _state(fast) == _state(general)
