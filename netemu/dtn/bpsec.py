"""BPSec (RFC 9172) with the default security contexts of RFC 9173.

- BIB-HMAC-SHA2 (context 1): :func:`bib_sign` adds a Block Integrity Block over target
  blocks, :func:`bib_verify` checks every BIB of a bundle against the keys a node holds.
- BCB-AES-GCM (context 2): :func:`bcb_encrypt` / :func:`bcb_decrypt`, with the key given
  directly or wrapped (RFC 3394 AES key wrap, the Appendix A.2 variant).
- :class:`SecurityPolicy`: per-node keys and rules, used by the bundle agent core.

The security block's data is the Abstract Security Block (:class:`ASB`): a CBOR sequence
of targets, context id, context flags, security source, parameters, results.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from netemu.dtn import cbor
from netemu.dtn.bundle import (
    BLOCK_BCB,
    BLOCK_BIB,
    BLOCK_PRIMARY,
    Bundle,
    CanonicalBlock,
)
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError, SecurityError

CONTEXT_BIB_HMAC_SHA2 = 1
CONTEXT_BCB_AES_GCM = 2

# BIB-HMAC-SHA2 parameter and result ids (RFC 9173 section 3.3, 3.4).
BIB_PARAM_SHA_VARIANT = 1
BIB_PARAM_WRAPPED_KEY = 2
BIB_PARAM_SCOPE = 3
BIB_RESULT_HMAC = 1
SHA_VARIANTS = {5: ("sha256", hashlib.sha256), 6: ("sha384", hashlib.sha384),
                7: ("sha512", hashlib.sha512)}
SHA_BY_BITS = {256: 5, 384: 6, 512: 7}

# BCB-AES-GCM parameter and result ids (RFC 9173 section 4.3, 4.4).
BCB_PARAM_IV = 1
BCB_PARAM_AES_VARIANT = 2
BCB_PARAM_WRAPPED_KEY = 3
BCB_PARAM_SCOPE = 4
BCB_RESULT_TAG = 1
AES_VARIANTS = {1: 16, 3: 32}  # A128GCM, A256GCM: key bytes

SCOPE_PRIMARY = 0x1
SCOPE_TARGET_HEADER = 0x2
SCOPE_SECURITY_HEADER = 0x4

# Status report reason codes of RFC 9172 section 11.2.
REASON_MISSING_SECURITY = 12
REASON_UNKNOWN_SECURITY = 13
REASON_UNEXPECTED_SECURITY = 14
REASON_FAILED_SECURITY = 15
REASON_CONFLICTING_SECURITY = 16


@dataclass
class ASB:
    """Abstract Security Block (RFC 9172 section 3.6)."""

    targets: list[int]
    context_id: int
    source: EID
    parameters: list[tuple[int, object]] = field(default_factory=list)
    results: list[list[tuple[int, object]]] = field(default_factory=list)

    def param(self, pid: int, default: object = None) -> object:
        for k, v in self.parameters:
            if k == pid:
                return v
        return default

    def encode(self) -> bytes:
        parts = [cbor.dumps(self.targets), cbor.uint(self.context_id),
                 cbor.uint(1 if self.parameters else 0), self.source.to_cbor()]
        if self.parameters:
            parts.append(cbor.dumps([[k, v] for k, v in self.parameters]))
        parts.append(cbor.dumps([[[k, v] for k, v in r] for r in self.results]))
        return b"".join(parts)

    @staticmethod
    def decode(data: bytes) -> ASB:
        """Strictly decode a BIB's or BCB's block-type-specific data."""
        p = 0
        fieldname = "targets"
        try:
            targets, p = cbor.decode_item(data, p)
            if (not isinstance(targets, list) or not targets
                    or not all(type(t) is int and t >= 0 for t in targets)):
                raise BundleError("security targets must be a non-empty array of block "
                                  "numbers", offset=0)
            if len(set(targets)) != len(targets):
                raise BundleError("duplicate security target", offset=0)
            fieldname = "context_id"
            ctx, p = cbor.decode_item(data, p)
            if type(ctx) is not int:
                raise BundleError("security context id must be an integer", offset=p)
            fieldname = "context_flags"
            flags, p = cbor.expect_uint(data, p, fieldname)
            fieldname = "security_source"
            src, p = EID.decode(data, p, fieldname)
            params: list[tuple[int, object]] = []
            if flags & 1:
                fieldname = "parameters"
                raw, p = cbor.decode_item(data, p)
                params = _id_value_pairs(raw, "parameter")
            fieldname = "results"
            raw_results, p = cbor.decode_item(data, p)
            if not isinstance(raw_results, list) or len(raw_results) != len(targets):
                raise BundleError("security results must be an array with one entry per "
                                  "target", offset=p)
            results = [_id_value_pairs(r, "result") for r in raw_results]
            if p != len(data):
                raise BundleError(f"{len(data) - p} trailing byte(s) in security block",
                                  offset=p)
        except BundleError as e:
            raise e.within(field=e.field or fieldname) from None
        return ASB(targets, ctx, src, params, results)


def _id_value_pairs(raw: object, what: str) -> list[tuple[int, object]]:
    if not isinstance(raw, list):
        raise BundleError(f"security {what}s must be an array of [id, value] pairs")
    out = []
    for item in raw:
        if not isinstance(item, list) or len(item) != 2 or type(item[0]) is not int:
            raise BundleError(f"each security {what} is an [id, value] pair")
        out.append((item[0], item[1]))
    return out


def _scope_prefix(bundle: Bundle, scope: int, target: int, sec_block: CanonicalBlock) -> bytes:
    """The part of IPPT / AAD that precedes the target: scope flags, the primary block,
    the target's and the security block's headers (RFC 9173 sections 3.7 and 4.7.1)."""
    parts = [cbor.uint(scope)]
    if scope & SCOPE_PRIMARY:
        parts.append(bundle.primary.encode())
    if scope & SCOPE_TARGET_HEADER:
        if target == BLOCK_PRIMARY:
            parts.append(cbor.uint(0) + cbor.uint(0) + cbor.uint(bundle.primary.flags))
        else:
            t = _target_block(bundle, target)
            parts.append(cbor.uint(t.type) + cbor.uint(t.number) + cbor.uint(t.flags))
    if scope & SCOPE_SECURITY_HEADER:
        parts.append(cbor.uint(sec_block.type) + cbor.uint(sec_block.number)
                     + cbor.uint(sec_block.flags))
    return b"".join(parts)


def _target_block(bundle: Bundle, number: int) -> CanonicalBlock:
    blk = bundle.block_by_number(number)
    if blk is None:
        raise SecurityError(f"security target block {number} is not in the bundle",
                            field="targets")
    return blk


def _ippt(bundle: Bundle, scope: int, target: int, sec_block: CanonicalBlock) -> bytes:
    prefix = _scope_prefix(bundle, scope, target, sec_block)
    if target == BLOCK_PRIMARY:  # the vectors of RFC 9173 A.3 fix this: a byte string
        return prefix + cbor.bstr(bundle.primary.encode())
    return prefix + cbor.bstr(_target_block(bundle, target).data)


def _new_block(bundle: Bundle, block_type: int, number: int | None, flags: int,
               crc_type: int | None) -> CanonicalBlock:
    n = bundle.next_block_number() if number is None else number
    ct = bundle.payload_block.crc_type if crc_type is None else crc_type
    return CanonicalBlock(block_type, n, b"", flags, ct)


def _insert_security_block(bundle: Bundle, blk: CanonicalBlock) -> None:
    """Put a new security block after the security blocks at the front of the block list
    (the order RFC 9173 Appendix A shows)."""
    i = 0
    while i < len(bundle.blocks) - 1 and bundle.blocks[i].type in (BLOCK_BIB, BLOCK_BCB):
        i += 1
    bundle.blocks.insert(i, blk)


# --- BIB-HMAC-SHA2 ---------------------------------------------------------------------

def bib_sign(
    bundle: Bundle,
    key: bytes,
    *,
    source: EID | str,
    targets: list[int] | None = None,
    sha_variant: int = 7,
    scope: int = SCOPE_PRIMARY | SCOPE_TARGET_HEADER | SCOPE_SECURITY_HEADER,
    kek: bytes | None = None,
    block_number: int | None = None,
    block_flags: int = 0,
    crc_type: int | None = None,
    include_scope: bool = True,
    include_variant: bool = True,
) -> CanonicalBlock:
    """Add a BIB (HMAC-SHA2) over ``targets`` (default: the payload, block 1).

    ``sha_variant`` is 5, 6, 7 (HMAC 256/384/512) or the bit count 256/384/512. With
    ``kek`` the HMAC key is sent wrapped (RFC 3394) under the key-encryption key. Returns
    the new block, placed after any security blocks at the front of the bundle.
    """
    variant = SHA_BY_BITS.get(sha_variant, sha_variant)
    if variant not in SHA_VARIANTS:
        raise SecurityError(f"unknown SHA variant {sha_variant} (5/6/7 or 256/384/512)",
                            field="sha_variant")
    src = source if isinstance(source, EID) else EID.parse(source)
    targets = [1] if targets is None else list(targets)
    blk = _new_block(bundle, BLOCK_BIB, block_number, block_flags, crc_type)
    params: list[tuple[int, object]] = []
    if include_variant:
        params.append((BIB_PARAM_SHA_VARIANT, variant))
    hmac_key = key
    if kek is not None:
        params.append((BIB_PARAM_WRAPPED_KEY, aes_key_wrap(kek, key)))
    if include_scope:
        params.append((BIB_PARAM_SCOPE, scope))
    digest = SHA_VARIANTS[variant][1]
    results: list[list[tuple[int, object]]] = [[(BIB_RESULT_HMAC, hmac.new(hmac_key, _ippt(bundle, scope, t, blk),
                                           digest).digest())] for t in targets]
    asb = ASB(targets, CONTEXT_BIB_HMAC_SHA2, src, params, results)
    blk = CanonicalBlock(BLOCK_BIB, blk.number, asb.encode(), blk.flags, blk.crc_type)
    _insert_security_block(bundle, blk)
    return blk


def _bib_key(asb: ASB, keys: KeyLookup) -> bytes:
    key = keys(asb.source)
    if key is None:
        raise SecurityError(f"no key for security source {asb.source}",
                            field="security_source")
    wrapped = asb.param(BIB_PARAM_WRAPPED_KEY)
    if wrapped is not None:
        if not isinstance(wrapped, bytes):
            raise SecurityError("wrapped key parameter must be a byte string",
                                field="parameters")
        try:
            return aes_key_unwrap(key, wrapped)
        except (InvalidUnwrap, ValueError):
            raise SecurityError("wrapped HMAC key does not unwrap with the key-encryption "
                                f"key for {asb.source}", field="parameters") from None
    return key


KeyLookup = Callable[[EID], "bytes | None"]


def key_lookup(keys: Mapping[str, bytes] | KeyLookup | bytes) -> KeyLookup:
    """A key lookup from a single key, a mapping (security source EID text, or its node
    ID text, or ``"*"``) or a callable."""
    if isinstance(keys, bytes):
        return lambda _eid: keys
    if callable(keys):
        return keys
    table = dict(keys)

    def lookup(eid: EID) -> bytes | None:
        return table.get(str(eid)) or table.get(str(eid.node_id())) or table.get("*")

    return lookup


def bib_verify(bundle: Bundle, keys: Mapping[str, bytes] | KeyLookup | bytes) -> list[int]:
    """Verify every BIB in ``bundle``; return the block numbers whose integrity holds.

    Raises :class:`SecurityError` when a BIB does not verify, names an absent target,
    uses an unknown context or SHA variant, or has no key.
    """
    lookup = key_lookup(keys)
    verified: list[int] = []
    for i, blk in enumerate(bundle.blocks):
        if blk.type == BLOCK_BIB:
            verified += _verify_bib(bundle, i, blk, _decode_bib(i, blk), lookup)
    return verified


def _decode_bib(i: int, blk: CanonicalBlock) -> ASB:
    """The ASB of the BIB at index ``i``, errors naming that block."""
    try:
        return ASB.decode(blk.data)
    except BundleError as e:
        raise e.within(block=i + 1, block_name="BIB") from None


def _verify_bib(bundle: Bundle, i: int, blk: CanonicalBlock, asb: ASB,
                lookup: KeyLookup) -> list[int]:
    """The targets of one BIB (at index ``i``), each checked; SecurityError if one fails."""
    if asb.context_id != CONTEXT_BIB_HMAC_SHA2:
        raise SecurityError(f"unknown BIB security context {asb.context_id}",
                            block=i + 1, block_name="BIB", field="context_id")
    variant = asb.param(BIB_PARAM_SHA_VARIANT, 6)
    scope = asb.param(BIB_PARAM_SCOPE, 7)
    if variant not in SHA_VARIANTS or type(scope) is not int:
        raise SecurityError(f"BIB parameters not usable (SHA variant {variant!r}, "
                            f"scope {scope!r})", block=i + 1, block_name="BIB",
                            field="parameters")
    key = _bib_key(asb, lookup)
    digest = SHA_VARIANTS[variant][1]
    verified: list[int] = []
    for target, result in zip(asb.targets, asb.results, strict=True):
        expected = dict(result).get(BIB_RESULT_HMAC)
        got = hmac.new(key, _ippt(bundle, scope, target, blk), digest).digest()
        if not isinstance(expected, bytes) or not hmac.compare_digest(got, expected):
            raise SecurityError(
                f"integrity check failed: HMAC-{SHA_VARIANTS[variant][0].upper()} of "
                f"block {target} from {asb.source} does not match",
                block=i + 1, block_name="BIB", field="results")
        verified.append(target)
    return verified


def bib_targets(bundle: Bundle) -> set[int]:
    """Block numbers that some BIB of ``bundle`` covers (without verifying)."""
    out: set[int] = set()
    for blk in bundle.blocks:
        if blk.type == BLOCK_BIB:
            with contextlib.suppress(BundleError):
                out.update(ASB.decode(blk.data).targets)
    return out


def bcb_targets(bundle: Bundle) -> set[int]:
    """Block numbers that some BCB of ``bundle`` encrypts."""
    out: set[int] = set()
    for blk in bundle.blocks:
        if blk.type == BLOCK_BCB:
            with contextlib.suppress(BundleError):
                out.update(ASB.decode(blk.data).targets)
    return out


# --- BCB-AES-GCM -----------------------------------------------------------------------

def bcb_encrypt(
    bundle: Bundle,
    key: bytes,
    *,
    source: EID | str,
    iv: bytes,
    targets: list[int] | None = None,
    aes_variant: int | None = None,
    scope: int = SCOPE_PRIMARY | SCOPE_TARGET_HEADER | SCOPE_SECURITY_HEADER,
    kek: bytes | None = None,
    block_number: int | None = None,
    block_flags: int = 1,
    crc_type: int | None = None,
) -> CanonicalBlock:
    """Encrypt ``targets`` (default: payload) in place with AES-GCM and add the BCB.

    ``key`` is the content-encryption key (16 or 32 bytes); with ``kek`` it travels
    wrapped in the block (RFC 9173 A.2). ``iv`` is 12 bytes and must never repeat for a
    key. RFC 9172 requires the BCB to be replicated in fragments, hence ``block_flags=1``.
    """
    variant = aes_variant if aes_variant is not None else (1 if len(key) == 16 else 3)
    if AES_VARIANTS.get(variant) != len(key):
        raise SecurityError(f"AES variant {variant} needs a {AES_VARIANTS.get(variant)}-byte "
                            f"key, got {len(key)} bytes", field="aes_variant")
    src = source if isinstance(source, EID) else EID.parse(source)
    targets = [1] if targets is None else list(targets)
    blk = _new_block(bundle, BLOCK_BCB, block_number, block_flags, crc_type)
    params: list[tuple[int, object]] = [(BCB_PARAM_IV, iv), (BCB_PARAM_AES_VARIANT, variant)]
    if kek is not None:
        params.append((BCB_PARAM_WRAPPED_KEY, aes_key_wrap(kek, key)))
    params.append((BCB_PARAM_SCOPE, scope))
    gcm = AESGCM(key)
    results: list[list[tuple[int, object]]] = []
    for t in targets:
        if t in (BLOCK_PRIMARY,):
            raise SecurityError("the primary block cannot be encrypted", field="targets")
        tb = _target_block(bundle, t)
        out = gcm.encrypt(iv, tb.data, _scope_prefix(bundle, scope, t, blk))
        ct, tag = out[:-16], out[-16:]
        bundle.replace_block(CanonicalBlock(tb.type, tb.number, ct, tb.flags, tb.crc_type))
        results.append([(BCB_RESULT_TAG, tag)])
    asb = ASB(targets, CONTEXT_BCB_AES_GCM, src, params, results)
    blk = CanonicalBlock(BLOCK_BCB, blk.number, asb.encode(), blk.flags, blk.crc_type)
    _insert_security_block(bundle, blk)
    return blk


def bcb_decrypt(bundle: Bundle, keys: Mapping[str, bytes] | KeyLookup | bytes) -> list[int]:
    """Decrypt every BCB's targets in place and remove the BCBs; return the decrypted
    block numbers. ``keys`` gives the content key, or the key-encryption key when the BCB
    carries a wrapped key. Raises :class:`SecurityError` if a tag does not authenticate.
    """
    lookup = key_lookup(keys)
    done: list[int] = []
    for blk in [b for b in bundle.blocks if b.type == BLOCK_BCB]:
        index = bundle.blocks.index(blk) + 1
        try:
            asb = ASB.decode(blk.data)
        except BundleError as e:
            raise e.within(block=index, block_name="BCB") from None
        if asb.context_id != CONTEXT_BCB_AES_GCM:
            raise SecurityError(f"unknown BCB security context {asb.context_id}",
                                block=index, block_name="BCB", field="context_id")
        iv = asb.param(BCB_PARAM_IV)
        variant = asb.param(BCB_PARAM_AES_VARIANT, 3)
        scope = asb.param(BCB_PARAM_SCOPE, 7)
        if not isinstance(iv, bytes) or variant not in AES_VARIANTS or type(scope) is not int:
            raise SecurityError("BCB parameters not usable (IV, AES variant, scope)",
                                block=index, block_name="BCB", field="parameters")
        key = lookup(asb.source)
        if key is None:
            raise SecurityError(f"no key for security source {asb.source}", block=index,
                                block_name="BCB", field="security_source")
        wrapped = asb.param(BCB_PARAM_WRAPPED_KEY)
        if wrapped is not None:
            try:
                key = aes_key_unwrap(key, wrapped)  # type: ignore[arg-type]
            except (InvalidUnwrap, ValueError, TypeError):
                raise SecurityError("wrapped content key does not unwrap", block=index,
                                    block_name="BCB", field="parameters") from None
        if len(key) != AES_VARIANTS[variant]:
            raise SecurityError(f"key of {len(key)} bytes for AES variant {variant}",
                                block=index, block_name="BCB", field="parameters")
        gcm = AESGCM(key)
        for target, result in zip(asb.targets, asb.results, strict=True):
            tag = dict(result).get(BCB_RESULT_TAG)
            tb = _target_block(bundle, target)
            if not isinstance(tag, bytes):
                raise SecurityError("BCB result has no authentication tag", block=index,
                                    block_name="BCB", field="results")
            try:
                plain = gcm.decrypt(iv, tb.data + tag, _scope_prefix(bundle, scope, target, blk))
            except InvalidTag:
                raise SecurityError(f"block {target} does not authenticate (AES-GCM tag "
                                    "mismatch: wrong key or altered data)", block=index,
                                    block_name="BCB", field="results") from None
            bundle.replace_block(CanonicalBlock(tb.type, tb.number, plain, tb.flags,
                                                tb.crc_type))
            done.append(target)
        bundle.remove_block(blk.number)
    return done


# --- policy ----------------------------------------------------------------------------

@dataclass
class SecurityPolicy:
    """What one node does with BPSec. It fails closed: a bundle from a source that a
    ``require_bib_from`` rule covers passes only with a BIB over its payload that the
    source node added and that verifies with a key held here.

    ``sign_key``: HMAC key this node signs the payload of bundles it originates with
    (None: no BIB). ``verify_keys``: keys per security source (EID or node ID text, or
    ``"*"`` for any). ``require_bib_from``: node IDs (or ``"*"``) whose bundles must carry
    such a BIB; one that lacks it is dropped with reason 12 (missing security operation),
    one whose BIB fails, or that has no key here for its source, with reason 15 (failed
    security operation). A BIB from a source no rule covers is checked when a key for it
    is held here, and otherwise left alone (RFC 9172 section 5.1.2). ``decrypt_keys``: BCB
    keys per security source (or key-encryption keys for wrapped keys), used for bundles
    delivered here.
    """

    node_id: EID | None = None
    sign_key: bytes | None = None
    sha_variant: int = 7
    verify_keys: dict[str, bytes] = field(default_factory=dict)
    require_bib_from: frozenset[str] = frozenset()
    decrypt_keys: dict[str, bytes] = field(default_factory=dict)

    def requires_bib(self, node_id: str) -> bool:
        """Whether bundles from ``node_id`` (node ID text) must carry a verifying BIB."""
        return "*" in self.require_bib_from or node_id in self.require_bib_from

    def sources_without_key(self) -> list[str]:
        """The ``require_bib_from`` entries no verify key can serve: every bundle from
        them would be refused (``"*"`` when there is no verify key at all)."""
        if "*" in self.verify_keys:
            return []
        covered = set()
        for k in self.verify_keys:
            with contextlib.suppress(BundleError):
                covered.add(str(EID.parse(k).node_id()))
        return sorted(s for s in self.require_bib_from
                      if (s == "*" and not self.verify_keys) or (s != "*" and s not in covered))

    def apply_outbound(self, bundle: Bundle) -> None:
        """Sign a bundle this node originates (if the policy has a key)."""
        if self.sign_key is not None and self.node_id is not None:
            bib_sign(bundle, self.sign_key, source=self.node_id, sha_variant=self.sha_variant)

    def check_inbound(self, bundle: Bundle) -> tuple[int, str] | None:
        """None if the bundle passes, else (RFC 9172 reason code, message)."""
        src = bundle.source.node_id()
        required = self.requires_bib(str(src))
        bibs = [(i, blk) for i, blk in enumerate(bundle.blocks) if blk.type == BLOCK_BIB]
        if not bibs:
            if required:
                return REASON_MISSING_SECURITY, (f"bundle {bundle.id} from {src} carries no "
                                                 "BIB, and this node requires one")
            return None
        if not required and not self.verify_keys:
            return None  # nothing to check against; forwarded untouched (RFC 9172 5.1.2)
        lookup = key_lookup(self.verify_keys)
        encrypted = bcb_targets(bundle)
        payload_verified = unverifiable = False
        try:
            for i, blk in bibs:
                if blk.number in encrypted:
                    continue  # an encrypted BIB can be checked only after decryption
                asb = _decode_bib(i, blk)
                own = asb.source.node_id() == src and 1 in asb.targets
                if lookup(asb.source) is None:
                    unverifiable = unverifiable or own
                    continue  # not ours to verify
                verified = _verify_bib(bundle, i, blk, asb, lookup)
                payload_verified = payload_verified or (own and 1 in verified)
        except BundleError as e:  # SecurityError included
            return REASON_FAILED_SECURITY, str(e)
        if required and not payload_verified:
            if unverifiable:
                return REASON_FAILED_SECURITY, (f"no key for {src} to verify the BIB of "
                                                f"bundle {bundle.id}; this node requires "
                                                f"BIBs from {src}")
            return REASON_MISSING_SECURITY, (f"no BIB from {src} covers the payload of "
                                             f"bundle {bundle.id}, and this node requires one")
        return None
