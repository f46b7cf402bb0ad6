"""``netemu run SCENARIO``: build the emulated network and drive its links in real time.

One host per satellite and ground station; every link's delay, rate, loss and state follow
the scenario's schedule at its time scale. Shows a live status (scenario time, links up,
updates per tick, tick lateness) until the end of the duration or Ctrl-C, then tears the
network down. ``--cli`` gives Mininet's CLI instead (``sat3 ping gs-kashi``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from netemu.commands._args import number, seconds
from netemu.commands._view import LiveViewForEmulation, add_view_args
from netemu.emulator import Emulation
from netemu.emulator.emulation import new_run_name, vtysh_shell_function
from netemu.emulator.events import RouteEvent
from netemu.emulator.frr import FrrSettings, frr_missing
from netemu.emulator.hosts import EmuCLI, EmuHost, EmuNet
from netemu.emulator.iproute_plugin import load_route_function
from netemu.emulator.registry import Registry, list_runs, proc_start_time
from netemu.errors import InputError
from netemu.plan.contacts import ContactPlan
from netemu.plan.faults import EMULATOR_KINDS, schedule_faults
from netemu.plan.iprouting import IpRouting, parse_ip_routing_option
from netemu.plan.source import PlanSource
from netemu.runtime.env import HostEnv


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="emulate a scenario: Mininet hosts, links follow the "
                              "orbits in real time", description=__doc__)
    p.add_argument("scenario", type=Path, nargs="?", help="scenario YAML (topologies/*.yaml) "
                   "or a contact plan (.json / ION)")
    p.add_argument("--attach", metavar="RUN", help="open Mininet's CLI on a running emulation "
                   "(another process's run) instead of starting one")
    p.add_argument("--shaper", choices=("auto", "relay", "netem"), default="auto",
                   help="link shaper: kernel netem, userspace relay, or probe (default)")
    p.add_argument("--time-scale", type=number(lo=0, lo_open=True), help="scenario seconds per wall second "
                   "(default: the scenario's)")
    p.add_argument("--start-s", type=seconds(lo=0), default=0.0, help="scenario time to start at")
    p.add_argument("--duration-s", type=seconds(lo=0, lo_open=True), help="scenario seconds to run (default: all)")
    p.add_argument("--tick-s", type=seconds(lo=0, lo_open=True), default=0.1, help="driver tick, wall seconds")
    p.add_argument("--ip-routing", metavar="MODE",
                   help="IP routes: oracle (shortest delay), none (run your own daemons), frr "
                   "or bird (OSPF daemons in every node), frr/ospf6, frr/isis or plugin:MODULE:FUNCTION (default: the scenario's ip_routing:, else oracle)")
    p.add_argument("--no-ip-routing", action="store_true",
                   help="the same as --ip-routing none")
    p.add_argument("--run-name", help="name of this run (namespaces <run>-<node>); default random")
    p.add_argument("--cli", action="store_true", help="open Mininet's CLI on the running network")
    p.add_argument("--relay-workers", type=int, help="relay processes (default: CPUs, max 4)")
    p.add_argument("--relay-gso", action="store_true",
                   help="relay carries GSO super-frames (faster TCP; loss applies per burst)")
    p.add_argument("--quiet", action="store_true", help="no live status")
    add_view_args(p)
    p.add_argument("--cluster", metavar="ADDRESS", help="spread the run over a Ray cluster "
                   "(ADDRESS of its head, or auto: the one this machine is a node of): links, "
                   "IP routes and with --agents bundle agents (docs/cluster.md)")
    p.add_argument("--agents", action="store_true",
                   help="with --cluster: a bundle agent in every node (the scenario's "
                   "routing:, traffic:, apps:, capture:), telemetry and their files in a "
                   "run directory (--out)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="with --agents: the run directory (default runs/<name>-<time>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.attach:
        return attach(args.attach)
    if args.scenario is None:
        raise InputError("give a scenario file (or --attach RUN)")
    t0 = time.monotonic()
    source = PlanSource.open(args.scenario)
    plan = source.plan(start_s=args.start_s, duration_s=args.duration_s)
    for w in plan.warnings:
        print(f"netemu run: warning: {w}", file=sys.stderr)
    t_plan = time.monotonic() - t0
    scale = args.time_scale or source.time_scale
    faults = []
    if source.scenario is not None and source.scenario.faults:
        # the scenario's link faults; a node crash needs agents (netemu test / demo)
        end = max((c.end_s for c in plan.contacts), default=args.start_s)
        if args.duration_s is not None:
            end = args.start_s + args.duration_s
        faults = schedule_faults(source.scenario.faults, plan, args.start_s, end,
                                 source=str(args.scenario))
        if any(f.kind not in EMULATOR_KINDS for f in faults):
            print("netemu run: node_crash faults left out: no bundle agents run here "
                  "(netemu test and netemu demo run them)", file=sys.stderr)
        faults = [f for f in faults if f.kind in EMULATOR_KINDS]
    ipr, route_function = _ip_routing(args, source)
    if args.agents and not args.cluster:
        raise InputError("--agents goes with --cluster (netemu test and netemu demo run "
                         "agents on one machine)", field="--agents")
    if args.out and not args.agents:
        raise InputError("--out is the run directory of --cluster --agents", field="--out")
    if args.cluster:
        if args.view:
            raise InputError("--view and --cluster: a run spread over a cluster has no live "
                             "view yet; leave out --view (docs/view.md)", field="--view")
        if args.cli or args.shaper == "netem" or ipr.daemons or route_function:
            raise InputError("--cluster: --cli, --shaper netem and ip_routing frr, bird or "
                             "plugin are not supported across hosts yet (docs/cluster.md)",
                             field="cluster")
        return _run_cluster(args, plan, source, scale, ipr.installs_routes, faults)
    emu = Emulation(plan, shaper=args.shaper, time_scale=scale,
                    ip_routing=ipr.installs_routes, route_function=route_function,
                    frr=FrrSettings.of(ipr) if ipr.daemons else None,
                    run_name=args.run_name,
                    start_s=args.start_s, duration_s=args.duration_s, tick_s=args.tick_s,
                    relay_workers=args.relay_workers, relay_gso=args.relay_gso,
                    faults=faults)

    def on_route(ev: RouteEvent) -> None:
        if ev.kind == "error":
            print(f"\nnetemu run: t={ev.t_s:.1f} s: {ev.message}; the routes in place stay",
                  file=sys.stderr, flush=True)

    emu.subscribe_routes(on_route)
    emu.subscribe_faults(lambda ev: print(
        f"\nnetemu run: fault {ev.fault.id} ({ev.fault.kind}, {', '.join(ev.fault.nodes)}) "
        f"{ev.kind} at t={ev.t_s:.1f} s", flush=True))
    lay = emu.layout
    print(f"netemu run {emu.run}: {len(lay.nodes)} hosts, {len(lay.endpoints)} interfaces, "
          f"{len(lay.periods)} link periods (plan computed in {t_plan:.1f} s)", flush=True)

    def on_term(*_a: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    view = LiveViewForEmulation(emu, source.scenario, args) if args.view else None
    try:
        if view is not None:
            print(f"netemu run: live view at {view.start()}", flush=True)
        emu.start()
        if view is not None:
            view.clock_started()
        print(f"shaper: {emu.shaper_reason}; up in {emu.timings['up_s']:.1f} s; time scale "
              f"{scale:g}; IP routing {ipr.describe()}", flush=True)
        if args.cli:
            emu.cli()
        elif args.quiet or not sys.stdout.isatty():
            emu.wait()
        else:
            _live(emu)
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down", file=sys.stderr)
    finally:
        down = emu.stop()
        if view is not None:
            view.stop()
        signal.signal(signal.SIGTERM, old)
        if down:
            st = emu.stats
            print(f"down in {down.get('down_s', 0):.1f} s; {st.ticks} ticks, {st.updates} link "
                  f"updates, p99 tick lateness {st.p99(st.lateness_s) * 1e3:.1f} ms, "
                  f"{st.missed_ticks} missed ticks")
    return 1 if emu.driver_error else 0


def _run_cluster(args: argparse.Namespace, plan: ContactPlan, source: PlanSource,
                 scale: float, routes: bool, faults: list[Any]) -> int:
    """The run spread over a Ray cluster: this process coordinates, one actor per host
    builds and drives that host's share (netemu.run.cluster) and applies the link faults
    to its own links."""
    from netemu.run.cluster import Cluster, ClusterError
    from netemu.run.cluster_scenario import FaultNotices

    run = args.run_name or new_run_name("c")[:6]
    planes: dict[str, tuple[int, int]] = {}
    if source.scenario is not None:
        planes = {s.name: (s.group, s.plane) for s in source.scenario.satellites
                  if s.plane is not None}
    end = max((c.end_s for c in plan.contacts), default=args.start_s)
    if args.duration_s is not None:
        end = args.start_s + args.duration_s
    opts = {"ip_routing": routes,
            "time_scale": scale, "start_s": args.start_s, "duration_s": args.duration_s,
            "tick_s": args.tick_s, "relay_workers": args.relay_workers,
            "relay_gso": args.relay_gso, "faults": faults}
    agents: dict[str, Any] | None = None
    run_dir: Path | None = None
    apps: list[Any] = []
    if args.agents:
        import json

        from netemu.run.runner import routing_config, traffic_table
        from netemu.run.telemetry_config import parse_telemetry

        sc = source.scenario
        agents = {"routing": {"algorithm": "cgr"}, "window_start_s": args.start_s,
                  "window_end_s": end}
        if sc is not None:  # as a local run reads the scenario's sections
            tel = parse_telemetry(sc.section("telemetry"))
            agents.update(routing=routing_config(sc.section("routing")),
                          counters_s=tel.counters_s,
                          bundle_events=tel.bundle_events_for(len(plan.nodes)),
                          max_bundle_events=tel.max_bundle_events)
            if sc.traffic is not None:
                agents["traffic_json"] = json.dumps(traffic_table(sc.traffic, plan).to_obj(),
                                                    separators=(",", ":"))
            if sc.sections.get("capture") is not None:
                from netemu.run.capture import parse_capture_section

                caps = parse_capture_section(sc.sections["capture"], source=str(sc.path))
                for n in {n for link in caps for n in link} - set(plan.nodes):
                    raise sc.section("capture").error(f"no node named {n!r}")
                agents["captures"] = caps
            if sc.sections.get("apps"):  # each on its node's host (netemu.run.cluster_apps)
                from netemu.run.apps import NodeInfo, find_apps_dir, plan_apps

                infos = [NodeInfo(x.name, "satellite") for x in sc.satellites]
                infos += [NodeInfo(g.name, "ground") for g in sc.ground_stations]
                apps = plan_apps(sc.section("apps"), infos,
                                 apps_dir=find_apps_dir(Path(args.scenario).parent))
        name = sc.name if sc is not None else Path(args.scenario).stem
        run_dir = (args.out or Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
                   ).resolve()
        if run_dir.exists() and any(run_dir.iterdir()):
            raise InputError("output directory exists and is not empty; pick another with "
                             "--out", source=str(run_dir))
    cl = Cluster(args.cluster)

    def on_term(*_a: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, on_term)
    reg = Registry(run)
    notices: FaultNotices | None = None
    try:
        cl.connect()
        print(f"netemu run {run}: {len(plan.nodes)} nodes over {len(cl.hosts)} hosts "
              f"({', '.join(h['addr'] for h in cl.hosts)}); IP routing "
              f"{'on' if routes else 'off'}", flush=True)
        part = cl.start(plan, run=run, opts=opts, plane_of=planes.get, agents=agents,
                        run_dir=run_dir, apps=apps)
        summary = cl.summary()
        reg.create({"cluster": summary, "hosts": cl.run_names})
        offs = max(abs(o) for o in cl.offsets_s.values())
        print(f"up: nodes by host {part.loads()}, {len(part.cross_links)} cross-host links; "
              f"clocks within {offs * 1e3:.3f} ms, underlay {cl.underlay_s * 1e3:.3f} ms one "
              f"way (subtracted)", flush=True)
        if run_dir is not None:
            print(f"agents: {len(plan.nodes)} ready, {len(apps)} app instances; telemetry "
                  f"and their files into {run_dir}", flush=True)
        if faults and cl.telemetry is not None and cl.telemetry.access is not None:
            notices = FaultNotices(faults, cl.telemetry.access, cl.telemetry.now_s, run)
            notices.start()  # fault/<id> in events.jsonl, as a local run records them
        if cl.late_s > 0:
            print(f"netemu run: WARNING: the last host was up {cl.late_s:.1f} s (wall) after "
                  "the scenario clock started: the window's start ran without all of it",
                  file=sys.stderr, flush=True)
        cl.wait(cl.start_wall + (end - args.start_s) / scale)
    except ClusterError as e:
        print(f"netemu run: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down", file=sys.stderr)
    finally:
        if notices is not None:
            notices.stop()
        cl.stop()  # with agents: their files gathered into run_dir
        if run_dir is not None and cl.hosts:
            cl.record(run_dir / "run.json")
        reg.remove()
        signal.signal(signal.SIGTERM, old)
    if run_dir is not None:
        print(f"run directory: {run_dir} (netemu report {run_dir})")
    print("down")
    return 0


def _live(emu: Emulation) -> None:
    from rich.live import Live
    from rich.table import Table

    clock = emu.clock
    assert clock is not None, "started"

    def render() -> Table:
        st = emu.stats
        t = emu.now_s()
        tab = Table(title=f"netemu run {emu.run} — {emu.shaper_reason}", show_header=False)
        tab.add_row("scenario time", f"{clock.utc_at(t):%Y-%m-%d %H:%M:%S} UTC "
                    f"(t+{t:,.1f} s of {emu.end_s:,.0f})")
        tab.add_row("links up", f"{st.links_up:,} of {len(emu.layout.periods):,} periods")
        tab.add_row("updates", f"{st.last_updates} last tick, {st.updates:,} total, "
                    f"{st.route_changes:,} route changes")
        recent = st.lateness_s[-100:]
        tab.add_row("tick lateness", f"p99 {st.p99(recent) * 1e3:.2f} ms (last 100), "
                    f"{st.missed_ticks} missed")
        cost = st.cost_s[-100:]
        tab.add_row("tick cost", f"p99 {st.p99(cost) * 1e3:.2f} ms")
        c = emu.shaper.counters() if emu.shaper else {}
        if c:
            tab.add_row("relay", f"{c['frames']:,.0f} frames, {c['lost']:,.0f} lost, "
                        f"{c['queue_drops']:,.0f} queue drops")
        return tab

    with Live(render(), refresh_per_second=4) as live:
        while not emu.finished:
            time.sleep(0.25)
            live.update(render())


def _ip_routing(args: argparse.Namespace, source: PlanSource) -> tuple[IpRouting, Any]:
    """``--ip-routing`` (``--no-ip-routing``: none), else the scenario's ``ip_routing:``;
    a plug-in's function imported now."""
    if args.no_ip_routing:
        if args.ip_routing not in (None, "none"):
            raise InputError("--no-ip-routing and --ip-routing contradict each other",
                             field="--ip-routing")
        return IpRouting("none"), None
    sc = source.scenario
    section = sc.section("ip_routing") if sc is not None else None
    if args.ip_routing is not None:
        ipr = parse_ip_routing_option(args.ip_routing)
    else:
        ipr = sc.ip_routing if sc is not None else IpRouting()
    if ipr.daemons and frr_missing(ipr.mode):
        raise InputError(str(frr_missing(ipr.mode)), field="ip_routing")
    if ipr.mode != "plugin":
        return ipr, None
    assert ipr.plugin is not None
    from_scenario = args.ip_routing is None and section is not None
    fn = load_route_function(ipr.plugin, search=[Path(args.scenario).parent.resolve()],
                             source=section.source if from_scenario and section else None,
                             line=section.line_of("plugin") if from_scenario and section
                             else None,
                             field="ip_routing.plugin" if from_scenario else "--ip-routing")
    return ipr, fn


