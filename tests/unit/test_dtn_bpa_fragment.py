"""The core's fragmentation (to a next hop's transfer MRU, to a contact's volume) and
reassembly at the destination: stored, restored after a restart, bounded, expired."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from test_dtn_bpa import Net

from netemu.agent.store import BundleStore
from netemu.dtn.bpa import (
    BundleAgent,
    BundleReceived,
    CoreConfig,
    Delete,
    Forward,
    LinkLimit,
    Note,
    Refuse,
    Tick,
)
from netemu.dtn.bundle import Bundle, BundleFlags, decode_bundle
from netemu.dtn.eid import EID
from netemu.dtn.fragment import fragment
from netemu.dtn.state import BundleState
from netemu.dtn.status import Reason
from netemu.plan.contacts import Contact, ContactPlan, Node
from netemu.routing.cgr import CGRRouter

PAYLOAD = bytes(range(251)) * 40  # 10,040 bytes


@pytest.fixture
def net(tmp_path):
    n = Net(tmp_path)
    yield n
    n.close()


def _notes(net, node, event):
    return [a for n, a in net.log if n == node and isinstance(a, Note) and a.event == event]


def _to_c(payload=PAYLOAD, **kw):
    return Bundle.new("ipn:1.1", "ipn:3.1", payload, lifetime_ms=60_000,
                      creation_ms=1_000_000, seq=3, **kw)


def test_a_bundle_over_the_next_hops_mru_goes_in_fragments_and_arrives_whole(net):
    net.up("A", "B")
    net.up("B", "C")
    net.run("A", LinkLimit("B", 2_000, net.now))
    net.send(payload=PAYLOAD)
    sent = [a for n, a in net.log if n == "A" and isinstance(a, Forward)]
    assert len(sent) >= 6 and all(len(a.data) <= 2_000 for a in sent)
    assert all(decode_bundle(a.data).primary.is_fragment for a in sent)
    assert net.app_payloads("C") == [PAYLOAD]          # once, whole
    assert net.delivered["C"][0].primary.is_fragment is False
    assert net.agents["A"].counters["fragmented"] == 1
    assert net.agents["C"].counters["reassembled"] == 1
    assert _notes(net, "A", "bundle_fragmented")
    counts = net.stores["C"].counts()
    assert counts["fragment"] == 0 and counts["delivered"] == len(sent) + 1
    assert net.agents["C"].status()["reassembly_bytes"] == 0


def test_must_not_fragment_is_never_split_and_the_reason_is_logged(net):
    net.up("A", "B")
    net.up("B", "C")
    net.run("A", LinkLimit("B", 2_000, net.now))
    net.send(payload=PAYLOAD, flags=BundleFlags.MUST_NOT_FRAGMENT)
    # B takes at most 2,000 bytes: the bundle is not sent to it at all; it waits
    assert not [a for n, a in net.log if n == "A" and isinstance(a, Forward)]
    assert net.agents["A"].status()["pending"] == 1
    net.tick(10_000)  # asked again: still waits, logged once
    (note,) = _notes(net, "A", "fragmentation_refused")
    assert "must-not-fragment" in note.message and "at most 2000" in note.message
    net.run("A", LinkLimit("B", None, net.now))  # B takes anything now: it goes, whole
    net.tick(10_000)
    sent = [a for n, a in net.log if n == "A" and isinstance(a, Forward)]
    assert [decode_bundle(a.data).primary.is_fragment for a in sent] == [False]
    assert net.app_payloads("C") == [PAYLOAD]


def test_fragments_in_any_order_with_duplicates_and_overlaps_are_delivered_once(net):
    b = _to_c()
    pieces = fragment(b, 3_000) + fragment(b, 1_700)  # two covers: overlapping
    pieces.reverse()
    pieces.insert(2, pieces[0])                        # a duplicate
    for f in pieces:
        back = net.run("C", BundleReceived(f.encode(), "B", net.now))
        assert not [a for a in back if isinstance(a, Refuse)]
    assert net.app_payloads("C") == [PAYLOAD]
    assert net.agents["C"].status()["reassembling"] == 0


def test_a_restart_mid_reassembly_loses_no_fragment(tmp_path):
    net = Net(tmp_path)
    pieces = fragment(_to_c(), 1_500)
    half = len(pieces) // 2
    for f in pieces[:half]:
        net.run("C", BundleReceived(f.encode(), "B", net.now))
    assert net.stores["C"].counts()["fragment"] == half
    net.stores["C"].close()  # C restarts: a fresh core over its store
    net.stores["C"] = BundleStore(tmp_path / "C.db")
    net.agents["C"] = net._agent("C", 3)
    acts = net.agents["C"].restore(net.stores["C"].by_state(*BundleState), net.now)
    assert acts == [] and net.agents["C"].status()["reassembling"] == 1
    for f in pieces[half - 1:]:  # one sent again (its ack was lost): a duplicate
        net.run("C", BundleReceived(f.encode(), "B", net.now))
    assert net.app_payloads("C") == [PAYLOAD]
    # A fragment of a bundle put together already adds nothing.
    again = net.run("C", BundleReceived(fragment(_to_c(), 4_000)[1].encode(), "B", net.now))
    assert again[0].duplicate is True and net.app_payloads("C") == [PAYLOAD]
    net.close()


def test_reassembly_cap_refuses_with_a_clear_event(tmp_path):
    net = Net(tmp_path)
    net.agents["C"] = BundleAgent(CoreConfig(EID.ipn(3, 0), "C", reassembly_max_bytes=4_000),
                                  net.router_factory("C"))
    pieces = fragment(_to_c(), 1_500)
    outs = [net.run("C", BundleReceived(f.encode(), "B", net.now)) for f in pieces[:4]]
    refused = [a for out in outs for a in out if isinstance(a, Refuse)]
    assert len(refused) == 2 and refused[0].event == "reassembly_refused"
    assert refused[0].reason == Reason.DEPLETED_STORAGE
    assert "reassembly cap" in refused[0].message
    net.close()


def test_partial_reassemblies_expire_with_the_bundle(net):
    pieces = fragment(_to_c(), 1_500)
    for f in pieces[:3]:
        net.run("C", BundleReceived(f.encode(), "B", net.now))
    net.now = 1_000_000 + 60_000
    acts = net.run("C", Tick(net.now))
    gone = [a for a in acts if isinstance(a, Delete)]
    assert len(gone) == 3 and {a.reason for a in gone} == {Reason.LIFETIME_EXPIRED}
    st = net.agents["C"].status()
    assert st["reassembling"] == 0 and st["reassembly_bytes"] == 0
    assert net.stores["C"].counts()["fragment"] == 0


def test_a_fragment_flagged_must_not_fragment_is_refused(net):
    f = fragment(_to_c(), 1_500)[0]
    p = f.primary
    bad = Bundle(type(p)(p.destination, p.source, p.report_to, p.creation_ms, p.sequence,
                         p.lifetime_ms, p.flags | BundleFlags.MUST_NOT_FRAGMENT, p.crc_type,
                         p.fragment_offset, p.total_adu_length), f.blocks)
    (refuse,) = net.run("C", BundleReceived(bad.encode(), "B", net.now))
    assert isinstance(refuse, Refuse) and "must-not-fragment" in refuse.message


def test_cgr_splits_a_bundle_larger_than_the_contacts_volume(tmp_path):
    """A-B carries 1,000 bytes/s in three 10 s contacts: 10 KB each. A 25 KB bundle fits
    none of them whole; CGR's largest piece splits it across them."""
    plan = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc),
                       {n: Node(n, i) for i, n in ((1, "A"), (2, "B"), (3, "C"))},
                       [Contact("A", "B", s, s + 10, 8_000.0, 0.01) for s in (0, 20, 40)]
                       + [Contact("B", "A", s, s + 10, 8_000.0, 0.01) for s in (0, 20, 40)])
    net = Net(tmp_path, router_factory=lambda n: CGRRouter(n, plan), plan_epoch_ms=1_000_000)
    try:
        net.agents["A"].cfg.min_fragment_bytes = 1024
        net.now = 1_000_000
        net.up("A", "B")
        payload = bytes(range(250)) * 100
        net.send(dst="ipn:2.1", payload=payload, lifetime_ms=3_600_000)
        sent = [a for n, a in net.log if n == "A" and isinstance(a, Forward)]
        assert len(sent) >= 3 and all(len(a.data) < 10_000 for a in sent)
        assert net.agents["A"].counters["fragmented"] >= 1
        assert net.app_payloads("B") == [payload]
    finally:
        net.close()


