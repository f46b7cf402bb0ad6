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

from netemu.config import Fields, describe, load_yaml
from netemu.errors import InputError, NetemuError
from netemu.run.apps.model import Dim, ModelFileError, model_misfit, read_model_io

# the source tree (netemu/run/apps/manifest.py → the repository root)
PROJECT_ROOT = Path(__file__).resolve().parents[3]
MODES = ("process", "container")
DEFAULT_CPUS = 1.0
DEFAULT_MEMORY_MB = 256
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class AppError(NetemuError):
    """An app could not be started or stopped."""


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
    model: Path | None = None
    """The app's ONNX model file (``model:``), passed to it as ``NETEMU_APP_MODEL``."""
    image: ImageSource | None = None
    """Where a container app's image comes from (``image:``); None: the base image."""


MANIFEST_KEYS = ("name", "description", "command", "environment", "resources", "nodes",
                 "mode", "containerfile", "args", "params", "model", "model_io", "image",
                 "pull")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst", ".oci")


@dataclass(frozen=True)
class ImageSource:
    """A container app's image (``image:``): a tag in podman's local storage, an archive
    for ``podman load`` (``archive``), or a registry image that may be pulled only when
    the manifest says ``pull: true``. ``where`` is the manifest's file and line."""

    reference: str
    archive: Path | None = None
    pull: bool = False
    where: str = ""


def argv_field(f: Fields, key: str) -> tuple[str, ...]:
    """An argument list: a list of words (numbers become text) or one shell-quoted string."""
    value = f.get(key)
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        raise f.error(f"expected a list of words or one command line, got {describe(value)}",
                      key)
    return tuple(str(v) for v in value)


def resources_field(f: Fields, base: Resources) -> Resources:
    """``resources: {cpus, memory_mb}`` (``f`` is the section); what is absent keeps ``base``."""
    if f.is_none():
        return base
    f.check_keys(("cpus", "memory_mb"))
    cpus = f.number("cpus", default=base.cpus, lo=0.01, hi=1024)
    memory_mb = f.integer("memory_mb", default=base.memory_mb, lo=4, hi=1 << 20)
    return Resources(cpus=float(cpus), memory_mb=int(memory_mb))  # type: ignore[arg-type]


def environment_field(f: Fields) -> dict[str, str]:
    """``environment: {NAME: value}`` (``f`` is the section); true/false become lower case."""
    if f.is_none():
        return {}
    if not isinstance(f.value, dict):
        raise f.error(f"expected a mapping of NAME: value, got {describe(f.value)}")
    out = {}
    for k in f:
        if not _ENV_RE.match(k):
            raise f.error("not a valid environment variable name", k)
        v = f.get(k)
        if isinstance(v, (dict, list)) or v is None:
            raise f.error(f"expected text or a number, got {describe(v)}", k)
        out[k] = str(v).lower() if isinstance(v, bool) else str(v)
    return out


def args_field(f: Fields) -> dict[str, tuple[str, ...]]:
    """``args: {node or selector: [extra arguments]}`` (``f`` is the section)."""
    if f.is_none():
        return {}
    if not isinstance(f.value, dict):
        raise f.error("must map node names (or selectors) to argument lists, got "
                      f"{describe(f.value)}")
    return {k: argv_field(f, k) for k in f}


def nodes_field(f: Fields, key: str = "nodes") -> tuple[str, ...]:
    """``nodes:``: one selector or a list of them (absent or empty: none)."""
    if f.get(key) is None:
        return ()
    return tuple(f.string_list(key))


def params_field(f: Fields, key: str = "params") -> dict[str, Any]:
    """``params:``: a mapping passed to the app as JSON (absent or empty: none)."""
    value = f.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise f.error(f"expected a mapping, got {describe(value)}", key)
    return dict(value)


def shape_field(f: Fields, key: str) -> tuple[Dim, ...]:
    """A tensor shape: a list of sizes (whole numbers >= 1) or names of free sizes."""
    value = f.get(key)
    if (not isinstance(value, list) or not value
            or not all(isinstance(d, str) or (isinstance(d, int) and not isinstance(d, bool)
                                              and d >= 1) for d in value)):
        raise f.error("expected a shape: a list of sizes (>= 1) or names of free sizes, "
                      f"such as [batch, 1, 64, 64]; got {describe(value)}", key)
    return tuple(value)


