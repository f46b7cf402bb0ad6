"""The two CRCs of RFC 9171 section 4.2.1: CRC-16/X-25 and CRC-32C (Castagnoli).

Both run in C: CRC-32C through the ``crc32c`` package (SSE4.2 / ARMv8 instructions when
the CPU has them), CRC-16/X-25 through :func:`binascii.crc_hqx` on bit-reversed bytes (X-25
is the reflected form of the CCITT polynomial that ``crc_hqx`` computes unreflected). A
table-driven pure-Python CRC-32C is the fallback when the package is missing.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

CRC_NONE = 0
CRC16_X25 = 1
CRC32C = 2

#: Bytes of the encoded CRC value (a CBOR byte string) per CRC type.
CRC_SIZE = {CRC_NONE: 0, CRC16_X25: 2, CRC32C: 4}

_REVERSE_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))

#: The crc32c package's C function, where installed (it is a dependency; the pure-Python
#: table below is the fallback).
_crc32c_c: Callable[..., int] | None  # crc32c(data, value=0)
try:  # pragma: no cover - depends on the environment
    import crc32c as _crc32c_package

    _crc32c_c = _crc32c_package.crc32c
except ImportError:  # pragma: no cover
    _crc32c_c = None


def _make_table32c() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE32C = _make_table32c()


def crc32c_py(data: bytes, value: int = 0) -> int:
    """CRC-32C in pure Python (table-driven): the reference and the fallback."""
    c = value ^ 0xFFFFFFFF
    table = _TABLE32C
    for b in data:
        c = table[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli; check value of b"123456789" is 0xE3069283)."""
    if _crc32c_c is not None:
        return _crc32c_c(data)
    return crc32c_py(data)  # pragma: no cover


def crc32c_continue(data: bytes | memoryview, value: int = 0) -> int:
    """CRC-32C of ``data`` continuing from the CRC ``value`` of the bytes before it."""
    if _crc32c_c is not None:
        return _crc32c_c(data, value)
    return crc32c_py(bytes(data), value)  # pragma: no cover


def crc16_x25(data: bytes) -> int:
    """CRC-16/X-25 (poly 0x1021 reflected, init and xorout 0xFFFF; check 0x906E)."""
    c = binascii.crc_hqx(bytes(data).translate(_REVERSE_BITS), 0xFFFF)
    return (_REVERSE_BITS[c & 0xFF] << 8 | _REVERSE_BITS[c >> 8]) ^ 0xFFFF


def crc16_x25_py(data: bytes) -> int:
    """CRC-16/X-25 bit by bit: the reference the fast one is tested against."""
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0x8408 if c & 1 else c >> 1
    return c ^ 0xFFFF


def compute(crc_type: int, data: bytes) -> bytes:
    """The CRC of ``data`` as the big-endian bytes a block carries."""
    if crc_type == CRC32C:
        return crc32c(data).to_bytes(4, "big")
    if crc_type == CRC16_X25:
        return crc16_x25(data).to_bytes(2, "big")
    if crc_type == CRC_NONE:
        return b""
    raise ValueError(f"unknown CRC type {crc_type}")
