"""The scenario clock: one mapping from wall time to scenario time for every component.

Scenario time ``t_s`` is seconds from the plan/scenario ``epoch`` (UTC). It advances
``time_scale`` scenario seconds per wall second, starting from ``t0_s`` at wall time
``t0_wall`` (Unix seconds, ``time.time()``). The link driver, the bundle agents in the
hosts and the apps all read the same clock, so they agree on what "now" is.

Processes inside emulated hosts get the clock through their environment:

``NETEMU_EPOCH``
    scenario epoch, ISO 8601 UTC (``2026-01-01T00:00:00Z``)
``NETEMU_TIME_SCALE``
    scenario seconds per wall second (float, ``1`` = real time)
``NETEMU_T0_WALL``
    Unix wall time (float seconds) at which scenario time was ``NETEMU_T0_S``
``NETEMU_T0_S``
    scenario time (seconds from the epoch) at ``NETEMU_T0_WALL``; 0 when absent

``NETEMU_CLOCK_FILE``
    optional: a clock file (:class:`ClockFile`) whose mapping replaces the three above
    while the run goes on, so that a run can be paused, resumed and change its time scale
    (``--view``)

``ScenarioClock.from_env()`` rebuilds the clock from these; all hosts share the machine's
wall clock, so their readings agree with the driver's.

A clock whose mapping can change (one with a clock file) changes under a timer that slept
in wall time: code that waits for a scenario time sleeps :meth:`ScenarioClock.timer_s`
at a time (at most :data:`RECHECK_S` on such a clock) and looks at the clock again, or
uses :func:`sleep_until`. A fixed clock's timers sleep the whole way at once.
"""

from __future__ import annotations

import asyncio
import math
import mmap
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from netemu.errors import InputError

DTN_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
"""DTN time counts milliseconds from 2000-01-01T00:00:00Z (RFC 9171 §4.2.6)."""

# The clock's environment variables (all NETEMU_* names: netemu.runtime.env).
NETEMU_EPOCH = "NETEMU_EPOCH"
"""Scenario epoch, ISO 8601 UTC."""
NETEMU_TIME_SCALE = "NETEMU_TIME_SCALE"
"""Scenario seconds per wall second (float)."""
NETEMU_T0_WALL = "NETEMU_T0_WALL"
"""Unix wall time (s) at which scenario time was ``NETEMU_T0_S``."""
NETEMU_T0_S = "NETEMU_T0_S"
"""Scenario seconds from the epoch at ``NETEMU_T0_WALL`` (default 0)."""
NETEMU_CLOCK_FILE = "NETEMU_CLOCK_FILE"
"""A :class:`ClockFile` whose mapping every process of the run reads (pause, resume)."""

RECHECK_S = 0.25
"""Wall seconds a timer on a clock with a clock file sleeps at most before it reads the
clock again: how late a wait notices a pause, a resume or a new time scale."""


class ClockFile:
    """The run's clock mapping in a small file that every process of the run maps, so
    that the run can pause, resume and change the pace of its scenario time: one segment
    ``(t0_wall, t0_s, time_scale, paused)`` behind a sequence number (odd while the writer
    is mid-write; readers retry). Each change starts a new segment where the last one
    stands, so scenario time never jumps.

    One writer (the run); any number of readers, each reading 40 bytes per clock
    reading. While ``paused``, scenario time stands at ``t0_s``.
    """

    FORMAT = struct.Struct("<Qddd?7x")

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = os.fspath(path)
        if create:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, bytes(self.FORMAT.size))
        else:
            fd = os.open(self.path, os.O_RDONLY)
        try:
            self._map = mmap.mmap(fd, self.FORMAT.size,
                                  access=mmap.ACCESS_WRITE if create else mmap.ACCESS_READ)
        finally:
            os.close(fd)

    def write(self, t0_wall: float, t0_s: float, time_scale: float, *, paused: bool) -> None:
        if not time_scale > 0:
            raise ValueError(f"time scale must be > 0, got {time_scale!r}")
        seq = self.FORMAT.unpack_from(self._map)[0]
        struct.pack_into("<Q", self._map, 0, seq + 1)  # odd: being written
        self.FORMAT.pack_into(self._map, 0, seq + 1, t0_wall, t0_s, time_scale, paused)
        struct.pack_into("<Q", self._map, 0, seq + 2)

    def read(self) -> tuple[float, float, float, bool] | None:
        """``(t0_wall, t0_s, time_scale, paused)``, or None before the first write."""
        while True:
            seq, t0_wall, t0_s, scale, paused = self.FORMAT.unpack_from(self._map)
            if seq % 2 == 0 and self.FORMAT.unpack_from(self._map)[0] == seq:
                return None if seq == 0 else (t0_wall, t0_s, scale, bool(paused))


