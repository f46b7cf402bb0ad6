"""BPv7 bundles (RFC 9171): the primary block, canonical blocks, encode and decode.

A :class:`Bundle` is a primary block and a list of canonical blocks, the payload block
last. Decoding is strict (see :mod:`netemu.dtn.cbor`) and checks every CRC; every refusal
is a :class:`~netemu.dtn.errors.BundleError` naming block, field and byte offset. Blocks
decoded from the wire keep their exact bytes, so forwarding a bundle re-encodes only the
blocks that changed (hop count, bundle age, previous node).

Times are DTN time: milliseconds since 2000-01-01 00:00:00 UTC (:data:`DTN_EPOCH`).
"""

from __future__ import annotations

import dataclasses
import struct
from binascii import crc_hqx as _crc_hqx
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import IntFlag
from typing import TYPE_CHECKING, cast

from netemu.dtn import cbor
from netemu.dtn import crc as _crc
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError

DTN_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
#: Unix time (ms) of the DTN epoch: DTN ms = Unix ms - this.
DTN_EPOCH_UNIX_MS = 946_684_800_000

# Block type codes (RFC 9171 section 9.1, RFC 9172).
BLOCK_PRIMARY = 0
BLOCK_PAYLOAD = 1
BLOCK_PREVIOUS_NODE = 6
BLOCK_BUNDLE_AGE = 7
BLOCK_HOP_COUNT = 10
BLOCK_BIB = 11
BLOCK_BCB = 12

BLOCK_NAMES = {
    BLOCK_PRIMARY: "primary", BLOCK_PAYLOAD: "payload", BLOCK_PREVIOUS_NODE: "previous node",
    BLOCK_BUNDLE_AGE: "bundle age", BLOCK_HOP_COUNT: "hop count", BLOCK_BIB: "BIB",
    BLOCK_BCB: "BCB",
}

_CRC_NAMES = {"none": _crc.CRC_NONE, "crc16": _crc.CRC16_X25, "crc32c": _crc.CRC32C,
              None: _crc.CRC_NONE}
_UNIQUE_TYPES = (BLOCK_PAYLOAD, BLOCK_PREVIOUS_NODE, BLOCK_BUNDLE_AGE, BLOCK_HOP_COUNT)


class BundleFlags(IntFlag):
    """Bundle processing control flags (RFC 9171 section 4.2.3)."""

    IS_FRAGMENT = 0x000001
    ADMIN_RECORD = 0x000002
    MUST_NOT_FRAGMENT = 0x000004
    ACK_REQUESTED = 0x000020
    STATUS_TIME_REQUESTED = 0x000040
    REPORT_RECEPTION = 0x004000
    REPORT_FORWARDING = 0x010000
    REPORT_DELIVERY = 0x020000
    REPORT_DELETION = 0x040000


REPORT_FLAGS = (BundleFlags.REPORT_RECEPTION | BundleFlags.REPORT_FORWARDING
                | BundleFlags.REPORT_DELIVERY | BundleFlags.REPORT_DELETION)


class BlockFlags(IntFlag):
    """Block processing control flags (RFC 9171 section 4.2.4)."""

    REPLICATE_IN_FRAGMENTS = 0x01
    REPORT_IF_UNPROCESSED = 0x02
    DELETE_IF_UNPROCESSED = 0x04
    DISCARD_IF_UNPROCESSED = 0x10


def crc_type_of(value: int | str | None) -> int:
    """``"crc32c"``, ``"crc16"``, ``"none"`` (or 2, 1, 0) as the CRC type code."""
    if isinstance(value, int) and value in _crc.CRC_SIZE:
        return value
    try:
        return _CRC_NAMES[value]  # type: ignore[index]
    except (KeyError, TypeError):
        raise BundleError(f"unknown CRC type {value!r} (use crc32c, crc16 or none)",
                          field="crc_type") from None


def unix_ms_to_dtn_ms(unix_ms: int) -> int:
    return unix_ms - DTN_EPOCH_UNIX_MS


def datetime_to_dtn_ms(t: datetime) -> int:
    """DTN time (ms since 2000-01-01 UTC) of an aware datetime."""
    if t.tzinfo is None:
        raise ValueError("datetime must be timezone-aware (UTC)")
    delta = t - DTN_EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def _with_crc(crc_type: int, body_zero_crc: bytes) -> bytes:
    """Fill the zeroed CRC at the end of an encoded block with its real value."""
    if crc_type == _crc.CRC32C:
        return body_zero_crc[:-4] + _crc.crc32c(body_zero_crc).to_bytes(4, "big")
    if crc_type == _crc.CRC_NONE:
        return body_zero_crc
    n = _crc.CRC_SIZE[crc_type]
    return body_zero_crc[:-n] + _crc.compute(crc_type, body_zero_crc)


_U8 = [bytes([i]) for i in range(24)]
_ARRAY_HEADS = [bytes([0x80 | i]) for i in range(24)]
_uint = cbor.uint

_ZERO_CRC = {_crc.CRC16_X25: b"\x42\x00\x00", _crc.CRC32C: b"\x44\x00\x00\x00\x00"}


