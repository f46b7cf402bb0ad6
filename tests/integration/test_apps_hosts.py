"""Apps run inside real hosts (network namespaces) under the limits they declare.

A process app lands in its own cgroup whose CFS quota and memory limit are the manifest's,
in the host's network namespace; a container app is a real podman container joined to
the host's namespace, with the same limits on its cgroup.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from netemu.run.apps import AppRunner, NodeInfo, cgroup_of, plan_apps
from netemu.run.apps.manifest import AppError

pytestmark = pytest.mark.integration

APP = r'''
import json, os, signal, sys, time
if not os.environ.get("DEFAULT_SIGTERM"):
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
out = os.environ["NETEMU_APP_DIR"]
if os.environ.get("HOG_MB"):
    blocks = [bytearray(1 << 20) for _ in range(int(os.environ["HOG_MB"]))]
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])
info = {"pid": os.getpid(), "netns": os.stat("/proc/self/ns/net").st_ino,
        "node": os.environ["NETEMU_NODE"], "run": os.environ.get("NETEMU_RUN"),
        "params": json.loads(os.environ.get("NETEMU_APP_PARAMS", "{}"))}
with open(os.path.join(out, "info.tmp"), "w") as f:
    json.dump(info, f)
os.rename(os.path.join(out, "info.tmp"), os.path.join(out, "info.json"))
if os.environ.get("EXIT_NOW"):
    sys.exit(3)
time.sleep(120)
'''


@pytest.fixture
def netns():
    """Two named network namespaces standing in for emulated hosts."""
    names = [f"tapp-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    try:
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
            subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        yield {f"h{i + 1}": f"/run/netns/{n}" for i, n in enumerate(names)}
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def _apps(tmp_path: Path, mode: str) -> Path:
    d = tmp_path / "apps" / "probe"
    d.mkdir(parents=True)
    (d / "probe.py").write_text(APP)
    (d / "manifest.yaml").write_text(
        f"name: probe\ncommand: [python, probe.py]\nmode: {mode}\nnodes: all\n"
        "resources: {cpus: 0.5, memory_mb: 96}\n"
    )
    return tmp_path / "apps"


def _wait_file(p: Path, timeout_s: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if p.exists():
            return json.loads(p.read_text())
        time.sleep(0.05)
    raise AssertionError(f"{p} never appeared")


def _limits_of(pid: int) -> tuple[int, int, int]:
    cg = cgroup_of(pid)
    cpu = Path("/sys/fs/cgroup/cpu") / cg["cpu"].lstrip("/")
    mem = Path("/sys/fs/cgroup/memory") / cg["memory"].lstrip("/")
    return (
        int((cpu / "cpu.cfs_quota_us").read_text()),
        int((cpu / "cpu.cfs_period_us").read_text()),
        int((mem / "memory.limit_in_bytes").read_text()),
    )


def _leftover_cgroups(run: str) -> list[Path]:
    return [p for p in Path("/sys/fs/cgroup").glob(f"*/netemu/{run}") if p.exists()]


def test_process_app_runs_in_host_netns_under_cgroup_limits(tmp_path, netns) -> None:
    run = f"tapp-{uuid.uuid4().hex[:6]}"
    nodes = [NodeInfo("h1", "satellite"), NodeInfo("h2", "ground")]
    inst = plan_apps([{"name": "probe", "params": {"k": 1}}], nodes,
                     apps_dir=_apps(tmp_path, "process"))
    runner = AppRunner(run, tmp_path / "run")
    try:
        running = [runner.start(i, netns[i.node], {"NETEMU_RUN": run}) for i in inst]
        for ra in running:
            info = _wait_file(ra.out_dir / "info.json")
            assert info["node"] == ra.instance.node and info["params"] == {"k": 1}
            assert info["pid"] == ra.pid
            # the app's network namespace is the host's, not the root one
            assert info["netns"] == os.stat(netns[ra.instance.node]).st_ino
            assert info["netns"] != os.stat("/proc/self/ns/net").st_ino
            quota, period, mem = _limits_of(ra.pid)
            assert quota / period == pytest.approx(0.5)
            assert mem == 96 << 20
            assert cgroup_of(ra.pid)["memory"].endswith(f"netemu/{run}/probe.{ra.instance.node}")
        runner.stop_all()
        for ra in running:
            usage = json.loads((ra.out_dir / "usage.json").read_text())
            assert usage["exit_status"] == 0 and usage["ok"] and usage["stopped_by_runner"]
            assert usage["limits"] == {"cpus": 0.5, "memory_mb": 96}
            assert usage["cpu_s"] > 0 and usage["max_rss_bytes"] > 1 << 20
            assert (ra.out_dir / "stdout.log").exists() and (ra.out_dir / "stderr.log").exists()
    finally:
        runner.close()
    assert _leftover_cgroups(run) == []


def test_memory_limit_is_enforced_and_exit_status_recorded(tmp_path, netns) -> None:
    run = f"tapp-{uuid.uuid4().hex[:6]}"
    nodes = [NodeInfo("h1", "satellite")]
    apps = _apps(tmp_path, "process")
    hog = plan_apps([{"name": "probe", "environment": {"HOG_MB": 300}}], nodes, apps_dir=apps)[0]
    quitter = plan_apps([{"name": "probe", "environment": {"EXIT_NOW": 1}}], nodes,
                        apps_dir=apps)[0]
    runner = AppRunner(run, tmp_path / "run")
    try:
        ra = runner.start(hog, netns["h1"], {})
        deadline = time.monotonic() + 60
        while ra.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        runner.poll()
        usage = json.loads((ra.out_dir / "usage.json").read_text())
        assert usage["exit_status"] == -9, usage  # the kernel's OOM killer, inside the limit
        assert not usage["ok"] and usage["oom_kills"] == 1
        assert not (ra.out_dir / "info.json").exists()
        shutil.rmtree(ra.out_dir)
        ra = runner.start(quitter, netns["h1"], {})
        _wait_file(ra.out_dir / "info.json")
        deadline = time.monotonic() + 60
        while ra.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        runner.poll()
        usage = json.loads((ra.out_dir / "usage.json").read_text())
        assert usage["exit_status"] == 3 and not usage["ok"] and not usage["stopped_by_runner"]
    finally:
        runner.close()
    assert _leftover_cgroups(run) == []


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed")
def test_container_app_is_a_podman_container_in_the_host_netns(tmp_path, netns) -> None:
    run = f"tapp-{uuid.uuid4().hex[:6]}"
    nodes = [NodeInfo("h1", "satellite")]
    # the app keeps SIGTERM's default action: as PID 1 of a container it would ignore
    # `podman stop` without the runner's init shim, and be killed (137) after the grace time
    inst = plan_apps([{"name": "probe", "environment": {"DEFAULT_SIGTERM": 1}}], nodes,
                     apps_dir=_apps(tmp_path, "container"))[0]
    runner = AppRunner(run, tmp_path / "run")
    try:
        runner.prepare_images([inst])  # cached by content hash after the first build
        ra = runner.start(inst, netns["h1"], {"NETEMU_RUN": run})
        info = _wait_file(ra.out_dir / "info.json")
        cpid = runner.container_pid(ra)
        # podman knows it as a running container of this run...
        state = subprocess.run(
            ["podman", "inspect", "--format", "{{.State.Running}} {{.Config.Labels}}",
             ra.container], capture_output=True, text=True, check=True).stdout
        assert state.startswith("true") and f"netemu.run:{run}" in state
        # ...its process is in a separate PID/mount namespace but the host's network one
        assert os.stat(f"/proc/{cpid}/ns/net").st_ino == os.stat(netns["h1"]).st_ino
        assert info["netns"] == os.stat(netns["h1"]).st_ino
        assert os.stat(f"/proc/{cpid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
        assert os.stat(f"/proc/{cpid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
        quota, period, mem = _limits_of(cpid)
        assert quota / period == pytest.approx(0.5)
        assert mem == 96 << 20
        assert f"/netemu/{run}/probe.h1/" in cgroup_of(cpid)["cpu"]
        runner.stop_all(grace_s=2)
        usage = json.loads((ra.out_dir / "usage.json").read_text())
        assert usage["mode"] == "container" and usage["container"] == ra.container
        assert usage["cpu_s"] > 0 and usage["ok"], usage
        assert usage["exit_status"] == 128 + 15  # ended by the SIGTERM, not killed
    finally:
        runner.close()
    gone = subprocess.run(["podman", "container", "exists", ra.container])
    assert gone.returncode != 0
    assert _leftover_cgroups(run) == []


# A shell app for an image that holds nothing but a static busybox: it writes what it sees.
BUSYBOX_APP = (
    'B=/bin/busybox; $B echo "{\\"netns\\": $($B stat -L -c %i /proc/self/ns/net), '
    '\\"node\\": \\"$NETEMU_NODE\\"}" > "$NETEMU_APP_DIR/info.tmp" '
    '&& $B mv "$NETEMU_APP_DIR/info.tmp" "$NETEMU_APP_DIR/info.json" && exec $B sleep 120'
)


def _busybox_archive(path: Path, tag: str) -> None:
    """An image archive as a developer ships one (``podman save``), of an image with only
    a static busybox as /bin/sh, then the image removed so that only the archive has it."""
    import tarfile

    root = path.parent / "rootfs.tar"
    with tarfile.open(root, "w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    subprocess.run(["podman", "import", str(root), tag], check=True, capture_output=True)
    subprocess.run(["podman", "save", "--format", "docker-archive", "-o", str(path), tag],
                   check=True, capture_output=True)
    subprocess.run(["podman", "rmi", "-f", tag], check=True, capture_output=True)
    root.unlink()


@pytest.mark.skipif(shutil.which("podman") is None or not Path("/bin/busybox").is_file(),
                    reason="podman or a static busybox not installed")
def test_app_image_from_a_podman_load_archive_runs_in_the_host_netns(tmp_path, netns) -> None:
    run = f"tapp-{uuid.uuid4().hex[:6]}"
    tag = f"localhost/netemu-test-archive:{run}"
    d = tmp_path / "apps" / "shipped"
    d.mkdir(parents=True)
    try:
        _busybox_archive(d / "shipped.tar", tag)
        assert subprocess.run(["podman", "image", "exists", tag]).returncode != 0
        (d / "manifest.yaml").write_text(
            f"name: shipped\nimage: shipped.tar\ncommand: [/bin/sh, -c, {json.dumps(BUSYBOX_APP)}]\n"
            "nodes: all\nresources: {cpus: 0.5, memory_mb: 64}\n")
        inst = plan_apps(["shipped"], [NodeInfo("h1", "satellite")], apps_dir=tmp_path / "apps")[0]
        assert inst.mode == "container"  # an image makes it one
        runner = AppRunner(run, tmp_path / "run")
        try:
            assert runner.prepare_images([inst]) == {"shipped": tag}  # loaded from the archive
            ra = runner.start(inst, netns["h1"], {"NETEMU_RUN": run})
            info = _wait_file(ra.out_dir / "info.json")
            cpid = runner.container_pid(ra)
            assert info["node"] == "h1"
            assert info["netns"] == os.stat(netns["h1"]).st_ino  # the host's namespace
            assert os.stat(f"/proc/{cpid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
            runner.stop_all(grace_s=2)
            usage = json.loads((ra.out_dir / "usage.json").read_text())
            assert usage["mode"] == "container" and usage["image"] == tag and usage["ok"], usage
        finally:
            runner.close()
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
    assert _leftover_cgroups(run) == []


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman not installed")
def test_registry_image_is_not_pulled_unless_the_manifest_allows_it(tmp_path) -> None:
    d = tmp_path / "apps" / "remote"
    d.mkdir(parents=True)
    (d / "manifest.yaml").write_text(
        "name: remote\nimage: registry.invalid/netemu/absent:1\ncommand: [a]\nnodes: all\n")
    inst = plan_apps(["remote"], [NodeInfo("h1", "satellite")], apps_dir=tmp_path / "apps")[0]
    with pytest.raises(AppError) as e:
        AppRunner("tapp-pull", tmp_path / "run").prepare_images([inst])
    msg = str(e.value)
    assert msg.startswith(f"{d / 'manifest.yaml'}:2: image: registry.invalid/netemu/absent:1")
    assert "add pull: true" in msg
