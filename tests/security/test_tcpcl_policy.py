"""The TCPCL session's policy hooks, byte by byte: what goes on the wire when a peer is
refused, when TLS is required and not offered, and when a transfer overruns the
in-progress budget."""

from __future__ import annotations

import pytest

from netemu.dtn import tcpcl as t


def _wire(s: t.Session) -> bytes:
    return b"".join(bytes(b) for b in s.data_to_send())


def _decode_all(raw: bytes) -> list[t.Message]:
    out, off = [], 0
    while off < len(raw):
        got = t.decode_message(raw, off)
        assert got is not None
        msg, off = got
        out.append(msg)
    return out


def test_a_refused_node_id_gets_sess_term_and_not_our_sess_init():
    seen = []
    p = t.Session(t.Role.PASSIVE, "ipn:1.0",
                  check_peer=lambda nid: seen.append(nid) or "not a neighbour")
    p.receive_data(t.ContactHeader().encode())
    _wire(p)  # our contact header
    with pytest.raises(t.TcpclRefused, match="'ipn:9.0' refused: not a neighbour"):
        p.receive_data(t.SessInit(30, 1000, 1000, "ipn:9.0").encode()
                       + t.XferSegment(t.SEG_START | t.SEG_END, 0, b"bundle").encode())
    assert seen == ["ipn:9.0"]
    assert _decode_all(_wire(p)) == [t.SessTerm(0, t.TermReason.CONTACT_FAILURE)]
    assert p.peer_node_id is None and not p.established


def test_required_tls_ends_a_session_with_a_peer_that_does_not_offer_it():
    p = t.Session(t.Role.PASSIVE, "ipn:1.0", can_tls=True, tls_required=True)
    with pytest.raises(t.TcpclRefused, match="does not offer TLS"):
        p.receive_data(t.ContactHeader(flags=0).encode())
    raw = _wire(p)
    assert t.decode_contact_header(raw[:6]).flags == t.FLAG_CAN_TLS
    assert _decode_all(raw[6:]) == [t.SessTerm(0, t.TermReason.CONTACT_FAILURE)]


def test_optional_tls_runs_in_the_clear_with_a_peer_that_does_not_offer_it():
    a = t.Session(t.Role.ACTIVE, "ipn:2.0")
    p = t.Session(t.Role.PASSIVE, "ipn:1.0", can_tls=True)
    p.receive_data(_wire(a))
    a.receive_data(_wire(p))
    events = p.receive_data(_wire(a))
    assert [type(e) for e in events] == [t.SessionStarted] and not p.tls


def test_bytes_in_the_clear_where_the_tls_handshake_belongs_end_the_session():
    p = t.Session(t.Role.PASSIVE, "ipn:1.0", can_tls=True)
    with pytest.raises(t.TcpclRemoteError, match="in the clear"):
        p.receive_data(t.ContactHeader(flags=t.FLAG_CAN_TLS).encode()
                       + t.SessInit(30, 1000, 1000, "ipn:2.0").encode())


def _established(budget: t.RxBudget) -> tuple[t.Session, t.Session]:
    a = t.Session(t.Role.ACTIVE, "ipn:2.0", segment_mru=1000)
    p = t.Session(t.Role.PASSIVE, "ipn:1.0", rx_budget=budget, segment_mru=1000)
    p.receive_data(_wire(a))
    a.receive_data(_wire(p))
    p.receive_data(_wire(a))
    a.receive_data(_wire(p))
    return a, p


def test_a_transfer_over_the_budget_is_refused_and_its_bytes_let_go():
    budget = t.RxBudget(2500)
    a, p = _established(budget)
    a.send_transfer(b"x" * 4000)  # four segments of 1000
    raw = _wire(a)
    events = p.receive_data(raw[:2000])  # two segments' worth: held
    assert events == [] and budget.used_bytes == p.rx_held_bytes > 1000
    events = p.receive_data(raw[2000:])
    assert events == [] and budget.used_bytes == 0 and p.rx_held_bytes == 0
    refusals = [m for m in _decode_all(_wire(p)) if isinstance(m, t.XferRefuse)]
    assert refusals == [t.XferRefuse(t.RefuseReason.NO_RESOURCES, 0)]
    # the next transfer, within the budget, arrives
    a.send_transfer(b"y" * 2000)
    events = p.receive_data(_wire(a))
    assert [e.data for e in events if isinstance(e, t.TransferReceived)] == [b"y" * 2000]
    assert budget.used_bytes == 0


def test_a_lost_connection_gives_the_budget_back():
    budget = t.RxBudget(10_000)
    a, p = _established(budget)
    a.send_transfer(b"z" * 3000)
    p.receive_data(_wire(a)[:1500])
    assert budget.used_bytes > 0
    p.connection_lost()
    assert budget.used_bytes == 0
