"""Link shapers behind one interface, and the probe that picks one.

A shaper applies, per link direction (frames entering at endpoint ``src`` leave at
``dst``), a delay, a rate and a loss probability, and can disconnect a direction.
Updates are grouped: ``begin()``, any number of ``set_dir``/``clear_dir``, ``commit()``.

- ``relay`` (:class:`RelayShaper`): userspace relay workers in the shaper namespace
  (:mod:`netemu.emulator.relay`), parameters through a shared-memory table. Works on any
  kernel with veth and AF_PACKET.
- ``netem`` (:class:`netemu.emulator.netem.NetemShaper`): tc netem + mirred, changed in
  place through netlink. Needs sch_netem.

``probe_netem()`` tries a netem qdisc in a scratch namespace; ``choose_shaper("auto")``
takes netem when it works and the relay otherwise, and says why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from abc import ABC, abstractmethod

from netemu.emulator.netns import ns_path
from netemu.emulator.network import Network
from netemu.emulator.table import (
    DELAY,
    H_QLIMIT_S,
    LOSS,
    PEER,
    RATE,
    LinkTable,
)
from netemu.errors import NetemuError


class ShaperError(NetemuError):
    pass


class Shaper(ABC):
    name = "base"

    def __init__(self, net: Network) -> None:
        self.net = net

    @abstractmethod
    def start(self) -> None: ...

    def begin(self) -> None:  # noqa: B027 - optional hook
        pass

    @abstractmethod
    def set_dir(self, src: int, dst: int, delay_s: float, rate_bps: float, loss: float) -> None:
        ...

    @abstractmethod
    def clear_dir(self, src: int) -> None: ...

    def commit(self) -> None:  # noqa: B027 - optional hook
        pass

    def counters(self) -> dict[str, float]:
        return {}

    def pids(self) -> list[int]:
        return []

    @abstractmethod
    def stop(self) -> None: ...


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

    def endpoint_counters(self, e: int) -> tuple[float, float, float, float]:
        assert self.table is not None
        row = self.table.counters[e]
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


def probe_netem(scratch_ns: str) -> str | None:
    """None when a netem qdisc can be created (in namespace ``scratch_ns``), else why not."""
    p = subprocess.run(["tc", "-n", scratch_ns, "qdisc", "add", "dev", "lo", "root", "netem",
                        "delay", "1ms"], capture_output=True, text=True)
    if p.returncode == 0:
        subprocess.run(["tc", "-n", scratch_ns, "qdisc", "del", "dev", "lo", "root"],
                       capture_output=True)
        return None
    return (p.stderr.strip().splitlines() or ["tc failed"])[0]


def make_shaper(kind: str, net: Network, **opts: object) -> tuple[Shaper, str]:
    """The shaper for ``kind`` ("auto", "relay", "netem") and a line saying why."""
    if kind not in ("auto", "relay", "netem", "mirred"):
        raise ShaperError(f"unknown shaper {kind!r}: use auto, relay or netem")
    if kind == "mirred":  # tests: the kernel backend's wiring, without netem
        from netemu.emulator.netem import NetemShaper

        return NetemShaper(net, netem=False), "mirred (kernel wiring only: no delay, loss, rate)"
    if kind == "relay":
        return RelayShaper(net, **opts), "relay (requested)"  # type: ignore[arg-type]
    why = probe_netem(net.shaper_ns)
    if why is None:
        from netemu.emulator.netem import NetemShaper

        return NetemShaper(net), "netem (kernel has sch_netem)" + (
            "" if kind == "auto" else " (requested)")
    if kind == "netem":
        raise ShaperError(f"--shaper netem: this kernel cannot create a netem qdisc ({why}); "
                          "use --shaper relay (or auto) here, or run on a kernel with sch_netem")
    return RelayShaper(net, **opts), f"relay (netem unavailable: {why})"  # type: ignore[arg-type]
