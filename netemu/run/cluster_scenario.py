"""A prepared scenario run (``netemu demo --cluster``) spread over a Ray cluster.

The same scenario, window, agents, apps and telemetry as a local run
(:meth:`~netemu.run.runner.ScenarioRun.prepare`), built by one actor per host
(:class:`~netemu.run.cluster.Cluster`); the run directory is gathered on the coordinator,
where metrics, expectations and the report are computed as for a local run.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace as dc_replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from netemu.errors import InputError
from netemu.plan.faults import EMULATOR_KINDS, Fault
from netemu.runtime.env import NETEMU_COMPUTE_OPS_PER_S, NETEMU_HOST_OPS_PER_S
from netemu.runtime.rundir import RunDir

if TYPE_CHECKING:
    from netemu.run.apps import AppInstance
    from netemu.run.runner import Prepared, RunResult


def refusal(p: Prepared) -> str | None:
    """Why ``p`` cannot run across hosts yet, or None."""
    crashes = [f.id for f in p.faults if f.kind not in EMULATOR_KINDS]
    if crashes:
        return (f"node_crash faults ({', '.join(crashes)}) restart agents from their stores: "
                "run the scenario on one machine")
    if p.ip_routing.daemons or p.route_function is not None:
        return f"ip_routing {p.ip_routing.mode}: only oracle and none run across hosts"
    if p.window.shaper == "netem":
        return "shaper netem: cluster runs shape with the relay"
    if p.window.agents is not None:
        return "agents on some nodes only (emulation.agents): a cluster run puts one in every node"
    return None


def check(p: Prepared) -> None:
    """Refuse, with a clear message, what does not run across hosts yet."""
    why = refusal(p)
    if why:
        raise InputError(f"--cluster: {why} (docs/cluster.md)", field="--cluster")


def with_compute(instances: list[AppInstance], scenario: Any) -> list[AppInstance]:
    """Each instance with its node's modelled compute in its environment, as a local run
    gives it (the host that starts it has no scenario)."""
    compute = getattr(scenario, "compute", None)
    if compute is None:
        return instances
    kinds = {s.name: "satellite" for s in scenario.satellites}
    out = []
    for inst in instances:
        env = dict(inst.environment)
        node = compute.for_kind(kinds.get(inst.node, "ground"))
        if node is not None:
            env[NETEMU_COMPUTE_OPS_PER_S] = repr(float(node.ops_per_s))
        if compute.host_ops_per_s is not None:
            env[NETEMU_HOST_OPS_PER_S] = repr(float(compute.host_ops_per_s))
        out.append(dc_replace(inst, environment=env))
    return out


def agent_settings(p: Prepared) -> dict[str, Any]:
    """What :meth:`Cluster.start` tells every host about the agents: the scenario's
    routing, telemetry, traffic and captures, the window."""
    from netemu.run.runner import traffic_table

    w, tel = p.window, p.telemetry
    out: dict[str, Any] = {
        "routing": p.routing, "window_start_s": w.start_s, "window_end_s": w.end_s,
        "counters_s": tel.counters_s,
        "bundle_events": tel.bundle_events_for(len(p.plan.nodes)),
        "max_bundle_events": tel.max_bundle_events,
    }
    if p.traffic is not None:
        out["traffic_json"] = json.dumps(traffic_table(p.traffic, p.plan).to_obj(),
                                         separators=(",", ":"))
    if p.captures:
        out["captures"] = list(p.captures)
    return out


class FaultNotices:
    """The ``fault/<id>`` started and ended messages of a cluster run, published once, by
    the coordinator, at the scheduled scenario times (every host applies the faults to its
    own links from the same schedule; a local run's emulator publishes them as it applies
    them)."""

    def __init__(self, faults: list[Fault], access: Any, now_s: Callable[[], float],
                 run: str) -> None:
        self.events = sorted([(f.start_s, "started", f) for f in faults]
                             + [(f.end_s, "ended", f) for f in faults
                                if f.end_s is not None and math.isfinite(f.end_s)],
                             key=lambda e: (e[0], e[1] != "ended"))
        self.access, self.now_s, self.run = access, now_s, run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fault-notices", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        from netemu.run.runner import fault_message
        from netemu.runtime.telemetry import SyncPublisher

        pub = SyncPublisher(self.access, client_id=f"netemu-faults-{self.run}",
                            clock=self.now_s)
        try:
            for t_s, what, fault in self.events:
                while not self._stop.is_set() and self.now_s() < t_s:
                    self._stop.wait(0.05)
                if self._stop.is_set():
                    return
                pub.publish(*fault_message(fault, what, t_s))
        finally:
            pub.close()


def run_prepared(address: str, p: Prepared, result: RunResult, *,
                 echo: Any = print, app_grace_s: float = 5.0) -> None:
    """Build ``p`` over the cluster at ``address``, run its window, gather the run
    directory into ``result.run_dir`` (``run.json`` with the cluster's summary); problems
    go into ``result.errors``."""
    from netemu.run.cluster import Cluster, ClusterError

    check(p)
    run_dir, run = result.run_dir, result.run
    rd = RunDir(run_dir)
    rd.logs_dir.mkdir(parents=True, exist_ok=True)
    if p.scenario.path is not None:
        shutil.copyfile(p.scenario.path, rd.scenario_yaml)
    w = p.window
    meta: dict[str, Any] = {
        "run": run, "scenario": p.scenario.name, "scenario_path": p.source,
        "window": {"start_s": w.start_s, "duration_s": w.duration_s,
                   "time_scale": w.time_scale, "isl": w.isl},
        "routing": p.routing, "ip_routing": p.ip_routing.describe(),
        "apps": [i.key for i in p.apps], "faults": [f.to_obj() for f in p.faults],
        "started_utc": datetime.now(timezone.utc).isoformat(), "argv": sys.argv,
    }
    rd.run_json.write_text(json.dumps(meta, indent=1) + "\n")
    planes = {s.name: (s.group, s.plane) for s in p.scenario.satellites
              if s.plane is not None}
    opts = {"ip_routing": p.ip_routing.installs_routes, "time_scale": w.time_scale,
            "start_s": w.start_s, "duration_s": w.duration_s, "tick_s": w.tick_s,
            "faults": list(p.faults)}  # each host applies them to its own links
    t0 = time.monotonic()
    cl = Cluster(address)

    def on_term(*_a: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    notices: FaultNotices | None = None
    try:
        cl.connect()
        echo(f"netemu: {len(p.plan.nodes)} nodes over {len(cl.hosts)} hosts "
             f"({', '.join(h['addr'] for h in cl.hosts)})")
        part = cl.start(p.plan, run=run, opts=opts, plane_of=planes.get,
                        agents=agent_settings(p), run_dir=run_dir,
                        apps=with_compute(p.apps, p.scenario), app_grace_s=app_grace_s)
        echo(f"netemu: up in {time.monotonic() - t0:.1f} s: nodes by host {part.loads()}, "
             f"{len(part.cross_links)} cross-host links, {len(p.apps)} app instances; "
             f"underlay {cl.underlay_s * 1e3:.3f} ms one way (subtracted)")
        if p.faults and cl.telemetry is not None and cl.telemetry.access is not None:
            notices = FaultNotices(p.faults, cl.telemetry.access, cl.telemetry.now_s, run)
            notices.start()
        if cl.late_s > 0:
            echo(f"netemu: WARNING: the last host was up {cl.late_s:.1f} s (wall) after the "
                 "window opened: its start ran without all of it")
        cl.wait(cl.start_wall + w.duration_s / w.time_scale)
    except ClusterError as e:
        result.errors.append(str(e))
        echo(f"netemu: error: {e}")
    except KeyboardInterrupt:
        result.interrupted = True
        result.errors.append("interrupted")
        echo("netemu: interrupted: stopping the hosts, keeping what was measured")
    finally:
        if notices is not None:
            notices.stop()
        cl.stop()  # every host's files gathered into run_dir
        meta.update(errors=result.errors, interrupted=result.interrupted,
                    finished_utc=datetime.now(timezone.utc).isoformat(),
                    wall_s=round(time.monotonic() - t0, 1),
                    gathered_hosts=sorted(cl.gathered))
        rd.run_json.write_text(json.dumps(meta, indent=1) + "\n")
        if cl.hosts:
            cl.record(rd.run_json)
        signal.signal(signal.SIGTERM, old)
    missing = [n for n in p.plan.nodes if not (run_dir / "agents" / n).is_dir()]
    if missing:
        result.errors.append(f"no agent files came back for {len(missing)} nodes "
                             f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})")


__all__ = ["FaultNotices", "agent_settings", "check", "refusal", "run_prepared", "with_compute"]
