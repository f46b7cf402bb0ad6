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

``ScenarioClock.from_env()`` rebuilds the clock from these; all hosts share the machine's
wall clock, so their readings agree with the driver's.
"""

from __future__ import annotations

import os
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


@dataclass(frozen=True)
class ScenarioClock:
    """Maps wall time (Unix seconds) to scenario time (seconds from ``epoch``)."""

    epoch: datetime
    time_scale: float = 1.0
    t0_wall: float = 0.0
    t0_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise InputError(f"time scale must be > 0, got {self.time_scale!r}",
                             field="time_scale")
        if self.epoch.tzinfo is None:
            object.__setattr__(self, "epoch", self.epoch.replace(tzinfo=timezone.utc))
        # DTN seconds at the epoch, once: agents read the DTN time for every bundle.
        object.__setattr__(self, "_epoch_dtn_s", (self.epoch - DTN_EPOCH).total_seconds())

    @classmethod
    def start(cls, epoch: datetime, *, time_scale: float = 1.0, t0_s: float = 0.0,
              wall: float | None = None) -> ScenarioClock:
        """A clock whose scenario time is ``t0_s`` now (or at wall time ``wall``)."""
        return cls(epoch, time_scale, time.time() if wall is None else wall, t0_s)

    # --- readings --------------------------------------------------------------------

    def now_s(self, wall: float | None = None) -> float:
        """Scenario seconds from the epoch at wall time ``wall`` (default: now)."""
        w = time.time() if wall is None else wall
        return self.t0_s + (w - self.t0_wall) * self.time_scale

    def wall_at(self, t_s: float) -> float:
        """Unix wall time at which scenario time reaches ``t_s``."""
        return self.t0_wall + (t_s - self.t0_s) / self.time_scale

    def utc_at(self, t_s: float) -> datetime:
        return self.epoch + timedelta(seconds=t_s)

    def now_utc(self) -> datetime:
        """Scenario time now, as a UTC datetime."""
        return self.utc_at(self.now_s())

    def dtn_time_ms(self, t_s: float | None = None) -> int:
        """DTN time (ms since 2000-01-01 UTC) of scenario time ``t_s`` (default: now)."""
        if t_s is None:
            t_s = self.t0_s + (time.time() - self.t0_wall) * self.time_scale
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
        return cls(epoch, vals[NETEMU_TIME_SCALE], vals[NETEMU_T0_WALL], vals[NETEMU_T0_S])
