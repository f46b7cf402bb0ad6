"""One emulation across several hosts, on a Ray cluster (docs/cluster.md).

The coordinator (this process, on a node of the cluster) places one :class:`HostAgent`
actor on every alive Ray node; each reports its cores, memory and underlay address. The
coordinator then, once:

- measures each host's clock offset through Ray (the sample of least round trip of a few
  ``time.time()`` calls) and refuses to start beyond ``max_clock_offset_s`` (1 ms);
- measures the underlay's one-way delay (the least ping round trip between any two hosts,
  halved, the largest over the pairs) and refuses to start when it is not below the
  smallest delay of a link that crosses hosts;
- splits the nodes (:mod:`netemu.plan.partition`) and hands every host its share with the
  plan; each actor builds its nodes, its tunnels to the others and its relay, and drives
  its links from the same plan, its scenario clock starting at the same wall time;
- with agents, runs the broker, the recorder and the CA, and each actor starts the node
  hosts of its own nodes (:mod:`netemu.run.cluster_agents`); at the end every host's
  agent files come back through Ray into the coordinator's run directory.

Ray is imported only here, when a cluster run starts (the ``cluster`` extra).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netemu.emulator.emulation import Emulation
from netemu.emulator.layout import Layout, plan_layout
from netemu.emulator.tunnels import HostShare, smallest_link_delay_s
from netemu.errors import InputError, NetemuError
from netemu.plan.contacts import ContactPlan
from netemu.plan.partition import HostCapacity, Partition, partition
from netemu.run.cluster_agents import AgentSettings, HostAgents, RunTelemetry, unpack_host_dir
from netemu.run.cluster_apps import HostApps
from netemu.runtime.telemetry import BrokerAccess

MAX_CLOCK_OFFSET_S = 1e-3
"""Hosts whose clocks differ from the coordinator's by more than this are refused."""
CLOCK_SAMPLES = 15
START_LEAD_S = 2.0
"""The scenario clock starts this long after the last host is built (all at once)."""
AGENT_LEAD_S = 5.0
AGENT_LEAD_S_PER_NODE = 0.05
"""With agents, the clock starts later by this plus this per node of the largest share."""

_RTT = re.compile(r"= ([\d.]+)/([\d.]+)/([\d.]+)/")


class ClusterError(NetemuError):
    pass


def clock_offset(samples: Sequence[tuple[float, float, float]]) -> tuple[float, float]:
    """(offset, round trip) from (sent, remote reading, received) samples: the sample of
    least round trip, offset = remote − midpoint (its error is at most half the round
    trip)."""
    if not samples:
        raise ValueError("no clock samples")
    sent, remote, got = min(samples, key=lambda s: s[2] - s[0])
    return remote - (sent + got) / 2, got - sent


def check_clocks(offsets: dict[str, float], bound_s: float = MAX_CLOCK_OFFSET_S,
                 round_trips: dict[str, float] | None = None) -> None:
    """Refuses a host whose clock is beyond ``bound_s`` off even at the edge of its
    measurement's error (half the round trip of its best sample): a busy coordinator
    delays the readings, which must not make clocks that agree look apart."""
    rtt = round_trips or {}
    bad = {h: o for h, o in offsets.items() if abs(o) - rtt.get(h, 0.0) / 2 > bound_s}
    if bad:
        worst = max(bad, key=lambda h: abs(bad[h]))
        raise ClusterError(
            f"host {worst}'s clock is {bad[worst] * 1e3:+.3f} ms off the coordinator's "
            f"(bound ±{bound_s * 1e3:g} ms; {len(bad)} host(s) beyond it): "
            "synchronise the hosts' clocks (chrony, docs/cluster.md) and start again")


