"""Router metadata and copy rights between two agent cores: PRoPHET predictabilities and
summary vectors travel in a netemu-private administrative record at contact start;
spray-and-wait copy rights travel in the netemu copies block (type 192) and halve across
each hop. Cores are driven on a virtual clock; the test carries their Forward bytes."""

from __future__ import annotations

from datetime import datetime, timezone

from netemu.dtn.bpa import (
    BLOCK_COPIES,
    METADATA_WAIT_MS,
    Accept,
    AppSend,
    BundleAgent,
    BundleReceived,
    ContactUp,
    Forward,
    Store,
    Tick,
    TransmissionDone,
    copies_of,
)
from netemu.dtn.bundle import BlockFlags, Bundle, decode_bundle
from netemu.plan.contacts import ContactPlan, Node
from netemu.routing import get_router

EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)
PLAN = ContactPlan(EPOCH, {n: Node(n, i) for i, n in enumerate("ABCD", start=1)}, [])


def core(node: str, algo: str, **params) -> BundleAgent:
    return BundleAgent.for_plan_node(node, get_router(algo)(node, PLAN, **params))


def now_ms(t_s: float) -> int:
    return core("A", "epidemic").cfg.plan_epoch_ms + int(t_s * 1000)


def forwards(actions, to: str | None = None) -> list[Forward]:
    return [a for a in actions if isinstance(a, Forward) and (to is None or a.neighbour == to)]


def carry(fwds: list[Forward], dst: BundleAgent, src_name: str, t_ms: int) -> list:
    out = []
    for f in fwds:
        out += dst.handle(BundleReceived(f.data, src_name, t_ms))
    return out


def meet(x: BundleAgent, y: BundleAgent, t_ms: int) -> tuple[list, list]:
    """Contact x–y starts; both metadata bundles are carried. Returns the actions each
    side produced after hearing the other's metadata."""
    nx, ny = x.cfg.node_name, y.cfg.node_name
    to_y = forwards(x.handle(ContactUp(ny, t_ms)), ny)
    to_x = forwards(y.handle(ContactUp(nx, t_ms)), nx)
    return carry(to_x, x, ny, t_ms), carry(to_y, y, nx, t_ms)


def test_prophet_agents_exchange_predictabilities_at_contact_start():
    a, b = core("A", "prophet"), core("B", "prophet")
    t = now_ms(10)
    b.handle(ContactUp("C", t))  # B has met C: P(B,C) > 0
    assert b.router.predictability("C", 10) > 0
    assert a.router.predictability("C", 10) == 0
    t = now_ms(20)
    out_a = a.handle(ContactUp("B", t))
    out_b = b.handle(ContactUp("A", t))
    md_a, md_b = forwards(out_a, "B"), forwards(out_b, "A")
    assert len(md_a) == 1 and len(md_b) == 1
    rec = decode_bundle(md_a[0].data)
    assert rec.primary.is_admin_record and str(rec.destination) == "ipn:2.0"
    # Delivered as metadata: accepted, neither stored nor delivered to an app.
    got_b = carry(md_a, b, "A", t)
    got_a = carry(md_b, a, "B", t)
    for got in (got_a, got_b):
        assert any(isinstance(x, Accept) for x in got)
        assert not any(isinstance(x, Store) for x in got)
    # Transitivity (RFC 6693 eq. 3): A now predicts C through B.
    p_ac = a.router.predictability("C", 20)
    assert p_ac > 0
    assert p_ac < a.router.predictability("B", 20)
    assert a.counters["metadata_received"] == 1 and b.counters["metadata_sent"] == 2  # to C, to A
    # A bundle for C goes to B, who predicts C better than A does.
    out = a.handle(AppSend("ipn:1.1", "ipn:3.1", b"x", 600_000, now_ms(21)))
    assert [f.neighbour for f in forwards(out)] == ["B"]


def test_metadata_arriving_before_the_contact_start_is_applied_after_it():
    a, b = core("A", "prophet"), core("B", "prophet")
    b.handle(ContactUp("C", now_ms(5)))
    md_b = forwards(b.handle(ContactUp("A", now_ms(6))), "A")
    carry(md_b, a, "B", now_ms(6))  # A has not seen its contact to B start yet
    assert a.router.predictability("C", 6) == 0
    a.handle(ContactUp("B", now_ms(6)))
    assert a.router.predictability("C", 6) > 0


