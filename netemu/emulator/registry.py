"""The run registry: what each run built, so ``netemu clean`` can undo a crashed run.

``/run/netemu/<run>/`` (the root is ``$NETEMU_REGISTRY_DIR`` when set) holds ``run.json`` (owner pid, namespaces, shared-memory name) and
``pids`` (one ``PID STARTTIME KIND`` line per process the run started: relay workers,
host shells, processes started in hosts). Start times guard against killing a recycled
pid. The directory is created before anything is built, so even a run that dies half-way
through bring-up leaves enough to clean it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from netemu.emulator.netns import NETNS_DIR, ip_batch, list_netns
from netemu.runtime.env import registry_dir

RUN_ROOT = registry_dir()
"""Root of the registry: ``$NETEMU_REGISTRY_DIR``, else ``/run/netemu``."""


def proc_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[19])


def pid_alive(pid: int, start: int | None = None) -> bool:
    st = proc_start_time(pid)
    return st is not None and (start is None or st == start)


@dataclass
class RunInfo:
    run: str
    path: Path
    meta: dict

    @property
    def owner_alive(self) -> bool:
        pid = self.meta.get("pid")
        if not pid:
            return False
        return pid_alive(int(pid), self.meta.get("pid_start"))


class Registry:
    def __init__(self, run: str) -> None:
        self.run = run
        self.path = RUN_ROOT / run

    def create(self, meta: dict) -> None:
        """Claim the run name; raises FileExistsError when a run of that name exists."""
        RUN_ROOT.mkdir(parents=True, exist_ok=True)
        self.path.mkdir()
        meta = dict(meta, run=self.run, pid=os.getpid(), pid_start=proc_start_time(os.getpid()),
                    started=time.time())
        self.write_meta(meta)
        (self.path / "pids").touch()

    def read_meta(self) -> dict:
        try:
            return json.loads((self.path / "run.json").read_text())
        except (OSError, ValueError):
            return {"run": self.run}

    def write_meta(self, meta: dict) -> None:
        tmp = self.path / "run.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.replace(self.path / "run.json")

    def add_pid(self, pid: int, kind: str) -> None:
        with open(self.path / "pids", "a") as f:
            f.write(f"{pid} {proc_start_time(pid) or 0} {kind}\n")

    def pids(self) -> list[tuple[int, int, str]]:
        """``(pid, start time, kind)`` of every process the run registered, also those of
        other processes (the shells of ``netemu run --attach``)."""
        return _read_pids(self.path)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def list_runs() -> list[RunInfo]:
    out: list[RunInfo] = []
    if not RUN_ROOT.is_dir():
        return out
    for d in sorted(RUN_ROOT.iterdir()):
        try:
            meta = json.loads((d / "run.json").read_text())
        except (OSError, ValueError):
            meta = {"run": d.name}
        out.append(RunInfo(d.name, d, meta))
    return out


def _read_pids(path: Path) -> list[tuple[int, int, str]]:
    out = []
    try:
        for line in (path / "pids").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out.append((int(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else ""))
    except OSError:
        pass
    return out


def run_namespaces(run: str) -> list[str]:
    """Namespaces of ``run``: ``<run>-<node>`` and the shaper's ``<run>+sw``."""
    return [n for n in list_netns() if n.startswith(run + "-") or n == run + "+sw"]


def pids_in_namespaces(names: list[str]) -> list[int]:
    """Processes whose network namespace is one of ``names`` (one pass over /proc)."""
    inodes = set()
    for n in names:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(f"{NETNS_DIR}/{n}").st_ino)
    if not inodes:
        return []
    me = os.getpid()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            ino = os.stat(f"/proc/{entry}/ns/net").st_ino
        except OSError:
            continue
        if ino in inodes:
            out.append(int(entry))
    return out


def kill_pids(pids: list[tuple[int, int | None]], *, grace_s: float = 1.0) -> int:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL; returns how many were alive."""
    alive = [(p, s) for p, s in pids if pid_alive(p, s)]
    for p, _s in alive:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    rest = alive
    while rest and time.monotonic() < deadline:
        time.sleep(0.02)
        rest = [(p, s) for p, s in rest if pid_alive(p, s) and not _zombie(p)]
    for p, _s in rest:
        with contextlib.suppress(OSError):
            os.kill(p, signal.SIGKILL)
    return len(alive)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:][:1] == b"Z"
    except OSError:
        return True


def clean_run(info: RunInfo) -> dict[str, int]:
    """Kill the run's processes, delete its namespaces and shared memory, drop its entry."""
    names = run_namespaces(info.run)
    tracked = [(p, s or None) for p, s, _k in _read_pids(info.path)]
    inside: list[tuple[int, int | None]] = [(p, None) for p in pids_in_namespaces(names)]
    killed = kill_pids(tracked + inside)
    if names:
        ip_batch([f"netns del {n}" for n in names], force=True)
    shm = info.meta.get("shm")
    if shm:
        with contextlib.suppress(OSError):
            os.unlink(f"/dev/shm/{shm}")
    shutil.rmtree(info.path, ignore_errors=True)
    return {"processes": killed, "namespaces": len(names)}


def clean_runs(named: Sequence[str] = (), *, everything: bool = False) -> list[str]:
    """``netemu clean`` on this machine: every crashed run (owner gone), and the runs
    ``named`` or ``everything`` even when live; one line per run saying what was done."""
    lines: list[str] = []
    runs = list_runs()
    known = {i.run for i in runs}
    for name in named:  # named runs whose registry entry is gone: namespaces may remain
        if name not in known and run_namespaces(name):
            runs.append(RunInfo(name, RUN_ROOT / name, {"run": name}))
    for info in runs:
        forced = everything or info.run in named
        if info.owner_alive and not forced:
            lines.append(f"run {info.run}: live (pid {info.meta.get('pid')}), left alone")
            continue
        res = clean_run(info)
        lines.append(f"run {info.run}: killed {res['processes']} processes, removed "
                     f"{res['namespaces']} namespaces")
    return lines
