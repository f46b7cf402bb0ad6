"""A cgroup of its own for each app instance, carrying the manifest's CPU and memory limits
(cgroup v1 ``cpu``/``cpuacct``/``memory`` hierarchies, or v2 where the machine is v2-only)."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from netemu.run.apps.manifest import AppError, Resources

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_version(root: Path = CGROUP_ROOT) -> int:
    """1 when the v1 cpu and memory controllers are mounted (hybrid included), else 2."""
    if (root / "memory" / "memory.limit_in_bytes").exists() and (root / "cpu").is_dir():
        return 1
    if (root / "cgroup.controllers").exists():
        return 2
    raise AppError(f"no usable cgroup hierarchy under {root}")


class AppCgroup:
    """A group of its own for one app instance, with the app's CPU and memory limits.

    cgroup v1: a directory ``netemu/<run>/<app>.<node>`` in each of the cpu, cpuacct and
    memory hierarchies (one when they are co-mounted). cgroup v2: one directory with
    ``cpu.max`` and ``memory.max``.
    """

    PERIOD_US = 100_000

    def __init__(self, run: str, name: str, root: Path = CGROUP_ROOT) -> None:
        self.root = root
        self.version = cgroup_version(root)
        self.rel = f"netemu/{run}/{name}"
        if self.version == 1:
            dirs: list[Path] = []
            for ctrl in ("cpu", "cpuacct", "memory"):
                d = (root / ctrl).resolve() / self.rel
                if d not in dirs:
                    dirs.append(d)
            self.dirs = dirs
            # podman (and anything else) may add the group in every hierarchy
            self.all_dirs = list(dirs)
            for h in sorted(root.iterdir()):
                d = h.resolve() / self.rel
                if h.is_dir() and d not in self.all_dirs:
                    self.all_dirs.append(d)
        else:
            self.dirs = [root / self.rel]
            self.all_dirs = list(self.dirs)

    @property
    def parent_path(self) -> str:
        """The group as podman's ``--cgroup-parent`` wants it (a path from the root)."""
        return "/" + self.rel

    def _find(self, filename: str) -> Path | None:
        for d in self.dirs:
            if (d / filename).exists():
                return d / filename
        return None

    def create(self, resources: Resources) -> None:
        if self.version == 2:
            self._enable_v2_controllers()
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        quota = max(1000, int(resources.cpus * self.PERIOD_US))
        if self.version == 1:
            self._write("cpu.cfs_period_us", str(self.PERIOD_US))
            self._write("cpu.cfs_quota_us", str(quota))
            self._write("memory.limit_in_bytes", str(resources.memory_bytes))
            # no swap escape hatch where the kernel accounts swap
            with contextlib.suppress(OSError, AppError):
                self._write("memory.memsw.limit_in_bytes", str(resources.memory_bytes))
        else:
            self._write("cpu.max", f"{quota} {self.PERIOD_US}")
            self._write("memory.max", str(resources.memory_bytes))
            with contextlib.suppress(OSError, AppError):
                self._write("memory.swap.max", "0")

    def _enable_v2_controllers(self) -> None:
        parts = Path(self.rel).parts
        d = self.root
        for part in parts:
            with contextlib.suppress(OSError):
                (d / "cgroup.subtree_control").write_text("+cpu +memory")
            d = d / part
            d.mkdir(exist_ok=True)

    def _write(self, filename: str, value: str) -> None:
        p = self._find(filename)
        if p is None:
            raise AppError(f"cgroup file {filename} missing in {self.dirs}")
        p.write_text(value)

    def read(self, filename: str) -> str | None:
        p = self._find(filename)
        if p is None:
            return None
        try:
            return p.read_text().strip()
        except OSError:
            return None

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        out: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError):
                out |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
        # descendants (a container's own group sits under ours)
        for d in self.dirs:
            if d.is_dir():
                for sub in d.rglob("cgroup.procs"):
                    with contextlib.suppress(OSError, ValueError):
                        out |= {int(x) for x in sub.read_text().split()}
        return out

    def usage(self) -> dict[str, Any]:
        """cpu_s used and peak memory of everything that ran in the group."""
        out: dict[str, Any] = {}
        if self.version == 1:
            ns = self.read("cpuacct.usage")
            if ns is not None:
                out["cpu_s"] = int(ns) / 1e9
            peak = self.read("memory.max_usage_in_bytes")
            if peak is not None:
                out["memory_peak_bytes"] = int(peak)
            for line in (self.read("memory.oom_control") or "").splitlines():
                if line.startswith("oom_kill "):
                    out["oom_kills"] = int(line.split()[1])
        else:
            stat = self.read("cpu.stat") or ""
            for line in stat.splitlines():
                k, _, v = line.partition(" ")
                if k == "usage_usec":
                    out["cpu_s"] = int(v) / 1e6
            peak = self.read("memory.peak")
            if peak is not None:
                out["memory_peak_bytes"] = int(peak)
            for line in (self.read("memory.events") or "").splitlines():
                k, _, v = line.partition(" ")
                if k == "oom_kill":
                    out["oom_kills"] = int(v)

        return out

    def kill_all(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    def remove(self) -> None:
        """Remove the group (children first), then empty ``netemu/<run>`` parents."""
        for d in self.all_dirs:
            if not d.is_dir():
                continue
            subs = sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
            for s in subs:
                with contextlib.suppress(OSError):
                    s.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()
            for parent in (d.parent, d.parent.parent):  # netemu/<run>, netemu
                with contextlib.suppress(OSError):
                    parent.rmdir()


def cgroup_of(pid: int) -> dict[str, str]:
    """``{controller: path}`` of a process, from /proc/<pid>/cgroup."""
    out = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, ctrls, path = line.split(":", 2)
        for c in (ctrls or "unified").split(","):
            out[c] = path
    return out
