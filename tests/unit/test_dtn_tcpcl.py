"""TCPCLv4 session state machine (RFC 9174): negotiation, transfers, refusals, termination."""

from __future__ import annotations

import struct

import pytest

from netemu.dtn import tcpcl as t
from netemu.errors import InputError, LocalProtocolError, ProtocolError, RemoteProtocolError


def pump(src: t.Session, dst: t.Session, *, chunk: int | None = None) -> list:
    """Move src's pending output into dst, optionally in tiny chunks; return dst's events."""
    events: list = []
    data = b"".join(bytes(b) for b in src.data_to_send())
    if chunk is None:
        if data:
            events += dst.receive_data(data)
    else:
        for i in range(0, len(data), chunk):
            events += dst.receive_data(data[i : i + chunk])
    return events


def establish(**kw) -> tuple[t.Session, t.Session]:
    a = t.Session(t.Role.ACTIVE, "ipn:1.0", keepalive_s=kw.get("ka_a", 30),
                  segment_mru=kw.get("smru_a", 1 << 20))
    p = t.Session(t.Role.PASSIVE, "ipn:2.0", keepalive_s=kw.get("ka_p", 10),
                  segment_mru=kw.get("smru_p", 1 << 20), transfer_mru=kw.get("tmru_p", 1 << 30))
    for _ in range(3):
        pump(a, p)
        pump(p, a)
    assert a.established and p.established
    return a, p


def test_contact_header_bytes_are_rfc_layout():
    a = t.Session(t.Role.ACTIVE, "ipn:1.0")
    assert b"".join(a.data_to_send()) == b"dtn!\x04\x00"  # magic, version 4, CAN_TLS clear


def test_sess_init_encoding_matches_rfc_field_order():
    m = t.SessInit(keepalive_s=15, segment_mru=1000, transfer_mru=5000, node_id="ipn:7.0")
    raw = m.encode()
    assert raw[0] == 0x07
    assert struct.unpack("!HQQH", raw[1:21]) == (15, 1000, 5000, 7)
    assert raw[21:28] == b"ipn:7.0" and raw[28:32] == b"\x00\x00\x00\x00"
    assert t.decode_message(raw) == (m, len(raw))


def test_negotiation_takes_minimum_keepalive_and_peer_mrus():
    a, p = establish(ka_a=30, ka_p=10, smru_a=4000, smru_p=2000, tmru_p=123456)
    assert a.keepalive_s == p.keepalive_s == 10
    assert a.peer_node_id == "ipn:2.0" and p.peer_node_id == "ipn:1.0"
    assert a.peer_segment_mru == 2000 and p.peer_segment_mru == 4000
    assert a.peer_transfer_mru == 123456


@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
def test_segmented_transfer_reassembles_and_acks_only_after_store(chunk):
    a, p = establish(smru_p=1000)
    bundle = bytes(range(256)) * 10  # 2560 bytes → 3 segments
    tid = a.send_transfer(bundle)
    events = pump(a, p, chunk=chunk)
    got = [e for e in events if isinstance(e, t.TransferReceived)]
    assert got == [t.TransferReceived(tid, bundle)]
    progress = pump(p, a)  # intermediate acks only
    assert [e.acked_bytes for e in progress] == [1000, 2000]
    assert a.in_flight == 1
    p.ack_transfer(tid)  # bundle stored: final ack
    assert pump(p, a) == [t.TransferCompleted(tid, len(bundle))]
    assert a.in_flight == 0


def test_segments_carry_start_end_flags_and_transfer_length():
    a, p = establish(smru_p=1000)
    a.send_transfer(b"z" * 1500)
    raw = b"".join(bytes(x) for x in a.data_to_send())
    seg1, end1 = t.decode_message(raw)
    seg2, end2 = t.decode_message(raw, end1)
    assert seg1.flags == t.SEG_START and seg1.transfer_length == 1500 and len(seg1.data) == 1000
    assert seg2.flags == t.SEG_END and len(seg2.data) == 500 and end2 == len(raw)