@dataclass(frozen=True, init=False)
class PrimaryBlock:
    """The primary block (RFC 9171 section 4.3.1). ``creation_ms`` is DTN time (0: the
    source had no clock; a bundle age block then carries the age)."""

    destination: EID
    source: EID
    report_to: EID
    creation_ms: int
    sequence: int
    lifetime_ms: int
    flags: int = 0
    crc_type: int = _crc.CRC32C
    fragment_offset: int | None = None
    total_adu_length: int | None = None
    version: int = 7
    if TYPE_CHECKING:  # declared for the type checker only: at run time not a field
        raw: bytes | None = None
    # ``raw`` (the exact encoded bytes, or None) is an attribute but not a dataclass
    # field, so dataclasses.replace() makes a copy without the stale encoding.

    def __init__(  # hand-written: the frozen dataclass __init__ costs 3 us per bundle
        self, destination: EID, source: EID, report_to: EID, creation_ms: int,
        sequence: int, lifetime_ms: int, flags: int = 0, crc_type: int = _crc.CRC32C,
        fragment_offset: int | None = None, total_adu_length: int | None = None,
        version: int = 7, raw: bytes | None = None,
    ) -> None:
        self.__dict__.update(
            destination=destination, source=source, report_to=report_to,
            creation_ms=creation_ms, sequence=sequence, lifetime_ms=lifetime_ms, flags=flags,
            crc_type=crc_type, fragment_offset=fragment_offset,
            total_adu_length=total_adu_length, version=version, raw=raw)

    @property
    def is_fragment(self) -> bool:
        return bool(self.flags & BundleFlags.IS_FRAGMENT)

    @property
    def is_admin_record(self) -> bool:
        return bool(self.flags & BundleFlags.ADMIN_RECORD)

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        frag = self.flags & 1
        n = 8 + (2 if frag else 0) + (1 if self.crc_type else 0)
        u = _uint
        parts = [
            _ARRAY_HEADS[n], u(self.version), u(self.flags), u(self.crc_type),
            self.destination.to_cbor(), self.source.to_cbor(), self.report_to.to_cbor(),
            b"\x82", u(self.creation_ms), u(self.sequence), u(self.lifetime_ms),
        ]
        if frag:
            if self.fragment_offset is None or self.total_adu_length is None:
                raise BundleError("a fragment needs fragment_offset and total_adu_length",
                                  block=0, block_name="primary", field="fragment_offset")
            parts += [u(self.fragment_offset), u(self.total_adu_length)]
        if self.crc_type:
            parts.append(_ZERO_CRC[self.crc_type])
        raw = _with_crc(self.crc_type, b"".join(parts))
        object.__setattr__(self, "raw", raw)
        return raw


@dataclass(frozen=True, init=False)
class CanonicalBlock:
    """A canonical block (RFC 9171 section 4.3.2): type code, number, flags, CRC type and
    the block-type-specific data (a byte string)."""

    type: int
    number: int
    data: bytes
    flags: int = 0
    crc_type: int = _crc.CRC32C
    # ``raw``: as in PrimaryBlock, an attribute outside the dataclass fields.

    def __init__(self, type: int, number: int, data: bytes, flags: int = 0,  # noqa: A002
                 crc_type: int = _crc.CRC32C, raw: bytes | None = None) -> None:
        self.__dict__.update(type=type, number=number, data=data, flags=flags,
                             crc_type=crc_type, raw=raw)

    def __getattr__(self, name: str) -> bytes:
        # Only for attributes not set: a payload block decoded from the wire keeps
        # ``_wire`` (input bytes, start, end) instead of ``raw``, so a 1 MB payload is
        # copied once (its data) on reception, and its bytes again only if asked for.
        if name == "raw":
            wire = self.__dict__.get("_wire")
            if wire is not None:
                buf, start, end = wire
                raw: bytes = buf[start:end]
                self.__dict__["raw"] = raw
                return raw
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def name(self) -> str:
        return BLOCK_NAMES.get(self.type, f"type {self.type}")

    def encode(self) -> bytes:
        if self.raw is not None:
            return self.raw
        u = _uint
        t, num, fl, ct = self.type, self.number, self.flags, self.crc_type
        body = b"".join((
            b"\x86" if ct else b"\x85", _U8[t] if t < 24 else u(t),
            _U8[num] if num < 24 else u(num), _U8[fl] if fl < 24 else u(fl), _U8[ct],
            cbor.head(2, len(self.data)), self.data, _ZERO_CRC[ct] if ct else b"",
        ))
        raw = _with_crc(self.crc_type, body)
        object.__setattr__(self, "raw", raw)
        return raw