def attach(run_name: str) -> int:
    """Mininet's CLI over the hosts of a live run (its shells are ours; its network is not:
    leaving the CLI leaves the run as it was)."""
    info = next((r for r in list_runs() if r.run == run_name), None)
    if info is None or not info.owner_alive:
        raise InputError(f"no live run named {run_name!r} (see /run/netemu)")
    addrs = info.meta.get("node_addr")
    if not addrs:
        raise InputError(f"run {run_name!r} is still starting; try again in a moment")
    clock_env = dict(info.meta.get("clock", {}))
    frr_dir = info.meta.get("frr_dir")  # FRR daemons: vtysh reaches each node's
    hosts = [EmuHost(n, netns=f"{run_name}-{n}", node_ip=a,
                     env={**clock_env, **HostEnv(run=run_name, node=n, node_addr=a).to_env()},
                     wait=False,
                     init=vtysh_shell_function(Path(frr_dir) / n) if frr_dir else "")
             for n, a in addrs.items()]
    reg = Registry(run_name)
    try:
        for h in hosts:
            h.finish_start()
            if proc_start_time(h.pid):
                reg.add_pid(h.pid, f"shell:{h.name}")
        print(f"attached to {run_name} ({info.meta.get('shaper', '')}): {len(hosts)} hosts")
        EmuCLI(EmuNet(hosts))
    finally:
        for h in hosts:
            h.terminate()
    return 0
