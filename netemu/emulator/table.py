"""The link table shared between the driver and the relay workers (shared memory).

The driver writes, for each endpoint ``e`` (a frame *entering* the shaper from ``e``):
the endpoint it leaves by (``peer``, -1 when not connected), the one-way delay, the rate
(0 = unlimited) and the loss probability. Workers poll a generation counter and reload
when it changes — no messages on the hot path. A seqlock (odd generation while writing)
keeps workers from reading a half-written update.

Workers write back per-endpoint counters (frames and bytes forwarded, frames lost to the
loss model, frames dropped because the emulated transmit queue was full).
"""

from __future__ import annotations

import contextlib
from multiprocessing import shared_memory

import numpy as np

HDR = 8
H_GEN, H_STOP, H_QLIMIT_S = 0, 1, 2
COLS = 4
PEER, DELAY, RATE, LOSS = 0, 1, 2, 3
CCOLS = 4
C_FWD, C_BYTES, C_LOST, C_QDROP = 0, 1, 2, 3


def table_size(n_endpoints: int) -> int:
    return 8 * (HDR + n_endpoints * (COLS + CCOLS))


class LinkTable:
    """A view of the shared table; ``create=True`` makes it (the driver)."""

    def __init__(self, name: str, n_endpoints: int, *, create: bool = False) -> None:
        self.n = n_endpoints
        size = table_size(n_endpoints)
        if create:
            try:
                old = shared_memory.SharedMemory(name=name)
                old.close()
                old.unlink()
            except FileNotFoundError:
                pass
        self.shm = shared_memory.SharedMemory(name=name, create=create, size=size if create else 0)
        if not create:
            # Don't let this process's resource tracker unlink the driver's segment.
            try:
                from multiprocessing import resource_tracker

                resource_tracker.unregister(self.shm._name, "shared_memory")  # type: ignore[attr-defined]
            except Exception:
                pass
        buf = self.shm.buf
        assert buf is not None  # an open SharedMemory has a buffer
        self.raw = np.ndarray((size // 8,), dtype=np.float64, buffer=buf)
        self.hdr = self.raw[:HDR]
        self.links = self.raw[HDR:HDR + n_endpoints * COLS].reshape(n_endpoints, COLS)
        self.counters = self.raw[HDR + n_endpoints * COLS:].reshape(n_endpoints, CCOLS)
        self.mv: memoryview[float] = buf.cast("d")
        if create:
            self.raw[:] = 0
            self.links[:, PEER] = -1

    # --- driver side ---------------------------------------------------------------

    def begin(self) -> None:
        self.hdr[H_GEN] += 1  # odd: writing

    def commit(self) -> None:
        self.hdr[H_GEN] += 1  # even: consistent

    def set_stop(self) -> None:
        self.hdr[H_STOP] = 1

    # --- worker side ---------------------------------------------------------------

    def generation(self) -> float:
        return self.mv[H_GEN]

    def snapshot(self) -> tuple[float, list[float]] | None:
        """(generation, flat link table) read consistently, or None while the driver is
        writing (the caller tries again later: a worker at real-time priority must not
        spin waiting for a writer it may be keeping off the CPU)."""
        mv = self.mv
        g1 = mv[H_GEN]
        if int(g1) % 2:
            return None
        flat = mv[HDR:HDR + self.n * COLS].tolist()
        if mv[H_GEN] != g1:
            return None
        return g1, flat  # type: ignore[return-value]  # typeshed: tolist() of a "d" view is list[int]

    def snapshot_array(self) -> tuple[float, np.ndarray] | None:
        """:meth:`snapshot` as an (endpoints, COLS) array copy: one memory copy, so a worker
        compares it with its last one and touches only the rows the driver changed."""
        mv = self.mv
        g1 = mv[H_GEN]
        if int(g1) % 2:
            return None
        rows = self.links.copy()
        if mv[H_GEN] != g1:
            return None
        return g1, rows

    def close(self, *, unlink: bool = False) -> None:
        self.hdr = self.links = self.counters = self.raw = None
        self.mv.release()
        self.shm.close()
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                self.shm.unlink()