def check_underlay(underlay_s: float, smallest_delay_s: float | None) -> None:
    if smallest_delay_s is not None and underlay_s >= smallest_delay_s:
        raise ClusterError(
            f"the hosts' own network takes {underlay_s * 1e3:.3f} ms one way, not less than "
            f"the smallest delay of a link between hosts ({smallest_delay_s * 1e3:.3f} ms): "
            "that link cannot be emulated over it; use hosts on a faster network, or fewer")


def parse_ping_min_s(text: str) -> float:
    """The least round trip (seconds) from ``ping -q``'s summary line."""
    m = _RTT.search(text)
    if m is None:
        raise ClusterError(f"no round trip in ping's output: {text.strip()[-200:]!r}")
    return float(m.group(1)) / 1e3


class HostAgent:
    """The actor on one host: reports it, measures, builds and drives its share."""

    def __init__(self) -> None:
        self.emu: Emulation | None = None
        self.agents: HostAgents | None = None
        self.apps: HostApps | None = None

    def info(self) -> dict[str, Any]:
        import psutil
        import ray

        return {"addr": ray.util.get_node_ip_address(), "cores": os.cpu_count() or 1,
                "memory_bytes": psutil.virtual_memory().available, "hostname": os.uname()[1],
                "pid": os.getpid()}

    def time(self) -> float:
        return time.time()

    def ping_min_s(self, addr: str, count: int = 5) -> float:
        p = subprocess.run(["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", "2", addr],
                           capture_output=True, text=True, timeout=30)
        return parse_ping_min_s(p.stdout)

    def start(self, plan_json: str, share: dict[str, Any], run: str, start_wall: float,
              opts: dict[str, Any], agents: dict[str, Any] | None = None,
              apps: list[Any] | None = None, app_grace_s: float = 5.0) -> dict[str, float]:
        plan = ContactPlan.from_json(plan_json, source="cluster plan")
        hs = HostShare(share["index"], share["host_of"], share["addrs"],
                       share["underlay_delay_s"])
        self.emu = Emulation(plan, share=hs, run_name=run, start_wall=start_wall, **opts)
        self.emu.start()
        timings = dict(self.emu.timings)
        if agents is not None:  # this host's nodes' agents, in plan order
            t0 = time.monotonic()
            mine = [n for n in plan.nodes if share["host_of"][n] == share["index"]]
            self.agents = HostAgents(self.emu, plan, AgentSettings.from_obj(agents),
                                     self.emu.registry.path / "rundir")
            self.agents.start(mine)
            self.agents.wait_ready()
            timings["agents_up_s"] = time.monotonic() - t0
            here = [i for i in apps or [] if share["host_of"].get(i.node) == share["index"]]
            if here:  # this host's nodes' app instances, with a bridged broker of its own
                t0 = time.monotonic()
                s = self.agents.settings
                self.apps = HostApps(self.emu, self.agents.rd.path, BrokerAccess(**s.broker),
                                     stop_grace_s=app_grace_s)
                self.apps.start(here, self.agents.sockets, window_start_s=s.window_start_s,
                                window_end_s=s.window_end_s)
                timings["apps_up_s"] = time.monotonic() - t0
        return timings

    def agent_socket(self, node: str) -> str:
        """The app socket of ``node``'s agent (a path on this host)."""
        assert self.agents is not None
        return self.agents.sockets[node]

    def run_cmd(self, node: str, argv: list[str], timeout: float = 60) -> tuple[int, str]:
        assert self.emu is not None
        p = self.emu.run_cmd(node, argv, timeout=timeout)
        return p.returncode, p.stdout + p.stderr

    def clean(self, named: list[str], everything: bool) -> list[str]:
        """``netemu clean`` on this host."""
        from netemu.emulator.registry import clean_runs

        return clean_runs(named, everything=everything)

    def report(self) -> dict[str, Any]:
        """The driver's lateness and this host's memory: the actor and the processes it
        started (relay workers), as PSS."""
        import psutil

        assert self.emu is not None
        st = self.emu.stats
        me = psutil.Process()
        pss = 0
        for p in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                pss += p.memory_full_info().pss
        return {"ticks": st.ticks, "missed_ticks": st.missed_ticks,
                "lateness_p99_s": st.p99(st.lateness_s), "pss_bytes": pss,
                "nodes": len(self.emu.net.host_ns) if self.emu.net else 0,
                "up_s": self.emu.timings.get("up_s", 0.0)}

    def stop(self) -> dict[str, Any]:
        """Agents, then the emulation; the agents' files packed (``files``) for the
        coordinator, before the emulation's registry entry (which holds them) goes."""
        out: dict[str, Any] = {}
        if self.apps is not None:
            self.apps.stop()
            self.apps = None
        if self.agents is not None:
            try:
                self.agents.stop()
                out["files"] = self.agents.pack()
            finally:
                self.agents = None
        if self.emu is not None:
            out.update(self.emu.stop())
            self.emu = None
        return out


