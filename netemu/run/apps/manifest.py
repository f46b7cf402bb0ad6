"""App manifests: ``apps/<name>/manifest.yaml`` read and checked into an :class:`AppManifest`.

Every error names the file, line and field, so a typo in a manifest costs seconds.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netemu.errors import InputError, NetemuError

# the source tree (netemu/run/apps/manifest.py → the repository root)
PROJECT_ROOT = Path(__file__).resolve().parents[3]
MODES = ("process", "container")
DEFAULT_CPUS = 1.0
DEFAULT_MEMORY_MB = 256
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AppError(NetemuError):
    """An app could not be started or stopped."""


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
    candidates += [Path.cwd() / "apps", PROJECT_ROOT / "apps"]
    for c in candidates:
        if c.is_dir() and any((d / "manifest.yaml").is_file() for d in c.iterdir() if d.is_dir()):
            return c
    raise InputError("no apps/ folder with app manifests found", source=str(start or Path.cwd()))
