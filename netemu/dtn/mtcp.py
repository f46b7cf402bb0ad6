"""MTCP framing (µD3TN's "minimal TCP" CL): each bundle is sent as one CBOR byte string.

There is no handshake, no acknowledgement and no keepalive: a connection carries a
sequence of CBOR byte strings (major type 2, definite length), each holding one encoded
bundle. :class:`MtcpDecoder` is a pure incremental decoder (bytes in, bundles out);
:func:`frame` returns the header to write before a bundle.

Because MTCP has no acknowledgements, the agent treats a bundle as sent once it is
written to the socket; a bundle written into a connection that then breaks may be lost,
which is why netemu agents prefer TCPCLv4 between themselves and use MTCP only to talk to
µD3TN.
"""

from __future__ import annotations

import struct

from netemu.errors import RemoteProtocolError

DEFAULT_PORT = 4224  # µD3TN's customary MTCP port


class MtcpError(RemoteProtocolError):
    """The peer's MTCP stream holds something other than a definite-length CBOR byte
    string."""


def frame(length: int) -> bytes:
    """The CBOR byte-string header for a bundle of ``length`` bytes (shortest form)."""
    if length < 0:
        raise ValueError("negative length")
    if length < 24:
        return bytes((0x40 | length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return struct.pack("!BH", 0x59, length)
    if length < 0x1_0000_0000:
        return struct.pack("!BI", 0x5A, length)
    return struct.pack("!BQ", 0x5B, length)


def encode(bundle: bytes | bytearray | memoryview) -> bytes:
    """One framed bundle (header + bytes), for tests and small bundles."""
    return frame(len(bundle)) + bytes(bundle)


class MtcpDecoder:
    """Incremental MTCP decoder. ``max_bundle_bytes`` bounds what a peer can make us buffer."""

    def __init__(self, max_bundle_bytes: int = 1 << 32) -> None:
        self.max_bundle_bytes = max_bundle_bytes
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0], for error messages

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add bytes read from the connection; return the bundles they complete."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        off = 0
        n = len(buf)
        while off < n:
            ib = buf[off]
            major, info = ib >> 5, ib & 0x1F
            where = f"MTCP stream byte {self._offset + off}"
            if major != 2:
                raise MtcpError(f"{where}: expected a CBOR byte string (major type 2), "
                                f"got major type {major} (initial byte 0x{ib:02x})")
            if info < 24:
                hlen, length = 1, info
            elif info in (24, 25, 26, 27):
                hlen = 1 + (1 << (info - 24))
                if n - off < hlen:
                    break
                length = int.from_bytes(buf[off + 1 : off + hlen], "big")
            elif info == 31:
                raise MtcpError(f"{where}: indefinite-length byte string not allowed in MTCP")
            else:
                raise MtcpError(f"{where}: reserved CBOR additional information {info}")
            if length > self.max_bundle_bytes:
                raise MtcpError(f"{where}: bundle of {length} bytes exceeds the limit of "
                                f"{self.max_bundle_bytes} bytes")
            if n - off - hlen < length:
                break
            out.append(bytes(buf[off + hlen : off + hlen + length]))
            off += hlen + length
        if off:
            del buf[:off]
            self._offset += off
        return out

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a bundle."""
        return len(self._buf)