def test_many_pipelined_transfers_single_feed():
    a, p = establish()
    tids = [a.send_transfer(b"b%d" % i) for i in range(50)]
    events = pump(a, p)
    assert [e.transfer_id for e in events] == tids
    for e in events:
        p.ack_transfer(e.transfer_id)
    done = pump(p, a)
    assert [e.transfer_id for e in done] == tids


def test_transfer_over_peer_mru_is_refused_with_no_resources():
    a, p = establish(tmru_p=100)
    with pytest.raises(t.TcpclError, match="transfer MRU"):
        a.send_transfer(b"x" * 101)
    # A peer that ignores our MRU gets XFER_REFUSE(NO_RESOURCES).
    a.peer_transfer_mru = 1 << 30
    tid = a.send_transfer(b"x" * 500)
    assert pump(a, p) == []
    assert pump(p, a) == [t.TransferRefused(tid, t.RefuseReason.NO_RESOURCES)]
    # The session survives: a small bundle still goes through.
    tid2 = a.send_transfer(b"ok")
    assert pump(a, p) == [t.TransferReceived(tid2, b"ok")]


def test_refuse_transfer_by_receiver_reports_reason():
    a, p = establish()
    tid = a.send_transfer(b"hello")
    pump(a, p)
    p.refuse_transfer(tid, t.RefuseReason.NO_RESOURCES)
    assert pump(p, a) == [t.TransferRefused(tid, t.RefuseReason.NO_RESOURCES)]


def test_unknown_critical_transfer_extension_refused():
    a, p = establish()
    ext = t.ExtensionItem(0x7777, b"\x01", critical=True)
    seg = t.XferSegment(t.SEG_START | t.SEG_END, 0, b"data", (ext,))
    assert p.receive_data(seg.encode()) == []  # not delivered
    out = b"".join(bytes(x) for x in p.data_to_send())
    assert out == t.XferRefuse(t.RefuseReason.EXTENSION_FAILURE, 0).encode()


def test_unknown_critical_session_extension_terminates():
    a = t.Session(t.Role.ACTIVE, "ipn:1.0")
    a.data_to_send()
    a.receive_data(b"dtn!\x04\x00")
    a.data_to_send()
    bad = t.SessInit(10, 100, 100, "ipn:9.0", (t.ExtensionItem(5, b"", critical=True),))
    with pytest.raises(t.TcpclError, match="critical session extension"):
        a.receive_data(bad.encode())
    out = b"".join(bytes(x) for x in a.data_to_send())
    assert out == t.SessTerm(0, t.TermReason.CONTACT_FAILURE).encode()


def test_unknown_message_type_sends_msg_reject_and_fails():
    a, p = establish()
    with pytest.raises(t.TcpclError, match="unknown message type 0x42"):
        p.receive_data(b"\x42")
    out = b"".join(bytes(x) for x in p.data_to_send())
    assert out.startswith(t.MsgReject(t.RejectReason.TYPE_UNKNOWN, 0x42).encode())
    assert p.state is t.SessionState.ERROR
    with pytest.raises(t.TcpclError, match="already failed"):
        p.receive_data(b"\x04")


def test_bad_magic_is_clear_error():
    p = t.Session(t.Role.PASSIVE, "ipn:2.0")
    with pytest.raises(t.TcpclError, match="not speaking TCPCL"):
        p.receive_data(b"GET / HTTP/1.1\r\n")


def test_errors_say_which_side_broke_the_protocol():
    """The peer's bad bytes are a remote protocol error, a request this side may not make
    a local one; neither is the user's input."""
    p = t.Session(t.Role.PASSIVE, "ipn:2.0")
    with pytest.raises(RemoteProtocolError) as remote:
        p.receive_data(b"GET / HTTP/1.1\r\n")
    assert isinstance(remote.value, t.TcpclRemoteError)
    with pytest.raises(LocalProtocolError) as local:
        t.Session(t.Role.ACTIVE, "ipn:1.0").send_transfer(b"x")
    assert isinstance(local.value, t.TcpclLocalError)
    for e in (remote.value, local.value):
        assert isinstance(e, ProtocolError) and not isinstance(e, InputError)


