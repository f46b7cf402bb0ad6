"""Benchmark: two bundle agents over TCPCLv4 on loopback, store on.

Prints, for 1 KB payloads, bundles/s end to end (app on A → agent A → TCPCLv4 → agent B →
app on B, every bundle stored on both sides before it is acknowledged), and for 1 MB
payloads the throughput in Gbit/s; each next to a plain TCP transfer of the same bytes
(same sizes, same count) measured in the same run, and the ratio.

    .venv/bin/python bench/bench_dtn.py [--small N] [--large N] [--batch N]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from dtn_agent_harness import AgentProc, free_port, write_pair  # noqa: E402

from netemu.dtn import BpClient  # noqa: E402


def plain_tcp_s(size: int, count: int) -> float:
    """Seconds to move ``count`` messages of ``size`` bytes over one loopback TCP
    connection (length-prefixed, receiver in another process, as the agents are)."""
    port = free_port()
    total = count * (size + 4)
    rx = subprocess.Popen([sys.executable, "-c", f"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", {port})); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); left = {total}; buf = bytearray(1 << 20)
while left > 0:
    n = c.recv_into(buf)
    if not n: break
    left -= n
c.sendall(b"k")
"""], stdout=subprocess.PIPE)
    assert rx.stdout is not None
    rx.stdout.readline()
    msg = (size).to_bytes(4, "big") + b"x" * size
    s = socket.create_connection(("127.0.0.1", port))
    t0 = time.perf_counter()
    for _ in range(count):
        s.sendall(msg)
    s.recv(1)
    dt = time.perf_counter() - t0
    s.close()
    rx.wait(10)
    return dt


async def agent_run(tmp: Path, size: int, count: int, batch: int) -> float:
    pa, pb = free_port(), free_port()
    cfgs = write_pair(tmp, port_a=pa, port_b=pb)
    a = AgentProc("A", cfgs["A"]).start()
    b = AgentProc("B", cfgs["B"]).start()
    try:
        rx = await BpClient.connect(str(tmp / "B" / "bp.sock"), timeout_s=20)
        tx = await BpClient.connect(str(tmp / "A" / "bp.sock"), timeout_s=20)
        await rx.register("ipn:2.1")
        # Wait for the session (one bundle through).
        await tx.send("ipn:2.1", b"warmup")
        await rx.recv(timeout_s=30)
        payload = b"x" * size
        got = 0

        async def receive():
            nonlocal got
            while got < count:
                await rx.recv(timeout_s=120)
                got += 1

        t0 = time.perf_counter()
        recv_task = asyncio.ensure_future(receive())
        sent = 0
        inflight: list[asyncio.Future] = []
        while sent < count:
            n = min(batch, count - sent)
            inflight.append(asyncio.ensure_future(
                tx.send_many([{"dst": "ipn:2.1", "payload": payload}] * n)))
            sent += n
            if len(inflight) >= 4:
                await inflight.pop(0)
        await asyncio.gather(*inflight)
        await recv_task
        dt = time.perf_counter() - t0
        await tx.close()
        await rx.close()
        return dt
    finally:
        a.stop()
        b.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=20000, help="number of 1 KB bundles")
    ap.add_argument("--large", type=int, default=200, help="number of 1 MB bundles")
    ap.add_argument("--batch", type=int, default=500, help="bundles per app send_many")
    args = ap.parse_args()
    rows = []
    for label, size, count, batch in (("1 KB", 1000, args.small, args.batch),
                                      ("1 MB", 1_000_000, args.large, max(1, args.batch // 100))):
        with tempfile.TemporaryDirectory(prefix="t4b-bench-") as d:
            dt = asyncio.run(agent_run(Path(d), size, count, batch))
        tcp = plain_tcp_s(size, count)
        rows.append((label, size, count, dt, tcp))
    print(f"{'payload':>8} {'bundles':>8} {'agent s':>8} {'bundles/s':>10} {'Gbit/s':>7} "
          f"{'TCP s':>7} {'TCP Gbit/s':>10} {'agent/TCP':>9}")
    for label, size, count, dt, tcp in rows:
        gbps = size * count * 8 / dt / 1e9
        tgbps = size * count * 8 / tcp / 1e9
        print(f"{label:>8} {count:>8} {dt:>8.2f} {count / dt:>10.0f} {gbps:>7.2f} "
              f"{tcp:>7.3f} {tgbps:>10.2f} {tcp / dt:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
