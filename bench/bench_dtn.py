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
import gc
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from dtn_agent_harness import AgentProc, free_port, write_pair  # noqa: E402

from netemu.agent import BpClient  # noqa: E402
from netemu.agent.memtune import tune_malloc  # noqa: E402
from netemu.agent.store import BundleStore  # noqa: E402
from netemu.dtn import bpa  # noqa: E402
from netemu.dtn import tcpcl as t  # noqa: E402
from netemu.dtn.bundle import datetime_to_dtn_ms  # noqa: E402
from netemu.dtn.eid import EID  # noqa: E402
from netemu.dtn.state import BundleState  # noqa: E402
from netemu.plan.contacts import ContactPlan  # noqa: E402
from netemu.routing import get_router  # noqa: E402


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


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def agent_run(tmp: Path, size: int, count: int, batch: int, durability: str
                    ) -> tuple[float, float, float, float]:
    """(wall s, CPU s of agent A, of agent B, of the two apps (this process)) for the timed
    part."""
    pa, pb = free_port(), free_port()
    cfgs = write_pair(tmp, port_a=pa, port_b=pb, extra={"durability": durability})
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

        assert a.proc is not None and b.proc is not None
        c0 = (cpu_s(a.proc.pid), cpu_s(b.proc.pid), time.process_time())
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
        try:
            await recv_task
        except asyncio.TimeoutError:
            print(f"stalled after {got} of {count} deliveries; A: {await tx.status()}\n"
                  f"B: {await rx.status()}", file=sys.stderr)
            raise
        dt = time.perf_counter() - t0
        c1 = (cpu_s(a.proc.pid), cpu_s(b.proc.pid), time.process_time())
        await tx.close()
        await rx.close()
        return dt, c1[0] - c0[0], c1[1] - c0[1], c1[2] - c0[2]
    finally:
        a.stop()
        b.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--small", type=int, default=20000, help="number of 1 KB bundles")
    ap.add_argument("--large", type=int, default=200, help="number of 1 MB bundles")
    ap.add_argument("--batch", type=int, default=500, help="bundles per app send_many")
    ap.add_argument("--no-core-costs", action="store_true",
                    help="skip the in-process per-piece costs")
    ap.add_argument("--durability", choices=("disk", "process", "both"), default="both",
                    help="store durability: disk = fsync per group commit (default config), "
                         "process = survives kill -9 only")
    args = ap.parse_args()
    tune_malloc()  # the apps here move 1 MB bundles too (as an agent does: memtune)
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    if not args.no_core_costs:
        threshold = gc.get_threshold()
        bpa.tune_gc()  # as in an agent process
        costs = core_costs()
        gc.set_threshold(*threshold)
        gc.unfreeze()
        print("per-bundle CPU costs in one process (no I/O): " + ", ".join(
            f"{k} {v:.0f} µs" for k, v in costs.items()))
    rows = []
    modes = ("disk", "process") if args.durability == "both" else (args.durability,)
    for label, size, count, batch in (("1 KB", 1000, args.small, args.batch),
                                      ("1 MB", 1_000_000, args.large, max(1, args.batch // 100))):
        tcp = plain_tcp_s(size, count)
        for mode in modes:
            with tempfile.TemporaryDirectory(prefix="dtn-bench-") as d:
                dt, ca, cb, capp = asyncio.run(agent_run(Path(d), size, count, batch, mode))
            rows.append((label, mode, size, count, dt, tcp, ca, cb, capp))
    # CPU columns: CPU seconds each agent process and the apps (sender and receiver, this
    # process) used per bundle (µs), and the rate one core per agent would allow
    # (count / max(CPU A, CPU B)): robust on a busy machine, where wall time mostly
    # measures the other jobs. Wall-clock rates share this machine's cores among all three.
    print(f"{'payload':>8} {'store':>8} {'bundles':>8} {'agent s':>8} {'bundles/s':>10} "
          f"{'Gbit/s':>7} {'TCP s':>7} {'TCP Gbit/s':>10} {'agent/TCP':>9} "
          f"{'CPU A µs':>9} {'CPU B µs':>9} {'apps µs':>8} {'CPU-bound/s':>11} {'CPU Gbit/s':>10}")
    for label, mode, size, count, dt, tcp, ca, cb, capp in rows:
        gbps = size * count * 8 / dt / 1e9
        tgbps = size * count * 8 / tcp / 1e9
        cmax = max(ca, cb, 1e-9)
        print(f"{label:>8} {mode:>8} {count:>8} {dt:>8.2f} {count / dt:>10.0f} {gbps:>7.2f} "
              f"{tcp:>7.3f} {tgbps:>10.2f} {tcp / dt:>9.3f} {ca / count * 1e6:>9.0f} "
              f"{cb / count * 1e6:>9.0f} {capp / count * 1e6:>8.0f} {count / cmax:>11.0f} "
              f"{size * count * 8 / cmax / 1e9:>10.2f}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


def core_costs(n: int = 3000) -> dict[str, float]:
    """CPU µs per 1 KB bundle of the pieces, in one process (GC tuned as in an agent): the
    BPA core on each side (CGR),
    the store writes, the TCPCL session both ways — to show where agent time goes."""
    epoch = datetime.now(timezone.utc) - timedelta(seconds=30)
    plan = ContactPlan.from_json(json.dumps({
        "epoch": epoch.isoformat().replace("+00:00", "Z"), "nodes": {"A": 1, "B": 2},
        "contacts": [{"from": x, "to": y, "start_s": 0, "end_s": 86400, "rate_bps": 1e11,
                      "owlt_s": 0.001} for x, y in (("A", "B"), ("B", "A"))]}))

    def mk(node: str, ipn: int) -> bpa.BundleAgent:
        return bpa.BundleAgent(bpa.CoreConfig(node_id=EID.ipn(ipn, 0), node_name=node,
                                              plan_epoch_ms=datetime_to_dtn_ms(epoch)),
                               get_router("cgr")(node, plan))

    a, b = mk("A", 1), mk("B", 2)
    now = datetime_to_dtn_ms(datetime.now(timezone.utc))
    a.handle(bpa.ContactUp("B", now))
    b.handle(bpa.ContactUp("A", now))
    out: dict[str, float] = {}
    t0 = time.process_time()
    sends = [bpa.AppSend("ipn:1.1", "ipn:2.1", b"x" * 1000, 3_600_000, now) for _ in range(n)]
    # As the agent does: the sends of one loop turn in one handle_many (routed together).
    fw = [x for i in range(0, n, 64) for out in a.handle_many(sends[i:i + 64]) for x in out
          if isinstance(x, bpa.Forward)]
    t1 = time.process_time()
    for f in fw:
        a.handle(bpa.TransmissionDone(f.bundle_id, "B", now))
    t2 = time.process_time()
    dl = [x for f in fw for x in b.handle(bpa.BundleReceived(f.data, "A", now))
          if isinstance(x, bpa.Deliver)]
    t3 = time.process_time()
    for d in dl:
        b.handle(bpa.AppDelivered(d.bundle_id, now))
    t4 = time.process_time()
    out["BPA send side"] = ((t1 - t0) + (t2 - t1)) / n * 1e6
    out["BPA receive side"] = ((t3 - t2) + (t4 - t3)) / n * 1e6
    with tempfile.TemporaryDirectory(prefix="dtn-bench-") as d:
        st = BundleStore(Path(d) / "s.sqlite", durability="process")
        rows = [(f.bundle_id, f.data, "ipn:2.1", 10**13, now, BundleState.PENDING, 0, None) for f in fw]
        t0 = time.process_time()
        for i in range(0, n, 100):
            st.add_many(rows[i:i + 100])
            st.commit()
        for i, r in enumerate(rows):
            st.set_state(r[0], BundleState.FORWARDED)
            if i % 100 == 99:
                st.commit()
        st.commit()
        out["store add+set_state"] = (time.process_time() - t0) / n * 1e6
        st.close()
    sa, sp = t.Session(t.Role.ACTIVE, "ipn:1.0"), t.Session(t.Role.PASSIVE, "ipn:2.0")

    def pump(x: t.Session, y: t.Session) -> list:
        data = b"".join(bytes(z) for z in x.data_to_send())
        return y.receive_data(data) if data else []

    for _ in range(3):
        pump(sa, sp)
        pump(sp, sa)
    t0 = time.process_time()
    for i in range(0, n, 100):
        for f in fw[i:i + 100]:
            sa.send_transfer(f.data)
        for e in pump(sa, sp):
            sp.ack_transfer(e.transfer_id)
        pump(sp, sa)
    out["TCPCL both sides"] = (time.process_time() - t0) / n * 1e6
    return out


if __name__ == "__main__":
    sys.exit(main())