@dataclass(frozen=True)
class ScenarioClock:
    """Maps wall time (Unix seconds) to scenario time (seconds from ``epoch``)."""

    epoch: datetime
    time_scale: float = 1.0
    """The scale the clock starts at; a clock file may change it: :meth:`scale_now`."""
    t0_wall: float = 0.0
    t0_s: float = 0.0
    clock_file: str | None = None
    """A :class:`ClockFile`: while it holds a mapping, it replaces ``t0_wall``/``t0_s``."""

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise InputError(f"time scale must be > 0, got {self.time_scale!r}",
                             field="time_scale")
        if self.epoch.tzinfo is None:
            object.__setattr__(self, "epoch", self.epoch.replace(tzinfo=timezone.utc))
        # DTN seconds at the epoch, once: agents read the DTN time for every bundle.
        object.__setattr__(self, "_epoch_dtn_s", (self.epoch - DTN_EPOCH).total_seconds())
        control = None
        if self.clock_file:
            try:
                control = ClockFile(self.clock_file)
            except OSError as e:
                raise InputError(f"cannot read the clock file {self.clock_file}: {e}",
                                 source="environment", field=NETEMU_CLOCK_FILE) from e
        object.__setattr__(self, "_control", control)

    def _mapping(self) -> tuple[float, float, float, bool]:
        """``(t0_wall, t0_s, time_scale, paused)`` now: the clock file's, else the fixed
        one."""
        control: ClockFile | None = self._control  # type: ignore[attr-defined]
        if control is not None:
            m = control.read()
            if m is not None:
                return m
        return self.t0_wall, self.t0_s, self.time_scale, False

    @property
    def paused(self) -> bool:
        """Whether the run's scenario time stands still now (a paused run)."""
        return self._mapping()[3]

    @property
    def changeable(self) -> bool:
        """Whether the mapping may change while the run goes on (a clock file)."""
        return self._control is not None  # type: ignore[attr-defined]

    def scale_now(self) -> float:
        """Scenario seconds per wall second now (while paused: the scale the run resumes
        at)."""
        return self._mapping()[2] if self._control is not None else self.time_scale  # type: ignore[attr-defined]

    @classmethod
    def start(cls, epoch: datetime, *, time_scale: float = 1.0, t0_s: float = 0.0,
              wall: float | None = None) -> ScenarioClock:
        """A clock whose scenario time is ``t0_s`` now (or at wall time ``wall``)."""
        return cls(epoch, time_scale, time.time() if wall is None else wall, t0_s)

    # --- readings --------------------------------------------------------------------

    def now_s(self, wall: float | None = None) -> float:
        """Scenario seconds from the epoch at wall time ``wall`` (default: now)."""
        w = time.time() if wall is None else wall
        if self._control is None:  # type: ignore[attr-defined]
            return self.t0_s + (w - self.t0_wall) * self.time_scale
        t0_wall, t0_s, scale, paused = self._mapping()
        return t0_s if paused else t0_s + (w - t0_wall) * scale

    def wall_at(self, t_s: float) -> float:
        """Unix wall time at which scenario time reaches ``t_s`` (infinity while paused,
        for a time still ahead)."""
        if self._control is None:  # type: ignore[attr-defined]
            return self.t0_wall + (t_s - self.t0_s) / self.time_scale
        t0_wall, t0_s, scale, paused = self._mapping()
        if paused:
            return -math.inf if t_s <= t0_s else math.inf
        return t0_wall + (t_s - t0_s) / scale

    def timer_s(self, t_s: float, wall: float | None = None) -> float:
        """Wall seconds a timer for scenario time ``t_s`` sleeps before it reads the clock
        again: until ``t_s`` on a fixed clock; at most :data:`RECHECK_S` on one whose
        mapping may change (it may pause, resume or change its scale meanwhile). 0 once
        ``t_s`` is reached."""
        w = time.time() if wall is None else wall
        left = self.wall_at(t_s) - w
        if left <= 0:
            return 0.0
        return min(left, RECHECK_S) if self._control is not None else left  # type: ignore[attr-defined]

    def utc_at(self, t_s: float) -> datetime:
        return self.epoch + timedelta(seconds=t_s)

    def now_utc(self) -> datetime:
        """Scenario time now, as a UTC datetime."""
        return self.utc_at(self.now_s())

    def dtn_time_ms(self, t_s: float | None = None) -> int:
        """DTN time (ms since 2000-01-01 UTC) of scenario time ``t_s`` (default: now)."""
        if t_s is None:
            t_s = self.now_s()
        return int(round((self._epoch_dtn_s + t_s) * 1000.0))  # type: ignore[attr-defined]

    # --- environment -----------------------------------------------------------------

    def to_env(self) -> dict[str, str]:
        """The ``NETEMU_*`` variables that let a process in a host rebuild this clock."""
        epoch = self.epoch.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
        return {
            NETEMU_EPOCH: epoch,
            NETEMU_TIME_SCALE: repr(float(self.time_scale)),
            NETEMU_T0_WALL: f"{self.t0_wall:.6f}",
            NETEMU_T0_S: repr(float(self.t0_s)),
            **({NETEMU_CLOCK_FILE: self.clock_file} if self.clock_file else {}),
        }

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *,
                 default: ScenarioClock | None = None) -> ScenarioClock:
        """The clock described by ``NETEMU_*`` variables (default: ``os.environ``).

        This is the one reader of the clock variables. Without ``default``,
        ``NETEMU_EPOCH`` and ``NETEMU_T0_WALL`` must be set ("running under netemu");
        with it, each absent variable takes ``default``'s value (e.g. wall time since the
        process started, outside netemu). A malformed value raises :class:`InputError`.
        """
        env = os.environ if env is None else env
        if default is None:
            missing = [k for k in (NETEMU_EPOCH, NETEMU_T0_WALL) if not env.get(k)]
            if missing:
                raise InputError(f"not running under netemu: {', '.join(missing)} not set",
                                 source="environment")
        epoch = default.epoch if default is not None else DTN_EPOCH
        if env.get(NETEMU_EPOCH):
            try:
                epoch = datetime.fromisoformat(env[NETEMU_EPOCH].replace("Z", "+00:00"))
            except ValueError as e:
                raise InputError(f"not an ISO 8601 time: {env[NETEMU_EPOCH]!r}",
                                 source="environment", field=NETEMU_EPOCH) from e
        fallback = default or cls(epoch)
        vals: dict[str, float] = {}
        for key, dflt in ((NETEMU_TIME_SCALE, fallback.time_scale),
                          (NETEMU_T0_WALL, fallback.t0_wall), (NETEMU_T0_S, fallback.t0_s)):
            raw = env.get(key)
            if not raw:
                vals[key] = dflt
                continue
            try:
                vals[key] = float(raw)
            except ValueError as e:
                raise InputError(f"not a number: {raw!r}", source="environment",
                                 field=key) from e
        return cls(epoch, vals[NETEMU_TIME_SCALE], vals[NETEMU_T0_WALL], vals[NETEMU_T0_S],
                   env.get(NETEMU_CLOCK_FILE) or (default.clock_file if default else None))


async def sleep_until(clock: ScenarioClock, t_s: float) -> None:
    """Sleep until the clock reads scenario time ``t_s``, following pauses and changes of
    time scale."""
    while (left := clock.timer_s(t_s)) > 0:
        await asyncio.sleep(left)
