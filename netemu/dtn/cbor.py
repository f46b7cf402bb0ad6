"""Strict, deterministic CBOR (RFC 8949 section 4.2.1) for bundles.

Why not cbor2 for decoding: RFC 9171 requires definite-length items everywhere except the
bundle's own outer array, and a CRC must be computed over each block's exact bytes, so the
decoder must know byte offsets and must refuse what cbor2 accepts silently (indefinite
lengths, integers not in their shortest form, tags, floats, unsorted or duplicate map
keys). This module is that decoder: small, no recursion without a depth limit, every
refusal a :class:`BundleError` with the byte offset. cbor2 serves as the outside reference
in the tests (``cbor2.dumps(x, canonical=True)`` equals :func:`dumps` for every value
without maps; map keys sort bytewise here, RFC 8949 section 4.2.1, where cbor2's
canonical mode sorts length-first as RFC 7049 did; bundles contain no maps).

Values: ``int`` (major types 0 and 1), ``bytes``, ``str``, ``list`` (arrays; tuples encode
as arrays too), ``dict`` (maps), ``bool`` and ``None``.
"""

from __future__ import annotations

import struct

from netemu.dtn.errors import BundleError

MAX_DEPTH = 32

_PACK_B = struct.Struct(">B").pack
_PACK_BB = struct.Struct(">BB").pack
_PACK_BH = struct.Struct(">BH").pack
_PACK_BI = struct.Struct(">BI").pack
_PACK_BQ = struct.Struct(">BQ").pack

#: Pre-built heads for small arguments (the common case: block fields, short arrays).
_SMALL_HEADS = [[bytes([m << 5 | a]) for a in range(24)] for m in range(8)]


def head(major: int, arg: int) -> bytes:
    """The shortest head (initial byte + argument) for major type ``major``."""
    if arg < 24:
        return _SMALL_HEADS[major][arg]
    mt = major << 5
    if arg < 0x100:
        return _PACK_BB(mt | 24, arg)
    if arg < 0x10000:
        return _PACK_BH(mt | 25, arg)
    if arg < 0x100000000:
        return _PACK_BI(mt | 26, arg)
    if arg < 0x10000000000000000:
        return _PACK_BQ(mt | 27, arg)
    raise ValueError(f"CBOR argument {arg} does not fit in 64 bits")


_UINT_SMALL = _SMALL_HEADS[0]


def uint(value: int) -> bytes:
    if 0 <= value < 24:
        return _UINT_SMALL[value]
    return head(0, value)


def bstr(value: bytes) -> bytes:
    return head(2, len(value)) + value