@dataclass
class Bundle:
    """A bundle: primary block and canonical blocks (the payload block last)."""

    primary: PrimaryBlock
    blocks: list[CanonicalBlock]

    # --- construction -------------------------------------------------------------
    @classmethod
    def new(
        cls,
        source: EID | str,
        destination: EID | str,
        payload: bytes,
        *,
        lifetime_ms: int,
        creation_ms: int,
        seq: int = 0,
        report_to: EID | str | None = None,
        crc: int | str | None = "crc32c",
        flags: int = 0,
        hop_limit: int | None = None,
        age_ms: int | None = None,
        age_block: bool | None = None,
    ) -> Bundle:
        """A new bundle from a local application or the agent itself.

        ``creation_ms`` is DTN time; if it is 0 (no clock) a bundle age block is added
        (``age_ms``, 0 by default), as RFC 9171 section 4.4.2 requires. ``hop_limit`` adds
        a hop count block. ``report_to`` defaults to dtn:none. ``age_block`` forces the
        bundle age block on (True) or off (False; RFC 9173's examples have creation time
        0 and no age block).
        """
        src = source if isinstance(source, EID) else EID.parse(source)
        dst = destination if isinstance(destination, EID) else EID.parse(destination)
        rpt = (EID.parse("dtn:none") if report_to is None
               else report_to if isinstance(report_to, EID) else EID.parse(report_to))
        ct = crc_type_of(crc)
        for name, v in (("lifetime_ms", lifetime_ms), ("creation_ms", creation_ms),
                        ("seq", seq), ("flags", flags)):
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 1 << 64:
                raise BundleError(f"{name} must be an unsigned 64-bit integer, got {v!r}",
                                  field=name)
        if flags & BundleFlags.IS_FRAGMENT:
            raise BundleError("Bundle.new makes whole bundles; the fragment flag is not "
                              "allowed here", field="flags")
        primary = PrimaryBlock(dst, src, rpt, creation_ms, seq, lifetime_ms, flags, ct)
        blocks: list[CanonicalBlock] = []
        number = 2
        if hop_limit is not None:
            blocks.append(CanonicalBlock(BLOCK_HOP_COUNT, number,
                                         cbor.dumps([hop_limit, 0]), 0, ct))
            number += 1
        if age_block is None:
            age_block = creation_ms == 0 or age_ms is not None
        if age_block:
            blocks.append(CanonicalBlock(BLOCK_BUNDLE_AGE, number,
                                         cbor.uint(age_ms or 0), 0, ct))
        blocks.append(CanonicalBlock(BLOCK_PAYLOAD, 1, bytes(payload), 0, ct))
        return cls(primary, blocks)

    # --- identity -----------------------------------------------------------------
    @property
    def id(self) -> str:
        """Stable unique key: source, creation time, sequence (and for a fragment its
        offset and length), e.g. ``ipn:2.1,0,40`` or ``ipn:2.1,0,40,1000,500``."""
        p = self.primary
        cached = self.__dict__.get("_id")
        if cached is not None and cached[0] is p and not p.flags & 1:
            hit: str = cached[1]
            return hit
        key = f"{p.source},{p.creation_ms},{p.sequence}"
        if p.flags & 1:  # BundleFlags.IS_FRAGMENT
            key += f",{p.fragment_offset},{len(self.payload)}"
        self.__dict__["_id"] = (p, key)
        return key

    @property
    def source(self) -> EID:
        return self.primary.source

    @property
    def destination(self) -> EID:
        return self.primary.destination

    # --- blocks -------------------------------------------------------------------
    @property
    def payload_block(self) -> CanonicalBlock:
        return self.blocks[-1]

    @property
    def payload(self) -> bytes:
        return self.blocks[-1].data

    def block_by_type(self, block_type: int) -> CanonicalBlock | None:
        for b in self.blocks:
            if b.type == block_type:
                return b
        return None

    def block_by_number(self, number: int) -> CanonicalBlock | None:
        for b in self.blocks:
            if b.number == number:
                return b
        return None

    def replace_block(self, new: CanonicalBlock) -> None:
        """Put ``new`` in place of the block with its number, or insert it before the
        payload block if there is none."""
        for i, b in enumerate(self.blocks):
            if b.number == new.number:
                self.blocks[i] = new
                return
        self.blocks.insert(len(self.blocks) - 1, new)

    def remove_block(self, number: int) -> None:
        self.blocks = [b for b in self.blocks if b.number != number]

    def next_block_number(self) -> int:
        return max([1] + [b.number for b in self.blocks]) + 1

    def _set_ext(self, block_type: int, data: bytes) -> None:
        old = self.block_by_type(block_type)
        if old is not None:
            self.replace_block(dataclasses.replace(old, data=data))
        else:
            ct = self.payload_block.crc_type if self.blocks else _crc.CRC32C
            self.replace_block(CanonicalBlock(block_type, self.next_block_number(), data,
                                              0, ct))

    @property
    def previous_node(self) -> EID | None:
        b = self.block_by_type(BLOCK_PREVIOUS_NODE)
        return None if b is None else EID.decode(b.data, 0)[0]

    def set_previous_node(self, node: EID) -> None:
        self._set_ext(BLOCK_PREVIOUS_NODE, node.to_cbor())

    @property
    def bundle_age_ms(self) -> int | None:
        b = self.block_by_type(BLOCK_BUNDLE_AGE)
        return None if b is None else cbor.expect_uint(b.data, 0, "bundle_age")[0]

    def set_bundle_age(self, age_ms: int) -> None:
        self._set_ext(BLOCK_BUNDLE_AGE, cbor.uint(age_ms))

    @property
    def hop_count(self) -> tuple[int, int] | None:
        """(hop limit, hop count) from the hop count block, if any."""
        b = self.block_by_type(BLOCK_HOP_COUNT)
        if b is None:
            return None
        limit, count = cast("list[int]", cbor.loads(b.data))
        return limit, count

    def set_hop_count(self, limit: int, count: int) -> None:
        self._set_ext(BLOCK_HOP_COUNT, cbor.head(4, 2) + cbor.uint(limit) + cbor.uint(count))

    # --- time ---------------------------------------------------------------------
    def age_ms(self, now_ms: int, received_ms: int | None = None,
               age_at_receipt_ms: int | None = None) -> int:
        """The bundle's age at DTN time ``now_ms``.

        With a creation time, the age is ``now - creation``. Without (creation time 0),
        it is the bundle age block's value at reception plus the time held here
        (``received_ms``; the age block's current value if not given).
        """
        if self.primary.creation_ms:
            return max(0, now_ms - self.primary.creation_ms)
        base = age_at_receipt_ms if age_at_receipt_ms is not None else (self.bundle_age_ms or 0)
        held = 0 if received_ms is None else max(0, now_ms - received_ms)
        return base + held

    def expiry_ms(self, received_ms: int | None = None,
                  age_at_receipt_ms: int | None = None) -> int:
        """DTN time at which the bundle expires (creation + lifetime, or for a bundle
        without creation time: reception + lifetime - age at reception)."""
        p = self.primary
        if p.creation_ms:
            return p.creation_ms + p.lifetime_ms
        base = age_at_receipt_ms if age_at_receipt_ms is not None else (self.bundle_age_ms or 0)
        return (received_ms or 0) + p.lifetime_ms - base

    def expired(self, now_ms: int, received_ms: int | None = None,
                age_at_receipt_ms: int | None = None) -> bool:
        return self.age_ms(now_ms, received_ms, age_at_receipt_ms) >= self.primary.lifetime_ms

    # --- wire ---------------------------------------------------------------------
    def encode(self) -> bytes:
        """The bundle as bytes: an indefinite-length CBOR array of its blocks."""
        parts: list[bytes | memoryview] = [b"\x9f", self.primary.encode()]
        for b in self.blocks:
            wire = b.__dict__.get("_wire")
            if wire is not None and "raw" not in b.__dict__:
                # A payload block as received: its bytes straight from the input, no copy
                # in between (a relay re-encodes every bundle it forwards).
                parts.append(memoryview(wire[0])[wire[1]:wire[2]])
            else:
                parts.append(b.encode())
        parts.append(b"\xff")
        return b"".join(parts)

    def __len__(self) -> int:
        return len(self.encode())


