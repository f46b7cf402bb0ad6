"""The app socket's frames: length-prefixed CBOR maps, split anywhere, bad ones refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netemu.dtn.appframe import AppFrameError, FrameDecoder, encode_frame, encode_frame_parts


def test_frames_split_anywhere():
    frames = [{"op": "send", "payload": b"\x00\xff" * 100}, {"op": "status", "rid": 3}]
    stream = b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder()
    got = []
    for i in range(0, len(stream), 5):
        got += dec.feed(stream[i : i + 5])
    assert got == frames


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.sampled_from([0, 10, 65_000, 70_000, 300_000]), min_size=1,
                      max_size=5),
       cuts=st.lists(st.integers(1, 400_000), min_size=1, max_size=12))
def test_big_and_small_frames_split_anywhere(sizes, cuts):
    """Big frames are gathered chunk by chunk: any split of a stream of big and small
    frames gives the same frames, in order, with nothing left over."""
    frames = [{"op": "send", "rid": i, "payload": bytes([i]) * n} for i, n in enumerate(sizes)]
    stream = b"".join(b"".join(encode_frame_parts(f)) for f in frames)
    assert stream == b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder()
    got, pos = [], 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        if cut > pos:
            got += dec.feed(stream[pos:cut])
            pos = cut
    assert got == frames
    assert dec.feed(b"") == []


@pytest.mark.parametrize("raw, match", [
    (b"\x00\x00\x00\x01\xff", "not valid CBOR"),
    (b"\x00\x00\x00\x01\x01", "must be a CBOR map"),
    (b"\x7f\xff\xff\xff", "exceeds the limit"),
])
def test_bad_frames_are_clear_errors(raw, match):
    with pytest.raises(AppFrameError, match=match):
        FrameDecoder().feed(raw)
