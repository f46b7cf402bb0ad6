"""Real agents (``netemu agent`` processes) on loopback: a bundle larger than the peer's
transfer MRU goes in fragments and arrives whole, once; fragments already taken survive
a ``kill -9`` of the agent putting them together."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from datetime import datetime, timezone

import pytest
from dtn_agent_harness import AgentProc, free_port, write_pair

from netemu.agent import BpClient
from netemu.dtn import tcpcl
from netemu.dtn.bundle import Bundle, datetime_to_dtn_ms
from netemu.dtn.fragment import fragment


def _events(path, name):
    out = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == name:
            out.append(rec)
    return out


@pytest.mark.integration
def test_11_mb_bundle_to_a_peer_with_a_10_mb_mru_is_delivered_whole(tmp_path):
    """B advertises a 10,000,000-byte transfer MRU (HDTN's default): A splits the
    11 MB bundle into fragments that fit, B puts them together and its app gets the
    bundle once."""
    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=free_port(),
                      extra={"transfer_mru": 10_000_000})
    b = AgentProc("B", cfgs["B"]).start()
    a = AgentProc("A", cfgs["A"]).start()
    payload = bytes(range(256)) * (11_000_000 // 256)

    async def go():
        rx = await BpClient.connect(str(tmp_path / "B" / "bp.sock"), timeout_s=20)
        tx = await BpClient.connect(str(tmp_path / "A" / "bp.sock"), timeout_s=20)
        await rx.register("ipn:2.7")
        await tx.send("ipn:2.7", payload, src="ipn:1.5")
        got = await rx.recv(timeout_s=60)
        with pytest.raises(asyncio.TimeoutError):  # once
            await rx.recv(timeout_s=2)
        await tx.close()
        await rx.close()
        return got

    try:
        got = asyncio.run(go())
        assert got.payload == payload and got.src == "ipn:1.5"
        (frag,) = _events(tmp_path / "A.log", "bundle_fragmented")
        assert "at most 10000000" in frag["message"]
        (whole,) = _events(tmp_path / "B.log", "bundle_reassembled")
        assert "2 fragments" in whole["message"]
        assert not _events(tmp_path / "A.log", "bundle_refused")
        assert not _events(tmp_path / "B.log", "reassembly_refused")
    finally:
        for p in (a, b):
            p.stop()


def _transfer(port: int, bundles: list[bytes], node_id: str = "ipn:1.0") -> None:
    """Play neighbour ``node_id``: one TCPCL session to the agent on ``port`` that sends
    ``bundles`` and returns once each one is acknowledged (= committed by the agent)."""
    s = tcpcl.Session(tcpcl.Role.ACTIVE, node_id)
    done = 0
    deadline = time.monotonic() + 30
    while True:  # (the agent listens a moment after it starts)
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=30)
            break
        except ConnectionRefusedError:
            assert time.monotonic() < deadline, f"nothing listens on port {port}"
            time.sleep(0.1)
    with sock:
        while done < len(bundles):
            for buf in s.data_to_send():
                sock.sendall(buf)
            data = sock.recv(65536)
            assert data, "the agent hung up"
            for ev in s.receive_data(data):
                if isinstance(ev, tcpcl.SessionStarted):
                    for b in bundles:
                        s.send_transfer(b)
                elif isinstance(ev, tcpcl.TransferCompleted):
                    done += 1
                elif isinstance(ev, tcpcl.TransferRefused):
                    raise AssertionError(f"transfer {ev.transfer_id} refused: {ev.reason}")
        s.terminate(tcpcl.TermReason.UNKNOWN)
        for buf in s.data_to_send():
            sock.sendall(buf)


@pytest.mark.integration
def test_kill9_mid_reassembly_loses_no_fragment(tmp_path):
    """B takes half of a bundle's fragments, is killed (-9) and restarted; the other
    half (and one of the first, sent again) completes the bundle, delivered once."""
    port_b = free_port()
    cfgs = write_pair(tmp_path, port_a=free_port(), port_b=port_b, a_to_b="")
    payload = bytes(range(256)) * 800  # 204,800 bytes
    created = datetime_to_dtn_ms(datetime.now(timezone.utc))
    whole = Bundle.new("ipn:1.5", "ipn:2.7", payload, lifetime_ms=3_600_000,
                       creation_ms=created, seq=1)
    frags = [f.encode() for f in fragment(whole, 20_000)]
    half = len(frags) // 2
    b = AgentProc("B", cfgs["B"]).start()
    try:
        _wait_socket(tmp_path / "B" / "bp.sock", b)
        _transfer(port_b, frags[:half])
        b.kill9()
        b = AgentProc("B", cfgs["B"]).start()
        _wait_socket(tmp_path / "B" / "bp.sock", b)
        _transfer(port_b, frags[half - 1:])

        async def take():
            async with await BpClient.connect(str(tmp_path / "B" / "bp.sock")) as rx:
                await rx.register("ipn:2.7")
                got = await rx.recv(timeout_s=30)
                with pytest.raises(asyncio.TimeoutError):  # once
                    await rx.recv(timeout_s=2)
                return got

        got = asyncio.run(take())
        assert got.payload == payload and got.src == "ipn:1.5"
        assert len(_events(tmp_path / "B.log", "bundle_reassembled")) == 1
    finally:
        b.stop()


def _wait_socket(path, proc: AgentProc, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.proc is not None and proc.proc.poll() is None, proc.stderr_tail()
        assert time.monotonic() < deadline, f"no {path} after {timeout_s} s"
        time.sleep(0.05)
