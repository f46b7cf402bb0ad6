"""The fast bundle decoder against the strict one.

decode_bundle answers common shapes on a fast path that recognises bytes it has checked
before (primary block prefixes, previous node / hop count blocks, payload block heads,
EIDs) and defers to decode_bundle_strict for anything unusual. Whatever the state of its
caches, the two must agree: the same bundle (blocks, the exact bytes of every block, id)
or the same error. Checked on random valid bundles, on random byte mutations of them, and
on re-encodings of them with non-canonical CBOR but correct CRCs (so that the canonical
form checks, not the CRCs, must catch them).
"""

from __future__ import annotations

import dataclasses

import pytest
from dtn_strategies import crcs, fuzz_settings, ipn, small_or_big
from dtn_strategies import eids as eids_of
from hypothesis import given, settings
from hypothesis import strategies as st

from netemu.dtn import bundle as bundle_mod
from netemu.dtn import cbor, crc
from netemu.dtn.bpsec import bib_sign
from netemu.dtn.bundle import (
    BLOCK_BUNDLE_AGE,
    BLOCK_HOP_COUNT,
    BLOCK_PAYLOAD,
    BLOCK_PREVIOUS_NODE,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    PrimaryBlock,
    decode_bundle,
    decode_bundle_strict,
)
from netemu.dtn.eid import EID
from netemu.dtn.errors import BundleError

