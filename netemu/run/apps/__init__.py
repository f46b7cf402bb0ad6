"""Apps: read ``apps/<name>/manifest.yaml`` and run each app inside emulated hosts.

An app runs on each node its manifest (or the scenario) selects, in one of two modes:

- ``process``: a plain process entered into the host's network namespace (``nsenter``)
  and placed in a cgroup v1 group of its own, ``<controller>/netemu/<run>/<app>.<node>``,
  whose ``cpu.cfs_quota_us`` and ``memory.limit_in_bytes`` carry the manifest's
  ``resources`` (cgroup v2 ``cpu.max``/``memory.max`` where the machine is v2-only);
- ``container``: a podman container joined to the host's network namespace
  (``--network ns:/proc/<pid>/ns/net``) with ``--cpus``/``--memory`` from the manifest, its
  cgroup under the same per-app group. Images are built here, never pulled: a base image
  imported from a minimal tree of this machine's own Python (cached by a hash of its
  contents), with the project and its virtual environment mounted read-only, and an
  optional ``containerfile`` built on top of it.

Each instance writes ``stdout.log``, ``stderr.log`` and ``usage.json`` (exit status,
cpu_s, max_rss_bytes, limits) under ``<run_dir>/apps/<app>/<node>/``.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from netemu.errors import InputError, NetemuError

MODES = ("process", "container")
DEFAULT_CPUS = 1.0
DEFAULT_MEMORY_MB = 256
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AppError(NetemuError):
    """An app could not be started or stopped."""


# --------------------------------------------------------------------------- YAML with lines


def load_yaml_with_lines(text: str, source: str) -> tuple[Any, dict[tuple, int]]:
    """Parse YAML and return (data, {path tuple: 1-based line}) so errors can name lines."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise InputError(
            f"not valid YAML: {getattr(e, 'problem', None) or e}",
            source=source,
            line=mark.line + 1 if mark else None,
        ) from None
    lines: dict[tuple, int] = {}

    def walk(n: Any, path: tuple) -> None:
        if n is None:
            return
        lines[path] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value
                lines[path + (key,)] = k.start_mark.line + 1
                walk(v, path + (key,))
                lines[path + (key,)] = k.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))

    walk(node, ())
    data = yaml.safe_load(text) if node is not None else None
    return data, lines


class _Fields:
    """Field validation that names file, line and dotted field in every error."""

    def __init__(self, source: str, lines: Mapping[tuple, int], base: tuple = ()) -> None:
        self.source = source
        self.lines = lines
        self.base = base

    def error(self, path: tuple, message: str) -> InputError:
        full = self.base + path
        line = None
        for i in range(len(full), -1, -1):
            if full[:i] in self.lines:
                line = self.lines[full[:i]]
                break
        dotted = ".".join(str(p) for p in full) or None
        return InputError(message, source=self.source, line=line, field=dotted)


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Resources:
    """CPU and memory an app may use on its node: ``cpus`` cores (CFS quota), ``memory_mb``
    MiB (hard limit)."""

    cpus: float = DEFAULT_CPUS
    memory_mb: int = DEFAULT_MEMORY_MB

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * 1024 * 1024


@dataclass(frozen=True)
class AppManifest:
    """An app bundle: what to run, where, with which limits."""

    name: str
    directory: Path
    command: tuple[str, ...]
    description: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    resources: Resources = Resources()
    nodes: tuple[str, ...] = ()
    mode: str = "process"
    containerfile: Path | None = None
    args: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)


_MANIFEST_KEYS = {
    "name",
    "description",
    "command",
    "environment",
    "resources",
    "nodes",
    "mode",
    "containerfile",
    "args",
    "params",
}


