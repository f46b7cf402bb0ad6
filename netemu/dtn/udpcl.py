"""UDP convergence layer: one whole bundle per datagram, never fragmented by IP.

The datagram payload is the encoded bundle and nothing else (as RFC 7122 and the UDP
CLs of ION, µD3TN and dtn7 do). A bundle that does not fit in one datagram within the
path MTU is refused with a clear error instead of being sent as IP fragments: bundles
that large belong on TCPCL. There are no acknowledgements: the UDP CL reports
"transmission done" as soon as the datagram is handed to the kernel.

Pure functions only; the agent owns the socket.
"""

from __future__ import annotations

from netemu.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

DEFAULT_PORT = 4556
IPV4_UDP_HEADERS = 20 + 8
IPV6_UDP_HEADERS = 40 + 8
CBOR_INDEFINITE_ARRAY = 0x9F  # every BPv7 bundle starts with this byte (RFC 9171 §4.1)


class UdpclError(ProtocolError):
    """A bundle that cannot go over the UDP CL (:class:`UdpclLocalError`), or a datagram
    that is not a bundle (:class:`UdpclRemoteError`)."""


class UdpclLocalError(UdpclError, LocalProtocolError):
    """A bundle this side cannot send over the UDP CL (too big for the path, empty)."""


class UdpclRemoteError(UdpclError, RemoteProtocolError):
    """A datagram from a peer that is not a bundle."""


def max_bundle_bytes(path_mtu: int = 1500, *, ipv6: bool = False) -> int:
    """Largest bundle that fits one unfragmented datagram on a path of ``path_mtu`` bytes."""
    overhead = IPV6_UDP_HEADERS if ipv6 else IPV4_UDP_HEADERS
    if path_mtu <= overhead:
        raise UdpclLocalError(f"path MTU {path_mtu} bytes leaves no room for a bundle "
                              f"({overhead} bytes of IP/UDP headers)")
    return min(path_mtu - overhead, 65_507)


def encode(bundle: bytes | bytearray | memoryview, *, path_mtu: int = 1500,
           ipv6: bool = False) -> bytes | bytearray | memoryview:
    """The datagram for ``bundle``; raises :class:`UdpclError` when it would not fit."""
    limit = max_bundle_bytes(path_mtu, ipv6=ipv6)
    if len(bundle) > limit:
        raise UdpclLocalError(f"bundle of {len(bundle)} bytes exceeds the UDP CL limit of "
                              f"{limit} bytes (path MTU {path_mtu}); send it over TCPCL instead")
    if not len(bundle):
        raise UdpclLocalError("empty bundle: nothing to send")
    return bundle


def decode(datagram: bytes | bytearray | memoryview) -> bytes | None:
    """The bundle carried by ``datagram``; None for an empty (keepalive) datagram.

    Only the framing is checked here (the bundle layer decodes the rest): a datagram that
    cannot be a BPv7 bundle is refused with :class:`UdpclError`.
    """
    if not len(datagram):
        return None
    if datagram[0] != CBOR_INDEFINITE_ARRAY:
        raise UdpclRemoteError(f"datagram of {len(datagram)} bytes is not a BPv7 bundle: "
                               f"first byte 0x{datagram[0]:02x}, expected 0x9f (CBOR indefinite array)")
    return bytes(datagram)
