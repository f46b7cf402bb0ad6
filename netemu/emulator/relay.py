"""The userspace relay: carries frames between host interfaces with delay, rate and loss.

For kernels without sch_netem. Every host interface is one end of a veth pair whose other
end sits in the run's shaper namespace; a relay worker reads each frame that a host sends
(AF_PACKET on the shaper end), decides its fate from the shared link table, and writes
it, at its due time, to the shaper end of the peer interface — so the peer host receives
it. Several workers split the endpoints (endpoint ``e`` belongs to worker ``e % W``), so
the two directions of a link run on different cores.

Per frame: loss draw; rate as a virtual transmit clock (``busy_until += bits / rate``,
counting IP bytes, dropping a frame when the emulated queue already holds more than ``qlimit_s`` of
backlog); due time = transmit end + propagation delay, never earlier than the previous
frame's (a link does not reorder). Due frames wait in a per-endpoint FIFO; a heap keyed
by each FIFO's head gives the next wake-up (``select`` on the epoll descriptor, which
sleeps to the microsecond).

Run as ``python -m netemu.emulator.relay --netns PATH --shm NAME --endpoints N
--workers W --index K [--gso]``; it stops when the table's stop flag is set or its parent
process is gone.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import heapq
import os
import random
import select
import signal
import socket
import sys
import time

from netemu.emulator.netns import enter_path, raise_fd_limit
from netemu.emulator.table import (
    C_BYTES,
    C_FWD,
    C_LOST,
    C_QDROP,
    CCOLS,
    COLS,
    H_QLIMIT_S,
    H_STOP,
    LinkTable,
)

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
VNET_HDR_LEN = 10
ETH_HLEN = 14
BATCH = 64


def open_rx(ifname: str, *, gso: bool, rcvbuf: int) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    if gso:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


def open_tx(ifname: str, *, gso: bool) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)  # protocol 0: receives nothing
    if gso:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def _tune(realtime: bool) -> None:
    """Sub-millisecond wake-ups: no timer slack, and (optionally) a low real-time
    priority so a busy machine cannot delay a due frame by a scheduler slice."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(29, 1, 0, 0, 0)  # PR_SET_TIMERSLACK = 1 ns
    if realtime:
        with contextlib.suppress(OSError, AttributeError):
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))