@dataclass
class Cluster:
    """A cluster run from the coordinator's side (a context manager: stop() on exit)."""

    address: str
    actors: list[Any] = field(default_factory=list)
    hosts: list[dict[str, Any]] = field(default_factory=list)
    offsets_s: dict[str, float] = field(default_factory=dict)
    clock_rtts_s: dict[str, float] = field(default_factory=dict)  # each offset's ± is half
    underlay_s: float = 0.0
    part: Partition | None = None
    run_names: list[str] = field(default_factory=list)
    start_wall: float = 0.0
    layout: Layout | None = None
    telemetry: RunTelemetry | None = None
    run_dir: Path | None = None  # the hosts' agent files are gathered here at stop()
    gathered: dict[int, list[str]] = field(default_factory=dict)  # host → nodes gathered
    late_s: float = 0.0  # how long after the scenario clock's start the last host was up

    def connect(self) -> Cluster:
        try:
            import ray
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        except ImportError as e:
            raise ClusterError("--cluster needs Ray: pip install 'netemu[cluster]'") from e
        try:
            ray.init(address=self.address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError) as e:
            raise ClusterError(
                f"--cluster {self.address}: no Ray cluster to join ({e}); start one as root on "
                "every host (`ray start --head` on one, `ray start --address=HEAD:6379` on "
                "the others) and run netemu on one of them (docs/cluster.md)") from e
        nodes = sorted((n for n in ray.nodes() if n["Alive"]),
                       key=lambda n: n["NodeManagerAddress"])
        remote_cls = ray.remote(num_cpus=0, max_restarts=0)(HostAgent)
        self.actors = [remote_cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote() for n in nodes]
        self.hosts = ray.get([a.info.remote() for a in self.actors])
        return self

    def _get(self, refs: Any, what: str) -> Any:
        import ray

        try:
            return ray.get(refs)
        except ray.exceptions.RayActorError as e:
            raise ClusterError(f"a host was lost while {what}: {e}") from e
        except ray.exceptions.RayTaskError as e:  # the actor's own error, e.g. agents not up
            cause = getattr(e, "cause", None) or e
            raise ClusterError(f"a host failed while {what}: {cause}") from e

    def measure(self) -> None:
        """Clock offsets (refused beyond the bound) and the underlay's one-way delay."""
        for host, actor in zip(self.hosts, self.actors, strict=True):
            samples = []
            for _ in range(CLOCK_SAMPLES):
                t0 = time.time()
                remote = self._get(actor.time.remote(), "reading its clock")
                samples.append((t0, remote, time.time()))
            self.offsets_s[host["addr"]], self.clock_rtts_s[host["addr"]] = clock_offset(samples)
        check_clocks(self.offsets_s, round_trips=self.clock_rtts_s)
        one_way = [0.0]
        for i, actor in enumerate(self.actors):
            refs = [actor.ping_min_s.remote(h["addr"]) for j, h in enumerate(self.hosts)
                    if j > i]
            one_way += [rtt / 2 for rtt in self._get(refs, "measuring the underlay")]
        self.underlay_s = max(one_way)

    def start(self, plan: ContactPlan, *, run: str = "c", opts: dict[str, Any] | None = None,
              plane_of: Callable[[str], Any] | None = None,
              agents: dict[str, Any] | None = None, run_dir: Path | None = None,
              apps: list[Any] | None = None, app_grace_s: float = 5.0) -> Partition:
        """Split ``plan`` over the hosts and build it: one actor per host. ``agents``
        (:meth:`RunTelemetry.start`'s keywords: ``routing``, ``window_start_s``, ...)
        runs a bundle agent in every node, with telemetry into ``run_dir``; ``apps``
        (:class:`~netemu.run.apps.AppInstance`, with agents) run on their nodes' hosts,
        each given ``app_grace_s`` to exit after SIGTERM at the end."""
        if apps and agents is None:
            raise ValueError("apps need agents")
        if not self.actors:
            self.connect()
        if not self.offsets_s:
            self.measure()
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", run):
            raise InputError(f"cluster run name {run!r}: 1–6 lowercase letters or digits, "
                             "starting with a letter", field="run_name")
        layout = self.layout = plan_layout(plan)
        links = sorted({(p.a, p.b) for p in layout.periods})
        caps = [HostCapacity(h["addr"], h["cores"], h["memory_bytes"]) for h in self.hosts]
        self.part = partition(list(plan.nodes), links, caps, plane_of)
        owlt = [min([c.owlt_s, *(d for _, d in c.owlt_samples)]) for c in plan.contacts]
        check_underlay(self.underlay_s, smallest_link_delay_s(layout, owlt,
                                                              self.part.host_of))
        addrs = [h["addr"] for h in self.hosts]
        plan_json = plan.to_json()
        self.run_names = [f"{run}h{i}" for i in range(len(self.actors))]
        lead_s = START_LEAD_S + 0.5 * len(plan.nodes) / 100
        settings = None
        if agents is not None:
            import ray

            if run_dir is None:
                raise ValueError("agents need a run directory")
            self.run_dir = Path(run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "plan.json").write_text(plan_json)  # as a local run's
            self.telemetry = RunTelemetry(run, self.run_dir, ray.util.get_node_ip_address())
            settings = self.telemetry.start(**agents).to_obj()
            lead_s += AGENT_LEAD_S + AGENT_LEAD_S_PER_NODE * max(self.part.loads())
            lead_s += self.apps_lead_s(apps or [])
        start_wall = self.start_wall = time.time() + lead_s
        if self.telemetry is not None:
            o = opts or {}
            self.telemetry.t0_wall = start_wall
            self.telemetry.time_scale = float(o.get("time_scale", 1.0))
        refs = [a.start.remote(plan_json, {"index": i, "host_of": self.part.host_of,
                                           "addrs": addrs, "underlay_delay_s": self.underlay_s},
                               self.run_names[i], start_wall, opts or {}, settings,
                               apps or None, app_grace_s)
                for i, a in enumerate(self.actors)]
        self.timings = self._get(refs, "building its share")
        self.late_s = max(0.0, time.time() - start_wall)
        return self.part

    def apps_lead_s(self, apps: list[Any]) -> float:
        """Wall seconds the host slowest to start its apps needs (a host starts them
        after its agents are up): as on one machine, by its containers, processes and
        cores."""
        from netemu.run.runner import app_bringup_s

        assert self.part is not None
        lead = 0.0
        for i, h in enumerate(self.hosts):
            here = [a for a in apps if self.part.host_of.get(a.node) == i]
            containers = sum(1 for a in here if a.mode == "container")
            lead = max(lead, app_bringup_s(containers, len(here) - containers,
                                           cpus=int(h["cores"])))
        return lead

    def wait(self, wall_s: float, *, check_every_s: float = 1.0) -> None:
        """Until wall time ``wall_s``, asking every host every ``check_every_s`` whether it
        is still there; a host that does not answer stops the wait, named."""
        import ray

        while time.time() < wall_s:
            time.sleep(max(0.0, min(check_every_s, wall_s - time.time())))
            for h, a in zip(self.hosts, self.actors, strict=True):
                try:
                    ray.get(a.time.remote(), timeout=10)
                except Exception as e:  # the actor died, its node went away, or it hangs
                    raise ClusterError(f"host {h['addr']} ({h['hostname']}) was lost "
                                       f"mid-run: {type(e).__name__}") from e

    def clean(self, named: list[str], *, everything: bool = False) -> dict[str, list[str]]:
        """``netemu clean`` on every host: its lines by host address."""
        lines = self._get([a.clean.remote(named, everything) for a in self.actors], "cleaning")
        return {h["addr"]: ls for h, ls in zip(self.hosts, lines, strict=True)}

    def reports(self) -> list[dict[str, Any]]:
        """Every host's :meth:`HostAgent.report`, in host order."""
        return self._get([a.report.remote() for a in self.actors], "reporting")

    def host_of(self, node: str) -> int:
        assert self.part is not None
        return self.part.host_of[node]

    def run_cmd(self, node: str, argv: list[str], timeout: float = 60) -> tuple[int, str]:
        """Run ``argv`` in ``node``, on whichever host holds it."""
        actor = self.actors[self.host_of(node)]
        return self._get(actor.run_cmd.remote(node, argv, timeout), f"running in {node}")

    def agent_socket(self, node: str) -> str:
        """The app socket of ``node``'s agent, a path on the host that holds ``node``."""
        actor = self.actors[self.host_of(node)]
        return self._get(actor.agent_socket.remote(node), f"asking for {node}'s socket")

    def summary(self) -> dict[str, Any]:
        """What run.json records of the cluster."""
        return {"hosts": [{k: h[k] for k in ("addr", "hostname", "cores", "memory_bytes")}
                          for h in self.hosts],
                "clock_offsets_s": self.offsets_s,
                "clock_round_trips_s": self.clock_rtts_s,
                "max_clock_offset_s": MAX_CLOCK_OFFSET_S,
                "underlay_delay_s": self.underlay_s,
                "nodes_by_host": self.part.loads() if self.part else [],
                "cross_host_links": len(self.part.cross_links) if self.part else 0}

    def record(self, run_json: Path) -> None:
        """Add the cluster's summary to ``run_json`` (created if missing)."""
        doc: dict[str, Any] = {}
        with contextlib.suppress(FileNotFoundError):
            doc = json.loads(run_json.read_text())
        doc["cluster"] = self.summary()
        run_json.write_text(json.dumps(doc, indent=1) + "\n")

    def stop(self) -> None:
        """Every host's agents and share stopped, their agent files gathered into
        ``run_dir`` (a host that cannot answer is left out), then the broker."""
        import ray

        refs = []
        for a in self.actors:
            with contextlib.suppress(Exception):
                refs.append(a.stop.remote())
        for i, ref in enumerate(refs):
            try:
                out = ray.get(ref, timeout=120)
            except Exception:  # noqa: BLE001 - a lost host; `netemu clean` on it
                continue
            if self.run_dir is not None and out.get("files"):
                self.gathered[i] = unpack_host_dir(out["files"], self.run_dir, i)
        if self.telemetry is not None:
            self.telemetry.stop()
            self.telemetry = None
        for a in self.actors:
            with contextlib.suppress(Exception):
                ray.kill(a)
        self.actors = []
        with contextlib.suppress(Exception):
            ray.shutdown()

    def __enter__(self) -> Cluster:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["MAX_CLOCK_OFFSET_S", "Cluster", "ClusterError", "HostAgent", "check_clocks",
           "check_underlay", "clock_offset", "parse_ping_min_s"]
