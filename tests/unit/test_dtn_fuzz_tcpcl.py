"""Property fuzz of the TCPCLv4 decoder and session: any input either decodes or is
rejected with a TcpclError whose message says what was wrong, never another exception."""

from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netemu.dtn import tcpcl as t

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Valid messages, to mutate: fuzzing only random bytes rarely gets past the type code.
ext = st.builds(t.ExtensionItem, st.integers(0, 0xFFFF), st.binary(max_size=12), st.booleans())
messages = st.one_of(
    st.builds(t.SessInit, st.integers(0, 0xFFFF), st.integers(1, 2**64 - 1),
              st.integers(0, 2**64 - 1), st.text(max_size=20), st.tuples(ext)),
    st.builds(t.XferSegment, st.sampled_from([0, 1, 2, 3]), st.integers(0, 2**64 - 1),
              st.binary(max_size=40), st.tuples(ext)),
    st.builds(t.XferAck, st.sampled_from([0, 1, 2, 3]), st.integers(0, 2**64 - 1),
              st.integers(0, 2**64 - 1)),
    st.builds(t.XferRefuse, st.integers(0, 255), st.integers(0, 2**64 - 1)),
    st.just(t.Keepalive()),
    st.builds(t.SessTerm, st.sampled_from([0, 1]), st.integers(0, 255)),
    st.builds(t.MsgReject, st.integers(0, 255), st.integers(0, 255)),
)


def _mutate(raw: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    b = bytearray(raw)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b[: max(0, len(b) - cut)])


def _clear(e: t.TcpclError) -> None:
    msg = str(e)
    assert len(msg) > 15, msg
    # Every rejection names the message (or the contact header) it came from.
    assert any(n in msg for n in (*t.MESSAGE_NAMES.values(), "contact header",
                                  "message type", "session")), msg


@FUZZ
@given(st.binary(max_size=200))
def test_decode_random_bytes(raw):
    try:
        t.decode_message(raw)
    except t.TcpclError as e:
        _clear(e)


@FUZZ
@given(messages, st.lists(st.tuples(st.integers(0, 500), st.integers(0, 255)), max_size=4),
       st.integers(0, 3))
def test_decode_mutated_messages(msg, flips, cut):
    raw = _mutate(msg.encode(), flips, cut)
    try:
        got = t.decode_message(raw)
    except t.TcpclError as e:
        _clear(e)
        return
    if got is not None:
        m, end = got
        assert 0 < end <= len(raw)


@FUZZ
@given(messages)
def test_roundtrip(msg):
    raw = msg.encode()
    m, end = t.decode_message(raw)
    assert end == len(raw)
    if isinstance(msg, t.XferSegment):
        assert bytes(m.data) == bytes(msg.data) and m.flags == msg.flags
        if msg.flags & t.SEG_START:
            assert m.extensions == msg.extensions
    else:
        assert m == msg


def _session_stream_ok(stream: bytes, chunks: list[int]) -> None:
    s = t.Session(t.Role.PASSIVE, "ipn:2.0", segment_mru=64, transfer_mru=256)
    pos = 0
    i = 0
    try:
        while pos < len(stream):
            n = chunks[i % len(chunks)] if chunks else len(stream)
            i += 1
            for ev in s.receive_data(stream[pos : pos + n]):
                if isinstance(ev, t.TransferReceived):
                    s.ack_transfer(ev.transfer_id)
            pos += n
            s.data_to_send()
    except t.TcpclError as e:
        _clear(e)


@FUZZ
@given(st.lists(messages, max_size=6),
       st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=3),
       st.lists(st.integers(1, 50), max_size=5))
def test_session_survives_or_rejects_clearly(msgs, flips, chunks):
    init = t.SessInit(5, 1000, 1000, "ipn:1.0").encode()
    body = b"".join(m.encode() for m in msgs)
    stream = b"dtn!\x04\x00" + init + _mutate(body, flips, 0)
    _session_stream_ok(stream, chunks)


@FUZZ
@given(st.binary(max_size=300), st.lists(st.integers(1, 50), max_size=5))
def test_session_random_bytes_after_handshake(junk, chunks):
    stream = b"dtn!\x04\x00" + t.SessInit(5, 1000, 1000, "ipn:1.0").encode() + junk
    _session_stream_ok(stream, chunks)


def test_huge_declared_lengths_do_not_allocate():
    # A segment that declares 2^64-1 bytes must be refused, not buffered.
    s = t.Session(t.Role.PASSIVE, "ipn:2.0", segment_mru=1000)
    s.receive_data(b"dtn!\x04\x00" + t.SessInit(5, 1000, 1000, "ipn:1.0").encode())
    raw = struct.pack("!BBQIQ", 1, 3, 0, 0, 2**64 - 1)
    try:
        s.receive_data(raw)
        raise AssertionError("accepted a 2^64-byte segment")
    except t.TcpclError as e:
        assert "segment MRU" in str(e)
