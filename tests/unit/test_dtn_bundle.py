"""BPv7 bundles: CRCs, strict CBOR, EIDs, encode/decode, errors a user can act on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cbor2
import pytest

from netemu.dtn import cbor, crc
from netemu.dtn.bundle import (
    BLOCK_BUNDLE_AGE,
    BLOCK_HOP_COUNT,
    BLOCK_PAYLOAD,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    PrimaryBlock,
    bundle_length,
    datetime_to_dtn_ms,
    decode_bundle,
    decode_bundle_strict,
    unix_ms_to_dtn_ms,
)
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError
from netemu.errors import InputError, RemoteProtocolError

VECTORS = Path(__file__).resolve().parents[1] / "data" / "rfc9173-appendix-a.json"


def vectors() -> dict:
    return json.loads(VECTORS.read_text())


# --- CRC -------------------------------------------------------------------------------

def test_crc_check_values():
    # The catalogue check values of CRC-16/X-25 and CRC-32C (iSCSI) for "123456789".
    assert crc.crc16_x25(b"123456789") == 0x906E
    assert crc.crc32c(b"123456789") == 0xE3069283
    assert crc.crc32c_py(b"123456789") == 0xE3069283


def test_fast_crcs_match_bitwise_references():
    for n in (0, 1, 7, 64, 1000, 4099):
        data = os.urandom(n)
        assert crc.crc16_x25(data) == crc.crc16_x25_py(data)
        assert crc.crc32c(data) == crc.crc32c_py(data)


# --- CBOR ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32,
                                   2**64 - 1, -1, -24, -25, b"", b"x" * 300, "", "héllo",
                                   [], [1, [2, b"a"]], {1: 2, "a": [3], -1: 0}, True,
                                   False, None])
def test_cbor_encoding_is_cbor2_canonical(value):
    assert cbor.dumps(value) == cbor2.dumps(value, canonical=True)
    assert cbor.loads(cbor.dumps(value)) == value


@pytest.mark.parametrize("data, words", [
    (b"\x18\x01", "shortest form"),
    (b"\x19\x00\x01", "shortest form"),
    (b"\x9f\xff", "indefinite-length array"),
    (b"\x5f\xff", "indefinite-length byte string"),
    (b"\xc1\x00", "tag 1"),
    (b"\xfa\x00\x00\x00\x00", "floating-point"),
    (b"\x82\x01", "cannot fit"),
    (b"\x45ab", "truncated byte string"),
    (b"\x62\xff\xfe", "UTF-8"),
    (b"\xa2\x02\x00\x01\x00", "canonical order"),
    (b"\x01\x02", "trailing"),
    (b"\x81" * 40 + b"\x00", "deeper"),
])
def test_cbor_refuses_non_canonical_input_with_offset(data, words):
    with pytest.raises(BundleError) as e:
        cbor.loads(data)
    assert words in str(e.value)
    assert e.value.offset is not None


# --- EIDs ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, hexcbor", [
    ("ipn:1.2", "8202820102"),
    ("ipn:977000.1", "820282" + "1a000ee868" + "01"),
    ("dtn://sat1/app", "82016a2f2f736174312f617070"),
    ("dtn:none", "820100"),
])
def test_eid_text_and_cbor_forms(text, hexcbor):
    eid = EID.parse(text)
    assert str(eid) == text
    assert eid.to_cbor().hex() == hexcbor
    assert cbor.dumps(eid.to_obj()).hex() == hexcbor
    assert EID.decode(bytes.fromhex(hexcbor), 0) == (eid, len(hexcbor) // 2)


def test_eid_views():
    e = EID.parse("ipn:5.7")
    assert (e.node_number, e.service, str(e.node_id())) == (5, 7, "ipn:5.0")
    d = EID.parse("dtn://gs-1/inbox")
    assert (d.node_name, d.service, str(d.node_id())) == ("gs-1", "inbox", "dtn://gs-1/")
    assert EID.parse("dtn:none").is_none


@pytest.mark.parametrize("text", ["ipn:1", "ipn:a.b", "ipn:-1.2", "dtn:foo", "dtn://",
                                  "dtn://node", "http://x", "dtn://a b/c"])
def test_bad_eids_are_clear_errors(text):
    with pytest.raises(BundleError) as e:
        EID.parse(text)
    assert "endpoint ID" in str(e.value) or "ipn" in str(e.value)


# --- bundles ---------------------------------------------------------------------------

@pytest.mark.parametrize("crc_name", ["crc32c", "crc16", "none"])
def test_round_trip_each_crc_type(crc_name):
    b = Bundle.new("ipn:1.1", "dtn://gs/app", b"hello" * 300, lifetime_ms=60_000,
                   creation_ms=123_456_789, seq=7, report_to="ipn:1.0", crc=crc_name,
                   flags=BundleFlags.REPORT_DELIVERY, hop_limit=16)
    data = b.encode()
    d = decode_bundle(data)
    assert d == b
    assert d.encode() == data
    assert d.id == "ipn:1.1,123456789,7"
    assert d.hop_count == (16, 0)
    assert d.primary.flags == BundleFlags.REPORT_DELIVERY
    assert decode_bundle_strict(data) == d


def test_extension_blocks_are_maintained():
    b = Bundle.new("ipn:1.1", "ipn:2.1", b"x", lifetime_ms=1000, creation_ms=0, seq=0)
    assert b.bundle_age_ms == 0  # creation time 0 forces an age block (RFC 9171 4.4.2)
    b.set_bundle_age(250)
    b.set_previous_node(EID.parse("ipn:3.0"))
    b.set_hop_count(5, 1)
    d = decode_bundle(b.encode())
    assert (d.bundle_age_ms, str(d.previous_node), d.hop_count) == (250, "ipn:3.0", (5, 1))
    assert d.blocks[-1].type == BLOCK_PAYLOAD
    assert len({blk.number for blk in d.blocks}) == len(d.blocks)


def test_lifetime_and_expiry_in_dtn_time():
    from datetime import datetime, timezone
    assert datetime_to_dtn_ms(datetime(2000, 1, 1, 0, 0, 1, tzinfo=timezone.utc)) == 1000
    assert unix_ms_to_dtn_ms(946_684_800_000) == 0
    b = Bundle.new("ipn:1.1", "ipn:2.1", b"x", lifetime_ms=1000, creation_ms=5000)
    assert b.expiry_ms() == 6000
    assert not b.expired(5999) and b.expired(6000)
    # No clock at the source: age block + time held here.
    n = Bundle.new("ipn:1.1", "ipn:2.1", b"x", lifetime_ms=1000, creation_ms=0, age_ms=400)
    assert n.expiry_ms(received_ms=10_000) == 10_600
    assert not n.expired(10_599, received_ms=10_000) and n.expired(10_600, received_ms=10_000)


def test_fragment_identified_by_offset_and_length():
    p = PrimaryBlock(EID.parse("ipn:2.1"), EID.parse("ipn:1.1"), EID.parse("dtn:none"),
                     1000, 3, 60_000, flags=BundleFlags.IS_FRAGMENT, fragment_offset=100,
                     total_adu_length=500)
    b = Bundle(p, [CanonicalBlock(BLOCK_PAYLOAD, 1, b"y" * 50)])
    d = decode_bundle(b.encode())
    assert d.primary.is_fragment and d.id == "ipn:1.1,1000,3,100,50"


def _bundle_bytes() -> bytes:
    return Bundle.new("ipn:1.1", "ipn:2.1", b"payload!", lifetime_ms=1000,
                      creation_ms=99, seq=1, hop_limit=3).encode()


def test_corrupted_payload_names_block_field_and_offset():
    data = bytearray(_bundle_bytes())
    data[-10] ^= 0x01  # inside the payload
    with pytest.raises(BundleError) as e:
        decode_bundle(bytes(data))
    err = e.value
    assert (err.block, err.block_name, err.field) == (2, "payload", "crc")
    assert "CRC-32C mismatch" in str(err) and f"byte {err.offset}" in str(err)
    # bytes from a peer: a remote protocol error, not the user's input
    assert isinstance(err, RemoteProtocolError) and not isinstance(err, InputError)


@pytest.mark.parametrize("mutate, words", [
    (lambda d: d[:-1], "0xff break"),
    (lambda d: d + b"\x00", "trailing"),
    (lambda d: b"\x80" + d[1:], "starts with 0x9f"),
    (lambda d: b"", "empty"),
    (lambda d: d[:2] + b"\x06" + d[3:], "version 6"),
])
def test_malformed_bundles(mutate, words):
    with pytest.raises(BundleError) as e:
        decode_bundle(mutate(_bundle_bytes()))
    assert words in str(e.value)


def _raw(blocks: list[CanonicalBlock], crc_name: str = "none") -> bytes:
    p = PrimaryBlock(EID.parse("ipn:2.1"), EID.parse("ipn:1.1"), EID.parse("dtn:none"), 1, 1,
                     1000, crc_type=0)
    return b"\x9f" + p.encode() + b"".join(b.encode() for b in blocks) + b"\xff"


@pytest.mark.parametrize("blocks, words", [
    ([CanonicalBlock(7, 2, b"\x00", 0, 0)], "no payload block"),
    ([CanonicalBlock(1, 1, b"x", 0, 0), CanonicalBlock(7, 2, b"\x00", 0, 0)],
     "follows the payload"),
    ([CanonicalBlock(7, 2, b"\x00", 0, 0), CanonicalBlock(10, 2, b"\x82\x01\x00", 0, 0),
      CanonicalBlock(1, 1, b"x", 0, 0)], "duplicate block number 2"),
    ([CanonicalBlock(7, 2, b"\x00", 0, 0), CanonicalBlock(7, 3, b"\x01", 0, 0),
      CanonicalBlock(1, 1, b"x", 0, 0)], "more than one bundle age"),
    ([CanonicalBlock(1, 2, b"x", 0, 0)], "block number 1"),
    ([CanonicalBlock(BLOCK_HOP_COUNT, 2, b"\x81\x01", 0, 0), CanonicalBlock(1, 1, b"x", 0, 0)],
     "hop count"),
    ([CanonicalBlock(BLOCK_BUNDLE_AGE, 2, b"\x9f\xff", 0, 0), CanonicalBlock(1, 1, b"x", 0, 0)],
     "indefinite"),
])
def test_structural_rules(blocks, words):
    with pytest.raises(BundleError) as e:
        decode_bundle(_raw(blocks))
    assert words in str(e.value)


def test_inner_indefinite_array_refused():
    data = bytearray(_raw([CanonicalBlock(1, 1, b"x", 0, 0)]))
    assert data[1] == 0x88
    data[1:2] = b"\x9f"
    data[-1:] = b"\xff\xff"  # make it well-formed CBOR: still refused
    with pytest.raises(BundleError) as e:
        decode_bundle(bytes(data))
    assert "indefinite" in str(e.value) and e.value.block == 0


def test_bundle_length_for_stream_framing():
    one = _bundle_bytes()
    two = one + one
    assert bundle_length(two) == len(one)
    for cut in range(len(one)):
        assert bundle_length(one[:cut]) is None
    with pytest.raises(BundleError):
        bundle_length(b"\x00abc")


def test_rfc9173_bundles_decode_and_reencode_identically():
    for name, hexdata in vectors()["vectors"].items():
        data = bytes.fromhex(hexdata)
        b = decode_bundle(data)
        assert b.encode() == data, name
        assert str(b.source) == "ipn:2.1" and str(b.destination) == "ipn:1.2"
        assert b.primary.sequence == 40 and b.primary.lifetime_ms == 1_000_000