# --- decoding ---------------------------------------------------------------------------

def _check_crc(data: bytes, start: int, end: int, crc_type: int, block: int,
               name: str) -> None:
    n = _crc.CRC_SIZE[crc_type]
    got = data[end - n:end]
    if crc_type == _crc.CRC32C:
        value = _crc.crc32c_continue(b"\x00\x00\x00\x00",
                                     _crc.crc32c_continue(memoryview(data)[start:end - 4]))
        want = value.to_bytes(4, "big")
    else:
        want = _crc.compute(crc_type, data[start:end - n] + b"\x00" * n)
    if got != want:
        kind = "CRC-32C" if crc_type == _crc.CRC32C else "CRC-16"
        raise BundleError(f"{kind} mismatch (block carries {got.hex()}, computed "
                          f"{want.hex()})", offset=end - n, block=block, block_name=name,
                          field="crc")


def _crc_field(data: bytes, pos: int, crc_type: int, block: int, name: str) -> int:
    s, e = cbor.expect_bstr(data, pos, "crc")
    size = _crc.CRC_SIZE[crc_type]
    if e - s != size:
        raise BundleError(f"CRC is {e - s} bytes, CRC type {crc_type} needs {size}",
                          offset=pos, block=block, block_name=name, field="crc")
    return e


def _decode_primary(data: bytes, pos: int) -> tuple[PrimaryBlock, int]:
    start = pos
    fieldname = "array"
    try:
        n, p = cbor.expect_array(data, pos, "primary block")
        if n not in (8, 9, 10, 11):
            raise BundleError(f"primary block has {n} items, expected 8 to 11", offset=pos)
        fieldname = "version"
        version, p = cbor.expect_uint(data, p, fieldname)
        if version != 7:
            raise BundleError(f"bundle protocol version {version}, only 7 is supported",
                              offset=p - 1)
        fieldname = "flags"
        flags, p = cbor.expect_uint(data, p, fieldname)
        fieldname = "crc_type"
        q = p
        crc_type, p = cbor.expect_uint(data, p, fieldname)
        if crc_type not in _crc.CRC_SIZE:
            raise BundleError(f"unknown CRC type {crc_type}", offset=q)
        frag = bool(flags & 1)  # BundleFlags.IS_FRAGMENT (plain int: hot path)
        want_n = 8 + (2 if frag else 0) + (1 if crc_type else 0)
        if n != want_n:
            raise BundleError(
                f"primary block has {n} items but flags/CRC type say {want_n} "
                f"(fragment={frag}, CRC type {crc_type})", offset=start)
        fieldname = "destination"
        dst, p = EID.decode(data, p, fieldname)
        fieldname = "source"
        src, p = EID.decode(data, p, fieldname)
        fieldname = "report_to"
        rpt, p = EID.decode(data, p, fieldname)
        fieldname = "creation_timestamp"
        q = p
        k, p = cbor.expect_array(data, p, fieldname)
        if k != 2:
            raise BundleError(f"creation timestamp has {k} items, expected 2", offset=q)
        ctime, p = cbor.expect_uint(data, p, fieldname)
        seq, p = cbor.expect_uint(data, p, fieldname)
        fieldname = "lifetime"
        lifetime, p = cbor.expect_uint(data, p, fieldname)
        off = total = None
        if frag:
            fieldname = "fragment_offset"
            off, p = cbor.expect_uint(data, p, fieldname)
            fieldname = "total_adu_length"
            total, p = cbor.expect_uint(data, p, fieldname)
            if off >= total:
                raise BundleError(f"fragment offset {off} not below total ADU length "
                                  f"{total}", offset=p - 1)
        if crc_type:
            fieldname = "crc"
            p = _crc_field(data, p, crc_type, 0, "primary")
    except BundleError as e:
        raise e.within(block=0, block_name="primary", field=fieldname) from None
    if crc_type:
        _check_crc(data, start, p, crc_type, 0, "primary")
    pb = PrimaryBlock(dst, src, rpt, ctime, seq, lifetime, flags, crc_type, off, total,
                      version)
    object.__setattr__(pb, "raw", bytes(data[start:p]))
    return pb, p


