"""The userspace relay: carries frames between host interfaces with delay, rate and loss.

For kernels without sch_netem. Every host interface is one end of a veth pair whose other
end sits in the run's shaper namespace; a relay worker reads each frame that a host sends
(one AF_PACKET socket for the whole namespace), decides its fate from the shared link
table, and writes it, at its due time, to the shaper end of the peer interface — so the
peer host receives it. A frame's source endpoint is read from its source MAC
(``02:6e:<index>``, set at build). Several workers split the endpoints (endpoint ``e``
is served by one worker, chosen in the kernel by a fanout BPF program), so the two
directions of a link run on different cores.

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
import ctypes
import gc
import heapq
import mmap
import os
import random
import select
import signal
import socket
import struct
import sys
import time

import numpy as np

from netemu.emulator.netns import enter_path
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
PACKET_FANOUT = 18
PACKET_RX_RING = 5
PACKET_VERSION = 10
TPACKET_V2 = 1
PACKET_FANOUT_DATA = 22
PACKET_FANOUT_CBPF = 6
FANOUT_GROUP = 0x6E3
MAC_PREFIX = b"\x02\x6e"
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
VNET_HDR_LEN = 10
ETH_HLEN = 14
BATCH = 256


def fanout_program(workers: int, offset: int) -> tuple[bytes, ctypes.Array]:
    """Classic BPF for PACKET_FANOUT_CBPF: socket = endpoint index % workers, the endpoint
    index being the last 4 bytes of the frame's source MAC (02:6e:<index>)."""
    # The fanout hook sees skb data at the network header: address the MAC header with
    # the link-layer base SKF_LL_OFF (-0x200000).
    ins = [
        (0x20, 0, 0, (-0x200000 + offset) & 0xFFFFFFFF),  # ld [ll + offset]
        (0x94, 0, 0, workers),  # mod #workers (BPF_ALU | BPF_MOD | BPF_K)
        (0x16, 0, 0, 0),  # ret a          (BPF_RET | BPF_A)
    ]
    buf = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in ins))
    return struct.pack("=HxxxxxxQ", len(ins), ctypes.addressof(buf)), buf