def test_bundles_under_twice_the_smallest_fragment_wait_whole_for_volume(tmp_path):
    plan = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc),
                       {n: Node(n, i) for i, n in ((1, "A"), (2, "B"), (3, "C"))},
                       [Contact("A", "B", s, s + 10, 8_000.0, 0.01) for s in (0, 20)])
    net = Net(tmp_path, router_factory=lambda n: CGRRouter(n, plan), plan_epoch_ms=1_000_000)
    try:
        net.now = 1_000_000
        net.up("A", "B")
        net.send(dst="ipn:2.1", payload=b"x" * 25_000, lifetime_ms=3_600_000)
        assert net.agents["A"].counters["fragmented"] == 0  # default: 64 KiB pieces at least
        assert not [a for n, a in net.log if n == "A" and isinstance(a, Forward)]
        assert net.agents["A"].status()["pending"] == 1
    finally:
        net.close()


def test_the_whole_bundle_arriving_mid_reassembly_ends_it(net):
    b = _to_c()
    pieces = fragment(b, 1_500)
    for f in pieces[:2]:
        net.run("C", BundleReceived(f.encode(), "B", net.now))
    net.run("C", BundleReceived(b.encode(), "B", net.now))
    for f in pieces[2:]:  # the rest: the bundle is known, nothing is delivered again
        back = net.run("C", BundleReceived(f.encode(), "B", net.now))
        assert back[0].duplicate is True
    assert net.app_payloads("C") == [PAYLOAD]
    st = net.agents["C"].status()
    assert st["reassembling"] == 0 and st["reassembly_bytes"] == 0
    assert net.stores["C"].counts()["fragment"] == 0