def _decode_canonical(data: bytes, pos: int, index: int) -> tuple[CanonicalBlock, int]:
    start = pos
    fieldname = "array"
    name = None
    try:
        n, p = cbor.expect_array(data, pos, "canonical block")
        if n not in (5, 6):
            raise BundleError(f"canonical block has {n} items, expected 5 or 6", offset=pos)
        fieldname = "type"
        btype, p = cbor.expect_uint(data, p, fieldname)
        name = BLOCK_NAMES.get(btype, f"type {btype}")
        if btype == BLOCK_PRIMARY:
            raise BundleError("block type 0 is reserved (only the primary block is block 0)",
                              offset=p - 1)
        fieldname = "number"
        q = p
        number, p = cbor.expect_uint(data, p, fieldname)
        if number == 0:
            raise BundleError("block number 0 is reserved for the primary block", offset=q)
        if (btype == BLOCK_PAYLOAD) != (number == 1):
            raise BundleError("the payload block, and only it, has block number 1",
                              offset=q)
        fieldname = "flags"
        flags, p = cbor.expect_uint(data, p, fieldname)
        fieldname = "crc_type"
        q = p
        crc_type, p = cbor.expect_uint(data, p, fieldname)
        if crc_type not in _crc.CRC_SIZE:
            raise BundleError(f"unknown CRC type {crc_type}", offset=q)
        if n != (6 if crc_type else 5):
            raise BundleError(f"block has {n} items but CRC type {crc_type} needs "
                              f"{6 if crc_type else 5}", offset=start)
        fieldname = "data"
        ds, de = cbor.expect_bstr(data, p, fieldname)
        p = de
        if crc_type:
            fieldname = "crc"
            p = _crc_field(data, p, crc_type, index, name)
    except BundleError as e:
        raise e.within(block=index, block_name=name, field=fieldname) from None
    if crc_type:
        _check_crc(data, start, p, crc_type, index, name)
    payload = bytes(data[ds:de])
    _check_ext_data(btype, payload, ds, index, name)
    blk = CanonicalBlock(btype, number, payload, flags, crc_type)
    object.__setattr__(blk, "raw", bytes(data[start:p]))
    return blk, p


def _check_ext_data(btype: int, payload: bytes, base: int, index: int, name: str) -> None:
    """The data of the extension blocks RFC 9171 defines must be well-formed."""
    if btype not in (BLOCK_PREVIOUS_NODE, BLOCK_BUNDLE_AGE, BLOCK_HOP_COUNT):
        return
    try:
        if btype == BLOCK_PREVIOUS_NODE:
            _, end = EID.decode(payload, 0, "data")
        elif btype == BLOCK_BUNDLE_AGE:
            _, end = cbor.expect_uint(payload, 0, "data")
        else:
            k, q = cbor.expect_array(payload, 0, "data")
            if k != 2:
                raise BundleError(f"hop count is [limit, count], found {k} items", offset=0)
            _, q = cbor.expect_uint(payload, q, "hop limit")
            _, end = cbor.expect_uint(payload, q, "hop count")
        if end != len(payload):
            raise BundleError(f"{len(payload) - end} trailing byte(s) in block data",
                              offset=end)
    except BundleError as e:
        raise e.within(block=index, block_name=name, field="data",
                       base_offset=base) from None


class _Slow(Exception):
    """Internal: the fast decoder met something unusual; the strict decoder takes over."""


# --- fast path ---------------------------------------------------------------------------
# The fast decoder answers only when it is sure the strict one would give the same bundle;
# on anything unusual it raises _Slow (or IndexError, struct.error on reads past the end)
# and decode_bundle asks the strict decoder, which names the problem. Where it saves
# time: bytes already seen and checked are recognised by comparison instead of being
# parsed again. A bundle's primary block
# starts with a prefix (array head, version, flags, CRC type, the three EIDs, the creation
# timestamp's array head) that repeats for every bundle of a flow; a previous node or hop
# count block repeats for every bundle from one neighbour. CBOR items are self-delimiting,
# so input that starts with the exact bytes of a prefix or block that passed every check
# before parses the same way again (the CRC of a repeated block is the same too).

_MRU_SIZE = 8
PrefixEntry = tuple[bytes, int, int, dict[str, object], int, str, int]
#: Recently seen primary block prefixes: (prefix bytes, flags, CRC type, the primary
#: block's fields they fix, CRC-32C of the prefix, id prefix "source,", where the
#: creation time starts), newest first.
_PREFIXES: list[PrefixEntry] = []
#: Recently seen previous node / hop count blocks: (exact bytes, block), newest first.
_SMALL_BLOCKS: list[tuple[bytes, CanonicalBlock]] = []
_SMALL_BLOCK_TYPES = (BLOCK_PREVIOUS_NODE, BLOCK_HOP_COUNT)
_SMALL_BLOCK_MAX = 64
#: Recently seen payload block heads: (bytes up to the data, the block's fields they fix,
#: CRC type, data length), newest first.
_PAYLOAD_HEADS: list[tuple[bytes, dict[str, object], int, int]] = []
_PAYLOAD_HEADS_SIZE = 4
#: Exact canonical CBOR of endpoint IDs that decoded before -> the EID (bounded).
_EIDS: dict[bytes, EID] = {}
_EIDS_MAX = 4096
#: Length of a canonical unsigned integer item by its first byte (0: not one).
_ULEN = bytes([1] * 24 + [2, 3, 5, 9] + [0] * 228)
_crc32c = _crc._crc32c_c or _crc.crc32c_continue  # the C function itself when present
_ZERO4 = b"\x00\x00\x00\x00"
_BE32 = struct.Struct(">I").unpack_from
#: Blocks up to this size are copied to compute their CRC-32C in one call; larger ones
#: are read in place (a memoryview) and the zeroed CRC added by a second call.
_CRC_COPY_MAX = 4096
_new = object.__new__


