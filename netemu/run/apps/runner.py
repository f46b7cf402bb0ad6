"""Starting app instances inside emulated hosts, and recording how they ended.

A ``process`` instance is ``nsenter``-ed into the host's network namespace and joins its
cgroup before it execs; a ``container`` instance is a podman container on the host's
namespace with its cgroup under the same per-app group. Each writes ``stdout.log``,
``stderr.log`` and ``usage.json`` under ``<run_dir>/apps/<app>/<node>/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netemu.run.apps.cgroup import AppCgroup
from netemu.run.apps.image import (
    build_app_image,
    build_base_image,
    podman_argv,
    resolve_image,
    venv_root,
)
from netemu.run.apps.manifest import PROJECT_ROOT, AppError
from netemu.run.apps.placement import AppInstance
from netemu.runtime.env import NETEMU_DTN_SOCKET, NETEMU_MQTT_SOCKET, HostEnv
from netemu.runtime.rundir import RunDir


def resolve_argv(argv: Sequence[str], app_dir: Path) -> list[str]:
    """``python``/``python3`` → this venv's interpreter; ``./x`` → the app folder's file."""
    out = list(argv)
    if out and out[0] in ("python", "python3"):
        out[0] = sys.executable
    elif out and out[0].startswith("./"):
        out[0] = str(app_dir / out[0][2:])
    return out


def base_environment() -> dict[str, str]:
    """A clean, reproducible environment for apps (plus netemu's variables on top)."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "VIRTUAL_ENV": str(venv_root()),
    }


# sh joins the cgroup(s) named before "--", then becomes the app: the app and everything
# it forks are accounted and limited from their first instruction.
_JOIN_SH = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'


PODMAN_STOP_MAX_S = 120.0
"""How long past an app's grace to wait for a ``podman stop`` that is still at work."""


# PID 1 of a container gets no default signal actions: an app that relies on SIGTERM's
# default would ignore `podman stop` and be killed 137. This shim (no init binary needed)
# passes SIGTERM/SIGINT on and exits with the app's own status.
_INIT_SH = (
    '"$@" & child=$!; trap \'kill -TERM $child 2>/dev/null\' TERM INT; '
    'wait $child; status=$?; '
    'while kill -0 $child 2>/dev/null; do wait $child; status=$?; done; exit $status'
)


@dataclass
class RunningApp:
    instance: AppInstance
    out_dir: Path
    proc: subprocess.Popen[bytes]
    cgroup: AppCgroup
    started_wall: float
    container: str | None = None
    image: str | None = None
    rusage: Any = None
    exit_status: int | None = None
    finished_wall: float | None = None
    stopped_by_runner: bool = False
    stopper: subprocess.Popen | None = None  # the ``podman stop`` of a container
    finished: bool = False
    _files: list[Any] = field(default_factory=list)

    def poll(self) -> int | None:
        if self.exit_status is not None:
            return self.exit_status
        try:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        except ChildProcessError:
            self.exit_status = self.proc.poll() if self.proc.returncode is not None else -1
            self.finished_wall = time.time()
            return self.exit_status
        if pid == 0:
            return None
        self.rusage = ru
        self.exit_status = os.waitstatus_to_exitcode(status)
        self.proc.returncode = self.exit_status
        self.finished_wall = time.time()
        return self.exit_status

    @property
    def pid(self) -> int:
        return self.proc.pid