def run_worker(netns_path: str, shm_name: str, n_endpoints: int, workers: int, index: int,
               *, gso: bool = False, realtime: bool = True) -> None:
    enter_path(netns_path)
    _tune(realtime)
    raise_fd_limit(4 * n_endpoints // max(1, workers) + n_endpoints + 256)
    table = LinkTable(shm_name, n_endpoints)
    mv = table.mv
    hdr = 8
    ccol0 = hdr + n_endpoints * COLS
    mine = list(range(index, n_endpoints, workers))
    rcvbuf = (8 << 20) if len(mine) <= 64 else (1 << 20)
    bufsize = 65536 + VNET_HDR_LEN if gso else 2048
    # rates count IP packet bytes: not the Ethernet header (nor the virtio header)
    overhead = ETH_HLEN + (VNET_HDR_LEN if gso else 0)

    ep = select.epoll()
    rx: dict[int, socket.socket] = {}
    fd_ep: dict[int, int] = {}
    for e in mine:
        s = open_rx(f"e{e}", gso=gso, rcvbuf=rcvbuf)
        rx[e] = s
        fd_ep[s.fileno()] = e
        ep.register(s.fileno(), select.EPOLLIN)
    tx: dict[int, socket.socket] = {}

    def tx_sock(e: int) -> socket.socket:
        s = tx.get(e)
        if s is None:
            s = tx[e] = open_tx(f"e{e}", gso=gso)
        return s

    n = n_endpoints
    peer = [-1] * n
    delay = [0.0] * n
    rate = [0.0] * n
    loss = [0.0] * n
    busy = [0.0] * n
    last_due = [0.0] * n
    queues = [collections.deque() for _ in range(n)]
    fwd = [0] * n
    nbytes = [0] * n
    lost = [0] * n
    qdrop = [0] * n
    heap: list[tuple[float, int]] = []
    gen = -1.0
    qlimit = 0.1

    def reload() -> None:
        nonlocal gen, qlimit
        g, flat = table.snapshot()
        for e in mine:
            b = e * COLS
            peer[e] = int(flat[b])
            delay[e] = flat[b + 1]
            rate[e] = flat[b + 2]
            loss[e] = flat[b + 3]
        qlimit = mv[H_QLIMIT_S] or 0.1
        gen = g

    def write_counters() -> None:
        for e in mine:
            b = ccol0 + e * CCOLS
            mv[b + C_FWD] = fwd[e]
            mv[b + C_BYTES] = nbytes[e]
            mv[b + C_LOST] = lost[e]
            mv[b + C_QDROP] = qdrop[e]

    mono = time.monotonic
    rnd = random.random
    push = heapq.heappush
    pop = heapq.heappop
    poll = ep.poll
    sel = select.select
    epl = [ep.fileno()]
    parent = os.getppid()
    early = 0.0
    next_house = 0.0
    stopping = False

    def on_term(*_a: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    reload()
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    while not stopping:
        now = mono()
        if now >= next_house:
            next_house = now + 0.25
            if mv[H_STOP] or os.getppid() != parent:
                break
            write_counters()
        if mv[0] != gen:
            reload()
        # Wait for frames or for the next due frame: select() on the epoll descriptor
        # sleeps to the microsecond (epoll_wait's own timeout is whole milliseconds).
        timed = False
        if heap:
            wait = heap[0][0] - early - now
            if wait <= 0 or sel(epl, (), (), min(wait, 0.25))[0]:
                events = poll(0)
            else:
                events = ()
                timed = True
        else:
            events = poll(0.25)
        for fd, _ev in events:
            src = fd_ep[fd]
            recv = rx[src].recv
            dst = peer[src]
            for _ in range(BATCH):
                try:
                    frame = recv(bufsize)
                except BlockingIOError:
                    break
                except OSError:
                    break  # ENETDOWN after carrier loss: keep going
                if dst < 0:
                    continue
                p = loss[src]
                if p and rnd() < p:
                    lost[src] += 1
                    continue
                t = mono()
                r = rate[src]
                if r:
                    start = busy[src]
                    if start < t:
                        start = t
                    elif start - t > qlimit:
                        qdrop[src] += 1
                        continue
                    start += (len(frame) - overhead) * 8.0 / r
                    busy[src] = start
                    due = start + delay[src]
                else:
                    due = t + delay[src]
                if due < last_due[src]:
                    due = last_due[src]
                last_due[src] = due
                q = queues[src]
                if not q:
                    push(heap, (due, src))
                q.append((due, dst, frame))
        # Send what is due. ``early`` tracks how late timed wake-ups run (scheduler and
        # timer latency) so the next ones aim that much ahead.
        if heap:
            now = mono()
            if timed:
                ov = now - (heap[0][0] - early)
                early += 0.1 * (min(max(ov, 0.0), 0.0005) - early)
            limit = now + early
            while heap and heap[0][0] <= limit:
                _, src = pop(heap)
                q = queues[src]
                while q and q[0][0] <= limit:
                    _, dst, frame = q.popleft()
                    try:
                        tx_sock(dst).send(frame)
                        fwd[src] += 1
                        nbytes[src] += len(frame) - overhead
                    except OSError:
                        pass  # peer down or its queue full: the frame is lost
                if q:
                    push(heap, (q[0][0], src))
    write_counters()
    for s in list(rx.values()) + list(tx.values()):
        s.close()
    table.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netemu-relay")
    ap.add_argument("--netns", required=True)
    ap.add_argument("--shm", required=True)
    ap.add_argument("--endpoints", type=int, required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--gso", action="store_true")
    ap.add_argument("--no-realtime", action="store_true")
    a = ap.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run_worker(a.netns, a.shm, a.endpoints, a.workers, a.index, gso=a.gso,
                   realtime=not a.no_realtime)
    return 0


if __name__ == "__main__":
    sys.exit(main())
