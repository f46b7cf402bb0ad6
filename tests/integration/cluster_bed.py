"""A multi-host cluster on one machine, for the cluster tests and bench/bench_cluster.py.

Each "host" is a network namespace with its own underlay address on a bridge in the root
namespace (``10.<net>.0.<i+1>/24``; the root namespace is ``.254``), running one Ray node:
``ray start --head`` in the first, ``ray start --address`` in the others, each started
with ``ip netns exec`` so that the node's processes (raylet, workers, the actors) live in
that host's namespace and reach the others only over the bridge, as on real machines.

Ray has no client in the root namespace: a driver runs on a node, so :meth:`Bed.run`
starts a command inside a host (host 0 is the head).

Clean-up (:meth:`Bed.stop`, also on failure as a context manager): every process in a
host namespace is killed by pid (``ip netns pids``), then the namespaces, the bridge and
the Ray temp directories are removed; :meth:`Bed.leftovers` says what is still there.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

RAY = str(Path(sys.executable).with_name("ray"))
RAY_PORT = 6379
UNDERLAY_MTU = 1600  # VXLAN adds 50 bytes to the emulated links' 1500


def cgroup_mount_commands(mounts: str | None = None) -> list[str]:
    """Shell commands that mount the cgroup file systems under /sys/fs/cgroup as this
    machine has them (``/proc/self/mounts``: a tmpfs with v1 hierarchies, or cgroup2)."""
    if mounts is None:
        mounts = Path("/proc/self/mounts").read_text()
    cmds: list[str] = []
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 4 or not parts[1].startswith("/sys/fs/cgroup"):
            continue
        _dev, where, fstype, opts = parts[:4]
        if fstype not in ("tmpfs", "cgroup", "cgroup2"):
            continue
        keep = [o for o in opts.split(",") if o not in ("rw", "ro", "relatime", "nosuid",
                                                         "nodev", "noexec")
                and not o.startswith(("mode=", "size=", "nr_inodes=", "uid=", "gid="))]
        o = f" -o {','.join(keep)}" if keep and fstype == "cgroup" else ""
        cmds.append(f"mkdir -p {where} && mount -t {fstype}{o} {fstype} {where}")
    return cmds


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


@dataclass
class Host:
    index: int
    ns: str
    addr: str  # underlay address (no prefix length)
    temp_dir: Path


class Bed:
    """``n`` hosts on one bridge, each a Ray node; the head is host 0."""

    def __init__(self, n: int = 2, *, cpus_per_host: int = 1, tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(2)
        self.net = 200 + int(self.tag, 16) % 50  # 10.200–249.0.0/24
        self.bridge = f"nxc{self.tag}br"
        self.root = Path(f"/tmp/nxc{self.tag}")  # short: Ray's unix socket paths
        self.cpus_per_host = cpus_per_host
        self.hosts = [Host(i, f"nxc{self.tag}h{i}", f"10.{self.net}.0.{i + 1}",
                           self.root / f"h{i}") for i in range(n)]
        self.ray_start_s: list[float] = []
        self.run_prefix = f"c{self.tag}"  # emulations on the bed: run names start so

    @property
    def address(self) -> str:
        """The cluster's address as ``ray start --address`` and ``--cluster`` take it."""
        return f"{self.hosts[0].addr}:{RAY_PORT}"

    def __enter__(self) -> Bed:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.root.mkdir(mode=0o700)
        _ip("link", "add", self.bridge, "mtu", str(UNDERLAY_MTU), "type", "bridge")
        _ip("addr", "add", f"10.{self.net}.0.254/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for h in self.hosts:
            _ip("netns", "add", h.ns)
            veth = f"nxc{self.tag}v{h.index}"
            _ip("link", "add", veth, "mtu", str(UNDERLAY_MTU), "type", "veth", "peer", "name",
                "eth0", "mtu", str(UNDERLAY_MTU), "netns", h.ns)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", h.ns, "addr", "add", f"{h.addr}/24", "dev", "eth0")
            _ip("-n", h.ns, "link", "set", "eth0", "up")
            _ip("-n", h.ns, "link", "set", "lo", "up")
            h.temp_dir.mkdir(parents=True)
        for h in self.hosts:
            self._ray_start(h)

    def _ray_start(self, h: Host) -> None:
        argv = [RAY, "start", f"--node-ip-address={h.addr}", f"--num-cpus={self.cpus_per_host}",
                "--disable-usage-stats", f"--temp-dir={h.temp_dir}"]
        if h.index == 0:
            argv += ["--head", f"--port={RAY_PORT}", "--include-dashboard=false"]
        else:
            argv += [f"--address={self.address}"]
        # `ip netns exec` gives the host a /sys of its own, without the cgroup file
        # systems: mount them again there, as the machine has them, so that the Ray
        # node's processes (apps in cgroups) find them as on a real host
        # (best effort: where it cannot mount them, the apps' cgroups fail, not Ray)
        script = "".join(f"({c}) 2>/dev/null || true; " for c in cgroup_mount_commands())
        script += 'exec "$@"'
        t0 = time.monotonic()
        p = self.exec(h.index, ["sh", "-c", script, "sh", *argv], timeout=120)
        self.ray_start_s.append(time.monotonic() - t0)
        if p.returncode != 0:
            raise RuntimeError(f"ray start on {h.ns} failed: {p.stdout[-2000:]}{p.stderr[-2000:]}")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        return env

    def exec(self, index: int, argv: list[str], *, timeout: float = 300,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in host ``index``'s namespace and wait for it."""
        return subprocess.run(["ip", "netns", "exec", self.hosts[index].ns, *argv],
                              capture_output=True, text=True, timeout=timeout,
                              env=env or self.env())

    def run(self, argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` on the head (host 0), where a Ray driver can connect."""
        return self.exec(0, argv, **kw)  # type: ignore[arg-type]

    def pids(self) -> list[int]:
        out: list[int] = []
        for h in self.hosts:
            p = _ip("netns", "pids", h.ns, check=False)
            out += [int(x) for x in p.stdout.split()]
        return out

    def stop(self) -> None:
        """Kill every process of the hosts (by pid), remove namespaces, bridge and files."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while pids and time.monotonic() < deadline:
                pids = [p for p in pids if Path(f"/proc/{p}").exists()]
                time.sleep(0.1)
            if not pids:
                break
        self._clean_runs()
        for h in self.hosts:  # the veth first: a namespace's devices go asynchronously
            _ip("link", "del", f"nxc{self.tag}v{h.index}", check=False)
            _ip("netns", "del", h.ns, check=False)
        _ip("link", "del", self.bridge, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _clean_runs(self) -> None:
        """What the hosts' emulations left when their actors were killed (a failed test):
        `netemu clean` for the runs named with this bed's prefix."""
        from netemu.emulator.registry import clean_run, list_runs

        for info in list_runs():
            if info.run.startswith(self.run_prefix):
                clean_run(info)

    def leftovers(self) -> list[str]:
        """What is still there of this bed: namespaces, links, processes, files."""
        left: list[str] = []
        names = _ip("netns", "list", check=False).stdout
        left += [line.split()[0] for line in names.splitlines()
                 if line.startswith((f"nxc{self.tag}", self.run_prefix))]
        left += [f"/dev/shm/{n}" for n in os.listdir("/dev/shm")
                 if n.startswith(f"netemu-{self.run_prefix}")]
        from netemu.emulator.registry import RUN_ROOT

        left += [str(p) for p in RUN_ROOT.glob(f"{self.run_prefix}*")]
        links = _ip("-o", "link", "show", check=False).stdout
        left += [f"link {ln.split(':')[1].strip()}" for ln in links.splitlines()
                 if f"nxc{self.tag}" in ln]
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            try:
                cmd = (pid_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if str(self.root).encode() in cmd or self.address.encode() in cmd:
                left.append(f"pid {pid_dir.name}")
        if self.root.exists():
            left.append(str(self.root))
        return left
