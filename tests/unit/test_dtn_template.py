"""OriginTemplate: the bundles an agent originates, byte for byte as the block objects
encode them (Bundle.new + set_previous_node + encode), and decodable by the strict decoder."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netemu.dtn.bundle import Bundle, crc_type_of, decode_bundle_strict
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError
from netemu.dtn.template import OriginTemplate

eids = st.one_of(
    st.builds(EID.ipn, st.integers(1, 2**64 - 1), st.integers(0, 2**64 - 1)),
    st.builds(lambda s: EID.parse(f"dtn://{s}/in"), st.from_regex(r"[a-z][a-z0-9]{0,20}",
                                                                     fullmatch=True)),
)
u64 = st.integers(0, 2**64 - 1)


@settings(max_examples=300, deadline=None)
@given(src=eids, dst=eids, rpt=st.one_of(st.none(), eids), flags=st.sampled_from(
    [0, 0x4, 0x20, 0x4000 | 0x10000 | 0x20000 | 0x40000]), lifetime=u64,
    crc=st.sampled_from(["crc32c", "crc16", "none"]), ctime=st.integers(1, 2**64 - 1),
    seq=u64, payload=st.binary(max_size=300) | st.sampled_from([b"", b"z" * 70_000]),
    prev=st.one_of(st.none(), eids))
def test_template_equals_block_objects(src, dst, rpt, flags, lifetime, crc, ctime, seq,
                                       payload, prev):
    ref = Bundle.new(src, dst, payload, lifetime_ms=lifetime, creation_ms=ctime, seq=seq,
                     report_to=rpt, crc=crc, flags=flags)
    if prev is not None:
        ref.set_previous_node(prev)
    t = OriginTemplate(src, dst, rpt or EID.parse("dtn:none"), flags=flags,
                       lifetime_ms=lifetime, crc_type=crc_type_of(crc), previous_node=prev)
    bundle, wire = t.make(ctime, seq, payload)
    assert wire == ref.encode()
    assert bundle.encode() == wire  # the blocks carry these bytes
    assert bundle.id == ref.id
    back = decode_bundle_strict(wire)  # CRCs and canonical form check out
    assert back.payload == payload and back.previous_node == prev
    assert back.primary.creation_ms == ctime and back.primary.sequence == seq


def test_template_refuses_what_bundle_new_refuses():
    src, dst, none = EID.parse("ipn:1.1"), EID.parse("ipn:2.1"), EID.parse("dtn:none")
    with pytest.raises(BundleError, match="fragment"):
        OriginTemplate(src, dst, none, flags=1, lifetime_ms=1, crc_type=2, previous_node=None)
    with pytest.raises(BundleError, match="lifetime_ms"):
        OriginTemplate(src, dst, none, flags=0, lifetime_ms=-5, crc_type=2, previous_node=None)
    t = OriginTemplate(src, dst, none, flags=0, lifetime_ms=1, crc_type=2, previous_node=None)
    with pytest.raises(BundleError, match="creation"):
        t.make(0, 1, b"x")  # no clock: needs an age block, Bundle.new's job
    with pytest.raises(BundleError, match="creation"):
        t.make(5, 2**64, b"x")