def _u(d: bytes, q: int) -> tuple[int, int]:
    """Fast canonical unsigned integer read (raises _Slow/IndexError when unusual)."""
    b = d[q]
    if b < 24:
        return b, q + 1
    if b == 24:
        v = d[q + 1]
        if v >= 24:
            return v, q + 2
    elif b == 25:
        v = d[q + 1] << 8 | d[q + 2]
        if v >= 0x100:
            return v, q + 3
    elif b == 26:
        v = int.from_bytes(d[q + 1:q + 5], "big")
        if v >= 0x10000 and q + 5 <= len(d):
            return v, q + 5
    elif b == 27:
        v = int.from_bytes(d[q + 1:q + 9], "big")
        if v >= 0x100000000 and q + 9 <= len(d):
            return v, q + 9
    raise _Slow


def _eid_at(d: bytes, q: int) -> tuple[EID, int]:
    """The EID at ``q`` (raises _Slow/IndexError when unusual). The item's length comes
    from its heads; its bytes are looked up among EIDs decoded before, and only on a miss
    decoded (by :meth:`EID.decode`, the strict decoder's own) and remembered."""
    if d[q] != 0x82:
        raise _Slow
    scheme = d[q + 1]
    if scheme == 2:
        if d[q + 2] != 0x82:
            raise _Slow
        e = q + 3
        k = _ULEN[d[e]]
        e += k
        k2 = _ULEN[d[e]]
        if not k or not k2:
            raise _Slow
        e += k2
    elif scheme == 1:
        h = d[q + 2]
        if 0x60 <= h < 0x78:
            e = q + 3 + h - 0x60
        elif h == 0x78:
            e = q + 4 + d[q + 3]
        elif h == 0:
            e = q + 3
        else:
            raise _Slow
    else:
        raise _Slow
    key = d[q:e]
    eid = _EIDS.get(key)
    if eid is None:
        if e > len(d):
            raise _Slow
        try:
            eid, end = EID.decode(key, 0)
        except BundleError:
            raise _Slow from None
        if end != len(key):
            raise _Slow
        if len(_EIDS) >= _EIDS_MAX:
            _EIDS.clear()
        _EIDS[key] = eid
    return eid, e


def _learn_prefix(d: bytes) -> PrefixEntry:
    """Parse and check the primary block prefix at d[1:] and remember it."""
    n_items = d[1] - 0x80
    if not 8 <= n_items <= 11 or d[2] != 7:
        raise _Slow
    flags, q = _u(d, 3)
    crc_type, q = _u(d, q)
    if crc_type > 2 or n_items != 8 + (2 if flags & 1 else 0) + (1 if crc_type else 0):
        raise _Slow
    dst, q = _eid_at(d, q)
    src, q = _eid_at(d, q)
    rpt, q = _eid_at(d, q)
    if d[q] != 0x82:
        raise _Slow
    pre = d[1:q + 1]
    fixed = {"destination": dst, "source": src, "report_to": rpt, "flags": flags,
             "crc_type": crc_type, "fragment_offset": None, "total_adu_length": None,
             "version": 7}
    entry = (pre, flags, crc_type, fixed, _crc32c(pre) if crc_type == 2 else 0, f"{src},",
             1 + len(pre))
    _PREFIXES.insert(0, entry)
    del _PREFIXES[_MRU_SIZE:]
    return entry


def _crc32c_of(d: bytes, s: int, e: int) -> int:
    """CRC-32C of d[s:e] followed by the 4 zero bytes of the CRC field."""
    if e - s <= _CRC_COPY_MAX:
        return _crc32c(d[s:e] + _ZERO4)
    return _crc32c(_ZERO4, _crc32c(memoryview(d)[s:e]))


def _crc16_ok(d: bytes, s: int, e: int) -> bool:
    """Does the CRC-16 in the last 2 bytes of d[s:e] match (computed with them zero)?"""
    c = _crc_hqx(b"\x00\x00", _crc_hqx(d[s:e - 2].translate(_crc._REVERSE_BITS), 0xFFFF))
    rev = _crc._REVERSE_BITS
    return (rev[c & 0xFF] << 8 | rev[c >> 8]) ^ 0xFFFF == (d[e - 2] << 8 | d[e - 1])


def _ext_data_ok(btype: int, data: bytes) -> None:
    """Fast form of :func:`_check_ext_data` (raises _Slow/IndexError when unusual)."""
    if btype == BLOCK_PREVIOUS_NODE:
        if data not in _EIDS and _eid_at(data, 0)[1] != len(data):
            raise _Slow
    elif btype == BLOCK_BUNDLE_AGE:
        if _u(data, 0)[1] != len(data):
            raise _Slow
    elif btype == BLOCK_HOP_COUNT and (
            data[0] != 0x82 or _u(data, _u(data, 1)[1])[1] != len(data)):
        raise _Slow


def _block_head(d: bytes, p: int) -> tuple[int, int, int, int, int, int]:
    """(type, number, flags, CRC type, data start, data length) of the canonical block
    at ``p`` (raises _Slow/IndexError when unusual)."""
    h = d[p]
    if h != 0x85 and h != 0x86:
        raise _Slow
    btype = d[p + 1]
    if btype < 24:
        q = p + 2
    else:
        btype, q = _u(d, p + 1)
    number = d[q]
    if number < 24:
        q += 1
    else:
        number, q = _u(d, q)
    bflags = d[q]
    if bflags < 24:
        q += 1
    else:
        bflags, q = _u(d, q)
    ct = d[q]
    if (ct > 2 or (ct != 0) != (h == 0x86) or not btype or not number
            or (btype == 1) != (number == 1)):
        raise _Slow
    b = d[q + 1]
    if 0x40 <= b < 0x58:
        return btype, number, bflags, ct, q + 2, b - 0x40
    if b == 0x58:
        ln = d[q + 2]
        if ln >= 24:
            return btype, number, bflags, ct, q + 3, ln
    elif 0x59 <= b <= 0x5B:
        size = 1 << (b - 0x58)
        ln = int.from_bytes(d[q + 2:q + 2 + size], "big")
        if ln >= 1 << (4 * size) and q + 2 + size <= len(d):
            return btype, number, bflags, ct, q + 2 + size, ln
    raise _Slow


