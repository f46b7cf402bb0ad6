"""Runner figures: telemetry throughput through the run's broker, and how long an app
takes to start in a host as a process and as a podman container.

    sudo .venv/bin/python bench/bench_flagship.py [--messages 20000] [--apps 8]

Prints one line per figure. Needs root (network namespace, cgroups, podman). The demo's
own timings are in each run's run.json (phases_s); see docs/flagship.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from netemu.run.apps import AppRunner, NodeInfo, plan_apps
from netemu.run.broker import Broker, Recorder
from netemu.runtime.telemetry import SyncPublisher, Telemetry

APP = "import os, time, pathlib; pathlib.Path(os.environ['NETEMU_APP_DIR'], 'up').touch(); time.sleep(60)\n"


def bench_telemetry(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        b = Broker(f"b{uuid.uuid4().hex[:7]}")
        access = b.start()
        try:
            rec = Recorder(access, Path(tmp) / "events.jsonl", clock=lambda: 0.0)
            rec.start()
            pub = SyncPublisher(access, clock=lambda: 1.0)
            payload = {"event": "update", "delay_s": 0.0123, "rate_bps": 1e8, "loss": 0.0}
            t0 = time.perf_counter()
            for _ in range(n):
                pub.publish("link/a/b", payload)
            while rec.count < n and time.perf_counter() - t0 < 120:
                time.sleep(0.01)
            dt = time.perf_counter() - t0
            print(f"telemetry sync publisher -> recorder (QoS 1, Unix socket): {rec.count} of "
                  f"{n} messages in {dt:.2f} s = {rec.count / dt:,.0f} msg/s")
            pub.close()
            base = rec.count

            async def send() -> None:
                async with Telemetry(access, clock=lambda: 2.0) as t:
                    for _ in range(n):
                        await t.publish("app/x/y", {"event": "tile", "vessels": 1})

            t0 = time.perf_counter()
            asyncio.run(send())
            while rec.count < base + n and time.perf_counter() - t0 < 120:
                time.sleep(0.01)
            dt = time.perf_counter() - t0
            print(f"telemetry async publisher (aiomqtt) -> recorder: {rec.count - base} of {n} "
                  f"messages in {dt:.2f} s = {(rec.count - base) / dt:,.0f} msg/s")
            rec.stop(drain_s=0)
        finally:
            b.stop()


def bench_apps(count: int, mode: str) -> None:
    ns = f"bfl{uuid.uuid4().hex[:4]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    run = f"bench{uuid.uuid4().hex[:4]}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            apps = Path(tmp) / "apps" / "idle"
            apps.mkdir(parents=True)
            (apps / "idle.py").write_text(APP)
            (apps / "manifest.yaml").write_text(
                f"command: [python, idle.py]\nmode: {mode}\nnodes: all\n"
                "resources: {cpus: 0.5, memory_mb: 128}\n")
            nodes = [NodeInfo(f"n{i}", "satellite") for i in range(count)]
            inst = plan_apps(["idle"], nodes, apps_dir=apps.parent)
            runner = AppRunner(run, Path(tmp) / "run")
            try:
                if mode == "container":
                    t0 = time.perf_counter()
                    runner.prepare_images(inst)
                    print(f"container image ready (cached or built) in "
                          f"{time.perf_counter() - t0:.1f} s")
                lat = []
                for i in inst:
                    t0 = time.perf_counter()
                    ra = runner.start(i, f"/run/netns/{ns}", {})
                    while not (ra.out_dir / "up").exists():
                        if ra.poll() is not None:
                            raise SystemExit(f"app exited: {(ra.out_dir / 'stderr.log').read_text()}")
                        time.sleep(0.005)
                    lat.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                runner.stop_all(grace_s=2)
                stop = time.perf_counter() - t0
                print(f"{mode} app start -> running Python in the host ({count} apps, one at a "
                      f"time): median {statistics.median(lat):.3f} s, max {max(lat):.3f} s; "
                      f"stopping all: {stop:.2f} s")
            finally:
                runner.close()
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--apps", type=int, default=8)
    a = ap.parse_args()
    bench_telemetry(a.messages)
    bench_apps(a.apps, "process")
    bench_apps(a.apps, "container")
    return 0


if __name__ == "__main__":
    sys.exit(main())
