"""``netemu test --cluster``: a suite's scenarios fanned out over the hosts of a Ray cluster.

One :class:`ScenarioWorker` actor per alive Ray node; each runs one scenario at a time as
a ``netemu test SCENARIO`` process of its own host (so a scenario is a local run there,
all of it on one host), into a temporary directory that it packs and hands back with the
run's JUnit XML and output. The coordinator (:func:`run_suite`) gives the next scenario to
whichever host finishes first (:func:`fan_out`), unpacks every run directory under its
own output directory and merges the JUnit files into one, as ``-j N`` does on one machine.

Every host needs the scenarios (and what they name: apps, plug-ins) at the same paths as
the coordinator, e.g. the same checkout; a scenario missing on a host is that scenario's
error, naming the host.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

W = TypeVar("W")
R = TypeVar("R")


class ScenarioWorker:
    """The actor on one host: runs one ``netemu test`` at a time (Ray runs an actor's
    calls one after another)."""

    def addr(self) -> str:
        import ray

        return str(ray.util.get_node_ip_address())

    def run(self, scenario: str, extra_argv: list[str]) -> dict[str, Any]:
        """``netemu test scenario *extra_argv`` here: exit status, output, JUnit XML and
        the packed run directory (``files``)."""
        host = self.addr()
        if not Path(scenario).is_file():
            return {"rc": None, "host": host, "log": "", "junit": None, "files": b"",
                    "error": f"{scenario} is not on host {host}: every host needs the "
                             "scenarios at the same paths (docs/cluster.md)"}
        tmp = Path(tempfile.mkdtemp(prefix="netemu-suite-"))
        try:
            out, junit = tmp / "out", tmp / "junit.xml"
            argv = [sys.executable, "-m", "netemu", "test", scenario, "--out", str(out),
                    "--junit", str(junit), *extra_argv]
            p = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                               cwd=os.getcwd())
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w:gz") as tar:
                if out.is_dir():
                    for child in sorted(out.iterdir()):
                        tar.add(child, arcname=child.name)
            return {"rc": p.returncode, "host": host, "log": p.stdout + p.stderr,
                    "junit": junit.read_text() if junit.exists() else None,
                    "files": buf.getvalue(), "error": None}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def fan_out(items: Sequence[Any], workers: Sequence[W], submit: Callable[[W, Any], Any],
            wait_one: Callable[[list[Any]], Any], result: Callable[[Any], R]) -> list[R]:
    """Every item run on a worker, one item per worker at a time, the next item going to
    whichever worker finishes first; results in the items' order. ``submit(worker, item)``
    starts one and returns a handle, ``wait_one(handles)`` returns one that has finished,
    ``result(handle)`` its result."""
    if not workers:
        raise ValueError("no workers")
    todo = list(enumerate(items))
    todo.reverse()
    running: dict[Any, tuple[int, W]] = {}
    out: dict[int, R] = {}
    for w in workers:
        if not todo:
            break
        i, item = todo.pop()
        running[submit(w, item)] = (i, w)
    while running:
        done = wait_one(list(running))
        i, w = running.pop(done)
        out[i] = result(done)
        if todo:
            j, item = todo.pop()
            running[submit(w, item)] = (j, w)
    return [out[i] for i in range(len(items))]


def unpack_run(data: bytes, parent: Path) -> None:
    """A host's packed ``netemu test`` output into ``parent`` (its run directories)."""
    if not data:
        return
    parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(parent, filter="data")


def run_suite(address: str, scenarios: Sequence[Path], argvs: Sequence[list[str]],
              parent: Path, echo: Callable[[str], None] = print
              ) -> list[tuple[Path, int | None, str | None]]:
    """The scenarios over the cluster at ``address``, each with its options from
    ``argvs``: (scenario, exit status, JUnit XML) each, their run directories under
    ``parent``."""
    from netemu.run.cluster import ClusterError

    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError as e:
        raise ClusterError("--cluster needs Ray: pip install 'netemu[cluster]'") from e
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except (ConnectionError, RuntimeError) as e:
        raise ClusterError(f"--cluster {address}: no Ray cluster to join ({e})") from e
    try:
        nodes = sorted((n for n in ray.nodes() if n["Alive"]),
                       key=lambda n: n["NodeManagerAddress"])
        cls: Any = ray.remote(num_cpus=0, max_restarts=0)(ScenarioWorker)
        workers: list[Any] = [cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote() for n in nodes]
        addrs = ray.get([w.addr.remote() for w in workers])
        echo(f"netemu test: {len(scenarios)} scenarios over {len(workers)} hosts "
             f"({', '.join(addrs)}), one at a time on each")

        def result(ref: Any) -> dict[str, Any]:
            try:
                return dict(ray.get(ref))
            except ray.exceptions.RayError as e:
                return {"rc": None, "host": "?", "log": "", "junit": None, "files": b"",
                        "error": f"its host was lost: {type(e).__name__}"}

        def wait_one(refs: list[Any]) -> Any:
            done, _ = ray.wait(refs, num_returns=1)
            return done[0]

        items = [(str(sc.resolve()), argv) for sc, argv in zip(scenarios, argvs, strict=True)]
        results = fan_out(items, workers, lambda w, it: w.run.remote(*it), wait_one, result)
    finally:
        ray.shutdown()
    parent.mkdir(parents=True, exist_ok=True)
    out: list[tuple[Path, int | None, str | None]] = []
    for sc, r in zip(scenarios, results, strict=True):
        unpack_run(r["files"], parent)
        log = parent / f"{sc.stem}.log"
        log.write_text(r["log"] + (f"\n{r['error']}\n" if r["error"] else ""))
        echo(f"== {sc} on {r['host']} (exit {r['rc']}; output: {log})\n"
             f"{(r['error'] or r['log'])[-3000:]}")
        out.append((sc, r["rc"], r["junit"]))
    return out


__all__ = ["ScenarioWorker", "fan_out", "run_suite", "unpack_run"]
