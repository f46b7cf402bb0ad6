"""UDP CL: one bundle per datagram within the path MTU; oversize bundles refused clearly."""

from __future__ import annotations

import socket

import pytest

from netemu.dtn import udpcl


def test_limit_follows_path_mtu():
    assert udpcl.max_bundle_bytes(1500) == 1472
    assert udpcl.max_bundle_bytes(1500, ipv6=True) == 1452
    assert udpcl.max_bundle_bytes(65535) == 65507
    with pytest.raises(udpcl.UdpclError, match="no room"):
        udpcl.max_bundle_bytes(20)


def test_oversize_bundle_refused_with_advice():
    with pytest.raises(udpcl.UdpclError, match="1473 bytes exceeds the UDP CL limit of 1472"):
        udpcl.encode(b"\x9f" + b"x" * 1472)
    assert udpcl.encode(b"\x9f" + b"x" * 1471) == b"\x9f" + b"x" * 1471


def test_decode_checks_bpv7_framing():
    assert udpcl.decode(b"") is None
    assert udpcl.decode(b"\x9f\x01\xff") == b"\x9f\x01\xff"
    with pytest.raises(udpcl.UdpclRemoteError, match="first byte 0x47"):
        udpcl.decode(b"GET")
    with pytest.raises(udpcl.UdpclLocalError, match="empty bundle"):
        udpcl.encode(b"")


def test_datagram_roundtrip_on_loopback():
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        rx.settimeout(5)
        bundle = b"\x9f" + bytes(range(200)) + b"\xff"
        tx.sendto(udpcl.encode(bundle), rx.getsockname())
        data, _ = rx.recvfrom(65535)
        assert udpcl.decode(data) == bundle
    finally:
        rx.close()
        tx.close()
