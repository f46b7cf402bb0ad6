"""Interop with an independent BPv7 implementation: pyD3TN (D3TN's Python library, from
PyPI), run from its own environment (``build/pyd3tn-venv``, made by ``scripts/dev setup``)
through ``pyd3tn_side.py``.

- the codec both ways: bundles netemu encodes read the same in pyD3TN, field by field,
  and bundles pyD3TN encodes read the same in netemu — fragments and extension blocks
  included;
- MTCP both ways through a running ``netemu agent``: pyD3TN sends a bundle over MTCP that
  an app takes from the agent, and the agent forwards an app's bundle over MTCP to
  pyD3TN; the same with fragments: fragments pyD3TN makes (out of order, overlapping)
  reach the app as one bundle, and a bundle larger than the neighbour's
  ``max_bundle_bytes`` leaves the agent in fragments that pyD3TN reads as such.

Where pyD3TN departs from RFC 9171 the tests say so and check that netemu follows the RFC:

- its ``BundleProcFlag`` names bit 22 (0x400000) "report deletion", where RFC 9171 4.2.3
  has bit 18 (0x040000); its ``BlockProcFlag`` swaps 0x02 and 0x04 and names 0x10
  "delete bundle" (RFC 9171 4.2.4: 0x02 report, 0x04 delete bundle, 0x10 discard
  block). Flags travel as integers, so the bits compared here are the wire's;
- its parser refuses a block type it does not know (``ValueError: 230 is not a valid
  BlockType``), where RFC 9171 4.2.4 has the receiver obey the block's flags: the codec
  comparison uses the block types it knows;
- its status-report times are in seconds, RFC 9171 6.1.1's in milliseconds (DTN time):
  no status report is compared here.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from netemu.dtn import cbor
from netemu.dtn.bundle import (
    BLOCK_PAYLOAD,
    BLOCK_PREVIOUS_NODE,
    Bundle,
    BundleFlags,
    CanonicalBlock,
    PrimaryBlock,
    decode_bundle_strict,
)
from netemu.dtn.eid import EID

ROOT = Path(__file__).resolve().parents[2]
PYD3TN = ROOT / "build" / "pyd3tn-venv" / "bin" / "python"
SIDE = Path(__file__).with_name("pyd3tn_side.py")

if not PYD3TN.exists():
    if os.environ.get("CI"):  # the set-up makes it: in CI its absence is a failure
        raise RuntimeError(f"{PYD3TN} missing: scripts/dev setup makes the pyD3TN environment")
    pytest.skip("no pyD3TN environment (scripts/dev setup makes build/pyd3tn-venv)",
                allow_module_level=True)


def side(*args: str, lines: list[str] | None = None, timeout: float = 120) -> list[str]:
    r = subprocess.run([str(PYD3TN), str(SIDE), *args], input="\n".join(lines or []) + "\n",
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.splitlines()


def _eid(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return f"ipn:{rng.randrange(1, 1 << 20)}.{rng.randrange(0, 1 << 16)}"
    return f"dtn://node{rng.randrange(100)}/app{rng.randrange(10)}"


def _our_bundle(rng: random.Random, i: int) -> Bundle:
    flags = rng.choice([0, BundleFlags.MUST_NOT_FRAGMENT,
                        BundleFlags.REPORT_DELIVERY | BundleFlags.STATUS_TIME_REQUESTED,
                        BundleFlags.REPORT_DELETION | BundleFlags.REPORT_RECEPTION])
    crc = rng.choice(["none", "crc16", "crc32c"])
    b = Bundle.new(_eid(rng), _eid(rng), rng.randbytes(rng.randrange(0, 3000)),
                   lifetime_ms=rng.randrange(1, 10**9), creation_ms=rng.randrange(0, 10**12),
                   seq=i, report_to=_eid(rng) if rng.random() < 0.5 else None, crc=crc,
                   flags=int(flags), hop_limit=rng.choice([None, 30]),
                   age_ms=rng.choice([None, rng.randrange(10**6)]))
    pick = rng.random()
    if pick < 0.4:
        b.set_previous_node(EID.parse(f"ipn:{rng.randrange(1, 999)}.0"))
    elif pick < 0.7:  # block flags travel as integers (see the module docstring)
        b.replace_block(CanonicalBlock(BLOCK_PREVIOUS_NODE, 20, cbor.dumps([2, [7, 0]]),
                                       rng.choice([0, 0x01, 0x10]), 1))
    if i % 10 == 0:  # every tenth a fragment: offset and total ADU length in the primary
        p = b.primary
        total = len(b.payload) + rng.randrange(1, 5000)
        frag = PrimaryBlock(p.destination, p.source, p.report_to, p.creation_ms,
                            p.sequence, p.lifetime_ms,
                            (p.flags | BundleFlags.IS_FRAGMENT) & ~BundleFlags.MUST_NOT_FRAGMENT,
                            p.crc_type, fragment_offset=rng.randrange(0, 5000),
                            total_adu_length=total)
        b = Bundle(frag, b.blocks)
    return b


def _fields(b: Bundle) -> dict:
    p = b.primary
    return {
        "version": 7, "flags": int(p.flags), "crc_type": p.crc_type,
        "destination": str(p.destination), "source": str(p.source),
        "report_to": str(p.report_to), "creation_ms": p.creation_ms, "sequence": p.sequence,
        "lifetime_ms": p.lifetime_ms,
        "fragment_offset": p.fragment_offset if p.is_fragment else None,
        "total_adu_length": p.total_adu_length if p.is_fragment else None,
        "blocks": sorted([blk.type, blk.number, blk.flags, blk.crc_type, blk.data.hex()]
                         for blk in b.blocks if blk.type != BLOCK_PAYLOAD),
        "payload": b.payload.hex(),
    }


def test_bundles_netemu_encodes_read_the_same_in_pyd3tn():
    rng = random.Random(9171)
    ours = [_our_bundle(rng, i) for i in range(300)]
    theirs = [json.loads(x) for x in side("describe", lines=[b.encode().hex() for b in ours])]
    assert len(theirs) == len(ours)
    for b, t in zip(ours, theirs, strict=True):
        t["blocks"] = sorted(t["blocks"])
        assert t == _fields(b), b.id
    assert sum(b.primary.is_fragment for b in ours) == 30


def test_bundles_pyd3tn_encodes_read_the_same_in_netemu():
    rng = random.Random(7)
    specs = []
    for i in range(300):
        spec = {"source": _eid(rng), "destination": _eid(rng), "sequence": i,
                "payload": rng.randbytes(rng.randrange(0, 3000)).hex(),
                "creation_ms": rng.randrange(1, 10**12) // 1000 * 1000,
                "lifetime_ms": rng.randrange(1, 10**6) * 1000,
                "crc_primary": rng.choice([0, 1, 2]), "crc_canonical": rng.choice([0, 1, 2])}
        if rng.random() < 0.5:
            spec["report_to"] = _eid(rng)
        if rng.random() < 0.4:
            spec["hop_limit"], spec["hop_count"] = 30, rng.randrange(30)
        if rng.random() < 0.3:
            spec["bundle_age_ms"] = rng.randrange(10**6)
        if rng.random() < 0.3:
            spec["previous_node"] = f"ipn:{rng.randrange(1, 999)}.0"
        if i % 10 == 0:
            spec["flags"] = int(BundleFlags.IS_FRAGMENT)
            spec["fragment_offset"] = rng.randrange(5000)
            spec["total_adu_length"] = spec["fragment_offset"] + len(spec["payload"]) // 2 + 1
        specs.append(spec)
    wire = side("create", lines=[json.dumps(s) for s in specs])
    described = [json.loads(x) for x in side("describe", lines=wire)]
    for spec, hexed, t in zip(specs, wire, described, strict=True):
        b = decode_bundle_strict(bytes.fromhex(hexed))  # every CRC checked
        t["blocks"] = sorted(t["blocks"])
        assert _fields(b) == t
        assert (str(b.primary.source), str(b.primary.destination), b.primary.sequence,
                b.primary.creation_ms, b.payload.hex()) == (
            spec["source"], spec["destination"], spec["sequence"], spec["creation_ms"],
            spec["payload"])
        assert b.primary.is_fragment == ("fragment_offset" in spec)
        if "hop_limit" in spec:
            assert b.hop_count == (30, spec["hop_count"])


def test_deletion_report_flag_is_rfc_bit_18():
    """pyD3TN's constant for "report deletion" is bit 22; RFC 9171 4.2.3 and netemu: 18."""
    assert BundleFlags.REPORT_DELETION == 1 << 18
    out = side("describe", lines=[Bundle.new(
        "ipn:1.1", "ipn:2.1", b"x", lifetime_ms=1000, creation_ms=1,
        flags=int(BundleFlags.REPORT_DELETION)).encode().hex()])
    assert json.loads(out[0])["flags"] == 1 << 18  # the wire carries the RFC's bit


