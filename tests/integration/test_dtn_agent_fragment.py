"""Two real agents (``netemu agent`` processes) on loopback: a bundle larger than the
peer's transfer MRU goes in fragments and arrives whole, once."""

from __future__ import annotations

import asyncio
import json

import pytest
from dtn_agent_harness import AgentProc, free_port, write_pair

from netemu.agent import BpClient


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
