"""Bundle fragmentation and reassembly (RFC 9171 sections 5.8 and 5.9), without I/O.

Why here: the core (:mod:`netemu.dtn.bpa`) splits a bundle that is larger than what the
next hop can take, and puts the fragments of a bundle addressed to its node back together;
both are pure functions of bytes, kept apart from the core's state machine so that they
can be tested on their own (any split, any order, duplicates, overlaps).

Block rules (section 5.8): every fragment carries the primary block (fragment flag set,
offset and total ADU length) and a payload block with its part of the payload. Extension
blocks flagged "replicate in every fragment" go in every fragment; the other extension
blocks go in the first fragment (offset 0) only. The previous node, bundle age and hop
count blocks describe the bundle on its way, not its content: they go in every fragment,
so that every fragment's lifetime and hop limit can be enforced on its own.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from netemu.dtn import cbor
from netemu.dtn.bundle import (
    BLOCK_BUNDLE_AGE,
    BLOCK_HOP_COUNT,
    BLOCK_PAYLOAD,
    BLOCK_PREVIOUS_NODE,
    BlockFlags,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    PrimaryBlock,
)
from netemu.dtn.errors import BundleError
from netemu.dtn.status import Reason

#: Blocks that every fragment carries whatever their flags (see the module docstring).
PER_HOP_BLOCKS = (BLOCK_PREVIOUS_NODE, BLOCK_BUNDLE_AGE, BLOCK_HOP_COUNT)


class FragmentError(BundleError):
    """A bundle cannot be fragmented as asked (must-not-fragment, or too small a limit)."""


def whole_id(b: Bundle) -> str:
    """The ID of the whole bundle that ``b`` is (or is a fragment of): source, creation
    time, sequence number, as :attr:`Bundle.id` gives for a whole bundle."""
    p = b.primary
    return f"{p.source},{p.creation_ms},{p.sequence}"


def _primary(p: PrimaryBlock, flags: int, offset: int | None, total: int | None) -> PrimaryBlock:
    return PrimaryBlock(p.destination, p.source, p.report_to, p.creation_ms, p.sequence,
                        p.lifetime_ms, flags, p.crc_type, offset, total, p.version)


def fragment(b: Bundle, max_bytes: int) -> list[Bundle]:
    """Split ``b`` into fragments of at most ``max_bytes`` encoded bytes each, in offset
    order. A fragment may be fragmented again (offsets stay relative to the original
    ADU). Raises :class:`FragmentError` when the bundle's "must not fragment" flag is set
    or ``max_bytes`` leaves no room for payload beside the blocks each fragment carries."""
    p = b.primary
    if p.flags & BundleFlags.MUST_NOT_FRAGMENT:
        raise FragmentError(f"bundle {b.id} is flagged must-not-fragment", field="flags")
    if p.flags & BundleFlags.ADMIN_RECORD:
        # RFC 9171 section 5.8 lets any bundle be split, but an administrative record that
        # a node gets in pieces is one it cannot act on until all of them come: not split.
        raise FragmentError(f"bundle {b.id} is an administrative record", field="flags")
    pb = b.payload_block
    payload = pb.data
    base = (p.fragment_offset or 0) if p.flags & BundleFlags.IS_FRAGMENT else 0
    total = p.total_adu_length if p.flags & BundleFlags.IS_FRAGMENT else len(payload)
    assert total is not None  # (a decoded fragment always has one)
    ext = [blk for blk in b.blocks if blk.type != BLOCK_PAYLOAD]
    every = [blk for blk in ext if blk.flags & BlockFlags.REPLICATE_IN_FRAGMENTS
             or blk.type in PER_HOP_BLOCKS]
    flags = p.flags | BundleFlags.IS_FRAGMENT
    out: list[Bundle] = []
    pos = 0
    while pos < len(payload) or not out:
        blocks = ext if pos == 0 else every
        prim = _primary(p, flags, base + pos, total)
        empty = Bundle(prim, [*blocks, CanonicalBlock(BLOCK_PAYLOAD, 1, b"", pb.flags,
                                                      pb.crc_type)])
        overhead = len(empty.encode())
        room = max_bytes - overhead
        n = min(room, len(payload) - pos)
        # the byte string's CBOR head grows with its length (1 byte at 0 bytes)
        while n > 0 and overhead + n + len(cbor.head(2, n)) - 1 > max_bytes:
            n -= len(cbor.head(2, n)) - 1
        if n <= 0 and pos < len(payload):
            raise FragmentError(f"bundle {b.id}: {max_bytes} bytes leave no room for "
                                f"payload beside {overhead} bytes of blocks", field="size")
        part = Bundle(prim, [*blocks, CanonicalBlock(BLOCK_PAYLOAD, 1,
                                                     payload[pos:pos + n], pb.flags,
                                                     pb.crc_type)])
        out.append(part)
        pos += max(n, 0)
    return out


def reassemble(parts: list[Bundle]) -> Bundle:
    """The whole bundle from fragments that cover its ADU (see :class:`Reassembler`):
    the primary block without the fragment fields, the extension blocks of the fragment
    at offset 0, the payload put together."""
    first = next(f for f in parts if f.primary.fragment_offset == 0)
    p = first.primary
    total = p.total_adu_length or 0
    adu = bytearray(total)
    for f in parts:
        off = f.primary.fragment_offset or 0
        adu[off:off + len(f.payload)] = f.payload
    pb = first.payload_block
    blocks = [blk for blk in first.blocks if blk.type != BLOCK_PAYLOAD]
    blocks.append(CanonicalBlock(BLOCK_PAYLOAD, 1, bytes(adu), pb.flags, pb.crc_type))
    return Bundle(_primary(p, p.flags & ~BundleFlags.IS_FRAGMENT, None, None), blocks)


@dataclass
class _Partial:
    """The fragments of one bundle received so far, and the ADU bytes they cover."""

    total: int
    parts: dict[str, Bundle] = field(default_factory=dict)  # fragment ID -> fragment
    sizes: dict[str, int] = field(default_factory=dict)  # fragment ID -> stored bytes
    # the covered byte ranges [start, end), sorted and disjoint: one fragment costs a
    # bisection and a merge, not a pass over all (a peer may send thousands of them)
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def cover(self, off: int, n: int) -> None:
        end = off + n
        if n == 0:
            return
        starts, ends = self.starts, self.ends
        i = bisect_left(ends, off)         # first range that ends at or after off
        j = bisect_right(starts, end)      # first range that starts after end
        if i < j:                          # ranges i..j-1 touch [off, end): merge them
            off, end = min(off, starts[i]), max(end, ends[j - 1])
        starts[i:j] = [off]
        ends[i:j] = [end]

    def covered(self) -> bool:
        return self.starts == [0] and self.ends[0] >= self.total

    def recover(self) -> None:
        """Recompute the covered ranges from the fragments (after one is forgotten)."""
        self.starts, self.ends = [], []
        for f in self.parts.values():
            self.cover(f.primary.fragment_offset or 0, len(f.payload))


@dataclass
class Completed:
    """A bundle whose fragments now cover its whole ADU."""

    bundle: Bundle
    fragment_ids: list[str]


class Reassembler:
    """Fragments addressed to this node, grouped by the bundle they belong to, until
    every byte of its ADU is there (overlaps allowed). Holds references, copies nothing.

    ``max_bytes``: the most bytes (as stored) that partial reassemblies may hold together;
    a fragment that would go over is refused (:meth:`refusal`), so one peer cannot make a
    node hold unbounded pieces of bundles that never complete. Lifetimes are the core's
    business: it calls :meth:`discard` when a fragment expires."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.held_bytes = 0
        self._partials: dict[str, _Partial] = {}
        self._of: dict[str, str] = {}  # fragment ID -> whole bundle ID

    def __len__(self) -> int:
        return len(self._partials)

    def refusal(self, frag: Bundle, size: int) -> tuple[int, str] | None:
        """Why ``frag`` (``size`` bytes as stored) cannot be taken — a status report
        reason code and a message — or None."""
        p = frag.primary
        total = p.total_adu_length or 0
        off = p.fragment_offset or 0
        if off + len(frag.payload) > total:
            return Reason.BLOCK_UNINTELLIGIBLE, (
                f"fragment {frag.id} ends at byte {off + len(frag.payload)}, past the "
                f"total ADU length {total}")
        part = self._partials.get(whole_id(frag))
        if part is not None and part.total != total:
            return Reason.BLOCK_UNINTELLIGIBLE, (
                f"fragment {frag.id} gives total ADU length {total}; earlier fragments "
                f"of {whole_id(frag)} gave {part.total}")
        if self.max_bytes is not None and self.held_bytes + size > self.max_bytes:
            return Reason.DEPLETED_STORAGE, (
                f"reassembly cap: {self.held_bytes} bytes held in {len(self._partials)} "
                f"partial bundles, {size} more would pass {self.max_bytes}")
        return None

    def add(self, frag: Bundle, frag_id: str, size: int) -> Completed | None:
        """Take fragment ``frag`` (checked with :meth:`refusal` first); the whole bundle
        when it completes one (its fragments are then forgotten here)."""
        wid = whole_id(frag)
        part = self._partials.get(wid)
        if part is None:
            part = self._partials[wid] = _Partial(frag.primary.total_adu_length or 0)
        if frag_id in part.parts:
            return None
        part.parts[frag_id] = frag
        part.sizes[frag_id] = size
        part.cover(frag.primary.fragment_offset or 0, len(frag.payload))
        self._of[frag_id] = wid
        self.held_bytes += size
        if not part.covered():
            return None
        self._forget(wid)
        return Completed(reassemble(list(part.parts.values())), list(part.parts))

    def fragment_ids(self, wid: str) -> list[str]:
        """The fragments held of whole bundle ``wid`` (none: an empty list)."""
        part = self._partials.get(wid)
        return list(part.parts) if part is not None else []

    def discard(self, frag_id: str) -> None:
        """Forget one fragment (it expired or was deleted)."""
        wid = self._of.pop(frag_id, None)
        if wid is None:
            return
        part = self._partials[wid]
        del part.parts[frag_id]
        self.held_bytes -= part.sizes.pop(frag_id)
        if not part.parts:
            del self._partials[wid]
        else:
            part.recover()

    def _forget(self, wid: str) -> None:
        part = self._partials.pop(wid)
        for fid in part.parts:
            self._of.pop(fid, None)
        self.held_bytes -= sum(part.sizes.values())
