"""The scenario run: scenario → plan → emulation → agents → apps → metrics → report.

What ``netemu demo`` and ``netemu test`` run::

    run = ScenarioRun(RunOptions(Path("topologies/three-body-12.yaml")))
    result = run.execute()          # needs root: builds namespaces
    print(result.report_path)

Everything a run needs is checked before anything is built (scenario, ``apps:``,
``expect:``, ``emulation:``), so a typo costs seconds, not a run. Whatever happens after
that (an error, Ctrl-C, SIGTERM), everything started is stopped in reverse order and the
run directory keeps what was measured so far; metrics and the report are still written.

The scenario's ``emulation:`` section picks the window and speed::

    emulation:
      start_s: 0          # scenario seconds from the epoch
      duration_s: 3000
      time_scale: 10      # scenario seconds per wall second
      quick: {duration_s: 600, time_scale: 10}   # netemu demo --quick
      test: {duration_s: 300, time_scale: 10}    # netemu test
      isl: true           # false: drop every ISL (the "ISLs disabled" comparison)
      agent_hosts: auto   # per-node, N node-host processes serving all agents, or auto

``routing:`` (``cgr`` by default, or ``{algorithm: NAME, ...}``) is what every node's
agent routes with. ``ip_routing:`` is ``oracle`` (the default: shortest-delay routes to
every node address, recomputed at each topology change), ``none`` (only the direct
links; the agents need no more) or ``{plugin: module:function}``
(:mod:`netemu.plan.iprouting`). ``traffic:`` flows are sent and taken by the agents.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from netemu.agent.config import AgentConfig, plan_peers
from netemu.agent.nodehost import FDS_PER_NODE, FDS_RESERVE
from netemu.agent.traffic import DEFAULT_SERVICE, TrafficTable
from netemu.analysis import expect as expect_mod
from netemu.analysis import metrics as metrics_mod
from netemu.analysis import report as report_mod
from netemu.config import Fields
from netemu.emulator import Emulation
from netemu.emulator.frr import FrrSettings, frr_missing
from netemu.emulator.netns import ns_path
from netemu.errors import InputError, NetemuError
from netemu.plan.contacts import ContactPlan
from netemu.plan.faults import Fault, schedule_faults
from netemu.plan.iprouting import IpRouting, parse_ip_routing_option
from netemu.plan.scenario import load_scenario
from netemu.plan.schedule import compute_plan
from netemu.plan.selectors import NodeIndex, node_set
from netemu.plan.traffic import flows
from netemu.routing import get_router
from netemu.run.apps import (
    AppError,
    AppInstance,
    AppRunner,
    NodeInfo,
    find_apps_dir,
    plan_apps,
)
from netemu.run.broker import Broker, Recorder
from netemu.run.capture import parse_capture_section, start_scenario_captures
from netemu.run.pause import RunPause, cgroup_pids, clock_record, tree_pids
from netemu.run.pki import RunCA, run_tls_mode, secure_run_agent
from netemu.run.telemetry_config import TelemetrySettings, parse_telemetry
from netemu.runtime.env import (
    NETEMU_BP_SOCKET,
    NETEMU_DTN_SOCKET,
    NETEMU_NODE,
    NETEMU_NODE_ADDR,
    HostEnv,
)
from netemu.runtime.fdlimit import raise_fd_limit
from netemu.runtime.rundir import RunDir, default_run_dir
from netemu.runtime.telemetry import SyncPublisher

EMULATION_KEYS = ("agent_hosts", "agents", "duration_s", "isl", "quick", "shaper", "start_s",
                  "test", "tick_s", "time_scale")
PROFILE_KEYS = ("duration_s", "start_s", "time_scale")
DEFAULT_DURATION_S = 600.0
AGENT_READY_TIMEOUT_S = 90.0
AGENT_READY_S_PER_NODE = 0.1  # more time for thousands of nodes (stores, sockets)
PER_NODE_AGENTS_MAX = 32
"""Up to this many agents run one ``netemu agent`` process each by default; more run in
node hosts, one per CPU (``agent_hosts:``)."""


class RunInterrupted(NetemuError):
    """Ctrl-C or SIGTERM during a run (the run was stopped cleanly)."""


# --------------------------------------------------------------------------- window


@dataclass(frozen=True)
class Window:
    """What part of the scenario to emulate and how fast."""

    start_s: float
    duration_s: float
    time_scale: float
    isl: bool = True
    tick_s: float = 0.1
    shaper: str = "auto"
    agents: tuple[str, ...] | None = None  # nodes with a bundle agent; None: every node
    agent_hosts: int | None = None  # node-host processes serving them; None: one per node
    agent_hosts_auto: bool = False  # not given: per-node up to PER_NODE_AGENTS_MAX agents

    def hosts_for(self, n_agents: int) -> int | None:
        """Node-host processes for ``n_agents`` agents (None: one process per node)."""
        if self.agent_hosts_auto:
            if n_agents <= PER_NODE_AGENTS_MAX:
                return None
            return max(1, os.cpu_count() or 1)
        return self.agent_hosts

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s

    @property
    def wall_s(self) -> float:
        return self.duration_s / self.time_scale


def _number(f: Fields, key: str, default: float, *, lo_open: bool) -> float:
    """A non-negative number (positive if ``lo_open``), ``default`` when absent."""
    value = f.number(key, default=default, lo=0.0, lo_open=lo_open)
    return default if value is None else value


def emulation_window(
    section: Fields | Any,
    *,
    scenario_duration_s: float,
    scenario_time_scale: float = 1.0,
    profile: str | None = None,
    source: str = "scenario",
    line: int | None = None,
    overrides: dict[str, Any] | None = None,
    nodes: Any = None,
) -> Window:
    """The window from the ``emulation:`` section (``Scenario.section("emulation")``, or a
    plain value named by ``source``/``line``), a profile (``quick``, ``test``) and
    command-line overrides, checked against the scenario's own duration. ``agents:`` is
    ``all``, ``none`` or node selectors (:mod:`netemu.plan.selectors`), resolved against
    ``nodes`` (the scenario) when given; without ``nodes`` only ``true``/``false``."""
    f = section if isinstance(section, Fields) else Fields(section, source=source,
                                                            path="emulation", line=line)
    if f.is_none():
        f = Fields({}, source=f.source, path=f.path, line=f.line)
    f.check_keys(EMULATION_KEYS)
    # the section's values, then the profile's, then the command line's
    layers = [f]
    if profile is not None and f.get(profile) is not None:
        layers.append(f.mapping(profile, PROFILE_KEYS))
    for name in ("quick", "test"):
        if name != profile and f.get(name) is not None:
            f.mapping(name, PROFILE_KEYS)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    layers.append(Fields({k: v for k, v in given.items() if k in PROFILE_KEYS},
                         source=f.source, path=f.path, line=f.line))
    start, dur, scale = 0.0, min(DEFAULT_DURATION_S, scenario_duration_s), scenario_time_scale
    for layer in layers:
        start = _number(layer, "start_s", start, lo_open=False)
        dur = _number(layer, "duration_s", dur, lo_open=True)
        scale = _number(layer, "time_scale", scale, lo_open=True)
    if start + dur > scenario_duration_s + 1e-6:
        raise f.error(f"window {start:g} s + {dur:g} s ends after the scenario's duration_s "
                      f"({scenario_duration_s:g} s)", "duration_s")
    isl = f.boolean("isl", default=True)
    if given.get("isl") is not None:
        isl = bool(given["isl"])
    tick = _number(f, "tick_s", 0.1, lo_open=True)
    shaper = given.get("shaper") or f.string("shaper", default="auto")
    agents: tuple[str, ...] | None
    if nodes is not None:
        index = NodeIndex(nodes)
        chosen = node_set(f, "agents", index)
        agents = None if len(chosen) == len(index.names) else tuple(chosen)
    else:
        agents = None if f.boolean("agents", default=True) else ()
    hosts, hosts_auto = _agent_hosts(f)
    return Window(start, dur, scale, bool(isl), tick, str(shaper), agents, hosts, hosts_auto)


def _agent_hosts(f: Fields) -> tuple[int | None, bool]:
    """``agent_hosts:``: ``per-node`` (one ``netemu agent`` process per node, None), a
    whole number N ≥ 1 of node-host processes, or ``auto`` (one per CPU). Not given:
    per-node up to PER_NODE_AGENTS_MAX agents, else auto (the second value)."""
    value = f.get("agent_hosts")
    if value is None:
        return None, True
    if value == "per-node":
        return None, False
    if value == "auto":
        return max(1, os.cpu_count() or 1), False
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value, False
    raise f.error(f"must be per-node, auto or a whole number ≥ 1, got {value!r}",
                  "agent_hosts")


HOSTED_KEEPALIVE_S = 60
"""The TCPCL keepalive of agents in node hosts (a single agent's default is 15 s). Each
keepalive is a TLS record and a send: with thousands of sessions a process, 15-s
keepalives took about 15 % of a node host's loop on star-compute-2800. In a run the
contact plan ends each session at its contact's end, so keepalives only find sessions
cut by an unplanned fault, after 2 × this."""

SPLIT_SLACK = 0.25
"""The margin the open-file sizing of node hosts allows over a group's share of the nodes
(``split_nodes`` deals them evenly; the margin covers rounding and stations)."""


def split_nodes(nodes: list[str], n_groups: int,
                group_of: Callable[[str], Any] | None = None) -> list[list[str]]:
    """``nodes`` (in plan order) as at most ``n_groups`` groups of about equal size, each
    in plan order. The nodes of no plane (``group_of`` None: ground stations) are dealt
    first, each to the smallest group; then the k-th node of a plane goes to group
    (start + k) mod ``n_groups``, each plane's start chosen to even out the sizes and
    never the previous plane's. So a satellite's neighbours along its plane and in the
    neighbouring planes sit in other processes: a burst of bundles crossing twenty hops
    of one plane runs through every process in turn, on every core, instead of queueing
    in one process's loop for all its hops (a plane in one process made a 480-bundle
    burst cross 35 hops at 30 to 50 bundles a second)."""
    n = min(n_groups, len(nodes))
    if n <= 1:
        return [list(nodes)] if nodes else []
    groups: list[list[str]] = [[] for _ in range(n)]
    planes: dict[Any, list[str]] = {}
    for node in nodes:
        key = group_of(node) if group_of is not None else None
        if key is None:
            min(groups, key=len).append(node)
        else:
            planes.setdefault(key, []).append(node)
    prev = -1
    for members in planes.values():
        extra = len(members) % n  # the groups from the start on that get one node more

        def load(start: int, extra: int = extra) -> int:
            return sum(len(groups[(start + i) % n]) for i in range(extra))

        start = min((g for g in range(n) if g != prev), key=lambda g: (load(g), g))
        for k, node in enumerate(members):
            groups[(start + k) % n].append(node)
        prev = start
    order = {node: i for i, node in enumerate(nodes)}
    return [sorted(g, key=order.__getitem__) for g in groups]


def routing_config(section: Fields | Any, *, source: str = "scenario",
                   line: int | None = None) -> dict[str, Any]:
    """The agents' routing from the scenario's ``routing:`` section (default CGR): an
    algorithm name or ``{algorithm: NAME, ...}``."""
    f = section if isinstance(section, Fields) else Fields(section, source=source,
                                                            path="routing", line=line)
    if f.is_none():
        return {"algorithm": "cgr"}
    config = {"algorithm": f.value} if isinstance(f.value, str) else f.value
    if not isinstance(config, dict) or not isinstance(config.get("algorithm"), str):
        raise f.error("must be an algorithm name or {algorithm: NAME, ...}")
    try:
        get_router(config["algorithm"])
    except Exception as e:  # noqa: BLE001 - the registry's own error text is the message
        raise f.error(str(getattr(e, "message", e)), "algorithm") from None
    return dict(config)


# --------------------------------------------------------------------------- options


@dataclass
class RunOptions:
    """What ``netemu demo`` / ``netemu test`` ask for."""

    scenario: Path
    out: Path | None = None
    profile: str | None = None  # "quick" or "test"
    start_s: float | None = None
    duration_s: float | None = None
    time_scale: float | None = None
    isl: bool | None = None
    shaper: str | None = None
    ip_routing: str | IpRouting | None = None  # "oracle", "none", "plugin:M:F" (default:
    # the scenario's)
    routing: str | None = None  # a routing algorithm instead of the scenario's
    agents: bool | None = None  # False: no agents; True: on every node (traffic: for all)
    traffic: Any = None  # a TrafficSpec instead of the scenario's traffic: section
    plan_s: float | None = None  # contact plan from the window's start (default: window)
    apps: bool = True
    report: bool = True
    run_name: str | None = None
    mqtt_port: int | None = None  # also serve MQTT on 127.0.0.1:PORT (dashboards)
    view: bool = False  # serve the live view in the browser (netemu.run.view)
    view_host: str = "127.0.0.1"
    view_port: int = 0  # 0: any free port
    agent_hosts: str | None = None  # "per-node", "auto" or N, instead of the scenario's
    lead_s: float | None = None  # wall s from bring-up to the window (default: estimated)
    app_grace_s: float = 5.0  # wall s an app has to exit after SIGTERM at the end
    echo: Callable[[str], None] = field(default=lambda s: print(s, flush=True))


@dataclass
class RunResult:
    run_dir: Path
    run: str
    metrics: dict[str, Any] | None = None
    report_path: Path | None = None
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    headline: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Prepared:
    """Everything checked before anything is built."""

    scenario: Any
    window: Window
    plan: Any
    apps: list[AppInstance]
    expectations: list[Any]
    routing: dict[str, Any]
    source: str
    captures: list[tuple[str, str]] = field(default_factory=list)
    ip_routing: IpRouting = field(default_factory=IpRouting)
    route_function: Any = None  # the plug-in's function (ip_routing mode plugin)
    traffic: Any = None  # the scenario's TrafficSpec, or None
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    faults: list[Fault] = field(default_factory=list)  # scheduled, in the window's plan


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class AgentProc:
    """A process serving bundle agents: one node's ``netemu agent``, or a node host."""

    label: str  # "the bundle agent of sat1", "the node host <HOST.json> (output: ...)"
    proc: subprocess.Popen[bytes]
    out: Path  # its stdout and stderr
    nodes: tuple[str, ...]  # the nodes it serves
    node_host: bool = False


