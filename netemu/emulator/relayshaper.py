"""The userspace relay shaper: relay workers in the shaper namespace.

The workers (:mod:`netemu.emulator.relay`, one process per CPU, at most 4) forward frames
between the twins of host interfaces; their parameters come through a shared-memory
:class:`~netemu.emulator.table.LinkTable`. Works on any kernel with veth and AF_PACKET.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from netemu.emulator.netns import ns_path
from netemu.emulator.network import Network
from netemu.emulator.shaper import EndpointCounters, Shaper, ShaperError
from netemu.emulator.table import (
    DELAY,
    H_QLIMIT_S,
    LOSS,
    PEER,
    RATE,
    LinkTable,
)


class RelayShaper(Shaper):
    """Userspace relay: ``workers`` processes (default: one per CPU, at most 4)."""

    name = "relay"

    def __init__(self, net: Network, *, workers: int | None = None, gso: bool = False,
                 qlimit_s: float = 0.1, realtime: bool = True) -> None:
        super().__init__(net)
        self.realtime = realtime
        n_ep = len(net.layout.endpoints)
        self.workers = max(1, min(workers or min(os.cpu_count() or 1, 4), max(1, n_ep)))
        self.gso = gso
        self.qlimit_s = qlimit_s
        self.shm_name = f"netemu-{net.run}"
        self.table: LinkTable | None = None
        self.procs: list[subprocess.Popen] = []
        self._ops: list[tuple[int, int, float, float, float]] = []

    def start(self) -> None:
        n_ep = len(self.net.layout.endpoints)
        self.table = LinkTable(self.shm_name, max(1, n_ep), create=True)
        self.table.hdr[H_QLIMIT_S] = self.qlimit_s
        if n_ep == 0:
            return
        for k in range(self.workers):
            argv = [sys.executable, "-m", "netemu.emulator.relay", "--netns",
                    ns_path(self.net.shaper_ns), "--shm", self.shm_name, "--endpoints",
                    str(n_ep), "--workers", str(self.workers), "--index", str(k)]
            if self.gso:
                argv.append("--gso")
            if not self.realtime:
                argv.append("--no-realtime")
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 start_new_session=True)
            self.procs.append(p)
            self.net.registry.add_pid(p.pid, "relay")
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != b"ready":
                raise ShaperError(f"relay worker {p.pid} failed to start "
                                  f"(exit status {p.poll()})")

    def begin(self) -> None:
        self._ops = []

    def set_dir(self, src: int, dst: int, delay_s: float, rate_bps: float, loss: float) -> None:
        self._ops.append((src, dst, delay_s, rate_bps, loss))

    def clear_dir(self, src: int) -> None:
        self._ops.append((src, -1, 0.0, 0.0, 0.0))

    def commit(self) -> None:
        """Write the buffered changes in one short seqlock section (workers skip a reload
        while it is open, so it must not span the driver's netlink work)."""
        assert self.table is not None
        ops, self._ops = self._ops, []
        if not ops:
            return
        links = self.table.links
        self.table.begin()
        try:
            for src, dst, delay_s, rate_bps, loss in ops:
                row = links[src]
                row[PEER] = dst
                if dst >= 0:
                    row[DELAY] = delay_s
                    row[RATE] = rate_bps
                    row[LOSS] = loss
        finally:
            self.table.commit()

    def counters(self) -> dict[str, float]:
        if self.table is None:
            return {}
        c = self.table.counters.sum(axis=0)
        return {"frames": float(c[0]), "bytes": float(c[1]), "lost": float(c[2]),
                "queue_drops": float(c[3])}

    def endpoint_counters(self, endpoint: int) -> EndpointCounters:
        assert self.table is not None
        row = self.table.counters[endpoint]
        return float(row[0]), float(row[1]), float(row[2]), float(row[3])

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        if self.table is not None:
            self.table.set_stop()
        deadline = time.monotonic() + 2.0
        for p in self.procs:
            try:
                p.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
        self.procs.clear()
        if self.table is not None:
            self.table.close(unlink=True)
            self.table = None
