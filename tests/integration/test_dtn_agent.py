"""Two real agents (``netemu agent`` processes) on loopback: what a user would see.

- a TCPCLv4 session between them, captured with tcpdump, decodes in tshark as BPv7 over
  TCPCLv4 with the right source and destination EIDs and no malformed packets;
- a transfer cut mid-bundle by the link going down completes once the link returns, and
  the application receives the bundle exactly once;
- ``kill -9`` of the receiving agent during a stream of 1,000 bundles loses none and
  duplicates none at the application.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from dtn_agent_harness import (
    AgentProc,
    CutProxy,
    free_port,
    stream_through_a_kill9,
    write_pair,
)

from netemu.agent import BpClient


def _sock(tmp, node):
    return str(tmp / node / "bp.sock")


@pytest.mark.integration
@pytest.mark.skipif(not shutil.which("tcpdump") or not shutil.which("tshark"),
                    reason="needs tcpdump and tshark")
def test_tcpcl_capture_decodes_in_tshark_as_bpv7(tmp_path):
    pa, pb = 4556, free_port()  # A on the IANA port, B elsewhere (decoded with -d)
    try:
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", pa))
    except OSError:
        pa = free_port()
    # B takes segments of at most 1,000 bytes: the 3 KB bundle goes in several segments.
    cfgs = write_pair(tmp_path, port_a=pa, port_b=pb, extra={"segment_mru": 1000})
    pcap = tmp_path / "tcpcl.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-s", "0", "-Z", "root", "-w", str(pcap),
                             f"tcp port {pb}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    a = b = None
    try:
        time.sleep(1.0)  # tcpdump ready
        b = AgentProc("B", cfgs["B"]).start()
        a = AgentProc("A", cfgs["A"]).start()

        async def go():
            rx = await BpClient.connect(_sock(tmp_path, "B"), timeout_s=20)
            tx = await BpClient.connect(_sock(tmp_path, "A"), timeout_s=20)
            await rx.register("ipn:2.7")
            for i in range(3):
                await tx.send("ipn:2.7", f"hello {i}".encode(), src="ipn:1.5")
            await tx.send("ipn:2.7", b"z" * 3000, src="ipn:1.5")
            got = [await rx.recv(timeout_s=30) for _ in range(4)]
            await tx.close()
            await rx.close()
            return got

        got = asyncio.run(go())
        assert sorted(d.payload for d in got) == [b"hello 0", b"hello 1", b"hello 2",
                                                  b"z" * 3000]
        assert {d.src for d in got} == {"ipn:1.5"}
    finally:
        for p in (a, b):
            if p:
                p.stop()
        time.sleep(0.5)
        dump.send_signal(signal.SIGINT)
        dump.wait(10)
    decode = ["-d", f"tcp.port=={pb},tcpcl"]

    def tshark(*args: str) -> str:
        out = subprocess.run(["tshark", "-r", str(pcap), *decode, *args], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    # BPv7 inside TCPCLv4: source and destination of every bundle (a frame holding several
    # bundles lists each field once per bundle, comma-separated).
    fields = tshark("-Y", "bpv7", "-T", "fields", "-e", "bpv7.primary.src_uri",
                    "-e", "bpv7.primary.dst_uri")
    pairs = []
    for line in fields.splitlines():
        cols = line.split("\t")
        if len(cols) >= 2 and cols[0]:
            pairs += list(zip(cols[0].split(","), cols[1].split(","), strict=False))
    assert pairs.count(("ipn:1.5", "ipn:2.7")) == 4, fields
    # The session: SESS_INIT both ways, XFER_SEGMENT (the 3 KB bundle in 1,000-byte
    # segments), XFER_ACK, SESS_TERM.
    types = [int(x, 16) for x in tshark("-T", "fields", "-e", "tcpcl.v4.mhdr.type").split()
             for x in x.split(",") if x]
    assert types.count(7) == 2 and {1, 2, 5} <= set(types), types
    assert types.count(1) >= 3 + 4, types
    assert tshark("-Y", "_ws.malformed").strip() == ""
    # Expert errors need two passes: in one pass Wireshark 4.0 flags every segment of a
    # multi-segment transfer as "last XFER_SEGMENT is missing END flag" until it has seen
    # the END segment; with -2 the transfer is analysed whole.
    assert tshark("-2", "-Y", "_ws.malformed || _ws.expert.severity >= error").strip() == ""


def test_transfer_cut_mid_bundle_completes_once_link_returns(tmp_path):
    """The link A→B goes down in the middle of a 6 MB bundle (TCP proxy drops every
    connection and refuses new ones for 2 s). TCPCL has no resume, so A re-sends the
    bundle whole on the next session; the app on B gets it exactly once."""

    async def go():
        pa, pb = free_port(), free_port()
        proxy = await CutProxy(("127.0.0.1", pb), cut_after_bytes=2_500_000, down_s=2.0).start()
        cfgs = write_pair(tmp_path, port_a=pa, port_b=pb, a_to_b=f"127.0.0.1:{proxy.port}",
                          b_to_a="", extra={"segment_mru": 65536})  # only A dials, via proxy
        b = AgentProc("B", cfgs["B"]).start()
        a = AgentProc("A", cfgs["A"]).start()
        try:
            rx = await BpClient.connect(_sock(tmp_path, "B"), timeout_s=20)
            tx = await BpClient.connect(_sock(tmp_path, "A"), timeout_s=20)
            await rx.register("ipn:2.1")
            big = os.urandom(6_000_000)
            bid = await tx.send("ipn:2.1", big)
            d = await rx.recv(timeout_s=60)
            assert d.payload == big and d.id == bid
            assert proxy.cuts == 1
            with pytest.raises(asyncio.TimeoutError):
                await rx.recv(timeout_s=3)  # and never a second time
            assert rx.duplicates_dropped == 0
            log = (tmp_path / "A.log").read_text()
            assert '"session_down"' in log and log.count('"session_up"') >= 2
            await tx.close()
            await rx.close()
        finally:
            a.stop()
            b.stop()
            await proxy.close()

    asyncio.run(asyncio.wait_for(go(), 120))


def test_kill9_receiver_during_1000_bundles_loses_and_duplicates_none(tmp_path):
    async def go():
        pa, pb = free_port(), free_port()
        cfgs = write_pair(tmp_path, port_a=pa, port_b=pb)
        b = AgentProc("B", cfgs["B"]).start()
        a = AgentProc("A", cfgs["A"]).start()
        try:
            rx = await BpClient.connect(_sock(tmp_path, "B"), timeout_s=20)
            tx = await BpClient.connect(_sock(tmp_path, "A"), timeout_s=20)
            await rx.register("ipn:2.1")
            await stream_through_a_kill9(tx, rx, "ipn:2.1", b.kill9, b.start)
            # The restarted B rebuilt its state from the store (tombstones dedupe the
            # bundles A re-sends; stored-but-unacked ones are delivered again and the
            # client drops the repeats).
            restored = [json.loads(line) for line in (tmp_path / "B.log").read_text().splitlines()
                        if '"store_restored"' in line]
            assert len(restored) == 2 and restored[1]["records"] > 0
            print(f"after kill -9: {restored[1]['records']} records restored, "
                  f"{rx.duplicates_dropped} re-deliveries dropped by the client")
            await tx.close()
            await rx.close()
        finally:
            a.stop()
            b.stop()

    asyncio.run(asyncio.wait_for(go(), 170))


def test_cli_send_recv_status_and_sigterm(tmp_path):
    """`netemu bp` against running agents, then SIGTERM: exit 0, socket removed."""
    import sys

    pa, pb = free_port(), free_port()
    cfgs = write_pair(tmp_path, port_a=pa, port_b=pb)
    b = AgentProc("B", cfgs["B"]).start()
    a = AgentProc("A", cfgs["A"]).start()
    env = {**os.environ, "NETEMU_DTN_SOCKET": _sock(tmp_path, "B")}
    bp = [sys.executable, "-m", "netemu", "bp"]
    try:
        recv = subprocess.Popen([*bp, "recv", "ipn:2.3", "--count", "2", "--timeout", "60"],
                                env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        for text in ("first", "second"):
            out = subprocess.run([*bp, "--socket", _sock(tmp_path, "A"), "send", "ipn:2.3",
                                  "--data", text], capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith("ipn:1.0,")
        got, _ = recv.communicate(timeout=60)
        lines = [json.loads(x) for x in got.splitlines()]
        assert sorted(x["payload"] for x in lines) == ["first", "second"]
        assert all(x["src"] == "ipn:1.0" and x["dst"] == "ipn:2.3" for x in lines)
        st = subprocess.run([*bp, "status"], env=env, capture_output=True, text=True,
                            timeout=60)
        status = json.loads(st.stdout)
        assert status["node"] == "B" and status["neighbours"]["A"]["up"] is True
        assert status["bpa"]["delivered"] == 2
        bad = subprocess.run([*bp, "--socket", _sock(tmp_path, "A"), "send", "nonsense:x",
                              "--data", "x"], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and "agent refused" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        rc_a, rc_b = a.stop(), b.stop()
    assert (rc_a, rc_b) == (0, 0), a.stderr_tail() + b.stderr_tail()
    assert not os.path.exists(_sock(tmp_path, "A"))
    assert '"agent_stopped"' in (tmp_path / "A.log").read_text()


def test_agent_follows_contact_plan(tmp_path):
    """No session while the plan has no contact; the bundle waits in the store and goes
    when the contact starts (scenario clock from NETEMU_* variables, 1:1)."""
    async def go():
        pa, pb = free_port(), free_port()
        cfgs = write_pair(tmp_path, port_a=pa, port_b=pb)
        plan = json.loads((tmp_path / "plan.json").read_text())
        for c in plan["contacts"]:
            c["start_s"] = 10.0  # scenario seconds: the contact starts 10 s after t0
        (tmp_path / "plan.json").write_text(json.dumps(plan))
        env = {"NETEMU_EPOCH": plan["epoch"], "NETEMU_TIME_SCALE": "1",
               "NETEMU_T0_WALL": f"{time.time():.6f}", "NETEMU_T0_S": "0"}
        b = AgentProc("B", cfgs["B"], env=env).start()
        a = AgentProc("A", cfgs["A"], env=env).start()
        try:
            rx = await BpClient.connect(_sock(tmp_path, "B"), timeout_s=20)
            tx = await BpClient.connect(_sock(tmp_path, "A"), timeout_s=20)
            await rx.register("ipn:2.1")
            watcher = await BpClient.connect(_sock(tmp_path, "A"), timeout_s=20)
            events = await watcher.watch()
            await tx.send("ipn:2.1", b"wait for the pass")
            st = await tx.status()
            assert st["neighbours"]["B"]["plan_up"] is False
            assert st["neighbours"]["B"]["sessions"] == 0
            d = await rx.recv(timeout_s=30)
            assert d.payload == b"wait for the pass"
            log = [json.loads(x) for x in (tmp_path / "A.log").read_text().splitlines()]
            up = next(e for e in log if e["event"] == "session_up")
            assert up["ts"] >= 10.0  # not before the contact
            seen = []  # what `netemu bp watch` streams: the same log events, live
            while "contact_up" not in seen:
                seen.append((await asyncio.wait_for(events.__anext__(), 10))["event"])
            await watcher.close()
            await tx.close()
            await rx.close()
        finally:
            a.stop()
            b.stop()

    asyncio.run(asyncio.wait_for(go(), 90))


def test_udpcl_between_agents(tmp_path):
    async def go():
        pa, pb = free_port(), free_port()
        cfgs = write_pair(tmp_path, port_a=pa, port_b=pb)
        for n in ("A", "B"):
            cfg = json.loads(cfgs[n].read_text())
            cfg["neighbours"][0]["cl"] = "udpcl"
            cfgs[n].write_text(json.dumps(cfg))
        b = AgentProc("B", cfgs["B"]).start()
        a = AgentProc("A", cfgs["A"]).start()
        try:
            rx = await BpClient.connect(_sock(tmp_path, "B"), timeout_s=20)
            tx = await BpClient.connect(_sock(tmp_path, "A"), timeout_s=20)
            await rx.register("ipn:2.1")
            await asyncio.sleep(1.0)  # UDP neighbour up at the next housekeeping round
            await tx.send("ipn:2.1", b"over udp")
            assert (await rx.recv(timeout_s=20)).payload == b"over udp"
            # larger than a datagram on a 1,500-byte path: it goes in fragments
            big = bytes(range(250)) * 20
            await tx.send("ipn:2.1", big)
            assert (await rx.recv(timeout_s=20)).payload == big
            await tx.close()
            await rx.close()
        finally:
            a.stop()
            b.stop()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_bpsec_keys_from_config(tmp_path):
    """A signs (BIB-HMAC-SHA2) with its configured key; B requires a BIB and checks it:
    a bundle signed with the right key is delivered, one with another key is dropped and
    logged."""
    key, wrong = "11" * 32, "22" * 32

    async def go(b_key: str) -> tuple[bool, str]:
        d = tmp_path / b_key[:2]
        d.mkdir()
        pa, pb = free_port(), free_port()
        cfgs = write_pair(d, port_a=pa, port_b=pb)
        for n, keys in (("A", {"sign_key": key}),
                        ("B", {"verify": {"ipn:1.0": b_key}, "require_bib_from": ["*"]})):
            cfg = json.loads(cfgs[n].read_text())
            cfg["keys"] = keys
            cfgs[n].write_text(json.dumps(cfg))
        b = AgentProc("B", cfgs["B"]).start()
        a = AgentProc("A", cfgs["A"]).start()
        try:
            rx = await BpClient.connect(_sock(d, "B"), timeout_s=20)
            tx = await BpClient.connect(_sock(d, "A"), timeout_s=20)
            await rx.register("ipn:2.1")
            await tx.send("ipn:2.1", b"signed")
            try:
                got = (await rx.recv(timeout_s=8)).payload == b"signed"
            except asyncio.TimeoutError:
                got = False
            await tx.close()
            await rx.close()
        finally:
            a.stop()
            b.stop()
        return got, (d / "B.log").read_text()

    ok, _ = asyncio.run(go(key))
    assert ok
    ok, log = asyncio.run(go(wrong))
    assert not ok and '"bundle_deleted"' in log
