"""MTCP framing (µD3TN): bundles as definite-length CBOR byte strings."""

from __future__ import annotations

import cbor2
import pytest

from netemu.dtn import mtcp


@pytest.mark.parametrize("n", [0, 1, 23, 24, 255, 256, 65535, 65536, 100_000])
def test_frame_is_canonical_cbor_bytestring(n):
    data = bytes(n % 251 for _ in range(n))
    framed = mtcp.encode(data)
    assert framed == cbor2.dumps(data)  # cbor2 writes the shortest header, as µD3TN does
    assert mtcp.MtcpDecoder().feed(framed) == [data]


def test_stream_split_anywhere():
    bundles = [b"a" * 10, b"b" * 300, b"", b"c" * 70000]
    stream = b"".join(mtcp.encode(b) for b in bundles)
    for step in (1, 3, 1000):
        dec = mtcp.MtcpDecoder()
        got = []
        for i in range(0, len(stream), step):
            got += dec.feed(stream[i : i + step])
        assert got == bundles and dec.buffered == 0


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x9f\x01", "major type 4"),
        (b"\x5f\x41a\xff", "indefinite-length"),
        (b"\x5c", "reserved CBOR additional information 28"),
        (b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", "exceeds the limit"),
    ],
)
def test_bad_stream_is_clear_error(raw, match):
    with pytest.raises(mtcp.MtcpError, match=match):
        mtcp.MtcpDecoder().feed(raw)


def test_error_names_stream_offset():
    dec = mtcp.MtcpDecoder()
    assert dec.feed(mtcp.encode(b"xyz")) == [b"xyz"]
    with pytest.raises(mtcp.MtcpError, match="MTCP stream byte 4"):
        dec.feed(b"\x01")