_NODE_VARS = frozenset({NETEMU_NODE, NETEMU_NODE_ADDR, NETEMU_DTN_SOCKET, NETEMU_BP_SOCKET})
"""Variables about one node, never passed on to a node host that serves many."""


def _short_run_name() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "f" + "".join(secrets.choice(alphabet) for _ in range(5))


class ScenarioRun:
    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.echo = opts.echo
        self.prepared: Prepared | None = None
        self._stop = threading.Event()
        self._interrupted = False
        self._t0 = time.monotonic()
        self.phases_s: dict[str, float] = {}
        self._ca: RunCA | None = None
        self._agent_env: dict[str, dict[str, str]] = {}

    def _mark(self, phase: str) -> None:
        """Wall seconds from the start of execute() to the end of ``phase`` (run.json)."""
        self.phases_s[phase] = round(time.monotonic() - self._t0, 2)

    # --- checks (no root needed) -----------------------------------------------------

    def prepare(self) -> Prepared:
        path = Path(self.opts.scenario)
        if not path.is_file():
            raise InputError("scenario file not found", source=str(path))
        sc = load_scenario(path)
        src = str(path)
        window = emulation_window(
            sc.section("emulation"),
            scenario_duration_s=sc.duration_s,
            scenario_time_scale=sc.time_scale,
            profile=self.opts.profile,
            overrides={"start_s": self.opts.start_s, "duration_s": self.opts.duration_s,
                       "time_scale": self.opts.time_scale, "isl": self.opts.isl,
                       "shaper": self.opts.shaper},
            nodes=sc,
        )
        if self.opts.agents is not None:
            window = dc_replace(window, agents=None if self.opts.agents else ())
        if self.opts.agent_hosts is not None:
            given = self.opts.agent_hosts
            hosts, _ = _agent_hosts(Fields({"agent_hosts": int(given) if given.isdigit()
                                            else given}, source="--agent-hosts"))
            window = dc_replace(window, agent_hosts=hosts, agent_hosts_auto=False)
        routing = routing_config(sc.section("routing"))
        if self.opts.routing is not None and self.opts.routing != routing["algorithm"]:
            # another algorithm: the scenario's parameters were for its own
            routing = routing_config(self.opts.routing, source="--routing")
        telemetry = parse_telemetry(sc.section("telemetry"))
        ip_routing, route_function = self._ip_routing(sc, path)
        traffic = self.opts.traffic or getattr(sc, "traffic", None)
        if traffic is not None:
            _check_traffic_agents(sc, traffic, window)
        expectations = expect_mod.parse(sc.section("expect"))
        expect_mod.validate(expectations)
        captures: list[tuple[str, str]] = []
        if sc.sections.get("capture") is not None:
            captures = parse_capture_section(sc.sections["capture"], source=src)
            known = set(sc.node_names())
            for a, b in captures:
                for n in (a, b):
                    if n not in known:
                        raise sc.section("capture").error(f"no node named {n!r}")
        # every node of the scenario, for app selectors
        nodes = [NodeInfo(s.name, "satellite") for s in sc.satellites]
        nodes += [NodeInfo(g.name, "ground") for g in sc.ground_stations]
        instances: list[AppInstance] = []
        if self.opts.apps and sc.sections.get("apps"):
            apps_dir = find_apps_dir(path.parent)
            instances = plan_apps(sc.section("apps"), nodes, apps_dir=apps_dir)
        self.echo(f"netemu: computing the contact plan for {sc.name} "
                  f"[{window.start_s:g} s, {window.end_s:g} s] ...")
        # a little margin past the end so contacts running at the end keep their true end
        margin = min(120.0, sc.duration_s - window.end_s)
        plan_s = window.duration_s + margin
        if self.opts.plan_s is not None:  # what the agents plan with: e.g. a whole day
            plan_s = max(plan_s, min(self.opts.plan_s, sc.duration_s - window.start_s))
        plan = compute_plan(sc, start_s=window.start_s, duration_s=plan_s)
        if not window.isl:
            plan = ContactPlan(plan.epoch, plan.nodes,
                               [c for c in plan.contacts if c.kind != "isl"])
        faults = schedule_faults(getattr(sc, "faults", []), plan, window.start_s,
                                 window.end_s, source=src)
        _check_crash_agents(sc, faults, window)
        self.prepared = Prepared(sc, window, plan, instances, expectations, routing, src,
                                 captures, ip_routing, route_function, traffic, telemetry,
                                 faults)
        return self.prepared

    def _ip_routing(self, sc: Any, path: Path) -> tuple[IpRouting, Any]:
        """The scenario's ``ip_routing:`` (or the override), and a plug-in's function,
        imported now so that a broken one is refused before anything is built."""
        section = sc.section("ip_routing")
        opt = self.opts.ip_routing
        if opt is None:
            ipr = sc.ip_routing
        else:
            ipr = opt if isinstance(opt, IpRouting) else parse_ip_routing_option(opt)
            own = sc.ip_routing
            if ipr.mode == own.mode and ipr.mode != "plugin":
                # the same mode: the scenario's settings (timers) hold; a protocol named
                # with it (frr/isis) replaces the scenario's
                named = isinstance(opt, str) and "/" in opt
                ipr = dc_replace(own, protocol=ipr.protocol) if named else own
            else:  # another mode, measured as the scenario says (side by side)
                ipr = dc_replace(ipr, probes=own.probes, probe_interval_s=own.probe_interval_s,
                                 sample_s=own.sample_s,
                                 convergence_tolerance=own.convergence_tolerance)
        fn = None
        if ipr.daemons:
            why = frr_missing(ipr.mode)
            if why:
                raise InputError(why, source=section.source if opt is None else None,
                                 line=section.line if opt is None else None,
                                 field="ip_routing" if opt is None else "--ip-routing")
        if ipr.mode == "plugin":
            assert ipr.plugin is not None
            from netemu.emulator.iproute_plugin import load_route_function

            fn = load_route_function(ipr.plugin, search=[path.parent.resolve()],
                                     source=section.source if opt is None else None,
                                     line=section.line_of("plugin") if opt is None else None,
                                     field="ip_routing.plugin" if opt is None
                                     else "--ip-routing")
        return ipr, fn

    # --- the run itself --------------------------------------------------------------

    def execute_on_cluster(self, address: str) -> RunResult:
        """The run spread over the Ray cluster at ``address`` (netemu.run.cluster_scenario):
        one actor per host builds its share, agents and apps; metrics, expectations and
        the report from the gathered run directory, as for a local run."""
        from netemu.run.cluster_scenario import check, run_prepared

        p = self.prepared or self.prepare()
        check(p)
        if os.geteuid() != 0:
            raise NetemuError("the emulation builds network namespaces: run as root (sudo)")
        t0 = self._t0 = time.monotonic()
        run = self.opts.run_name or _short_run_name()
        result = RunResult(run_dir=self._run_dir(p.scenario).resolve(), run=run)
        run_prepared(address, p, result, echo=self.echo, app_grace_s=self.opts.app_grace_s)
        self._finish(result, p)
        result.wall_s = time.monotonic() - t0
        return result

    def _run_dir(self, sc: Any) -> Path:
        if self.opts.out is not None:
            d = Path(self.opts.out)
        else:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
            d = default_run_dir(sc.name, stamp)
        if d.exists() and any(d.iterdir()):
            raise InputError("output directory exists and is not empty; pick another with --out",
                             source=str(d))
        d.mkdir(parents=True, exist_ok=True)
        return d

    def execute(self) -> RunResult:
        p = self.prepared or self.prepare()
        if os.geteuid() != 0:
            raise NetemuError("the emulation builds network namespaces: run as root (sudo)")
        t_wall0 = self._t0 = time.monotonic()
        run = self.opts.run_name or _short_run_name()
        run_dir = self._run_dir(p.scenario).resolve()
        rd = RunDir(run_dir)
        result = RunResult(run_dir=run_dir, run=run)
        rd.logs_dir.mkdir(exist_ok=True)
        if p.scenario.path is not None:
            shutil.copyfile(p.scenario.path, rd.scenario_yaml)
        rd.plan_json.write_text(p.plan.to_json())
        if p.traffic is not None:
            table = traffic_table(p.traffic, p.plan)
            rd.traffic_json.write_text(json.dumps(table.to_obj(), separators=(",", ":")))
        meta: dict[str, Any] = {
            "run": run, "scenario": p.scenario.name, "scenario_path": p.source,
            "window": {"start_s": p.window.start_s, "duration_s": p.window.duration_s,
                       "time_scale": p.window.time_scale, "isl": p.window.isl},
            "routing": p.routing, "ip_routing": p.ip_routing.describe(),
            "apps": [i.key for i in p.apps],
            "faults": [f.to_obj() for f in p.faults],
            "started_utc": datetime.now(timezone.utc).isoformat(),
            "argv": sys.argv,
        }
        self._write_meta(rd, meta)

        old_int = signal.getsignal(signal.SIGINT)
        old_term = signal.getsignal(signal.SIGTERM)

        def on_signal(signum: int, _frame: Any) -> None:
            self._interrupted = True
            self._stop.set()
            raise RunInterrupted(f"stopped by {signal.Signals(signum).name}")

        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
        stack = contextlib.ExitStack()
        try:
            with stack:
                self._run(p, run, rd, stack, meta)
        except RunInterrupted as e:
            result.interrupted = True
            result.errors.append(str(e))
            self.echo(f"netemu: {e}; stopped cleanly, keeping what was measured")
        except NetemuError as e:
            result.errors.append(str(e))
            self.echo(f"netemu: error: {e}")
        except Exception as e:  # noqa: BLE001 - recorded in the run, then re-raised below
            result.errors.append(f"{type(e).__name__}: {e}")
            raise
        finally:
            if in_main:
                signal.signal(signal.SIGINT, old_int)
                signal.signal(signal.SIGTERM, old_term)
            meta["errors"] = result.errors
            meta["interrupted"] = result.interrupted
            meta["finished_utc"] = datetime.now(timezone.utc).isoformat()
            self._mark("stopped")
            meta["wall_s"] = round(time.monotonic() - t_wall0, 1)
            meta["phases_s"] = self.phases_s
            self._write_meta(rd, meta)
        self._finish(result, p)
        result.wall_s = time.monotonic() - t_wall0
        meta["wall_s"] = round(result.wall_s, 1)
        meta["phases_s"] = self.phases_s
        self._write_meta(rd, meta)
        return result

    def _start_ip_measure(self, p: Prepared, emu: Emulation, rd: RunDir,
                          stack: contextlib.ExitStack, meta: dict[str, Any]) -> None:
        """Path samples and UDP probe flows between ``ip_routing.probes`` pairs, into
        ``iproute/`` (netemu.emulator.ipmeasure); stopped before the emulation."""
        from netemu.emulator.ipmeasure import ControlCounters, PathSampler, Probes

        ipr = p.ip_routing
        out = rd.path / "iproute"
        meta["ip_measure"] = {"probes": [f"{a}:{b}" for a, b in ipr.probes],
                              "probe_interval_s": ipr.probe_interval_s,
                              "sample_s": ipr.sample_s,
                              "convergence_tolerance": ipr.convergence_tolerance}
        probes = Probes(emu, ipr.probes, out, interval_s=ipr.probe_interval_s)
        stack.callback(self._cleanup_step("the probe flows", probes.stop))
        probes.start()
        control = ControlCounters(emu, out)
        control.start()
        stack.callback(self._cleanup_step("the control-traffic counters", control.stop))
        sampler = PathSampler(emu, ipr.probes, out, sample_s=ipr.sample_s).start()
        stack.callback(self._cleanup_step("the path sampler", sampler.stop))
        self.echo(f"netemu: measuring IP routes between {len(ipr.probes)} pairs "
                  f"(probes every {ipr.probe_interval_s:g} s, paths every {ipr.sample_s:g} s)"
                  f" into {out}")

    @staticmethod
    def _write_meta(rd: RunDir, meta: dict[str, Any]) -> None:
        rd.run_json.write_text(json.dumps(meta, indent=1, default=str) + "\n")

    def _cleanup_step(self, what: str, fn: Callable[[], Any]) -> Callable[[], None]:
        """A teardown step that cannot be interrupted by Ctrl-C and never raises."""

        def step() -> None:
            prev = None
            if threading.current_thread() is threading.main_thread():
                prev = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - teardown goes on
                self.echo(f"netemu: while stopping {what}: {e}")
            finally:
                if prev is not None:
                    signal.signal(signal.SIGINT, prev)

        return step

    def _run(self, p: Prepared, run: str, rd: RunDir, stack: contextlib.ExitStack,
             meta: dict[str, Any]) -> None:
        w = p.window
        echo = self.echo
        # 1. telemetry: broker + recorder (before anything publishes)
        broker = Broker(run, log_path=rd.mosquitto_log,
                        tcp_port=self.opts.mqtt_port)
        access = broker.start()
        self._mark("broker_up")
        stack.callback(self._cleanup_step("the MQTT broker", broker.stop))
        clock_box: dict[str, Any] = {}

        def clock() -> float:
            c = clock_box.get("clock")
            return c.now_s() if c is not None else w.start_s

        recorder = Recorder(access, rd.events_jsonl, clock=clock,
                            max_bundle_events=p.telemetry.max_bundle_events)
        recorder.start()
        stack.callback(self._cleanup_step("the telemetry recorder", recorder.stop))
        publisher = SyncPublisher(access, client_id=f"netemu-emulator-{run}", clock=clock)
        stack.callback(self._cleanup_step("the link-event publisher", publisher.close))
        echo(f"netemu: telemetry on {access.socket_path} (MQTT, user {access.username}, "
             f"per-run password; topics {access.topic_prefix}/#); watch it live with")
        where = (f"-h 127.0.0.1 -p {access.tcp_port}" if access.tcp_port
                 else f"--unix {access.socket_path}")
        echo(f"  mosquitto_sub {where} -u {access.username} -P '{access.password}' "
             f"-t '{access.topic_prefix}/#' -v")

        pauser: RunPause | None = None
        view = None
        if self.opts.view:
            from netemu.run.view.launch import live_view

            view = live_view(access, p.plan, p.scenario, lambda: clock_box.get("clock"),
                             title=f"{p.scenario.name} ({run})", host=self.opts.view_host,
                             port=self.opts.view_port)
            echo(f"netemu: live view at {view.start()}")
            stack.callback(self._cleanup_step("the live view", view.stop))

        # 2. images for container apps, before the clock starts
        runner = AppRunner(run, rd.path, stop_grace_s=self.opts.app_grace_s)
        if any(i.mode == "container" for i in p.apps):
            echo("netemu: preparing container images (built locally, cached by content) ...")
            t0 = time.monotonic()
            try:
                tags = runner.prepare_images(p.apps)
                self._mark("images_ready")
                echo(f"netemu: images ready in {time.monotonic() - t0:.1f} s: "
                     f"{', '.join(sorted(set(tags.values())))}")
            except AppError as e:
                # a demo should still run where podman cannot: say so loudly, record it
                names = sorted({i.manifest.name for i in p.apps if i.mode == "container"})
                echo(f"netemu: WARNING: container images unavailable ({e}); running "
                     f"{', '.join(names)} as plain processes instead")
                meta["container_fallback"] = str(e)
                p.apps = [dc_replace(i, mode="process") if i.mode == "container" else i
                          for i in p.apps]

        # 3. the emulation; its clock reaches the window's start once the agents are up
        agent_nodes = list(p.plan.nodes) if w.agents is None else list(w.agents)
        n_hosts = w.hosts_for(len(agent_nodes)) if agent_nodes else None
        if n_hosts is not None:
            fitted, fd_limit = hosts_within_fd_limit(len(agent_nodes), n_hosts)
            if fitted > n_hosts:
                echo(f"netemu: {fitted} node hosts instead of {n_hosts}: a process may "
                     f"hold {fd_limit} open files (RLIMIT_NOFILE, hard limit), "
                     f"{FDS_PER_NODE} a node")
                n_hosts = fitted
        with_agent = set(agent_nodes)
        first = {(c.src, c.dst) if c.src < c.dst else (c.dst, c.src)
                 for c in p.plan.contacts if c.start_s <= w.start_s < c.end_s
                 and c.src in with_agent and c.dst in with_agent}
        lead_s = agent_bringup_s(len(agent_nodes), n_hosts, len(first))
        lead_s += app_bringup_s(sum(1 for i in p.apps if i.mode == "container"),
                                sum(1 for i in p.apps if i.mode != "container"))
        if self.opts.lead_s is not None:  # a slow machine: the estimate is for ours
            lead_s = self.opts.lead_s
        meta["clock_lead_s"] = round(lead_s, 1)
        emu = Emulation(p.plan, shaper=w.shaper, time_scale=w.time_scale,
                        ip_routing=p.ip_routing.installs_routes,
                        route_function=p.route_function,
                        frr=FrrSettings.of(p.ip_routing) if p.ip_routing.daemons else None,
                        routing_dir=rd.path / "frr" if p.ip_routing.daemons else None,
                        run_name=run, start_s=w.start_s, duration_s=w.duration_s,
                        tick_s=w.tick_s, clock_lead_s=lead_s, faults=p.faults)

        def on_link(ev: Any) -> None:
            publisher.publish(*link_message(ev))

        def on_fault(ev: Any) -> None:
            publisher.publish(*fault_message(ev.fault, ev.kind, ev.t_s))

        route_errors = [0]

        def on_route(ev: Any) -> None:
            if ev.kind != "error":
                return
            publisher.publish("iproute/error", {"event": "error", "t_s": ev.t_s,
                                                "message": ev.message})
            route_errors[0] += 1
            if route_errors[0] <= 3:  # the rest are in events.jsonl
                echo(f"netemu: WARNING at t={ev.t_s:.1f} s: {ev.message}; the routes in "
                     "place stay")

        emu.subscribe(on_link)
        emu.subscribe_scale(lambda t_s, x, n: publisher.publish("clock", shaped_message(t_s, x, n)))
        emu.subscribe_faults(on_fault)
        emu.subscribe_routes(on_route)
        echo(f"netemu: building {len(p.plan.nodes)} hosts and their links ...")
        emu.start()
        self._mark("emulation_up")
        if emu.frr is not None:  # the daemons' CPU and memory as they stop (run.json),
            frr = emu.frr  # recorded after the emulation's stop (a stack runs backwards)
            meta["frr_timers"] = frr.timers()  # those in force, scaled or the scenario's
            stack.callback(lambda: meta.__setitem__("frr_usage", frr.final_usage))
        stack.callback(self._cleanup_step("the emulation", emu.stop))
        if view is not None:
            # the page may pause the run: every process reads the clock through a clock
            # file, beside the broker's socket (which every host and container can reach)
            assert emu.clock is not None
            pauser = RunPause(Path(access.socket_path).parent / "clock", emu.clock,
                              processes=list,
                              publish=lambda payload: publisher.publish("clock", payload))
            emu.use_clock(pauser.clock)
            view.timeline.pause_control = pauser
        clock_box["clock"] = emu.clock
        # run.json says how the run's clock went: its start now (`netemu capture RUN_DIR`
        # reads it), every pause and change of scale at the end (after the pauser's close)
        start_clock = emu.clock
        assert start_clock is not None  # started above
        meta["clock"] = clock_record(start_clock)
        self._write_meta(rd, meta)
        stack.callback(lambda: meta.__setitem__("clock", clock_record(
            start_clock, pauser.segments if pauser is not None else None)))
        if p.ip_routing.probes:
            self._start_ip_measure(p, emu, rd, stack, meta)
        if broker.pid is not None:  # so that `netemu clean` stops it after a crash too
            with contextlib.suppress(Exception):
                emu.registry.add_pid(broker.pid, "mosquitto")
        meta["emulation"] = {"shaper": type(emu.shaper).__name__ if emu.shaper else None,
                             "shaper_reason": emu.shaper_reason,
                             "timings": {k: round(v, 3) for k, v in emu.timings.items()}}
        echo(f"netemu: emulation up in {emu.timings.get('up_s', 0):.1f} s "
             f"(shaper: {emu.shaper_reason or type(emu.shaper).__name__}); scenario clock at "
             f"{w.start_s:g} s, x{w.time_scale:g}"
             + (f", {lead_s:.0f} s from now (the agents' bring-up)" if lead_s else ""))

        if p.captures:
            net, emu_clock = emu.net, emu.clock
            assert net is not None and emu_clock is not None  # started above
            caps = start_scenario_captures(p.captures, rd.path,
                                           netns_of=lambda n: net.host_ns[n],
                                           clock_env=emu_clock.to_env())

            def stop_captures() -> None:
                for c in caps:
                    c.stop()

            stack.callback(self._cleanup_step("the captures", stop_captures))
            echo(f"netemu: capturing {', '.join(f'{a}:{b}' for a, b in p.captures)} "
                 f"into {rd.captures_dir}")

        sock_root = Path(tempfile.mkdtemp(prefix=f"netemu-{run}-"))
        stack.callback(lambda: shutil.rmtree(sock_root, ignore_errors=True))
        # what every process in a host is told (HostEnv names every variable)
        run_env = HostEnv(run=run, mqtt=access, window_start_s=w.start_s,
                          window_end_s=w.end_s, **p.telemetry.host_env(len(agent_nodes)))

        # 4. agents
        agents: list[AgentProc] = []
        dtn_sockets: dict[str, str] = {}
        if agent_nodes:
            # a node that crashes runs its own agent process, so that killing it kills
            # that node's agent only; the others run as chosen
            crashing = {f.nodes[0] for f in p.faults if f.kind == "node_crash"}
            own = agent_nodes if n_hosts is None else [n for n in agent_nodes if n in crashing]
            hosted = [] if n_hosts is None else [n for n in agent_nodes if n not in crashing]
            if hosted:
                agents, dtn_sockets = self._start_hosts(p, emu, rd, sock_root, run_env,
                                                        hosted, n_hosts or 1)
            if own:
                more, socks = self._start_agents(p, emu, rd, sock_root, run_env, own)
                agents += more
                dtn_sockets.update(socks)
            meta["agent_processes"] = len(agents)
            stack.callback(self._cleanup_step(
                "the bundle agents", lambda: _stop_procs([a.proc for a in agents], 10.0)))

        # 5. apps, while the agents come up and ahead of the window: they start (containers,
        # imports, models; their DTN client waits for the agent's socket) during the lead
        # and begin their work when the window opens (appkit.wait_for_window)
        stack.callback(self._cleanup_step("the apps", runner.close))
        compute = getattr(p.scenario, "compute", None)
        kinds = {s.name: "satellite" for s in p.scenario.satellites}
        for inst in p.apps:
            node_compute = compute.for_kind(kinds.get(inst.node, "ground")) if compute else None
            host_env = dc_replace(run_env, node=inst.node, node_addr=emu.node_addr(inst.node),
                                  clock=emu.clock, run_dir=rd.path,
                                  dtn_socket=dtn_sockets.get(inst.node),
                                  compute_ops_per_s=node_compute.ops_per_s if node_compute
                                  else None,
                                  host_ops_per_s=compute.host_ops_per_s if compute else None)
            runner.start(inst, _netns_path(emu, inst.node), host_env.to_env())
        if p.apps:
            assert emu.clock is not None
            ahead_s = emu.clock.t0_wall - time.time()
            meta["apps_started_before_window_s"] = round(ahead_s, 2)
            echo(f"netemu: started {len(p.apps)} app instances "
                 f"({', '.join(sorted({i.manifest.name for i in p.apps}))}), "
                 + (f"{ahead_s:.0f} s before the window opens" if ahead_s >= 0 else
                    f"{-ahead_s:.0f} s after the window opened"))
        self._mark("apps_started")
        if agents:
            self._wait_agents(agents, dtn_sockets, rd)
            self._mark("agents_ready")
            assert emu.clock is not None
            early_s = emu.clock.t0_wall - time.time()
            meta["agents_ready_before_window_s"] = round(early_s, 2)
            if early_s < 0:
                echo(f"netemu: WARNING: the agents were ready {-early_s:.1f} s (wall) after "
                     f"the window opened: its first {-early_s * w.time_scale:.0f} scenario "
                     "seconds ran without them")

        while (emu.clock is not None and time.time() < emu.clock.t0_wall
               and not self._stop.is_set()):
            time.sleep(min(0.1, max(0.0, emu.clock.t0_wall - time.time())))

        if pauser is not None:
            def run_processes() -> list[int]:
                # the node hosts run in the root namespace: not among the hosted ones
                pids = [q for a in agents for q in tree_pids(a.proc.pid)] + emu.hosted_pids()
                for ra in runner.apps:
                    pids += tree_pids(ra.proc.pid) + cgroup_pids(ra.cgroup.all_dirs)
                return pids

            pauser.processes = run_processes
            pauser.enabled = True
            # before the agents and apps are stopped: none may be left stopped
            stack.callback(self._cleanup_step("the paused clock", pauser.close))

        # 6. run the window (bracketed by run events, so the record covers all of it)
        publisher.publish("run", {"event": "started", "t_s": emu.now_s(),
                                  "window": [w.start_s, w.end_s], "time_scale": w.time_scale,
                                  "apps": len(p.apps), "agents": len(dtn_sockets)})
        crashes = NodeCrashes([f for f in p.faults if f.kind == "node_crash"], agents,
                              lambda node: self._spawn_agent(emu, rd, node, append=True),
                              publisher, echo)
        self._watch(emu, runner, agents, recorder, w, crashes)
        self._mark("window_done")
        publisher.publish("run", {"event": "ended", "t_s": emu.now_s(),
                                  "interrupted": self._interrupted})
        # the with-block's exit stops apps → agents → emulation → telemetry

    def _write_configs(self, p: Prepared, emu: Any, rd: RunDir, sock_root: Path,
                       nodes: list[str], *, keepalive_s: int | None = None
                       ) -> dict[str, AgentConfig]:
        """Each agent node's config, written to ``agents/<node>/agent.json``
        (``keepalive_s``: the TCPCL keepalive instead of the agent's default)."""
        plan_path = str(rd.plan_json)
        # with oracle routes a node address reaches any node; the agents dial the direct
        # link's own addresses while it is up either way
        addresses = ({n: emu.node_addr(n) for n in p.plan.nodes}
                     if p.ip_routing.reaches_nodes else {})
        peers = plan_peers(p.plan)  # one pass over the contacts for all nodes
        links = direct_links(emu.layout, set(nodes))
        traffic = str(rd.traffic_json) if p.traffic is not None else None
        configs: dict[str, AgentConfig] = {}
        if self._ca is None:  # one CA for the run's agents: TCPCL over TLS (docs/security.md)
            self._ca = RunCA.create(rd.agents_dir / "pki")
        ca = self._ca
        for node in nodes:
            rd.agent_dir(node).mkdir(parents=True, exist_ok=True)
            sdir = sock_root / node
            sdir.mkdir(parents=True, exist_ok=True)
            cfg = AgentConfig.for_plan_node(p.plan, node, addresses, plan_path=plan_path,
                                            run_dir=str(sdir), routing=p.routing, peers=peers,
                                            links=links.get(node, {}))
            cfg.store = str(rd.agent_store(node))
            cfg.log = str(rd.agent_log(node))
            cfg.traffic = traffic
            cfg.traffic_records = str(rd.agent_traffic(node))
            if keepalive_s is not None:
                cfg.keepalive_s = keepalive_s
            secure_run_agent(ca, cfg, rd.agent_dir(node), run_tls_mode(bool(p.captures)))
            cfg.write(rd.agent_config(node))
            configs[node] = cfg
        return configs

    def _start_agents(self, p: Prepared, emu: Any, rd: RunDir, sock_root: Path,
                      run_env: HostEnv, nodes: list[str]
                      ) -> tuple[list[AgentProc], dict[str, str]]:
        """One ``netemu agent`` process per node, in the node's namespace."""
        self.echo(f"netemu: starting {len(nodes)} bundle agents "
                  f"(routing: {p.routing['algorithm']}) ...")
        configs = self._write_configs(p, emu, rd, sock_root, nodes)
        procs: list[AgentProc] = []
        for node, cfg in configs.items():
            self._agent_env[node] = {**dc_replace(run_env, dtn_socket=cfg.app_socket).to_env(),
                                     "PYTHONUNBUFFERED": "1"}
            procs.append(self._spawn_agent(emu, rd, node))
        return procs, {n: c.app_socket for n, c in configs.items()}

    def _spawn_agent(self, emu: Any, rd: RunDir, node: str, *, append: bool = False
                     ) -> AgentProc:
        """Start ``node``'s ``netemu agent`` process (again, after a crash: ``append``
        keeps its earlier output); it opens the node's store as it finds it."""
        out = open(rd.agent_out(node), "ab" if append else "wb")  # noqa: SIM115 - the child holds it
        proc = emu.popen(node, [sys.executable, "-m", "netemu", "agent", "--node",
                                node, "--config", str(rd.agent_config(node))],
                         env=self._agent_env[node], stdout=out, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        return AgentProc(f"the bundle agent of {node}", proc, rd.agent_out(node), (node,))

    def _start_hosts(self, p: Prepared, emu: Any, rd: RunDir, sock_root: Path,
                     run_env: HostEnv, nodes: list[str], n_hosts: int
                     ) -> tuple[list[AgentProc], dict[str, str]]:
        """``n_hosts`` node-host processes in the root namespace, each serving a group of
        the nodes (whole planes dealt in turn, ground stations one by one: see
        ``split_nodes``); every node's sockets are made in its own namespace."""
        order = {n: i for i, n in enumerate(p.plan.nodes)}
        nodes = sorted(nodes, key=lambda n: order.get(n, len(order)))
        planes = {s.name: (getattr(s, "group", 0), getattr(s, "plane", 0))
                  for s in getattr(p.scenario, "satellites", [])}
        groups = split_nodes(nodes, n_hosts, planes.get)
        self.echo(f"netemu: starting {len(nodes)} bundle agents in {len(groups)} node hosts "
                  f"(routing: {p.routing['algorithm']}) ...")
        configs = self._write_configs(p, emu, rd, sock_root, nodes,
                                      keepalive_s=HOSTED_KEEPALIVE_S)
        rd.hosts_dir.mkdir(parents=True, exist_ok=True)
        # the run's clock and broker, as for a single agent; nothing about one node
        env = {k: v for k, v in os.environ.items() if k not in _NODE_VARS}
        env.update(dc_replace(run_env, clock=emu.clock).to_env(), PYTHONUNBUFFERED="1")
        procs: list[AgentProc] = []
        for i, group in enumerate(groups):
            host_json = rd.host_config(i)
            host_json.write_text(json.dumps({"nodes": [
                {"config": str(rd.agent_config(n)), "netns": _netns_path(emu, n)}
                for n in group]}, indent=1) + "\n")
            out = open(rd.host_out(i), "wb")  # noqa: SIM115 - the child holds it
            proc = subprocess.Popen(
                [sys.executable, "-m", "netemu.agent.nodehost", "--config", str(host_json)],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
            out.close()
            with contextlib.suppress(Exception):  # so that `netemu clean` stops it too
                emu.registry.add_pid(proc.pid, f"nodehost:{i}")
            procs.append(AgentProc(f"the node host {host_json} (output: {rd.host_out(i)})",
                                   proc, rd.host_out(i), tuple(group), node_host=True))
        return procs, {n: c.app_socket for n, c in configs.items()}

    def _wait_agents(self, agents: list[AgentProc], sockets: dict[str, str],
                     rd: RunDir) -> None:
        """Until every agent's app socket exists; an agent process that exits is an error."""
        serving = {node: a for a in agents for node in a.nodes}
        timeout_s = max(AGENT_READY_TIMEOUT_S + AGENT_READY_S_PER_NODE * len(serving),
                        self.opts.lead_s or 0.0)
        deadline = time.monotonic() + timeout_s
        waiting = set(serving)
        while waiting and time.monotonic() < deadline and not self._stop.is_set():
            for node in sorted(waiting):
                a = serving[node]
                if os.path.exists(sockets[node]):
                    waiting.discard(node)
                elif a.proc.poll() is not None:
                    tail = a.out.read_text(errors="replace") if a.out.exists() else ""
                    raise NetemuError(f"{a.label} exited with status "
                                      f"{a.proc.returncode}:\n{tail[-1500:]}")
            time.sleep(0.1)
        if waiting:
            where = (f"{rd.hosts_dir}/*.out and {rd.agents_dir}/*/agent.jsonl"
                     if any(a.node_host for a in agents) else f"{rd.agents_dir}/*/agent.out")
            names = sorted(waiting)
            more = f" and {len(names) - 20} more" if len(names) > 20 else ""
            raise NetemuError(f"bundle agents not ready after {timeout_s:.0f} s: "
                              f"{', '.join(names[:20])}{more} (see {where})")
        self.echo(f"netemu: {len(serving)} agents ready")

    def _watch(self, emu: Any, runner: AppRunner, agents: list[AgentProc], recorder: Any,
               w: Window, crashes: NodeCrashes | None = None) -> None:
        """Wait for the end of the window, printing a status line now and then; crash and
        restart nodes on time (``faults:``)."""
        last = 0.0
        dead_agents: set[int] = set()
        while not emu.finished:
            due = crashes.next_s() if crashes is not None else None
            emu.wait(until_s=due, timeout=1.0)
            if crashes is not None:
                for i in crashes.apply(emu.now_s()):
                    dead_agents.discard(i)  # restarted: watched again
            for ra in runner.poll():
                st = ra.exit_status
                self.echo(f"netemu: app {ra.instance.key} ended with status {st}"
                          + ("" if st == 0 else f" (see {ra.out_dir}/stderr.log)"))
            for i, a in enumerate(agents):
                if crashes is not None and i in crashes.down:
                    continue  # killed on purpose; restarted when its fault ends
                if i not in dead_agents and a.proc.poll() is not None:
                    dead_agents.add(i)
                    served = f" (its nodes: {', '.join(a.nodes)})" if a.node_host else ""
                    self.echo(f"netemu: WARNING: {a.label} exited with status "
                              f"{a.proc.returncode}{served}")
            now = time.monotonic()
            if now - last >= 15.0 or emu.finished:
                last = now
                t = emu.now_s()
                done = (t - w.start_s) / w.duration_s if w.duration_s else 1.0
                running = sum(1 for ra in runner.apps if not ra.finished)
                self.echo(f"netemu: t={t:8.0f} s ({100 * min(1.0, done):3.0f}%)  links up "
                          f"{emu.stats.links_up:3d}  events {recorder.count:6d}  apps running "
                          f"{running}/{len(runner.apps)}")

    # --- after the run -----------------------------------------------------------------

    def _finish(self, result: RunResult, p: Prepared) -> None:
        try:
            metrics_mod.write(result.run_dir)
            result.metrics = metrics_mod.load(result.run_dir)
            self._mark("metrics_written")
        except Exception as e:  # noqa: BLE001 - a run without metrics still has its files
            result.errors.append(f"metrics: {e}")
            self.echo(f"netemu: could not compute metrics: {e}")
            return
        late = result.metrics.get("compute_late_requests")
        if late:
            self.echo(f"netemu: WARNING: {late} of {result.metrics.get('compute_requests')} "
                      "inference requests left later than the nodes' modelled compute: this "
                      f"host cannot keep up at x{p.window.time_scale:g} (see the apps' "
                      "stderr.log; a smaller time scale helps)")
        if p.expectations:
            # before the report, so that it shows them (netemu test rewrites junit.xml
            # with its timing; the outcomes are the same)
            try:
                outcomes = expect_mod.evaluate(p.expectations, result.metrics)
                expect_mod.write_results(result.run_dir, outcomes, suite=p.scenario.name)
            except Exception as e:  # noqa: BLE001
                result.errors.append(f"expectations: {e}")
        if self.opts.report:
            try:
                result.report_path = report_mod.build(result.run_dir)
                self._mark("report_written")
                result.headline = list(report_mod.headline(result.metrics))
            except Exception as e:  # noqa: BLE001
                result.errors.append(f"report: {e}")
                self.echo(f"netemu: could not write the report: {e}")


def hosts_within_fd_limit(n_agents: int, n_hosts: int) -> tuple[int, int]:
    """At least ``n_hosts`` node hosts for ``n_agents`` agents, more where one would need
    more open files than a process may hold, and that limit. The node hosts inherit this
    process's limit, raised here as far as allowed: in a container without
    CAP_SYS_RESOURCE the hard limit (often 20,000) is as far as it goes, and a node past
    it fails to open sockets and store files mid-run."""
    largest = math.ceil(n_agents / n_hosts * (1 + SPLIT_SLACK))  # (split_nodes)
    limit = raise_fd_limit(largest * FDS_PER_NODE + FDS_RESERVE)
    fit = max(1, (limit - FDS_RESERVE) // FDS_PER_NODE)
    return max(n_hosts, math.ceil(n_agents * (1 + SPLIT_SLACK) / fit)), limit


def agent_bringup_s(n_agents: int, n_hosts: int | None, n_sessions: int = 0) -> float:
    """Wall seconds to allow the agents to start, and to set up the sessions of the
    contacts up at the window's start, before the window opens; generous: about 0.06 s
    per node in a node host (its nodes start one after another; measured 6.5 s for 100
    nodes a host), 0.5 s per agent process shared among the CPUs, and 10 ms per session
    (TCP, TCPCL and TLS handshakes at both ends) shared among the processes."""
    if n_agents <= 0:
        return 0.0
    procs = n_hosts or max(1, os.cpu_count() or 1)
    setup_s = 0.01 * n_sessions / procs
    if n_hosts is None:
        return 3.0 + 0.5 * n_agents / procs + setup_s
    return 3.0 + 0.06 * math.ceil(n_agents / n_hosts) + setup_s


def app_bringup_s(n_containers: int, n_processes: int, cpus: int | None = None) -> float:
    """Wall seconds to allow the apps to start before the window opens: about 2 s per
    container (podman and runc, then Python and onnxruntime imports under the app's CPU
    quota; podman serialises part of it) and 0.5 s per process app, shared among the
    CPUs (``cpus``, default this machine's). Measured on 2 cores: 1.9 s for one
    container, alone, to load its ONNX model."""
    if n_containers + n_processes == 0:
        return 0.0
    return (2.0 * n_containers + 0.5 * n_processes) / max(1, cpus or os.cpu_count() or 1)


def direct_links(layout: Any, nodes: set[str]
                 ) -> dict[str, dict[str, list[tuple[float, float, str]]]]:
    """For each of ``nodes``: its neighbours' ends of the direct links, by time
    (``[(start_s, end_s, "addr:4556")]``, sorted), from the emulation's layout: an ISL's
    pair link, or the GSL slots a pass was given."""
    out: dict[str, dict[str, list[tuple[float, float, str]]]] = {}
    eps = layout.endpoints
    for per in layout.periods:
        for me, peer, peer_ep in ((per.a, per.b, per.ep_b), (per.b, per.a, per.ep_a)):
            if me in nodes:
                out.setdefault(me, {}).setdefault(peer, []).append(
                    (per.start_s, per.end_s, f"{eps[peer_ep].addr}:4556"))
    for by_peer in out.values():
        for lst in by_peer.values():
            lst.sort()
    return out


def traffic_table(spec: Any, plan: Any) -> TrafficTable:
    """The run's ``traffic.json``: every flow, and the ipn number of every node."""
    return TrafficTable(DEFAULT_SERVICE, tuple(flows(spec)),
                        {n: node.ipn for n, node in plan.nodes.items()}, {})


def _check_traffic_agents(sc: Any, spec: Any, window: Window) -> None:
    """Every flow's sender and receiver must run a bundle agent (``emulation.agents``)."""
    if window.agents is None:
        return
    with_agent = set(window.agents)
    for e in spec.entries:
        missing = sorted({n for n in (*e.sources, *e.destinations) if n not in with_agent})
        if missing:
            where = f"{spec.source}:{e.line}" if e.line else spec.source
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise InputError(
                f"traffic flow {e.name!r} sends or takes bundles at {', '.join(missing[:5])}"
                f"{more}, which run no bundle agent (emulation.agents)", source=where)


def _check_crash_agents(sc: Any, faults: list[Fault], window: Window) -> None:
    """Every node a ``node_crash`` fault names must run a bundle agent."""
    with_agent = set(window.agents) if window.agents is not None else None
    for f in faults:
        if f.kind == "node_crash" and with_agent is not None and f.nodes[0] not in with_agent:
            raise sc.section("faults").error(
                f"fault {f.id!r} crashes {f.nodes[0]}, which runs no bundle agent "
                "(emulation.agents)")


def fault_message(fault: Fault, event: str, t_s: float, **extra: Any
                  ) -> tuple[str, dict[str, Any]]:
    """A fault starting or ending as the ``fault/<id>`` telemetry message."""
    return f"fault/{fault.id}", {"event": event, "t_s": t_s, **fault.to_obj(), **extra}


class NodeCrashes:
    """The ``node_crash`` faults of a run: at a fault's start its node's agent process is
    killed with SIGKILL (no chance to save anything but what its store already holds), at
    its end the agent is started again and reopens its store."""

    def __init__(self, faults: list[Fault], agents: list[AgentProc],
                 spawn: Callable[[str], AgentProc], publisher: Any,
                 echo: Callable[[str], None]) -> None:
        self.agents = agents  # replaced in place on restart (teardown stops the new one)
        self.spawn = spawn
        self.publisher = publisher
        self.echo = echo
        self.todo = sorted([(f.start_s, 1, f) for f in faults] + [(f.end_s, 0, f) for f in faults],
                           key=lambda e: (e[0], e[1], e[2].id))
        self.down: set[int] = set()  # indices into agents killed and not yet restarted

    def next_s(self) -> float | None:
        return self.todo[0][0] if self.todo else None

    def _index(self, node: str) -> int:
        return next(i for i, a in enumerate(self.agents) if a.nodes == (node,))

    def apply(self, now_s: float) -> list[int]:
        """Crash and restart what is due at scenario time ``now_s``; the indices of the
        agents restarted."""
        restarted = []
        while self.todo and self.todo[0][0] <= now_s:
            _t, crash, f = self.todo.pop(0)
            node = f.nodes[0]
            i = self._index(node)
            a = self.agents[i]
            if crash:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(a.proc.pid, signal.SIGKILL)
                a.proc.wait()
                self.down.add(i)
                self.echo(f"netemu: fault {f.id}: killed the bundle agent of {node} "
                          f"(SIGKILL) at t={now_s:.1f} s")
                self.publisher.publish(*fault_message(f, "started", now_s, pid=a.proc.pid))
            else:
                new = self.spawn(node)
                self.agents[i] = new
                self.down.discard(i)
                restarted.append(i)
                self.echo(f"netemu: fault {f.id}: restarted the bundle agent of {node} "
                          f"from its store at t={now_s:.1f} s")
                self.publisher.publish(*fault_message(f, "ended", now_s, pid=new.proc.pid))
        return restarted


def _netns_path(emu: Any, node: str) -> str:
    return ns_path(emu.net.host_ns[node])


def link_message(ev: Any) -> tuple[str, dict[str, Any]]:
    """A driver LinkEvent as the telemetry contract's ``link/<a>/<b>`` message."""
    kind = {"up": "up", "down": "down", "params": "update", "stopped": "down"}.get(ev.kind, ev.kind)
    payload: dict[str, Any] = {"event": kind, "t_s": ev.t_s, "link": ev.link,
                               "if_a": ev.if_a, "if_b": ev.if_b}
    if ev.kind == "stopped":
        payload["direction"] = f"{ev.a}->{ev.b}"
    for k in ("delay_s", "rate_bps", "loss"):
        v = getattr(ev, k, None)
        if v is not None:
            payload[k] = v
    return f"link/{ev.a}/{ev.b or '-'}", payload


def shaped_message(t_s: float, time_scale: float, directions: int) -> dict[str, Any]:
    """The ``clock`` message once the emulator shapes the links at a new time scale."""
    return {"event": "shaped", "t_s": t_s, "time_scale": time_scale, "directions": directions}


def _stop_procs(procs: Any, grace_s: float) -> None:
    procs = [p for p in procs if p.poll() is None]
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.1, deadline - time.monotonic()))
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()


__all__ = ["AgentProc", "NodeCrashes", "Prepared", "RunInterrupted", "RunOptions", "RunResult", "ScenarioRun",
           "Window", "emulation_window", "routing_config", "split_nodes"]