def _block_end(d: bytes, p: int, de: int, ct: int) -> int:
    """End of the block at ``p`` whose data ends at ``de``, after checking its CRC
    (raises _Slow/IndexError when unusual)."""
    if ct == 2:
        e = de + 5
        if e >= len(d) or d[de] != 0x44 or _crc32c_of(d, p, de + 1) != _BE32(d, de + 1)[0]:
            raise _Slow
    elif ct == 1:
        e = de + 3
        if e >= len(d) or d[de] != 0x42 or not _crc16_ok(d, p, e):
            raise _Slow
    else:
        e = de
        if e >= len(d):
            raise _Slow
    return e


def _other_block(d: bytes, p: int) -> tuple[CanonicalBlock, int]:
    """A canonical block other than the payload block, parsed and checked."""
    btype, number, bflags, ct, ds, ln = _block_head(d, p)
    de = ds + ln
    e = _block_end(d, p, de, ct)
    data = d[ds:de]
    if btype in (BLOCK_PREVIOUS_NODE, BLOCK_BUNDLE_AGE, BLOCK_HOP_COUNT):
        _ext_data_ok(btype, data)
    raw = d[p:e]
    blk = _new(CanonicalBlock)
    attrs = blk.__dict__
    attrs["type"] = btype
    attrs["number"] = number
    attrs["data"] = data
    attrs["flags"] = bflags
    attrs["crc_type"] = ct
    attrs["raw"] = raw
    if btype in _SMALL_BLOCK_TYPES and e - p <= _SMALL_BLOCK_MAX:
        _SMALL_BLOCKS.insert(0, (raw, blk))
        del _SMALL_BLOCKS[_MRU_SIZE:]
    return blk, e


def _check_unique(blocks: list[CanonicalBlock]) -> None:
    """Distinct block numbers, and at most one block of each type that may occur once."""
    if len({b.number for b in blocks}) != len(blocks):
        raise _Slow
    types = [b.type for b in blocks]
    if len(set(types)) != len(types):  # (rare: several BIBs, say)
        once = [t for t in types if t in _UNIQUE_TYPES]
        if len(set(once)) != len(once):
            raise _Slow


def _decode_fast(d: bytes) -> Bundle | None:
    """Decode the common shapes of bundle quickly; None means: something is unusual,
    let the strict decoder decide (and name the problem). Both agree where this one
    answers (tested, also on random mutations of valid bundles)."""
    try:
        return _fast(d)
    except (_Slow, IndexError, struct.error):
        return None


def _fast(d: bytes) -> Bundle:  # noqa: C901 - one function: calls cost more than lines
    n = len(d)
    if d[0] != 0x9F:
        raise _Slow
    # --- primary block: a known prefix, then creation time, sequence, lifetime
    for entry in _PREFIXES:
        if d.startswith(entry[0], 1):
            break
    else:
        entry = _learn_prefix(d)
    _, flags, crc_type, fixed, pcrc, id_prefix, s = entry
    q = s
    ctime = d[q]
    if ctime < 24:
        q += 1
    elif ctime == 27:
        ctime = int.from_bytes(d[q + 1:q + 9], "big")
        if ctime < 0x100000000:
            raise _Slow
        q += 9  # (past the end if cut short: the next read fails)
    else:
        ctime, q = _u(d, q)
    seq = d[q]
    if seq < 24:
        q += 1
    else:
        seq, q = _u(d, q)
    lifetime = d[q]
    if lifetime < 24:
        q += 1
    elif lifetime == 26:
        lifetime = int.from_bytes(d[q + 1:q + 5], "big")
        if lifetime < 0x10000:
            raise _Slow
        q += 5
    else:
        lifetime, q = _u(d, q)
    off = total = None
    if flags & 1:
        off, q = _u(d, q)
        total, q = _u(d, q)
        if off >= total:
            raise _Slow
    if crc_type == 2:
        if d[q] != 0x44 or _crc32c(d[s:q + 1] + _ZERO4, pcrc) != _BE32(d, q + 1)[0]:
            raise _Slow
        q += 5
    elif crc_type == 1:
        if d[q] != 0x42 or q + 3 > n or not _crc16_ok(d, 1, q + 3):
            raise _Slow
        q += 3
    primary = _new(PrimaryBlock)
    attrs = primary.__dict__  # (item stores: cheaper than keyword arguments)
    attrs.update(fixed)
    attrs["creation_ms"] = ctime
    attrs["sequence"] = seq
    attrs["lifetime_ms"] = lifetime
    attrs["raw"] = d[1:q]
    if off is not None:
        attrs["fragment_offset"] = off
        attrs["total_adu_length"] = total
    # --- canonical blocks up to the payload block, which must be last
    p = q
    blocks: list[CanonicalBlock] = []
    while d[p + 1] != BLOCK_PAYLOAD:
        for cached in _SMALL_BLOCKS:
            if d.startswith(cached[0], p):
                p += len(cached[0])
                blocks.append(cached[1])
                break
        else:
            blk, p = _other_block(d, p)
            blocks.append(blk)
    if len(blocks) > 1:  # (the payload block's number and type are its own)
        _check_unique(blocks)
    # --- the payload block: a known head (type, number, flags, CRC type, data length)
    for cached_head in _PAYLOAD_HEADS:
        if d.startswith(cached_head[0], p):
            ds = p + len(cached_head[0])
            fixed, ct, ln = cached_head[1:]
            break
    else:
        btype, number, bflags, ct, ds, ln = _block_head(d, p)
        if btype != BLOCK_PAYLOAD:
            raise _Slow
        fixed = {"type": BLOCK_PAYLOAD, "number": 1, "flags": bflags, "crc_type": ct}
        _PAYLOAD_HEADS.insert(0, (d[p:ds], fixed, ct, ln))
        del _PAYLOAD_HEADS[_PAYLOAD_HEADS_SIZE:]
    de = ds + ln
    if ct == 2:
        e = de + 5
        if e + 1 != n or d[de] != 0x44 or (
                _crc32c(d[p:de + 1] + _ZERO4) if ln <= _CRC_COPY_MAX
                else _crc32c(_ZERO4, _crc32c(memoryview(d)[p:de + 1]))) != _BE32(d, de + 1)[0]:
            raise _Slow
    elif ct == 1:
        e = de + 3
        if e + 1 != n or d[de] != 0x42 or not _crc16_ok(d, p, e):
            raise _Slow
    else:
        e = de
        if e + 1 != n:
            raise _Slow
    if d[e] != 0xFF:
        raise _Slow
    payload = _new(CanonicalBlock)
    attrs = payload.__dict__
    attrs.update(fixed)
    attrs["data"] = d[ds:de]
    attrs["_wire"] = (d, p, e)  # its bytes are copied only if asked for (__getattr__)
    blocks.append(payload)
    bundle = _new(Bundle)
    attrs = bundle.__dict__
    attrs["primary"] = primary
    attrs["blocks"] = blocks
    if not flags & 1:  # Bundle.id's cache, filled here: the agent asks for it at once
        attrs["_id"] = (primary, f"{id_prefix}{ctime},{seq}")
    return bundle