def test_a_copy_the_router_keeps_is_not_split(tmp_path):
    from test_dtn_bpa import PLAN

    from netemu.routing.epidemic import EpidemicRouter

    net = Net(tmp_path, router_factory=lambda n: EpidemicRouter(n, PLAN))
    try:
        net.up("A", "B")
        net.run("A", LinkLimit("B", 2_000, net.now))
        net.send(payload=PAYLOAD)
        assert net.agents["A"].counters["fragmented"] == 0
        (note,) = _notes(net, "A", "fragmentation_refused")
        assert "kept" in note.message
    finally:
        net.close()


def test_status_reports_name_fragments_and_the_whole_bundle(net):
    """Reception reports are about each fragment (offset and length in the report);
    the delivery report is about the whole bundle, once."""
    net.up("A", "B")
    net.up("B", "C")
    net.run("A", LinkLimit("B", 4_000, net.now))
    net.send(payload=PAYLOAD, report_to="ipn:1.7",
             flags=BundleFlags.REPORT_RECEPTION | BundleFlags.REPORT_DELIVERY)
    reps = net.reports("A")
    delivered = [r for r in reps if "delivered" in r.status]
    received = [r for r in reps if "received" in r.status]
    assert len(delivered) == 1 and delivered[0].fragment_offset is None
    frags = sorted({(r.fragment_offset, r.fragment_length) for r in received})
    assert len(frags) >= 3 and frags[0][0] == 0
    assert sum(n for _, n in frags) == len(PAYLOAD)  # the pieces, each reported
    assert len(received) == 2 * len(frags)  # at B and at C
