"""Fragmentation and reassembly (netemu.dtn.fragment): RFC 9171 sections 5.8 and 5.9."""

from __future__ import annotations

import pytest
from dtn_strategies import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from netemu.dtn.bundle import (
    BLOCK_HOP_COUNT,
    BLOCK_PAYLOAD,
    BlockFlags,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    decode_bundle,
    decode_bundle_strict,
)
from netemu.dtn.fragment import FragmentError, Reassembler, fragment, reassemble, whole_id


def _bundle(payload: bytes, *, flags: int = 0, crc: str = "crc32c", extra: bool = True,
            hop_limit: int | None = 9) -> Bundle:
    b = Bundle.new("ipn:1.1", "ipn:2.1", payload, lifetime_ms=60_000,
                   creation_ms=790_000_000_000, seq=7, crc=crc, flags=flags,
                   hop_limit=hop_limit)
    if extra:  # one block replicated in every fragment, one for the first only
        b.blocks.insert(0, CanonicalBlock(200, 5, b"everywhere",
                                          BlockFlags.REPLICATE_IN_FRAGMENTS))
        b.blocks.insert(0, CanonicalBlock(201, 6, b"first only", 0))
    return b


def test_fragments_fit_the_limit_and_follow_the_block_rules():
    b = _bundle(bytes(range(256)) * 40)
    frags = fragment(b, 1_000)
    assert len(frags) > 10
    for i, f in enumerate(frags):
        wire = f.encode()
        assert len(wire) <= 1_000
        g = decode_bundle_strict(wire)  # valid BPv7, CRCs included
        assert g.primary.flags & BundleFlags.IS_FRAGMENT
        assert g.primary.total_adu_length == len(b.payload)
        types = [blk.type for blk in g.blocks]
        assert 200 in types and BLOCK_HOP_COUNT in types  # replicated / per hop
        assert (201 in types) == (i == 0)                # others: first fragment only
        assert types[-1] == BLOCK_PAYLOAD
    offsets = [f.primary.fragment_offset for f in frags]
    assert offsets == sorted(offsets) and offsets[0] == 0
    whole = reassemble(frags)
    assert whole.encode() == b.encode()
    assert whole.id == b.id == whole_id(frags[3])


def test_must_not_fragment_and_too_small_a_limit_are_refused():
    with pytest.raises(FragmentError, match="must-not-fragment"):
        fragment(_bundle(b"x" * 5_000, flags=BundleFlags.MUST_NOT_FRAGMENT), 1_000)
    with pytest.raises(FragmentError, match="no room for payload"):
        fragment(_bundle(b"x" * 5_000), 60)


def test_a_fragment_fragmented_again_keeps_offsets_in_the_original_adu():
    b = _bundle(bytes(range(200)) * 50)
    first = fragment(b, 6_000)
    again = [g for f in first for g in fragment(f, 900)]
    assert all(len(g.encode()) <= 900 for g in again)
    r = Reassembler()
    done = [r.add(g, g.id, len(g.encode())) for g in reversed(again)]
    assert done[:-1] == [None] * (len(again) - 1)
    assert done[-1] is not None and done[-1].bundle.encode() == b.encode()
    assert r.held_bytes == 0 and len(r) == 0


def test_refusals_name_the_reason():
    b = _bundle(b"y" * 3_000)
    frags = fragment(b, 1_000)
    r = Reassembler(max_bytes=1_500)
    assert r.refusal(frags[0], 1_000) is None
    r.add(frags[0], frags[0].id, 1_000)
    assert "reassembly cap" in (r.refusal(frags[1], 1_000) or (0, ""))[1]
    p = frags[1].primary
    bad = Bundle(type(p)(p.destination, p.source, p.report_to, p.creation_ms, p.sequence,
                         p.lifetime_ms, p.flags, p.crc_type, p.fragment_offset, 99_999),
                 frags[1].blocks)
    assert "total ADU length 99999" in (r.refusal(bad, 10) or (0, ""))[1]
    r.discard(frags[0].id)
    assert r.held_bytes == 0 and len(r) == 0


@st.composite
def _pieces(draw: st.DrawFn) -> tuple[Bundle, list[Bundle]]:
    """A random bundle and a random set of fragments that covers it: fragments made at
    random limits, some fragmented again, shuffled, with duplicates and overlaps."""
    payload = draw(st.binary(min_size=1, max_size=3_000))
    b = _bundle(payload, crc=draw(st.sampled_from(["none", "crc16", "crc32c"])),
                extra=draw(st.booleans()), hop_limit=draw(st.sampled_from([None, 5])))
    pieces: list[Bundle] = []
    for _ in range(draw(st.integers(1, 3))):  # several covers: overlapping fragments
        limit = draw(st.integers(150, 4_000))
        for f in fragment(b, limit):
            if draw(st.booleans()) and len(f.payload) > 1:
                pieces += fragment(f, draw(st.integers(150, 4_000)))
            else:
                pieces.append(f)
    pieces += draw(st.lists(st.sampled_from(pieces), max_size=4))  # duplicates
    return b, draw(st.permutations(pieces))


@fuzz_settings(200)
@given(_pieces())
def test_random_fragments_in_any_order_reassemble_to_the_original(case):
    b, pieces = case
    r = Reassembler()
    done = []
    for f in pieces:
        wire = f.encode()
        g = decode_bundle(wire)  # as a node receives it
        assert r.refusal(g, len(wire)) is None
        c = r.add(g, g.id, len(wire))
        if c is not None:
            done.append(c)
            break  # the rest would start a new reassembly: the core dedupes by ID
    assert len(done) == 1
    assert done[0].bundle.encode() == b.encode()
    assert r.held_bytes == 0 and len(r) == 0
