"""Podman images for container apps: built here, loaded from an archive, or taken from
local storage; pulled from a registry only when the manifest says ``pull: true``.

The base image is imported from a minimal tree of this machine's own Python (its
interpreter, stdlib and the shared libraries it loads), tagged by a hash of those files so
it is built once; the project and its virtual environment are mounted read-only at run
time. A manifest's ``image:`` replaces the base (it must hold what the command needs: the
base's interpreter for ``python``, or its own by absolute path). An app's optional
``containerfile`` is built on top of the base or of that image.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from netemu.run.apps.manifest import AppError, AppManifest, ImageSource
from netemu.runtime.env import NETEMU_BASE_IMAGE

_STDLIB_SKIP = {"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter",
                "turtledemo", "ensurepip", "lib2to3", "config-3", "__phello__"}


def venv_root() -> Path:
    """The virtual environment (mounted read-only into containers)."""
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
    venv = venv_root()
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


def podman_argv(*args: str) -> list[str]:
    """podman with the runtime and cgroup manager that work beside our own cgroups."""
    return ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args]


def _image_exists(tag: str) -> bool:
    return subprocess.run(podman_argv("image", "exists", tag), capture_output=True).returncode == 0


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
    # A base built elsewhere from the same files and loaded with podman load: where the
    # scan below is slow (minutes in a VM under a software CPU, over 9p).
    given = os.environ.get(NETEMU_BASE_IMAGE)
    if given:
        if not _image_exists(given):
            raise AppError(f"{NETEMU_BASE_IMAGE}={given}: no such image in podman's local storage")
        return given
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
        podman_argv("import", "--message", "netemu base (host python)", "-", tag),
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
        podman_argv(
            "build", "--isolation", "chroot", "--pull=never", "--from", base_tag,
            "-f", str(manifest.containerfile), "-t", tag, str(manifest.directory),
        ),
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise AppError(f"building {manifest.name}'s containerfile failed:\n{r.stderr[-1500:]}")
    return tag


def _loaded_tag(output: str) -> str | None:
    """The image ``podman load`` reports (``Loaded image: REF`` or ``Loaded image(s): ...``)."""
    for line in output.splitlines():
        if line.startswith("Loaded image"):
            refs = line.split(":", 1)[1].strip().split(",")
            if refs and refs[0].strip():
                return refs[0].strip()
    return None


def resolve_image(src: ImageSource) -> str:
    """The local image for a manifest's ``image:``: the archive loaded (``podman load``),
    the tag found in local storage, or (``pull: true`` only) pulled from its registry."""
    if not shutil.which("podman"):
        raise AppError("podman not found: install Debian's podman and runc (scripts/dev setup)")
    if src.archive is not None:
        r = subprocess.run(podman_argv("load", "-i", str(src.archive)), capture_output=True,
                           text=True)
        tag = _loaded_tag(r.stdout + "\n" + r.stderr) if r.returncode == 0 else None
        if tag is None:
            raise AppError(f"{src.where}: image: podman load {src.archive} failed: "
                           f"{(r.stderr or r.stdout).strip()[-800:]}")
        return tag
    if _image_exists(src.reference):
        return src.reference
    if not src.pull:
        raise AppError(f"{src.where}: image: {src.reference} is not in podman's local storage, "
                       "and the manifest does not allow pulling it: podman load or build it "
                       "first, or add pull: true")
    r = subprocess.run(podman_argv("pull", "--quiet", src.reference), capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise AppError(f"{src.where}: image: podman pull {src.reference} failed: "
                       f"{r.stderr.strip()[-800:]}")
    return src.reference