def _str_list(f: _Fields, path: tuple, value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise f.error(path, f"{what} must be a list of strings")
    return tuple(str(v) for v in value)


def _resources(f: _Fields, path: tuple, value: Any, base: Resources) -> Resources:
    if value is None:
        return base
    if not isinstance(value, dict):
        raise f.error(path, "must be a mapping with cpus and memory_mb")
    unknown = set(value) - {"cpus", "memory_mb"}
    if unknown:
        raise f.error(path + (sorted(unknown)[0],), "unknown key (expected cpus, memory_mb)")
    cpus, mem = base.cpus, base.memory_mb
    if "cpus" in value:
        c = value["cpus"]
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.01 <= c <= 1024:
            raise f.error(path + ("cpus",), f"must be a number of CPUs in [0.01, 1024], got {c!r}")
        cpus = float(c)
    if "memory_mb" in value:
        m = value["memory_mb"]
        if isinstance(m, bool) or not isinstance(m, int) or not 4 <= m <= 1 << 20:
            raise f.error(
                path + ("memory_mb",), f"must be a whole number of MiB in [4, 1048576], got {m!r}"
            )
        mem = m
    return Resources(cpus=cpus, memory_mb=mem)


def _environment(f: _Fields, path: tuple, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise f.error(path, "must be a mapping of NAME: value")
    out = {}
    for k, v in value.items():
        if not isinstance(k, str) or not _ENV_RE.match(k):
            raise f.error(path + (k,), "not a valid environment variable name")
        if isinstance(v, (dict, list)) or v is None:
            raise f.error(path + (k,), "value must be a string or number")
        out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def _args(f: _Fields, path: tuple, value: Any) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise f.error(path, "must map node names (or selectors) to argument lists")
    return {str(k): _str_list(f, path + (k,), v, "arguments") for k, v in value.items()}


def _nodes(f: _Fields, path: tuple, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return _str_list(f, path, value, "nodes")


def load_manifest(directory: Path) -> AppManifest:
    """Read and validate ``<directory>/manifest.yaml``; errors name file, line and field."""
    directory = Path(directory)
    path = directory / "manifest.yaml"
    if not path.is_file():
        raise InputError(f"app {directory.name!r} has no manifest.yaml", source=str(directory))
    data, lines = load_yaml_with_lines(path.read_text(), str(path))
    f = _Fields(str(path), lines)
    if not isinstance(data, dict):
        raise f.error((), "manifest must be a mapping")
    for k in data:
        if k not in _MANIFEST_KEYS:
            raise f.error((k,), f"unknown key (expected one of {', '.join(sorted(_MANIFEST_KEYS))})")
    name = data.get("name", directory.name)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise f.error(("name",), "must be 1-40 lower-case letters, digits, '-' or '_'")
    if "command" not in data:
        raise f.error((), "command is required (the argv to run inside the host)")
    command = _str_list(f, ("command",), data["command"], "command")
    if not command:
        raise f.error(("command",), "must not be empty")
    mode = data.get("mode", "process")
    if mode not in MODES:
        raise f.error(("mode",), f"must be one of {', '.join(MODES)}, got {mode!r}")
    containerfile = None
    if data.get("containerfile") is not None:
        cf = data["containerfile"]
        if not isinstance(cf, str):
            raise f.error(("containerfile",), "must be a path relative to the app folder")
        containerfile = (directory / cf).resolve()
        if not containerfile.is_file():
            raise f.error(("containerfile",), f"file not found: {containerfile}")
    desc = data.get("description", "")
    if not isinstance(desc, str):
        raise f.error(("description",), "must be a string")
    params = data.get("params") or {}
    if not isinstance(params, dict):
        raise f.error(("params",), "must be a mapping")
    return AppManifest(
        name=name,
        directory=directory.resolve(),
        command=command,
        description=desc.strip(),
        environment=_environment(f, ("environment",), data.get("environment")),
        resources=_resources(f, ("resources",), data.get("resources"), Resources()),
        nodes=_nodes(f, ("nodes",), data.get("nodes")),
        mode=mode,
        containerfile=containerfile,
        args=_args(f, ("args",), data.get("args")),
        params=params,
    )


def find_apps_dir(start: Path | None = None) -> Path:
    """The apps/ folder: next to the scenario's project, the cwd, or the source tree."""
    candidates = []
    if start is not None:
        for p in [Path(start).resolve(), *Path(start).resolve().parents]:
            candidates.append(p / "apps")
    candidates += [Path.cwd() / "apps", Path(__file__).resolve().parent.parent / "apps"]
    for c in candidates:
        if c.is_dir() and any((d / "manifest.yaml").is_file() for d in c.iterdir() if d.is_dir()):
            return c
    raise InputError("no apps/ folder with app manifests found", source=str(start or Path.cwd()))


# --------------------------------------------------------------------------- selection


@dataclass(frozen=True)
class NodeInfo:
    """What selectors need to know about a node: its name and kind."""

    name: str
    kind: str  # "satellite", "ground", "other"


_KIND_SELECTORS = {
    "satellites": {"satellite"},
    "satellite": {"satellite"},
    "sats": {"satellite"},
    "ground": {"ground"},
    "grounds": {"ground"},
    "ground-stations": {"ground"},
    "stations": {"ground"},
    "all": {"satellite", "ground", "other"},
    "*": {"satellite", "ground", "other"},
}


def select_nodes(selectors: Iterable[str], nodes: Sequence[NodeInfo]) -> list[str]:
    """Node names matched by selectors, in the nodes' order: a name, a kind
    (``satellites``, ``ground``, ``all``) or a glob (``sat-*``)."""
    chosen: set[str] = set()
    names = {n.name for n in nodes}
    for sel in selectors:
        if sel in names:
            chosen.add(sel)
        elif sel in _KIND_SELECTORS:
            chosen |= {n.name for n in nodes if n.kind in _KIND_SELECTORS[sel]}
        else:
            hits = {n.name for n in nodes if fnmatch.fnmatchcase(n.name, sel)}
            if not hits:
                raise KeyError(sel)
            chosen |= hits
    return [n.name for n in nodes if n.name in chosen]


@dataclass(frozen=True)
class AppInstance:
    """One app on one node, with everything needed to start it."""

    manifest: AppManifest
    node: str
    argv: tuple[str, ...]
    environment: Mapping[str, str]
    resources: Resources
    mode: str

    @property
    def key(self) -> str:
        return f"{self.manifest.name}.{self.node}"


def plan_apps(
    section: Any,
    nodes: Sequence[NodeInfo],
    *,
    apps_dir: Path,
    source: str = "scenario",
    lines: Mapping[tuple, int] | None = None,
    base: tuple = ("apps",),
) -> list[AppInstance]:
    """Instances for a scenario's ``apps:`` section.

    Accepted forms: a list of app names; a list of ``{name: APP, nodes, args, environment,
    resources, mode, params}``; or a mapping ``APP: {overrides}``. Overrides replace the
    manifest's values; ``params`` reach the app as JSON in ``NETEMU_APP_PARAMS``.
    """
    f = _Fields(source, lines or {}, base)
    if section is None:
        return []
    entries: list[tuple[tuple, str, dict]] = []
    if isinstance(section, dict):
        for name, ov in section.items():
            if ov is not None and not isinstance(ov, dict):
                raise f.error((name,), "overrides must be a mapping (or empty)")
            entries.append(((name,), str(name), dict(ov or {})))
    elif isinstance(section, list):
        for i, item in enumerate(section):
            if isinstance(item, str):
                entries.append(((i,), item, {}))
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                ov = {k: v for k, v in item.items() if k != "name"}
                entries.append(((i,), item["name"], ov))
            else:
                raise f.error((i,), "each entry must be an app name or a mapping with name")
    else:
        raise f.error((), "must be a list of apps or a mapping of app name to overrides")

    allowed = {"nodes", "args", "environment", "resources", "mode", "params", "command"}
    out: list[AppInstance] = []
    for path, name, ov in entries:
        for k in ov:
            if k not in allowed:
                raise f.error(path + (k,), f"unknown key (expected {', '.join(sorted(allowed))})")
        app_dir = Path(apps_dir) / name
        if not (app_dir / "manifest.yaml").is_file():
            known = sorted(d.name for d in Path(apps_dir).iterdir() if (d / "manifest.yaml").is_file())
            raise f.error(path, f"no app named {name!r} in {apps_dir} (have: {', '.join(known)})")
        m = load_manifest(app_dir)
        if "mode" in ov and ov["mode"] not in MODES:
            raise f.error(path + ("mode",), f"must be one of {', '.join(MODES)}")
        command = m.command
        if "command" in ov:
            command = _str_list(f, path + ("command",), ov["command"], "command")
        m = replace(
            m,
            command=command,
            nodes=_nodes(f, path + ("nodes",), ov["nodes"]) if "nodes" in ov else m.nodes,
            args={**m.args, **_args(f, path + ("args",), ov.get("args"))},
            environment={**m.environment, **_environment(f, path + ("environment",), ov.get("environment"))},
            resources=_resources(f, path + ("resources",), ov.get("resources"), m.resources),
            mode=ov.get("mode", m.mode),
            params={**m.params, **(ov.get("params") or {})},
        )
        if not m.nodes:
            raise f.error(path + ("nodes",), f"app {name!r} selects no nodes (set nodes:)")
        try:
            targets = select_nodes(m.nodes, nodes)
        except KeyError as e:
            raise f.error(path + ("nodes",), f"selector {e.args[0]!r} matches no node") from None
        for node in targets:
            extra: tuple[str, ...] = ()
            for sel, a in m.args.items():
                try:
                    if node in select_nodes([sel], nodes):
                        extra = a
                except KeyError:
                    continue
            env = dict(m.environment)
            if m.params:
                env["NETEMU_APP_PARAMS"] = json.dumps(m.params, sort_keys=True)
            out.append(
                AppInstance(
                    manifest=m,
                    node=node,
                    argv=m.command + extra,
                    environment=env,
                    resources=m.resources,
                    mode=m.mode,
                )
            )
    return out


# --------------------------------------------------------------------------- cgroups


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


# --------------------------------------------------------------------------- images


PROJECT_ROOT = Path(__file__).resolve().parent.parent
_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter",
                "turtledemo", "ensurepip", "lib2to3", "config-3", "__phello__"}


def _venv_root() -> Path:
    return Path(sys.prefix).resolve()


def _interpreter_chain() -> list[Path]:
    """The venv's python and every symlink hop to the real interpreter."""
    chain = []
    p = Path(sys.executable)
    seen = set()
    while p not in seen:
        seen.add(p)
        chain.append(p)
        if not p.is_symlink():
            break
        target = Path(os.readlink(p))
        p = target if target.is_absolute() else (p.parent / target)
    return chain


def _ldd(paths: Iterable[Path]) -> set[Path]:
    libs: set[Path] = set()
    batch = [str(p) for p in paths]
    for i in range(0, len(batch), 200):
        r = subprocess.run(["ldd", *batch[i : i + 200]], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            line = line.strip()
            if "=>" in line:
                target = line.split("=>", 1)[1].strip().split(" (")[0].strip()
                if target.startswith("/"):
                    libs.add(Path(os.path.normpath(target)))
            elif line.startswith("/"):
                libs.add(Path(os.path.normpath(line.split(" (")[0])))
    return libs


def _cached_ldd(paths: Sequence[Path]) -> set[Path]:
    """``_ldd`` with its answer cached (keyed by the inputs' paths, sizes and mtimes):
    running ldd over a venv's hundreds of extension modules takes seconds."""
    key = _files_digest(paths)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "netemu"
    f = cache / f"ldd-{key}.json"
    with contextlib.suppress(OSError, ValueError):
        return {Path(p) for p in json.loads(f.read_text())}
    libs = _ldd(paths)
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(sorted(map(str, libs))))
    return libs


def base_image_files() -> list[Path]:
    """Files for the base image: the real interpreter, its stdlib (no site-packages), the
    shared libraries it and the venv's extension modules load, and /bin/sh."""
    venv = _venv_root()
    chain = _interpreter_chain()
    real = chain[-1].resolve()
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    files: list[Path] = [p for p in chain if not str(p).startswith(str(venv))]
    files.append(real)
    sos = []
    for p in stdlib.rglob("*"):
        rel = p.relative_to(stdlib).parts
        if rel and (rel[0] in _STDLIB_SKIP or rel[0].startswith("config-")):
            continue
        if p.is_file() or p.is_symlink():
            files.append(p)
            if p.suffix == ".so":
                sos.append(p)
    venv_sos = sorted(p for p in venv.rglob("*.so*") if p.is_file())
    sh = Path("/bin/sh").resolve()
    files.append(Path("/bin/sh"))
    files.append(sh)
    libs = _cached_ldd([real, sh, *sos, *venv_sos])
    for lib in sorted(libs):
        if str(lib).startswith(str(venv)):
            continue  # mounted with the venv
        files.append(lib)
        if lib.is_symlink():
            files.append(lib.resolve())
    for extra in ("/lib64/ld-linux-x86-64.so.2", "/etc/ld.so.cache", "/etc/nsswitch.conf",
                  "/etc/localtime"):
        if Path(extra).exists():
            files.append(Path(extra))
    seen: set[str] = set()
    out = []
    for p in files:
        s = str(p)
        if s not in seen:
            seen.add(s)
            out.append(p)
    return out


def _files_digest(files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(files, key=str):
        try:
            st = p.lstat()
        except OSError:
            continue
        link = os.readlink(p) if p.is_symlink() else ""
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_mode}\0{link}\n".encode())
    return h.hexdigest()[:16]


def _podman(*args: str) -> list[str]:
    return ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args]


def _image_exists(tag: str) -> bool:
    return subprocess.run(_podman("image", "exists", tag), capture_output=True).returncode == 0


def _tar_dir(tar: tarfile.TarFile, path: Path, done: set[str]) -> None:
    """Add ``path`` and its ancestors: real directories as directories, and a symlinked
    ancestor (``/lib -> usr/lib`` on merged-/usr systems) as the same symlink."""
    cur = Path("/")
    for part in path.parts[1:]:
        cur = cur / part
        key = str(cur)
        if key in done:
            if cur.is_symlink():
                cur = cur.resolve()
            continue
        done.add(key)
        ti = tarfile.TarInfo(key.lstrip("/"))
        if cur.is_symlink():
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink(cur)
            tar.addfile(ti)
            target = cur.resolve()
            _tar_dir(tar, target, done)
            cur = target
        else:
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            tar.addfile(ti)


def build_base_image(log: io.TextIOBase | None = None) -> str:
    """Import (once; cached by content hash) the base image and return its tag."""
    if not shutil.which("podman"):
        raise AppError("podman not found: install Debian's podman and runc (scripts/dev setup)")
    files = base_image_files()
    tag = f"localhost/netemu-base:{_files_digest(files)}"
    if _image_exists(tag):
        return tag
    buf = io.BytesIO()
    done: set[str] = set()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("tmp", "proc", "sys", "dev", "run", "etc", "root", "var/tmp"):
            ti = tarfile.TarInfo(d)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o1777 if "tmp" in d else 0o755
            tar.addfile(ti)
            done.add("/" + d)
        for name, text in (
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n"),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
            ("etc/hosts", "127.0.0.1 localhost\n"),
        ):
            data = text.encode()
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            tar.addfile(ti, io.BytesIO(data))
        for p in files:
            if str(p) in ("/etc/passwd", "/etc/group", "/etc/hosts"):
                continue
            _tar_dir(tar, p.parent, done)
            # store each file under its parent's real path (the symlinked spelling of the
            # parent is in the tar as a link)
            arc = str(p.parent.resolve() / p.name)
            if arc in done:
                continue
            done.add(arc)
            try:
                tar.add(str(p), arcname=arc.lstrip("/"), recursive=False)
            except OSError:
                continue
    buf.seek(0)
    r = subprocess.run(
        _podman("import", "--message", "netemu base (host python)", "-", tag),
        input=buf.getvalue(),
        capture_output=True,
    )
    if r.returncode != 0:
        raise AppError(f"podman import failed: {r.stderr.decode(errors='replace').strip()}")
    if log:
        log.write(f"built {tag} ({len(files)} files, {len(buf.getvalue()) >> 20} MiB)\n")
    return tag


def build_app_image(manifest: AppManifest, base_tag: str) -> str:
    """The image for a container app: the base, or its containerfile built on top of it
    (``FROM`` is replaced by the base; ``RUN`` steps use chroot isolation)."""
    if manifest.containerfile is None:
        return base_tag
    h = hashlib.sha256(base_tag.encode())
    for p in sorted(manifest.directory.rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(manifest.directory)).encode() + b"\0" + p.read_bytes())
    tag = f"localhost/netemu-app-{manifest.name}:{h.hexdigest()[:16]}"
    if _image_exists(tag):
        return tag
    r = subprocess.run(
        _podman(
            "build", "--isolation", "chroot", "--pull=never", "--from", base_tag,
            "-f", str(manifest.containerfile), "-t", tag, str(manifest.directory),
        ),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise AppError(f"building {manifest.name}'s containerfile failed:\n{r.stderr[-1500:]}")
    return tag


# --------------------------------------------------------------------------- running


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
        "VIRTUAL_ENV": str(_venv_root()),
    }