def test_version_mismatch_answers_with_sess_term_then_fails():
    """RFC 9174 4.3: a passive entity offered TCPCL version 3 sends its contact header,
    then SESS_TERM with reason "Version mismatch", so a v3 peer may retry with v3."""
    p = t.Session(t.Role.PASSIVE, "ipn:2.0")
    with pytest.raises(t.TcpclError, match="version 3"):
        p.receive_data(b"dtn!\x03\x00")
    out = b"".join(bytes(x) for x in p.data_to_send())
    assert out == b"dtn!\x04\x00" + t.SessTerm(0, t.TermReason.VERSION_MISMATCH).encode()
    assert out[6:] == bytes((t.SESS_TERM, 0, 0x02))  # flags 0, reason 0x02
    assert p.state is t.SessionState.ERROR


def test_active_entity_answered_with_another_version_closes_without_sess_term():
    a = t.Session(t.Role.ACTIVE, "ipn:1.0")
    a.data_to_send()  # our contact header
    with pytest.raises(t.TcpclError, match="version 3"):
        a.receive_data(b"dtn!\x03\x00")
    assert b"".join(bytes(x) for x in a.data_to_send()) == b""


def test_segment_before_session_established_is_rejected():
    p = t.Session(t.Role.PASSIVE, "ipn:2.0")
    p.receive_data(b"dtn!\x04\x00")
    p.data_to_send()
    with pytest.raises(t.TcpclError, match="before the session was established"):
        p.receive_data(t.XferSegment(3, 0, b"x", ()).encode())
    assert t.MsgReject(t.RejectReason.UNEXPECTED, t.XFER_SEGMENT).encode() in b"".join(
        bytes(x) for x in p.data_to_send())


def test_segment_over_mru_terminates():
    a, p = establish(smru_p=10)
    a.peer_segment_mru = 100
    a.send_transfer(b"x" * 50)
    with pytest.raises(t.TcpclError, match="exceeds this side's segment MRU 10"):
        pump(a, p)


def test_length_extension_mismatch_is_error():
    a, p = establish()
    seg = t.XferSegment(t.SEG_START | t.SEG_END, 0, b"abc", (t.transfer_length_item(4),))
    with pytest.raises(t.TcpclError, match="transfer length extension said 4"):
        p.receive_data(seg.encode())


def test_keepalive_roundtrip():
    a, p = establish()
    a.send_keepalive()
    assert pump(a, p) == [t.KeepaliveReceived()]


def test_orderly_termination_waits_for_in_flight_transfer():
    a, p = establish()
    tid = a.send_transfer(b"last")
    events = a.terminate(t.TermReason.IDLE_TIMEOUT)
    assert events == [t.SessionTerminating(t.TermReason.IDLE_TIMEOUT, by_peer=False)]
    assert not a.can_send
    ev = pump(a, p)
    assert t.TransferReceived(tid, b"last") in ev
    assert t.SessionTerminating(t.TermReason.IDLE_TIMEOUT, by_peer=True) in ev
    p.ack_transfer(tid)
    ev2 = pump(p, a)
    assert t.TransferCompleted(tid, 4) in ev2
    assert ev2[-1] == t.SessionClosed(())
    assert a.state is t.SessionState.CLOSED


