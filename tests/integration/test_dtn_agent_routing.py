"""Two ``netemu agent`` processes with spray-and-wait: router metadata (summary vectors)
crosses at contact start in a netemu-private administrative record, copy rights cross in
the netemu copies block (type 192), and a capture of it all still decodes in tshark as
BPv7 over TCPCLv4 with no malformed packet and no expert error."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time

import pytest
from dtn_agent_harness import AgentProc, free_port, wait_for, write_pair

from netemu.agent import BpClient

pytestmark = pytest.mark.integration


@pytest.mark.skipif(not shutil.which("tcpdump") or not shutil.which("tshark"),
                    reason="needs tcpdump and tshark")
def test_spray_metadata_and_copies_between_agents_decode_in_tshark(tmp_path):
    pa, pb = free_port(), free_port()
    cfgs = write_pair(tmp_path, port_a=pa, port_b=pb, routing="spray-and-wait")
    pcap = tmp_path / "spray.pcap"
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "--immediate-mode", "-U", "-s", "0",
                             "-Z", "root", "-w", str(pcap), f"tcp port {pb}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    a = b = None
    try:
        time.sleep(1.0)  # tcpdump ready
        b = AgentProc("B", cfgs["B"]).start()
        a = AgentProc("A", cfgs["A"]).start()

        async def go():
            tx = await BpClient.connect(str(tmp_path / "A" / "bp.sock"), timeout_s=20)
            rx = await BpClient.connect(str(tmp_path / "B" / "bp.sock"), timeout_s=20)
            # ipn:3 is beyond B (not in the plan): A sprays half its 8 copies to B.
            await tx.send("ipn:3.1", b"far away", src="ipn:1.5")

            async def b_holds():
                st = await rx.status()
                return st["bpa"]["held_bundles"] >= 1 and st["bpa"]["metadata_received"] >= 1
            await wait_for(b_holds, 30, "B holding the sprayed bundle")

            async def a_acked():  # (B acknowledges after its commit: A counts it then)
                return (await tx.status())["bpa"]["forwarded"] >= 1
            await wait_for(a_acked, 30, "A seeing B's acknowledgement")
            sa, sb = await tx.status(), await rx.status()
            await tx.close()
            await rx.close()
            return sa, sb

        sa, sb = asyncio.run(go())
        assert sa["bpa"]["metadata_sent"] >= 1 and sa["bpa"]["metadata_received"] >= 1
        assert sb["bpa"]["metadata_sent"] >= 1
        assert sa["bpa"]["forwarded"] == 1 and sa["bpa"]["held_bundles"] == 1  # kept 4
    finally:
        for p in (a, b):
            if p:
                p.stop()
        time.sleep(0.5)
        dump.send_signal(signal.SIGINT)
        dump.wait(10)

    def tshark(*args: str) -> str:
        out = subprocess.run(["tshark", "-r", str(pcap), "-d", f"tcp.port=={pb},tcpcl",
                              *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    fields = tshark("-Y", "bpv7", "-T", "fields", "-e", "bpv7.primary.src_uri",
                    "-e", "bpv7.primary.dst_uri", "-e", "bpv7.canonical.type_code", "-e", "bpv7.admin_rec.type_code")
    assert "ipn:3.1" in fields and "192" in fields, fields  # the bundle with its copies block
    assert "65280" in fields, fields  # the metadata administrative record type
    assert "ipn:1.0" in fields and "ipn:2.0" in fields, fields  # metadata records both ways
    assert tshark("-Y", "_ws.malformed").strip() == ""
    assert tshark("-2", "-Y", "_ws.malformed || _ws.expert.severity >= error").strip() == ""