def dumps(value: object) -> bytes:
    """Deterministic encoding of ``value`` (shortest heads, definite lengths, sorted maps)."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: object, out: list[bytes]) -> None:
    if value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif value is None:
        out.append(b"\xf6")
    elif isinstance(value, int):
        out.append(head(0, value) if value >= 0 else head(1, -1 - value))
    elif isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        out.append(head(2, len(b)))
        out.append(b)
    elif isinstance(value, str):
        b = value.encode("utf-8")
        out.append(head(3, len(b)))
        out.append(b)
    elif isinstance(value, (list, tuple)):
        out.append(head(4, len(value)))
        for item in value:
            _encode(item, out)
    elif isinstance(value, dict):
        items = sorted((dumps(k), dumps(v)) for k, v in value.items())
        out.append(head(5, len(items)))
        for k, v in items:
            out.append(k)
            out.append(v)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


_MAJOR_NAMES = ("unsigned integer", "negative integer", "byte string", "text string",
                "array", "map", "tag", "simple/float")


def read_head(data: bytes, pos: int) -> tuple[int, int, int]:
    """Read one head at ``pos``: (major type, argument, next position).

    Refuses indefinite lengths, reserved additional information and arguments not in
    their shortest form. Major type 7 returns the raw additional information as argument
    for simple values 20..23.
    """
    n = len(data)
    if pos >= n:
        raise BundleError("truncated: expected a CBOR item, found the end of the data",
                          offset=pos)
    ib = data[pos]
    major = ib >> 5
    ai = ib & 0x1F
    if ai < 24:
        return major, ai, pos + 1
    if ai == 24:
        end = pos + 2
        if end > n:
            raise BundleError("truncated CBOR head (1-byte argument)", offset=pos)
        arg = data[pos + 1]
        if arg < 24 and major != 7:
            raise BundleError(f"non-canonical CBOR: {_MAJOR_NAMES[major]} argument {arg} "
                              "not in its shortest form", offset=pos)
        return major, arg, end
    if ai in (25, 26, 27):
        size = 1 << (ai - 24)
        end = pos + 1 + size
        if end > n:
            raise BundleError(f"truncated CBOR head ({size}-byte argument)", offset=pos)
        arg = int.from_bytes(data[pos + 1:end], "big")
        if major == 7:
            raise BundleError("floating-point values are not allowed in a bundle", offset=pos)
        if arg < (1 << (4 * size)):  # would fit in half the bytes
            raise BundleError(f"non-canonical CBOR: {_MAJOR_NAMES[major]} argument {arg} "
                              "not in its shortest form", offset=pos)
        return major, arg, end
    if ai == 31:
        if major == 7:
            raise BundleError("unexpected CBOR break byte 0xff", offset=pos)
        raise BundleError(f"indefinite-length {_MAJOR_NAMES[major]} not allowed here "
                          "(RFC 9171 requires definite lengths)", offset=pos)
    raise BundleError(f"reserved CBOR additional information {ai}", offset=pos)


def loads(data: bytes) -> object:
    """Decode exactly one item from ``data`` (trailing bytes are an error)."""
    value, end = decode_item(data, 0)
    if end != len(data):
        raise BundleError(f"{len(data) - end} trailing byte(s) after the CBOR item", offset=end)
    return value


def decode_item(data: bytes, pos: int, depth: int = 0) -> tuple[object, int]:
    """Decode one strict CBOR item at ``pos``: (value, next position)."""
    major, arg, p = read_head(data, pos)
    if major == 0:
        return arg, p
    if major == 2:
        end = p + arg
        if end > len(data):
            raise BundleError(f"truncated byte string: {arg} bytes announced, "
                              f"{len(data) - p} left", offset=pos)
        return bytes(data[p:end]), end
    if major == 4:
        if depth >= MAX_DEPTH:
            raise BundleError(f"CBOR nested deeper than {MAX_DEPTH} levels", offset=pos)
        if arg > len(data) - p:
            raise BundleError(f"array of {arg} items cannot fit in the {len(data) - p} "
                              "bytes left", offset=pos)
        items = []
        for _ in range(arg):
            v, p = decode_item(data, p, depth + 1)
            items.append(v)
        return items, p
    if major == 1:
        return -1 - arg, p
    if major == 3:
        end = p + arg
        if end > len(data):
            raise BundleError(f"truncated text string: {arg} bytes announced, "
                              f"{len(data) - p} left", offset=pos)
        try:
            return bytes(data[p:end]).decode("utf-8"), end
        except UnicodeDecodeError as e:
            raise BundleError(f"text string is not valid UTF-8 ({e.reason})",
                              offset=p + e.start) from None
    if major == 5:
        if depth >= MAX_DEPTH:
            raise BundleError(f"CBOR nested deeper than {MAX_DEPTH} levels", offset=pos)
        if 2 * arg > len(data) - p:
            raise BundleError(f"map of {arg} pairs cannot fit in the {len(data) - p} "
                              "bytes left", offset=pos)
        out: dict[object, object] = {}
        prev_key_bytes = b""
        for i in range(arg):
            kpos = p
            k, p = decode_item(data, p, depth + 1)
            kbytes = bytes(data[kpos:p])
            if i and kbytes <= prev_key_bytes:
                raise BundleError("map keys not in canonical order or duplicated",
                                  offset=kpos)
            if isinstance(k, (list, dict)):
                raise BundleError("map keys must be integers or strings", offset=kpos)
            prev_key_bytes = kbytes
            v, p = decode_item(data, p, depth + 1)
            out[k] = v
        return out, p
    if major == 6:
        raise BundleError(f"CBOR tag {arg} not allowed in a bundle", offset=pos)
    # major 7, simple values
    if arg == 20:
        return False, p
    if arg == 21:
        return True, p
    if arg == 22:
        return None, p
    raise BundleError(f"CBOR simple value {arg} not allowed in a bundle", offset=pos)


def skip_item(data: bytes, pos: int, depth: int = 0) -> int:
    """The position after the strict CBOR item at ``pos``, without building values or
    copying strings (stream framing of large bundles)."""
    major, arg, p = read_head(data, pos)
    if major in (2, 3):
        end = p + arg
        if end > len(data):
            raise BundleError(f"truncated string: {arg} bytes announced, {len(data) - p} "
                              "left", offset=pos)
        return end
    if major in (4, 5):
        if depth >= MAX_DEPTH:
            raise BundleError(f"CBOR nested deeper than {MAX_DEPTH} levels", offset=pos)
        for _ in range(arg * (2 if major == 5 else 1)):
            p = skip_item(data, p, depth + 1)
        return p
    if major == 6:
        raise BundleError(f"CBOR tag {arg} not allowed in a bundle", offset=pos)
    if major == 7 and arg not in (20, 21, 22):
        raise BundleError(f"CBOR simple value {arg} not allowed in a bundle", offset=pos)
    return p


def expect_uint(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read an unsigned integer at ``pos`` or fail naming ``what``."""
    if pos < len(data) and data[pos] < 24:  # fast path: small integer in the head
        return data[pos], pos + 1
    major, arg, p = read_head(data, pos)
    if major != 0:
        raise BundleError(f"{what}: expected an unsigned integer, found a "
                          f"{_MAJOR_NAMES[major]}", offset=pos, field=what)
    return arg, p


def expect_array(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read a definite array head at ``pos``: (item count, next position)."""
    if pos < len(data) and 0x80 <= data[pos] < 0x98:  # fast path: short array
        return data[pos] - 0x80, pos + 1
    major, arg, p = read_head(data, pos)
    if major != 4:
        raise BundleError(f"{what}: expected an array, found a {_MAJOR_NAMES[major]}",
                          offset=pos, field=what)
    return arg, p


def expect_bstr(data: bytes, pos: int, what: str) -> tuple[int, int]:
    """Read a byte string head: (start of its content, end of its content)."""
    major, arg, p = read_head(data, pos)
    if major != 2:
        raise BundleError(f"{what}: expected a byte string, found a {_MAJOR_NAMES[major]}",
                          offset=pos, field=what)
    end = p + arg
    if end > len(data):
        raise BundleError(f"{what}: truncated byte string: {arg} bytes announced, "
                          f"{len(data) - p} left", offset=pos, field=what)
    return p, end