def test_epidemic_summary_vector_stops_a_resend():
    """A and B both got bundle X from C. When A meets B, B's summary vector says it has
    X, so A sends it nothing; routing waits for the vector at the contact start."""
    a, b, c = core("A", "epidemic"), core("B", "epidemic"), core("C", "epidemic")
    t = now_ms(1)
    meet(c, a, t)
    meet(c, b, t)
    out = c.handle(AppSend("ipn:3.1", "ipn:4.1", b"x", 600_000, now_ms(3)))
    bid = next(x for x in out if isinstance(x, Accept)).bundle_id
    carry(forwards(out, "A"), a, "C", now_ms(3))
    carry(forwards(out, "B"), b, "C", now_ms(3))
    assert bid in a.held and bid in b.held
    t = now_ms(4)
    out_a = a.handle(ContactUp("B", t))
    out_b = b.handle(ContactUp("A", t))
    # Only the metadata bundles go out at contact start.
    assert [decode_bundle(f.data).primary.is_admin_record for f in forwards(out_a)] == [True]
    after = carry(forwards(out_b, "A"), a, "B", t)
    assert not [f for f in forwards(after, "B")
                if not decode_bundle(f.data).primary.is_admin_record]
    assert b.router.metadata_for("A", 4)["summary"] == [bid]


def test_without_metadata_from_the_peer_routing_goes_on_after_the_wait():
    """A peer that sends no metadata (not netemu) gets the bundle after METADATA_WAIT_MS."""

    a = core("A", "epidemic")
    t = now_ms(1)
    a.handle(AppSend("ipn:1.1", "ipn:4.1", b"x", 600_000, t))
    out = a.handle(ContactUp("B", t))
    assert [decode_bundle(f.data).primary.is_admin_record for f in forwards(out)] == [True]
    out = a.handle(Tick(t + METADATA_WAIT_MS))
    assert [decode_bundle(f.data).primary.is_admin_record for f in forwards(out)] == [False]


def test_spray_and_wait_copies_halve_across_each_hop():
    a = core("A", "spray-and-wait", copies=8)
    b = core("B", "spray-and-wait", copies=8)
    t = now_ms(1)
    meet(a, b, t)
    out = a.handle(AppSend("ipn:1.1", "ipn:3.1", b"spray", 600_000, t))
    bid = next(x for x in out if isinstance(x, Accept)).bundle_id
    (f,) = forwards(out, "B")
    sent = decode_bundle(f.data)
    blk = sent.block_by_type(BLOCK_COPIES)
    assert blk is not None and blk.flags & BlockFlags.DISCARD_IF_UNPROCESSED
    assert copies_of(sent) == 4
    a.handle(TransmissionDone(bid, "B", t))
    assert a.router.copies_held(bid) == 4
    # B received 4 copies (not 1): it sprays 2 on to D, keeps 2.
    carry([f], b, "A", t)
    assert b.router.copies_held(bid) == 4
    d = core("D", "spray-and-wait", copies=8)
    out, _ = meet(b, d, now_ms(2))
    (f2,) = forwards(out, "D")
    assert copies_of(decode_bundle(f2.data)) == 2
    b.handle(TransmissionDone(bid, "D", now_ms(2)))
    assert b.router.copies_held(bid) == 2


def test_routers_without_copies_send_no_copies_block():
    a = core("A", "epidemic")
    meet(a, core("B", "epidemic"), now_ms(1))
    out = a.handle(AppSend("ipn:1.1", "ipn:3.1", b"e", 600_000, now_ms(1)))
    data = [f for f in forwards(out, "B") if not decode_bundle(f.data).primary.is_admin_record]
    assert data and decode_bundle(data[0].data).block_by_type(BLOCK_COPIES) is None


def test_a_stretch_of_received_bundles_with_metadata_in_it_routes_as_one_by_one():
    """handle_many routes a stretch of received bundles together; the neighbour's metadata
    arriving in the middle of the stretch is applied in its place: the bundles before it
    wait for it as with handle(), those after it are routed on it (bundles from C, the
    metadata from B)."""
    def stretch():
        a, b = core("A", "epidemic"), core("B", "epidemic")
        t = now_ms(1)
        a.handle(AppSend("ipn:1.1", "ipn:4.1", b"x", 600_000, t))
        a.handle(ContactUp("B", t))
        md = forwards(b.handle(ContactUp("A", t)), "A")
        assert len(md) == 1
        rx = [BundleReceived(Bundle.new("ipn:2.1", "ipn:4.1", b"y%d" % i, lifetime_ms=600_000,
                                        creation_ms=t, seq=i).encode(), "C", t)
              for i in range(3)]
        return a, [rx[0], BundleReceived(md[0].data, "B", t), rx[1], rx[2]]

    one, events = stretch()
    want = [one.handle(ev) for ev in events]
    many, events = stretch()
    got = many.handle_many(events)

    def key(a):
        return (type(a).__name__, getattr(a, "bundle_id", None), getattr(a, "neighbour", None))
    for g, w in zip(got, want, strict=True):
        assert sorted(map(key, g), key=repr) == sorted(map(key, w), key=repr)
    # to B only once B's summary vector came: the app's bundle and the first one from C
    # then, the later ones from C as they came
    assert [len(forwards(out, "B")) for out in got] == [0, 2, 1, 1]
