"""Stateful fuzz of the TCPCLv4 session (netemu.dtn.tcpcl): two sessions joined by an
in-memory wire, driven by hypothesis in any order — bytes delivered in pieces of any size,
transfers started, acknowledged and refused, terminations, lost connections, junk — with
or without TLS, with a peer policy that may refuse, and a small in-progress budget.

What must always hold: only TcpclError ever escapes (and none at all without junk, unless
the policy refused the peer); a refused peer never gets a session nor a bundle; every
bundle that arrives is the one sent under its transfer ID; the budget holds exactly what
the unfinished incoming transfer holds, never more than its limit, and nothing once the
connection is gone.
"""

from __future__ import annotations

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from netemu.dtn import tcpcl as t

SIDES = st.sampled_from(["a", "p"])


class TwoSessions(RuleBasedStateMachine):
    @initialize(tls=st.booleans(), refuse=st.integers(0, 3).map(lambda d: d == 0),
                limit=st.integers(0, 3000),
                smru=st.integers(64, 700), tmru=st.integers(64, 2500))
    def setup(self, tls: bool, refuse: bool, limit: int, smru: int, tmru: int) -> None:
        self.refuse = refuse
        self.budget = {"a": t.RxBudget(limit), "p": t.RxBudget(limit)}
        self.s = {
            "a": t.Session(t.Role.ACTIVE, "ipn:1.0", segment_mru=smru, transfer_mru=tmru,
                          can_tls=tls, rx_budget=self.budget["a"]),
            "p": t.Session(t.Role.PASSIVE, "ipn:2.0", segment_mru=smru, transfer_mru=tmru,
                          can_tls=tls, rx_budget=self.budget["p"],
                          check_peer=lambda nid: "not ours" if refuse else None),
        }
        self.wire = {"a": bytearray(), "p": bytearray()}  # bytes on their way TO a side
        self.sent: dict[str, dict[int, bytes]] = {"a": {}, "p": {}}
        self.pending: dict[str, list[int]] = {"a": [], "p": []}  # received, not yet acked
        self.dead: set[str] = set()  # sides whose session raised
        self.tls_wait: set[str] = set()
        self.junk = False
        self.started: set[str] = set()
        self._pump("a")

    # --- plumbing -------------------------------------------------------------------

    @staticmethod
    def _other(side: str) -> str:
        return "p" if side == "a" else "a"

    def _pump(self, side: str) -> None:
        for buf in self.s[side].data_to_send():
            self.wire[self._other(side)] += bytes(buf)

    def _events(self, side: str, events: list[t.Event]) -> None:
        other = self._other(side)
        for ev in events:
            if isinstance(ev, t.TlsNegotiated):
                self.tls_wait.add(side)
                if self.tls_wait == {"a", "p"}:  # both handshakes done at once
                    if any(self.s[x].state is not t.SessionState.TLS for x in ("a", "p")):
                        # a side ended its session meanwhile: the channel aborts the
                        # connection once the handshake is done (TcpclChannel._tls_handshake)
                        event("session ended during the TLS handshake")
                        self.dead.update(("a", "p"))
                        continue
                    self.s["p"].tls_established()
                    self.s["a"].tls_established()
                    self._pump("a")
            elif isinstance(ev, t.SessionStarted):
                assert not self.refuse, "a refused peer got a session"
                event("session started" + (" over TLS" if self.s[side].tls else ""))
                self.started.add(side)
            elif isinstance(ev, t.TransferReceived):
                event("a bundle arrived" + (" after junk" if self.junk else ""))
                assert not self.refuse
                if not self.junk:
                    assert ev.data == self.sent[other].get(ev.transfer_id), ev.transfer_id
                self.pending[side].append(ev.transfer_id)

    # --- rules ----------------------------------------------------------------------

    @rule(side=SIDES, n=st.integers(1, 3000))
    def deliver(self, side: str, n: int) -> None:
        if side in self.dead or not self.wire[side]:
            return
        chunk = bytes(self.wire[side][:n])
        del self.wire[side][:n]
        try:
            events = self.s[side].receive_data(chunk)
        except t.TcpclRefused:
            event("peer refused")
            assert self.refuse or self.junk
            self.dead.add(side)
        except t.TcpclError as e:
            assert self.junk, f"{side}: {e}"
            assert len(str(e)) > 10
            self.dead.add(side)
        else:
            self._events(side, events)
        self._pump(side)

    @rule()
    def settle(self) -> None:
        """Deliver everything both ways until the wire is quiet (the common case)."""
        for _ in range(50):
            if not any(self.wire[x] for x in "ap" if x not in self.dead):
                return
            for side in "ap":
                self.deliver(side, 1 << 20)

    @rule(side=SIDES, size=st.integers(0, 2500))
    def send(self, side: str, size: int) -> None:
        s = self.s[side]
        if side in self.dead or not s.can_send or size + 4 > s.peer_transfer_mru:
            return
        tid = s._next_tid
        data = tid.to_bytes(4, "big") + bytes([tid % 251]) * size
        assert s.send_transfer(data) == tid
        self.sent[side][tid] = data
        self._pump(side)

    @rule(side=SIDES, ok=st.booleans())
    def answer(self, side: str, ok: bool) -> None:
        if not self.pending[side] or side in self.dead:
            return
        tid = self.pending[side].pop(0)
        if ok:
            self.s[side].ack_transfer(tid)
        else:
            self.s[side].refuse_transfer(tid, t.RefuseReason.NO_RESOURCES)
        self._pump(side)

    @rule(side=SIDES, reason=st.sampled_from(list(t.TermReason)), dice=st.integers(0, 5))
    def terminate(self, side: str, reason: t.TermReason, dice: int) -> None:
        if side in self.dead or dice:
            return
        self._events(side, self.s[side].terminate(reason))
        self._pump(side)

    @rule(side=SIDES)
    def keepalive(self, side: str) -> None:
        self.s[side].send_keepalive()
        self._pump(side)

    @rule(side=SIDES, junk=st.binary(min_size=1, max_size=24), at=st.integers(0, 64),
          dice=st.integers(0, 5))
    def inject(self, side: str, junk: bytes, at: int, dice: int) -> None:
        if dice:
            return
        self.junk = True
        w = self.wire[side]
        w[min(at, len(w)):min(at, len(w))] = junk

    @rule(dice=st.integers(0, 9))
    def lose_connection(self, dice: int) -> None:
        if dice:
            return
        for side in "ap":
            self.s[side].connection_lost()
            assert self.budget[side].used_bytes == 0, side
            self.dead.add(side)

    # --- invariants -------------------------------------------------------------------

    @invariant()
    def budget_is_what_is_held(self) -> None:
        if not hasattr(self, "s"):
            return
        for side in "ap":
            s, b = self.s[side], self.budget[side]
            assert 0 <= b.used_bytes <= b.limit_bytes
            assert b.used_bytes == s.rx_held_bytes, (side, b.used_bytes, s.rx_held_bytes)
            assert s.rx_held_bytes <= s.transfer_mru
            if s.state in (t.SessionState.CLOSED, t.SessionState.ERROR):
                assert b.used_bytes == 0

    @invariant()
    def a_refused_peer_gets_nothing(self) -> None:
        if getattr(self, "refuse", False):
            assert not self.started
            assert not self.pending["a"] and not self.pending["p"]


TwoSessions.TestCase.settings = settings(
    max_examples=400, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_tcpcl_session_state_machine = TwoSessions.TestCase


def test_ending_a_session_during_its_tls_handshake_sends_nothing_in_the_clear():
    a = t.Session(t.Role.ACTIVE, "ipn:1.0", can_tls=True)
    p = t.Session(t.Role.PASSIVE, "ipn:2.0", can_tls=True)
    p.receive_data(b"".join(a.data_to_send()))
    assert a.receive_data(b"".join(p.data_to_send())) == [
        t.ContactHeaderReceived(4, True), t.TlsNegotiated(server_side=False)]
    assert a.state is t.SessionState.TLS and a.data_to_send() == []
    assert a.terminate() == [t.SessionClosed(())]
    assert a.data_to_send() == [] and a.state is t.SessionState.CLOSED