def test_connection_lost_reports_unacked_transfers():
    a, p = establish()
    t1 = a.send_transfer(b"one")
    t2 = a.send_transfer(b"two")
    pump(a, p)
    p.ack_transfer(t1)
    pump(p, a)
    assert a.connection_lost() == [t.SessionClosed((t2,))]


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\x01\x80" + b"\0" * 8, "reserved flag bits"),
        (b"\x02\x04" + b"\0" * 16, "reserved flag bits"),
        (b"\x05\x02\x00", "reserved flag bits"),
        (b"\x07" + struct.pack("!HQQH", 1, 0, 5, 0) + b"\0\0\0\0", "segment MRU is 0"),
        (b"\x07" + struct.pack("!HQQH", 1, 9, 5, 2) + b"\xff\xfe\0\0\0\0", "not valid UTF-8"),
        (b"\x07" + struct.pack("!HQQH", 1, 9, 5, 0) + b"\0\0\0\x03\x00\x00\x01",
         "extension item header truncated"),
    ],
)
def test_decoder_rejections_name_the_message_and_field(raw, match):
    with pytest.raises(t.TcpclError, match=match):
        t.decode_message(raw)


def test_decoder_waits_for_more_bytes():
    raw = t.XferAck(3, 9, 100).encode()
    for i in range(len(raw)):
        assert t.decode_message(raw[:i]) is None
    assert t.decode_message(raw) == (t.XferAck(3, 9, 100), len(raw))


def test_repeated_transfer_id_is_protocol_error():
    a, p = establish()
    seg = t.XferSegment(t.SEG_START | t.SEG_END, 5, b"x", (t.transfer_length_item(1),))
    assert p.receive_data(seg.encode()) == [t.TransferReceived(5, b"x")]
    with pytest.raises(t.TcpclError, match="transfer ID not above the previous one"):
        p.receive_data(seg.encode())


def test_single_segment_transfer_carries_no_transfer_length_extension():
    """RFC 9174 section 5.2.5.1: a transfer in one segment SHOULD NOT carry the Transfer
    Length extension (it tells nothing the segment does not); a transfer in several
    carries it in its first segment only."""
    a, p = establish()
    a.send_transfer(b"abc")
    raw = b"".join(bytes(x) for x in a.data_to_send())
    assert raw == t.XferSegment(t.SEG_START | t.SEG_END, 0, b"abc", ()).encode()
    assert p.receive_data(raw) == [t.TransferReceived(0, b"abc")]
    a2, _ = establish(smru_p=1000)
    a2.send_transfer(b"z" * 2500)
    wire = b"".join(bytes(x) for x in a2.data_to_send())
    segs, off = [], 0
    while off < len(wire):
        msg, off = t.decode_message(wire, off)
        segs.append(msg)
    assert [len(m.data) for m in segs] == [1000, 1000, 500]
    assert [m.extensions for m in segs] == [(t.transfer_length_item(2500),), (), ()]


def test_receiver_fast_path_takes_single_segments_with_and_without_the_length_item():
    a, p = establish()
    run = b"".join((t.XferSegment(t.SEG_START | t.SEG_END, 0, b"bare", ()).encode(),
                    t.XferSegment(t.SEG_START | t.SEG_END, 1, b"with",
                                  (t.transfer_length_item(4),)).encode(),
                    t.XferSegment(t.SEG_START | t.SEG_END, 2, b"", ()).encode()))
    got = p.receive_data(run[:7]) + p.receive_data(run[7:30]) + p.receive_data(run[30:])
    assert got == [t.TransferReceived(0, b"bare"), t.TransferReceived(1, b"with"),
                   t.TransferReceived(2, b"")]


def test_new_transfer_after_sess_term_is_refused():
    a, p = establish()
    p.terminate(t.TermReason.BUSY)
    pump(p, a)  # a now knows; a peer ignoring it starts a transfer anyway
    seg = t.XferSegment(t.SEG_START | t.SEG_END, 0, b"late", (t.transfer_length_item(4),))
    assert p.receive_data(seg.encode()) == []
    assert b"".join(bytes(x) for x in p.data_to_send()) == t.XferRefuse(
        t.RefuseReason.SESSION_TERMINATING, 0).encode()