def open_rx(*, gso: bool, rcvbuf: int, workers: int, group: int) -> socket.socket:
    """One socket for every shaper interface in the namespace. Unbound, so creating and
    closing it costs one hook, not one per interface: each AF_PACKET close waits for an
    RCU grace period, which over thousands of per-interface sockets took a minute."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    if gso:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
    if workers > 1:
        s.setsockopt(SOL_PACKET, PACKET_FANOUT, group | (PACKET_FANOUT_CBPF << 16))
        prog, keep = fanout_program(workers, 8)
        s.setsockopt(SOL_PACKET, PACKET_FANOUT_DATA, prog)  # the kernel copies the program
        del keep
    s.setblocking(False)
    return s


class RxRing:
    """A TPACKET_V2 receive ring on the worker's socket: frames arrive in shared memory
    with the kernel's arrival timestamp — no system call per frame, and the delay is
    counted from when the frame reached the shaper, not from when the worker got to it."""

    HDR = struct.Struct("=IIIHHII")  # status, len, snaplen, mac, net, sec, nsec

    def __init__(self, sock: socket.socket, *, frame_size: int = 2048,
                 block_size: int = 1 << 22, blocks: int = 8) -> None:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        self.frames = block_size // frame_size * blocks
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING,
                        struct.pack("=IIII", block_size, blocks, frame_size, self.frames))
        self.mm = mmap.mmap(sock.fileno(), block_size * blocks, mmap.MAP_SHARED,
                            mmap.PROT_READ | mmap.PROT_WRITE)
        self.fs = frame_size
        self.i = 0

    def read(self, limit: int, mono_minus_real: float) -> list[tuple[bytes, float]]:
        """Up to ``limit`` frames as (frame, arrival on the monotonic clock)."""
        out = []
        mm, fs, n, unpack = self.mm, self.fs, self.frames, self.HDR.unpack_from
        i = self.i
        for _ in range(limit):
            base = i * fs
            status, length, snap, mac, _net, sec, nsec = unpack(mm, base)
            if not status & 1:  # TP_STATUS_USER
                break
            if length == snap:  # a truncated frame cannot be forwarded
                out.append((mm[base + mac:base + mac + snap], sec + nsec * 1e-9 + mono_minus_real))
            mm[base:base + 4] = b"\0\0\0\0"  # back to the kernel
            i = (i + 1) % n
        self.i = i
        return out


def open_tx(*, gso: bool) -> socket.socket:
    """A send-only socket (protocol 0 receives nothing); frames are sent with sendto()
    naming the shaper interface."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    if gso:
        s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 4 << 20)
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
    # The hot loop makes no reference cycles: reference counting frees everything, and
    # a collector pass would only pause a worker that is due to send.
    gc.disable()
    table = LinkTable(shm_name, n_endpoints)
    mv = table.mv
    hdr = 8
    ccol0 = hdr + n_endpoints * COLS
    # The fanout program sends each source endpoint's frames to one worker, but which
    # worker is the kernel's choice (join order): a worker serves the endpoints it sees.
    mine: list[int] = []
    seen = bytearray(n_endpoints)
    bufsize = 65536 + VNET_HDR_LEN if gso else 2048
    # rates count IP packet bytes: not the Ethernet header (nor the virtio header)
    overhead = ETH_HLEN + (VNET_HDR_LEN if gso else 0)
    mac_at = 6 + (VNET_HDR_LEN if gso else 0)  # source MAC: 02:6e:<endpoint index>

    rx = open_rx(gso=gso, rcvbuf=32 << 20, workers=workers, group=FANOUT_GROUP)
    ring: RxRing | None = None
    if not gso:  # GSO frames (64 KB) go through recv()
        with contextlib.suppress(OSError):
            ring = RxRing(rx)
    tx = open_tx(gso=gso)
    ep = select.epoll()
    ep.register(rx.fileno(), select.EPOLLIN)
    ifnames = [(f"e{e}", 0) for e in range(n_endpoints)]
    unpack_idx = struct.Struct(">I").unpack_from

    n = n_endpoints
    peer = [-1] * n
    delay = [0.0] * n
    rate = [0.0] * n
    loss = [0.0] * n
    busy = [0.0] * n
    last_due = [0.0] * n
    # per source endpoint: (due time, destination endpoint, frame), in due order
    queues: list[collections.deque[tuple[float, int, bytes]]] = [
        collections.deque() for _ in range(n)]
    fwd = [0] * n
    nbytes = [0] * n
    lost = [0] * n
    qdrop = [0] * n
    heap: list[tuple[float, int]] = []
    gen = -1.0
    qlimit = 0.1

    last = np.full((n, COLS), np.nan)  # the table as last loaded (NaN: never)

    def reload() -> None:
        # The driver rewrites the table up to ten times a second (light-time changes on a
        # few links at a time): only the rows that changed are copied into the lists.
        nonlocal gen, qlimit, last
        snap = table.snapshot_array()
        if snap is None:
            return  # being written: next time round
        g, rows = snap
        changed = np.flatnonzero((rows != last).any(axis=1))
        if len(changed):
            for e, (p, d, r, lo) in zip(changed.tolist(), rows[changed].tolist(),
                                        strict=True):
                peer[e] = int(p)
                delay[e] = d
                rate[e] = r
                loss[e] = lo
            last = rows
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
    recv = rx.recv
    send = tx.sendto
    sel = select.select
    epl = [ep.fileno()]
    parent = os.getppid()
    early = 0.0
    next_house = 0.0
    counted = False  # frames seen since the counters were last written
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
            if counted:  # (an idle worker leaves the table's counters as they are)
                write_counters()
                counted = False
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
                events = []
                timed = True
        else:
            events = poll(0.25)
        if events:
            if mv[0] != gen:  # the driver changed the table while this worker slept
                reload()
            if ring is not None:
                now = mono()
                batch = ring.read(BATCH, now - time.time())
                # Trust a kernel timestamp only if it is a plausible arrival time: a TCP
                # frame may carry its sender's departure time on another clock instead.
                for k, (fr, ts) in enumerate(batch):
                    if not now - 0.05 < ts <= now:
                        batch[k] = (fr, now)
            else:
                batch = []
                for _ in range(BATCH):
                    try:
                        batch.append((recv(bufsize), mono()))
                    except BlockingIOError:
                        break
                    except OSError:
                        break  # ENETDOWN after a carrier change: keep going
            if batch:
                counted = True
            for frame, t in batch:
                if frame[mac_at:mac_at + 2] != MAC_PREFIX:
                    continue  # not from a host interface of ours
                src = unpack_idx(frame, mac_at + 2)[0]
                if src >= n:
                    continue
                if not seen[src]:
                    seen[src] = 1
                    mine.append(src)
                dst = peer[src]
                if dst < 0:
                    continue
                p = loss[src]
                if p and rnd() < p:
                    lost[src] += 1
                    continue
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
        # Send what is due. ``early`` is how far ahead of a frame's due time the worker
        # aims: a feedback loop on the measured delivery error of timed wake-ups (the time
        # the send returned — the peer's stack runs inside it — minus the due time)
        # cancels the wake-up and delivery latency on average.
        if heap:
            counted = True
            now = mono()
            limit = now + early
            head_due = heap[0][0] if timed else 0.0
            while heap and heap[0][0] <= limit:
                _, src = pop(heap)
                q = queues[src]
                while q and q[0][0] <= limit:
                    _, dst, frame = q.popleft()
                    try:
                        send(frame, ifnames[dst])
                        fwd[src] += 1
                        nbytes[src] += len(frame) - overhead
                    except OSError:
                        pass  # peer down or its queue full: the frame is lost
                    if head_due:
                        err = mono() - head_due
                        head_due = 0.0
                        early += 0.05 * max(-0.0005, min(0.0005, err))
                        early = min(max(early, 0.0), 0.001)
                if q:
                    push(heap, (q[0][0], src))
    write_counters()
    rx.close()
    tx.close()
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
