"""Pausing, resuming and pacing a run's scenario time (``--view``: the page's pause
button and time scale).

Every process of the run reads scenario time through the run's :class:`ClockFile`
(``NETEMU_CLOCK_FILE``): the emulator's driver in this process, the bundle agents and the
apps in the hosts. A pause writes "paused at ``t``" there, so every clock reads ``t`` and
the driver changes no link; then it stops (SIGSTOP) the agents and the apps, every process
of their trees and cgroups, so nothing sends while scenario time stands. A resume writes
"``t`` at wall time now" and continues them (SIGCONT): scenario time goes on from ``t``.
A change of time scale writes "``t`` at wall time now, at the new scale": every clock
goes on from ``t`` at the new pace; timers that slept in wall time read the clock again
within ``RECHECK_S`` (netemu.runtime.clock), and the emulator's driver shapes every link
anew at its next tick. Each pause, resume and change of scale is published on the
``clock`` topic.

A sleep that was under way in a stopped process when the run paused ends early after the
resume (its wall-clock timer ran on), by at most its own length; its clock reading is
right, so a loop that re-reads the clock catches up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from netemu.errors import InputError
from netemu.runtime.clock import ClockFile, ScenarioClock

MAX_TIME_SCALE = 1e6
"""The largest time scale a run may be set to (a year of scenario time in 30 s)."""


class RunPause:
    """Pause and resume for one run. ``processes()`` gives the pids to stop (called at
    each pause: agents restarted by a fault are included); ``publish(payload)`` sends a
    ``clock`` message."""

    def __init__(self, path: Path, clock: ScenarioClock, *,
                 processes: Callable[[], Iterable[int]],
                 publish: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.file = ClockFile(path, create=True)
        self.file.write(clock.t0_wall, clock.t0_s, clock.time_scale, paused=False)
        self.clock = replace(clock, clock_file=str(path))
        self.processes = processes
        self.publish = publish
        self.enabled = False  # set once the window opens
        self.paused_at_s: float | None = None
        self._stopped: list[int] = []
        self._lock = threading.Lock()

    def pause(self) -> bool:
        """Stops scenario time now; False when it cannot (not running yet, or paused)."""
        with self._lock:
            if not self.enabled or self.paused_at_s is not None:
                return False
            t = self.clock.now_s()
            self.file.write(time.time(), t, self.clock.scale_now(), paused=True)
            self.paused_at_s = t
            self._stopped = _signal_all(self.processes(), signal.SIGSTOP)
        if self.publish is not None:
            self.publish({"event": "paused", "t_s": t, "processes": len(self._stopped)})
        return True

    def resume(self) -> bool:
        """Scenario time goes on from where it stopped; False when not paused."""
        with self._lock:
            t = self.paused_at_s
            if t is None:
                return False
            self.file.write(time.time(), t, self.clock.scale_now(), paused=False)
            if self.publish is not None:  # before the processes publish again
                self.publish({"event": "resumed", "t_s": t})
            _signal_all(self._stopped, signal.SIGCONT)
            self._stopped = []
            self.paused_at_s = None
        return True

    def set_scale(self, time_scale: float) -> bool:
        """Scenario time goes on from now at ``time_scale`` scenario seconds per wall
        second (a paused run resumes at it); False when it cannot (not running yet). A
        scale out of (0, :data:`MAX_TIME_SCALE`] raises :class:`InputError`."""
        if not (isinstance(time_scale, (int, float)) and 0 < time_scale <= MAX_TIME_SCALE):
            raise InputError(f"time scale must be > 0 and at most {MAX_TIME_SCALE:g}, got "
                             f"{time_scale!r}", field="time_scale")
        with self._lock:
            if not self.enabled:
                return False
            t = self.clock.now_s()
            self.file.write(time.time(), t, float(time_scale),
                            paused=self.paused_at_s is not None)
        if self.publish is not None:
            self.publish({"event": "scale", "t_s": t, "time_scale": float(time_scale)})
        return True

    def close(self) -> None:
        """At teardown: never leave a process stopped (it could not take its SIGTERM)."""
        self.enabled = False
        self.resume()


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants."""
    import psutil

    try:
        p = psutil.Process(pid)
        return [pid] + [c.pid for c in p.children(recursive=True)]
    except psutil.Error:
        return []


def cgroup_pids(dirs: Iterable[Path]) -> list[int]:
    """Every process in cgroup directories and the groups below them (a container's)."""
    out: list[int] = []
    for d in dirs:
        for procs in Path(d).rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                out += [int(x) for x in procs.read_text().split()]
    return out


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> list[int]:
    done: list[int] = []
    own = os.getpid()
    for pid in dict.fromkeys(pids):  # once each, in order
        if pid == own:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            done.append(pid)
    return done