FUZZ = fuzz_settings(300)
eids = eids_of(30)
payloads = st.one_of(st.binary(max_size=300),
                     st.sampled_from([23, 24, 255, 256, 65535, 65536]).map(
                         lambda n: bytes(range(256)) * (n // 256) + b"\xa5" * (n % 256)))


def clear_caches() -> None:
    bundle_mod._PREFIXES.clear()
    bundle_mod._SMALL_BLOCKS.clear()
    bundle_mod._PAYLOAD_HEADS.clear()
    bundle_mod._EIDS.clear()


@st.composite
def bundles(draw) -> Bundle:
    frag = draw(st.booleans())
    flags = draw(st.sampled_from([0, BundleFlags.REPORT_DELIVERY, 0x7F_FFFF, 0x44]))
    flags = (flags | BundleFlags.IS_FRAGMENT) if frag else (flags & ~BundleFlags.IS_FRAGMENT)
    off = total = None
    if frag:
        off = draw(st.integers(0, 10_000))
        total = off + draw(st.integers(1, 10_000))
    primary = PrimaryBlock(draw(eids), draw(eids), draw(eids), draw(small_or_big),
                           draw(small_or_big), draw(small_or_big), int(flags), draw(crcs),
                           off, total)
    blocks: list[CanonicalBlock] = []
    number = 2
    kinds = draw(st.lists(st.sampled_from(["age", "hop", "prev", "other", "bib"]),
                          max_size=4, unique=True))
    for kind in kinds:
        if kind == "bib":
            continue
        data = {"age": lambda: cbor.uint(draw(small_or_big)),
                "hop": lambda: cbor.dumps([draw(small_or_big), draw(small_or_big)]),
                "prev": lambda: draw(eids).to_cbor(),
                "other": lambda: draw(st.binary(max_size=40))}[kind]()
        btype = {"age": 7, "hop": 10, "prev": 6}.get(kind) or draw(st.integers(13, 300))
        blocks.append(CanonicalBlock(btype, number, data,
                                     draw(st.one_of(st.integers(0, 0x1F), small_or_big)),
                                     draw(crcs)))
        number += draw(st.integers(1, 1000))
    blocks.append(CanonicalBlock(BLOCK_PAYLOAD, 1, draw(payloads), 0, draw(crcs)))
    b = Bundle(primary, blocks)
    if "bib" in kinds:
        bib_sign(b, b"k" * 32, source=draw(ipn), crc_type=draw(crcs))
    return b


def outcome(fn, data: bytes) -> Bundle | tuple[str, str]:
    try:
        return fn(data)
    except BundleError as e:
        return ("error", str(e))


def assert_same(a: Bundle | tuple, b: Bundle | tuple) -> None:
    """Same error, or the same bundle down to the bytes of each block and the id."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        assert a == b
        return
    assert a == b
    assert a.encode() == b.encode()  # (before asking for the payload block's raw bytes)
    assert type(a.primary.raw) is bytes and a.primary.raw == b.primary.raw
    for x, y in zip(a.blocks, b.blocks, strict=True):
        assert type(x.raw) is bytes and type(x.data) is bytes
        assert x.raw == y.raw
    assert a.id == b.id


@FUZZ
@given(bundles(), st.booleans())
def test_fast_path_answers_valid_bundles_like_strict(b, cold):
    data = b.encode()
    if cold:
        clear_caches()
    fast = bundle_mod._decode_fast(data)
    assert fast is not None  # every shape made here is a common one
    strict = decode_bundle_strict(data)
    assert_same(fast, strict)
    assert fast.encode() == data
    assert_same(decode_bundle(data), strict)  # again, with its bytes now known


def mutate(data: bytes, draw) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        i = draw(st.integers(0, max(0, len(out) - 1)))
        if op == "flip" and out:
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and out:
            out[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del out[i:]
        elif op == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and out:
            del out[i]
    return bytes(out)


@FUZZ
@given(bundles(), st.booleans(), st.data())
def test_mutated_bundles_same_bundle_or_same_error(b, cold, data):
    original = b.encode()
    if cold:
        clear_caches()
    else:
        decode_bundle(original)  # its prefix, blocks and heads are known now
    raw = mutate(original, data.draw)
    assert_same(outcome(decode_bundle, raw), outcome(decode_bundle_strict, raw))
    assert_same(decode_bundle(original), decode_bundle_strict(original))


# --- non-canonical re-encodings with correct CRCs ----------------------------------------

class Sloppy:
    """A CBOR encoder that makes exactly one non-canonical choice, at choice point
    ``target`` (a longer head than needed, an indefinite length, or a definite outer
    array); with ``target`` None it only counts the choice points."""

    def __init__(self, draw, target: int | None) -> None:
        self.draw = draw
        self.target = target
        self.points = 0

    def _sloppy(self) -> bool:
        self.points += 1
        return self.points - 1 == self.target

    def head(self, major: int, arg: int) -> bytes:
        canonical = cbor.head(major, arg)
        longer = [(ai, size) for ai, size in ((24, 1), (25, 2), (26, 4), (27, 8))
                  if arg < 1 << (8 * size) and 1 + size > len(canonical)]
        if not longer or not self._sloppy():
            return canonical
        ai, size = self.draw(st.sampled_from(longer))
        return bytes([major << 5 | ai]) + arg.to_bytes(size, "big")

    def item(self, v: object, indefinite_ok: bool = True) -> bytes:
        if isinstance(v, int):
            return self.head(0, v)
        if isinstance(v, bytes | str):
            major = 2 if isinstance(v, bytes) else 3
            raw = v if isinstance(v, bytes) else v.encode()
            if indefinite_ok and self._sloppy():
                cut = len(raw) // 2
                chunks = [raw[:cut], raw[cut:]] if raw else []
                return (bytes([major << 5 | 31]) + b"".join(
                    cbor.head(major, len(c)) + c for c in chunks) + b"\xff")
            return self.head(major, len(raw)) + raw
        assert isinstance(v, list)
        if indefinite_ok and self._sloppy():
            return b"\x9f" + b"".join(self.item(x) for x in v) + b"\xff"
        return self.head(4, len(v)) + b"".join(self.item(x) for x in v)

    def block(self, raw: bytes, primary: bool) -> bytes:
        """Re-encode one block (inner CBOR of the extension blocks too), CRC recomputed."""
        v = cbor.loads(raw)
        assert isinstance(v, list)
        crc_type = v[2] if primary else v[3]
        if not primary and v[0] in (BLOCK_PREVIOUS_NODE, BLOCK_BUNDLE_AGE, BLOCK_HOP_COUNT):
            v[4] = self.item(cbor.loads(v[4]))
        n = crc.CRC_SIZE[crc_type]
        if not n:
            return self.item(v)
        v[-1] = b"\x00" * n
        head = b"\x9f" if self._sloppy() else self.head(4, len(v))
        body = head + b"".join(self.item(x) for x in v[:-1])
        body += self.item(v[-1], indefinite_ok=False)
        if head == b"\x9f":
            body += b"\xff"
            return body[:-n - 1] + crc.compute(crc_type, body[:-1]) + b"\xff"
        return body[:-n] + crc.compute(crc_type, body)

    def bundle(self, b: Bundle) -> bytes:
        blocks = [self.block(b.primary.encode(), True)]
        blocks += [self.block(blk.encode(), False) for blk in b.blocks]
        if self._sloppy():
            return self.head(4, len(blocks)) + b"".join(blocks)
        return b"\x9f" + b"".join(blocks) + b"\xff"


@settings(FUZZ, max_examples=60)
@given(bundles(), st.booleans(), st.data())
def test_every_non_canonical_choice_rejected_like_strict(b, cold, data):
    """Each choice point of the bundle's encoding in turn made non-canonical."""
    original = b.encode()
    counter = Sloppy(data.draw, None)
    assert counter.bundle(b) == original
    for target in range(counter.points):
        raw = Sloppy(data.draw, target).bundle(b)
        if cold:
            clear_caches()
        else:
            decode_bundle(original)  # its prefix, blocks and heads are known now
        fast, strict = outcome(decode_bundle, raw), outcome(decode_bundle_strict, raw)
        assert_same(fast, strict)
        assert isinstance(fast, tuple), f"non-canonical choice {target} was accepted"


@FUZZ
@given(bundles(), st.booleans(), st.data())
def test_block_mutations_with_correct_crc_same_bundle_or_same_error(b, cold, data):
    """A byte changed, added or removed inside one block, whose CRC is then recomputed:
    only the structure and canonical form checks can catch it."""
    raws = [b.primary.encode()] + [blk.encode() for blk in b.blocks]
    types = [b.primary.crc_type] + [blk.crc_type for blk in b.blocks]
    i = data.draw(st.integers(0, len(raws) - 1))
    n = crc.CRC_SIZE[types[i]]
    body = bytearray(raws[i][:len(raws[i]) - n])
    j = data.draw(st.integers(0, len(body) - 1))
    op = data.draw(st.sampled_from(["flip", "set", "insert", "delete"]))
    if op == "flip":
        body[j] ^= 1 << data.draw(st.integers(0, 7))
    elif op == "set":
        body[j] = data.draw(st.integers(0, 255))
    elif op == "insert":
        body[j:j] = data.draw(st.binary(min_size=1, max_size=3))
    else:
        del body[j]
    raws[i] = bytes(body) + crc.compute(types[i], bytes(body) + b"\x00" * n)
    raw = b"\x9f" + b"".join(raws) + b"\xff"
    if cold:
        clear_caches()
    else:
        decode_bundle(b.encode())
    assert_same(outcome(decode_bundle, raw), outcome(decode_bundle_strict, raw))


@st.composite
def odd_bundles(draw) -> tuple[Bundle, Bundle]:
    """Blocks in any order and number: duplicates, a missing or misplaced payload block,
    reserved numbers, ill-formed extension block data (each block's CRC correct).
    Also a valid bundle of the same flow, to know the flow's bytes before."""
    valid = draw(bundles())
    primary = valid.primary
    blocks = []
    for _ in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(["payload", "prev", "age", "hop", "other"]))
        btype = {"payload": 1, "prev": 6, "age": 7, "hop": 10}.get(kind) or draw(
            st.sampled_from([0, 11, 12, 13, 200]))
        good = {"payload": lambda: draw(st.binary(max_size=20)),
                "prev": lambda: draw(eids).to_cbor(),
                "age": lambda: cbor.uint(draw(small_or_big)),
                "hop": lambda: cbor.dumps([draw(small_or_big), draw(small_or_big)]),
                "other": lambda: draw(st.binary(max_size=20))}[kind]()
        data = draw(st.sampled_from(["good", "trailing", "cut", "random"]))
        data = {"good": good, "trailing": good + b"\x00", "cut": good[:-1],
                "random": draw(st.binary(max_size=12))}[data]
        number = draw(st.one_of(st.integers(0, 4), small_or_big))
        blocks.append(CanonicalBlock(btype, number, data, draw(st.integers(0, 0x1F)),
                                     draw(crcs)))
    return valid, Bundle(primary, blocks)


@FUZZ
@given(odd_bundles(), st.booleans())
def test_odd_block_lists_same_bundle_or_same_error(pair, cold):
    valid, odd = pair
    raw = odd.encode()
    if cold:
        clear_caches()
    else:
        decode_bundle(valid.encode())
    assert_same(outcome(decode_bundle, raw), outcome(decode_bundle_strict, raw))


def edit(b: Bundle, draw) -> bytes:
    """``b`` with one or two edits that keep every CRC right unless the edit is the CRC:
    a block duplicated (same or new number), moved, dropped or renumbered, extension
    block data made ill-formed, fragment offset and length set to anything, one CRC
    wrong, the final break byte changed or followed by more bytes."""
    primary, blocks = b.primary, list(b.blocks)
    crc_at = tail = None
    for _ in range(draw(st.integers(1, 2))):
        op = draw(st.sampled_from(["dup", "dup_new", "move", "drop", "renumber", "ext",
                                   "frag", "crc", "tail"]))
        k = draw(st.integers(0, len(blocks) - 1)) if blocks else None
        if op == "dup" and blocks:
            blocks.insert(draw(st.integers(0, len(blocks))), blocks[k])
        elif op == "dup_new" and blocks:
            old = blocks[k]
            blocks.insert(draw(st.integers(0, len(blocks))), CanonicalBlock(
                old.type, max(x.number for x in blocks) + 1, old.data, old.flags,
                old.crc_type))
        elif op == "move" and blocks:
            blocks.insert(draw(st.integers(0, len(blocks) - 1)), blocks.pop(k))
        elif op == "drop" and blocks:
            del blocks[k]
        elif op == "renumber" and blocks:
            old = blocks[k]
            number = draw(st.sampled_from([0, 1] + [x.number for x in blocks]))
            blocks[k] = CanonicalBlock(old.type, number, old.data, old.flags, old.crc_type)
        elif op == "ext":
            btype = draw(st.sampled_from([BLOCK_PREVIOUS_NODE, BLOCK_BUNDLE_AGE,
                                          BLOCK_HOP_COUNT]))
            good = {BLOCK_PREVIOUS_NODE: EID.ipn(3, 0).to_cbor(), BLOCK_BUNDLE_AGE: b"\x05",
                    BLOCK_HOP_COUNT: b"\x82\x05\x01"}[btype]
            data = draw(st.sampled_from([good + b"\x00", good[:-1], good + good,
                                         b"\x82\x02\x81\x01", b"\x83\x05\x01\x00",
                                         b"\x18\x05", b"\x40", b""]))
            blocks.insert(0, CanonicalBlock(btype, max([1] + [x.number for x in blocks]) + 1,
                                            data, 0, draw(crcs)))
        elif op == "frag":
            primary = dataclasses.replace(
                primary, flags=primary.flags | 1, fragment_offset=draw(small_or_big),
                total_adu_length=draw(small_or_big))
        elif op == "crc":
            crc_at = (draw(st.integers(0, len(blocks))), draw(st.integers(0, 31)))
        elif op == "tail":
            tail = draw(st.one_of(st.integers(0, 0xFE).map(lambda x: bytes([x])),
                                  st.binary(min_size=1, max_size=3).map(
                                      lambda x: b"\xff" + x)))
    raws = [primary.encode()] + [blk.encode() for blk in blocks]
    types = [primary.crc_type] + [blk.crc_type for blk in blocks]
    i, bit = crc_at or (0, 0)
    i = min(i, len(raws) - 1)
    if crc_at is not None and crc.CRC_SIZE[types[i]]:
        n = crc.CRC_SIZE[types[i]]
        wrong = bytearray(raws[i])
        wrong[len(wrong) - n + bit // 8 % n] ^= 1 << bit % 8
        raws[i] = bytes(wrong)
    return b"\x9f" + b"".join(raws) + (b"\xff" if tail is None else tail)


@FUZZ
@given(bundles(), st.booleans(), st.data())
def test_edited_bundles_same_bundle_or_same_error(b, cold, data):
    raw = edit(b, data.draw)
    if cold:
        clear_caches()
    else:
        decode_bundle(b.encode())
    assert_same(outcome(decode_bundle, raw), outcome(decode_bundle_strict, raw))


# --- the common shapes take the fast path ----------------------------------------------

def payload_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"\x5a" * (size % 256)


def common(size: int, crc_name: str = "crc32c", src: str = "ipn:1.1",
           dst: str = "ipn:2.1", *, prev: bool = True, hop: bool = False,
           age: bool = False, bib: bool = False) -> bytes:
    b = Bundle.new(src, dst, payload_of(size),
                   lifetime_ms=3_600_000, creation_ms=800_000_000_000, seq=5,
                   crc=crc_name, hop_limit=30 if hop else None,
                   age_ms=1234 if age else None)
    if prev:
        b.set_previous_node(EID.ipn(1, 0))
    if bib:
        bib_sign(b, b"k" * 32, source="ipn:1.0")
    return b.encode()


@pytest.mark.parametrize("crc_name", ["crc32c", "crc16", "none"])
@pytest.mark.parametrize("shape", [
    {}, {"src": "dtn://alpha/app", "dst": "dtn://beta/" + "x" * 40}, {"prev": False},
    {"hop": True, "age": True}, {"bib": True}, {"hop": True, "bib": True},
])
@pytest.mark.parametrize("size", [0, 1, 24, 1000, 65536, (1 << 20) + 1])
def test_common_shapes_take_the_fast_path(crc_name, shape, size):
    data = common(size, crc_name, **shape)
    clear_caches()
    for _ in range(2):  # cold and warm
        fast = bundle_mod._decode_fast(data)
        assert fast is not None
        assert_same(fast, decode_bundle_strict(data))
        assert fast.payload == payload_of(size)


def test_non_canonical_field_after_a_known_prefix_named_like_strict():
    good = common(1000)
    decode_bundle(good)  # the prefix of this flow is known now
    b = decode_bundle(good)
    # The lifetime (3,600,000: a 4-byte head) in an 8-byte head, CRC recomputed.
    praw = b.primary.raw
    life = cbor.uint(3_600_000)
    at = praw.index(life, len(praw) - 5 - len(life) - 1)
    body = praw[:at] + b"\x1b" + (3_600_000).to_bytes(8, "big") + praw[at + len(life):]
    body = body[:-4] + crc.compute(crc.CRC32C, body[:-4] + b"\x00" * 4)
    bad = b"\x9f" + body + good[1 + len(praw):]
    with pytest.raises(BundleError, match="non-canonical") as fast_err:
        decode_bundle(bad)
    with pytest.raises(BundleError) as strict_err:
        decode_bundle_strict(bad)
    assert str(fast_err.value) == str(strict_err.value)
    assert fast_err.value.block == 0 and fast_err.value.field == "lifetime"


def test_payload_block_bytes_given_on_demand_equal_the_wire():
    data = common(70_000)
    b = decode_bundle(data)
    blk = b.payload_block
    assert type(blk.raw) is bytes and data.endswith(blk.raw + b"\xff")
    assert blk.encode() is blk.raw
    assert b.encode() == data


BAD_EXT_DATA = {
    BLOCK_PREVIOUS_NODE: [b"\x82\x02\x82\x03\x00\x00", b"\x82\x02\x82\x03",
                          b"\x82\x02\x82\x03\x00\x82\x02\x82\x03\x00", b"\x82\x02\x81\x03",
                          b"\x82\x02\x82\x18\x03\x00", b"\x82\x01\x61x", b"\x82\x03\x00", b""],
    BLOCK_BUNDLE_AGE: [b"\x05\x00", b"\x18\x05", b"\x40", b"\x19\x01", b"\x20", b""],
    BLOCK_HOP_COUNT: [b"\x82\x05\x01\x00", b"\x83\x05\x01\x00", b"\x82\x05", b"\x82\x18\x05\x01",
                      b"\x81\x05", b"\x05", b""],
}


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize(("btype", "data"), [(t, d) for t, ds in BAD_EXT_DATA.items()
                                             for d in ds])
def test_ill_formed_extension_block_data_rejected_like_strict(btype, data, warm):
    clear_caches()
    if warm:  # the flow, a previous node ipn:3.0 and well-formed blocks known before
        ok = Bundle.new("ipn:1.1", "ipn:2.1", b"p", lifetime_ms=1000, creation_ms=1,
                        hop_limit=5)
        ok.set_previous_node(EID.ipn(3, 0))
        ok.set_bundle_age(5)
        decode_bundle(ok.encode())
    b = Bundle.new("ipn:1.1", "ipn:2.1", b"p", lifetime_ms=1000, creation_ms=1)
    b.blocks.insert(0, CanonicalBlock(btype, 2, data, 0, crc.CRC32C))
    raw = b.encode()
    fast, strict = outcome(decode_bundle, raw), outcome(decode_bundle_strict, raw)
    assert isinstance(fast, tuple) and fast == strict


@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("crc_name", ["crc32c", "crc16", "none"])
def test_item_count_that_disagrees_with_crc_type_rejected_like_strict(crc_name, warm):
    """Each block's array head one item longer or shorter, its CRC recomputed."""
    good = common(100, crc_name, hop=True, age=True)
    b = decode_bundle_strict(good)
    ct = crc.CRC_SIZE[b.primary.crc_type]
    raws = [b.primary.raw] + [blk.raw for blk in b.blocks]
    for i in range(len(raws)):
        for delta in (-1, 1):
            changed = bytes([raws[i][0] + delta]) + raws[i][1:]
            if ct:
                changed = changed[:-ct] + crc.compute(b.primary.crc_type,
                                                      changed[:-ct] + b"\x00" * ct)
            raw = b"\x9f" + b"".join(raws[:i] + [changed] + raws[i + 1:]) + b"\xff"
            clear_caches()
            if warm:
                decode_bundle(good)
            fast, strict = outcome(decode_bundle, raw), outcome(decode_bundle_strict, raw)
            assert isinstance(fast, tuple) and fast == strict, (i, delta)


@pytest.mark.parametrize("size", [0, 1000, (1 << 20) + 3])
def test_forwarded_bundle_re_encodes_like_one_decoded_strictly(size):
    """A relay sets the previous node and re-encodes: same bytes as from a bundle that
    the strict decoder made (whose payload block carries its bytes as a copy)."""
    data = common(size)
    fast, strict = decode_bundle(data), decode_bundle_strict(data)
    for b in (fast, strict):
        b.set_previous_node(EID.ipn(9, 0))
        b.set_hop_count(30, 1)
    wire = fast.encode()
    assert type(wire) is bytes and wire == strict.encode()
    assert len(fast) == len(wire)
    assert_same(decode_bundle(wire), decode_bundle_strict(wire))
    assert decode_bundle(wire).previous_node == EID.ipn(9, 0)