class AppRunner:
    """Starts app instances in hosts and collects their logs and resource use.

    ``netns_path`` for a node is a network-namespace file, e.g. ``/proc/<host pid>/ns/net``.
    ``env`` holds netemu's variables for the node (``HostEnv(...).to_env()``: run, node,
    clock, MQTT, DTN socket, window); the app's own (app, output folder) are added here.
    """

    def __init__(self, run: str, run_dir: Path, *, mounts: Sequence[str] = (),
                 stop_grace_s: float = 5.0) -> None:
        self.run = run
        self.stop_grace_s = stop_grace_s  # after SIGTERM at the end, before SIGKILL
        self.run_dir = Path(run_dir)
        self.rundir = RunDir(self.run_dir)
        self.apps: list[RunningApp] = []
        self.mounts = list(mounts)
        self._base_tag: str | None = None
        self._tags: dict[str, str] = {}

    def out_dir(self, inst: AppInstance) -> Path:
        return self.rundir.app_dir(inst.manifest.name, inst.node)

    def prepare_images(self, instances: Iterable[AppInstance]) -> dict[str, str]:
        """Build (or find cached) images for every container instance, before the clock
        starts: image builds must not eat into the emulated window."""
        tags = {}
        for inst in instances:
            if inst.mode != "container" or inst.manifest.name in tags:
                continue
            if inst.manifest.image is not None:
                base = resolve_image(inst.manifest.image)
            else:
                if self._base_tag is None:
                    self._base_tag = build_base_image()
                base = self._base_tag
            tags[inst.manifest.name] = build_app_image(inst.manifest, base)
        self._tags = tags
        return tags

    def start(self, inst: AppInstance, netns_path: str, env: Mapping[str, str]) -> RunningApp:
        out = self.out_dir(inst)
        out.mkdir(parents=True, exist_ok=True)
        own = HostEnv(node=inst.node, app=inst.manifest.name, app_dir=out.resolve(),
                      app_model=inst.manifest.model)
        full_env = {**base_environment(), **env, **inst.environment, **own.to_env()}
        cg = AppCgroup(self.run, inst.key)
        cg.remove()  # a leftover from a crashed run with the same name
        cg.create(inst.resources)
        argv = resolve_argv(inst.argv, inst.manifest.directory)
        stdout = open(out / "stdout.log", "wb")  # noqa: SIM115 - closed in finish()
        stderr = open(out / "stderr.log", "wb")  # noqa: SIM115
        container = image = None
        if inst.mode == "process":
            cmd = ["nsenter", f"--net={netns_path}", "--", "sh", "-c", _JOIN_SH, "netemu-app",
                   *cg.procs_files(), "--", *argv]
        else:
            image = self._tags.get(inst.manifest.name)
            if image is None:
                image = self.prepare_images([inst])[inst.manifest.name]
            container = f"netemu-{self.run}-{inst.manifest.name}-{inst.node}"[:120]
            cmd = self._podman_run(inst, container, image, netns_path, full_env, cg, argv, out)
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=str(inst.manifest.directory),
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        except OSError as e:
            stdout.close()
            stderr.close()
            cg.remove()
            raise AppError(f"cannot start {inst.key}: {e}") from e
        ra = RunningApp(inst, out, proc, cg, time.time(), container=container, image=image,
                        _files=[stdout, stderr])
        self.apps.append(ra)
        return ra

    def _podman_run(self, inst: AppInstance, name: str, image: str, netns_path: str,
                    env: Mapping[str, str], cg: AppCgroup, argv: Sequence[str],
                    out: Path) -> list[str]:
        venv = str(venv_root())
        # the run directory read-only (plan.json, other apps' outputs), the app's own
        # output folder writable on top of it
        mounts = {str(PROJECT_ROOT): "ro", venv: "ro", str(self.run_dir.resolve()): "ro",
                  str(out.resolve()): "rw", str(inst.manifest.directory): "ro"}
        if inst.manifest.model is not None:
            mounts.setdefault(str(inst.manifest.model.parent), "ro")
        for m in self.mounts:
            mounts[m] = "rw"
        for k in (NETEMU_MQTT_SOCKET, NETEMU_DTN_SOCKET):
            if env.get(k):
                mounts[str(Path(env[k]).parent)] = "rw"
        cmd = podman_argv(
            "run", "--rm", "--replace", "--name", name,
            "--cgroup-parent", cg.parent_path,
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
            "--network", f"ns:{netns_path}",
            "--memory", f"{inst.resources.memory_mb}m",
            "--memory-swap", f"{inst.resources.memory_mb}m",
            "--cpus", f"{inst.resources.cpus:g}",
            "--pull", "never",
            "--workdir", str(inst.manifest.directory),
            "--label", f"netemu.run={self.run}",
        )
        for src, opt in mounts.items():
            cmd += ["-v", f"{src}:{src}:{opt}"]
        for k, v in env.items():
            if k not in ("HOME",):
                cmd += ["-e", f"{k}={v}"]
        return [*cmd, image, "/bin/sh", "-c", _INIT_SH, "netemu-init", *argv]

    def container_pid(self, ra: RunningApp, timeout_s: float = 30.0) -> int:
        """The host pid of a container's main process (waits for it to start)."""
        if ra.container is None:
            return ra.pid
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = subprocess.run(
                podman_argv("inspect", "--format", "{{.State.Pid}}", ra.container),
                capture_output=True, text=True,
            )
            if r.returncode == 0 and r.stdout.strip() not in ("", "0"):
                return int(r.stdout.strip())
            if ra.poll() is not None:
                break
            time.sleep(0.1)
        raise AppError(f"container {ra.container} did not start (see {ra.out_dir}/stderr.log)")

    def poll(self) -> list[RunningApp]:
        """Instances that have ended (and are now finished and recorded)."""
        ended = []
        for ra in self.apps:
            if not ra.finished and ra.poll() is not None:
                self._finish(ra)
                ended.append(ra)
        return ended

    def _terminate(self, ra: RunningApp, grace_s: float) -> None:
        """Ask once (a second SIGTERM can land while Python is exiting from the first,
        after its handler is gone, and kill it)."""
        if ra.stopped_by_runner or ra.poll() is not None:
            return
        ra.stopped_by_runner = True
        if ra.container:
            ra.stopper = subprocess.Popen(
                podman_argv("stop", "-t", str(int(max(1, grace_s))), ra.container),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(ra.pid, signal.SIGTERM)

    def stop(self, ra: RunningApp, grace_s: float = 5.0) -> None:
        """SIGTERM (podman stop for containers), wait ``grace_s``, then kill the group."""
        self._terminate(ra, grace_s)
        now = time.monotonic()
        deadline = now + grace_s + (10 if ra.container else 0)
        # podman stop kills a container that outlives its grace itself, and the exit status
        # then says so; where podman is slow to get there (many containers stopping at once,
        # a VM under a software CPU), wait for it rather than kill the app for podman's delay
        podman_deadline = now + grace_s + PODMAN_STOP_MAX_S

        def waiting() -> bool:
            t = time.monotonic()
            return t < deadline or (ra.stopper is not None and ra.stopper.poll() is None
                                    and t < podman_deadline)

        while ra.poll() is None and waiting():
            time.sleep(0.05)
        if ra.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(ra.pid, signal.SIGKILL)
            ra.cgroup.kill_all()
            ra.proc.wait()
            ra.poll()
        self._finish(ra)

    def stop_all(self, grace_s: float = 5.0) -> None:
        """SIGTERM every instance at once, then wait, then kill what is left."""
        for ra in self.apps:
            self._terminate(ra, grace_s)
        for ra in self.apps:
            self.stop(ra, grace_s)

    def _finish(self, ra: RunningApp) -> None:
        if ra.finished:
            return
        ra.finished = True
        for f in ra._files:
            with contextlib.suppress(Exception):
                f.close()
        ra.cgroup.kill_all()  # anything the app left running in its group
        if ra.container:
            subprocess.run(podman_argv("rm", "-f", ra.container), capture_output=True)
        usage = ra.cgroup.usage()
        inst = ra.instance
        status = ra.exit_status
        record: dict[str, Any] = {
            "app": inst.manifest.name,
            "node": inst.node,
            "mode": inst.mode,
            "argv": list(inst.argv),
            "exit_status": status,
            "signal": -status if status is not None and status < 0 else None,
            "stopped_by_runner": ra.stopped_by_runner,
            "ok": status == 0 or (ra.stopped_by_runner and status in (-signal.SIGTERM, 143, 0)),
            "cpu_s": usage.get("cpu_s"),
            "max_rss_bytes": None,
            "memory_peak_bytes": usage.get("memory_peak_bytes"),
            "oom_kills": usage.get("oom_kills"),
            "limits": {"cpus": inst.resources.cpus, "memory_mb": inst.resources.memory_mb},
            "started_wall": ra.started_wall,
            "ended_wall": ra.finished_wall,
            "wall_s": (ra.finished_wall or time.time()) - ra.started_wall,
            "cgroup": ra.cgroup.rel,
        }
        if ra.rusage is not None and inst.mode == "process":
            record["max_rss_bytes"] = int(ra.rusage.ru_maxrss) * 1024
            if record["cpu_s"] is None:
                record["cpu_s"] = ra.rusage.ru_utime + ra.rusage.ru_stime
        elif record["memory_peak_bytes"] is not None:
            record["max_rss_bytes"] = record["memory_peak_bytes"]
        if ra.container:
            record["container"] = ra.container
            record["image"] = ra.image
        (ra.out_dir / "usage.json").write_text(json.dumps(record, indent=2) + "\n")
        ra.cgroup.remove()

    def close(self) -> None:
        """Stop everything still running and remove every group (safe to call twice)."""
        self.stop_all(self.stop_grace_s)
