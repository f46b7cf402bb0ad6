"""Benchmark: what TLS costs a TCPCLv4 session between two bundle agents on loopback.

Two ``netemu agent`` processes (store on, ``durability: process``) move N bundles from an
app on A to an app on B, once with ``tls: off`` and once with ``tls: required`` (the
default of scenario runs, certificates from a run CA); prints bundles/s and Mbit/s of
payload, and the agents' CPU seconds, for each, side by side.

    .venv/bin/python bench/bench_tls.py [--size BYTES] [--count N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_dtn import cpu_s  # noqa: E402
from dtn_agent_harness import AgentProc, free_port, write_pair  # noqa: E402

from netemu.agent import BpClient  # noqa: E402
from netemu.run.pki import RunCA  # noqa: E402


async def one_run(tmp: Path, size: int, count: int, tls: bool) -> tuple[float, float, float]:
    """(wall s, CPU s of agent A, of agent B) to deliver ``count`` bundles A → B."""
    pa, pb = free_port(), free_port()
    cfgs = write_pair(tmp, port_a=pa, port_b=pb, extra={"durability": "process"})
    if tls:
        ca = RunCA.create(tmp / "pki")
        for name, ipn in (("A", 1), ("B", 2)):
            creds = ca.issue(name, f"ipn:{ipn}.0", tmp / f"tls-{name}")
            cfg = json.loads(cfgs[name].read_text())
            cfg.update(tls="required", tls_ca=str(creds.ca), tls_cert=str(creds.cert),
                       tls_key=str(creds.key))
            cfgs[name].write_text(json.dumps(cfg))
    a = AgentProc("A", cfgs["A"]).start()
    b = AgentProc("B", cfgs["B"]).start()
    try:
        rx = await BpClient.connect(str(tmp / "B" / "bp.sock"), timeout_s=20)
        tx = await BpClient.connect(str(tmp / "A" / "bp.sock"), timeout_s=20)
        await rx.register("ipn:2.1")
        await tx.send("ipn:2.1", b"warmup")  # the session is up once this arrives
        await rx.recv(timeout_s=30)
        payload = b"x" * size
        assert a.proc is not None and b.proc is not None
        c0 = (cpu_s(a.proc.pid), cpu_s(b.proc.pid))
        t0 = time.perf_counter()

        async def receive() -> None:
            for _ in range(count):
                await rx.recv(timeout_s=120)

        recv_task = asyncio.ensure_future(receive())
        for i in range(0, count, 100):
            await tx.send_many([{"dst": "ipn:2.1", "payload": payload}] * min(100, count - i))
        await recv_task
        dt = time.perf_counter() - t0
        c1 = (cpu_s(a.proc.pid), cpu_s(b.proc.pid))
        await tx.close()
        await rx.close()
        return dt, c1[0] - c0[0], c1[1] - c0[1]
    finally:
        a.stop()
        b.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1 << 20, help="payload bytes per bundle")
    ap.add_argument("--count", type=int, default=200, help="bundles per run")
    args = ap.parse_args()
    print(f"{args.count} bundles of {args.size} B, agent A -> agent B on loopback")
    print(f"{'tls':>9} {'bundles/s':>10} {'Mbit/s':>9} {'CPU A s':>8} {'CPU B s':>8}")
    for tls in (False, True):
        with tempfile.TemporaryDirectory(prefix="netemu-bench-tls-") as d:
            dt, ca, cb = asyncio.run(one_run(Path(d), args.size, args.count, tls))
        print(f"{'required' if tls else 'off':>9} {args.count / dt:10.0f} "
              f"{args.count * args.size * 8 / dt / 1e6:9.0f} {ca:8.2f} {cb:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