# --- MTCP through a running agent -----------------------------------------------------


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mtcp_both_ways_through_a_running_agent(tmp_path):
    from netemu.agent.client import BpClient, Delivery

    port_a, port_d = _free_port(), _free_port()
    # pyD3TN listens first (the agent dials D while the contact is up)
    recv = subprocess.Popen([str(PYD3TN), str(SIDE), "mtcp-recv", str(port_d), "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
    agent = _mtcp_agent(tmp_path, port_a, port_d)
    try:
        sock = tmp_path / "A" / "bp.sock"
        created = datetime.now(timezone.utc) - datetime(2000, 1, 1, tzinfo=timezone.utc)
        spec = {"source": "ipn:9.1", "destination": "ipn:1.5", "sequence": 1,
                "payload": b"from pyD3TN over MTCP".hex(), "lifetime_ms": 600_000,
                "creation_ms": int(created.total_seconds()) * 1000, "hop_limit": 8}
        wire = side("create", lines=[json.dumps(spec)])

        async def app() -> Delivery:
            async with await BpClient.connect(str(sock)) as bp:
                await bp.register("ipn:1.5")
                # pyD3TN → agent → app
                await asyncio.to_thread(side, "mtcp-send", "127.0.0.1", str(port_a),
                                        lines=wire)
                got = await bp.recv(timeout_s=60)
                # app → agent → pyD3TN
                await bp.send("ipn:9.3", b"from netemu over MTCP", lifetime_s=600)
                return got

        got = asyncio.run(app())
        assert got.payload == b"from pyD3TN over MTCP" and got.src == "ipn:9.1"
        out, err = recv.communicate(timeout=90)
        t = json.loads(out.splitlines()[0])
        assert bytes.fromhex(t["payload"]) == b"from netemu over MTCP", err
        assert (t["source"], t["destination"]) == ("ipn:1.5", "ipn:9.3")
        assert t["flags"] & BundleFlags.IS_FRAGMENT == 0
    finally:
        agent.terminate()
        agent.wait(30)
        if recv.poll() is None:
            recv.kill()
            recv.wait(10)


def _mtcp_agent(tmp_path, port_a: int, port_d: int, **neighbour) -> subprocess.Popen:
    """``netemu agent`` A (ipn 1) with MTCP neighbour D (ipn 9, pyD3TN), contact up."""
    epoch = datetime.now(timezone.utc) - timedelta(seconds=30)
    plan = {"epoch": epoch.isoformat().replace("+00:00", "Z"), "nodes": {"A": 1, "D": 9},
            "contacts": [{"from": a, "to": b, "start_s": 0, "end_s": 86400, "rate_bps": 1e9,
                          "owlt_s": 0.001} for a, b in (("A", "D"), ("D", "A"))]}
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    cfg = {"node": "A", "ipn": 1, "listen": {"tcpcl": [], "udpcl": [],
                                             "mtcp": [f"127.0.0.1:{port_a}"]},
           "app_socket": str(tmp_path / "A" / "bp.sock"),
           "store": str(tmp_path / "A" / "store.sqlite"),
           "contact_plan": str(tmp_path / "plan.json"), "routing": {"algorithm": "cgr"},
           "neighbours": [{"name": "D", "ipn": 9, "cl": "mtcp",
                           "address": f"127.0.0.1:{port_d}", **neighbour}],
           "log": str(tmp_path / "A.log")}
    (tmp_path / "A.json").write_text(json.dumps(cfg))
    agent = subprocess.Popen([sys.executable, "-m", "netemu", "agent", "--node", "A",
                              "--config", str(tmp_path / "A.json")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sock = tmp_path / "A" / "bp.sock"
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert agent.poll() is None and time.monotonic() < deadline, agent.stderr
        time.sleep(0.1)
    return agent


def test_mtcp_fragments_both_ways_through_a_running_agent(tmp_path):
    from netemu.agent.client import BpClient, Delivery

    port_a, port_d = _free_port(), _free_port()
    recv = subprocess.Popen([str(PYD3TN), str(SIDE), "mtcp-recv", str(port_d), "adu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert recv.stdout is not None and recv.stdout.readline().strip() == "ready"
    agent = _mtcp_agent(tmp_path, port_a, port_d, max_bundle_bytes=1000)
    try:
        rng = random.Random(5)
        adu = rng.randbytes(5000)
        created = datetime.now(timezone.utc) - datetime(2000, 1, 1, tzinfo=timezone.utc)
        # pyD3TN's fragments of one bundle: out of order, two of them overlapping
        spans = [(3000, 5000), (0, 1800), (1500, 3200)]
        specs = [{"source": "ipn:9.1", "destination": "ipn:1.5", "sequence": 4,
                  "payload": adu[a:b].hex(), "lifetime_ms": 600_000,
                  "creation_ms": int(created.total_seconds()) * 1000,
                  "flags": int(BundleFlags.IS_FRAGMENT), "fragment_offset": a,
                  "total_adu_length": len(adu)} for a, b in spans]
        wire = side("create", lines=[json.dumps(s) for s in specs])
        assert all(decode_bundle_strict(bytes.fromhex(w)).primary.is_fragment for w in wire)
        big = rng.randbytes(4000)

        async def app() -> Delivery:
            async with await BpClient.connect(str(tmp_path / "A" / "bp.sock")) as bp:
                await bp.register("ipn:1.5")
                await asyncio.to_thread(side, "mtcp-send", "127.0.0.1", str(port_a),
                                        lines=wire)
                got = await bp.recv(timeout_s=60)
                await bp.send("ipn:9.3", big, lifetime_s=600)
                return got

        got = asyncio.run(app())
        assert got.payload == adu and got.src == "ipn:9.1"  # put together by the agent
        out, err = recv.communicate(timeout=90)
        frags = [json.loads(x) for x in out.splitlines()]
        assert len(frags) >= 5, err
        rebuilt = bytearray(len(big))
        for t in frags:  # each one a fragment in pyD3TN's reading, each within the limit
            assert t["flags"] & BundleFlags.IS_FRAGMENT and t["total_adu_length"] == len(big)
            assert (t["source"], t["destination"]) == ("ipn:1.5", "ipn:9.3")
            part = bytes.fromhex(t["payload"])
            rebuilt[t["fragment_offset"]:t["fragment_offset"] + len(part)] = part
        assert bytes(rebuilt) == big
        assert any('"bundle_fragmented"' in line for line in
                   (tmp_path / "A.log").read_text().splitlines())
    finally:
        agent.terminate()
        agent.wait(30)
        if recv.poll() is None:
            recv.kill()
            recv.wait(10)
