"""BPSec: the RFC 9173 Appendix A bundles verify, decrypt, and are reproduced byte for
byte from their inputs; tampering and wrong keys are refused with a clear error."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from netemu.dtn.bpa import (
    BundleAgent,
    BundleReceived,
    CoreConfig,
    Delete,
    Deliver,
    StatusReportSent,
)
from netemu.dtn.bpsec import (
    REASON_FAILED_SECURITY,
    REASON_MISSING_SECURITY,
    SecurityPolicy,
    bcb_decrypt,
    bcb_encrypt,
    bib_sign,
    bib_verify,
)
from netemu.dtn.bundle import Bundle, BundleFlags, CanonicalBlock, decode_bundle
from netemu.dtn.eid import EID
from netemu.dtn.errors import SecurityError
from netemu.plan.contacts import ContactPlan, Node
from netemu.routing.base import Decision, Router

VECTORS = Path(__file__).resolve().parents[1] / "data" / "rfc9173-appendix-a.json"


def vectors() -> dict:
    return json.loads(VECTORS.read_text())


@pytest.fixture(scope="module")
def vec():
    v = vectors()
    c = v["common"]
    return {
        "v": {k: bytes.fromhex(x) for k, x in v["vectors"].items()},
        "hmac": bytes.fromhex(c["hmac_key"]),
        "aes": bytes.fromhex(c["aes_key_128"]),
        "iv": bytes.fromhex(c["iv"]),
        "kek": bytes.fromhex(c["key_encryption_key_A2"]),
        "text": c["payload_text"].encode(),
    }


def _primary_and_payload(vec, age: bool = False) -> Bundle:
    """The common primary block of Appendix A (ipn:2.1 -> ipn:1.2, creation 0, seq 40,
    lifetime 1,000,000 ms, no CRC) with the payload text."""
    b = Bundle.new("ipn:2.1", "ipn:1.2", vec["text"], lifetime_ms=1_000_000, creation_ms=0,
                   seq=40, report_to="ipn:2.1", crc="none", age_block=False)
    assert b.primary.encode().hex() == "88070000820282010282028202018202820201820018281a000f4240"
    if age:  # A.3: bundle age block 2 with 300 ms
        b.blocks.insert(0, CanonicalBlock(7, 2, bytes.fromhex("19012c"), 0, 0))
    return b


def test_a1_bib_verifies(vec):
    b = decode_bundle(vec["v"]["A.1_bib_hmac_sha512_payload"])
    assert bib_verify(b, vec["hmac"]) == [1]
    assert b.payload == vec["text"]


def test_a1_produced_byte_for_byte(vec):
    b = _primary_and_payload(vec)
    bib_sign(b, vec["hmac"], source="ipn:2.1", sha_variant=512, scope=0)
    assert b.encode() == vec["v"]["A.1_bib_hmac_sha512_payload"]


def test_a2_bcb_with_wrapped_key_decrypts_and_is_reproduced(vec):
    b = decode_bundle(vec["v"]["A.2_bcb_a128gcm_wrapped_key"])
    assert b.payload != vec["text"]
    assert bcb_decrypt(b, vec["kek"]) == [1]
    assert b.payload == vec["text"] and all(blk.type != 12 for blk in b.blocks)
    made = _primary_and_payload(vec)
    bcb_encrypt(made, vec["aes"], source="ipn:2.1", iv=vec["iv"], kek=vec["kek"], scope=0)
    assert made.encode() == vec["v"]["A.2_bcb_a128gcm_wrapped_key"]


def test_a3_bib_from_another_source_and_bcb(vec):
    b = decode_bundle(vec["v"]["A.3_bib_sha256_from_ipn3_plus_bcb"])
    assert bib_verify(b, {"ipn:3.0": vec["hmac"]}) == [0, 2]
    assert bcb_decrypt(b, {"ipn:2.1": vec["aes"]}) == [1]
    assert b.payload == vec["text"]
    made = _primary_and_payload(vec, age=True)
    assert made.encode() == vec["v"]["A.3_original_with_bundle_age"]
    bib_sign(made, vec["hmac"], source="ipn:3.0", targets=[0, 2], sha_variant=256, scope=0)
    bcb_encrypt(made, vec["aes"], source="ipn:2.1", iv=vec["iv"], scope=0)
    assert made.encode() == vec["v"]["A.3_bib_sha256_from_ipn3_plus_bcb"]


def test_a4_full_scope_bcb_over_bib(vec):
    key256 = vec["aes"] * 2
    b = decode_bundle(vec["v"]["A.4_full_scope_bib_sha384_bcb_a256gcm"])
    with pytest.raises(Exception):  # noqa: B017 - the BIB is encrypted until decrypted
        bib_verify(b, vec["hmac"])
    assert bcb_decrypt(b, key256) == [3, 1]
    assert bib_verify(b, vec["hmac"]) == [1]
    made = _primary_and_payload(vec)
    bib_sign(made, vec["hmac"], source="ipn:2.1", sha_variant=384, scope=7, block_number=3)
    bcb_encrypt(made, key256, source="ipn:2.1", iv=vec["iv"], scope=7, targets=[3, 1],
                block_number=2)
    assert made.encode() == vec["v"]["A.4_full_scope_bib_sha384_bcb_a256gcm"]


def test_tampered_payload_fails_integrity_with_clear_error(vec):
    b = decode_bundle(vec["v"]["A.1_bib_hmac_sha512_payload"])
    b.replace_block(CanonicalBlock(1, 1, b"Ready to generate a 32-byte PAYLOAD", 0, 0))
    with pytest.raises(SecurityError) as e:
        bib_verify(b, vec["hmac"])
    assert "integrity check failed" in str(e.value) and "BIB" in str(e.value)


def test_wrong_keys_refused(vec):
    b = decode_bundle(vec["v"]["A.1_bib_hmac_sha512_payload"])
    with pytest.raises(SecurityError):
        bib_verify(b, b"\x00" * 16)
    with pytest.raises(SecurityError) as e:
        bib_verify(b, {"ipn:9.0": vec["hmac"]})
    assert "no key for security source ipn:2.1" in str(e.value)
    c = decode_bundle(vec["v"]["A.2_bcb_a128gcm_wrapped_key"])
    with pytest.raises(SecurityError):
        bcb_decrypt(c, b"0123456789abcdef")


@pytest.mark.parametrize("bits", [256, 384, 512])
def test_sign_verify_round_trip_with_wrapped_key(bits):
    b = Bundle.new("ipn:1.1", "ipn:2.1", b"data" * 100, lifetime_ms=1000, creation_ms=5)
    key, kek = b"k" * 32, b"w" * 16
    bib_sign(b, key, source="ipn:1.0", sha_variant=bits, kek=kek)
    d = decode_bundle(b.encode())
    assert bib_verify(d, {"ipn:1.0": kek}) == [1]


def test_policy_drops_missing_and_failed(vec):
    key = b"s" * 32
    me = SecurityPolicy(node_id=EID.parse("ipn:1.0"), sign_key=key)
    peer = SecurityPolicy(verify_keys={"ipn:1.0": key}, require_bib_from=frozenset({"*"}))
    b = Bundle.new("ipn:1.1", "ipn:2.1", b"hello", lifetime_ms=1000, creation_ms=5)
    assert peer.check_inbound(b)[0] == REASON_MISSING_SECURITY
    me.apply_outbound(b)
    d = decode_bundle(b.encode())
    assert peer.check_inbound(d) is None
    d.replace_block(CanonicalBlock(1, 1, b"HELLO", 0, d.payload_block.crc_type))
    code, msg = peer.check_inbound(d)
    assert code == REASON_FAILED_SECURITY and "integrity" in msg


# --- the policy fails closed ------------------------------------------------------------

def _signed(src: str, key: bytes, *, sec_source: str | None = None,
            payload: bytes = b"hello") -> Bundle:
    """A bundle from ``src`` with a BIB over its payload (security source: ``src``'s node
    unless given), as it arrives on the wire."""
    b = Bundle.new(src, "ipn:2.1", payload, lifetime_ms=1000, creation_ms=5)
    bib_sign(b, key, source=sec_source or str(EID.parse(src).node_id()))
    return decode_bundle(b.encode())


def _tampered(b: Bundle) -> Bundle:
    b.replace_block(CanonicalBlock(1, 1, b"HELLO", 0, b.payload_block.crc_type))
    return b


def test_policy_requiring_bibs_without_any_key_delivers_nothing():
    """``require_bib_from: ["*"]`` with no verify keys cannot check a BIB: a tampered
    payload, a wrong key and an unknown key source are all refused, as is a good one."""
    pol = SecurityPolicy(require_bib_from=frozenset({"*"}))
    key = b"k" * 32
    for b in (_tampered(_signed("ipn:1.1", key)), _signed("ipn:1.1", b"w" * 32),
              _signed("ipn:7.1", key), _signed("ipn:1.1", key)):
        verdict = pol.check_inbound(b)
        assert verdict is not None and verdict[0] == REASON_FAILED_SECURITY
        assert "no key" in verdict[1]


def test_policy_requiring_bibs_refuses_wrong_key_tampering_and_unknown_source():
    key = b"k" * 32
    pol = SecurityPolicy(verify_keys={"ipn:1.0": key}, require_bib_from=frozenset({"*"}))
    assert pol.check_inbound(_signed("ipn:1.1", key)) is None
    code, msg = pol.check_inbound(_signed("ipn:1.1", b"w" * 32))
    assert code == REASON_FAILED_SECURITY and "integrity" in msg
    code, msg = pol.check_inbound(_tampered(_signed("ipn:1.1", key)))
    assert code == REASON_FAILED_SECURITY and "integrity" in msg
    code, msg = pol.check_inbound(_signed("ipn:7.1", key))
    assert code == REASON_FAILED_SECURITY and "no key for ipn:7.0" in msg


def test_policy_requires_the_bib_of_the_bundles_own_source():
    """Node 1's valid BIB on a bundle in node 7's name does not vouch for node 7: the
    payload must be signed by the node the bundle comes from."""
    key = b"k" * 32
    pol = SecurityPolicy(verify_keys={"ipn:1.0": key, "ipn:7.0": b"s" * 32},
                         require_bib_from=frozenset({"ipn:7.0"}))
    code, msg = pol.check_inbound(_signed("ipn:7.1", key, sec_source="ipn:1.0"))
    assert code == REASON_MISSING_SECURITY and "ipn:7.0" in msg
    assert pol.check_inbound(_signed("ipn:7.1", b"s" * 32)) is None


def test_policy_not_requiring_bibs_forwards_what_it_cannot_check():
    """A source no rule covers: a BIB without a key here is left alone (RFC 9172 5.1.2),
    one that fails with a key held here is refused."""
    key = b"k" * 32
    pol = SecurityPolicy(verify_keys={"ipn:1.0": key}, require_bib_from=frozenset({"ipn:1.0"}))
    assert pol.check_inbound(_signed("ipn:7.1", b"x" * 32)) is None
    assert pol.check_inbound(Bundle.new("ipn:7.1", "ipn:2.1", b"x", lifetime_ms=1000,
                                        creation_ms=5)) is None
    code, _ = pol.check_inbound(_signed("ipn:7.1", b"w" * 32, sec_source="ipn:1.0"))
    assert code == REASON_FAILED_SECURITY


def test_policy_names_the_required_sources_it_holds_no_key_for():
    k = b"k" * 32
    assert SecurityPolicy(require_bib_from=frozenset({"*"})).sources_without_key() == ["*"]
    assert SecurityPolicy(verify_keys={"ipn:3.0": k},
                          require_bib_from=frozenset({"ipn:2.0", "ipn:3.0"})
                          ).sources_without_key() == ["ipn:2.0"]
    assert SecurityPolicy(verify_keys={"*": k}, require_bib_from=frozenset({"ipn:2.0", "*"})
                          ).sources_without_key() == []
    assert SecurityPolicy(verify_keys={"ipn:2.1": k}, require_bib_from=frozenset({"ipn:2.0"})
                          ).sources_without_key() == []


class _NoRoute(Router):
    name = "no-route-test"

    def route(self, bundle, now_s, neighbours):
        return Decision(reason="none")


@pytest.mark.parametrize("case", ["tampered", "wrong key", "unknown source", "good"])
def test_agent_core_requiring_bibs_without_keys_delivers_nothing(case):
    """The core of a node with ``require_bib_from: ["*"]`` and no verify key delivers none
    of these bundles: each is deleted on arrival (reason 15), with a deletion report to
    the report-to endpoint."""
    plan = ContactPlan(datetime(2026, 1, 1, tzinfo=timezone.utc),
                       {n: Node(n, i) for i, n in ((1, "A"), (2, "B"), (7, "G"))}, [])
    core = BundleAgent(CoreConfig(EID.ipn(2, 0), "B", policy=SecurityPolicy(
        node_id=EID.ipn(2, 0), require_bib_from=frozenset({"*"}))), _NoRoute("B", plan))
    key = b"k" * 32
    src = "ipn:7.1" if case == "unknown source" else "ipn:1.1"
    b = Bundle.new(src, "ipn:2.1", b"hello", lifetime_ms=60_000, creation_ms=1_000_000,
                   flags=BundleFlags.REPORT_DELETION, report_to="ipn:1.7")
    bib_sign(b, b"w" * 32 if case == "wrong key" else key, source=str(EID.parse(src).node_id()))
    if case == "tampered":
        b.replace_block(CanonicalBlock(1, 1, b"HELLO", 0, b.payload_block.crc_type))
    acts = core.handle(BundleReceived(b.encode(), "A", 1_000_500))
    assert not any(isinstance(a, Deliver) for a in acts)
    deletes = [a for a in acts if isinstance(a, Delete)]
    assert [d.reason for d in deletes] == [REASON_FAILED_SECURITY]
    reports = [a for a in acts if isinstance(a, StatusReportSent)]
    assert [(r.status, r.reason) for r in reports] == [("deleted", REASON_FAILED_SECURITY)]
