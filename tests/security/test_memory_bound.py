"""What a hostile peer can make an agent hold: repeated half-finished transfers.

The peer passes the node-ID check (it claims a neighbour's ID, which without TLS is all
it takes), opens several sessions at once and in each starts a 16 MiB bundle, sends 15
MiB of it and stops. The agent (a real ``netemu agent`` process) must keep the growth of
its resident memory within its ``rx_in_progress_max_bytes`` (plus the interpreter's own
slack), give it back when the sessions go, and end a transfer that stalls.
"""

from __future__ import annotations

import fcntl
import json
import socket
import termios
import time
from pathlib import Path

from dtn_agent_harness import AgentProc
from peers import free_port

from netemu.dtn import tcpcl

MiB = 1 << 20
LIMIT = 32 * MiB  # rx_in_progress_max_bytes of the agent under test
SLACK = 8 * MiB  # read buffers, allocator rounding, the event loop's own growth
SESSIONS = 8
SENT = 15 * MiB  # of each 16 MiB transfer


def _agent(tmp: Path, **extra) -> tuple[AgentProc, int]:
    port = free_port()
    (tmp / "A").mkdir()
    cfg = {
        "node": "A", "ipn": 1,
        "listen": {"tcpcl": [f"127.0.0.1:{port}"], "udpcl": []},
        "app_socket": str(tmp / "A" / "bp.sock"), "store": str(tmp / "A" / "s.sqlite"),
        "log": str(tmp / "A.log"),
        "neighbours": [{"name": "B", "ipn": 2, "cl": "tcpcl", "address": ""}],
        "rx_in_progress_max_bytes": LIMIT, **extra,
    }
    path = tmp / "A.json"
    path.write_text(json.dumps(cfg))
    agent = AgentProc("A", path).start()
    deadline = time.monotonic() + 30
    while not (tmp / "A" / "bp.sock").exists():
        assert agent.proc is not None and agent.proc.poll() is None, agent.stderr_tail()
        assert time.monotonic() < deadline, "agent did not start"
        time.sleep(0.1)
    return agent, port


def _rss(agent: AgentProc) -> int:
    assert agent.proc is not None
    for line in Path(f"/proc/{agent.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _half_transfer(port: int) -> socket.socket:
    """A session as ipn:2.0 whose first transfer stops 1 MiB short of its end."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(tcpcl.ContactHeader().encode()
              + tcpcl.SessInit(0, 16 * MiB, 16 * MiB, "ipn:2.0").encode())
    head = tcpcl.XferSegment(tcpcl.SEG_START, 1, b"",
                             (tcpcl.transfer_length_item(16 * MiB),)).header()
    s.sendall(head[:-8] + (16 * MiB).to_bytes(8, "big"))
    chunk = b"\xa5" * MiB
    for _ in range(SENT // MiB):
        s.sendall(chunk)
    return s


def _drained(socks: list[socket.socket], timeout_s: float = 30) -> None:
    """Until the agent's kernel has taken every byte sent, then a moment for the agent."""
    deadline = time.monotonic() + timeout_s
    for s in socks:
        while True:
            buf = bytearray(4)
            fcntl.ioctl(s.fileno(), termios.TIOCOUTQ, buf)
            if int.from_bytes(buf, "little") == 0:
                break
            assert time.monotonic() < deadline, "agent stopped reading"
            time.sleep(0.05)
    time.sleep(1.0)


def test_half_transfers_keep_rss_growth_within_the_limit(tmp_path):
    agent, port = _agent(tmp_path)
    try:
        time.sleep(1.0)
        base = _rss(agent)
        peaks = []
        for _ in range(3):
            socks = []
            for _ in range(SESSIONS):
                socks.append(_half_transfer(port))
            _drained(socks)
            peaks.append(_rss(agent) - base)
            for s in socks:
                s.close()
            time.sleep(1.0)
        after = _rss(agent) - base
        held = SESSIONS * SENT
        assert max(peaks) <= LIMIT + SLACK, (
            f"RSS grew {max(peaks) / MiB:.0f} MiB with {held / MiB:.0f} MiB of unfinished "
            f"transfers offered; limit {LIMIT / MiB:.0f} MiB (+{SLACK / MiB:.0f} slack); "
            f"rounds: {[round(p / MiB) for p in peaks]} MiB")
        assert after <= LIMIT + SLACK, f"{after / MiB:.0f} MiB kept after the sessions closed"
    finally:
        agent.stop()


def test_a_stalled_transfer_ends_its_session(tmp_path):
    agent, port = _agent(tmp_path, transfer_stall_s=1)
    try:
        s = _half_transfer(port)
        s.settimeout(30)
        got = b""
        while chunk := s.recv(65536):  # until the agent closes the connection
            got += chunk
        s.close()
        log = [json.loads(line) for line in (tmp_path / "A.log").read_text().splitlines()]
        stalled = [r for r in log if r["event"] == "transfer_stalled"]
        assert stalled and stalled[0]["held_bytes"] == SENT
    finally:
        agent.stop()
