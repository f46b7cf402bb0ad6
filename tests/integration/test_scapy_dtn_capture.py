"""A real capture: tcpdump in a network namespace records a TCPCL session between two
namespaces; netemu.run.capture takes it and netemu.analysis.pcap finds the bundle in it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from netemu.analysis import pcap
from netemu.dtn.bundle import Bundle
from netemu.run import capture

pytestmark = pytest.mark.integration

NS_A, NS_B = "tcap-a", "tcap-b"


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def two_hosts():
    try:
        _sh("ip", "netns", "add", NS_A)
        _sh("ip", "netns", "add", NS_B)
        _sh("ip", "link", "add", "tcap-va", "netns", NS_A, "type", "veth", "peer", "name", "tcap-vb",
            "netns", NS_B)
        for ns, dev, addr in ((NS_A, "tcap-va", "10.250.0.1/24"), (NS_B, "tcap-vb", "10.250.0.2/24")):
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield
    finally:
        for ns in (NS_A, NS_B):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


SERVER = textwrap.dedent("""
    import socket, sys
    from netemu.dtn import tcpcl
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.250.0.2", 4556)); s.listen(1); print("ready", flush=True)
    c, _ = s.accept()
    c.sendall(tcpcl.ContactHeader().encode() + tcpcl.SessInit(30, 1 << 20, 1 << 24, "ipn:2.0").encode())
    while c.recv(65536):
        pass
""")

CLIENT = textwrap.dedent("""
    import socket, sys, time
    from netemu.dtn import tcpcl
    data = bytes.fromhex(sys.argv[1])
    c = socket.create_connection(("10.250.0.2", 4556))
    c.sendall(tcpcl.ContactHeader().encode() + tcpcl.SessInit(30, 1 << 20, 1 << 24, "ipn:1.0").encode())
    time.sleep(0.2)
    for i in range(0, len(data), 3000):
        part = data[i:i + 3000]
        flags = (tcpcl.SEG_START if i == 0 else 0) | (tcpcl.SEG_END if i + 3000 >= len(data) else 0)
        c.sendall(tcpcl.XferSegment(flags, 1, part).encode())
    time.sleep(0.2)
    c.close()
""")


def test_capture_in_namespace_finds_the_bundle(two_hosts, tmp_path):
    b = Bundle.new("ipn:1.11", "ipn:2.10", bytes(range(256)) * 40, lifetime_ms=60_000,
                   creation_ms=800_000_000_000, seq=3)
    out = tmp_path / "link.pcap"
    cap = capture.LinkCapture(capture.CaptureSpec("a", "b", NS_B, "tcap-vb"), out).start()
    server = subprocess.Popen(["ip", "netns", "exec", NS_B, sys.executable, "-c", SERVER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", NS_A, sys.executable, "-c", CLIENT, b.encode().hex()],
                       check=True, timeout=60)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        cap.stop()
    got = pcap.read_transfers(out, names={1: "a", 2: "b"})
    assert [(t.link, t.bundle_id, t.size_bytes) for t in got] == [("a->b", b.id, len(b.encode()))]
    assert pcap.sidecar_path(out).exists()