def decode_bundle(data: bytes) -> Bundle:
    """Decode and check one bundle (exactly: no bytes may follow it).

    Checks: indefinite outer array, strict canonical CBOR, version 7, item counts that
    match flags and CRC types, every CRC, unique block numbers, at most one payload /
    previous node / bundle age / hop count block, the payload block last, well-formed
    data in the RFC 9171 extension blocks.

    Common shapes take a fast path that gives the same bundle or, by deferring to
    :func:`decode_bundle_strict`, the same error (``tests/unit/test_dtn_bundle_fast.py``).
    The payload block's data is a copy; its ``raw`` is copied from ``data`` only when
    first asked for, so the bundle keeps ``data`` alive.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if not data:
        raise BundleError("empty input", offset=0)
    try:
        return _fast(data)
    except (_Slow, IndexError, struct.error):
        pass  # unusual: the strict decoder decides, and names any problem
    return decode_bundle_strict(data)


def decode_bundle_strict(data: bytes) -> Bundle:
    """:func:`decode_bundle` by the strict decoder alone (it names every problem; the
    fast path defers to it whenever anything is unusual)."""
    if not data:
        raise BundleError("empty input", offset=0)
    if data[0] != 0x9F:
        raise BundleError(f"a bundle starts with 0x9f (indefinite-length array), found "
                          f"0x{data[0]:02x}", offset=0)
    primary, p = _decode_primary(data, 1)
    blocks: list[CanonicalBlock] = []
    numbers: set[int] = set()
    types_seen: set[int] = set()
    n = len(data)
    while True:
        if p >= n:
            raise BundleError("truncated: bundle ends without the 0xff break byte",
                              offset=p)
        if data[p] == 0xFF:
            break
        if blocks and blocks[-1].type == BLOCK_PAYLOAD:
            raise BundleError("a block follows the payload block (it must be last)",
                              offset=p, block=len(blocks) + 1)
        blk, q = _decode_canonical(data, p, len(blocks) + 1)
        if blk.number in numbers:
            raise BundleError(f"duplicate block number {blk.number}", offset=p,
                              block=len(blocks) + 1, block_name=blk.name, field="number")
        if blk.type in _UNIQUE_TYPES and blk.type in types_seen:
            raise BundleError(f"more than one {blk.name} block", offset=p,
                              block=len(blocks) + 1, block_name=blk.name, field="type")
        numbers.add(blk.number)
        types_seen.add(blk.type)
        blocks.append(blk)
        p = q
    if not blocks or blocks[-1].type != BLOCK_PAYLOAD:
        raise BundleError("bundle has no payload block", offset=p)
    if p + 1 != n:
        raise BundleError(f"{n - p - 1} trailing byte(s) after the bundle", offset=p + 1)
    return Bundle(primary, blocks)


def bundle_length(data: bytes) -> int | None:
    """Length of the first complete bundle in ``data`` (None if more bytes are needed).

    For stream framing by convergence layers; it walks the CBOR structure without
    checking CRCs. Raises :class:`BundleError` on input that can never become a bundle.
    """
    if not data:
        return None
    if data[0] != 0x9F:
        raise BundleError(f"a bundle starts with 0x9f, found 0x{data[0]:02x}", offset=0)
    p = 1
    try:
        while True:
            if p >= len(data):
                return None
            if data[p] == 0xFF:
                return p + 1
            p = cbor.skip_item(data, p)
    except BundleError as e:
        if e.reason.startswith("truncated") or "cannot fit" in e.reason:
            return None
        raise