def model_field(f: Fields, directory: Path) -> Path | None:
    """``model:`` (a file in the app folder) checked against ``model_io: {input, output}``:
    a model whose shapes the app cannot use is refused at the ``model:`` line."""
    io = f.child("model_io")
    if f.get("model") is None:
        if not io.is_none():
            raise f.error("model_io without model: name the ONNX file (model: x.onnx)", "model_io")
        return None
    path = (directory / str(f.string("model"))).resolve()
    if not path.is_file():
        raise f.error(f"model file not found: {path}", "model")
    try:
        declared = read_model_io(path)
    except ModelFileError as e:
        raise f.error(f"{path.name}: {e}", "model") from None
    if not io.is_none():
        io.check_keys(("input", "output"), required=("input", "output"))
        why = model_misfit(declared, shape_field(io, "input"), shape_field(io, "output"))
        if why:
            raise f.error(f"{path.name} does not fit this app: {why} (model_io, line "
                          f"{f.line_of('model_io')})", "model")
    return path


def image_field(f: Fields, directory: Path, mode: str) -> ImageSource | None:
    """``image:`` (a local tag, a registry image, or an archive file in the app folder)
    and ``pull:`` (may netemu pull a missing registry image? default false)."""
    pull = bool(f.boolean("pull", default=False))
    if f.get("image") is None:
        if "pull" in f:
            raise f.error("pull without image: name the image to pull (image: REF)", "pull")
        return None
    ref = str(f.string("image")).strip()
    if not ref or any(c.isspace() for c in ref):
        raise f.error("expected an image reference or an archive file name", "image")
    if "mode" in f and mode != "container":
        raise f.error("an image runs as a container: set mode: container (or leave mode out)",
                      "image")
    where = f"{f.source}:{f.line_of('image')}"
    if ref.endswith(ARCHIVE_SUFFIXES) or (directory / ref).is_file():
        archive = (directory / ref).resolve()
        if not archive.is_file():
            raise f.error(f"image archive not found: {archive}", "image")
        if pull:
            raise f.error("an archive is loaded, never pulled: leave pull out", "pull")
        return ImageSource(ref, archive=archive, where=where)
    return ImageSource(ref, pull=pull, where=where)


def load_manifest(directory: Path) -> AppManifest:
    """Read and validate ``<directory>/manifest.yaml``; errors name file, line and field."""
    directory = Path(directory)
    path = directory / "manifest.yaml"
    if not path.is_file():
        raise InputError(f"app {directory.name!r} has no manifest.yaml", source=str(directory))
    f = Fields(load_yaml(path), source=str(path), line=1)
    f.check_keys(MANIFEST_KEYS)
    name = f.string("name", default=directory.name)
    if not _NAME_RE.match(name or ""):
        raise f.error("must be 1-40 lower-case letters, digits, '-' or '_'", "name")
    if "command" not in f:
        raise f.error("command is required (the argv to run inside the host)")
    command = argv_field(f, "command")
    if not command:
        raise f.error("must not be empty", "command")
    mode = f.enum("mode", MODES, default="container" if f.get("image") else "process")
    containerfile = None
    if f.get("containerfile") is not None:
        cf = str(f.string("containerfile"))
        containerfile = (directory / cf).resolve()
        if not containerfile.is_file():
            raise f.error(f"file not found: {containerfile}", "containerfile")
    return AppManifest(
        name=str(name),
        directory=directory.resolve(),
        command=command,
        description=(f.string("description", default="") or "").strip(),
        environment=environment_field(f.child("environment")),
        resources=resources_field(f.child("resources"), Resources()),
        nodes=nodes_field(f),
        mode=str(mode),
        containerfile=containerfile,
        args=args_field(f.child("args")),
        params=params_field(f),
        model=model_field(f, directory),
        image=image_field(f, directory, str(mode)),
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