# sh joins the cgroup(s) named before "--", then becomes the app: the app and everything
# it forks are accounted and limited from their first instruction.
_JOIN_SH = 'while [ "$1" != "--" ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'


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
    ``env`` holds netemu's variables (run, node, MQTT, DTN socket, clock) for the node.
    """

    def __init__(self, run: str, run_dir: Path, *, mounts: Sequence[str] = ()) -> None:
        self.run = run
        self.run_dir = Path(run_dir)
        self.apps: list[RunningApp] = []
        self.mounts = list(mounts)
        self._base_tag: str | None = None

    def out_dir(self, inst: AppInstance) -> Path:
        return self.run_dir / "apps" / inst.manifest.name / inst.node

    def prepare_images(self, instances: Iterable[AppInstance]) -> dict[str, str]:
        """Build (or find cached) images for every container instance, before the clock
        starts: image builds must not eat into the emulated window."""
        tags = {}
        for inst in instances:
            if inst.mode != "container" or inst.manifest.name in tags:
                continue
            if self._base_tag is None:
                self._base_tag = build_base_image()
            tags[inst.manifest.name] = build_app_image(inst.manifest, self._base_tag)
        self._tags = tags
        return tags

    def start(self, inst: AppInstance, netns_path: str, env: Mapping[str, str]) -> RunningApp:
        out = self.out_dir(inst)
        out.mkdir(parents=True, exist_ok=True)
        full_env = {**base_environment(), **env, **inst.environment,
                    "NETEMU_APP_DIR": str(out.resolve()), "NETEMU_APP": inst.manifest.name,
                    "NETEMU_NODE": inst.node}
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
            image = getattr(self, "_tags", {}).get(inst.manifest.name)
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

    def _podman_run(self, inst, name, image, netns_path, env, cg, argv, out) -> list[str]:
        venv = str(_venv_root())
        # the run directory read-only (plan.json, other apps' outputs), the app's own
        # output folder writable on top of it
        mounts = {str(PROJECT_ROOT): "ro", venv: "ro", str(self.run_dir.resolve()): "ro",
                  str(out.resolve()): "rw", str(inst.manifest.directory): "ro"}
        for m in self.mounts:
            mounts[m] = "rw"
        for k in ("NETEMU_MQTT_SOCKET", "NETEMU_DTN_SOCKET"):
            if env.get(k):
                mounts[str(Path(env[k]).parent)] = "rw"
        cmd = _podman(
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
                _podman("inspect", "--format", "{{.State.Pid}}", ra.container),
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
            subprocess.Popen(_podman("stop", "-t", str(int(max(1, grace_s))), ra.container),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(ra.pid, signal.SIGTERM)

    def stop(self, ra: RunningApp, grace_s: float = 5.0) -> None:
        """SIGTERM (podman stop for containers), wait ``grace_s``, then kill the group."""
        self._terminate(ra, grace_s)
        deadline = time.monotonic() + grace_s + (10 if ra.container else 0)
        while ra.poll() is None and time.monotonic() < deadline:
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
            subprocess.run(_podman("rm", "-f", ra.container), capture_output=True)
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
        self.stop_all()
